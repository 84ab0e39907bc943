//! The physical GIC as the hypervisor drives it. For a GICv3: the distributor and
//! each CPU's redistributor (memory-mapped), the EL2 CPU interface (`ICC_*`), and
//! the virtual CPU interface's control registers (`ICH_*`) through which guests get
//! their interrupts. A GICv2 (`gic/v2.rs`) has the same distributor registers for SPIs
//! and its own ways for the rest; the functions here hide which one the machine
//! has, and list registers are always in the `ICH_LR<n>_EL2` layout.
//!
//! Every line is non-secure group 1 (the GIC has one security state on the boards
//! Transom runs on: `GICD_CTLR.DS` = 1) at one priority; affinity routing is on.
//! The hypervisor runs with `ICC_CTLR_EL1.EOImode` = 1: `ICC_EOIR1_EL1` only drops
//! the running priority, and a line is deactivated either by the hypervisor
//! (`ICC_DIR_EL1`) or, for a line injected with the list register's hardware bit,
//! by the guest's own deactivation (IHI 0069H 4.1.1, 5.2).
//!
//! Written here rather than taken from a crate: the `arm-gic` crate drives a GIC
//! for an EL1 OS and has no `ICH_*` list registers; this needs only a few registers
//! of each block.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use aarch64_cpu::asm::barrier;
use transom_boards::PhysRange;

use super::entry::MAX_CPUS;
use super::guest::{mmio_read, mmio_write};

mod v2;

/// The SGI one CPU sends another to make it look at its vCPU's pending interrupts.
pub const KICK_SGI: u32 = 0;
/// The virtual CPU interface's maintenance interrupt (BSA: PPI 9, INTID 25).
pub const MAINTENANCE_PPI: u32 = 25;
/// `ICC_IAR1_EL1` values from 1020 up are special: nothing to acknowledge.
pub const SPURIOUS: u32 = 1020;
/// The priority of every physical line: any value below the PMR of 0xff.
const PRIORITY: u8 = 0x80;

/// Distributor offsets (IHI 0069H table 12-25).
const GICD_CTLR: u64 = 0x0000;
const GICD_TYPER: u64 = 0x0004;
const GICD_IIDR: u64 = 0x0008;
const GICD_IGROUPR: u64 = 0x0080;
const GICD_ISENABLER: u64 = 0x0100;
const GICD_ICENABLER: u64 = 0x0180;
const GICD_ISPENDR: u64 = 0x0200;
const GICD_ICPENDR: u64 = 0x0280;
const GICD_ISACTIVER: u64 = 0x0300;
const GICD_ICACTIVER: u64 = 0x0380;
const GICD_IPRIORITYR: u64 = 0x0400;
const GICD_ICFGR: u64 = 0x0c00;
const GICD_IROUTER: u64 = 0x6000;
/// `GICD_CTLR`: EnableGrp1 (bit 1 with DS = 1), ARE (bit 4), RWP (bit 31).
const CTLR_ENABLE_GRP1: u32 = 1 << 1;
const CTLR_ARE: u32 = 1 << 4;
const CTLR_RWP: u32 = 1 << 31;
/// Redistributor offsets (IHI 0069H table 12-27); the SGI frame is 64 KiB on.
const GICR_TYPER: u64 = 0x0008;
const GICR_WAKER: u64 = 0x0014;
const GICR_SGI: u64 = 0x1_0000;
const GICR_STRIDE: u64 = 0x2_0000;
const TYPER_LAST: u64 = 1 << 4;
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;

static DISTRIBUTOR: AtomicU64 = AtomicU64::new(0);
/// Whether the GIC is a GICv2 (set once, before [`DISTRIBUTOR`]).
static IS_V2: AtomicBool = AtomicBool::new(false);
/// Each logical CPU's `RD_base` (0: not found).
static REDISTRIBUTORS: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// Each logical CPU's `MPIDR_EL1` affinity.
static AFFINITIES: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
static REDISTRIBUTOR_REGION: AtomicU64 = AtomicU64::new(0);
static REDISTRIBUTOR_REGION_END: AtomicU64 = AtomicU64::new(0);

