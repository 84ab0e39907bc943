//! The virtual GIC a partition sees, emulated on trapped accesses: a GICv3's
//! distributor and one redistributor per vCPU, or a GICv2's distributor (its
//! SGI/PPI registers banked per vCPU, see `vgic/v2.rs`), plus the encodings of the list
//! registers and of `ICC_SGI1R_EL1` that injection needs. The CPU interface is
//! never emulated: a GICv3 guest uses its `ICC_*` system registers, which the
//! hardware points at the virtual CPU interface, and a GICv2 guest finds the
//! hardware's virtual CPU interface (GICV) mapped where it expects its GICC.
//!
//! A guest sees and configures only its own lines, as the board table decides:
//! - **passthrough** SPIs (its devices' interrupts) and the virtual timer's PPI:
//!   enable, pending, active, trigger and routing go to the physical GIC, and the
//!   hypervisor injects them with the list register's hardware bit, so the guest's
//!   deactivation deactivates the physical line;
//! - **virtual** lines (SGIs, the virtual PL011's SPI): state kept here only;
//! - every other line reads as zero and ignores writes, which is how the GICv3
//!   architecture specifies an unimplemented interrupt (IHI 0069H, 12.9 "The GIC
//!   Distributor register descriptions": bits for unimplemented INTIDs are RAZ/WI).
//!
//! Affinity routing is always on (`GICD_CTLR.ARE_NS` reads 1, DS = 1: one security
//! state), as on a GICv3 Linux drives; the vCPUs' affinities are their indices
//! (`MPIDR_EL1.Aff0`, see the world switch's `VMPIDR_EL2`). Priorities are kept per
//! line here and go into the list registers; the physical priority of a
//! passthrough line stays the hypervisor's.
//!
//! Register offsets and fields: IHI 0069H, 12.9 (distributor) and 12.10-12.11
//! (redistributor `RD_base` and `SGI_base` frames).

use alloc::vec::Vec;

use transom_boards::IntId;

mod v2;

/// One distributor frame.
pub const DISTRIBUTOR_SIZE: u64 = 0x1_0000;
/// One redistributor: `RD_base` and `SGI_base`, 64 KiB each (GICv3 without vLPIs).
pub const REDISTRIBUTOR_STRIDE: u64 = 0x2_0000;
/// The first SPI.
pub const FIRST_SPI: u32 = 32;
/// The virtual timer's PPI (`<GIC_PPI 11>`, INTID 27, BSA).
pub const VIRTUAL_TIMER: u32 = 27;

/// `GICD_PIDR2`/`GICR_PIDR2`: ArchRev 3 in bits 7:4 (IHI 0069H 12.9.31), as Linux's
/// probe checks.
const PIDR2_GICV3: u32 = 0x3b;
/// `GICD_CTLR`: EnableGrp1 (bit 0 with DS = 1: "EnableGrp1NS" is bit 1),
/// ARE (bit 4), DS (bit 6).
const CTLR_ENABLE_GRP0: u32 = 1 << 0;
const CTLR_ENABLE_GRP1: u32 = 1 << 1;
const CTLR_ARE: u32 = 1 << 4;
const CTLR_DS: u32 = 1 << 6;
/// `GICR_WAKER.ProcessorSleep` and `ChildrenAsleep`.
const WAKER_PROCESSOR_SLEEP: u32 = 1 << 1;
const WAKER_CHILDREN_ASLEEP: u32 = 1 << 2;
/// `GICR_TYPER.Last`: the highest-addressed redistributor of the region.
const TYPER_LAST: u64 = 1 << 4;
/// The priority a line has before the guest sets one.
const RESET_PRIORITY: u8 = 0;

/// Distributor register offsets (IHI 0069H table 12-25).
mod gicd {
    pub const CTLR: u64 = 0x0000;
    pub const TYPER: u64 = 0x0004;
    pub const IIDR: u64 = 0x0008;
    pub const IGROUPR: u64 = 0x0080;
    pub const ISENABLER: u64 = 0x0100;
    pub const ICENABLER: u64 = 0x0180;
    pub const ISPENDR: u64 = 0x0200;
    pub const ICPENDR: u64 = 0x0280;
    pub const ISACTIVER: u64 = 0x0300;
    pub const ICACTIVER: u64 = 0x0380;
    pub const IPRIORITYR: u64 = 0x0400;
    pub const ICFGR: u64 = 0x0c00;
    pub const IROUTER: u64 = 0x6000;
    pub const PIDR2: u64 = 0xffe8;
}

/// Redistributor `RD_base` offsets (IHI 0069H table 12-27).
mod gicr {
    pub const CTLR: u64 = 0x0000;
    pub const IIDR: u64 = 0x0004;
    pub const TYPER: u64 = 0x0008;
    pub const WAKER: u64 = 0x0014;
    pub const PIDR2: u64 = 0xffe8;
    /// Where `SGI_base` starts.
    pub const SGI_BASE: u64 = 0x1_0000;
}

