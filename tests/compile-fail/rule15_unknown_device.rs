// Rule 15: a grant that names no device.
include!("shared/sample.rs");

const BOARD: Board = Board {
    partitions: &[Partition {
        name: "a",
        cpus: &[1],
        ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
        grants: &[Grant::auto("uart7")],
    }],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