// Every access is one `ldr`/`str` of the register's width (`guest::mmio_read` and
// `mmio_write`, which also serve trapped windows), as the project's MMIO rule asks.

fn read32(address: u64) -> u32 {
    mmio_read(address, 4) as u32
}

fn write32(address: u64, value: u32) {
    mmio_write(address, 4, u64::from(value));
}

fn read64(address: u64) -> u64 {
    mmio_read(address, 8)
}

fn write64(address: u64, value: u64) {
    mmio_write(address, 8, value);
}

/// Whether a GIC is set up (the board has one and [`init`] or [`init_v2`] ran).
pub fn present() -> bool {
    DISTRIBUTOR.load(Ordering::Acquire) != 0
}

/// Whether the GIC that is set up is a GICv2.
pub fn is_v2() -> bool {
    IS_V2.load(Ordering::Relaxed)
}

/// Sets up a GICv2 (boot CPU, once, before the other CPUs start): the
/// distributor, and where each CPU finds its banked CPU interface and virtual
/// interface control block.
pub fn init_v2(distributor: PhysRange, cpu_interface: PhysRange, hypervisor_interface: PhysRange) {
    IS_V2.store(true, Ordering::Relaxed);
    v2::init(distributor, cpu_interface, hypervisor_interface);
    DISTRIBUTOR.store(distributor.start, Ordering::Release);
}

/// Sets up the distributor at `distributor` (boot CPU, once, before the other CPUs
/// start): every SPI disabled, group 1, at one priority; affinity routing and
/// group 1 on. `redistributors` is the region each CPU finds its own frame in.
pub fn init(distributor: PhysRange, redistributors: PhysRange) {
    let base = distributor.start;
    write32(base + GICD_CTLR, 0);
    wait_for_rwp(base);
    reset_spis(base, Some(u32::MAX));
    write32(base + GICD_CTLR, CTLR_ARE | CTLR_ENABLE_GRP1);
    wait_for_rwp(base);
    REDISTRIBUTOR_REGION.store(redistributors.start, Ordering::Release);
    REDISTRIBUTOR_REGION_END.store(redistributors.end, Ordering::Release);
    DISTRIBUTOR.store(base, Ordering::Release);
}

/// Disables every SPI of the distributor at `base`, clears its pending and active
/// state and gives it [`PRIORITY`]; `group`, if given, is written to its
/// `GICD_IGROUPR`s (a GICv2 keeps the groups the firmware set).
fn reset_spis(base: u64, group: Option<u32>) {
    let lines = lines_of(read32(base + GICD_TYPER));
    for word in 1..lines / 32 {
        let offset = u64::from(word) * 4;
        write32(base + GICD_ICENABLER + offset, u32::MAX);
        write32(base + GICD_ICPENDR + offset, u32::MAX);
        write32(base + GICD_ICACTIVER + offset, u32::MAX);
        if let Some(group) = group {
            write32(base + GICD_IGROUPR + offset, group);
        }
    }
    for word in 8..lines / 4 {
        write32(
            base + GICD_IPRIORITYR + u64::from(word) * 4,
            u32::from_ne_bytes([PRIORITY; 4]),
        );
    }
}

/// The same for this CPU's SGIs and PPIs in `block` (a GICv3 redistributor's SGI
/// frame, or a GICv2's banked distributor, which share the register layout), then
/// enables the kick SGI and the maintenance interrupt.
fn reset_private_lines(block: u64, group: Option<u32>) {
    write32(block + GICD_ICENABLER, u32::MAX);
    write32(block + GICD_ICPENDR, u32::MAX);
    write32(block + GICD_ICACTIVER, u32::MAX);
    if let Some(group) = group {
        write32(block + GICD_IGROUPR, group);
    }
    for word in 0..8 {
        write32(
            block + GICD_IPRIORITYR + word * 4,
            u32::from_ne_bytes([PRIORITY; 4]),
        );
    }
    write32(block + GICD_ISENABLER, 1 << KICK_SGI | 1 << MAINTENANCE_PPI);
}

