//! The GICv2 distributor a guest sees (IHI 0048B.b, 4.3 "Distributor register
//! descriptions").
//!
//! It differs from the GICv3 one in three ways, handled here; everything else (the
//! SPIs' enable, pending, active, priority and trigger registers) is the same
//! register map and goes to the shared code:
//! - the first word of each bitmap block, the first 32 priority bytes, the first
//!   two `GICD_ICFGR`s and the first 8 `GICD_ITARGETSR`s are **banked**: each CPU
//!   sees its own SGIs and PPIs. They are the same registers a GICv3 redistributor's
//!   `SGI_base` frame has at the same offsets, so they go to the accessing vCPU's
//!   redistributor state;
//! - SPIs are routed by a CPU mask per line (`GICD_ITARGETSR`, byte-accessible),
//!   and the banked `ITARGETSR0..7` read as the accessing CPU's own bit;
//! - SGIs are sent by writing `GICD_SGIR`.
//!
//! Every line is group 0 (`GICD_IGROUPR` reads as zero and ignores writes), which
//! the virtual CPU interface signals as a virtual IRQ (`GICV_CTLR.FIQEn` = 0) and
//! which is what a guest that only sets `GICC_CTLR.Enable`, like Linux, takes. A
//! line routed to several vCPUs goes to the lowest-numbered one: the virtual GIC
//! implements no 1-of-N delivery. `GICD_CPENDSGIR` and `GICD_SPENDSGIR` read as
//! zero and ignore writes. Registers are 32 bits wide; bytes are taken where the
//! architecture makes a register byte-accessible (4.1.4), and a 64-bit access,
//! which the architecture does not define, is refused.

use super::{Backend, FIRST_SPI, GicRefusal, LineOp, VirtualGic, gicd, gicr};

/// `GICD_CTLR.Enable` (IHI 0048B.b 4.3.1, without the Security Extensions).
pub(super) const CTLR_ENABLE: u32 = 1 << 0;
/// `GICD_ITARGETSR<n>` (4.3.12): one byte per INTID.
const ITARGETSR: u64 = 0x0800;
const ITARGETSR_END: u64 = 0x0c00;
/// `GICD_SGIR` (4.3.15).
const SGIR: u64 = 0x0f00;
/// `GICD_CPENDSGIR` and `GICD_SPENDSGIR` (4.3.16, 4.3.17).
const SGI_PENDING: core::ops::Range<u64> = 0x0f10..0x0f30;
/// The end of the `GICD_ICFGR`s, the last registers shared with the GICv3 map;
/// above them only `SGIR`, the SGI pending registers and the ID registers.
const ICFGR_END: u64 = 0x0d00;
/// `ICPIDR2` at the end of the 4 KiB frame: ArchRev 2 in bits 7:4 (4.3.18 and
/// the GIC-400's value).
const PIDR2: u64 = 0x0fe8;
const PIDR2_GICV2: u32 = 0x2b;

/// A read of `size` bytes at `offset` by vCPU `vcpu`.
pub(super) fn read(
    gic: &VirtualGic,
    vcpu: usize,
    offset: u64,
    size: u8,
    backend: &impl Backend,
) -> Result<u64, GicRefusal> {
    check_width(offset, size)?;
    Ok(super::assemble(offset, size, |word| {
        read_word(gic, vcpu, word, backend)
    }))
}

/// A write of `value` (`size` bytes) at `offset` by vCPU `vcpu`.
pub(super) fn write(
    gic: &mut VirtualGic,
    vcpu: usize,
    offset: u64,
    size: u8,
    value: u64,
    backend: &mut impl Backend,
) -> Result<(), GicRefusal> {
    check_width(offset, size)?;
    if (gicd::IPRIORITYR..ITARGETSR_END).contains(&offset) {
        for byte in 0..u64::from(size) {
            write_byte(
                gic,
                vcpu,
                offset + byte,
                (value >> (8 * byte)) as u8,
                backend,
            );
        }
        return Ok(());
    }
    write_word(gic, vcpu, offset, value as u32, backend);
    Ok(())
}

