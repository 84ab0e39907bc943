// Rule 14: a partition without a CPU.
include!("shared/sample.rs");

const BOARD: Board = Board {
    partitions: &[Partition {
        name: "idle",
        cpus: &[],
        ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
        grants: &[],
    }],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