/// INTIDs the distributor implements: 32 * (ITLinesNumber + 1), at most 1020.
fn lines_of(typer: u32) -> u32 {
    (32 * ((typer & 0x1f) + 1)).min(1020)
}

fn wait_for_rwp(base: u64) {
    while read32(base + GICD_CTLR) & CTLR_RWP != 0 {
        core::hint::spin_loop();
    }
}

/// The physical `GICD_TYPER` and `GICD_IIDR`, for the virtual distributor.
pub fn distributor_identity() -> (u32, u32) {
    let base = DISTRIBUTOR.load(Ordering::Acquire);
    (read32(base + GICD_TYPER), read32(base + GICD_IIDR))
}

/// Sets up this CPU (`cpu` is its logical index, `affinity` its `MPIDR_EL1`
/// affinity): finds and wakes its redistributor, makes its SGIs and PPIs group 1
/// and disabled except the kick SGI and the maintenance interrupt, and turns on the
/// EL2 CPU interface. Returns `false` if no redistributor has this CPU's affinity.
pub fn init_cpu(cpu: usize, affinity: u64) -> bool {
    if !present() {
        return false;
    }
    if is_v2() {
        return v2::init_cpu(cpu);
    }
    let Some(rd) = find_redistributor(affinity) else {
        return false;
    };
    REDISTRIBUTORS[cpu].store(rd, Ordering::Release);
    AFFINITIES[cpu].store(affinity, Ordering::Release);
    let waker = read32(rd + GICR_WAKER);
    write32(rd + GICR_WAKER, waker & !WAKER_PROCESSOR_SLEEP);
    while read32(rd + GICR_WAKER) & WAKER_CHILDREN_ASLEEP != 0 {
        core::hint::spin_loop();
    }
    reset_private_lines(rd + GICR_SGI, Some(u32::MAX));
    // ICC_SRE_EL2: SRE (bit 0) and Enable (bit 3: EL1 may use its own ICC_SRE_EL1);
    // ICC_CTLR_EL1.EOImode (bit 1); all priorities unmasked; group 1 on.
    // SAFETY: these system registers configure this CPU's GIC CPU interface only;
    // EL2 runs with IRQs masked, so nothing is taken before the handlers exist.
    unsafe {
        asm!(
            "mrs {tmp}, icc_sre_el2",
            "orr {tmp}, {tmp}, {sre_enable}",
            "msr icc_sre_el2, {tmp}",
            "isb",
            "mov {tmp}, #0xff",
            "msr icc_pmr_el1, {tmp}",
            "mov {tmp}, #0x2",
            "msr icc_ctlr_el1, {tmp}",
            "mov {tmp}, #0x1",
            "msr icc_igrpen1_el1, {tmp}",
            "isb",
            tmp = out(reg) _,
            sre_enable = in(reg) 0x9u64,
            options(nostack)
        );
    }
    true
}

fn find_redistributor(affinity: u64) -> Option<u64> {
    let mut rd = REDISTRIBUTOR_REGION.load(Ordering::Acquire);
    let end = REDISTRIBUTOR_REGION_END.load(Ordering::Acquire);
    // GICR_TYPER.Affinity_Value (63:32) is Aff3.Aff2.Aff1.Aff0.
    let wanted = (affinity & 0xff_ffff) | ((affinity >> 32) & 0xff) << 24;
    while rd + GICR_STRIDE <= end {
        let typer = read64(rd + GICR_TYPER);
        if typer >> 32 == wanted {
            return Some(rd);
        }
        if typer & TYPER_LAST != 0 {
            return None;
        }
        rd += GICR_STRIDE;
    }
    None
}

