//! The defmt global logger: frames go to the board's console UART, whole.
//!
//! defmt frames are rzCOBS-encoded and zero-delimited, so the host decoder resyncs
//! after any corruption. A frame is written under a lock owned by one CPU at a time,
//! with interrupts masked, so frames from different CPUs never interleave.
//!
//! Until [`ConsoleCell::install`] runs (before that the MMU is off and exclusive
//! accesses, which a lock needs, are not allowed) log calls are dropped.

use core::cell::UnsafeCell;
use core::convert::Infallible;
use core::hint::spin_loop;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use crate::arch;

/// The console the logger writes to.
pub type ConsoleRef = &'static mut (dyn embedded_io::Write<Error = Infallible> + Send);

/// Static storage for a board's console driver, so the logger needs no heap.
pub struct ConsoleCell<C> {
    taken: AtomicBool,
    slot: UnsafeCell<Option<C>>,
}

// SAFETY: `slot` is written once, by the one caller that wins `taken`, and then only
// reached through the `&'static mut` that `install` returns, which the logger guards
// with its lock; `C: Send` lets that access happen from any CPU.
unsafe impl<C: Send> Sync for ConsoleCell<C> {}

impl<C: embedded_io::Write<Error = Infallible> + Send + 'static> ConsoleCell<C> {
    /// An empty cell.
    pub const fn new() -> Self {
        ConsoleCell {
            taken: AtomicBool::new(false),
            slot: UnsafeCell::new(None),
        }
    }

    /// Moves `console` into the cell and makes it the logger's output.
    ///
    /// Panics if called twice. Call with the MMU on.
    pub fn install(&'static self, console: C) {
        assert!(
            !self.taken.swap(true, Ordering::AcqRel),
            "the console is installed once"
        );
        // SAFETY: winning `taken` makes this the only access to `slot` ever made
        // other than through the reference handed to the logger below.
        let slot = unsafe { &mut *self.slot.get() };
        let console: ConsoleRef = slot.insert(console);
        install(console);
    }
}

impl<C: embedded_io::Write<Error = Infallible> + Send + 'static> Default for ConsoleCell<C> {
    fn default() -> Self {
        Self::new()
    }
}

struct State {
    encoder: defmt::Encoder,
    console: Option<ConsoleRef>,
    saved_interrupt_mask: u64,
}

struct Shared(UnsafeCell<State>);

// SAFETY: `State` is only touched by the CPU that holds `OWNER` (see `Logger`).
unsafe impl Sync for Shared {}

static STATE: Shared = Shared(UnsafeCell::new(State {
    encoder: defmt::Encoder::new(),
    console: None,
    saved_interrupt_mask: 0,
}));

const NO_OWNER: usize = 0;
/// 1 + the index of the CPU holding the logger, or `NO_OWNER`.
static OWNER: AtomicUsize = AtomicUsize::new(NO_OWNER);
static READY: AtomicBool = AtomicBool::new(false);

fn install(console: ConsoleRef) {
    let previous_mask = arch::cpu::mask_interrupts();
    // SAFETY: called once, on the boot CPU, before `READY` lets any CPU in.
    let state = unsafe { &mut *STATE.0.get() };
    state.console = Some(console);
    READY.store(true, Ordering::Release);
    arch::cpu::restore_interrupts(previous_mask);
}

fn state() -> &'static mut State {
    // SAFETY: callers hold the logger (`OWNER` is this CPU), so no other reference to
    // `State` is live.
    unsafe { &mut *STATE.0.get() }
}

fn write_console(bytes: &[u8]) {
    if let Some(console) = state().console.as_mut() {
        // Infallible: `write_all` blocks until the UART took every byte.
        let Ok(()) = console.write_all(bytes);
    }
}

#[defmt::global_logger]
struct Logger;

// SAFETY: `acquire` takes a per-CPU-owned lock with interrupts masked, so exactly one
// CPU runs between `acquire` and `release`, as defmt requires. A CPU that re-enters
// (an exception or panic inside a log call) takes over its own frame; the abandoned
// frame shows up as one undecodable frame on the host.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        if !READY.load(Ordering::Acquire) {
            return;
        }
        let previous_mask = arch::cpu::mask_interrupts();
        let me = arch::cpu::cpu_index() + 1;
        loop {
            match OWNER.compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed) {
                Ok(_) => break,
                Err(owner) if owner == me => break,
                Err(_) => spin_loop(),
            }
        }
        let state = state();
        state.saved_interrupt_mask = previous_mask;
        state.encoder.start_frame(write_console);
    }

    unsafe fn flush() {
        if !READY.load(Ordering::Acquire) {
            return;
        }
        if let Some(console) = state().console.as_mut() {
            let Ok(()) = console.flush();
        }
    }

    unsafe fn release() {
        if !READY.load(Ordering::Acquire) {
            return;
        }
        let state = state();
        state.encoder.end_frame(write_console);
        let previous_mask = state.saved_interrupt_mask;
        OWNER.store(NO_OWNER, Ordering::Release);
        arch::cpu::restore_interrupts(previous_mask);
    }

    unsafe fn write(bytes: &[u8]) {
        if !READY.load(Ordering::Acquire) {
            return;
        }
        state().encoder.write(bytes, write_console);
    }
}

defmt::timestamp!("{=u64:us}", arch::cpu::uptime_micros());
