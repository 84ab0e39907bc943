//! The image's layout as the linker placed it, and the raw memory the kernel takes
//! over at boot (heap, firmware device tree).

use core::mem::MaybeUninit;
use core::slice;

use transom_boards::PhysRange;

unsafe extern "C" {
    static __image_start: u8;
    static __rodata_start: u8;
    static __data_start: u8;
    static __bss_end: u8;
    static __image_end: u8;
}

/// Where the linker put the image's parts.
#[derive(Clone, Copy, Debug)]
pub struct ImageLayout {
    /// Code: read-only, executable.
    pub text: PhysRange,
    /// Constants: read-only.
    pub rodata: PhysRange,
    /// Data, `.bss`, the CPU stacks and the boot table pool: read-write.
    pub data: PhysRange,
    /// `.data` and `.bss` alone: the static variables the boot CPU writes with its
    /// MMU and data cache off.
    pub statics: PhysRange,
}

impl ImageLayout {
    /// The whole image.
    pub fn whole(&self) -> PhysRange {
        PhysRange {
            start: self.text.start,
            end: self.data.end,
        }
    }
}

/// The layout of the running image.
pub fn image_layout() -> ImageLayout {
    let (start, rodata, data, bss_end, end) = (
        &raw const __image_start as u64,
        &raw const __rodata_start as u64,
        &raw const __data_start as u64,
        &raw const __bss_end as u64,
        &raw const __image_end as u64,
    );
    ImageLayout {
        text: PhysRange { start, end: rodata },
        rodata: PhysRange {
            start: rodata,
            end: data,
        },
        data: PhysRange { start: data, end },
        statics: PhysRange {
            start: data,
            end: bss_end,
        },
    }
}

/// The heap's range: `size` bytes right after the image.
pub fn heap_range(size: usize) -> PhysRange {
    PhysRange::new(image_layout().data.end, size as u64)
}

/// Hands the heap's memory to the allocator.
///
/// Call once, after the MMU maps [`heap_range`] read-write.
pub fn take_heap(size: usize) -> &'static mut [MaybeUninit<u8>] {
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    assert!(
        !TAKEN.swap(true, core::sync::atomic::Ordering::AcqRel),
        "the heap is taken once"
    );
    let range = heap_range(size);
    // SAFETY: the range lies after `__image_end`, so no Rust object lives there; the
    // boot code mapped it read-write before calling; the flag above makes this the
    // only slice ever created over it.
    unsafe { slice::from_raw_parts_mut(range.start as *mut MaybeUninit<u8>, size) }
}

/// The largest device tree blob the kernel accepts (the Pi firmware's is ~60 KiB).
pub const MAX_DEVICE_TREE_SIZE: usize = 2 * 1024 * 1024;

/// The device tree blob the firmware passed, as bytes.
///
/// The blob's header is checked (magic, size) before a slice is made; `None` if
/// there is no valid blob at `address`. The memory must be readable (mapped, or the
/// MMU off) and stay untouched for the kernel's lifetime: firmware places the blob in
/// RAM the kernel never allocates from.
pub fn device_tree_blob(address: usize) -> Option<&'static [u8]> {
    const HEADER_SIZE: usize = 8;
    const FDT_MAGIC: u32 = 0xd00d_feed;
    if address == 0 || !address.is_multiple_of(8) {
        return None;
    }
    // SAFETY: `address` is non-null and 8-byte aligned; firmware guarantees the
    // header's 8 bytes are readable RAM (Linux arm64 booting.rst: x0 = physical
    // address of the device tree blob).
    let header = unsafe { slice::from_raw_parts(address as *const u8, HEADER_SIZE) };
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let total_size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if magic != FDT_MAGIC || !(HEADER_SIZE..=MAX_DEVICE_TREE_SIZE).contains(&total_size) {
        return None;
    }
    // SAFETY: the header says the blob is `total_size` bytes long, bounded above; the
    // firmware placed it in RAM that nothing else writes.
    Some(unsafe { slice::from_raw_parts(address as *const u8, total_size) })
}

/// The bytes of the initrd the firmware loaded at `range`, which the boot code
/// checked lies in RAM the EL2 tables map and outside every partition's RAM.
///
/// # Panics
///
/// If the range is empty or does not fit the address space.
pub fn initrd_bytes(range: PhysRange) -> &'static [u8] {
    let len = usize::try_from(range.size()).expect("the initrd fits the address space");
    assert!(len > 0, "an empty initrd");
    // SAFETY: the firmware loaded the initrd at `range` (its `/chosen` says so) in
    // RAM that EL2 maps read-write; no hypervisor object lives there (the heap and
    // image are in the board's hypervisor memory, which the firmware's initrd
    // avoids) and no guest can reach it (the cross-check refuses an initrd inside
    // partition RAM), so nothing writes it while this shared borrow lives.
    unsafe { slice::from_raw_parts(range.start as *const u8, len) }
}
