//! Partitions at run time: each vCPU pinned to its own physical CPU, entered
//! through the world switch, and every exit sent by one dispatcher to a small
//! handler named after what the guest did.
//!
//! The boot CPU builds the partitions, publishes them, and hands each partition's
//! first vCPU to the partition's first CPU through that CPU's mailbox. A vCPU runs
//! until it turns itself off (`CPU_OFF`) or its partition stops (`SYSTEM_OFF`,
//! `SYSTEM_RESET`, or an exit Transom cannot handle); the boot CPU ends the run when
//! every started partition has stopped.

use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ops::ControlFlow;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use spin::{Mutex, Once};
use transom_boards::PhysRange;
use transom_vmm_core::esr::{DataAccess, Esr, ExceptionClass};
use transom_vmm_core::mmio;
use transom_vmm_core::psci::{self, Action, VcpuState};
use transom_vmm_core::verdict::Verdict;
use transom_vmm_core::vpl011::VirtualPl011;
use transom_vmm_core::width_probe::WidthProbe;
use transom_vmm_core::{inject, inject::Injection};

use crate::arch::guest::{self, GuestContext, Next};
use crate::arch::vectors::VectorKind;
use crate::arch::{self, MAX_CPUS};
use crate::guest_load::Prepared;
use crate::stage2::PartitionStage2;
use crate::vgic::{PartitionGic, VcpuQueue};

/// The most vCPUs a partition has.
pub const MAX_VCPUS: usize = MAX_CPUS;

/// A partition as its vCPUs share it.
pub struct Partition {
    /// Its stage 2 and windows.
    pub stage2: PartitionStage2,
    /// The physical CPU of each vCPU, from the board table.
    pub cpus: &'static [usize],
    /// The virtual PL011's exact IPA range, if the partition has one.
    pub vuart_range: Option<PhysRange>,
    /// The virtual GIC, where the machine has one guests can use. Boxed: it is 1.3 KiB, which
    /// the boot would otherwise move three times.
    pub gic: Option<Box<PartitionGic>>,
    /// The width probe's IPA range, with `transom.width-probe`.
    pub width_probe: Option<PhysRange>,
    vuart: Mutex<VirtualPl011>,
    probe: Mutex<WidthProbe>,
    vcpus: [AtomicU8; MAX_VCPUS],
    stopped: AtomicBool,
    failed: AtomicBool,
    /// Each vCPU's trapped-access counters (reported when the partition stops).
    counts: [AccessCounts; MAX_VCPUS],
}

/// Trapped accesses one vCPU handled. Only that vCPU writes them (see [`count`]);
/// they are atomic so the vCPU that stops the partition can read them.
#[derive(Default)]
struct AccessCounts {
    /// To the virtual GIC.
    gic: AtomicU64,
    /// Forwarded to a device.
    forwarded: AtomicU64,
    /// To the virtual PL011.
    vuart: AtomicU64,
}

/// Adds one to a counter of the running vCPU's [`AccessCounts`]. Its only writer is
/// this CPU, so a plain load and store do (no read-modify-write).
#[inline]
fn count(counter: &AtomicU64) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

impl Partition {
    /// A partition over `stage2`, its vCPUs on `cpus`, with a virtual PL011 at
    /// `vuart_range` (if any), a virtual GIC (if the machine's is a GICv3) and the
    /// width probe at `width_probe` (if any: never mapped in its stage 2, so every
    /// access traps).
    pub fn new(
        stage2: PartitionStage2,
        cpus: &'static [usize],
        vuart_range: Option<PhysRange>,
        gic: Option<Box<PartitionGic>>,
        width_probe: Option<PhysRange>,
    ) -> Self {
        let frame = vuart_range.map_or(0, |range| range.size());
        Partition {
            stage2,
            cpus,
            vuart_range,
            gic,
            width_probe,
            vuart: Mutex::new(VirtualPl011::new(frame)),
            probe: Mutex::new(WidthProbe::new()),
            vcpus: [const { AtomicU8::new(STATE_OFF) }; MAX_VCPUS],
            stopped: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            counts: Default::default(),
        }
    }

