//! Partitions at run time: each vCPU pinned to its own physical CPU, entered
//! through the world switch, and every exit sent by one dispatcher to a small
//! handler named after what the guest did.
//!
//! The boot CPU builds the partitions, publishes them, and hands each partition's
//! first vCPU to the partition's first CPU through that CPU's mailbox. A vCPU runs
//! until it turns itself off (`CPU_OFF`) or its partition stops (`SYSTEM_OFF`,
//! `SYSTEM_RESET`, or an exit Transom cannot handle); the boot CPU ends the run when
//! every started partition has stopped.

use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};

use spin::{Mutex, Once};
use transom_boards::PhysRange;
use transom_vmm_core::esr::{Esr, ExceptionClass};
use transom_vmm_core::mmio;
use transom_vmm_core::psci::{self, Action, VcpuState};
use transom_vmm_core::verdict::Verdict;
use transom_vmm_core::vpl011::VirtualPl011;
use transom_vmm_core::width_probe::WidthProbe;
use transom_vmm_core::{inject, inject::Injection};

use crate::arch::guest::{self, GuestContext};
use crate::arch::vectors::VectorKind;
use crate::arch::{self, MAX_CPUS};
use crate::stage2::PartitionStage2;
use crate::vgic::PartitionGic;

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
    /// The virtual GIC, where the machine has a GICv3.
    pub gic: Option<PartitionGic>,
    /// The width probe's IPA range, with `transom.width-probe`.
    pub width_probe: Option<PhysRange>,
    vuart: Mutex<VirtualPl011>,
    probe: Mutex<WidthProbe>,
    vcpus: [AtomicU8; MAX_VCPUS],
    stopped: AtomicBool,
    failed: AtomicBool,
    /// Trapped accesses handled: to the virtual GIC, forwarded to a device, to the
    /// virtual PL011 (reported when the partition stops).
    gic_accesses: AtomicU64,
    forwarded_accesses: AtomicU64,
    vuart_accesses: AtomicU64,
}

impl Partition {
    /// A partition over `stage2`, its vCPUs on `cpus`, with a virtual PL011 at
    /// `vuart_range` (if any) and a virtual GIC (if the machine's is a GICv3).
    pub fn new(
        stage2: PartitionStage2,
        cpus: &'static [usize],
        vuart_range: Option<PhysRange>,
        gic: Option<PartitionGic>,
    ) -> Self {
        let frame = vuart_range.map_or(0, |range| range.size());
        Partition {
            stage2,
            cpus,
            vuart_range,
            gic,
            width_probe: None,
            vuart: Mutex::new(VirtualPl011::new(frame)),
            probe: Mutex::new(WidthProbe::new()),
            vcpus: [const { AtomicU8::new(STATE_OFF) }; MAX_VCPUS],
            stopped: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            gic_accesses: AtomicU64::new(0),
            forwarded_accesses: AtomicU64::new(0),
            vuart_accesses: AtomicU64::new(0),
        }
    }

    /// The same partition with the width probe at `range` (never mapped in its
    /// stage 2, so every access traps).
    pub fn with_width_probe(mut self, range: PhysRange) -> Self {
        self.width_probe = Some(range);
        self
    }

    fn name(&self) -> &'static str {
        self.stage2.name
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
            let gic = self.gic_accesses.load(Ordering::Relaxed);
            let forwarded = self.forwarded_accesses.load(Ordering::Relaxed);
            let vuart = self.vuart_accesses.load(Ordering::Relaxed);
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

/// Publishes `partitions`, starts vCPU 0 of each partition in `starts` on its
/// first CPU, and waits on the boot CPU until every started partition has stopped.
pub fn launch(partitions: Vec<Partition>, starts: &[Start]) -> Verdict {
    let partitions = PARTITIONS.call_once(|| partitions);
    for start in starts {
        let partition = &partitions[start.partition];
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
            },
        );
    }
    loop {
        let started = starts.iter().map(|start| &partitions[start.partition]);
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
    /// This vCPU is off.
    Off,
}

