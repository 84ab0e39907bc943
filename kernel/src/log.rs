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
//!
//! **The boot log is held, then sent.** Until the partitions are launched, each
//! finished frame is kept raw in a buffer instead of being encoded and written. The
//! boot CPU, which runs no partition, sends them all once every started partition
//! has entered its guest ([`release_boot_log`], called by `vcpu::launch`). Encoding
//! the frames and the UART's time are thus off the path to the first guest
//! instruction, as Xen's console ring takes serial output off its boot path: on
//! `virt` the boot log is some 650 encoded bytes, over 50 ms at 115,200 baud.
//! Nothing is lost or reordered: a frame that is written directly (the held buffer
//! is full, or a frame is too long to hold) first sends every held one, and ending
//! the run (`defmt::flush`, which the panic and exception handlers reach through
//! `exit::end_run`) sends them too. A boot that hangs before the launch would show
//! nothing, so an image built with `TRANSOM_LOG_DIRECT` set (`TRANSOM_LOG_DIRECT=1
//! cargo xtask qemu`) writes every frame as it ends.

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
/// Room for held frames: the boot log on `virt` is about 1.5 KiB raw. A boot
/// that logs more sends what is held when it fills, and holds again.
const HELD_BUFFER: usize = 4096;
/// Each held frame is its length (two bytes, little-endian), then its raw bytes.
const HELD_HEADER: usize = 2;
const _: () = assert!(RAW_BUFFER <= u16::MAX as usize);
/// Whether frames are held until [`release_boot_log`]: unless the image was built
/// with `TRANSOM_LOG_DIRECT` set.
const HOLD_BOOT_LOG: bool = option_env!("TRANSOM_LOG_DIRECT").is_none();

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
    /// Whether finished frames are held rather than sent (until the boot log is
    /// released).
    holding: bool,
    /// Whether part of the open frame was already encoded and sent (a frame longer
    /// than the raw buffer): its end is then sent too, not held.
    spilled: bool,
    /// Held frames, in the order they ended: `held[held_start..held_len]`.
    held: [u8; HELD_BUFFER],
    held_start: usize,
    held_len: usize,
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
    holding: HOLD_BOOT_LOG,
    spilled: false,
    held: [0; HELD_BUFFER],
    held_start: 0,
    held_len: 0,
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
            state.spilled = true;
            write_encoded(state, false);
        }
    }
}

/// Encodes the raw buffer, and the frame's end if `end_frame`, and writes the
/// result to the console, after every held frame.
fn write_encoded(state: &mut State, end_frame: bool) {
    if state.held_start != state.held_len {
        send_held(state);
    }
    let State {
        encoder,
        console,
        raw,
        raw_len,
        encoded,
        started,
        ..
    } = state;
    send(
        encoder,
        console,
        started,
        encoded,
        &raw[..*raw_len],
        end_frame,
    );
    *raw_len = 0;
}

/// Encodes `data`, and the frame's end if `end_frame`, and writes the result to
/// `console`.
fn send(
    encoder: &mut FrameEncoder,
    console: &mut Option<ConsoleRef>,
    started: &mut bool,
    encoded: &mut [u8; ENCODED_BUFFER],
    data: &[u8],
    end_frame: bool,
) {
    let mut len = 0;
    if !*started {
        *started = true;
        encoded[0] = 0;
        len = 1;
    }
    encoder.write(data, encoded, &mut len);
    if end_frame {
        encoder.end_frame(encoded, &mut len);
    }
    if let Some(console) = console.as_mut() {
        // Infallible: `write_all` blocks until the UART took every byte.
        let Ok(()) = console.write_all(&encoded[..len]);
    }
}

/// Keeps the finished frame in the raw buffer among the held ones, if there is
/// room. Returns whether it did.
fn hold(state: &mut State) -> bool {
    let start = state.held_len;
    let end = start + HELD_HEADER + state.raw_len;
    let Some(room) = state.held.get_mut(start..end) else {
        return false;
    };
    let (header, bytes) = room.split_at_mut(HELD_HEADER);
    header.copy_from_slice(&(state.raw_len as u16).to_le_bytes());
    bytes.copy_from_slice(&state.raw[..state.raw_len]);
    state.held_len = end;
    state.raw_len = 0;
    true
}

