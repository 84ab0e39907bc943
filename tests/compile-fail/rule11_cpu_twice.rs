// Rule 11: one CPU in two partitions.
include!("shared/sample.rs");

const BOARD: Board = Board {
    partitions: &[
        Partition {
            name: "a",
            cpus: &[1, 2],
            ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
            grants: &[],
        },
        Partition {
            name: "b",
            cpus: &[2],
            ram: &[PhysRange::new(0x6000_0000, 256 * MIB)],
            grants: &[],
        },
    ],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