/// `GICD_IROUTER` value of logical CPU `cpu`: Aff3 in bits 39:32, Aff2..Aff0 below.
fn router_value(cpu: usize) -> u64 {
    AFFINITIES[cpu].load(Ordering::Acquire) & 0xff_00ff_ffff
}

/// The register block holding `intid`'s bit or byte: the distributor for an SPI,
/// CPU `cpu`'s SGI frame for an SGI or PPI. A GICv2 banks SGIs and PPIs in the
/// distributor: only the CPU itself reaches them, and every caller with an SGI or
/// PPI is running on `cpu`.
fn block(intid: u32, cpu: usize) -> u64 {
    if intid < 32 && !is_v2() {
        REDISTRIBUTORS[cpu].load(Ordering::Acquire) + GICR_SGI
    } else {
        DISTRIBUTOR.load(Ordering::Acquire)
    }
}

fn bit_register(intid: u32, cpu: usize, base: u64) -> (u64, u32) {
    (
        block(intid, cpu) + base + u64::from(intid / 32) * 4,
        1 << (intid % 32),
    )
}

/// Enables or disables physical `intid` (CPU `cpu`'s, for a PPI).
pub fn set_enabled(intid: u32, cpu: usize, enabled: bool) {
    let (address, bit) = bit_register(
        intid,
        cpu,
        if enabled {
            GICD_ISENABLER
        } else {
            GICD_ICENABLER
        },
    );
    write32(address, bit);
}

/// Makes physical `intid` pending or clears it.
pub fn set_pending(intid: u32, cpu: usize, pending: bool) {
    let (address, bit) = bit_register(
        intid,
        cpu,
        if pending { GICD_ISPENDR } else { GICD_ICPENDR },
    );
    write32(address, bit);
}

/// Activates or deactivates physical `intid`.
pub fn set_active(intid: u32, cpu: usize, active: bool) {
    let (address, bit) = bit_register(
        intid,
        cpu,
        if active {
            GICD_ISACTIVER
        } else {
            GICD_ICACTIVER
        },
    );
    write32(address, bit);
}

/// Whether physical `intid` is pending.
pub fn is_pending(intid: u32, cpu: usize) -> bool {
    let (address, bit) = bit_register(intid, cpu, GICD_ISPENDR);
    read32(address) & bit != 0
}

/// Whether physical `intid` is active.
pub fn is_active(intid: u32, cpu: usize) -> bool {
    let (address, bit) = bit_register(intid, cpu, GICD_ISACTIVER);
    read32(address) & bit != 0
}

/// Makes SPI `intid` edge-triggered or level-sensitive (`GICD_ICFGR`,
/// `Int_config[1]`, bit 2n+1).
pub fn set_edge(intid: u32, edge: bool) {
    if intid < 32 {
        return;
    }
    let address = DISTRIBUTOR.load(Ordering::Acquire) + GICD_ICFGR + u64::from(intid / 16) * 4;
    let bit = 2 << (2 * (intid % 16));
    let value = read32(address);
    write32(address, if edge { value | bit } else { value & !bit });
}

/// Routes SPI `intid` to logical CPU `cpu`.
pub fn route(intid: u32, cpu: usize) {
    if intid < 32 {
        return;
    }
    if is_v2() {
        return v2::route(intid, cpu);
    }
    let address = DISTRIBUTOR.load(Ordering::Acquire) + GICD_IROUTER + u64::from(intid) * 8;
    write64(address, router_value(cpu));
}

