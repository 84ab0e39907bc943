// Rule 6: one device granted to two partitions.
include!("shared/sample.rs");

const BOARD: Board = Board {
    partitions: &[
        Partition {
            name: "a",
            cpus: &[1],
            ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
            grants: &[Grant::auto("uart1")],
        },
        Partition {
            name: "b",
            cpus: &[2],
            ram: &[PhysRange::new(0x6000_0000, 256 * MIB)],
            grants: &[Grant::auto("uart1")],
        },
    ],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
