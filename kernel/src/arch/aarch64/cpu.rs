//! CPU identity, the generic timer, barriers, cache maintenance and interrupt masking.

use core::arch::asm;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{
    CNTFRQ_EL0, CNTPCT_EL0, CurrentEL, DAIF, MPIDR_EL1, Readable, TPIDR_EL2, Writeable,
};

/// The current exception level (0..=3).
pub fn current_el() -> u8 {
    CurrentEL.read(CurrentEL::EL) as u8
}

/// The affinity fields of `MPIDR_EL1` (Aff3..Aff0), as device trees name CPUs.
pub fn mpidr() -> u64 {
    const AFFINITY_MASK: u64 = 0xff_00ff_ffff;
    MPIDR_EL1.get() & AFFINITY_MASK
}

/// The logical index of this CPU (0 = boot CPU), set by the entry code.
pub fn cpu_index() -> usize {
    TPIDR_EL2.get() as usize
}

/// The generic timer's frequency, Hz.
pub fn counter_frequency() -> u64 {
    CNTFRQ_EL0.get()
}

/// The physical count of the generic timer.
pub fn counter() -> u64 {
    barrier::isb(barrier::SY);
    CNTPCT_EL0.get()
}

/// Microseconds since the counter started (at reset, on the boards Transom runs on).
pub fn uptime_micros() -> u64 {
    const MICROS_PER_SECOND: u64 = 1_000_000;
    // CNTFRQ_EL0 holds the frequency in bits 31:0 (Arm ARM D24.10.1), so the
    // remainder times 10^6 stays below 2^52: whole seconds and the fraction apart,
    // in 64-bit arithmetic (a 128-bit division is a library call per log line).
    let frequency = (counter_frequency() & u64::from(u32::MAX)).max(1);
    let ticks = counter();
    (ticks / frequency) * MICROS_PER_SECOND + (ticks % frequency) * MICROS_PER_SECOND / frequency
}

/// Waits for an event (or for nothing: `wfe` may return early).
pub fn wait_for_event() {
    aarch64_cpu::asm::wfe();
}

/// Waits for an interrupt, pending even if masked (`wfi`; may return early).
pub fn wait_for_interrupt() {
    aarch64_cpu::asm::wfi();
}

/// Wakes every CPU waiting in `wfe`.
pub fn send_event() {
    barrier::dsb(barrier::SY);
    aarch64_cpu::asm::sev();
}

/// Stops this CPU for good.
pub fn park() -> ! {
    loop {
        aarch64_cpu::asm::wfe();
    }
}

/// Masks IRQ, FIQ, SError and debug exceptions, returning the previous mask.
pub fn mask_interrupts() -> u64 {
    let previous = DAIF.get();
    DAIF.write(DAIF::D::Masked + DAIF::A::Masked + DAIF::I::Masked + DAIF::F::Masked);
    previous
}

/// Restores a mask returned by [`mask_interrupts`].
pub fn restore_interrupts(previous: u64) {
    DAIF.set(previous);
}

/// Cleans the data cache lines covering `[start, start + len)` to the point of
/// coherency, so that an observer with its MMU off (a secondary CPU being started,
/// a DMA master) sees what this CPU wrote.
pub fn clean_dcache_to_poc(start: u64, len: u64) {
    let line = cache_type::min_dcache_line();
    let mut address = start & !(line - 1);
    while address < start + len {
        // SAFETY: `dc cvac` only writes back a cache line; it changes no memory
        // contents and faults only for an unmapped address, and callers pass memory
        // they own and have mapped.
        unsafe { asm!("dc cvac, {}", in(reg) address, options(nostack, preserves_flags)) };
        address += line;
    }
    barrier::dsb(barrier::SY);
}

