//! Ending a run: log the verdict, then exit the way the bootargs chose.

use core::sync::atomic::{AtomicU8, Ordering};

use transom_vmm_core::bootargs::ExitMethod;
use transom_vmm_core::verdict::Verdict;

use crate::arch;

static METHOD: AtomicU8 = AtomicU8::new(encode(ExitMethod::Park));

const fn encode(method: ExitMethod) -> u8 {
    match method {
        ExitMethod::Park => 0,
        ExitMethod::Psci => 1,
        ExitMethod::Semihosting => 2,
    }
}

fn decode(raw: u8) -> ExitMethod {
    match raw {
        1 => ExitMethod::Psci,
        2 => ExitMethod::Semihosting,
        _ => ExitMethod::Park,
    }
}

/// Chooses how runs end. A plain store: safe with the MMU off.
pub fn set_method(method: ExitMethod) {
    METHOD.store(encode(method), Ordering::Relaxed);
}

/// The chosen exit method.
pub fn method() -> ExitMethod {
    decode(METHOD.load(Ordering::Relaxed))
}

/// Logs `verdict` and ends the run.
pub fn end_run(verdict: Verdict) -> ! {
    match verdict {
        Verdict::Pass => defmt::info!(
            "run ended: {} (exit code {=u8})",
            defmt::Display2Format(&verdict),
            verdict.exit_code()
        ),
        _ => defmt::error!(
            "run ended: {} (exit code {=u8})",
            defmt::Display2Format(&verdict),
            verdict.exit_code()
        ),
    }
    defmt::flush();
    end_run_quietly(verdict)
}

/// Ends the run without logging (for a second failure while ending the first).
pub fn end_run_quietly(verdict: Verdict) -> ! {
    match method() {
        ExitMethod::Semihosting => arch::semihosting::exit(verdict.exit_code()),
        ExitMethod::Psci => {
            let _refused = arch::psci::system_off();
        }
        ExitMethod::Park => {}
    }
    arch::cpu::park()
}
