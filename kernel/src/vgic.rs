//! A partition's virtual GIC at run time: its emulated distributor and (GICv3)
//! redistributors (`transom_vmm_core::vgic`) behind a lock, each vCPU's queue of
//! interrupts to inject, and the list registers of the CPU the vCPU is pinned to.
//! A GICv2 guest's CPU interface is the hardware's virtual one (GICV), mapped in
//! its stage 2 where it expects its GICC (see `guest_load`).
//!
//! An interrupt reaches a vCPU in one of three ways:
//! - a physical line the partition owns (a granted device's SPI, the virtual timer's
//!   PPI) fires on the vCPU's CPU and exits the guest; the hypervisor acknowledges
//!   it, drops its priority and queues it, and it goes into a list register with the
//!   hardware bit, so the guest's deactivation deactivates the physical line;
//! - a vCPU sends an SGI (`ICC_SGI1R_EL1`, trapped by `HCR_EL2.IMO`; a GICv2's
//!   `GICD_SGIR`, a distributor write);
//! - the guest writes `ISPENDR` for a virtual line.
//!
//! Queueing sets a bit in the target vCPU's pending set; if the target runs on
//! another CPU, that CPU gets the kick SGI, which exits its guest. Before every
//! entry a vCPU moves its pending set into free list registers; if they run out,
//! the underflow maintenance interrupt (`ICH_HCR_EL2.UIE`) brings it back to move
//! the rest. Each vCPU owns its CPU's list registers for good (vCPUs never
//! migrate), so they are never saved or restored.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use spin::Mutex;
use transom_boards::PhysRange;
use transom_vmm_core::esr::DataAccess;
use transom_vmm_core::mmio;
use transom_vmm_core::vgic::{
    self, Backend, FIRST_SPI, GicRefusal, Line, LineKind, LineOp, VIRTUAL_TIMER, Version,
    VirtualGic,
};

use crate::arch::gic::{self, lr};
use crate::vcpu::MAX_VCPUS;

/// 64-bit words of one pending set: INTIDs 0..1024.
const WORDS: usize = 16;

/// `ICH_HCR_EL2.En` and `UIE` (IHI 0069H 12.4.5).
const HCR_EN: u64 = 1 << 0;
const HCR_UIE: u64 = 1 << 1;

/// One vCPU's side of its partition's virtual GIC: what is queued for it. A
/// partition without a virtual GIC has a queue where nothing is ever queued, so the
/// check before every entry is the same load either way.
pub struct VcpuQueue<'a> {
    queued: &'a AtomicBool,
    gic: Option<(&'a PartitionGic, usize)>,
}

/// The flag of every queue without a virtual GIC: never set.
static NOTHING_QUEUED: AtomicBool = AtomicBool::new(false);

impl VcpuQueue<'_> {
    /// The queue of a vCPU whose partition has no virtual GIC.
    pub fn without_gic() -> VcpuQueue<'static> {
        VcpuQueue {
            queued: &NOTHING_QUEUED,
            gic: None,
        }
    }

    /// Moves the vCPU's pending interrupts into this CPU's free list registers, and
    /// asks for the underflow maintenance interrupt if some did not fit.
    #[inline]
    pub fn flush(&self) {
        // Called before every entry: a plain load first keeps the common case (nothing
        // queued) free of an exclusive read-modify-write, and of a call.
        if self.queued.load(Ordering::Acquire)
            && self.queued.swap(false, Ordering::AcqRel)
            && let Some((gic, vcpu)) = self.gic
        {
            gic.flush_queued(vcpu);
        }
    }
}

/// `ICH_LR<n>_EL2` fields used when a queued interrupt is already in a register.
const LR_HW: u64 = 1 << 61;
const LR_STATE_PENDING: u64 = 1 << 62;
const LR_STATE_ACTIVE: u64 = 1 << 63;

