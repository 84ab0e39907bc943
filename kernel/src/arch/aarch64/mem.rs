//! `memset` and `memcpy` for the hypervisor, replacing `compiler_builtins`'
//! portable ones.
//!
//! The portable versions move one 8-byte word per loop iteration, three or four
//! instructions per word: zeroing one 4 KiB translation table costs some 1,500
//! instructions, and copying a 30 MiB Linux `Image` into its partition some 16
//! million. These move 64 bytes per iteration with `LDP`/`STP`, and `memset` zeroes
//! whole cache-line-sized blocks with `DC ZVA` (Arm ARM C5.3.19) where that is
//! allowed. `compiler_builtins` exports its memory functions as weak symbols on
//! bare-metal targets precisely so that a kernel can supply its own.
//!
//! Rules the code keeps, because it also runs with the MMU off, when every data
//! access is Device-nGnRnE and must be aligned to its size (Arm ARM B2.5.2):
//! - multi-byte accesses are aligned: single bytes first, up to 16-byte alignment,
//!   then `LDP`/`STP` of two doublewords, which are aligned when each doubleword is.
//!   A `memcpy` whose source and destination differ in their low three bits copies
//!   byte by byte, unless the MMU is on and `SCTLR_EL2.A` is clear, when Normal
//!   memory allows unaligned accesses;
//! - `DC ZVA` runs only with `SCTLR_EL2.M` set (on Device memory it is an alignment
//!   fault, Arm ARM C5.3.19) and `DCZID_EL0.DZP` clear (the instruction is
//!   permitted), and only on whole blocks of the size `DCZID_EL0.BS` gives.
//!
//! The hypervisor only calls them on RAM, never on a device, so the MMU-on case is
//! always Normal memory.

/// Fills `n` bytes at `dst` with the low byte of `c`; returns `dst`.
///
/// # Safety
///
/// `dst..dst + n` must be writable memory the caller owns, as C's `memset` requires.
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub unsafe extern "C" fn memset(dst: *mut u8, c: i32, n: usize) -> *mut u8 {
    // x0: dst (returned untouched), x1: the byte in every byte, x2: bytes left,
    // x3: cursor.
    core::arch::naked_asm!(
        "mov x3, x0",
        "and x1, x1, #0xff",
        // Under 16 bytes: byte by byte.
        "cmp x2, #16",
        "b.lo 7f",
        "orr x1, x1, x1, lsl #8",
        "orr x1, x1, x1, lsl #16",
        "orr x1, x1, x1, lsl #32",
        // Up to 16-byte alignment: 1, 2, 4 then 8 bytes as the distance's bits
        // say, each store aligned to its size (at most 15 of 16 or more).
        "neg x5, x3",
        "and x5, x5, #15",
        "sub x2, x2, x5",
        "tbz x5, #0, 1f",
        "strb w1, [x3], #1",
        "1:",
        "tbz x5, #1, 1f",
        "strh w1, [x3], #2",
        "1:",
        "tbz x5, #2, 1f",
        "str w1, [x3], #4",
        "1:",
        "tbz x5, #3, 2f",
        "str x1, [x3], #8",
        // Zeroing with the MMU on and DC ZVA permitted: whole blocks.
        "2:",
        "cbnz x1, 4f",
        "mrs x4, sctlr_el2",
        "tbz x4, #0, 4f",
        "mrs x5, dczid_el0",
        "tbnz x5, #4, 4f",
        // Block size: 4 << DCZID_EL0.BS bytes (BS counts 4-byte words, log2).
        "and x5, x5, #15",
        "mov x6, #4",
        "lsl x6, x6, x5",
        "sub x7, x6, #1",
        // Only with two blocks or more to fill: aligning takes less than one.
        "cmp x2, x6, lsl #1",
        "b.lo 4f",
        "3:",
        "tst x3, x7",
        "b.eq 5f",
        "stp xzr, xzr, [x3], #16",
        "sub x2, x2, #16",
        "b 3b",
        // Four blocks per iteration while four are left (a 4 KiB table is 64
        // blocks of 64 bytes), then one at a time.
        "5:",
        "cmp x2, x6, lsl #2",
        "b.lo 10f",
        "dc zva, x3",
        "add x3, x3, x6",
        "dc zva, x3",
        "add x3, x3, x6",
        "dc zva, x3",
        "add x3, x3, x6",
        "dc zva, x3",
        "add x3, x3, x6",
        "sub x2, x2, x6, lsl #2",
        "b 5b",
        "10:",
        "cmp x2, x6",
        "b.lo 4f",
        "dc zva, x3",
        "add x3, x3, x6",
        "sub x2, x2, x6",
        "b 10b",
        // 128 bytes per iteration, then 64 (a 4 KiB table zeroed with the MMU off
        // is 32 iterations).
        "4:",
        "subs x2, x2, #128",
        "b.lo 11f",
        "stp x1, x1, [x3]",
        "stp x1, x1, [x3, #16]",
        "stp x1, x1, [x3, #32]",
        "stp x1, x1, [x3, #48]",
        "stp x1, x1, [x3, #64]",
        "stp x1, x1, [x3, #80]",
        "stp x1, x1, [x3, #96]",
        "stp x1, x1, [x3, #112]",
        "add x3, x3, #128",
        "b 4b",
        "11:",
        "adds x2, x2, #64",
        "b.lo 6f",
        "stp x1, x1, [x3]",
        "stp x1, x1, [x3, #16]",
        "stp x1, x1, [x3, #32]",
        "stp x1, x1, [x3, #48]",
        "add x3, x3, #64",
        "sub x2, x2, #64",
        "6:",
        "add x2, x2, #64",
        "8:",
        "subs x2, x2, #16",
        "b.lo 9f",
        "stp x1, x1, [x3], #16",
        "b 8b",
        // Under 16 bytes left, from a 16-byte aligned cursor: 8, 4, 2 then 1.
        "9:",
        "tbz x2, #3, 1f",
        "str x1, [x3], #8",
        "1:",
        "tbz x2, #2, 1f",
        "str w1, [x3], #4",
        "1:",
        "tbz x2, #1, 1f",
        "strh w1, [x3], #2",
        "1:",
        "tbz x2, #0, 1f",
        "strb w1, [x3]",
        "1:",
        "ret",
        "7:",
        "cbz x2, 1f",
        "strb w1, [x3], #1",
        "sub x2, x2, #1",
        "b 7b",
        "1:",
        "ret",
    )
}

