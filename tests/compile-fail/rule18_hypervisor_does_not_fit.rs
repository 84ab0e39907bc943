// Rule 18: a heap larger than the hypervisor's memory.
include!("shared/sample.rs");

const BOARD: Board = Board {
    hypervisor: Hypervisor {
        heap_size: 128 * MIB as usize,
        ..SAMPLE.hypervisor
    },
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
