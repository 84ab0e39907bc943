// Rule 5: partition RAM over a reserved range.
include!("shared/sample.rs");

const BOARD: Board = Board {
    partitions: &[Partition {
        name: "a",
        cpus: &[1],
        ram: &[PhysRange::new(0x4400_0000, 16 * MIB)],
        grants: &[],
    }],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
