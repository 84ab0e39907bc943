//! The stage-2 self-test (`transom.selftest=stage2`): before any guest exists, run
//! a few EL1 instructions in each partition, on the boot CPU, through the stage 2
//! built from its table, and check what the hardware reports at each exit.
//!
//! The program (in `arch::stage2_probe`) writes and reads back the last word of the
//! partition's RAM, reads the last 32-bit word of its first direct window, reads
//! the exact address of its first trapped window and a word of the hypervisor's
//! memory. The checks: RAM gives back what was written and the hypervisor finds it
//! at the same physical address (RAM is identity-mapped); the device read
//! completes (its value is logged for the host to compare with the device's
//! documentation); the trapped read stops with a stage-2 translation fault whose
//! IPA is the device's exact address and which the trap table resolves to that
//! window; the hypervisor's memory is out of reach (stage-2 translation fault).

use transom_boards::{Mapping, PhysRange, Region};
use transom_vmm_core::esr::{Abort, Esr, ExceptionClass, FaultStatus};
use transom_vmm_core::stage2::window::MappedWindow;
use transom_vmm_core::verdict::Verdict;

use crate::arch::guest::{self, GuestContext};
use crate::arch::stage2_probe::{self, report};
use crate::arch::vectors::VectorKind;
use crate::stage2::PartitionStage2;

/// More exits than the program can make: a guest that keeps exiting has gone wrong.
const MAX_EXITS: usize = 8;

/// The register the program loads the trapped window into (`ldr w7`).
const TRAPPED_REGISTER: u8 = 7;
/// The register the program loads the hypervisor's memory into (`ldr x8`).
const FORBIDDEN_REGISTER: u8 = 8;

/// Runs the probe in every partition, one after the other; `forbidden` is the
/// hypervisor's memory. Passes if every partition's probe did.
pub fn run(partitions: &[PartitionStage2], forbidden: PhysRange) -> Verdict {
    let mut verdict = Verdict::Pass;
    for partition in partitions {
        if !probe(partition, forbidden) {
            verdict = Verdict::TestFailure;
        }
    }
    guest::leave_partition();
    verdict
}

/// What the next exit must be.
#[derive(Clone, Copy)]
enum Expect {
    /// `hvc #imm`.
    Report(u16),
    /// A stage-2 translation fault on a read of `size` bytes at `ipa` into
    /// `register`, which the trap table resolves to a window if `trapped`.
    Abort {
        ipa: u64,
        size: u8,
        register: u8,
        trapped: bool,
    },
}

fn probe(partition: &PartitionStage2, forbidden: PhysRange) -> bool {
    let (Some(&first_bank), Some(&last_bank)) = (partition.ram.first(), partition.ram.last())
    else {
        defmt::error!("stage-2 probe of {=str}: no RAM", partition.name);
        return false;
    };
    let ram_word = last_bank.end - 8;
    let pattern = 0x5452_414e_534f_4d00 | u64::from(partition.vmid);
    let direct = first_window(partition, Mapping::Direct);
    let trapped = first_window(partition, Mapping::Trapped);
    let direct_word = direct.map(|(_, window)| (window.device_ipa + window.size - 4) & !3);

    let mut expected = heapless::Vec::<Expect, 6>::new();
    let mut push = |expect| {
        // Six entries at most, pushed below: cannot overflow.
        let _ = expected.push(expect);
    };
    push(Expect::Report(report::RAM));
    if direct.is_some() {
        push(Expect::Report(report::DIRECT));
    }
    if let Some((_, window)) = trapped {
        push(Expect::Abort {
            ipa: window.device_ipa,
            size: 4,
            register: TRAPPED_REGISTER,
            trapped: true,
        });
        push(Expect::Report(report::TRAPPED));
    }
    push(Expect::Abort {
        ipa: forbidden.start,
        size: 8,
        register: FORBIDDEN_REGISTER,
        trapped: false,
    });
    push(Expect::Report(report::DONE));

    guest::copy_to_guest_ram(first_bank, first_bank.start, stage2_probe::code());
    let mut context = GuestContext::default();
    context.x[0] = ram_word;
    context.x[1] = pattern;
    context.x[2] = direct_word.unwrap_or(0);
    context.x[3] = trapped.map_or(0, |(_, window)| window.device_ipa);
    context.x[4] = forbidden.start;
    context.elr = first_bank.start;
    context.spsr = guest::SPSR_EL1H_MASKED;
    defmt::info!(
        "stage-2 probe of {=str}: EL1 at IPA {=u64:#x}, VMID {=u8}",
        partition.name,
        first_bank.start,
        partition.vmid
    );
    guest::enter_partition(partition.vttbr);

    let mut steps = expected.iter();
    for _ in 0..MAX_EXITS {
        let kind = guest::run_to_exit(&mut context);
        let Some(&expect) = steps.next() else {
            break;
        };
        if !matches_exit(partition, kind, &context, expect) {
            return false;
        }
        match expect {
            Expect::Report(report::RAM) => {
                if !check_ram(partition, last_bank, ram_word, pattern, context.x[5]) {
                    return false;
                }
            }
            Expect::Report(report::DIRECT) => {
                let name = direct.map_or("", |(region, _)| region.name);
                defmt::info!(
                    "stage-2 probe of {=str}: direct window {=str} read 32 bits at IPA {=u64:#x}: {=u64:#x}",
                    partition.name,
                    name,
                    direct_word.unwrap_or(0),
                    context.x[6] & 0xffff_ffff
                );
            }
            Expect::Report(report::DONE) => {
                defmt::info!("stage-2 probe of {=str}: passed", partition.name);
                return true;
            }
            Expect::Report(_) => {}
            Expect::Abort { .. } => {
                // The abort is not forwarded yet (the guests issue does that): skip
                // the 32-bit load instruction.
                context.elr += 4;
            }
        }
    }
    defmt::error!(
        "stage-2 probe of {=str}: the program did not finish in {=usize} exits",
        partition.name,
        MAX_EXITS
    );
    false
}