/// Invalidates the data cache lines covering `[start, start + len)` to the point of
/// coherency, discarding any stale line from before this CPU wrote the memory with
/// its data cache off.
///
/// The range must be written with the MMU off and not be written through the cache
/// since: invalidation discards dirty lines.
pub fn invalidate_dcache_to_poc(start: u64, len: u64) {
    let line = cache_type::min_dcache_line();
    let mut address = start & !(line - 1);
    // Four lines per iteration while four are left: the boot invalidates some 40 KiB.
    while address + 4 * line <= start + len {
        // SAFETY: with the data cache off nothing in these four lines of the range is
        // dirty in the cache (the caller's contract), so discarding them loses no data.
        unsafe {
            asm!(
                "dc ivac, {a}",
                "add {a}, {a}, {line}",
                "dc ivac, {a}",
                "add {a}, {a}, {line}",
                "dc ivac, {a}",
                "add {a}, {a}, {line}",
                "dc ivac, {a}",
                "add {a}, {a}, {line}",
                a = inout(reg) address,
                line = in(reg) line,
                options(nostack, preserves_flags),
            );
        }
    }
    while address < start + len {
        // SAFETY: with the data cache off nothing in the range is dirty in the cache
        // (the caller's contract), so discarding lines loses no data.
        unsafe { asm!("dc ivac, {}", in(reg) address, options(nostack, preserves_flags)) };
        address += line;
    }
    barrier::dsb(barrier::SY);
}

/// Copies `src`, under 16 bytes, to `dst` with one load and one store per set bit of
/// its length (8, 4, 2, then 1 bytes), which may be unaligned: the logger's copy of
/// each defmt argument, where a call to `memcpy` costs more than the copy. The
/// target is strict-align (the boot runs with the MMU off, when every access is
/// Device memory and must be aligned), so Rust would copy byte by byte.
///
/// # Safety
///
/// The MMU must be on with `SCTLR_EL2.A` clear, and both slices in Normal memory:
/// then an unaligned `LDR`/`STR` (not an exclusive or acquire/release one) is
/// allowed (Arm ARM B2.5.2).
#[inline(always)]
pub unsafe fn copy_short_unaligned(dst: &mut [u8], src: &[u8]) {
    assert!(src.len() < 16 && dst.len() == src.len());
    // SAFETY: the loads read `src.len()` bytes from `src` and the stores write as
    // many to `dst` (the length's bits add up to it), both in bounds; the caller
    // guarantees unaligned accesses are allowed there.
    unsafe {
        asm!(
            "tbz {len}, #3, 1f",
            "ldr {t}, [{src}], #8",
            "str {t}, [{dst}], #8",
            "1:",
            "tbz {len}, #2, 2f",
            "ldr {t:w}, [{src}], #4",
            "str {t:w}, [{dst}], #4",
            "2:",
            "tbz {len}, #1, 3f",
            "ldrh {t:w}, [{src}], #2",
            "strh {t:w}, [{dst}], #2",
            "3:",
            "tbz {len}, #0, 4f",
            "ldrb {t:w}, [{src}]",
            "strb {t:w}, [{dst}]",
            "4:",
            len = in(reg) src.len(),
            src = inout(reg) src.as_ptr() => _,
            dst = inout(reg) dst.as_mut_ptr() => _,
            t = out(reg) _,
            options(nostack, preserves_flags),
        );
    }
}

/// The current stack pointer.
pub fn stack_pointer() -> u64 {
    let sp: u64;
    // SAFETY: copying SP to a register has no side effects.
    unsafe { asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// Reads one 64-bit word at `address` with a single `ldr`, for the self-test that
/// proves an unmapped access is caught by the vectors.
pub fn probe_read(address: u64) -> u64 {
    let value: u64;
    // SAFETY: a load changes no memory; if `address` is unmapped the data abort is
    // taken by the EL2 vectors, which end the run and never return here.
    unsafe {
        asm!("ldr {value}, [{address}]", value = out(reg) value, address = in(reg) address, options(nostack, readonly))
    };
    value
}

mod cache_type {
    //! `CTR_EL0.DminLine`, which aarch64-cpu does not model.
    use core::arch::asm;

    /// The smallest data cache line of the system, bytes (Arm ARM D24.2.36).
    pub fn min_dcache_line() -> u64 {
        const DMINLINE_SHIFT: u64 = 16;
        const DMINLINE_MASK: u64 = 0xf;
        let ctr: u64;
        // SAFETY: reading CTR_EL0 has no side effects.
        unsafe { asm!("mrs {}, ctr_el0", out(reg) ctr, options(nomem, nostack, preserves_flags)) };
        let log2_words = (ctr >> DMINLINE_SHIFT) & DMINLINE_MASK;
        4 << log2_words
    }
}
