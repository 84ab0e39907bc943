//! PSCI as a partition's guest sees it: the calls a guest makes with `HVC` (or
//! `SMC`), scoped to its partition. A guest can start and stop only its own vCPUs,
//! and powering off or resetting stops its partition, never the machine.
//!
//! Function IDs and return codes from Arm DEN 0022 (PSCI 1.1), 5.1 "Function
//! prototypes" and 5.2.2 "Return error codes"; the calling convention is SMCCC
//! (Arm DEN 0028): function ID in w0, arguments in x1..x3, result in x0.

/// `PSCI_VERSION`.
pub const VERSION: u32 = 0x8400_0000;
/// `CPU_SUSPEND`, SMC64.
pub const CPU_SUSPEND: u32 = 0xc400_0001;
/// `CPU_OFF`.
pub const CPU_OFF: u32 = 0x8400_0002;
/// `CPU_ON`, SMC64.
pub const CPU_ON: u32 = 0xc400_0003;
/// `AFFINITY_INFO`, SMC64.
pub const AFFINITY_INFO: u32 = 0xc400_0004;
/// `MIGRATE_INFO_TYPE`.
pub const MIGRATE_INFO_TYPE: u32 = 0x8400_0006;
/// `SYSTEM_OFF`.
pub const SYSTEM_OFF: u32 = 0x8400_0008;
/// `SYSTEM_RESET`.
pub const SYSTEM_RESET: u32 = 0x8400_0009;
/// `PSCI_FEATURES`.
pub const FEATURES: u32 = 0x8400_000a;

/// PSCI 1.0: major version in bits 31:16, minor in 15:0.
pub const IMPLEMENTED_VERSION: u64 = 0x0001_0000;

/// `SUCCESS`.
pub const SUCCESS: i64 = 0;
/// `NOT_SUPPORTED`.
pub const NOT_SUPPORTED: i64 = -1;
/// `INVALID_PARAMETERS`.
pub const INVALID_PARAMETERS: i64 = -2;
/// `ALREADY_ON`.
pub const ALREADY_ON: i64 = -4;
/// `ON_PENDING`: a previous `CPU_ON` of the target is still in progress.
pub const ON_PENDING: i64 = -5;

/// `MIGRATE_INFO_TYPE`: 2, no trusted OS to migrate.
const NO_TRUSTED_OS: i64 = 2;

/// `AFFINITY_INFO` answers (DEN 0022, 5.1.7).
const AFFINITY_ON: i64 = 0;
const AFFINITY_OFF: i64 = 1;
const AFFINITY_ON_PENDING: i64 = 2;

/// Where a vCPU of the calling partition stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VcpuState {
    /// Running guest code.
    On,
    /// Started by `CPU_ON`, not yet running.
    OnPending,
    /// Not started, or stopped by `CPU_OFF`.
    Off,
}

/// What the hypervisor must do after a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Return `x0` to the caller and resume it.
    Return(i64),
    /// Start vCPU `vcpu` at `entry` with `context_id` in x0, then return SUCCESS.
    CpuOn {
        /// The partition's vCPU index.
        vcpu: usize,
        /// The entry point (an IPA, MMU off).
        entry: u64,
        /// x0 of the new vCPU.
        context_id: u64,
    },
    /// Stop the calling vCPU; it never returns.
    CpuOff,
    /// Stop the whole partition.
    SystemOff,
    /// Restart the partition; Transom stops it and reports the request.
    SystemReset,
}

/// The calling partition, as PSCI needs to see it.
pub trait Partition {
    /// The vCPU whose virtual MPIDR affinity is `mpidr`, if the partition has one.
    fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize>;
    /// Where vCPU `vcpu` stands.
    fn state(&self, vcpu: usize) -> VcpuState;
}

/// Handles the call in `x0..x3` from a vCPU of `partition`. Unknown functions (any
/// other SMCCC call too) return `NOT_SUPPORTED`, as SMCCC requires (DEN 0028,
/// 5.2 "Unknown Function Identifier").
///
/// Always inlined: a plain match, so the calls that only return a value (such as
/// `PSCI_VERSION`) cost the caller no call and no `Action` in memory; the calls
/// that look at vCPUs are functions of their own.
#[inline(always)]
pub fn call(x: [u64; 4], partition: &impl Partition) -> Action {
    let function = x[0] as u32;
    match function {
        VERSION => Action::Return(IMPLEMENTED_VERSION as i64),
        FEATURES => Action::Return(features(x[1] as u32)),
        MIGRATE_INFO_TYPE => Action::Return(NO_TRUSTED_OS),
        CPU_OFF => Action::CpuOff,
        SYSTEM_OFF => Action::SystemOff,
        SYSTEM_RESET => Action::SystemReset,
        CPU_ON => cpu_on(x[1], x[2], x[3], partition),
        AFFINITY_INFO => affinity_info(x[1], x[2], partition),
        _ => Action::Return(NOT_SUPPORTED),
    }
}

/// `PSCI_FEATURES` (DEN 0022, 5.1.14): 0 for an implemented function (no feature
/// flags), `NOT_SUPPORTED` otherwise. `CPU_SUSPEND` is not implemented: a guest
/// idles with WFI.
fn features(function: u32) -> i64 {
    match function {
        VERSION | FEATURES | MIGRATE_INFO_TYPE | CPU_OFF | CPU_ON | AFFINITY_INFO | SYSTEM_OFF
        | SYSTEM_RESET => SUCCESS,
        _ => NOT_SUPPORTED,
    }
}

