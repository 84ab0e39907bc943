//! The boards `cargo xtask` knows, and the facts it needs about each.

use clap::ValueEnum;
use transom_qemu::{GicVersion, Machine, MachineError};

/// The bare-metal target every aarch64 board builds for. Soft-float: the
/// hypervisor never touches an FP/SIMD register, so a guest's FP/SIMD state stays
/// in the registers across exits and the world switch need not save it
/// (`kernel/src/arch/aarch64/guest.rs`).
pub const AARCH64_TARGET: &str = "aarch64-unknown-none-softfloat";

/// The target Transom's own test guest builds for: a guest may use its FP/SIMD
/// registers (and the test guest saves them in its exception handlers).
pub const GUEST_TARGET: &str = "aarch64-unknown-none";

/// A board, as named on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum BoardName {
    /// QEMU `virt` with virtualization extensions.
    QemuVirt,
    /// Raspberry Pi 4 (QEMU `raspi4b`, or the real board).
    Rpi4,
}

impl BoardName {
    /// Every board.
    pub const ALL: [BoardName; 2] = [BoardName::QemuVirt, BoardName::Rpi4];

    /// The name as the board crate spells it.
    pub fn name(self) -> &'static str {
        match self {
            BoardName::QemuVirt => "qemu-virt",
            BoardName::Rpi4 => "rpi4",
        }
    }

    /// The board crate.
    pub fn package(self) -> String {
        format!("transom-board-{}", self.name())
    }

    /// The image binary.
    pub fn binary(self) -> String {
        format!("transom-{}", self.name())
    }

    /// The file name the board's loader expects.
    pub fn image_file_name(self) -> &'static str {
        match self {
            BoardName::QemuVirt => "Image",
            BoardName::Rpi4 => "kernel8.img",
        }
    }

    /// The Rust target.
    pub fn target(self) -> &'static str {
        AARCH64_TARGET
    }

    /// The QEMU machine for this board.
    pub fn machine(self, gic: GicVersion, cpus: Option<u32>) -> Result<Machine, MachineError> {
        match self {
            BoardName::QemuVirt => Machine::virt(gic, cpus.unwrap_or(4)),
            BoardName::Rpi4 => match cpus {
                None | Some(4) => Ok(Machine::Raspi4b),
                Some(_) => Err(MachineError::FixedCpus),
            },
        }
    }
}