    fn name(&self) -> &'static str {
        self.stage2.name
    }

    /// Whether vCPU 0, once posted, has entered the guest, or the partition has
    /// stopped.
    fn has_entered_or_stopped(&self) -> bool {
        psci::Partition::state(self, 0) != VcpuState::OnPending
            || self.stopped.load(Ordering::Acquire)
    }

    fn set_state(&self, vcpu: usize, state: VcpuState) {
        self.vcpus[vcpu].store(encode(state), Ordering::Release);
    }

    /// Stops the partition; `failed` if it stopped on an error.
    fn stop(&self, failed: bool) {
        if failed {
            self.failed.store(true, Ordering::Release);
        }
        self.flush_console();
        if !self.stopped.swap(true, Ordering::AcqRel) {
            let total = |counter: fn(&AccessCounts) -> &AtomicU64| -> u64 {
                let counts = self.counts.iter();
                counts.map(|c| counter(c).load(Ordering::Relaxed)).sum()
            };
            let gic = total(|counts| &counts.gic);
            let forwarded = total(|counts| &counts.forwarded);
            let vuart = total(|counts| &counts.vuart);
            defmt::info!(
                "partition {=str}: {=u64} trapped accesses ({=u64} to the virtual GIC, {=u64} forwarded to devices, {=u64} to the virtual UART)",
                self.name(),
                gic + forwarded + vuart,
                gic,
                forwarded,
                vuart
            );
        }
        if let Some(gic) = &self.gic {
            gic.quiesce();
            // Siblings running their guest see `stopped` at their next exit.
            gic.kick_all();
        }
        // The boot CPU waits for every partition to stop.
        wake(0);
    }

    fn flush_console(&self) {
        let name = self.name();
        self.vuart.lock().flush(|line| print_line(name, line));
    }
}

impl psci::Partition for Partition {
    fn vcpu_by_mpidr(&self, mpidr: u64) -> Option<usize> {
        let vcpu = usize::try_from(mpidr).ok()?;
        (vcpu < self.cpus.len()).then_some(vcpu)
    }

    fn state(&self, vcpu: usize) -> VcpuState {
        decode(self.vcpus[vcpu].load(Ordering::Acquire))
    }
}

const STATE_OFF: u8 = 0;
const STATE_PENDING: u8 = 1;
const STATE_ON: u8 = 2;

fn encode(state: VcpuState) -> u8 {
    match state {
        VcpuState::Off => STATE_OFF,
        VcpuState::OnPending => STATE_PENDING,
        VcpuState::On => STATE_ON,
    }
}

fn decode(raw: u8) -> VcpuState {
    match raw {
        STATE_PENDING => VcpuState::OnPending,
        STATE_ON => VcpuState::On,
        _ => VcpuState::Off,
    }
}

/// What a physical CPU is asked to run.
#[derive(Clone, Copy)]
struct Assignment {
    partition: usize,
    vcpu: usize,
    entry: u64,
    x0: u64,
    x1: u64,
    /// Whether the boot CPU waits for this vCPU's first entry ([`launch`]).
    announce: bool,
}

static PARTITIONS: Once<Vec<Partition>> = Once::new();
static MAILBOX: [Mutex<Option<Assignment>>; MAX_CPUS] = [const { Mutex::new(None) }; MAX_CPUS];

/// How a vCPU is started: its entry point, x0 (the device tree) and x1 (a
/// Transom-native guest's boot-info page; 0 for Linux, as its booting document
/// requires).
#[derive(Clone, Copy)]
pub struct Start {
    /// The partition's index in the list given to [`launch`].
    pub partition: usize,
    /// The entry IPA.
    pub entry: u64,
    /// x0 at entry.
    pub x0: u64,
    /// x1 at entry.
    pub x1: u64,
}

