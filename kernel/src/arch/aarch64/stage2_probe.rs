//! The EL1 program of the stage-2 self-test (`transom.selftest=stage2`): a few
//! position-independent instructions the hypervisor copies into a partition's RAM
//! and runs there with EL1's MMU off, so every address it uses is an IPA.
//!
//! Inputs in registers, each step followed by an exit the hypervisor checks:
//!
//! | step | instruction            | exit                                       |
//! |------|------------------------|--------------------------------------------|
//! | 1    | `str x1, [x0]`, `ldr x5, [x0]` | `hvc #1`: x5 is what RAM gave back |
//! | 2    | `ldr w6, [x2]` (if x2 ≠ 0) | `hvc #2`: x6 is the device's word      |
//! | 3    | `ldr w7, [x3]` (if x3 ≠ 0) | stage-2 data abort at a trapped window, then `hvc #3` |
//! | 4    | `ldr x8, [x4]`          | stage-2 data abort (x4 is outside the partition), then `hvc #0` |
//!
//! x0: a RAM address, x1: a pattern, x2: the exact address of a direct window's
//! last 32-bit word, x3: a trapped window's exact address, x4: an address the
//! partition must not reach. After an abort the hypervisor skips the instruction.

use core::arch::global_asm;

/// The `hvc` immediates the program reports with.
pub mod report {
    /// RAM written and read back; x5 holds the value read.
    pub const RAM: u16 = 1;
    /// A direct window read; x6 holds the 32-bit value.
    pub const DIRECT: u16 = 2;
    /// Resumed after the trapped window's abort.
    pub const TRAPPED: u16 = 3;
    /// Resumed after the out-of-partition abort: the program is done.
    pub const DONE: u16 = 0;
}

/// The program's machine code.
pub fn code() -> &'static [u8] {
    unsafe extern "C" {
        static __transom_probe_start: u8;
        static __transom_probe_end: u8;
    }
    let start = &raw const __transom_probe_start;
    let end = &raw const __transom_probe_end;
    let len = end as usize - start as usize;
    // SAFETY: the two symbols delimit the instructions assembled below, in the
    // read-only image text that lives as long as the hypervisor and is never
    // written; `end` follows `start` in the same section.
    unsafe { core::slice::from_raw_parts(start, len) }
}

global_asm!(
    r#"
    .section .text.probe, "ax"
    .balign 4
    .global __transom_probe_start
    .global __transom_probe_end
__transom_probe_start:
    str     x1, [x0]
    ldr     x5, [x0]
    hvc     #{ram}
    cbz     x2, 1f
    ldr     w6, [x2]
    hvc     #{direct}
1:  cbz     x3, 2f
    ldr     w7, [x3]
    hvc     #{trapped}
2:  ldr     x8, [x4]
    hvc     #{done}
3:  wfi
    b       3b
__transom_probe_end:
"#,
    ram = const report::RAM,
    direct = const report::DIRECT,
    trapped = const report::TRAPPED,
    done = const report::DONE,
);
