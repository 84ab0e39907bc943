//! Bringing the secondary CPUs up: release each one, wait until it reports in.

use core::hint::spin_loop;
use core::sync::atomic::{AtomicBool, Ordering};

use transom_boards::SecondaryBoot;

use crate::arch::mmu::MmuRegisters;
use crate::arch::smp::{Release, ReleaseError};
use crate::arch::{self, MAX_CPUS};
use transom_vmm_core::firmware_tree::TreeCpu;

/// How long a released CPU has to report in. Generous: QEMU's TCG runs CPUs in turn.
const REPORT_IN_TIMEOUT_MICROS: u64 = 5_000_000;

static ONLINE: [AtomicBool; MAX_CPUS] = [const { AtomicBool::new(false) }; MAX_CPUS];

/// Releases every CPU of `cpus` except the boot CPU, one at a time, and returns how
/// many CPUs are online, the boot CPU included.
pub fn start_secondaries(cpus: &[TreeCpu], method: SecondaryBoot, mmu: &MmuRegisters) -> usize {
    ONLINE[0].store(true, Ordering::Release);
    let boot_mpidr = arch::cpu::mpidr();
    let secondaries = cpus.iter().filter(|cpu| cpu.mpidr != boot_mpidr);
    for (offset, cpu) in secondaries.enumerate() {
        let index = offset + 1;
        if index >= MAX_CPUS {
            defmt::warn!(
                "CPU MPIDR {=u64:#x} left offline: the kernel has stacks for {=usize} CPUs",
                cpu.mpidr,
                MAX_CPUS
            );
            continue;
        }
        start_one(index, cpu, method, mmu);
    }
    ONLINE
        .iter()
        .filter(|online| online.load(Ordering::Acquire))
        .count()
}

fn start_one(index: usize, cpu: &TreeCpu, method: SecondaryBoot, mmu: &MmuRegisters) {
    let release = match method {
        SecondaryBoot::Psci => Release::Psci { mpidr: cpu.mpidr },
        SecondaryBoot::SpinTable => {
            let Some(release_address) = cpu.release_address else {
                defmt::error!(
                    "CPU MPIDR {=u64:#x}: spin-table board but no cpu-release-addr in the device tree",
                    cpu.mpidr
                );
                return;
            };
            Release::SpinTable { release_address }
        }
    };
    if let Err(error) = arch::smp::release(index, release, mmu) {
        match error {
            ReleaseError::Psci(psci) => defmt::error!(
                "CPU {=usize} (MPIDR {=u64:#x}): PSCI CPU_ON failed: {}",
                index,
                cpu.mpidr,
                defmt::Debug2Format(&psci)
            ),
            ReleaseError::MisalignedReleaseAddress(address) => defmt::error!(
                "CPU {=usize} (MPIDR {=u64:#x}): cpu-release-addr {=u64:#x} is not 8-byte aligned",
                index,
                cpu.mpidr,
                address
            ),
        }
        return;
    }
    if !wait_for_report(index) {
        defmt::error!(
            "CPU {=usize} (MPIDR {=u64:#x}) did not report in within {=u64} ms",
            index,
            cpu.mpidr,
            REPORT_IN_TIMEOUT_MICROS / 1000
        );
    }
}

fn wait_for_report(index: usize) -> bool {
    let deadline = arch::cpu::uptime_micros() + REPORT_IN_TIMEOUT_MICROS;
    while arch::cpu::uptime_micros() < deadline {
        if ONLINE[index].load(Ordering::Acquire) {
            return true;
        }
        spin_loop();
    }
    ONLINE[index].load(Ordering::Acquire)
}

/// Runs on a secondary CPU once its MMU is on: report in, then idle.
pub fn secondary_main(index: usize) -> ! {
    defmt::info!(
        "CPU {=usize} online: MPIDR {=u64:#x}, EL{=u8}",
        index,
        arch::cpu::mpidr(),
        arch::cpu::current_el()
    );
    arch::gic::init_cpu(index, arch::cpu::mpidr());
    ONLINE[index].store(true, Ordering::Release);
    crate::vcpu::serve(index)
}

/// Whether CPU `index` has reported in.
pub fn is_online(index: usize) -> bool {
    ONLINE
        .get(index)
        .is_some_and(|online| online.load(Ordering::Acquire))
}