/// Aligned words anywhere; aligned bytes where IHI 0048B.b 4.1.4 allows them:
/// `IPRIORITYR`, `ITARGETSR`, `CPENDSGIR` and `SPENDSGIR`.
fn check_width(offset: u64, size: u8) -> Result<(), GicRefusal> {
    let ok = match size {
        4 => offset.is_multiple_of(4),
        1 => (gicd::IPRIORITYR..ITARGETSR_END).contains(&offset) || SGI_PENDING.contains(&offset),
        _ => false,
    };
    if ok { Ok(()) } else { Err(GicRefusal::Width) }
}

/// Whether the word at `offset` is one of the registers banked per CPU, which the
/// redistributor's `SGI_base` frame has at the same offset.
fn banked(offset: u64) -> bool {
    let first_bitmap_word =
        (gicd::ISENABLER..gicd::IPRIORITYR).contains(&offset) && offset % 0x80 < 4;
    first_bitmap_word
        || (gicd::IPRIORITYR..gicd::IPRIORITYR + 32).contains(&offset)
        || (gicd::ICFGR..gicd::ICFGR + 8).contains(&offset)
}

fn read_word(gic: &VirtualGic, vcpu: usize, offset: u64, backend: &impl Backend) -> u32 {
    match offset {
        gicd::CTLR => gic.ctlr & CTLR_ENABLE,
        gicd::TYPER => gic.typer,
        gicd::IIDR => gic.iidr,
        PIDR2 => PIDR2_GICV2,
        o if (gicd::IGROUPR..gicd::ISENABLER).contains(&o) => 0,
        o if banked(o) => gic.redistributor_word(vcpu, gicr::SGI_BASE + o, backend),
        o if (ITARGETSR..ITARGETSR_END).contains(&o) => (0..4).fold(0, |word, byte| {
            word | u32::from(target_byte(gic, vcpu, o + byte - ITARGETSR)) << (8 * byte)
        }),
        o if o < ICFGR_END => gic.distributor_word(o, backend),
        _ => 0,
    }
}

/// `GICD_ITARGETSR`'s byte for `intid`: the reader's own bit for its SGIs and
/// PPIs (4.3.12: "each field returns a value that corresponds only to the
/// processor reading the register"), the routed vCPU's bit for an owned SPI.
fn target_byte(gic: &VirtualGic, vcpu: usize, intid: u64) -> u8 {
    if intid < u64::from(FIRST_SPI) {
        return 1 << (vcpu % 8);
    }
    gic.line(intid as u32)
        .map_or(0, |line| 1 << (line.route % 8))
}

fn write_word(
    gic: &mut VirtualGic,
    vcpu: usize,
    offset: u64,
    value: u32,
    backend: &mut impl Backend,
) {
    match offset {
        gicd::CTLR => gic.ctlr = value & CTLR_ENABLE,
        SGIR => send_sgi(gic, vcpu, value, backend),
        o if (gicd::IGROUPR..gicd::ISENABLER).contains(&o) => {}
        o if banked(o) => gic.write_redistributor_word(vcpu, gicr::SGI_BASE + o, value, backend),
        o if o < ICFGR_END => gic.write_distributor_word(o, value, backend),
        _ => {}
    }
}

/// A priority or target byte.
fn write_byte(
    gic: &mut VirtualGic,
    vcpu: usize,
    offset: u64,
    value: u8,
    backend: &mut impl Backend,
) {
    let vcpus = gic.redistributors.len();
    if offset < ITARGETSR {
        let intid = (offset - gicd::IPRIORITYR) as u32;
        if intid < FIRST_SPI {
            if let Some(rd) = gic.redistributors.get_mut(vcpu) {
                rd.priority[intid as usize] = value;
            }
        } else if let Some(line) = gic.line_mut(intid) {
            line.priority = value;
        }
        return;
    }
    // SGI and PPI targets are read-only (4.3.12).
    let intid = (offset - ITARGETSR) as u32;
    let mask = u32::from(value) & ((1 << vcpus.min(8)) - 1);
    if intid < FIRST_SPI || mask == 0 {
        return;
    }
    let Some(line) = gic.line_mut(intid) else {
        return;
    };
    line.route = mask.trailing_zeros() as usize;
    if line.kind == super::LineKind::Passthrough {
        backend.line(line.intid, line.route, LineOp::Route);
    }
}