/// Whose state a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineKind {
    /// A physical line the partition owns: state forwarded, injected with the
    /// hardware bit.
    Passthrough,
    /// A line only the hypervisor raises (an emulated device's).
    Virtual,
}

/// A shared peripheral interrupt the partition owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Line {
    /// Its INTID (32 and up).
    pub intid: u32,
    /// Physical or virtual.
    pub kind: LineKind,
    enabled: bool,
    edge: bool,
    priority: u8,
    /// The vCPU `GICD_IROUTER` names.
    route: usize,
}

impl Line {
    /// A line in its reset state: disabled, level-sensitive, routed to vCPU 0.
    pub const fn new(intid: IntId, kind: LineKind) -> Line {
        Line {
            intid: intid.0,
            kind,
            enabled: false,
            edge: false,
            priority: RESET_PRIORITY,
            route: 0,
        }
    }
}

/// What a guest asks of a physical line it owns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineOp {
    /// Enable or disable (`GICD_ISENABLER`/`ICENABLER`).
    Enable(bool),
    /// Make pending or clear it (`ISPENDR`/`ICPENDR`).
    Pend(bool),
    /// Activate or deactivate (`ISACTIVER`/`ICACTIVER`).
    Activate(bool),
    /// Edge-triggered (`true`) or level-sensitive (`GICD_ICFGR`).
    Edge(bool),
    /// Route to the physical CPU of the vCPU given with the operation.
    Route,
}

/// The physical GIC and the injection queue, as the emulation uses them.
pub trait Backend {
    /// Applies `op` to physical `intid`: an SPI, or a PPI of `vcpu`'s CPU.
    fn line(&mut self, intid: u32, vcpu: usize, op: LineOp);
    /// Whether physical `intid` (on `vcpu`'s CPU for a PPI) is pending.
    fn pending(&self, intid: u32, vcpu: usize) -> bool;
    /// Whether physical `intid` (on `vcpu`'s CPU for a PPI) is active.
    fn active(&self, intid: u32, vcpu: usize) -> bool;
    /// Queues virtual `intid` for injection into `vcpu`.
    fn inject(&mut self, intid: u32, vcpu: usize);
}

/// Why an access to the virtual GIC is refused (the guest gets an abort).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicRefusal {
    /// A width the register does not take, or an unaligned access.
    Width,
}

/// One vCPU's redistributor: its SGIs and PPIs.
#[derive(Clone, Copy, Debug)]
struct Redistributor {
    asleep: bool,
    /// `GICR_ISENABLER0` bits of virtual SGIs and PPIs (the timer's is physical).
    enabled: u32,
    priority: [u8; 32],
    /// `GICR_ICFGR1`: the PPIs' trigger bits.
    ppi_config: u32,
}

impl Redistributor {
    const fn new() -> Self {
        Redistributor {
            asleep: true,
            enabled: 0,
            priority: [RESET_PRIORITY; 32],
            ppi_config: 0,
        }
    }
}

/// The GIC architecture a guest sees: its machine's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// GICv2 (IHI 0048B.b): the distributor banks SGIs and PPIs per CPU,
    /// `GICD_ITARGETSR` routes SPIs and `GICD_SGIR` sends SGIs.
    V2,
    /// GICv3 (IHI 0069H) with affinity routing: redistributors, `GICD_IROUTER`,
    /// `ICC_SGI1R_EL1`.
    V3,
}

/// A partition's virtual GIC.
#[derive(Clone, Debug)]
pub struct VirtualGic {
    version: Version,
    ctlr: u32,
    typer: u32,
    iidr: u32,
    lines: Vec<Line>,
    redistributors: Vec<Redistributor>,
}

impl VirtualGic {
    /// A `version` GIC for `vcpus` vCPUs owning `lines`, whose `GICD_TYPER` and
    /// `GICD_IIDR` read as the physical distributor's `typer` (without LPIs, MBIS
    /// or security extension bits; a GICv2's `CPUNumber` counts the vCPUs) and
    /// `iidr`.
    pub fn new(version: Version, vcpus: usize, lines: Vec<Line>, typer: u32, iidr: u32) -> Self {
        // ITLinesNumber (4:0), CPUNumber (7:5), IDbits (23:19); LPIS (17), MBIS (16),
        // SecurityExtn (10), No1N (25) and the rest cleared.
        const KEPT: u32 = 0x1f | (0x7 << 5) | (0x1f << 19);
        let typer = match version {
            Version::V3 => typer & KEPT,
            // IHI 0048B.b 4.3.2: ITLinesNumber (4:0), CPUNumber (7:5) = CPUs - 1.
            Version::V2 => typer & 0x1f | ((vcpus.max(1) as u32 - 1) & 0x7) << 5,
        };
        VirtualGic {
            version,
            ctlr: 0,
            typer,
            iidr,
            lines,
            redistributors: alloc::vec![Redistributor::new(); vcpus],
        }
    }

