//! The guest's console: the PL011 its device tree's `/chosen/stdout-path` names
//! (its own UART, or the hypervisor's virtual one), written a byte at a time
//! when `UARTFR.TXFF` is clear (Arm PL011 TRM, DDI 0183, 3.3.3).

use core::fmt::{self, Write as _};
use core::sync::atomic::{AtomicU64, Ordering};

use spin::Mutex;

use crate::mmio;

/// `UARTDR`, `UARTFR` and `UARTCR` offsets, and the bits used (DDI 0183, 3.2).
const DR: u64 = 0x000;
const FR: u64 = 0x018;
const CR: u64 = 0x030;
const FR_TXFF: u64 = 1 << 5;
const CR_UARTEN: u64 = 1 << 0;
const CR_TXE: u64 = 1 << 8;
const CR_RXE: u64 = 1 << 9;

static BASE: AtomicU64 = AtomicU64::new(0);
static LOCK: Mutex<()> = Mutex::new(());

/// Starts the console on the PL011 at `base`: enabled, transmit on.
pub fn init(base: u64) {
    // SAFETY: `base` is the PL011 the device tree names as the console.
    unsafe { mmio::write::<4>(base + CR, CR_UARTEN | CR_TXE | CR_RXE) };
    BASE.store(base, Ordering::Release);
}

/// Writes `text` without taking the lock (for a vCPU that is about to stop on
/// an unexpected exception, which may have interrupted a locked print).
pub fn write_unlocked(text: &str) {
    let _ = Writer.write_str(text);
}

/// Prints `args` and a newline, whole (vCPUs take turns).
pub fn print_line(args: fmt::Arguments<'_>) {
    let _turn = LOCK.lock();
    let _ = Writer.write_fmt(args);
    let _ = Writer.write_str("\n");
}

struct Writer;

impl Writer {
    fn put(&self, byte: u8) {
        let base = BASE.load(Ordering::Acquire);
        if base == 0 {
            return;
        }
        // SAFETY: `base` is the console PL011 ([`init`]); FR and DR are its
        // registers.
        unsafe {
            while mmio::read::<4>(base + FR) & FR_TXFF != 0 {}
            mmio::write::<4>(base + DR, u64::from(byte));
        }
    }
}

impl fmt::Write for Writer {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        text.bytes().for_each(|byte| self.put(byte));
        Ok(())
    }
}

/// Prints one line on the console: `report!("...", args)`.
#[macro_export]
macro_rules! report {
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}