/// Sends [`KICK_SGI`] to logical CPU `cpu` (`ICC_SGI1R_EL1`: Aff3, Aff2, Aff1 and a
/// target list bit for Aff0, IHI 0069H 12.2.22).
pub fn kick(cpu: usize) {
    if is_v2() {
        return v2::kick(cpu);
    }
    let affinity = AFFINITIES[cpu].load(Ordering::Acquire);
    let aff0 = affinity & 0xff;
    let aff1 = (affinity >> 8) & 0xff;
    let aff2 = (affinity >> 16) & 0xff;
    let aff3 = (affinity >> 32) & 0xff;
    // RS (47:44) picks the group of 16 Aff0 values; the target list bit is Aff0 % 16.
    let value = aff3 << 48
        | (aff0 / 16) << 44
        | aff2 << 32
        | u64::from(KICK_SGI) << 24
        | aff1 << 16
        | 1 << (aff0 % 16);
    barrier::dsb(barrier::ISHST);
    // SAFETY: sending an SGI changes no memory; the target's handler only looks at
    // its vCPU's pending set.
    unsafe { asm!("msr icc_sgi1r_el1, {0}", "isb", in(reg) value, options(nostack)) };
}

/// Acknowledges the highest-priority pending interrupt (`ICC_IAR1_EL1`, or a
/// GICv2's `GICC_IAR`). The value goes back to [`drop_priority`] and
/// [`deactivate`] as it is; [`interrupt_id`] of it is [`SPURIOUS`] or above if
/// nothing was pending.
pub fn acknowledge() -> u32 {
    if is_v2() {
        return v2::acknowledge();
    }
    let intid: u64;
    // SAFETY: reading IAR acknowledges an interrupt of this CPU; the caller ends it.
    unsafe { asm!("mrs {0}, icc_iar1_el1", out(reg) intid, options(nostack)) };
    intid as u32
}

/// The INTID of an [`acknowledge`] value: a GICv2 adds the SGI sender's CPU in
/// bits 12:10 (IHI 0048B.b 4.4.4); a GICv3's value is the INTID (IHI 0069H
/// 12.2.13), and this hypervisor has no LPIs, so bits 9:0 hold it either way.
pub fn interrupt_id(acknowledged: u32) -> u32 {
    acknowledged & 0x3ff
}

/// Acknowledges and ends every interrupt pending for this CPU while it runs no
/// vCPU (the kick SGI that woke it from `WFI`).
pub fn drain() {
    loop {
        let acknowledged = acknowledge();
        if interrupt_id(acknowledged) >= SPURIOUS {
            return;
        }
        drop_priority(acknowledged);
        deactivate(acknowledged);
    }
}

/// Drops the running priority of an acknowledged interrupt (`ICC_EOIR1_EL1`,
/// `GICC_EOIR`; with EOImode = 1 this does not deactivate).
pub fn drop_priority(intid: u32) {
    if is_v2() {
        return v2::drop_priority(intid);
    }
    // SAFETY: ends the acknowledgement of `intid` on this CPU.
    unsafe { asm!("msr icc_eoir1_el1, {0}", in(reg) u64::from(intid), options(nostack)) };
}

/// Deactivates an acknowledged interrupt, or a physical line a list register
/// held (`ICC_DIR_EL1`, `GICC_DIR`).
pub fn deactivate(intid: u32) {
    if is_v2() {
        return v2::deactivate(intid);
    }
    // SAFETY: deactivates an interrupt this CPU acknowledged.
    unsafe { asm!("msr icc_dir_el1, {0}", "isb", in(reg) u64::from(intid), options(nostack)) };
}

/// The virtual CPU interface's control: a GICv3's `ICH_*_EL2` registers or a
/// GICv2's GICH block, list registers in the `ICH_LR<n>_EL2` layout either way.
pub mod lr {
    use super::{ich, is_v2, v2};

    /// How many list registers this CPU has.
    pub fn count() -> usize {
        if is_v2() {
            v2::lr::count()
        } else {
            ich::count()
        }
    }

    /// Bit n set when list register n holds no interrupt.
    pub fn empty() -> u64 {
        if is_v2() {
            v2::lr::empty()
        } else {
            ich::empty()
        }
    }