/// A `GICD_SGIR` write from `sender` (4.3.15): `TargetListFilter` (25:24) 0 sends
/// to `CPUTargetList` (23:16), 1 to every other vCPU, 2 to the sender alone;
/// `SGIINTID` in 3:0.
fn send_sgi(gic: &VirtualGic, sender: usize, value: u32, backend: &mut impl Backend) {
    let vcpus = gic.redistributors.len().min(8);
    let all = (1u32 << vcpus) - 1;
    let intid = value & 0xf;
    let targets = match (value >> 24) & 0x3 {
        0 => (value >> 16) & 0xff,
        1 => all & !(1 << sender),
        2 => 1 << sender,
        _ => 0,
    } & all;
    for vcpu in (0..vcpus).filter(|vcpu| targets & (1 << vcpu) != 0) {
        backend.inject(intid, vcpu);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec;
    use std::vec::Vec;

    use super::super::{Line, LineKind, Version};
    use super::*;
    use transom_boards::IntId;

    #[derive(Default)]
    struct Recorder {
        ops: Vec<(u32, usize, LineOp)>,
        injected: Vec<(u32, usize)>,
    }

    impl Backend for Recorder {
        fn line(&mut self, intid: u32, vcpu: usize, op: LineOp) {
            self.ops.push((intid, vcpu, op));
        }
        fn pending(&self, _intid: u32, _vcpu: usize) -> bool {
            false
        }
        fn active(&self, _intid: u32, _vcpu: usize) -> bool {
            false
        }
        fn inject(&mut self, intid: u32, vcpu: usize) {
            self.injected.push((intid, vcpu));
        }
    }

    /// Two vCPUs; virt's UART1 (SPI 8, INTID 40) passed through, a virtual line at
    /// INTID 33. `typer` as QEMU's GICv2 on virt with 4 CPUs: ITLinesNumber 8,
    /// CPUNumber 3, SecurityExtn 0.
    fn gic() -> VirtualGic {
        VirtualGic::new(
            Version::V2,
            2,
            vec![
                Line::new(IntId(40), LineKind::Passthrough),
                Line::new(IntId(33), LineKind::Virtual),
            ],
            0x0000_0068,
            0x0200_043b,
        )
    }

    #[test]
    fn typer_counts_the_partitions_vcpus_and_pidr2_says_gicv2() {
        let gic = gic();
        let backend = Recorder::default();
        // CPUNumber (7:5) = 2 vCPUs - 1; ITLinesNumber kept.
        assert_eq!(gic.read_distributor(0, 0x004, 4, &backend), Ok(0x28));
        assert_eq!(gic.read_distributor(0, 0xfe8, 4, &backend), Ok(0x2b));
    }

    #[test]
    fn enable_is_bit_0_and_every_line_is_group_0() {
        let mut gic = gic();
        let mut backend = Recorder::default();
        gic.write_distributor(0, 0, 4, 0x3, &mut backend).unwrap();
        assert_eq!(gic.read_distributor(0, 0, 4, &backend), Ok(1));
        assert!(gic.distributor_enabled());
        gic.write_distributor(0, 0x084, 4, u64::from(u32::MAX), &mut backend)
            .unwrap();
        assert_eq!(gic.read_distributor(0, 0x084, 4, &backend), Ok(0));
    }

    #[test]
    fn sgi_and_ppi_registers_are_banked_per_vcpu() {
        let mut gic = gic();
        let mut backend = Recorder::default();
        // vCPU 1 enables SGI 1 and the virtual timer's PPI 27 in its ISENABLER0.
        gic.write_distributor(1, 0x100, 4, 1 << 27 | 1 << 1, &mut backend)
            .unwrap();
        assert_eq!(backend.ops, [(27, 1, LineOp::Enable(true))]);
        assert_eq!(
            gic.read_distributor(1, 0x100, 4, &backend),
            Ok(1 << 27 | 1 << 1)
        );
        assert_eq!(gic.read_distributor(0, 0x100, 4, &backend), Ok(0));
        assert!(gic.enabled(27, 1) && !gic.enabled(27, 0));
        // Priority bytes 0..31 are banked too.
        gic.write_distributor(1, 0x400 + 27, 1, 0xa0, &mut backend)
            .unwrap();
        assert_eq!(gic.priority(27, 1), 0xa0);
        assert_eq!(gic.priority(27, 0), 0);
    }

    #[test]
    fn itargetsr_reads_the_readers_own_bit_and_routes_spis() {
        let mut gic = gic();
        let mut backend = Recorder::default();
        // ITARGETSR0: SGIs 0..3, each the reading vCPU's bit.
        assert_eq!(gic.read_distributor(1, 0x800, 4, &backend), Ok(0x0202_0202));
        assert_eq!(gic.read_distributor(0, 0x800, 1, &backend), Ok(0x01));
        // INTID 40 to vCPU 1 with a byte write; INTID 41 is not the partition's.
        gic.write_distributor(0, 0x800 + 40, 1, 0x02, &mut backend)
            .unwrap();
        gic.write_distributor(0, 0x800 + 41, 1, 0x02, &mut backend)
            .unwrap();
        assert_eq!(gic.route(40), Some(1));
        assert_eq!(backend.ops, [(40, 1, LineOp::Route)]);
        assert_eq!(gic.read_distributor(0, 0x828, 4, &backend), Ok(0x02));
        // A mask naming no vCPU of the partition leaves the route alone.
        gic.write_distributor(0, 0x800 + 40, 1, 0x80, &mut backend)
            .unwrap();
        assert_eq!(gic.route(40), Some(1));
    }

    #[test]
    fn sgir_sends_to_the_target_list_others_or_self() {
        let mut gic = gic();
        let mut backend = Recorder::default();
        // SGI 3 to CPUTargetList 0b10 (vCPU 1); bits for absent vCPUs dropped.
        gic.write_distributor(0, 0xf00, 4, 0x00f2_0003, &mut backend)
            .unwrap();
        // SGI 5 from vCPU 1 to every other vCPU; SGI 7 from vCPU 1 to itself.
        gic.write_distributor(1, 0xf00, 4, 0x0100_0005, &mut backend)
            .unwrap();
        gic.write_distributor(1, 0xf00, 4, 0x0200_0007, &mut backend)
            .unwrap();
        assert_eq!(backend.injected, [(3, 1), (5, 0), (7, 1)]);
    }

    #[test]
    fn widths_follow_the_gicv2_rules() {
        let mut gic = gic();
        let mut backend = Recorder::default();
        // Bytes only where 4.1.4 allows them; no 16 or 64-bit accesses.
        assert_eq!(
            gic.read_distributor(0, 0x100, 1, &backend),
            Err(GicRefusal::Width)
        );
        assert_eq!(
            gic.read_distributor(0, 0x400, 2, &backend),
            Err(GicRefusal::Width)
        );
        assert_eq!(
            gic.write_distributor(0, 0x100, 8, 0, &mut backend),
            Err(GicRefusal::Width)
        );
        // The GICv3-only IROUTER space is beyond a GICv2 distributor: RAZ/WI.
        gic.write_distributor(0, 0x6000 + 40 * 8, 4, 1, &mut backend)
            .unwrap();
        assert_eq!(gic.route(40), Some(0));
        assert!(backend.ops.is_empty());
    }
}
