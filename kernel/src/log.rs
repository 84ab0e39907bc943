//! The defmt global logger: frames go to the board's console UART, whole.
//!
//! defmt frames are rzCOBS-encoded and zero-delimited, so the host decoder resyncs
//! after any corruption. A frame is encoded under a lock owned by one CPU at a time,
//! with interrupts masked, so frames from different CPUs never interleave.
//!
//! Frames are encoded by [`transom_vmm_core::rzcobs`] rather than `defmt::Encoder`
//! (same bytes; defmt's encoder hands each output byte to a callback and cost
//! about 45 instructions per logged byte), into a buffer that goes to the UART in
//! one `write_all` when the frame ends or the buffer fills.
//!
//! Until [`ConsoleCell::install`] runs (before that the MMU is off and exclusive
//! accesses, which a lock needs, are not allowed) log calls are dropped.

use core::cell::UnsafeCell;
use core::convert::Infallible;
use core::hint::spin_loop;
use core::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use transom_vmm_core::rzcobs::{END_FRAME_LEN, FrameEncoder, max_encoded_len};

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

/// Bytes of encoded frame kept before they go to the console. Most frames are
/// shorter; a longer one is written in pieces of this size.
const FRAME_BUFFER: usize = 256;

struct State {
    encoder: FrameEncoder,
    console: Option<ConsoleRef>,
    saved_interrupt_mask: u64,
    /// The frame's encoded bytes not yet written.
    pending: [u8; FRAME_BUFFER],
    pending_len: usize,
    /// Whether a frame was started since boot: the first is preceded by a zero,
    /// so the host decoder resyncs after whatever an earlier boot left half-sent
    /// (as `defmt::Encoder::start_frame` does).
    started: bool,
}

struct Shared(UnsafeCell<State>);

// SAFETY: `State` is only touched by the CPU that holds `OWNER` (see `Logger`).
unsafe impl Sync for Shared {}

static STATE: Shared = Shared(UnsafeCell::new(State {
    encoder: FrameEncoder::new(),
    console: None,
    saved_interrupt_mask: 0,
    pending: [0; FRAME_BUFFER],
    pending_len: 0,
    started: false,
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

/// Encodes `bytes` into the frame's buffer. [`END_FRAME_LEN`] bytes always stay
/// free for the frame's end.
#[inline(always)]
fn encode(state: &mut State, bytes: &[u8]) {
    // defmt writes each argument on its own, mostly a few bytes: those go
    // straight in.
    if state.pending_len + max_encoded_len(bytes.len()) <= FRAME_BUFFER - END_FRAME_LEN {
        state
            .encoder
            .write(bytes, &mut state.pending, &mut state.pending_len);
    } else {
        encode_in_pieces(state, bytes);
    }
}

/// Encodes `bytes`, writing the buffer out whenever the rest does not fit.
#[inline(never)]
fn encode_in_pieces(state: &mut State, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let free = FRAME_BUFFER - END_FRAME_LEN - state.pending_len;
        // The most input bytes whose encoding fits: `max_encoded_len(n) <= free`
        // holds for n <= (free - 1) * 4 / 5.
        let fits = free.saturating_sub(1) * 4 / 5;
        if fits < rest.len().min(16) {
            flush_pending(state);
            continue;
        }
        let (now, later) = rest.split_at(rest.len().min(fits));
        state
            .encoder
            .write(now, &mut state.pending, &mut state.pending_len);
        rest = later;
    }
}

/// Writes the buffered bytes to the console.
fn flush_pending(state: &mut State) {
    let pending = &state.pending[..state.pending_len];
    state.pending_len = 0;
    if let Some(console) = state.console.as_mut() {
        // Infallible: `write_all` blocks until the UART took every byte.
        let Ok(()) = console.write_all(pending);
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
        // A frame abandoned by a re-entry is dropped (what of it was written shows
        // up as one undecodable frame).
        state.pending_len = 0;
        state.encoder = FrameEncoder::new();
        if !state.started {
            state.started = true;
            state.pending[0] = 0;
            state.pending_len = 1;
        }
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
        state
            .encoder
            .end_frame(&mut state.pending, &mut state.pending_len);
        flush_pending(state);
        let previous_mask = state.saved_interrupt_mask;
        OWNER.store(NO_OWNER, Ordering::Release);
        arch::cpu::restore_interrupts(previous_mask);
    }

    unsafe fn write(bytes: &[u8]) {
        if !READY.load(Ordering::Acquire) {
            return;
        }
        encode(state(), bytes);
    }
}

defmt::timestamp!("{=u64:us}", arch::cpu::uptime_micros());
