//! The guest's side of its (virtual) GIC: enabling a PPI or an SPI for this vCPU,
//! acknowledging and ending interrupts. GICv3 through the `ICC_*` system registers
//! and the distributor and redistributor frames (IHI 0069H chapter 12); GICv2
//! through the distributor and the CPU interface frame (IHI 0048B chapter 4).

use core::arch::asm;
use core::sync::atomic::{AtomicU64, Ordering};

use crate::mmio;
use crate::tree::Gic;

/// Distributor offsets (IHI 0069H 12.9, IHI 0048B 4.3): the same in both.
mod gicd {
    pub const CTLR: u64 = 0x000;
    pub const IGROUPR: u64 = 0x080;
    pub const ISENABLER: u64 = 0x100;
    pub const IPRIORITYR: u64 = 0x400;
    pub const ITARGETSR: u64 = 0x800;
    pub const IROUTER: u64 = 0x6000;
}

/// GICv3 redistributor offsets (IHI 0069H 12.10): `WAKER` in `RD_base`, the rest
/// in `SGI_base` (the second 64 KiB frame).
mod gicr {
    pub const WAKER: u64 = 0x014;
    pub const SGI_BASE: u64 = 0x1_0000;
}

/// GICv2 CPU interface offsets (IHI 0048B 4.4).
mod gicc {
    pub const CTLR: u64 = 0x000;
    pub const PMR: u64 = 0x004;
    pub const IAR: u64 = 0x00c;
    pub const EOIR: u64 = 0x010;
}

/// `GICD_CTLR`: for GICv3 ARE_NS, EnableGrp1A, EnableGrp1 (Linux writes the
/// same); for GICv2 bit 0 enables forwarding.
const GICD_CTLR_V3: u64 = (1 << 4) | (1 << 1) | (1 << 0);
const GICD_CTLR_V2: u64 = 1;
/// `GICR_WAKER.ProcessorSleep`.
const WAKER_PROCESSOR_SLEEP: u64 = 1 << 1;
/// The priority the guest gives its interrupts; the priority mask lets all
/// through.
const PRIORITY: u64 = 0xa0;
const PRIORITY_MASK_ALL: u64 = 0xff;
/// INTIDs 1020..1023 are special: 1023 means nothing pending.
pub const SPURIOUS: u32 = 1023;

/// The GICv2 CPU interface, once [`init`] has run (0: GICv3, system registers).
static CPU_INTERFACE: AtomicU64 = AtomicU64::new(0);

/// Turns the distributor and this vCPU's interface on.
pub fn init(gic: Gic) {
    match gic {
        Gic::V3 {
            distributor,
            redistributors,
        } => {
            // SAFETY: the frames are the ones the device tree gives; the system
            // registers are this vCPU's virtual CPU interface.
            unsafe {
                mmio::write::<4>(distributor + gicd::CTLR, GICD_CTLR_V3);
                let waker = mmio::read::<4>(redistributors + gicr::WAKER);
                mmio::write::<4>(redistributors + gicr::WAKER, waker & !WAKER_PROCESSOR_SLEEP);
                asm!(
                    "mrs {sre}, icc_sre_el1",
                    "orr {sre}, {sre}, #1",
                    "msr icc_sre_el1, {sre}",
                    "isb",
                    "msr icc_pmr_el1, {pmr}",
                    "msr icc_igrpen1_el1, {one}",
                    "isb",
                    sre = out(reg) _,
                    pmr = in(reg) PRIORITY_MASK_ALL,
                    one = in(reg) 1u64,
                    options(nostack),
                );
            }
        }
        Gic::V2 {
            distributor,
            cpu_interface,
        } => {
            // SAFETY: the frames are the ones the device tree gives.
            unsafe {
                mmio::write::<4>(distributor + gicd::CTLR, GICD_CTLR_V2);
                mmio::write::<4>(cpu_interface + gicc::PMR, PRIORITY_MASK_ALL);
                mmio::write::<4>(cpu_interface + gicc::CTLR, 1);
            }
            CPU_INTERFACE.store(cpu_interface, Ordering::Release);
        }
    }
}

/// Enables interrupt `intid` (a PPI of vCPU 0, or an SPI routed to vCPU 0 with
/// affinity `mpidr`), group 1, at [`PRIORITY`].
pub fn enable(gic: Gic, intid: u32, mpidr: u64) {
    let word = 4 * u64::from(intid / 32);
    let bit = 1u64 << (intid % 32);
    let byte = u64::from(intid);
    match gic {
        Gic::V3 {
            distributor,
            redistributors,
        } => {
            let private = intid < 32;
            // PPIs in vCPU 0's redistributor (the first), SPIs in the distributor.
            let frame = if private {
                redistributors + gicr::SGI_BASE
            } else {
                distributor
            };
            // SAFETY: registers of the device tree's GIC frames, at their widths
            // (IPRIORITYR is byte-accessible, IROUTER 64-bit).
            unsafe {
                let group = mmio::read::<4>(frame + gicd::IGROUPR + word);
                mmio::write::<4>(frame + gicd::IGROUPR + word, group | bit);
                mmio::write::<1>(frame + gicd::IPRIORITYR + byte, PRIORITY);
                if !private {
                    mmio::write::<8>(distributor + gicd::IROUTER + 8 * byte, mpidr);
                }
                mmio::write::<4>(frame + gicd::ISENABLER + word, bit);
            }
        }
        Gic::V2 { distributor, .. } => {
            // SAFETY: registers of the device tree's distributor; ITARGETSR and
            // IPRIORITYR are byte-accessible (IHI 0048B 4.3.11, 4.3.12).
            unsafe {
                mmio::write::<1>(distributor + gicd::IPRIORITYR + byte, PRIORITY);
                if intid >= 32 {
                    // ITARGETSR0..7 read as this CPU interface's own bit.
                    let own = mmio::read::<1>(distributor + gicd::ITARGETSR);
                    mmio::write::<1>(distributor + gicd::ITARGETSR + byte, own);
                }
                mmio::write::<4>(distributor + gicd::ISENABLER + word, bit);
            }
        }
    }
}

/// Acknowledges the highest-priority pending interrupt; returns its INTID and
/// what to hand [`end`].
pub fn acknowledge() -> (u32, u64) {
    let cpu_interface = CPU_INTERFACE.load(Ordering::Acquire);
    let iar: u64;
    if cpu_interface == 0 {
        // SAFETY: reads ICC_IAR1_EL1 of this vCPU's interface.
        unsafe { asm!("mrs {}, icc_iar1_el1", out(reg) iar, options(nostack)) };
    } else {
        // SAFETY: GICC_IAR of the device tree's CPU interface.
        iar = unsafe { mmio::read::<4>(cpu_interface + gicc::IAR) };
    }
    ((iar & 0x3ff) as u32, iar)
}

/// Ends (priority drop and deactivation, EOImode 0) the interrupt `iar`.
pub fn end(iar: u64) {
    let cpu_interface = CPU_INTERFACE.load(Ordering::Acquire);
    if cpu_interface == 0 {
        // SAFETY: writes ICC_EOIR1_EL1 of this vCPU's interface.
        unsafe { asm!("msr icc_eoir1_el1, {}", "isb", in(reg) iar, options(nostack)) };
    } else {
        // SAFETY: GICC_EOIR of the device tree's CPU interface.
        unsafe { mmio::write::<4>(cpu_interface + gicc::EOIR, iar) };
    }
}