/// Publishes `partitions`, then starts each guest in `guests` in turn: copies it
/// into its partition's RAM ([`Prepared::place`]), starts its vCPU 0 on the
/// partition's first CPU and waits until it has entered its guest (or stopped)
/// before placing the next. Waits on the boot CPU until every started partition
/// has stopped.
///
/// A guest starts without waiting for the copies of the guests after it. Waiting
/// for each entry makes that hold where CPUs take turns too (QEMU's TCG without
/// multi-threading, as under `-icount`), where the boot CPU would otherwise run on
/// through every copy before the first guest runs.
pub fn launch(partitions: Vec<Partition>, guests: &[Prepared]) -> Verdict {
    let partitions = PARTITIONS.call_once(|| partitions);
    // Every partition's CPU is checked before any starts.
    for guest in guests {
        let partition = &partitions[guest.start.partition];
        let Some(&cpu) = partition.cpus.first() else {
            defmt::error!("partition {=str} has no CPU", partition.name());
            return Verdict::TestFailure;
        };
        if !crate::smp::is_online(cpu) {
            defmt::error!(
                "partition {=str}: its CPU {=usize} is not online",
                partition.name(),
                cpu
            );
            return Verdict::TestFailure;
        }
    }
    for guest in guests {
        let start = guest.start;
        let partition = &partitions[start.partition];
        let cpu = partition.cpus[0];
        guest.place();
        defmt::info!(
            "partition {=str}: vCPU 0 on CPU {=usize}, entry {=u64:#x}, x0 {=u64:#x}",
            partition.name(),
            cpu,
            start.entry,
            start.x0
        );
        partition.set_state(0, VcpuState::OnPending);
        post(
            cpu,
            Assignment {
                partition: start.partition,
                vcpu: 0,
                entry: start.entry,
                x0: start.x0,
                x1: start.x1,
                announce: true,
            },
        );
        // The boot log, held until now (`log`), goes out once every started
        // partition has entered its guest or stopped. Sending it is over 50 ms of
        // UART time at 115,200 baud, and the logger is taken for each frame sent:
        // a partition's CPU that logged on its way in would wait for the UART.
        // Each vCPU 0 wakes this CPU as it enters (`run`), and a partition that
        // stops wakes it too. Nothing on that way waits, so the wait ends; a fault
        // on it ends the run, which sends the log.
        while !partition.has_entered_or_stopped() {
            idle();
        }
    }
    crate::log::release_boot_log();
    loop {
        let started = guests
            .iter()
            .map(|guest| &partitions[guest.start.partition]);
        if started
            .clone()
            .all(|partition| partition.stopped.load(Ordering::Acquire))
        {
            let failed = started
                .clone()
                .filter(|p| p.failed.load(Ordering::Acquire))
                .count();
            return if failed == 0 {
                defmt::info!("every partition has stopped");
                Verdict::Pass
            } else {
                defmt::error!("{=usize} partitions stopped on an error", failed);
                Verdict::TestFailure
            };
        }
        idle();
    }
}

fn post(cpu: usize, assignment: Assignment) {
    *MAILBOX[cpu].lock() = Some(assignment);
    wake(cpu);
}

/// Waits until another CPU [`wake`]s this one (or for less: callers check again).
/// With a GICv3 the CPU waits in `WFI` for the kick SGI: QEMU's TCG halts a CPU in
/// `WFI` but keeps one in a `WFE` loop running, and running idle CPUs slow down
/// every broadcast TLB maintenance of the partitions' guests by an order of
/// magnitude. Without one, `WFE` and `SEV`.
fn idle() {
    if arch::gic::present() {
        arch::cpu::wait_for_interrupt();
        arch::gic::drain();
    } else {
        arch::cpu::wait_for_event();
    }
}

/// Wakes CPU `cpu` from [`idle`].
fn wake(cpu: usize) {
    if arch::gic::present() {
        if cpu == arch::cpu::cpu_index() {
            return;
        }
        arch::gic::kick(cpu);
    } else {
        arch::cpu::send_event();
    }
}

