//! PSCI calls to the firmware (Arm DEN 0022, *Arm Power State Coordination
//! Interface*), through `SMC`: at EL2 the firmware is the only thing above us.

use core::arch::asm;

/// `PSCI_VERSION` (DEN 0022 5.1.1).
const PSCI_VERSION: u32 = 0x8400_0000;
/// `CPU_ON`, SMC64 (DEN 0022 5.1.4).
const CPU_ON_64: u32 = 0xc400_0003;
/// `SYSTEM_OFF` (DEN 0022 5.1.9).
const SYSTEM_OFF: u32 = 0x8400_0008;

/// A PSCI error return (DEN 0022 table 5-1 "Return error codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PsciError {
    /// -1.
    NotSupported,
    /// -2.
    InvalidParameters,
    /// -3.
    Denied,
    /// -4: the CPU is already on.
    AlreadyOn,
    /// -5.
    OnPending,
    /// -6.
    InternalFailure,
    /// -9.
    InvalidAddress,
    /// Anything else.
    Other(i64),
}

impl PsciError {
    fn from_return(value: i64) -> Result<u64, PsciError> {
        match value {
            value if value >= 0 => Ok(value as u64),
            -1 => Err(PsciError::NotSupported),
            -2 => Err(PsciError::InvalidParameters),
            -3 => Err(PsciError::Denied),
            -4 => Err(PsciError::AlreadyOn),
            -5 => Err(PsciError::OnPending),
            -6 => Err(PsciError::InternalFailure),
            -9 => Err(PsciError::InvalidAddress),
            other => Err(PsciError::Other(other)),
        }
    }
}

fn smc(function: u32, arg1: u64, arg2: u64, arg3: u64) -> i64 {
    let result: i64;
    // SAFETY: an SMC with a PSCI function ID is handled by the firmware, which per
    // the SMC Calling Convention (DEN 0028) preserves x4..x30 and returns in x0;
    // x1..x3 may be clobbered. The arguments are plain values.
    unsafe {
        asm!(
            "smc #0",
            inout("x0") u64::from(function) => result,
            inout("x1") arg1 => _,
            inout("x2") arg2 => _,
            inout("x3") arg3 => _,
            options(nostack),
        );
    }
    result
}

/// The PSCI version as (major, minor).
pub fn version() -> Result<(u16, u16), PsciError> {
    let raw = PsciError::from_return(smc(PSCI_VERSION, 0, 0, 0))?;
    Ok(((raw >> 16) as u16, raw as u16))
}

/// Starts the CPU with affinity `mpidr` at physical address `entry`, MMU off, at EL2,
/// with `context` in x0.
pub fn cpu_on(mpidr: u64, entry: u64, context: u64) -> Result<(), PsciError> {
    PsciError::from_return(smc(CPU_ON_64, mpidr, entry, context)).map(|_| ())
}

/// Powers the system off. Returns only if the firmware refuses.
pub fn system_off() -> PsciError {
    match PsciError::from_return(smc(SYSTEM_OFF, 0, 0, 0)) {
        Ok(_) => PsciError::InternalFailure,
        Err(error) => error,
    }
}
