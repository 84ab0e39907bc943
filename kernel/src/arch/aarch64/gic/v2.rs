//! The parts of a GICv2 (QEMU `virt` with `gic-version=2`, the Pi 4's GIC-400)
//! that differ from a GICv3: the memory-mapped CPU interface (GICC) instead of the
//! `ICC_*` registers, SPIs routed by CPU mask (`GICD_ITARGETSR`), SGIs sent with
//! `GICD_SGIR`, SGIs and PPIs banked in the distributor, and the virtual
//! interface's control block (GICH) with 32-bit list registers.
//!
//! Every physical line keeps the group the firmware left it in: with the Security
//! Extensions (a Pi, where the firmware makes every line group 1 for the
//! non-secure side) `GICC_CTLR` bit 0 is the non-secure view's group-1 enable and
//! bit 9 `EOImodeNS`; without them (QEMU `virt`) every line is group 0 and the same
//! bits are `EnableGrp0` and `EOImodeS`, which then governs (IHI 0048B.b 4.4.1).
//! Either way the hypervisor acknowledges with `GICC_IAR`, drops priority with
//! `GICC_EOIR` and deactivates with `GICC_DIR`.

use core::sync::atomic::{AtomicU8, AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use transom_boards::PhysRange;

use super::super::entry::MAX_CPUS;
use super::{DISTRIBUTOR, GICD_CTLR, KICK_SGI, read32, reset_private_lines, reset_spis, write32};
use crate::arch::guest::{mmio_read, mmio_write};

/// Distributor registers only a GICv2 has (IHI 0048B.b table 4-1).
const GICD_ITARGETSR: u64 = 0x0800;
const GICD_SGIR: u64 = 0x0f00;
/// `GICD_CTLR.Enable` (bit 0; the non-secure view's EnableGrp1 is the same bit).
const CTLR_ENABLE: u32 = 1 << 0;

/// CPU interface registers (IHI 0048B.b table 4-2).
const GICC_CTLR: u64 = 0x0000;
const GICC_PMR: u64 = 0x0004;
const GICC_IAR: u64 = 0x000c;
const GICC_EOIR: u64 = 0x0010;
const GICC_DIR: u64 = 0x1000;
/// `GICC_CTLR`: enable (bit 0) and split priority drop and deactivation (bit 9),
/// in both the non-secure view and a GIC without the Security Extensions.
const GICC_CTLR_ENABLE: u32 = 1 << 0;
const GICC_CTLR_EOIMODE: u32 = 1 << 9;

/// Virtual interface control registers (IHI 0048B.b table 5-1).
const GICH_HCR: u64 = 0x0000;
const GICH_VTR: u64 = 0x0004;
const GICH_VMCR: u64 = 0x0008;
const GICH_ELRSR0: u64 = 0x0030;
const GICH_ELRSR1: u64 = 0x0034;
const GICH_LR: u64 = 0x0100;

static CPU_INTERFACE: AtomicU64 = AtomicU64::new(0);
static HYPERVISOR_INTERFACE: AtomicU64 = AtomicU64::new(0);
/// Each logical CPU's bit in `GICD_ITARGETSR` and `GICD_SGIR` (0: not set up).
static TARGET_MASKS: [AtomicU8; MAX_CPUS] = [const { AtomicU8::new(0) }; MAX_CPUS];

/// Sets up the distributor (boot CPU, once; the caller then publishes it in
/// [`DISTRIBUTOR`]): every SPI disabled, inactive and at
/// one priority, then forwarding on. The CPU interface and the virtual interface
/// control block are banked: each CPU reaches its own at the same address.
pub fn init(distributor: PhysRange, cpu_interface: PhysRange, hypervisor_interface: PhysRange) {
    let base = distributor.start;
    write32(base + GICD_CTLR, 0);
    reset_spis(base, None);
    write32(base + GICD_CTLR, CTLR_ENABLE);
    CPU_INTERFACE.store(cpu_interface.start, Ordering::Release);
    HYPERVISOR_INTERFACE.store(hypervisor_interface.start, Ordering::Release);
}

/// Sets up this CPU (`cpu` its logical index): learns its target bit, disables its
/// SGIs and PPIs but the kick SGI and the maintenance interrupt, and turns its CPU
/// interface on with split priority drop and deactivation.
pub fn init_cpu(cpu: usize) -> bool {
    let base = DISTRIBUTOR.load(Ordering::Acquire);
    if base == 0 {
        return false;
    }
    // ITARGETSR0..7 read as this CPU's own bit in every byte (IHI 0048B.b 4.3.12); a
    // uniprocessor GIC reads zero.
    let mask = match mmio_read(base + GICD_ITARGETSR, 1) as u8 {
        0 => 1,
        mask => mask,
    };
    TARGET_MASKS[cpu].store(mask, Ordering::Release);
    reset_private_lines(base, None);
    let gicc = CPU_INTERFACE.load(Ordering::Acquire);
    write32(gicc + GICC_PMR, 0xff);
    write32(gicc + GICC_CTLR, GICC_CTLR_ENABLE | GICC_CTLR_EOIMODE);
    true
}

/// Routes SPI `intid` to logical CPU `cpu` (its `GICD_ITARGETSR` byte).
pub fn route(intid: u32, cpu: usize) {
    let base = DISTRIBUTOR.load(Ordering::Acquire);
    let mask = TARGET_MASKS[cpu].load(Ordering::Acquire);
    mmio_write(base + GICD_ITARGETSR + u64::from(intid), 1, u64::from(mask));
}

/// Sends [`KICK_SGI`] to logical CPU `cpu` (`GICD_SGIR` with `TargetListFilter`
/// 0 and `CPUTargetList` its bit).
pub fn kick(cpu: usize) {
    let base = DISTRIBUTOR.load(Ordering::Acquire);
    let mask = TARGET_MASKS[cpu].load(Ordering::Acquire);
    barrier::dsb(barrier::ISHST);
    write32(base + GICD_SGIR, u32::from(mask) << 16 | KICK_SGI);
}

/// `GICC_IAR`: the interrupt ID in bits 9:0 and, for an SGI, the sender's CPU in
/// 12:10; the whole value goes back to [`drop_priority`] and [`deactivate`].
pub fn acknowledge() -> u32 {
    read32(CPU_INTERFACE.load(Ordering::Acquire) + GICC_IAR)
}

/// `GICC_EOIR` with an acknowledged `GICC_IAR` value.
pub fn drop_priority(iar: u32) {
    write32(CPU_INTERFACE.load(Ordering::Acquire) + GICC_EOIR, iar);
}

/// `GICC_DIR` with an acknowledged `GICC_IAR` value.
pub fn deactivate(iar: u32) {
    write32(CPU_INTERFACE.load(Ordering::Acquire) + GICC_DIR, iar);
}

/// The virtual interface control block (GICH) of this CPU, with list registers
/// translated to and from the `ICH_LR<n>_EL2` layout the rest of the hypervisor
/// uses.
pub mod lr {
    use core::sync::atomic::Ordering;

    use super::{
        GICH_ELRSR0, GICH_ELRSR1, GICH_HCR, GICH_LR, GICH_VMCR, GICH_VTR, HYPERVISOR_INTERFACE,
    };
    use crate::arch::gic::{read32, write32};

    fn gich() -> u64 {
        HYPERVISOR_INTERFACE.load(Ordering::Acquire)
    }

    /// `GICH_VTR.ListRegs` (5:0) + 1.
    pub fn count() -> usize {
        ((read32(gich() + GICH_VTR) & 0x3f) + 1) as usize
    }

    /// `GICH_ELRSR0` and `GICH_ELRSR1`: bit n set when list register n is empty.
    pub fn empty() -> u64 {
        let base = gich();
        u64::from(read32(base + GICH_ELRSR0)) | u64::from(read32(base + GICH_ELRSR1)) << 32
    }

    /// `GICH_HCR` (En in bit 0 and UIE in bit 1, as in `ICH_HCR_EL2`).
    pub fn set_control(value: u64) {
        write32(gich() + GICH_HCR, value as u32);
    }

    /// `GICH_VMCR`.
    pub fn set_vm_control(value: u64) {
        write32(gich() + GICH_VMCR, value as u32);
    }

    /// `GICH_LR<n>`, in the `ICH_LR<n>_EL2` layout.
    pub fn read(n: usize) -> u64 {
        from_v2(read32(gich() + GICH_LR + 4 * n as u64))
    }

    /// Writes `GICH_LR<n>` from a value in the `ICH_LR<n>_EL2` layout.
    pub fn write(n: usize, value: u64) {
        write32(gich() + GICH_LR + 4 * n as u64, to_v2(value));
    }

    /// `ICH_LR<n>_EL2` (IHI 0069H 12.4.6) to `GICH_LR<n>` (IHI 0048B.b 5.3.11):
    /// VirtualID 9:0, PhysicalID 19:10 with HW, the priority's top five bits in
    /// 27:23, State 29:28, HW 31. The group bit is dropped: a GICv2 guest's lines
    /// are group 0 (see the virtual distributor).
    pub fn to_v2(lr: u64) -> u32 {
        let hw = lr >> 61 & 1;
        let mut value = (lr & 0x3ff) as u32
            | ((lr >> 48 & 0xff) as u32 >> 3) << 23
            | ((lr >> 62 & 0x3) as u32) << 28
            | (hw as u32) << 31;
        if hw != 0 {
            value |= ((lr >> 32 & 0x3ff) as u32) << 10;
        }
        value
    }

    /// The reverse of [`to_v2`].
    pub fn from_v2(value: u32) -> u64 {
        let hw = u64::from(value >> 31);
        let mut lr = u64::from(value & 0x3ff)
            | u64::from(value >> 23 & 0x1f) << 51
            | u64::from(value >> 28 & 0x3) << 62
            | hw << 61;
        if hw != 0 {
            lr |= u64::from(value >> 10 & 0x3ff) << 32;
        }
        lr
    }
}