    /// Sets `ICH_HCR_EL2` (`GICH_HCR`: En and UIE are the same bits).
    pub fn set_control(value: u64) {
        if is_v2() {
            v2::lr::set_control(value)
        } else {
            ich::set_control(value)
        }
    }

    /// Sets `ICH_VMCR_EL2` (`GICH_VMCR`); only ever 0, the guest's reset state.
    pub fn set_vm_control(value: u64) {
        if is_v2() {
            v2::lr::set_vm_control(value)
        } else {
            ich::set_vm_control(value)
        }
    }

    /// List register `n`.
    pub fn read(n: usize) -> u64 {
        if is_v2() {
            v2::lr::read(n)
        } else {
            ich::read(n)
        }
    }

    /// Writes list register `n`.
    pub fn write(n: usize, value: u64) {
        if is_v2() {
            v2::lr::write(n, value)
        } else {
            ich::write(n, value)
        }
    }
}

/// A GICv3's virtual CPU interface control (`ICH_*_EL2`).
mod ich {
    use core::arch::asm;

    /// How many list registers this CPU has (`ICH_VTR_EL2.ListRegs` + 1).
    pub fn count() -> usize {
        let vtr: u64;
        // SAFETY: reads an ID register of the CPU interface.
        unsafe { asm!("mrs {0}, ich_vtr_el2", out(reg) vtr, options(nostack)) };
        ((vtr & 0x1f) + 1) as usize
    }

    /// `ICH_ELRSR_EL2`: bit n set when list register n holds no interrupt.
    pub fn empty() -> u64 {
        let value: u64;
        // SAFETY: reads a status register of the virtual CPU interface.
        unsafe { asm!("mrs {0}, ich_elrsr_el2", out(reg) value, options(nostack)) };
        value
    }

    /// Sets `ICH_HCR_EL2`.
    pub fn set_control(value: u64) {
        // SAFETY: shapes the virtual CPU interface EL1 sees; EL2 does not use it.
        unsafe { asm!("msr ich_hcr_el2, {0}", "isb", in(reg) value, options(nostack)) };
    }

    /// Sets `ICH_VMCR_EL2`.
    pub fn set_vm_control(value: u64) {
        // SAFETY: as `set_control`.
        unsafe { asm!("msr ich_vmcr_el2, {0}", "isb", in(reg) value, options(nostack)) };
    }

    macro_rules! list_registers {
        ($($n:literal => $name:literal),* $(,)?) => {
            /// Reads `ICH_LR<n>_EL2`.
            pub fn read(n: usize) -> u64 {
                let value: u64;
                match n {
                    $(
                        // SAFETY: reads a list register of this CPU.
                        $n => unsafe {
                            asm!(concat!("mrs {0}, ", $name), out(reg) value, options(nostack))
                        },
                    )*
                    _ => value = 0,
                }
                value
            }

            /// Writes `ICH_LR<n>_EL2`.
            pub fn write(n: usize, value: u64) {
                match n {
                    $(
                        // SAFETY: a list register only describes interrupts to the
                        // guest running on this CPU.
                        $n => unsafe {
                            asm!(concat!("msr ", $name, ", {0}"), in(reg) value, options(nostack))
                        },
                    )*
                    _ => {}
                }
            }
        };
    }

    list_registers! {
        0 => "ich_lr0_el2", 1 => "ich_lr1_el2", 2 => "ich_lr2_el2", 3 => "ich_lr3_el2",
        4 => "ich_lr4_el2", 5 => "ich_lr5_el2", 6 => "ich_lr6_el2", 7 => "ich_lr7_el2",
        8 => "ich_lr8_el2", 9 => "ich_lr9_el2", 10 => "ich_lr10_el2", 11 => "ich_lr11_el2",
        12 => "ich_lr12_el2", 13 => "ich_lr13_el2", 14 => "ich_lr14_el2", 15 => "ich_lr15_el2",
    }
}
