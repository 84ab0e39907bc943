// Rule 1: base + size wraps around the address space.
include!("shared/sample.rs");

const BOARD: Board = Board {
    devices: &[
        Region::new("uart0", 0x0900_0000, 0x1000, DeviceKind::Pl011),
        Region::new("wraps", 0xffff_ffff_ffff_f000, 0x2000, DeviceKind::Other),
    ],
    partitions: &[],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
