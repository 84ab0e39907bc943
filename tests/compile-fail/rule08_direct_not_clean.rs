// Rule 8: a mini-UART-like region 0x40 into a page it shares with other devices,
// forced direct. The message names the region, its base and the granule.
include!("shared/sample.rs");

const BOARD: Board = Board {
    devices: &[
        Region::new("uart0", 0x0900_0000, 0x1000, DeviceKind::Pl011),
        Region::new("aux", 0xfe21_5000, 0x8, DeviceKind::Other),
        Region::new("mini-uart", 0xfe21_5040, 0x40, DeviceKind::MiniUart),
        Region::new("spi1", 0xfe21_5080, 0x40, DeviceKind::Other),
    ],
    partitions: &[Partition {
        name: "a",
        cpus: &[1],
        ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
        grants: &[Grant::direct("mini-uart")],
    }],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