/// A secondary CPU's life: wait for a vCPU to run, run it, wait again.
pub fn serve(cpu: usize) -> ! {
    loop {
        let assignment = MAILBOX[cpu].lock().take();
        match assignment {
            Some(assignment) => run(assignment),
            None => idle(),
        }
    }
}

/// What the dispatcher decided.
enum Flow {
    /// Enter the guest again.
    Resume,
    /// Enter the guest again; the handler wrote none of x19 to x29
    /// ([`Next::EnterCalleeSavedIntact`]). Only the hot handlers, which know
    /// which registers they wrote, say so.
    ResumeCalleeSavedIntact,
    /// This vCPU is off.
    Off,
}

/// The vCPU an exit came from, as its handlers need it.
struct Vcpu<'a> {
    /// Its partition.
    partition: &'a Partition,
    /// The partition's index in [`PARTITIONS`].
    partition_index: usize,
    /// The vCPU's index in its partition.
    index: usize,
    /// Its trapped-access counters.
    counts: &'a AccessCounts,
    /// What its partition's virtual GIC queues for it.
    queue: VcpuQueue<'a>,
}

fn run(assignment: Assignment) {
    let Some(partitions) = PARTITIONS.get() else {
        return;
    };
    let partition = &partitions[assignment.partition];
    let vcpu = Vcpu {
        partition,
        partition_index: assignment.partition,
        index: assignment.vcpu,
        counts: &partition.counts[assignment.vcpu],
        queue: partition
            .gic
            .as_ref()
            .and_then(|gic| gic.queue(assignment.vcpu))
            .unwrap_or_else(VcpuQueue::without_gic),
    };
    let mut context = GuestContext {
        elr: assignment.entry,
        spsr: guest::SPSR_EL1H_MASKED,
        ..GuestContext::default()
    };
    context.x[0] = assignment.x0;
    context.x[1] = assignment.x1;
    guest::enter_vcpu(partition.stage2.vttbr, partition.stage2.vtcr, vcpu.index);
    if partition.gic.is_some() {
        crate::vgic::enter();
    }
    partition.set_state(vcpu.index, VcpuState::On);
    if assignment.announce {
        wake(0);
    }
    if before_entry(&vcpu).is_continue() {
        guest::run(&mut context, |context, kind| {
            handle_exit(&vcpu, kind, context)
        });
    }
    partition.set_state(vcpu.index, VcpuState::Off);
    if partition.gic.is_some() {
        crate::vgic::leave();
    }
    guest::leave_partition();
}

/// Handles one exit and prepares the next entry, or ends the vCPU's loop.
fn handle_exit(vcpu: &Vcpu, kind: VectorKind, context: &mut GuestContext) -> Next {
    let next = match dispatch(vcpu, kind, context) {
        Flow::Resume => Next::Enter,
        Flow::ResumeCalleeSavedIntact => Next::EnterCalleeSavedIntact,
        Flow::Off => return Next::Leave,
    };
    match before_entry(vcpu) {
        ControlFlow::Continue(()) => next,
        ControlFlow::Break(()) => Next::Leave,
    }
}

/// What precedes every entry into the guest: the loop ends if the partition has
/// stopped; otherwise the virtual interrupts queued for the vCPU go into its list
/// registers. It writes no guest register.
#[inline]
fn before_entry(vcpu: &Vcpu) -> ControlFlow<()> {
    let partition = vcpu.partition;
    // Relaxed: nothing the stopping CPU wrote is read after this.
    if partition.stopped.load(Ordering::Relaxed) {
        return ControlFlow::Break(());
    }
    vcpu.queue.flush();
    ControlFlow::Continue(())
}

/// Sends an exit to its handler.
#[inline]
fn dispatch(vcpu: &Vcpu, kind: VectorKind, context: &mut GuestContext) -> Flow {
    match kind {
        VectorKind::LowerSync => {
            let esr = Esr(context.esr);
            // The two frequent exits are tested here; the rest go through a second
            // dispatcher out of line, so the compiler cannot fold all classes into
            // one compare chain that tests data aborts last.
            match esr.class() {
                ExceptionClass::DataAbortLower => data_abort(vcpu, esr, context),
                ExceptionClass::Hvc64 => hypercall(vcpu, context),
                _ => other_synchronous(vcpu, esr, context),
            }
        }
        VectorKind::LowerIrq => interrupt(vcpu),
        _ => unhandled(vcpu, kind, context),
    }
}

