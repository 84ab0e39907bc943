// Rule 17: "unused" bytes that belong to a device.
include!("shared/sample.rs");

const BOARD: Board = Board {
    unused: &[Unused {
        name: "pad",
        range: PhysRange::new(0x0a00_0100, 0xf00),
    }],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
