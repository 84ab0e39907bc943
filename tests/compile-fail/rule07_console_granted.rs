// Rule 7: the hypervisor's console granted to a guest.
include!("shared/sample.rs");

const BOARD: Board = Board {
    partitions: &[Partition {
        name: "a",
        cpus: &[1],
        ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
        grants: &[Grant::auto("uart0")],
    }],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
