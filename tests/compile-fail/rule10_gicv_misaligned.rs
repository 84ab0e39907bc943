// Rule 10: the GIC-400's 8 KiB GICV under 64 KiB pages.
include!("shared/sample.rs");

const BOARD: Board = Board {
    granule: Granule::Size64KiB,
    devices: &[
        Region::new("uart0", 0x0900_0000, 0x1000, DeviceKind::Pl011),
        Region::new("gicv", 0xff84_6000, 0x2000, DeviceKind::GicVirtualCpu),
    ],
    partitions: &[],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