fn first_window(
    partition: &PartitionStage2,
    mode: Mapping,
) -> Option<(&'static Region, MappedWindow)> {
    partition
        .windows
        .iter()
        .find(|(_, window)| window.mode == mode)
        .copied()
}

/// Whether the exit in `context` is the one `expect` describes; logs why not, or
/// logs a matching abort.
fn matches_exit(
    partition: &PartitionStage2,
    kind: VectorKind,
    context: &GuestContext,
    expect: Expect,
) -> bool {
    let esr = Esr(context.esr);
    if kind == VectorKind::LowerSync {
        match (expect, esr.class(), esr.abort()) {
            (Expect::Report(imm), ExceptionClass::Hvc64, _) if esr.iss() == u32::from(imm) => {
                return true;
            }
            (
                Expect::Abort {
                    ipa,
                    size,
                    register,
                    trapped,
                },
                ExceptionClass::DataAbortLower,
                Some(abort),
            ) if is_expected_abort(&abort, guest::exit_fault_ipa(), ipa, size, register)
                && partition.space.trapped_window(ipa).is_some() == trapped =>
            {
                log_abort(partition, &abort, ipa);
                return true;
            }
            _ => {}
        }
    }
    defmt::error!(
        "stage-2 probe of {=str}: unexpected exit ({=str}) at IPA {=u64:#x}: ESR_EL2 {=u64:#x} {}, FAR_EL2 {=u64:#x}, fault IPA {=u64:#x}",
        partition.name,
        kind.name(),
        context.elr,
        context.esr,
        defmt::Display2Format(&esr),
        guest::exit_far(),
        guest::exit_fault_ipa()
    );
    false
}

fn is_expected_abort(abort: &Abort, fault_ipa: u64, ipa: u64, size: u8, register: u8) -> bool {
    let access_matches = abort
        .access
        .is_some_and(|access| access.size == size && access.register == register && !access.write);
    matches!(abort.status, FaultStatus::Translation { .. })
        && !abort.on_stage1_walk
        && access_matches
        && fault_ipa == ipa
}

fn log_abort(partition: &PartitionStage2, abort: &Abort, ipa: u64) {
    let level = match abort.status {
        FaultStatus::Translation { level } => level,
        _ => 0,
    };
    match partition.space.trapped_window(ipa) {
        Some(window) => defmt::info!(
            "stage-2 probe of {=str}: read at IPA {=u64:#x} trapped (translation fault, level {=u8}) in window {=str} {=u64:#x}..{=u64:#x}",
            partition.name,
            ipa,
            level,
            window.device,
            window.range.start,
            window.range.end
        ),
        None => defmt::info!(
            "stage-2 probe of {=str}: read at IPA {=u64:#x} outside the partition refused (translation fault, level {=u8})",
            partition.name,
            ipa,
            level
        ),
    }
}

/// The value read back must be the pattern, and the hypervisor must find the
/// pattern at the same physical address.
fn check_ram(
    partition: &PartitionStage2,
    bank: PhysRange,
    address: u64,
    pattern: u64,
    read_back: u64,
) -> bool {
    let physical = guest::read_guest_ram_u64(bank, address);
    if read_back == pattern && physical == pattern {
        defmt::info!(
            "stage-2 probe of {=str}: RAM at IPA {=u64:#x} read back {=u64:#x}, found at PA {=u64:#x}",
            partition.name,
            address,
            read_back,
            address
        );
        true
    } else {
        defmt::error!(
            "stage-2 probe of {=str}: RAM at IPA {=u64:#x}: wrote {=u64:#x}, read back {=u64:#x}, PA {=u64:#x} holds {=u64:#x}",
            partition.name,
            address,
            pattern,
            read_back,
            address,
            physical
        );
        false
    }
}
