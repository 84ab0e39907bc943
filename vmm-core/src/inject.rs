//! Exceptions the hypervisor injects into a guest: what `ESR_EL1`, `SPSR_EL1`, the
//! new PSTATE and the vector offset must be, so that the guest takes the exception
//! exactly as if its own EL1 had raised it.
//!
//! Arm ARM (DDI 0487 K.a) D1.3.1 "Exception vectors" (offsets from `VBAR_EL1`:
//! 0x000 current EL with SP_EL0, 0x200 current EL with SP_ELx, 0x400 lower EL in
//! AArch64; synchronous at +0), D1.4 "Exception entry" (PSTATE.{D,A,I,F} set, the
//! old PSTATE in `SPSR_EL1`, the return address in `ELR_EL1`), and D24.2.47
//! `ESR_EL1` (EC 0x24 data abort from a lower EL, 0x25 from the same EL, 0x00
//! unknown reason; IL = 1 for a 32-bit instruction).

/// `SPSR.M[3:0]` values (D1.2.4): EL0t, EL1t (SP_EL0), EL1h (SP_EL1).
const MODE_MASK: u64 = 0b1111;
const MODE_EL0T: u64 = 0b0000;
const MODE_EL1T: u64 = 0b0100;
const MODE_EL1H: u64 = 0b0101;
/// `SPSR.M[4]`: the interrupted state was AArch32.
const MODE_AARCH32: u64 = 1 << 4;
/// PSTATE.{D,A,I,F}.
const DAIF: u64 = 0b1111 << 6;

/// `ESR.EC` values.
const EC_UNKNOWN: u64 = 0x00;
const EC_DATA_ABORT_LOWER: u64 = 0x24;
const EC_DATA_ABORT_SAME: u64 = 0x25;
/// `ESR.IL`, bit 25.
const IL: u64 = 1 << 25;
/// `ESR.ISS.WnR`, bit 6.
const WNR: u64 = 1 << 6;
/// `DFSC` 0b010000: synchronous external abort, not on a translation table walk.
const DFSC_SYNC_EXTERNAL: u64 = 0b01_0000;

/// What to write to the guest's EL1 registers and where to resume it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Injection {
    /// `ESR_EL1`.
    pub esr: u64,
    /// `SPSR_EL1`: the guest's PSTATE when the exception happened.
    pub spsr_el1: u64,
    /// Offset of the vector from `VBAR_EL1`.
    pub vector_offset: u64,
    /// The guest's new PSTATE (`SPSR_EL2` for the return to it): EL1h, D, A, I,
    /// F masked.
    pub pstate: u64,
}

/// Why an exception cannot be injected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InjectError {
    /// The guest was in AArch32 or at an EL other than 0 or 1.
    UnsupportedState(u64),
}

/// A synchronous external abort on a data access (`write` or read) made by the
/// guest in state `spsr` (its `SPSR_EL2` at the exit).
pub fn data_abort(spsr: u64, write: bool) -> Result<Injection, InjectError> {
    let (same_el, vector_offset) = origin(spsr)?;
    let ec = if same_el {
        EC_DATA_ABORT_SAME
    } else {
        EC_DATA_ABORT_LOWER
    };
    let wnr = if write { WNR } else { 0 };
    Ok(Injection {
        esr: (ec << 26) | IL | wnr | DFSC_SYNC_EXTERNAL,
        spsr_el1: spsr,
        vector_offset,
        pstate: MODE_EL1H | DAIF,
    })
}

/// An undefined instruction (EC 0x00, "unknown reason"), for a trapped
/// instruction the hypervisor does not emulate.
pub fn undefined(spsr: u64) -> Result<Injection, InjectError> {
    let (_, vector_offset) = origin(spsr)?;
    Ok(Injection {
        esr: (EC_UNKNOWN << 26) | IL,
        spsr_el1: spsr,
        vector_offset,
        pstate: MODE_EL1H | DAIF,
    })
}

/// Whether the exception is taken from EL1 itself, and the synchronous vector.
fn origin(spsr: u64) -> Result<(bool, u64), InjectError> {
    if spsr & MODE_AARCH32 != 0 {
        return Err(InjectError::UnsupportedState(spsr));
    }
    match spsr & MODE_MASK {
        MODE_EL1T => Ok((true, 0x000)),
        MODE_EL1H => Ok((true, 0x200)),
        MODE_EL0T => Ok((false, 0x400)),
        _ => Err(InjectError::UnsupportedState(spsr)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_by_the_guest_kernel_goes_to_the_current_el_spx_vector() {
        // EL1h with interrupts unmasked and the Z flag set.
        let spsr = 0x4000_0005;
        let injection = data_abort(spsr, false).expect("EL1h");
        assert_eq!(injection.vector_offset, 0x200);
        assert_eq!(injection.esr, 0x9600_0010, "EC 0x25, IL, DFSC 0x10");
        assert_eq!(injection.spsr_el1, spsr);
        assert_eq!(injection.pstate, 0x3c5);
    }

    #[test]
    fn a_write_from_el0_goes_to_the_lower_el_vector() {
        let injection = data_abort(0x0, true).expect("EL0t");
        assert_eq!(injection.vector_offset, 0x400);
        assert_eq!(injection.esr, 0x9200_0050, "EC 0x24, IL, WnR, DFSC 0x10");
    }

    #[test]
    fn el1_on_sp_el0_uses_the_first_group() {
        assert_eq!(data_abort(0x4, false).map(|i| i.vector_offset), Ok(0));
    }

    #[test]
    fn undefined_instruction_has_ec_zero() {
        let injection = undefined(0x5).expect("EL1h");
        assert_eq!(injection.esr, 0x0200_0000);
        assert_eq!(injection.vector_offset, 0x200);
    }

    #[test]
    fn aarch32_and_el2_states_are_refused() {
        assert_eq!(
            data_abort(0x10, false),
            Err(InjectError::UnsupportedState(0x10))
        );
        assert_eq!(
            data_abort(0x9, false),
            Err(InjectError::UnsupportedState(0x9))
        );
    }
}