/// A partition's virtual GIC.
pub struct PartitionGic {
    /// The distributor frame, as an IPA range of the guest.
    pub distributor: PhysRange,
    /// The redistributors, one [`vgic::REDISTRIBUTOR_STRIDE`] per vCPU (empty for
    /// a GICv2).
    pub redistributors: PhysRange,
    cpus: &'static [usize],
    state: Mutex<VirtualGic>,
    /// Physical lines the partition owns (injected with the hardware bit).
    passthrough: [u64; WORDS],
    pending: [[AtomicU64; WORDS]; MAX_VCPUS],
    queued: [AtomicBool; MAX_VCPUS],
}

impl PartitionGic {
    /// The `version` virtual GIC of a partition on `cpus`, its distributor at
    /// `distributor` and (GICv3) redistributors from `redistributor_base`, owning
    /// `lines`. Routes the passthrough SPIs to the partition's first CPU; they stay
    /// disabled until the guest enables them.
    pub fn new(
        version: Version,
        distributor: PhysRange,
        redistributor_base: u64,
        cpus: &'static [usize],
        lines: Vec<Line>,
    ) -> Self {
        let (typer, iidr) = gic::distributor_identity();
        let mut passthrough = [0; WORDS];
        set_bit(&mut passthrough, VIRTUAL_TIMER);
        for line in lines.iter().filter(|l| l.kind == LineKind::Passthrough) {
            set_bit(&mut passthrough, line.intid);
            if let Some(&cpu) = cpus.first() {
                gic::set_enabled(line.intid, cpu, false);
                gic::route(line.intid, cpu);
            }
        }
        let redistributors = match version {
            Version::V3 => PhysRange::new(
                redistributor_base,
                vgic::REDISTRIBUTOR_STRIDE * cpus.len() as u64,
            ),
            Version::V2 => PhysRange::new(redistributor_base, 0),
        };
        PartitionGic {
            distributor,
            redistributors,
            cpus,
            state: Mutex::new(VirtualGic::new(version, cpus.len(), lines, typer, iidr)),
            passthrough,
            pending: [const { [const { AtomicU64::new(0) }; WORDS] }; MAX_VCPUS],
            queued: [const { AtomicBool::new(false) }; MAX_VCPUS],
        }
    }

    /// Whether `ipa` is one of the GIC's frames.
    pub fn contains(&self, ipa: u64) -> bool {
        self.distributor.contains(ipa) || self.redistributors.contains(ipa)
    }

    /// Emulates a vCPU's access at `ipa` (inside [`Self::contains`]; any vCPU may
    /// reach any redistributor, as on hardware); `x` are its general registers.
    pub fn access(
        &self,
        ipa: u64,
        access: &DataAccess,
        x: &mut [u64; 31],
    ) -> Result<(), GicRefusal> {
        let mut backend = Physical { gic: self };
        let me = crate::arch::cpu::cpu_index();
        let vcpu = self.cpus.iter().position(|&cpu| cpu == me).unwrap_or(0);
        let mut state = self.state.lock();
        let value = access.write.then(|| mmio::store_value(access, x));
        let result = if self.distributor.contains(ipa) {
            let offset = ipa - self.distributor.start;
            match value {
                Some(value) => {
                    state.write_distributor(vcpu, offset, access.size, value, &mut backend)?;
                    None
                }
                None => Some(state.read_distributor(vcpu, offset, access.size, &backend)?),
            }
        } else {
            let offset = ipa - self.redistributors.start;
            let frame = (offset / vgic::REDISTRIBUTOR_STRIDE) as usize;
            let offset = offset % vgic::REDISTRIBUTOR_STRIDE;
            match value {
                Some(value) => {
                    state.write_redistributor(frame, offset, access.size, value, &mut backend)?;
                    None
                }
                None => Some(state.read_redistributor(frame, offset, access.size, &backend)?),
            }
        };
        drop(state);
        if let Some(raw) = result
            && let Some(value) = mmio::load_result(access, raw)
        {
            x[usize::from(access.register)] = value;
        }
        Ok(())
    }

