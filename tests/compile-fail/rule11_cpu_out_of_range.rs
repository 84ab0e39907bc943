// Rule 11: a CPU the board does not have.
include!("shared/sample.rs");

const BOARD: Board = Board {
    partitions: &[Partition {
        name: "a",
        cpus: &[7],
        ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
        grants: &[],
    }],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