/// The less frequent synchronous exits.
#[inline(never)]
fn other_synchronous(vcpu: &Vcpu, esr: Esr, context: &mut GuestContext) -> Flow {
    match esr.class() {
        ExceptionClass::Smc64 => secure_monitor_call(vcpu, context),
        ExceptionClass::WfiWfe => wait_for_interrupt(context),
        ExceptionClass::SysReg => system_register(vcpu, context),
        _ => unhandled(vcpu, VectorKind::LowerSync, context),
    }
}

/// A stage-2 data abort: a trapped window (forwarded with the guest's exact
/// width), or else an emulated device or a refused access. Trapped windows are
/// looked at first, as the most frequent; none overlaps the others (the board
/// table never grants the console or a GIC frame: rules 7 and 16).
#[inline]
fn data_abort(vcpu: &Vcpu, esr: Esr, context: &mut GuestContext) -> Flow {
    let ipa = guest::exit_fault_ipa();
    let Some(window) = vcpu.partition.stage2.space.trapped_window(ipa) else {
        return emulated_access(vcpu, ipa, esr, context);
    };
    match mmio::check(Some(window), ipa, data_access(esr)) {
        Ok(access) => forward(vcpu, ipa, access, context),
        Err(refusal) => refuse(vcpu.partition, ipa, esr, refusal, context),
    }
}

/// The access a data abort's syndrome describes, if it has one (`ISV` = 1).
#[inline]
fn data_access(esr: Esr) -> Option<DataAccess> {
    esr.abort().and_then(|abort| abort.access)
}

/// A checked access to a trapped window, done on the device with the guest's width.
#[inline]
fn forward(vcpu: &Vcpu, ipa: u64, access: DataAccess, context: &mut GuestContext) -> Flow {
    count(&vcpu.counts.forwarded);
    context.elr += 4;
    if access.write {
        let value = mmio::store_value(&access, &context.x);
        guest::mmio_write(ipa, access.size, value);
        return Flow::ResumeCalleeSavedIntact;
    }
    let raw = guest::mmio_read(ipa, access.size);
    let value = mmio::zero_extended_load_value(&access, raw);
    let register = usize::from(access.register);
    match context.x.get_mut(register) {
        // x19 to x30: the full reload puts the value in the register.
        Some(slot) if register >= 19 => {
            *slot = value;
            Flow::Resume
        }
        Some(slot) => {
            *slot = value;
            Flow::ResumeCalleeSavedIntact
        }
        // Register 31 is XZR here: the value is dropped.
        None => Flow::ResumeCalleeSavedIntact,
    }
}

/// An abort outside every trapped window: the virtual PL011, the virtual GIC, the
/// width probe, or a refused access.
#[inline(never)]
fn emulated_access(vcpu: &Vcpu, ipa: u64, esr: Esr, context: &mut GuestContext) -> Flow {
    let partition = vcpu.partition;
    let access = data_access(esr);
    if let Some(range) = partition.vuart_range.filter(|range| range.contains(ipa)) {
        return virtual_uart(vcpu, range, ipa, access, context);
    }
    if let Some(gic) = partition.gic.as_ref().filter(|gic| gic.contains(ipa)) {
        return gic_access(vcpu, gic, ipa, access, context);
    }
    if let Some(range) = partition.width_probe.filter(|range| range.contains(ipa)) {
        return width_probe(partition, range, ipa, access, context);
    }
    match mmio::check(None, ipa, access) {
        Ok(access) => forward(vcpu, ipa, access, context),
        Err(refusal) => refuse(partition, ipa, esr, refusal, context),
    }
}

