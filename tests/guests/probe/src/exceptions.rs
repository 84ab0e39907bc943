//! The guest's own exception handlers, called from the vectors in `boot.rs`.
//!
//! A synchronous data abort the guest expects ([`expect_abort`]) is recorded
//! (`ESR_EL1`, `FAR_EL1`) and skipped: `ELR_EL1` moves past the one load or store
//! that caused it. IRQs are acknowledged at the GIC, handled and ended. Anything
//! else is reported and the partition powers off.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use crate::{console, gic, psci};

/// `ESR_EL1.EC` (bits 31:26) of a data abort taken without a change in
/// exception level (Arm ARM D24.2.47, table D24-48: 0b100101).
pub const EC_DATA_ABORT_SAME_EL: u64 = 0x25;
const EC_SHIFT: u32 = 26;

static EXPECTING: AtomicBool = AtomicBool::new(false);
static TAKEN: AtomicBool = AtomicBool::new(false);
static ESR: AtomicU64 = AtomicU64::new(0);
static FAR: AtomicU64 = AtomicU64::new(0);

/// An abort the guest took in its own vector.
#[derive(Clone, Copy, Debug)]
pub struct Abort {
    /// `ESR_EL1`.
    pub esr: u64,
    /// `FAR_EL1`.
    pub far: u64,
}

impl Abort {
    /// `ESR_EL1.EC`.
    pub fn class(&self) -> u64 {
        self.esr >> EC_SHIFT & 0x3f
    }

    /// `ESR_EL1.ISS.DFSC` (bits 5:0).
    pub fn fault_status(&self) -> u64 {
        self.esr & 0x3f
    }
}

/// Runs `access` expecting it to abort; returns the abort, if it did.
pub fn expect_abort(access: impl FnOnce()) -> Option<Abort> {
    TAKEN.store(false, Ordering::SeqCst);
    EXPECTING.store(true, Ordering::SeqCst);
    access();
    EXPECTING.store(false, Ordering::SeqCst);
    TAKEN.load(Ordering::SeqCst).then(|| Abort {
        esr: ESR.load(Ordering::SeqCst),
        far: FAR.load(Ordering::SeqCst),
    })
}

/// The virtual timer's INTID, whose handler stops the timer.
static VIRTUAL_TIMER: AtomicU32 = AtomicU32::new(gic::SPURIOUS);

/// Makes the IRQ handler stop the virtual timer when `intid` fires.
pub fn set_virtual_timer(intid: u32) {
    VIRTUAL_TIMER.store(intid, Ordering::SeqCst);
}

/// Interrupts taken, by INTID below 64.
static TAKEN_INTERRUPTS: [AtomicU32; 64] = [const { AtomicU32::new(0) }; 64];
/// A PL011 whose transmit interrupt the guest raises, and its INTID.
static PASSTHROUGH_UART: AtomicU64 = AtomicU64::new(0);
static PASSTHROUGH_INTID: AtomicU32 = AtomicU32::new(gic::SPURIOUS);

/// How many times interrupt `intid` was taken.
pub fn interrupts_taken(intid: u32) -> u32 {
    TAKEN_INTERRUPTS
        .get(intid as usize)
        .map_or(0, |count| count.load(Ordering::SeqCst))
}

/// Makes the IRQ handler quiet the PL011 at `base` (raising `intid`) when it fires.
pub fn set_passthrough_uart(base: u64, intid: u32) {
    PASSTHROUGH_UART.store(base, Ordering::SeqCst);
    PASSTHROUGH_INTID.store(intid, Ordering::SeqCst);
}

/// `ESR_EL1`, `FAR_EL1` and `ELR_EL1` of the exception being taken.
fn exception_registers() -> (u64, u64, u64) {
    let (esr, far, elr): (u64, u64, u64);
    // SAFETY: reads this vCPU's EL1 exception registers.
    unsafe {
        asm!(
            "mrs {esr}, esr_el1",
            "mrs {far}, far_el1",
            "mrs {elr}, elr_el1",
            esr = out(reg) esr,
            far = out(reg) far,
            elr = out(reg) elr,
            options(nomem, nostack),
        );
    }
    (esr, far, elr)
}

/// The synchronous exception vector (current EL, SP_ELx).
pub extern "C" fn sync_exception() {
    let (esr, far, elr) = exception_registers();
    let abort = Abort { esr, far };
    if !EXPECTING.load(Ordering::SeqCst) || abort.class() != EC_DATA_ABORT_SAME_EL {
        stop_on("unexpected synchronous exception", esr, far, elr);
    }
    ESR.store(esr, Ordering::SeqCst);
    FAR.store(far, Ordering::SeqCst);
    TAKEN.store(true, Ordering::SeqCst);
    // SAFETY: resumes after the one 4-byte load or store that aborted
    // (`mmio::read`/`write` are one instruction each).
    unsafe { asm!("msr elr_el1, {}", in(reg) elr + 4, options(nomem, nostack)) };
}

/// The IRQ vector: acknowledge, handle, end.
pub extern "C" fn irq_exception() {
    let (intid, iar) = gic::acknowledge();
    if intid == gic::SPURIOUS {
        return;
    }
    if intid == VIRTUAL_TIMER.load(Ordering::SeqCst) {
        crate::checks::stop_timer();
    }
    if intid == PASSTHROUGH_INTID.load(Ordering::SeqCst) {
        crate::checks::quiet_uart(PASSTHROUGH_UART.load(Ordering::SeqCst));
    }
    if let Some(count) = TAKEN_INTERRUPTS.get(intid as usize) {
        count.fetch_add(1, Ordering::SeqCst);
    }
    gic::end(iar);
}

/// Any other vector.
pub extern "C" fn unexpected_exception() {
    let (esr, far, elr) = exception_registers();
    stop_on("unexpected exception", esr, far, elr);
}

fn stop_on(what: &str, esr: u64, far: u64, elr: u64) -> ! {
    let mut line: heapless::String<160> = heapless::String::new();
    let _ = core::fmt::write(
        &mut line,
        format_args!(
            "transom-test: {what}: ESR_EL1 {esr:#x} FAR_EL1 {far:#x} ELR_EL1 {elr:#x}; powering off\n"
        ),
    );
    console::write_unlocked(&line);
    psci::system_off()
}