/// The affinity fields of an MPIDR as `CPU_ON` passes them (Aff3 in bits 39:32).
const AFFINITY_MASK: u64 = 0xff_00ff_ffff;

#[inline(never)]
fn cpu_on(target: u64, entry: u64, context_id: u64, partition: &impl Partition) -> Action {
    let Some(vcpu) = partition.vcpu_by_mpidr(target & AFFINITY_MASK) else {
        return Action::Return(INVALID_PARAMETERS);
    };
    match partition.state(vcpu) {
        VcpuState::On => Action::Return(ALREADY_ON),
        VcpuState::OnPending => Action::Return(ON_PENDING),
        VcpuState::Off => Action::CpuOn {
            vcpu,
            entry,
            context_id,
        },
    }
}

#[inline(never)]
fn affinity_info(target: u64, level: u64, partition: &impl Partition) -> Action {
    // Only level 0 (one CPU) is meaningful for a partition's vCPUs.
    if level != 0 {
        return Action::Return(INVALID_PARAMETERS);
    }
    let Some(vcpu) = partition.vcpu_by_mpidr(target & AFFINITY_MASK) else {
        return Action::Return(INVALID_PARAMETERS);
    };
    Action::Return(match partition.state(vcpu) {
        VcpuState::On => AFFINITY_ON,
        VcpuState::OnPending => AFFINITY_ON_PENDING,
        VcpuState::Off => AFFINITY_OFF,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two vCPUs with virtual MPIDRs 0 and 1; vCPU 0 runs.
    struct TwoVcpus([VcpuState; 2]);

    impl Partition for TwoVcpus {
        fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize> {
            (mpidr < 2).then_some(mpidr as usize)
        }
        fn state(&self, vcpu: usize) -> VcpuState {
            self.0[vcpu]
        }
    }

    const FRESH: TwoVcpus = TwoVcpus([VcpuState::On, VcpuState::Off]);

    #[test]
    fn version_and_features() {
        assert_eq!(
            call([u64::from(VERSION), 0, 0, 0], &FRESH),
            Action::Return(0x1_0000)
        );
        let feature =
            |function: u32| call([u64::from(FEATURES), u64::from(function), 0, 0], &FRESH);
        assert_eq!(feature(CPU_ON), Action::Return(SUCCESS));
        assert_eq!(feature(SYSTEM_OFF), Action::Return(SUCCESS));
        assert_eq!(feature(CPU_SUSPEND), Action::Return(NOT_SUPPORTED));
        // SMCCC_VERSION (0x8000_0000) is not a PSCI function Transom implements.
        assert_eq!(feature(0x8000_0000), Action::Return(NOT_SUPPORTED));
    }

    #[test]
    fn cpu_on_starts_only_the_partitions_own_vcpus() {
        let on = |mpidr: u64, partition: &TwoVcpus| {
            call([u64::from(CPU_ON), mpidr, 0x5000_1000, 0xc0de], partition)
        };
        assert_eq!(
            on(1, &FRESH),
            Action::CpuOn {
                vcpu: 1,
                entry: 0x5000_1000,
                context_id: 0xc0de
            }
        );
        // MPIDR 2 is not this partition's: another partition's CPU is out of reach.
        assert_eq!(on(2, &FRESH), Action::Return(INVALID_PARAMETERS));
        assert_eq!(on(0, &FRESH), Action::Return(ALREADY_ON));
        let pending = TwoVcpus([VcpuState::On, VcpuState::OnPending]);
        assert_eq!(on(1, &pending), Action::Return(ON_PENDING));
    }

    #[test]
    fn affinity_info_reports_each_vcpu() {
        let info =
            |mpidr: u64, level: u64| call([u64::from(AFFINITY_INFO), mpidr, level, 0], &FRESH);
        assert_eq!(info(0, 0), Action::Return(AFFINITY_ON));
        assert_eq!(info(1, 0), Action::Return(AFFINITY_OFF));
        assert_eq!(info(5, 0), Action::Return(INVALID_PARAMETERS));
        assert_eq!(info(0, 1), Action::Return(INVALID_PARAMETERS));
    }

    #[test]
    fn power_calls_stop_the_partition_and_unknown_calls_are_not_supported() {
        let simple = |function: u32| call([u64::from(function), 0, 0, 0], &FRESH);
        assert_eq!(simple(CPU_OFF), Action::CpuOff);
        assert_eq!(simple(SYSTEM_OFF), Action::SystemOff);
        assert_eq!(simple(SYSTEM_RESET), Action::SystemReset);
        assert_eq!(simple(MIGRATE_INFO_TYPE), Action::Return(2));
        assert_eq!(simple(CPU_SUSPEND), Action::Return(NOT_SUPPORTED));
        assert_eq!(simple(0xc200_0000), Action::Return(NOT_SUPPORTED));
        // Only w0 names the function: upper bits of x0 are ignored (SMCCC 2.5).
        assert_eq!(
            call(
                [0xffff_ffff_0000_0000 | u64::from(VERSION), 0, 0, 0],
                &FRESH
            ),
            Action::Return(0x1_0000)
        );
    }
}
