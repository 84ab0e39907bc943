// Rule 16: an interrupt-controller frame granted to a guest.
include!("shared/sample.rs");

const BOARD: Board = Board {
    partitions: &[Partition {
        name: "a",
        cpus: &[1],
        ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
        grants: &[Grant::auto("gicd")],
    }],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