/// Sends the oldest held frame. Returns `false` if none is held.
fn send_oldest_held(state: &mut State) -> bool {
    let State {
        console,
        encoded,
        started,
        held,
        held_start,
        held_len,
        ..
    } = state;
    if *held_start > *held_len {
        // A log call that re-entered this one (an exception while sending) sent
        // everything and started again from the front.
        *held_start = 0;
    }
    // The oldest frame: its length, then that many bytes (`hold` keeps frames
    // whole). None left, the buffer starts over from its front.
    let oldest = held.get(*held_start..*held_len).and_then(|frames| {
        let (header, rest) = frames.split_first_chunk::<HELD_HEADER>()?;
        rest.get(..usize::from(u16::from_le_bytes(*header)))
    });
    let Some(data) = oldest else {
        *held_start = 0;
        *held_len = 0;
        return false;
    };
    let len = data.len();
    // An encoder of its own: the open frame's may be part-way through a frame.
    let mut frame_encoder = FrameEncoder::new();
    send(&mut frame_encoder, console, started, encoded, data, true);
    *held_start += HELD_HEADER + len;
    if held_start == held_len {
        *held_start = 0;
        *held_len = 0;
    }
    true
}

/// Sends every held frame, oldest first.
#[inline(never)]
fn send_held(state: &mut State) {
    while send_oldest_held(state) {}
}

/// Ends the holding of the boot log: sends every held frame, oldest first, and
/// every later frame as it ends. Called by the boot CPU once every started
/// partition has entered its guest; not from inside a log call. The logger is
/// taken for one frame at a time, so a partition's CPU that logs meanwhile waits
/// for one frame at most; its frame is held behind the others until the last is
/// sent.
pub fn release_boot_log() {
    if !READY.load(Ordering::Acquire) {
        return;
    }
    loop {
        let previous_mask = take_logger();
        let state = state();
        let sent = send_oldest_held(state);
        if !sent {
            state.holding = false;
        }
        give_back_logger(previous_mask);
        if !sent {
            return;
        }
    }
}

/// Takes the logger for this CPU, with interrupts masked: returns the mask to
/// restore. A CPU that holds it already (a re-entry) keeps it.
fn take_logger() -> u64 {
    let previous_mask = arch::cpu::mask_interrupts();
    let me = arch::cpu::cpu_index() + 1;
    loop {
        match OWNER.compare_exchange_weak(NO_OWNER, me, Ordering::Acquire, Ordering::Relaxed) {
            Ok(_) => break,
            Err(owner) if owner == me => break,
            Err(_) => spin_loop(),
        }
    }
    previous_mask
}

/// Gives the logger back and restores the interrupt mask `take_logger` returned.
fn give_back_logger(previous_mask: u64) {
    OWNER.store(NO_OWNER, Ordering::Release);
    arch::cpu::restore_interrupts(previous_mask);
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
        let previous_mask = take_logger();
        let state = state();
        state.saved_interrupt_mask = previous_mask;
        // A frame abandoned by a re-entry is dropped (what of it was written shows
        // up as one undecodable frame).
        state.raw_len = 0;
        state.spilled = false;
        state.encoder = FrameEncoder::new();
    }

    /// Sends every held frame and ends the holding (the run is ending), then
    /// flushes the console.
    unsafe fn flush() {
        if !READY.load(Ordering::Acquire) {
            return;
        }
        let state = state();
        send_held(state);
        state.holding = false;
        if let Some(console) = state.console.as_mut() {
            let Ok(()) = console.flush();
        }
    }

    unsafe fn release() {
        if !READY.load(Ordering::Acquire) {
            return;
        }
        let state = state();
        if !(state.holding && !state.spilled && hold(state)) {
            write_encoded(state, true);
        }
        give_back_logger(state.saved_interrupt_mask);
    }

    unsafe fn write(bytes: &[u8]) {
        if !READY.load(Ordering::Acquire) {
            return;
        }
        append(state(), bytes);
    }
}

defmt::timestamp!("{=u64:us}", arch::cpu::uptime_micros());