    /// Queues `intid` for `vcpu` and kicks the vCPU's CPU if it is not this one.
    pub fn raise(&self, intid: u32, vcpu: usize) {
        let (Some(words), Some(&cpu)) = (self.pending.get(vcpu), self.cpus.get(vcpu)) else {
            return;
        };
        words[(intid / 64) as usize % WORDS].fetch_or(1 << (intid % 64), Ordering::AcqRel);
        self.queued[vcpu].store(true, Ordering::Release);
        if cpu != crate::arch::cpu::cpu_index() {
            gic::kick(cpu);
        }
    }

    /// An SGI vCPU `sender` sends with an `ICC_SGI1R_EL1` write of `value`.
    pub fn send_sgi(&self, sender: usize, value: u64) {
        let (intid, targets) = vgic::sgi_targets(value, sender, self.cpus.len());
        for vcpu in (0..self.cpus.len()).filter(|vcpu| targets & (1 << vcpu) != 0) {
            self.raise(intid, vcpu);
        }
    }

    /// Handles the physical interrupts that exited vCPU `vcpu`'s guest: owned lines
    /// are queued for it, the kick and maintenance interrupts only end (the
    /// pending set is looked at before the next entry anyway).
    pub fn take_interrupts(&self, vcpu: usize) {
        loop {
            let acknowledged = gic::acknowledge();
            let intid = gic::interrupt_id(acknowledged);
            if intid >= gic::SPURIOUS {
                break;
            }
            gic::drop_priority(acknowledged);
            if has_bit(&self.passthrough, intid) {
                self.raise(intid, vcpu);
                continue;
            }
            if intid != gic::KICK_SGI && intid != gic::MAINTENANCE_PPI {
                defmt::warn!("interrupt {=u32} is not the partition's; ignored", intid);
            }
            gic::deactivate(acknowledged);
        }
    }

    /// vCPU `vcpu`'s queue, looked up once for the vCPU's whole run: it is flushed
    /// before every entry. `None` past the vCPUs the GIC has room for.
    pub fn queue(&self, vcpu: usize) -> Option<VcpuQueue<'_>> {
        let queued = self.queued.get(vcpu)?;
        Some(VcpuQueue {
            queued,
            gic: Some((self, vcpu)),
        })
    }

    /// The part of [`VcpuQueue::flush`] that runs when something was queued.
    #[inline(never)]
    fn flush_queued(&self, vcpu: usize) {
        let state = self.state.lock();
        let count = lr::count();
        let mut empty = lr::empty() & ((1 << count) - 1);
        let mut left_over = false;
        for (word, pending) in self.pending[vcpu].iter().enumerate() {
            let mut bits = pending.swap(0, Ordering::AcqRel);
            while bits != 0 {
                let bit = bits.trailing_zeros();
                bits &= bits - 1;
                let intid = word as u32 * 64 + bit;
                let physical = has_bit(&self.passthrough, intid);
                if !physical && !state.enabled(intid, vcpu) {
                    // Stays pending until the guest enables it.
                    pending.fetch_or(1 << bit, Ordering::AcqRel);
                    self.queued[vcpu].store(true, Ordering::Release);
                    continue;
                }
                if let Some(n) = live_register_holding(intid, count, empty) {
                    let value = lr::read(n);
                    // An active virtual interrupt raised again becomes active and
                    // pending; a pending one stays so (raised once).
                    if value & LR_HW == 0 && value & LR_STATE_ACTIVE != 0 {
                        lr::write(n, value | LR_STATE_PENDING);
                    }
                    continue;
                }
                if empty == 0 {
                    pending.fetch_or(1 << bit, Ordering::AcqRel);
                    left_over = true;
                    continue;
                }
                let n = empty.trailing_zeros() as usize;
                empty &= empty - 1;
                let priority = state.priority(intid, vcpu);
                lr::write(n, vgic::list_register(intid, physical, priority));
            }
        }
        if left_over {
            self.queued[vcpu].store(true, Ordering::Release);
        }
        lr::set_control(if left_over { HCR_EN | HCR_UIE } else { HCR_EN });
    }

    /// Disables the partition's physical lines (it has stopped).
    pub fn quiesce(&self) {
        let state = self.state.lock();
        for line in state.lines() {
            if line.kind == LineKind::Passthrough
                && let Some(&cpu) = self.cpus.first()
            {
                gic::set_enabled(line.intid, cpu, false);
            }
        }
    }

    /// Kicks every CPU of the partition but this one.
    pub fn kick_all(&self) {
        let me = crate::arch::cpu::cpu_index();
        for &cpu in self.cpus.iter().filter(|&&cpu| cpu != me) {
            gic::kick(cpu);
        }
    }
}

