//! The guest's stage-1 identity map, so its RAM is Normal write-back memory
//! (exclusives for the console lock, unaligned accesses in the device-tree
//! parser) and everything else Device-nGnRnE.
//!
//! 4 KiB granule, 39-bit virtual addresses (`TCR_EL1.T0SZ` = 25), so the walk
//! starts at level 1 and each level-1 entry maps 1 GiB (Arm ARM D8.2 "Translation
//! table walk"):
//!
//! ```text
//! 0x00_0000_0000  4 × 1 GiB blocks  Device-nGnRnE, execute-never: the devices
//!                                   (QEMU `virt`'s below 1 GiB, the Pi 4's at
//!                                   0xfe00_0000 and its GIC at 0xff84_0000)
//!                 except            Normal WB: the gigabyte holding the image (its RAM)
//! ```
//!
//! On QEMU `virt` each partition's RAM (256 MiB at 0x5000_0000 or 0x6000_0000)
//! lies in the second gigabyte, on the Pi 4 (at 0x1000_0000 or 0x2000_0000) in the
//! first; the guest touches only its own RAM there, and stage 2 maps nothing else
//! of it.

use core::arch::asm;
use core::cell::UnsafeCell;

/// One translation table.
#[repr(C, align(4096))]
struct Table(UnsafeCell<[u64; 512]>);

// SAFETY: written only by the primary vCPU before any other runs
// ([`build_and_enable`]), read-only afterwards.
unsafe impl Sync for Table {}

static LEVEL1: Table = Table(UnsafeCell::new([0; 512]));

const GIB: u64 = 1 << 30;
/// The gigabytes mapped as devices: every device of both boards lies below 4 GiB.
const DEVICE_GIBS: u64 = 4;

/// `MAIR_EL1`: Attr0 Device-nGnRnE (0x00), Attr1 Normal inner/outer write-back
/// read/write-allocate (0xff) (Arm ARM D24.2.102).
const MAIR: u64 = 0xff << 8;
const ATTR_DEVICE: u64 = 0 << 2;
const ATTR_NORMAL: u64 = 1 << 2;

/// Block descriptor bits (Arm ARM D8.3.1): valid block, AF, inner shareable,
/// PXN and UXN.
const BLOCK: u64 = 0b01;
const AF: u64 = 1 << 10;
const INNER_SHAREABLE: u64 = 0b11 << 8;
const PXN: u64 = 1 << 53;
const UXN: u64 = 1 << 54;

/// `TCR_EL1`: T0SZ 25, IRGN0/ORGN0 write-back write-allocate, SH0 inner
/// shareable, TG0 4 KiB, EPD1 (no TTBR1 walks), IPS 40 bits (D24.2.164).
const TCR: u64 = 25 | (0b01 << 8) | (0b01 << 10) | (0b11 << 12) | (1 << 23) | (0b010 << 32);

/// `SCTLR_EL1`: M (MMU), C (data cache), I (instruction cache).
const SCTLR_M: u64 = 1 << 0;
const SCTLR_C: u64 = 1 << 2;
const SCTLR_I: u64 = 1 << 12;

/// Builds the tables for an image loaded at `image_start`, invalidates the
/// cache lines of `image` (written with the MMU off, so stale lines must not
/// hide it once the caches are on) and turns the MMU on.
///
/// # Safety
///
/// Called once, on the primary vCPU, with the MMU off, before any other vCPU
/// runs; `image` covers the image, `.bss` and the stacks.
pub unsafe fn build_and_enable(image: core::ops::Range<u64>) {
    let table = LEVEL1.0.get();
    let ram_gib = image.start / GIB;
    // SAFETY: nothing else reads or writes the table yet (the caller's contract);
    // the stores are aligned 8-byte ones, as Device memory requires.
    unsafe {
        for gib in 0..DEVICE_GIBS {
            (*table)[gib as usize] = (gib * GIB) | BLOCK | AF | ATTR_DEVICE | PXN | UXN;
        }
        (*table)[ram_gib as usize] = (ram_gib * GIB) | BLOCK | AF | ATTR_NORMAL | INNER_SHAREABLE;
    }
    invalidate_data_cache(image);
    // SAFETY: the caller's contract: this vCPU's translation is being set up.
    unsafe { enable() };
}

/// Turns the MMU on with the tables the primary vCPU built.
///
/// # Safety
///
/// [`build_and_enable`] has run on the primary vCPU; called with the MMU off.
pub unsafe fn enable() {
    let table = LEVEL1.0.get() as u64;
    // SAFETY: the tables identity-map the image and its stack, so execution goes
    // on at the next instruction with the same addresses; TLBs are invalidated
    // before the MMU is on.
    unsafe {
        asm!(
            "msr mair_el1, {mair}",
            "msr tcr_el1, {tcr}",
            "msr ttbr0_el1, {table}",
            "dsb ish",
            "tlbi vmalle1",
            "dsb ish",
            "isb",
            "mrs {sctlr}, sctlr_el1",
            "orr {sctlr}, {sctlr}, {enable}",
            "msr sctlr_el1, {sctlr}",
            "isb",
            mair = in(reg) MAIR,
            tcr = in(reg) TCR,
            table = in(reg) table,
            enable = in(reg) SCTLR_M | SCTLR_C | SCTLR_I,
            sctlr = out(reg) _,
            options(nostack),
        );
    }
}

/// `DC IVAC` over `range` (`CTR_EL0.DminLine` gives the line size).
fn invalidate_data_cache(range: core::ops::Range<u64>) {
    let ctr: u64;
    // SAFETY: reads CTR_EL0, which has no side effect.
    unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack)) };
    let line = 4u64 << ((ctr >> 16) & 0xf);
    let mut address = range.start & !(line - 1);
    while address < range.end {
        // SAFETY: invalidates lines of the image, whose memory holds what was
        // written with the MMU off (the hypervisor cleaned the loaded image to the
        // point of coherency, booting.rst), so no data is lost.
        unsafe { asm!("dc ivac, {}", in(reg) address, options(nostack)) };
        address += line;
    }
    // SAFETY: a barrier.
    unsafe { asm!("dsb sy", options(nostack)) };
}
