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
/// partition's `VTTBR_EL2` (the TLBIs below act on the current VMID). EL2's own
/// translation is never affected by these.
pub struct PartitionTlb {
    /// The partition's `VTTBR_EL2` value.
    pub vttbr: u64,
    /// The stage-2 granule's page size.
    pub page_size: u64,
}

/// Above this many pages one whole-VMID invalidation replaces per-page ones (Linux
/// makes the same trade in `__flush_tlb_range`).
const MAX_PAGE_INVALIDATIONS: u64 = 64;

impl PartitionTlb {
    fn select(&self) {
        VTTBR_EL2.set(self.vttbr);
        barrier::isb(barrier::SY);
    }

    /// `TLBI IPAS2E1IS` for the page holding `ipa`: the operand is IPA bits 51:12
    /// in bits 39:0 (Arm ARM D8.16.4 and C5.5 `TLBI IPAS2E1IS`); with 16 and 64 KiB
    /// granules the bits below the page are zero since `ipa` is page-aligned.
    fn invalidate_ipa(ipa: u64) {
        // SAFETY: invalidates the current VMID's stage-2 TLB and walk-cache entries
        // for one IPA; no memory is accessed.
        unsafe { asm!("tlbi ipas2e1is, {}", in(reg) ipa >> 12, options(nostack)) };
    }
}

impl TlbMaintenance for PartitionTlb {
    fn invalidate_entry(&mut self, ipa: u64) {
        self.select();
        // The store that made the entry invalid reaches the walkers first.
        barrier::dsb(barrier::ISHST);
        Self::invalidate_ipa(ipa);
        barrier::dsb(barrier::ISH);
    }

    fn invalidate_range(&mut self, ipa: u64, size: u64) {
        self.select();
        barrier::dsb(barrier::ISHST);
        let pages = size.div_ceil(self.page_size);
        if pages <= MAX_PAGE_INVALIDATIONS {
            for page in 0..pages {
                Self::invalidate_ipa(ipa + page * self.page_size);
            }
        } else {
            // SAFETY: drops every stage-1 and stage-2 entry of the current VMID (a
            // superset of the range, Arm ARM D8.16.3); no memory is accessed.
            unsafe { asm!("tlbi vmalls12e1is", options(nostack)) };
        }
        barrier::dsb(barrier::ISH);
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
