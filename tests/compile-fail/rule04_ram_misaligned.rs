// Rule 4: partition RAM not on granule boundaries.
include!("shared/sample.rs");

const BOARD: Board = Board {
    partitions: &[Partition {
        name: "a",
        cpus: &[1],
        ram: &[PhysRange::new(0x5000_0800, 256 * MIB)],
        grants: &[],
    }],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
