//! Releasing a secondary CPU from the firmware: PSCI `CPU_ON` or the spin table.

use super::cpu;
use super::entry::{self, SECONDARY_BOOT_ARGS, SecondaryBootArgs};
use super::mmu::MmuRegisters;
use super::psci::{self, PsciError};

/// How to release one secondary CPU.
#[derive(Clone, Copy, Debug)]
pub enum Release {
    /// PSCI `CPU_ON` for this affinity.
    Psci {
        /// `MPIDR` affinity of the target.
        mpidr: u64,
    },
    /// Write the entry address to this `cpu-release-addr` and `sev`.
    SpinTable {
        /// The release address (RAM the firmware polls).
        release_address: u64,
    },
}

/// Why a secondary CPU could not be released.
#[derive(Clone, Copy, Debug)]
pub enum ReleaseError {
    /// The firmware refused `CPU_ON`.
    Psci(PsciError),
    /// The release address is not 8-byte aligned.
    MisalignedReleaseAddress(u64),
}

/// Prepares the boot arguments of logical CPU `index` and releases it.
///
/// The caller must wait for the CPU to report in before releasing another: the boot
/// arguments are one shared block.
pub fn release(index: usize, how: Release, mmu: &MmuRegisters) -> Result<(), ReleaseError> {
    let args = SecondaryBootArgs {
        mair: mmu.mair,
        tcr: mmu.tcr,
        ttbr0: mmu.ttbr0,
        sctlr: mmu.sctlr,
        stack_top: entry::stack_top(index),
        cpu_index: index as u64,
    };
    let args_address = (&raw const SECONDARY_BOOT_ARGS) as u64;
    // SAFETY: only the boot CPU writes the block, and only while no secondary is
    // between release and report-in (the caller's contract), so nothing reads it
    // concurrently.
    unsafe { (&raw mut SECONDARY_BOOT_ARGS).write(args) };
    // The secondary reads the block with its MMU and caches off.
    cpu::clean_dcache_to_poc(args_address, size_of::<SecondaryBootArgs>() as u64);

    let entry_point = entry::secondary_entry_address();
    match how {
        Release::Psci { mpidr } => {
            psci::cpu_on(mpidr, entry_point, index as u64).map_err(ReleaseError::Psci)
        }
        Release::SpinTable { release_address } => {
            if !release_address.is_multiple_of(8) {
                return Err(ReleaseError::MisalignedReleaseAddress(release_address));
            }
            // SAFETY: the release address is a firmware-reserved, 8-byte aligned
            // word of RAM that the firmware's spin loop polls (device tree
            // `cpu-release-addr`), mapped as RAM by the EL2 tables.
            unsafe { (release_address as *mut u64).write(entry_point) };
            cpu::clean_dcache_to_poc(release_address, 8);
            cpu::send_event();
            Ok(())
        }
    }
}