    /// The lines the partition owns.
    pub fn lines(&self) -> &[Line] {
        &self.lines
    }

    /// How many vCPUs the GIC serves.
    pub fn vcpus(&self) -> usize {
        self.redistributors.len()
    }

    /// The architecture the guest sees.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Whether the guest has its interrupts on: `GICD_CTLR.EnableGrp1` (v3), or
    /// `Enable` (v2, whose lines are all group 0).
    pub fn distributor_enabled(&self) -> bool {
        match self.version {
            Version::V3 => self.ctlr & CTLR_ENABLE_GRP1 != 0,
            Version::V2 => self.ctlr & v2::CTLR_ENABLE != 0,
        }
    }

    /// The priority the guest gave `intid` on `vcpu` (SGIs and PPIs are per vCPU).
    pub fn priority(&self, intid: u32, vcpu: usize) -> u8 {
        if intid < FIRST_SPI {
            self.redistributors
                .get(vcpu)
                .map_or(RESET_PRIORITY, |rd| rd.priority[intid as usize])
        } else {
            self.line(intid)
                .map_or(RESET_PRIORITY, |line| line.priority)
        }
    }

    /// Whether a virtual `intid` may be injected into `vcpu`: enabled in its
    /// redistributor (SGI, PPI) or the distributor (SPI).
    pub fn enabled(&self, intid: u32, vcpu: usize) -> bool {
        if intid < FIRST_SPI {
            self.redistributors
                .get(vcpu)
                .is_some_and(|rd| rd.enabled & (1 << intid) != 0)
        } else {
            self.line(intid).is_some_and(|line| line.enabled)
        }
    }

    /// The vCPU SPI `intid` is routed to.
    pub fn route(&self, intid: u32) -> Option<usize> {
        self.line(intid).map(|line| line.route)
    }

    fn line(&self, intid: u32) -> Option<&Line> {
        self.lines.iter().find(|line| line.intid == intid)
    }

    /// A read of the distributor at `offset` by vCPU `vcpu` (whose banked SGI and
    /// PPI registers a GICv2 distributor shows).
    pub fn read_distributor(
        &self,
        vcpu: usize,
        offset: u64,
        size: u8,
        backend: &impl Backend,
    ) -> Result<u64, GicRefusal> {
        if self.version == Version::V2 {
            return v2::read(self, vcpu, offset, size, backend);
        }
        check_width(offset, size, gicd::IPRIORITYR..gicd::ICFGR)?;
        Ok(assemble(offset, size, |word| {
            self.distributor_word(word, backend)
        }))
    }

    /// A write of `value` to the distributor at `offset` by vCPU `vcpu`.
    pub fn write_distributor(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: u8,
        value: u64,
        backend: &mut impl Backend,
    ) -> Result<(), GicRefusal> {
        if self.version == Version::V2 {
            return v2::write(self, vcpu, offset, size, value, backend);
        }
        check_width(offset, size, gicd::IPRIORITYR..gicd::ICFGR)?;
        if (gicd::IPRIORITYR..gicd::ICFGR).contains(&offset) {
            for byte in 0..u64::from(size) {
                let intid = (offset + byte - gicd::IPRIORITYR) as u32;
                if let Some(line) = self.line_mut(intid) {
                    line.priority = (value >> (8 * byte)) as u8;
                }
            }
            return Ok(());
        }
        split(offset, size, value, |word, value| {
            self.write_distributor_word(word, value, backend)
        });
        Ok(())
    }

    /// A read of vCPU `vcpu`'s redistributor (`RD_base` and `SGI_base`) at
    /// `offset`.
    pub fn read_redistributor(
        &self,
        vcpu: usize,
        offset: u64,
        size: u8,
        backend: &impl Backend,
    ) -> Result<u64, GicRefusal> {
        let priorities = gicr::SGI_BASE + gicd::IPRIORITYR..gicr::SGI_BASE + gicd::IPRIORITYR + 32;
        check_width(offset, size, priorities)?;
        Ok(assemble(offset, size, |word| {
            self.redistributor_word(vcpu, word, backend)
        }))
    }

    /// A write of `value` to vCPU `vcpu`'s redistributor at `offset`.
    pub fn write_redistributor(
        &mut self,
        vcpu: usize,
        offset: u64,
        size: u8,
        value: u64,
        backend: &mut impl Backend,
    ) -> Result<(), GicRefusal> {
        let priorities = gicr::SGI_BASE + gicd::IPRIORITYR..gicr::SGI_BASE + gicd::IPRIORITYR + 32;
        check_width(offset, size, priorities.clone())?;
        let Some(rd) = self.redistributors.get_mut(vcpu) else {
            return Ok(());
        };
        if priorities.contains(&offset) {
            for byte in 0..u64::from(size) {
                let intid = (offset + byte - priorities.start) as usize;
                rd.priority[intid] = (value >> (8 * byte)) as u8;
            }
            return Ok(());
        }
        split(offset, size, value, |word, value| {
            self.write_redistributor_word(vcpu, word, value, backend)
        });
        Ok(())
    }

