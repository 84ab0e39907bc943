// Rule 14: two entries with one name.
include!("shared/sample.rs");

const BOARD: Board = Board {
    devices: &[
        Region::new("uart0", 0x0900_0000, 0x1000, DeviceKind::Pl011),
        Region::new("uart0", 0x0901_0000, 0x1000, DeviceKind::Pl011),
    ],
    partitions: &[],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