/// A trapped access that may not reach the device: logged, and an abort injected.
#[cold]
#[inline(never)]
fn refuse(
    partition: &Partition,
    ipa: u64,
    esr: Esr,
    refusal: mmio::Refusal,
    context: &mut GuestContext,
) -> Flow {
    let access = data_access(esr);
    if access.is_none() {
        name_unsyndromed_instruction(partition, ipa, context);
    }
    let write = access.is_some_and(|access| access.write);
    defmt::warn!(
        "partition {=str}: {=str} at IPA {=u64:#x} from PC {=u64:#x} refused ({}): abort injected",
        partition.name(),
        if write { "write" } else { "read" },
        ipa,
        context.elr,
        defmt::Display2Format(&refusal)
    );
    inject_or_stop(partition, inject::data_abort(context.spsr, write), context)
}

/// Logs the instruction behind a data abort without a syndrome (ISV = 0), which
/// Transom refuses rather than decodes: its encoding and what kind of load or
/// store it is, read through the guest's own translation.
#[cold]
#[inline(never)]
fn name_unsyndromed_instruction(partition: &Partition, ipa: u64, context: &GuestContext) {
    match guest::guest_instruction(partition.stage2.ram, context.elr) {
        Some(word) => defmt::warn!(
            "partition {=str}: access to IPA {=u64:#x} without a syndrome (ISV = 0): the instruction at PC {=u64:#x} is {=u32:#010x}, {}, which Transom does not emulate",
            partition.name(),
            ipa,
            context.elr,
            word,
            defmt::Display2Format(&transom_vmm_core::insn::LoadStore::of(word))
        ),
        None => defmt::warn!(
            "partition {=str}: access to IPA {=u64:#x} without a syndrome (ISV = 0) from PC {=u64:#x}, which does not translate to the partition's RAM",
            partition.name(),
            ipa,
            context.elr
        ),
    }
}

/// An access to the virtual GIC's distributor or a redistributor.
#[inline(never)]
fn gic_access(
    vcpu: &Vcpu,
    gic: &PartitionGic,
    ipa: u64,
    access: Option<DataAccess>,
    context: &mut GuestContext,
) -> Flow {
    let partition = vcpu.partition;
    let result = match &access {
        Some(access) => gic.access(ipa, access, &mut context.x).is_ok(),
        None => false,
    };
    if result {
        count(&vcpu.counts.gic);
        context.elr += 4;
        return Flow::Resume;
    }
    let write = access.is_some_and(|access| access.write);
    defmt::warn!(
        "partition {=str}: {=str} of the virtual GIC at IPA {=u64:#x} from PC {=u64:#x} refused (width or syndrome): abort injected",
        partition.name(),
        if write { "write" } else { "read" },
        ipa,
        context.elr
    );
    inject_or_stop(partition, inject::data_abort(context.spsr, write), context)
}

/// A physical interrupt exited the guest: the virtual GIC takes it.
#[inline(never)]
fn interrupt(vcpu: &Vcpu) -> Flow {
    if let Some(gic) = &vcpu.partition.gic {
        gic.take_interrupts(vcpu.index);
    }
    Flow::Resume
}

/// An access to the virtual PL011.
#[inline(never)]
fn virtual_uart(
    vcpu: &Vcpu,
    range: PhysRange,
    ipa: u64,
    access: Option<DataAccess>,
    context: &mut GuestContext,
) -> Flow {
    let partition = vcpu.partition;
    // The PL011's registers take 8, 16 and 32-bit accesses, aligned.
    let Some(access) =
        access.filter(|access| access.size <= 4 && ipa.is_multiple_of(u64::from(access.size)))
    else {
        let write = access.is_some_and(|access| access.write);
        return inject_or_stop(partition, inject::data_abort(context.spsr, write), context);
    };
    count(&vcpu.counts.vuart);
    let offset = ipa - range.start;
    let name = partition.name();
    let mut uart = partition.vuart.lock();
    if access.write {
        let value = mmio::store_value(&access, &context.x) as u32;
        uart.write(offset, value, |line| print_line(name, line));
    } else if let Some(value) = mmio::load_result(&access, u64::from(uart.read(offset))) {
        context.x[usize::from(access.register)] = value;
    }
    context.elr += 4;
    Flow::Resume
}

