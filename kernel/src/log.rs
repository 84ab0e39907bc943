//! The defmt global logger: frames go to the board's console UART, whole.
//!
//! defmt frames are rzCOBS-encoded and zero-delimited, so the host decoder resyncs
//! after any corruption. A frame is encoded under a lock owned by one CPU at a time,
//! with interrupts masked, so frames from different CPUs never interleave.
//!
//! A frame's bytes are collected in a buffer and encoded in one pass when the frame
//! ends (or the buffer fills), by [`transom_vmm_core::rzcobs`] rather than
//! `defmt::Encoder`: same bytes, but defmt's encoder hands each output byte to a
//! callback and cost about 45 instructions per logged byte. The encoded frame goes
//! to the UART in one `write_all`.
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

/// Bytes of a frame, before encoding, kept until the frame ends. Most frames are
/// shorter; a longer one is encoded and written in pieces of this size.
const RAW_BUFFER: usize = 256;
/// Room for the encoding of a full raw buffer, a leading zero and the frame's end.
const ENCODED_BUFFER: usize = 1 + max_encoded_len(RAW_BUFFER) + END_FRAME_LEN;

struct State {
    encoder: FrameEncoder,
    console: Option<ConsoleRef>,
    saved_interrupt_mask: u64,
    /// The frame's bytes not yet encoded. defmt writes a frame an argument at a
    /// time, mostly a few bytes each: they are copied here, and encoded in one
    /// pass when the frame ends.
    raw: [u8; RAW_BUFFER],
    raw_len: usize,
    /// The encoded bytes, written to the console in one go.
    encoded: [u8; ENCODED_BUFFER],
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
    raw: [0; RAW_BUFFER],
    raw_len: 0,
    encoded: [0; ENCODED_BUFFER],
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

/// Adds `bytes` to the frame. The common case, a defmt argument of a few bytes with
/// room left, makes no call, so it needs no stack frame.
#[inline(always)]
fn append(state: &mut State, bytes: &[u8]) {
    let end = state.raw_len + bytes.len();
    if bytes.len() < 16
        && end <= RAW_BUFFER
        && let Some(free) = state.raw.get_mut(state.raw_len..end)
    {
        // SAFETY: the logger runs only once `READY` is set, after the MMU is on
        // (`SCTLR_EL2.A` clear: `mmu::enable`), and `bytes` (a defmt argument)
        // and the buffer are in RAM, mapped as Normal memory.
        unsafe { arch::cpu::copy_short_unaligned(free, bytes) };
        state.raw_len = end;
    } else {
        append_in_pieces(state, bytes);
    }
}

/// Adds `bytes`, 16 or more or more than what is left of the raw buffer holds,
/// encoding and writing the buffer whenever it fills.
#[inline(never)]
fn append_in_pieces(state: &mut State, bytes: &[u8]) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let take = rest.len().min(RAW_BUFFER - state.raw_len);
        let (now, later) = rest.split_at(take);
        state.raw[state.raw_len..state.raw_len + take].copy_from_slice(now);
        state.raw_len += take;
        rest = later;
        if state.raw_len == RAW_BUFFER {
            write_encoded(state, false);
        }
    }
}

/// Encodes the raw buffer, and the frame's end if `end_frame`, and writes the
/// result to the console.
fn write_encoded(state: &mut State, end_frame: bool) {
    let mut len = 0;
    if !state.started {
        state.started = true;
        state.encoded[0] = 0;
        len = 1;
    }
    state
        .encoder
        .write(&state.raw[..state.raw_len], &mut state.encoded, &mut len);
    state.raw_len = 0;
    if end_frame {
        state.encoder.end_frame(&mut state.encoded, &mut len);
    }
    if let Some(console) = state.console.as_mut() {
        // Infallible: `write_all` blocks until the UART took every byte.
        let Ok(()) = console.write_all(&state.encoded[..len]);
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
        state.raw_len = 0;
        state.encoder = FrameEncoder::new();
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
        write_encoded(state, true);
        let previous_mask = state.saved_interrupt_mask;
        OWNER.store(NO_OWNER, Ordering::Release);
        arch::cpu::restore_interrupts(previous_mask);
    }

    unsafe fn write(bytes: &[u8]) {
        if !READY.load(Ordering::Acquire) {
            return;
        }
        append(state(), bytes);
    }
}

defmt::timestamp!("{=u64:us}", arch::cpu::uptime_micros());
