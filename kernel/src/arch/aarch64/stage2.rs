//! Stage-2 registers and TLB maintenance: what `vmm-core`'s stage-2 tables need
//! from the CPU.

use core::arch::asm;

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable, VTCR_EL2, VTTBR_EL2, Writeable};
use transom_vmm_core::stage2::table::TlbMaintenance;

/// `ID_AA64MMFR0_EL1`: the physical address size and the granules this CPU
/// supports.
pub fn mmfr0() -> u64 {
    ID_AA64MMFR0_EL1.get()
}

/// `VTTBR_EL2` for tables at `root` and `vmid` (Arm ARM D24.2.210: BADDR in
/// bits 47:1, VMID in bits 55:48 with 8-bit VMIDs).
pub fn vttbr(root: u64, vmid: u8) -> u64 {
    (u64::from(vmid) << 48) | root
}

/// Loads `vtcr` into `VTCR_EL2` on this CPU.
pub fn set_vtcr(vtcr: u64) {
    VTCR_EL2.set(vtcr);
    barrier::isb(barrier::SY);
}

/// TLB maintenance for one partition's tables: each operation runs with the
/// partition's `VTTBR_EL2` (the TLBIs below act on the current VMID). Used while
/// `HCR_EL2.VM` is clear, so EL2's own translation is unaffected.
pub struct PartitionTlb {
    /// The partition's `VTTBR_EL2` value.
    pub vttbr: u64,
}

impl PartitionTlb {
    fn select(&self) {
        VTTBR_EL2.set(self.vttbr);
        barrier::isb(barrier::SY);
    }
}

impl TlbMaintenance for PartitionTlb {
    fn invalidate_range(&mut self, _ipa: u64, _size: u64) {
        self.select();
        // SAFETY: `dsb ishst` orders the store that made the entry invalid before the
        // invalidation; `tlbi vmalls12e1is` drops every stage-1 and stage-2 entry of
        // the current VMID (wider than the range, so always sufficient, Arm ARM
        // D8.16.3); `dsb ish` waits for it. No memory is accessed.
        unsafe {
            asm!(
                "dsb ishst",
                "tlbi vmalls12e1is",
                "dsb ish",
                options(nostack)
            )
        };
    }

    fn publish(&mut self) {
        barrier::dsb(barrier::ISHST);
    }

    fn complete(&mut self) {
        self.select();
        // SAFETY: invalidates the current VMID's EL1&0 stage-1 entries (combined
        // entries cache stage-2 results, Arm ARM D8.16.5) and waits; no memory is
        // accessed.
        unsafe { asm!("tlbi vmalle1is", "dsb ish", "isb", options(nostack)) };
    }
}