fn run(assignment: Assignment) {
    let Some(partitions) = PARTITIONS.get() else {
        return;
    };
    let partition = &partitions[assignment.partition];
    let vcpu = assignment.vcpu;
    let mut context = GuestContext {
        elr: assignment.entry,
        spsr: guest::SPSR_EL1H_MASKED,
        ..GuestContext::default()
    };
    context.x[0] = assignment.x0;
    context.x[1] = assignment.x1;
    guest::enter_vcpu(partition.stage2.vttbr, partition.stage2.vtcr, vcpu);
    if partition.gic.is_some() {
        crate::vgic::enter();
    }
    partition.set_state(vcpu, VcpuState::On);
    while !partition.stopped.load(Ordering::Acquire) {
        if let Some(gic) = &partition.gic {
            gic.flush(vcpu);
        }
        let kind = guest::run(&mut context);
        match dispatch(partitions, assignment.partition, vcpu, kind, &mut context) {
            Flow::Resume => {}
            Flow::Off => break,
        }
    }
    partition.set_state(vcpu, VcpuState::Off);
    if partition.gic.is_some() {
        crate::vgic::leave();
    }
    guest::leave_partition();
}

/// Sends an exit to its handler.
fn dispatch(
    partitions: &[Partition],
    index: usize,
    vcpu: usize,
    kind: VectorKind,
    context: &mut GuestContext,
) -> Flow {
    let partition = &partitions[index];
    match kind {
        VectorKind::LowerSync => {
            let esr = Esr(context.esr);
            match esr.class() {
                ExceptionClass::DataAbortLower => data_abort(partition, esr, context),
                ExceptionClass::Hvc64 => hypercall(partitions, index, context),
                ExceptionClass::Smc64 => secure_monitor_call(partitions, index, context),
                ExceptionClass::WfiWfe => wait_for_interrupt(context),
                ExceptionClass::SysReg => system_register(partition, vcpu, context),
                _ => unhandled(partition, vcpu, kind, context),
            }
        }
        VectorKind::LowerIrq => interrupt(partition, vcpu),
        _ => unhandled(partition, vcpu, kind, context),
    }
}

