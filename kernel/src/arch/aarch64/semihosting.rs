//! Arm semihosting, used to end a QEMU run with an exit code.
//!
//! *Semihosting for AArch32 and AArch64* (Arm, 2023Q3), section 5.5 `SYS_EXIT`: in
//! AArch64 the call is `HLT #0xF000` with w0 = 0x18 and x1 pointing at a two-word
//! block {reason, subcode}; reason `ADP_Stopped_ApplicationExit` (0x20026) makes the
//! host exit with status `subcode`. QEMU honours it with `-semihosting-config enable=on`.

use core::arch::asm;

const SYS_EXIT: u64 = 0x18;
const ADP_STOPPED_APPLICATION_EXIT: u64 = 0x2_0026;

/// Ends the QEMU run with exit status `code`.
///
/// Without a semihosting host, `HLT` is an undefined instruction: the caller must only
/// use this when the bootargs say QEMU semihosting is on. Returns only if the host
/// ignores the call.
pub fn exit(code: u8) {
    let block: [u64; 2] = [ADP_STOPPED_APPLICATION_EXIT, u64::from(code)];
    // SAFETY: the semihosting host reads the two words at x1 and does not return on
    // SYS_EXIT; if it did, it clobbered only x0 (the return value).
    unsafe {
        asm!(
            "hlt #0xf000",
            inout("x0") SYS_EXIT => _,
            in("x1") block.as_ptr(),
            options(nostack, readonly),
        );
    }
}
