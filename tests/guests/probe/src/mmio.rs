//! Device accesses of exactly one width each, with one `ldr`/`str` instruction:
//! the hypervisor sees (and a trapped window forwards) exactly that width, and an
//! abort the guest takes on one of them is skipped by moving past one
//! instruction.

use core::arch::asm;

/// A read of `SIZE` bytes at `address`, zero-extended.
///
/// # Safety
///
/// `address` is a device register (or a trapped window) the guest may read, and
/// `SIZE`-aligned.
pub unsafe fn read<const SIZE: usize>(address: u64) -> u64 {
    let value: u64;
    // SAFETY: the caller's contract; one load of exactly the width.
    unsafe {
        match SIZE {
            1 => {
                asm!("ldrb {v:w}, [{a}]", a = in(reg) address, v = out(reg) value, options(nostack))
            }
            2 => {
                asm!("ldrh {v:w}, [{a}]", a = in(reg) address, v = out(reg) value, options(nostack))
            }
            4 => {
                asm!("ldr {v:w}, [{a}]", a = in(reg) address, v = out(reg) value, options(nostack))
            }
            8 => {
                asm!("ldr {v:x}, [{a}]", a = in(reg) address, v = out(reg) value, options(nostack))
            }
            _ => unreachable!("no such access width"),
        }
    }
    value
}

/// A write of the low `SIZE` bytes of `value` at `address`.
///
/// # Safety
///
/// `address` is a device register (or a trapped window) the guest may write, and
/// `SIZE`-aligned.
pub unsafe fn write<const SIZE: usize>(address: u64, value: u64) {
    // SAFETY: the caller's contract; one store of exactly the width.
    unsafe {
        match SIZE {
            1 => {
                asm!("strb {v:w}, [{a}]", a = in(reg) address, v = in(reg) value, options(nostack))
            }
            2 => {
                asm!("strh {v:w}, [{a}]", a = in(reg) address, v = in(reg) value, options(nostack))
            }
            4 => asm!("str {v:w}, [{a}]", a = in(reg) address, v = in(reg) value, options(nostack)),
            8 => asm!("str {v:x}, [{a}]", a = in(reg) address, v = in(reg) value, options(nostack)),
            _ => unreachable!("no such access width"),
        }
    }
}