/// A stage-2 data abort: a trapped window (forwarded with the guest's exact
/// width), the virtual PL011, the virtual GIC, or a refused access (an abort
/// injected into the guest). Trapped windows are looked at first, as the most
/// frequent; none overlaps the others (the board table never grants the console
/// or a GIC frame: rules 7 and 16).
fn data_abort(partition: &Partition, esr: Esr, context: &mut GuestContext) -> Flow {
    let ipa = context.fault_ipa();
    let access = esr.abort().and_then(|abort| abort.access);
    let window = partition.stage2.space.trapped_window(ipa);
    if window.is_none() {
        if let Some(range) = partition.vuart_range.filter(|range| range.contains(ipa)) {
            return virtual_uart(partition, range, ipa, access, context);
        }
        if let Some(gic) = partition.gic.as_ref().filter(|gic| gic.contains(ipa)) {
            return gic_access(partition, gic, ipa, access, context);
        }
        if let Some(range) = partition.width_probe.filter(|range| range.contains(ipa)) {
            return width_probe(partition, range, ipa, access, context);
        }
    }
    match mmio::check(window, ipa, access) {
        Ok(access) => {
            partition.forwarded_accesses.fetch_add(1, Ordering::Relaxed);
            if access.write {
                let value = mmio::store_value(&access, &context.x);
                guest::mmio_write(ipa, access.size, value);
            } else {
                let raw = guest::mmio_read(ipa, access.size);
                if let Some(value) = mmio::load_result(&access, raw) {
                    context.x[usize::from(access.register)] = value;
                }
            }
            context.elr += 4;
            Flow::Resume
        }
        Err(refusal) => {
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
    }
}

/// Logs the instruction behind a data abort without a syndrome (ISV = 0), which
/// Transom refuses rather than decodes: its encoding and what kind of load or
/// store it is, read through the guest's own translation.
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
fn gic_access(
    partition: &Partition,
    gic: &PartitionGic,
    ipa: u64,
    access: Option<transom_vmm_core::esr::DataAccess>,
    context: &mut GuestContext,
) -> Flow {
    let result = match &access {
        Some(access) => gic.access(ipa, access, &mut context.x).is_ok(),
        None => false,
    };
    if result {
        partition.gic_accesses.fetch_add(1, Ordering::Relaxed);
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
fn interrupt(partition: &Partition, vcpu: usize) -> Flow {
    if let Some(gic) = &partition.gic {
        gic.take_interrupts(vcpu);
    }
    Flow::Resume
}

fn virtual_uart(
    partition: &Partition,
    range: PhysRange,
    ipa: u64,
    access: Option<transom_vmm_core::esr::DataAccess>,
    context: &mut GuestContext,
) -> Flow {
    // The PL011's registers take 8, 16 and 32-bit accesses, aligned.
    let Some(access) =
        access.filter(|access| access.size <= 4 && ipa.is_multiple_of(u64::from(access.size)))
    else {
        let write = access.is_some_and(|access| access.write);
        return inject_or_stop(partition, inject::data_abort(context.spsr, write), context);
    };
    partition.vuart_accesses.fetch_add(1, Ordering::Relaxed);
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
fn width_probe(
    partition: &Partition,
    range: PhysRange,
    ipa: u64,
    access: Option<transom_vmm_core::esr::DataAccess>,
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
fn hypercall(partitions: &[Partition], index: usize, context: &mut GuestContext) -> Flow {
    power_call(partitions, index, context)
}

/// `SMC`, trapped by `HCR_EL2.TSC`: the preferred return address is the `SMC`
/// itself, so the PC moves on by one instruction; then as `HVC`.
fn secure_monitor_call(partitions: &[Partition], index: usize, context: &mut GuestContext) -> Flow {
    context.elr += 4;
    power_call(partitions, index, context)
}

fn power_call(partitions: &[Partition], index: usize, context: &mut GuestContext) -> Flow {
    let partition = &partitions[index];
    let x = [context.x[0], context.x[1], context.x[2], context.x[3]];
    match psci::call(x, partition) {
        Action::Return(value) => {
            context.x[0] = value as u64;
            Flow::Resume
        }
        action => power_state_change(partitions, index, action, context),
    }
}

/// A PSCI call that starts, stops or powers off vCPUs: rare, so kept out of the
/// path of the calls that only return a value.
#[inline(never)]
fn power_state_change(
    partitions: &[Partition],
    index: usize,
    action: Action,
    context: &mut GuestContext,
) -> Flow {
    let partition = &partitions[index];
    match action {
        Action::Return(value) => {
            context.x[0] = value as u64;
            Flow::Resume
        }
        Action::CpuOn {
            vcpu,
            entry,
            context_id,
        } => {
            let cpu = partition.cpus[vcpu];
            partition.set_state(vcpu, VcpuState::OnPending);
            post(
                cpu,
                Assignment {
                    partition: index,
                    vcpu,
                    entry,
                    x0: context_id,
                    x1: 0,
                },
            );
            defmt::info!(
                "partition {=str}: PSCI CPU_ON vCPU {=usize} on CPU {=usize} at {=u64:#x}",
                partition.name(),
                vcpu,
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
fn system_register(partition: &Partition, vcpu: usize, context: &mut GuestContext) -> Flow {
    let iss = Esr(context.esr).iss();
    let write = iss & 1 == 0;
    let sgi = matches!(iss & ISS_SYSREG_MASK, ISS_ICC_SGI1R | ISS_ICC_ASGI1R);
    if let (true, true, Some(gic)) = (sgi, write, &partition.gic) {
        let rt = ((iss >> 5) & 0x1f) as usize;
        let value = context.x.get(rt).copied().unwrap_or(0);
        gic.send_sgi(vcpu, value);
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
fn unhandled(partition: &Partition, vcpu: usize, kind: VectorKind, context: &GuestContext) -> Flow {
    let esr = Esr(context.esr);
    defmt::error!(
        "partition {=str} vCPU {=usize}: {=str} at PC {=u64:#x}: ESR_EL2 {=u64:#x} {}, FAR_EL2 {=u64:#x}; partition stopped",
        partition.name(),
        vcpu,
        kind.name(),
        context.elr,
        context.esr,
        defmt::Display2Format(&esr),
        context.far
    );
    partition.stop(true);
    Flow::Off
}