    fn line_mut(&mut self, intid: u32) -> Option<&mut Line> {
        self.lines.iter_mut().find(|line| line.intid == intid)
    }

    /// The 32-bit distributor register at `offset` (4-byte aligned).
    fn distributor_word(&self, offset: u64, backend: &impl Backend) -> u32 {
        match offset {
            gicd::CTLR => self.ctlr | CTLR_ARE | CTLR_DS,
            gicd::TYPER => self.typer,
            gicd::IIDR => self.iidr,
            gicd::PIDR2 => PIDR2_GICV3,
            _ => {
                if let Some((base, first)) = bitmap_register(offset) {
                    return self.spi_bits(first, 32, |line| match base {
                        gicd::IGROUPR => true,
                        gicd::ISENABLER | gicd::ICENABLER => line.enabled,
                        gicd::ISPENDR | gicd::ICPENDR => {
                            line.kind == LineKind::Passthrough
                                && backend.pending(line.intid, line.route)
                        }
                        _ => {
                            line.kind == LineKind::Passthrough
                                && backend.active(line.intid, line.route)
                        }
                    });
                }
                if let Some(first) = field_register(offset, gicd::IPRIORITYR, 8) {
                    return (0..4).fold(0, |word, byte| {
                        let priority = self.line(first + byte).map_or(0, |line| line.priority);
                        word | u32::from(priority) << (8 * byte)
                    });
                }
                if let Some(first) = field_register(offset, gicd::ICFGR, 2) {
                    return spread(self.spi_bits(first, 16, |line| line.edge));
                }
                if let Some(intid) = router(offset) {
                    return match self.line(intid) {
                        Some(line) if offset.is_multiple_of(8) => line.route as u32,
                        _ => 0,
                    };
                }
                0
            }
        }
    }

    fn write_distributor_word(&mut self, offset: u64, value: u32, backend: &mut impl Backend) {
        match offset {
            gicd::CTLR => self.ctlr = value & (CTLR_ENABLE_GRP0 | CTLR_ENABLE_GRP1),
            _ => {
                if let Some((base, first)) = bitmap_register(offset) {
                    for line in self.lines.iter_mut() {
                        let Some(bit) = line.intid.checked_sub(first).filter(|bit| *bit < 32)
                        else {
                            continue;
                        };
                        if value & (1 << bit) == 0 || first < FIRST_SPI {
                            continue;
                        }
                        let op = match base {
                            gicd::ISENABLER | gicd::ICENABLER => {
                                line.enabled = base == gicd::ISENABLER;
                                LineOp::Enable(line.enabled)
                            }
                            gicd::ISPENDR if line.kind == LineKind::Virtual => {
                                backend.inject(line.intid, line.route);
                                continue;
                            }
                            gicd::ISPENDR | gicd::ICPENDR => LineOp::Pend(base == gicd::ISPENDR),
                            gicd::ISACTIVER | gicd::ICACTIVER => {
                                LineOp::Activate(base == gicd::ISACTIVER)
                            }
                            // IGROUPR: every line is group 1.
                            _ => continue,
                        };
                        if line.kind == LineKind::Passthrough {
                            backend.line(line.intid, line.route, op);
                        }
                    }
                } else if let Some(first) = field_register(offset, gicd::ICFGR, 2) {
                    for line in self.lines.iter_mut() {
                        let Some(field) = line.intid.checked_sub(first).filter(|f| *f < 16) else {
                            continue;
                        };
                        if first < FIRST_SPI {
                            continue;
                        }
                        let edge = value & (2 << (2 * field)) != 0;
                        if edge != line.edge {
                            line.edge = edge;
                            if line.kind == LineKind::Passthrough {
                                backend.line(line.intid, line.route, LineOp::Edge(edge));
                            }
                        }
                    }
                } else if let Some(intid) = router(offset) {
                    if !offset.is_multiple_of(8) {
                        // Aff3: every vCPU's is 0.
                        return;
                    }
                    let vcpus = self.redistributors.len();
                    let Some(line) = self.line_mut(intid) else {
                        return;
                    };
                    // Interrupt_Routing_Mode (bit 31) 1: any vCPU; the first takes it.
                    // Otherwise Aff0 names the vCPU; Aff1 and Aff2 must be 0.
                    const IRM: u32 = 1 << 31;
                    let target = if value & IRM != 0 || value & 0x00ff_ff00 != 0 {
                        0
                    } else {
                        (value & 0xff) as usize
                    };
                    line.route = if target < vcpus { target } else { 0 };
                    if line.kind == LineKind::Passthrough {
                        backend.line(line.intid, line.route, LineOp::Route);
                    }
                }
            }
        }
    }