/// Copies `n` bytes from `src` to `dst`, which do not overlap; returns `dst`.
///
/// # Safety
///
/// `src..src + n` must be readable and `dst..dst + n` writable memory the caller
/// owns, not overlapping, as C's `memcpy` requires.
#[unsafe(no_mangle)]
#[unsafe(naked)]
pub unsafe extern "C" fn memcpy(dst: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // x0: dst (returned untouched), x1: source cursor, x2: bytes left, x3: cursor.
    core::arch::naked_asm!(
        "mov x3, x0",
        // Unaligned loads and stores allowed (MMU on, so RAM is Normal memory:
        // SCTLR_EL2.M = 1, SCTLR_EL2.A = 0)? Then any piece size goes.
        "mrs x4, sctlr_el2",
        "and x4, x4, #3",
        "cmp x4, #1",
        "b.eq 1f",
        // Otherwise only a source and destination aligned alike to 8 bytes, the
        // size of each access of an LDP or STP of doublewords (Arm ARM B2.5.2),
        // and 16 bytes or more.
        "cmp x2, #16",
        "b.lo 7f",
        "eor x4, x3, x1",
        "tst x4, #7",
        "b.ne 7f",
        "b 2f",
        "1:",
        "cmp x2, #16",
        "b.lo 9f",
        // Up to the destination's 16-byte alignment: 1, 2, 4 then 8 bytes as the
        // distance's bits say (at most 15 of 16 or more); aligned alike, the source
        // gets to 8-byte alignment at least.
        "2:",
        "neg x5, x3",
        "and x5, x5, #15",
        "sub x2, x2, x5",
        "tbz x5, #0, 1f",
        "ldrb w4, [x1], #1",
        "strb w4, [x3], #1",
        "1:",
        "tbz x5, #1, 1f",
        "ldrh w4, [x1], #2",
        "strh w4, [x3], #2",
        "1:",
        "tbz x5, #2, 1f",
        "ldr w4, [x1], #4",
        "str w4, [x3], #4",
        "1:",
        "tbz x5, #3, 4f",
        "ldr x4, [x1], #8",
        "str x4, [x3], #8",
        // 64 bytes per iteration.
        "4:",
        "subs x2, x2, #64",
        "b.lo 6f",
        "ldp x4, x5, [x1]",
        "ldp x6, x7, [x1, #16]",
        "ldp x8, x9, [x1, #32]",
        "ldp x10, x11, [x1, #48]",
        "stp x4, x5, [x3]",
        "stp x6, x7, [x3, #16]",
        "stp x8, x9, [x3, #32]",
        "stp x10, x11, [x3, #48]",
        "add x1, x1, #64",
        "add x3, x3, #64",
        "b 4b",
        "6:",
        "add x2, x2, #64",
        "8:",
        "subs x2, x2, #16",
        "b.lo 5f",
        "ldp x4, x5, [x1], #16",
        "stp x4, x5, [x3], #16",
        "b 8b",
        "5:",
        "add x2, x2, #16",
        // Under 16 bytes: 8, 4, 2 then 1, aligned after the loops above (or
        // unaligned allowed).
        "9:",
        "tbz x2, #3, 1f",
        "ldr x4, [x1], #8",
        "str x4, [x3], #8",
        "1:",
        "tbz x2, #2, 1f",
        "ldr w4, [x1], #4",
        "str w4, [x3], #4",
        "1:",
        "tbz x2, #1, 1f",
        "ldrh w4, [x1], #2",
        "strh w4, [x3], #2",
        "1:",
        "tbz x2, #0, 1f",
        "ldrb w4, [x1]",
        "strb w4, [x3]",
        "1:",
        "ret",
        // Byte by byte.
        "7:",
        "cbz x2, 1f",
        "ldrb w4, [x1], #1",
        "strb w4, [x3], #1",
        "sub x2, x2, #1",
        "b 7b",
        "1:",
        "ret",
    )
}
