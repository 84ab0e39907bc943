//! Transom's hypervisor core.
//!
//! A board binary (see `boards/`) implements [`Board`] and calls
//! [`board_entry!`]; the assembly entry point in `arch` sets up a stack and calls
//! into [`boot`]. Everything that needs `unsafe` lives in `arch` (and the defmt
//! logger, whose trait is `unsafe`); the rest of the kernel is safe Rust.

#![no_std]
#![deny(unsafe_code)]

extern crate alloc;

#[allow(unsafe_code)]
pub mod arch;
mod board_table;
pub mod boot;
mod exit;
mod guest_load;
mod heap;
#[allow(unsafe_code)]
pub mod log;
mod panic;
mod smp;
mod stage2;
mod stage2_probe;
mod vcpu;
mod vgic;

use core::convert::Infallible;

pub use log::ConsoleCell;
pub use transom_boards as boards;
pub use transom_vmm_core::verdict::Verdict;

/// What the kernel needs from a board crate.
pub trait Board: 'static {
    /// The board's table.
    const DESC: transom_boards::Board;

    /// The console driver type.
    type Console: embedded_io::Write<Error = Infallible> + Send + 'static;

    /// Creates and programs the console driver. Called once, on the boot CPU, with the
    /// MMU on and the board's device memory mapped.
    fn console() -> Self::Console;
}

/// Defines the entry points the assembly boot code calls, for board `$board`.
#[macro_export]
macro_rules! board_entry {
    ($board:ty) => {
        /// Called by the boot CPU's assembly entry with the firmware's device tree.
        #[unsafe(no_mangle)]
        extern "C" fn __transom_primary_main(device_tree: usize) -> ! {
            static CONSOLE: $crate::ConsoleCell<<$board as $crate::Board>::Console> =
                $crate::ConsoleCell::new();
            $crate::boot::primary_main::<$board>(device_tree, &CONSOLE)
        }

        /// Called by each secondary CPU's assembly entry with its logical index.
        #[unsafe(no_mangle)]
        extern "C" fn __transom_secondary_main(cpu: usize) -> ! {
            $crate::boot::secondary_main(cpu)
        }
    };
}