    /// Bits of `count` lines from `first`, one bit each, from `bit` of owned SPIs.
    fn spi_bits(&self, first: u32, count: u32, bit: impl Fn(&Line) -> bool) -> u32 {
        if first < FIRST_SPI {
            return 0;
        }
        self.lines
            .iter()
            .filter(|line| (first..first + count).contains(&line.intid) && bit(line))
            .fold(0, |word, line| word | 1 << (line.intid - first))
    }

    fn redistributor_word(&self, vcpu: usize, offset: u64, backend: &impl Backend) -> u32 {
        let Some(rd) = self.redistributors.get(vcpu) else {
            return 0;
        };
        let last = vcpu + 1 == self.redistributors.len();
        let typer = (vcpu as u64) << 32 | (vcpu as u64) << 8 | if last { TYPER_LAST } else { 0 };
        let timer = 1u32 << VIRTUAL_TIMER;
        match offset {
            gicr::CTLR => 0,
            gicr::IIDR => self.iidr,
            gicr::TYPER => typer as u32,
            o if o == gicr::TYPER + 4 => (typer >> 32) as u32,
            gicr::WAKER if rd.asleep => WAKER_PROCESSOR_SLEEP | WAKER_CHILDREN_ASLEEP,
            gicr::PIDR2 => PIDR2_GICV3,
            o if o == gicr::SGI_BASE + gicd::IGROUPR => u32::MAX,
            o if o == gicr::SGI_BASE + gicd::ISENABLER || o == gicr::SGI_BASE + gicd::ICENABLER => {
                rd.enabled
            }
            o if (o == gicr::SGI_BASE + gicd::ISPENDR || o == gicr::SGI_BASE + gicd::ICPENDR)
                && backend.pending(VIRTUAL_TIMER, vcpu) =>
            {
                timer
            }
            o if (o == gicr::SGI_BASE + gicd::ISACTIVER
                || o == gicr::SGI_BASE + gicd::ICACTIVER)
                && backend.active(VIRTUAL_TIMER, vcpu) =>
            {
                timer
            }
            // SGIs are always edge-triggered: Int_config 0b10 (IHI 0069H 12.11.7).
            o if o == gicr::SGI_BASE + gicd::ICFGR => 0xaaaa_aaaa,
            o if o == gicr::SGI_BASE + gicd::ICFGR + 4 => rd.ppi_config,
            o if (gicr::SGI_BASE + gicd::IPRIORITYR..gicr::SGI_BASE + gicd::IPRIORITYR + 32)
                .contains(&o) =>
            {
                let first = (o - gicr::SGI_BASE - gicd::IPRIORITYR) as usize;
                (0..4).fold(0, |word, byte| {
                    word | u32::from(rd.priority[first + byte]) << (8 * byte)
                })
            }
            _ => 0,
        }
    }

    fn write_redistributor_word(
        &mut self,
        vcpu: usize,
        offset: u64,
        value: u32,
        backend: &mut impl Backend,
    ) {
        let Some(rd) = self.redistributors.get_mut(vcpu) else {
            return;
        };
        let timer = 1u32 << VIRTUAL_TIMER;
        match offset {
            gicr::WAKER => rd.asleep = value & WAKER_PROCESSOR_SLEEP != 0,
            o if o == gicr::SGI_BASE + gicd::ISENABLER => {
                rd.enabled |= value;
                if value & timer != 0 {
                    backend.line(VIRTUAL_TIMER, vcpu, LineOp::Enable(true));
                }
            }
            o if o == gicr::SGI_BASE + gicd::ICENABLER => {
                rd.enabled &= !value;
                if value & timer != 0 {
                    backend.line(VIRTUAL_TIMER, vcpu, LineOp::Enable(false));
                }
            }
            o if o == gicr::SGI_BASE + gicd::ISPENDR => {
                for intid in (0..32).filter(|intid| value & (1 << intid) != 0) {
                    if intid == VIRTUAL_TIMER {
                        backend.line(intid, vcpu, LineOp::Pend(true));
                    } else {
                        backend.inject(intid, vcpu);
                    }
                }
            }
            o if o == gicr::SGI_BASE + gicd::ICPENDR && value & timer != 0 => {
                backend.line(VIRTUAL_TIMER, vcpu, LineOp::Pend(false));
            }
            o if o == gicr::SGI_BASE + gicd::ICACTIVER && value & timer != 0 => {
                backend.line(VIRTUAL_TIMER, vcpu, LineOp::Activate(false));
            }
            // PPIs' trigger is fixed by the hardware for the timer; kept for reads.
            o if o == gicr::SGI_BASE + gicd::ICFGR + 4 => rd.ppi_config = value & 0xaaaa_aaaa,
            _ => {}
        }
    }
}

