//! PSCI calls through `HVC` (Arm DEN0022, the device tree's `/psci` says
//! `method = "hvc"`): function IDs and return codes from DEN0022 5.1 and 5.2.

use core::arch::asm;

/// `CPU_OFF`.
pub const CPU_OFF: u32 = 0x8400_0002;
/// `CPU_ON`, SMC64.
pub const CPU_ON: u32 = 0xc400_0003;
/// `AFFINITY_INFO`, SMC64.
pub const AFFINITY_INFO: u32 = 0xc400_0004;
/// `SYSTEM_OFF`.
pub const SYSTEM_OFF: u32 = 0x8400_0008;

/// `SUCCESS`.
pub const SUCCESS: i64 = 0;
/// `INVALID_PARAMETERS`.
pub const INVALID_PARAMETERS: i64 = -2;
/// `AFFINITY_INFO`: the target is OFF.
pub const AFFINITY_OFF: i64 = 1;

/// Calls `function` with `x1..x3`; returns x0.
pub fn call(function: u32, x1: u64, x2: u64, x3: u64) -> i64 {
    let result: u64;
    // SAFETY: an HVC to Transom's PSCI, which only changes x0 (SMCCC 1.1 keeps
    // x4..x17 for PSCI; x1..x3 are marked clobbered anyway).
    unsafe {
        asm!(
            "hvc #0",
            inout("x0") u64::from(function) => result,
            inout("x1") x1 => _,
            inout("x2") x2 => _,
            inout("x3") x3 => _,
            options(nostack),
        );
    }
    result as i64
}

/// `SYSTEM_OFF`: the partition stops.
pub fn system_off() -> ! {
    loop {
        call(SYSTEM_OFF, 0, 0, 0);
    }
}