/// The list register holding `intid`, among those not in `empty`.
fn live_register_holding(intid: u32, count: usize, empty: u64) -> Option<usize> {
    (0..count)
        .filter(|n| empty & (1 << n) == 0)
        .find(|&n| vgic::list_register_intid(lr::read(n)) == intid)
}

fn set_bit(words: &mut [u64; WORDS], intid: u32) {
    if let Some(word) = words.get_mut((intid / 64) as usize) {
        *word |= 1 << (intid % 64);
    }
}

fn has_bit(words: &[u64; WORDS], intid: u32) -> bool {
    words
        .get((intid / 64) as usize)
        .is_some_and(|word| word & (1 << (intid % 64)) != 0)
}

/// The physical GIC as the emulation sees it, for one partition.
struct Physical<'a> {
    gic: &'a PartitionGic,
}

impl Physical<'_> {
    fn cpu(&self, vcpu: usize) -> Option<usize> {
        self.gic.cpus.get(vcpu).copied()
    }
}

impl Backend for Physical<'_> {
    fn line(&mut self, intid: u32, vcpu: usize, op: LineOp) {
        let Some(cpu) = self.cpu(vcpu) else {
            return;
        };
        match op {
            LineOp::Enable(enabled) => gic::set_enabled(intid, cpu, enabled),
            LineOp::Pend(pending) => gic::set_pending(intid, cpu, pending),
            LineOp::Activate(active) => gic::set_active(intid, cpu, active),
            LineOp::Edge(edge) => gic::set_edge(intid, edge),
            LineOp::Route => gic::route(intid, cpu),
        }
    }

    fn pending(&self, intid: u32, vcpu: usize) -> bool {
        self.cpu(vcpu)
            .is_some_and(|cpu| gic::is_pending(intid, cpu))
    }

    fn active(&self, intid: u32, vcpu: usize) -> bool {
        self.cpu(vcpu).is_some_and(|cpu| gic::is_active(intid, cpu))
    }

    fn inject(&mut self, intid: u32, vcpu: usize) {
        if intid < FIRST_SPI || !has_bit(&self.gic.passthrough, intid) {
            self.gic.raise(intid, vcpu);
        }
    }
}

/// Readies this CPU's virtual CPU interface for a new vCPU: empty list registers,
/// the guest's interface state at reset, virtual interrupts on.
pub fn enter() {
    for n in 0..lr::count() {
        lr::write(n, 0);
    }
    lr::set_vm_control(0);
    lr::set_control(HCR_EN);
}

/// Leaves this CPU's virtual CPU interface clean after a vCPU stopped: physical
/// lines still in a list register are deactivated, the virtual timer's PPI is
/// disabled, and virtual interrupts are off.
pub fn leave() {
    let cpu = crate::arch::cpu::cpu_index();
    for n in 0..lr::count() {
        let value = lr::read(n);
        if value & LR_HW != 0 && vgic::list_register_live(value) {
            gic::deactivate(((value >> 32) & 0x1fff) as u32);
        }
        lr::write(n, 0);
    }
    gic::set_enabled(VIRTUAL_TIMER, cpu, false);
    lr::set_control(0);
}