/// Accesses the GIC takes (IHI 0069H 12.1.3): aligned 32-bit anywhere, aligned
/// 64-bit (the 64-bit registers and, as QEMU and Linux's `readq` of `GICR_TYPER` do,
/// pairs of 32-bit ones), and bytes in the priority registers `bytes`.
fn check_width(offset: u64, size: u8, bytes: core::ops::Range<u64>) -> Result<(), GicRefusal> {
    let aligned = offset.is_multiple_of(u64::from(size));
    let ok = match size {
        4 | 8 => aligned,
        1 | 2 => aligned && bytes.contains(&offset),
        _ => false,
    };
    if ok { Ok(()) } else { Err(GicRefusal::Width) }
}

/// A read of `size` bytes at `offset` from 32-bit words.
fn assemble(offset: u64, size: u8, mut word: impl FnMut(u64) -> u32) -> u64 {
    let aligned = offset & !3;
    let value = u64::from(word(aligned))
        | if size == 8 {
            u64::from(word(aligned + 4)) << 32
        } else {
            0
        };
    let shift = 8 * (offset - aligned);
    match size {
        8 => value,
        4 => value & 0xffff_ffff,
        _ => (value >> shift) & ((1 << (8 * u64::from(size))) - 1),
    }
}

/// A write of `size` (4 or 8) bytes at `offset` as 32-bit words, low word first.
fn split(offset: u64, size: u8, value: u64, mut word: impl FnMut(u64, u32)) {
    word(offset, value as u32);
    if size == 8 {
        word(offset + 4, (value >> 32) as u32);
    }
}

/// For the one-bit-per-INTID registers (IGROUPR..ICACTIVER), the register block's
/// base and the first INTID the word at `offset` covers.
fn bitmap_register(offset: u64) -> Option<(u64, u32)> {
    const BLOCKS: [u64; 7] = [
        gicd::IGROUPR,
        gicd::ISENABLER,
        gicd::ICENABLER,
        gicd::ISPENDR,
        gicd::ICPENDR,
        gicd::ISACTIVER,
        gicd::ICACTIVER,
    ];
    BLOCKS
        .iter()
        .find(|&&base| (base..base + 0x80).contains(&offset))
        .map(|&base| (base, ((offset - base) / 4 * 32) as u32))
}

/// For a register block of `bits` bits per INTID at `base` (1 KiB of
/// `IPRIORITYR`, 256 bytes of `ICFGR`), the first INTID of the word at `offset`.
fn field_register(offset: u64, base: u64, bits: u64) -> Option<u32> {
    let len = 1024 * bits / 8;
    (base..base + len)
        .contains(&offset)
        .then(|| ((offset - base) * 8 / bits) as u32)
}

/// The INTID whose `GICD_IROUTER<n>` (8 bytes each from 0x6000; n = 32..1019)
/// covers `offset`.
fn router(offset: u64) -> Option<u32> {
    let intid = offset.checked_sub(gicd::IROUTER)? / 8;
    (FIRST_SPI as u64..1020)
        .contains(&intid)
        .then_some(intid as u32)
}

/// Odd bits of a 2-bit-per-INTID field word from one bit per INTID: `ICFGR`
/// reads `Int_config[1]` (1 = edge) in bit 2n+1 for INTID n.
fn spread(bits: u32) -> u32 {
    (0..16)
        .filter(|bit| bits & (1 << bit) != 0)
        .fold(0, |word, bit| word | 2 << (2 * bit))
}

/// `ICH_LR<n>_EL2` for a pending group-1 interrupt (IHI 0069H 12.4.6): vINTID in
/// bits 31:0, pINTID 44:32 with HW (bit 61) when the guest's deactivation must
/// deactivate a physical line, Priority 55:48, Group 60, State 63:62 = 0b01.
pub fn list_register(vintid: u32, physical: bool, priority: u8) -> u64 {
    const STATE_PENDING: u64 = 1 << 62;
    const HW: u64 = 1 << 61;
    const GROUP1: u64 = 1 << 60;
    let mut lr = STATE_PENDING | GROUP1 | u64::from(priority) << 48 | u64::from(vintid);
    if physical {
        lr |= HW | (u64::from(vintid) & 0x1fff) << 32;
    }
    lr
}

/// The vINTID an `ICH_LR<n>_EL2` value holds.
pub fn list_register_intid(lr: u64) -> u32 {
    lr as u32
}

/// Whether an `ICH_LR<n>_EL2` holds an interrupt in any state (State != 0).
pub fn list_register_live(lr: u64) -> bool {
    lr >> 62 != 0
}

