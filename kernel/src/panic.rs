//! The panic handler: log the message and location, end the run with the panic verdict.

use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use transom_vmm_core::verdict::Verdict;

use crate::exit;

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    // A load and a store, not a swap: a panic may come before the MMU is on.
    if PANICKING.load(Ordering::Relaxed) {
        exit::end_run_quietly(Verdict::Panic);
    }
    PANICKING.store(true, Ordering::Relaxed);
    let message = defmt::Display2Format(&info.message());
    match info.location() {
        Some(location) => defmt::error!(
            "panicked at {=str}:{=u32}:{=u32}: {}",
            location.file(),
            location.line(),
            location.column(),
            message
        ),
        None => defmt::error!("panicked: {}", message),
    }
    exit::end_run(Verdict::Panic)
}
