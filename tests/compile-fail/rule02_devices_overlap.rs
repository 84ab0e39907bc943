// Rule 2: two device regions share bytes.
include!("shared/sample.rs");

const BOARD: Board = Board {
    devices: &[
        Region::new("uart0", 0x0900_0000, 0x1000, DeviceKind::Pl011),
        Region::new("rtc", 0x0900_0800, 0x1000, DeviceKind::Other),
    ],
    partitions: &[],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
