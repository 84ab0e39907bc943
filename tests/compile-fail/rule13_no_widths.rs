// Rule 13: a trapped grant of a region that allows no access width.
include!("shared/sample.rs");

const BOARD: Board = Board {
    devices: &[
        Region::new("uart0", 0x0900_0000, 0x1000, DeviceKind::Pl011),
        Region::new("virtio-a", 0x0a00_0000, 0x200, DeviceKind::VirtioMmio)
            .with_widths(AccessWidths::NONE),
    ],
    partitions: &[Partition {
        name: "a",
        cpus: &[1],
        ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
        grants: &[Grant::auto("virtio-a")],
    }],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