/// Which vCPUs an `ICC_SGI1R_EL1` write from `sender` targets and with which SGI
/// (IHI 0069H 12.2.22): `IRM` = 1 is every vCPU but the sender; otherwise `Aff3`,
/// `Aff2`, `Aff1` and `RS` must name the vCPUs' (all 0) and `TargetList` holds
/// one bit per Aff0. Returns the SGI and a bit per vCPU.
pub fn sgi_targets(value: u64, sender: usize, vcpus: usize) -> (u32, u64) {
    let intid = ((value >> 24) & 0xf) as u32;
    let all: u64 = if vcpus >= 64 {
        u64::MAX
    } else {
        (1 << vcpus) - 1
    };
    if value & (1 << 40) != 0 {
        return (intid, all & !(1 << sender));
    }
    let aff1 = (value >> 16) & 0xff;
    let aff2 = (value >> 32) & 0xff;
    let range_selector = (value >> 44) & 0xf;
    let aff3 = (value >> 48) & 0xff;
    if aff1 | aff2 | aff3 | range_selector != 0 {
        return (intid, 0);
    }
    (intid, value & 0xffff & all)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec;
    use std::vec::Vec;

    use super::*;

    #[derive(Default)]
    struct Recorder {
        ops: Vec<(u32, usize, LineOp)>,
        injected: Vec<(u32, usize)>,
        pending: Vec<u32>,
    }

    impl Backend for Recorder {
        fn line(&mut self, intid: u32, vcpu: usize, op: LineOp) {
            self.ops.push((intid, vcpu, op));
        }
        fn pending(&self, intid: u32, _vcpu: usize) -> bool {
            self.pending.contains(&intid)
        }
        fn active(&self, _intid: u32, _vcpu: usize) -> bool {
            false
        }
        fn inject(&mut self, intid: u32, vcpu: usize) {
            self.injected.push((intid, vcpu));
        }
    }

    /// virt's transport 31 (SPI 47, INTID 79) passed through, a virtual UART line
    /// at INTID 33.
    fn gic(vcpus: usize) -> VirtualGic {
        VirtualGic::new(
            Version::V3,
            vcpus,
            vec![
                Line::new(IntId(79), LineKind::Passthrough),
                Line::new(IntId(33), LineKind::Virtual),
            ],
            // QEMU virt GICv3: ITLinesNumber 8 (288 INTIDs), IDbits 15, LPIS.
            0x0000_0008 | 15 << 19 | 1 << 17,
            0x0300_043b,
        )
    }

    #[test]
    fn the_distributor_identifies_as_gicv3_with_affinity_routing() {
        let gic = gic(1);
        let backend = Recorder::default();
        assert_eq!(gic.read_distributor(0, 0xffe8, 4, &backend), Ok(0x3b));
        let ctlr = gic.read_distributor(0, 0, 4, &backend).unwrap();
        assert_eq!(ctlr, u64::from(CTLR_ARE | CTLR_DS));
        // No LPIs for the guest: GICD_TYPER.LPIS (bit 17) clear, lines kept.
        assert_eq!(gic.read_distributor(0, 4, 4, &backend), Ok(0x8 | 15 << 19));
    }

    #[test]
    fn a_guest_enables_only_its_own_lines() {
        let mut gic = gic(1);
        let mut backend = Recorder::default();
        // ISENABLER2 covers INTIDs 64..95: all ones from the guest.
        gic.write_distributor(0, 0x108, 4, u32::MAX as u64, &mut backend)
            .unwrap();
        assert_eq!(backend.ops, [(79, 0, LineOp::Enable(true))]);
        assert_eq!(
            gic.read_distributor(0, 0x108, 4, &backend),
            Ok(1 << (79 - 64))
        );
        // Someone else's line (INTID 78) reads as disabled.
        assert_eq!(gic.read_distributor(0, 0x188, 4, &backend), Ok(1 << 15));
        // ICENABLER0 holds SGIs and PPIs: RES0 with affinity routing.
        gic.write_distributor(0, 0x180, 4, u32::MAX as u64, &mut backend)
            .unwrap();
        assert_eq!(backend.ops.len(), 1);
    }

    #[test]
    fn a_virtual_line_is_raised_by_the_hypervisor_not_the_hardware() {
        let mut gic = gic(1);
        let mut backend = Recorder::default();
        gic.write_distributor(0, 0x104, 4, 0b10, &mut backend)
            .unwrap();
        assert!(backend.ops.is_empty());
        assert!(gic.enabled(33, 0));
        // ISPENDR1 bit 1 = INTID 33: queued for injection.
        gic.write_distributor(0, 0x204, 4, 0b10, &mut backend)
            .unwrap();
        assert_eq!(backend.injected, [(33, 0)]);
    }

    #[test]
    fn priorities_take_byte_and_word_accesses() {
        let mut gic = gic(1);
        let mut backend = Recorder::default();
        gic.write_distributor(0, 0x400 + 79, 1, 0xa0, &mut backend)
            .unwrap();
        assert_eq!(gic.priority(79, 0), 0xa0);
        assert_eq!(
            gic.read_distributor(0, 0x400 + 76, 4, &backend),
            Ok(0xa000_0000)
        );
        gic.write_distributor(0, 0x400 + 76, 4, 0x1122_3344, &mut backend)
            .unwrap();
        assert_eq!(gic.priority(79, 0), 0x11);
        // A byte outside the priority block is refused.
        assert_eq!(
            gic.write_distributor(0, 0x100, 1, 1, &mut backend),
            Err(GicRefusal::Width)
        );
        assert_eq!(
            gic.read_distributor(0, 0x102, 4, &backend),
            Err(GicRefusal::Width)
        );
    }

    #[test]
    fn trigger_and_routing_reach_the_physical_line() {
        let mut gic = gic(2);
        let mut backend = Recorder::default();
        // ICFGR4 covers INTIDs 64..79; INTID 79 is field 15, bit 31 = edge.
        gic.write_distributor(0, 0xc10, 4, 1 << 31, &mut backend)
            .unwrap();
        assert_eq!(gic.read_distributor(0, 0xc10, 4, &backend), Ok(1 << 31));
        // IROUTER79 = vCPU 1, a 64-bit write.
        gic.write_distributor(0, 0x6000 + 79 * 8, 8, 1, &mut backend)
            .unwrap();
        assert_eq!(gic.route(79), Some(1));
        assert_eq!(
            backend.ops,
            [(79, 0, LineOp::Edge(true)), (79, 1, LineOp::Route)]
        );
        assert_eq!(gic.read_distributor(0, 0x6000 + 79 * 8, 8, &backend), Ok(1));
    }

    #[test]
    fn each_vcpu_finds_its_redistributor_by_affinity() {
        let gic = gic(2);
        let backend = Recorder::default();
        let typer0 = gic.read_redistributor(0, 8, 8, &backend).unwrap();
        let typer1 = gic.read_redistributor(1, 8, 8, &backend).unwrap();
        assert_eq!((typer0 >> 32, typer0 & TYPER_LAST), (0, 0));
        assert_eq!((typer1 >> 32, typer1 & TYPER_LAST), (1, TYPER_LAST));
        assert_eq!(gic.read_redistributor(1, 0xffe8, 4, &backend), Ok(0x3b));
    }

    #[test]
    fn a_redistributor_wakes_when_told() {
        let mut gic = gic(1);
        let mut backend = Recorder::default();
        assert_eq!(gic.read_redistributor(0, 0x14, 4, &backend), Ok(0b110));
        gic.write_redistributor(0, 0x14, 4, 0, &mut backend)
            .unwrap();
        assert_eq!(gic.read_redistributor(0, 0x14, 4, &backend), Ok(0));
    }

    #[test]
    fn the_virtual_timer_ppi_is_the_physical_one() {
        let mut gic = gic(1);
        let mut backend = Recorder::default();
        let isenabler0 = 0x1_0100;
        gic.write_redistributor(0, isenabler0, 4, 1 << 27 | 1 << 1, &mut backend)
            .unwrap();
        assert_eq!(backend.ops, [(27, 0, LineOp::Enable(true))]);
        assert!(gic.enabled(1, 0) && gic.enabled(27, 0));
        gic.write_redistributor(0, 0x1_0400 + 27, 1, 0xa0, &mut backend)
            .unwrap();
        assert_eq!(gic.priority(27, 0), 0xa0);
    }

    #[test]
    fn list_registers_follow_the_architecture() {
        // Pending (0b01 << 62), group 1, HW with pINTID = vINTID = 27, priority 0xa0.
        assert_eq!(
            list_register(27, true, 0xa0),
            0x7000_0000_0000_0000 | 0xa0 << 48 | 27 << 32 | 27
        );
        assert_eq!(list_register(3, false, 0), 0x5000_0000_0000_0003);
        assert!(list_register_live(list_register(3, false, 0)));
        assert!(!list_register_live(3));
    }

    #[test]
    fn sgi1r_names_targets_by_affinity() {
        // SGI 5 to Aff0 1 and 2 of cluster 0.
        assert_eq!(sgi_targets(5 << 24 | 0b110, 0, 4), (5, 0b110));
        // IRM: everyone but the sender.
        assert_eq!(sgi_targets(1 << 40 | 1 << 24, 1, 3), (1, 0b101));
        // Another cluster (Aff1 = 1) has no vCPU of this partition.
        assert_eq!(sgi_targets(1 << 16 | 1, 0, 2), (0, 0));
        // Targets beyond the partition's vCPUs are dropped.
        assert_eq!(sgi_targets(0xffff, 0, 2), (0, 0b11));
    }
}