/// An access to the width probe: answered with the width and offset it came with
/// (`transom_vmm_core::width_probe`), one log line each; any other width aborts.
#[inline(never)]
fn width_probe(
    partition: &Partition,
    range: PhysRange,
    ipa: u64,
    access: Option<DataAccess>,
    context: &mut GuestContext,
) -> Flow {
    let checked = access.map(|access| (access, WidthProbe::check(ipa - range.start, access.size)));
    let Some((access, Ok(probed))) = checked else {
        let write = access.is_some_and(|access| access.write);
        defmt::warn!(
            "width-probe {=str}: {=str} at IPA {=u64:#x} from PC {=u64:#x} refused: abort injected",
            partition.name(),
            if write { "write" } else { "read" },
            ipa,
            context.elr
        );
        return inject_or_stop(partition, inject::data_abort(context.spsr, write), context);
    };
    let mut probe = partition.probe.lock();
    let value = if access.write {
        let value = mmio::store_value(&access, &context.x);
        probe.write(probed, value);
        value
    } else {
        let value = probe.read(probed);
        if let Some(result) = mmio::load_result(&access, value) {
            context.x[usize::from(access.register)] = result;
        }
        value
    };
    defmt::info!(
        "width-probe {=str}: {=str} {=u8} bytes at offset {=u64:#x} value {=u64:#x}",
        partition.name(),
        if access.write { "write" } else { "read" },
        probed.size,
        probed.offset,
        value
    );
    context.elr += 4;
    Flow::Resume
}

fn print_line(partition: &str, line: &[u8]) {
    match core::str::from_utf8(line) {
        Ok(text) => defmt::info!("[{=str}] {=str}", partition, text),
        Err(_) => defmt::info!("[{=str}] {=[u8]:a}", partition, line),
    }
}

/// `HVC`: PSCI (and, later, Transom's own calls). `ELR_EL2` already points past the
/// `HVC` (Arm ARM D1.10.2: the preferred return address of an HVC is the next
/// instruction).
#[inline]
fn hypercall(vcpu: &Vcpu, context: &mut GuestContext) -> Flow {
    power_call(vcpu, context)
}

/// `SMC`, trapped by `HCR_EL2.TSC`: the preferred return address is the `SMC`
/// itself, so the PC moves on by one instruction; then as `HVC`.
#[inline(never)]
fn secure_monitor_call(vcpu: &Vcpu, context: &mut GuestContext) -> Flow {
    context.elr += 4;
    power_call(vcpu, context)
}

// Always inlined: the calls that only return a value are the hot path of `HVC`.
#[inline(always)]
fn power_call(vcpu: &Vcpu, context: &mut GuestContext) -> Flow {
    let x = [context.x[0], context.x[1], context.x[2], context.x[3]];
    match psci::call(x, vcpu.partition) {
        Action::Return(value) => {
            context.x[0] = value as u64;
            Flow::ResumeCalleeSavedIntact
        }
        action => power_state_change(vcpu, action, context),
    }
}

/// A PSCI call that starts, stops or powers off vCPUs: rare, so kept out of the
/// path of the calls that only return a value.
#[inline(never)]
fn power_state_change(vcpu: &Vcpu, action: Action, context: &mut GuestContext) -> Flow {
    let partition = vcpu.partition;
    match action {
        Action::Return(value) => {
            context.x[0] = value as u64;
            Flow::Resume
        }
        Action::CpuOn {
            vcpu: target,
            entry,
            context_id,
        } => {
            let cpu = partition.cpus[target];
            partition.set_state(target, VcpuState::OnPending);
            post(
                cpu,
                Assignment {
                    partition: vcpu.partition_index,
                    vcpu: target,
                    entry,
                    x0: context_id,
                    x1: 0,
                    announce: false,
                },
            );
            defmt::info!(
                "partition {=str}: PSCI CPU_ON vCPU {=usize} on CPU {=usize} at {=u64:#x}",
                partition.name(),
                target,
                cpu,
                entry
            );
            context.x[0] = psci::SUCCESS as u64;
            Flow::Resume
        }
        Action::CpuOff => Flow::Off,
        Action::SystemOff => {
            defmt::info!(
                "partition {=str}: powered off (PSCI SYSTEM_OFF)",
                partition.name()
            );
            partition.stop(false);
            Flow::Off
        }
        Action::SystemReset => {
            defmt::info!(
                "partition {=str}: asked for a reset (PSCI SYSTEM_RESET); stopped",
                partition.name()
            );
            partition.stop(false);
            Flow::Off
        }
    }
}

