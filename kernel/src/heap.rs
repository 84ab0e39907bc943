//! The hypervisor heap: `linked_list_allocator` over the range after the image.

use linked_list_allocator::LockedHeap;

use crate::arch;

#[global_allocator]
static HEAP: LockedHeap = LockedHeap::empty();

/// Hands `size` bytes after the image to the allocator. Call once, with the MMU on
/// (the allocator's lock needs exclusive accesses) and the heap range mapped.
pub fn init(size: usize) {
    HEAP.lock().init_from_slice(arch::memory::take_heap(size));
}

/// Bytes currently free.
pub fn free() -> usize {
    HEAP.lock().free()
}