/// A trapped `WFI`/`WFE`: nothing to wait for without a virtual GIC yet; resume
/// after it.
fn wait_for_interrupt(context: &mut GuestContext) -> Flow {
    context.elr += 4;
    Flow::Resume
}

/// `ISS` of an `MSR ICC_SGI1R_EL1` or `ICC_ASGI1R_EL1` (Op0 3, Op1 0, CRn 12,
/// CRm 11, Op2 5 or 6; Arm ARM D24.2.48 "ISS encoding for an exception from MSR,
/// MRS ...") without Rt and Direction; trapped by `HCR_EL2.IMO`.
const ISS_SYSREG_MASK: u32 = 0x003f_fc1e;
const ISS_ICC_SGI1R: u32 = 3 << 20 | 5 << 17 | 12 << 10 | 11 << 1;
const ISS_ICC_ASGI1R: u32 = 3 << 20 | 6 << 17 | 12 << 10 | 11 << 1;

/// A trapped system register access: a vCPU's SGI is sent; any other register is
/// not emulated, so the guest gets an undefined instruction exception, as on a CPU
/// without the register.
#[inline(never)]
fn system_register(vcpu: &Vcpu, context: &mut GuestContext) -> Flow {
    let partition = vcpu.partition;
    let iss = Esr(context.esr).iss();
    let write = iss & 1 == 0;
    let sgi = matches!(iss & ISS_SYSREG_MASK, ISS_ICC_SGI1R | ISS_ICC_ASGI1R);
    if let (true, true, Some(gic)) = (sgi, write, &partition.gic) {
        let rt = ((iss >> 5) & 0x1f) as usize;
        let value = context.x.get(rt).copied().unwrap_or(0);
        gic.send_sgi(vcpu.index, value);
        context.elr += 4;
        return Flow::Resume;
    }
    defmt::warn!(
        "partition {=str}: system register access trapped at PC {=u64:#x} (ISS {=u32:#x}): undefined instruction injected",
        partition.name(),
        context.elr,
        Esr(context.esr).iss()
    );
    inject_or_stop(partition, inject::undefined(context.spsr), context)
}

#[inline(never)]
fn inject_or_stop(
    partition: &Partition,
    injection: Result<Injection, inject::InjectError>,
    context: &mut GuestContext,
) -> Flow {
    match injection {
        Ok(injection) => {
            guest::inject(context, &injection);
            Flow::Resume
        }
        Err(error) => {
            defmt::error!(
                "partition {=str}: cannot inject an exception ({}); stopped",
                partition.name(),
                defmt::Debug2Format(&error)
            );
            partition.stop(true);
            Flow::Off
        }
    }
}

/// An exit no handler takes: the partition stops, the others carry on.
#[cold]
#[inline(never)]
fn unhandled(vcpu: &Vcpu, kind: VectorKind, context: &GuestContext) -> Flow {
    let partition = vcpu.partition;
    let esr = Esr(context.esr);
    defmt::error!(
        "partition {=str} vCPU {=usize}: {=str} at PC {=u64:#x}: ESR_EL2 {=u64:#x} {}, FAR_EL2 {=u64:#x}; partition stopped",
        partition.name(),
        vcpu.index,
        kind.name(),
        context.elr,
        context.esr,
        defmt::Display2Format(&esr),
        guest::exit_far()
    );
    partition.stop(true);
    Flow::Off
}
