//! The checks, in the order the guest runs them, each printing one line.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::exceptions::{self, Abort, EC_DATA_ABORT_SAME_EL};
use crate::tree::{Gic, Machine};
use crate::{boot, gic, mmio, psci, report};

/// virtio-mmio `MagicValue` at offset 0: "virt" little-endian (virtio 1.2,
/// 4.2.2).
const VIRTIO_MAGIC: u64 = 0x7472_6976;
/// `DFSC` of a synchronous external abort (Arm ARM D24.2.47, ISS encoding for a
/// data abort: 0b010000).
const DFSC_SYNC_EXTERNAL: u64 = 0x10;

/// The width probe's registers (`transom_vmm_core::width_probe`).
const PROBE_LAST_WRITE: u64 = 0xff0;
const PROBE_LAST_INFO: u64 = 0xff8;
const PROBE_INFO_WIDTH_SHIFT: u32 = 56;
const PROBE_INFO_OFFSET_MASK: u64 = 0xfff;

/// PL011 registers and bits (DDI 0183, 3.2 and 3.3.10..3.3.13): `UARTIMSC`,
/// `UARTMIS`, `UARTICR`, and the transmit interrupt's bit 5 in each.
const UART_IMSC: u64 = 0x038;
const UART_MIS: u64 = 0x040;
const UART_ICR: u64 = 0x044;
const UART_DR: u64 = 0x000;
const UART_TX: u64 = 1 << 5;

/// `CNTV_CTL_EL0.ENABLE` (Arm ARM D24.11.14).
const TIMER_ENABLE: u64 = 1;

/// What the secondary vCPU reports: its `MPIDR_EL1`, once it runs.
static SECONDARY_MPIDR: AtomicU64 = AtomicU64::new(0);
static SECONDARY_UP: AtomicBool = AtomicBool::new(false);
/// The partition's name, for the secondary's line.
static NAME: spin::Once<heapless::String<32>> = spin::Once::new();

/// Runs every check, prints `done` and powers off; `boot_info` is x1 at entry.
pub fn run(machine: &Machine<'_>, boot_info: u64) -> ! {
    let name = machine.name;
    NAME.call_once(|| heapless::String::try_from(name).unwrap_or_default());
    report!(
        "transom-test {name}: started, console {:#010x}, {}",
        machine.console,
        gic_name(machine.gic)
    );
    boot_info_page(machine, boot_info);
    exact_address(machine);
    width_probe(machine);
    neighbour_abort(machine);
    width_abort(machine);
    no_syndrome_abort(machine);
    cpu_on(machine);
    gic::init(machine.gic);
    virtual_timer(machine);
    passthrough_interrupt(machine);
    report!("transom-test {name}: done");
    psci::system_off()
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "FAILED" }
}

fn exact_address(machine: &Machine<'_>) {
    let name = machine.name;
    let Some(&transport) = machine.transports.first() else {
        report!("transom-test {name}: exact-address skipped: no virtio-mmio transport");
        return;
    };
    // SAFETY: the transport the device tree gives; MagicValue is a 32-bit
    // register.
    let magic = unsafe { mmio::read::<4>(transport) };
    report!(
        "transom-test {name}: exact-address {transport:#010x} magic {magic:#010x} {}",
        verdict(magic == VIRTIO_MAGIC)
    );
}

fn width_probe(machine: &Machine<'_>) {
    let name = machine.name;
    let Some(probe) = machine.width_probe else {
        report!("transom-test {name}: width-probe skipped: no width probe in the tree");
        return;
    };
    // Reads: every byte of the answer holds the width the probe saw (high
    // nibble) and the byte's offset (low nibble).
    let pattern = |offset: u64, size: u64| {
        (0..size).fold(0u64, |value, byte| {
            value | (((size << 4) | ((offset + byte) & 0xf)) << (8 * byte))
        })
    };
    // SAFETY: the probe's page, naturally aligned accesses of each width.
    let reads = unsafe {
        [
            (1, 0x1, mmio::read::<1>(probe + 0x1)),
            (2, 0x2, mmio::read::<2>(probe + 0x2)),
            (4, 0x4, mmio::read::<4>(probe + 0x4)),
            (8, 0x8, mmio::read::<8>(probe + 0x8)),
        ]
    };
    for (size, offset, value) in reads {
        let expected = pattern(offset, size);
        report!(
            "transom-test {name}: width-probe read {size} at {offset:#x} = {value:#x} {}",
            verdict(value == expected)
        );
    }
    let writes: [(u64, u64, u64); 4] = [
        (1, 0x11, 0xa1),
        (2, 0x12, 0xb2b2),
        (4, 0x14, 0xc4c4_c4c4),
        (8, 0x18, 0xd8d8_d8d8_d8d8_d8d8),
    ];
    for (size, offset, value) in writes {
        // SAFETY: the probe's page, naturally aligned accesses of each width.
        let (last, info) = unsafe {
            match size {
                1 => mmio::write::<1>(probe + offset, value),
                2 => mmio::write::<2>(probe + offset, value),
                4 => mmio::write::<4>(probe + offset, value),
                _ => mmio::write::<8>(probe + offset, value),
            }
            (
                mmio::read::<8>(probe + PROBE_LAST_WRITE),
                mmio::read::<8>(probe + PROBE_LAST_INFO),
            )
        };
        let seen_size = info >> PROBE_INFO_WIDTH_SHIFT;
        let seen_offset = info & PROBE_INFO_OFFSET_MASK;
        let ok = last == value && seen_size == size && seen_offset == offset;
        // Under 120 characters: the virtual PL011 breaks longer lines.
        report!(
            "transom-test {name}: width-probe write {size} at {offset:#x} = {value:#x}, probe saw {seen_size} at {seen_offset:#x} = {last:#x} {}",
            verdict(ok)
        );
    }
}

/// Reports an abort the guest expected at `address`.
fn report_abort(name: &str, check: &str, address: u64, abort: Option<Abort>) {
    let Some(abort) = abort else {
        report!("transom-test {name}: {check} {address:#010x} FAILED: no abort");
        return;
    };
    let ok = abort.class() == EC_DATA_ABORT_SAME_EL
        && abort.fault_status() == DFSC_SYNC_EXTERNAL
        && abort.far == address;
    report!(
        "transom-test {name}: {check} {address:#010x} ESR_EL1 {:#x} EC {:#x} DFSC {:#x} FAR_EL1 {:#010x} {}",
        abort.esr,
        abort.class(),
        abort.fault_status(),
        abort.far,
        verdict(ok)
    );
}

fn neighbour_abort(machine: &Machine<'_>) {
    let name = machine.name;
    let Some(neighbour) = machine.neighbour else {
        report!("transom-test {name}: neighbour-abort skipped: no neighbour= on the command line");
        return;
    };
    let abort = exceptions::expect_abort(|| {
        // SAFETY: a 32-bit read another partition's window refuses: Transom
        // injects an abort, which the guest's vector records and skips.
        unsafe { mmio::read::<4>(neighbour) };
    });
    report_abort(name, "neighbour-abort", neighbour, abort);
}

fn width_abort(machine: &Machine<'_>) {
    let name = machine.name;
    let Some(&transport) = machine.transports.first() else {
        report!("transom-test {name}: width-abort skipped: no virtio-mmio transport");
        return;
    };
    let abort = exceptions::expect_abort(|| {
        // SAFETY: a 64-bit read the window does not allow: Transom injects an
        // abort, which the guest's vector records and skips.
        unsafe { mmio::read::<8>(transport) };
    });
    report_abort(name, "width-abort", transport, abort);
}

fn no_syndrome_abort(machine: &Machine<'_>) {
    let name = machine.name;
    let Some(&transport) = machine.transports.first() else {
        report!("transom-test {name}: no-syndrome-abort skipped: no virtio-mmio transport");
        return;
    };
    let abort = exceptions::expect_abort(|| {
        // SAFETY: a load pair from the guest's own transport: the abort has no
        // instruction syndrome (Arm ARM D24.2.48, ISV = 0), so Transom injects an
        // abort, which the guest's vector records and skips.
        unsafe {
            asm!(
                "ldp {a:w}, {b:w}, [{address}]",
                address = in(reg) transport,
                a = out(reg) _,
                b = out(reg) _,
                options(nostack)
            );
        }
    });
    report_abort(name, "no-syndrome-abort", transport, abort);
}

/// The boot-info page's layout (`transom_vmm_core::guest::boot_info`, version 1).
const BOOT_INFO_MAGIC: &[u8; 8] = b"TRANSOMI";
const BOOT_INFO_HEADER: usize = 32;
const BOOT_INFO_ENTRY: usize = 96;

fn boot_info_page(machine: &Machine<'_>, address: u64) {
    let name = machine.name;
    if address == 0 {
        report!("transom-test {name}: boot-info none (x1 = 0)");
        return;
    }
    // SAFETY: Transom put the page in the guest's RAM (the last page, reserved in
    // the tree), which the identity map makes Normal memory.
    let header = unsafe { core::slice::from_raw_parts(address as *const u8, BOOT_INFO_HEADER) };
    let u32_at = |bytes: &[u8], at: usize| {
        u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
    };
    let u64_at = |bytes: &[u8], at: usize| {
        u64::from(u32_at(bytes, at)) | u64::from(u32_at(bytes, at + 4)) << 32
    };
    let count = u32_at(header, 12) as usize;
    if &header[..8] != BOOT_INFO_MAGIC
        || u32_at(header, 8) != 1
        || u32_at(header, 16) as usize != BOOT_INFO_ENTRY
        || count > (4096 - BOOT_INFO_HEADER) / BOOT_INFO_ENTRY
    {
        report!("transom-test {name}: boot-info FAILED: not a version 1 boot-info page");
        return;
    }
    // SAFETY: as above; `count` entries fit the page.
    let entries = unsafe {
        core::slice::from_raw_parts(
            (address as usize + BOOT_INFO_HEADER) as *const u8,
            count * BOOT_INFO_ENTRY,
        )
    };
    let Some(&transport) = machine.transports.first() else {
        report!("transom-test {name}: boot-info FAILED: no virtio-mmio transport");
        return;
    };
    let Some(entry) = entries
        .chunks_exact(BOOT_INFO_ENTRY)
        .find(|entry| u64_at(entry, 48) == transport)
    else {
        report!("transom-test {name}: boot-info FAILED: no window at {transport:#010x}");
        return;
    };
    let (span_start, span_end, size) = (u64_at(entry, 32), u64_at(entry, 40), u64_at(entry, 56));
    let (mode, widths, interrupt) = (u32_at(entry, 64), u32_at(entry, 68), u32_at(entry, 80));
    // Mode 2: trapped; the span is the page around the exact address.
    let ok = mode == 2 && span_start <= transport && transport + size <= span_end;
    report!(
        "transom-test {name}: boot-info {count} windows, {transport:#010x} size {size:#x} span {span_start:#010x}..{span_end:#010x} mode {mode} widths {widths:#x} INTID {interrupt} {}",
        verdict(ok)
    );
}

/// Counter ticks in `milliseconds`.
fn ticks(milliseconds: u64) -> u64 {
    let frequency: u64;
    // SAFETY: reads CNTFRQ_EL0.
    unsafe { asm!("mrs {}, cntfrq_el0", out(reg) frequency, options(nomem, nostack)) };
    frequency * milliseconds / 1000
}

fn counter() -> u64 {
    let count: u64;
    // SAFETY: reads CNTVCT_EL0.
    unsafe { asm!("isb", "mrs {}, cntvct_el0", out(reg) count, options(nomem, nostack)) };
    count
}

/// Waits up to `milliseconds` for `done`; whether it came.
fn wait_for(milliseconds: u64, done: impl Fn() -> bool) -> bool {
    let deadline = counter() + ticks(milliseconds);
    while counter() < deadline {
        if done() {
            return true;
        }
        core::hint::spin_loop();
    }
    done()
}

fn cpu_on(machine: &Machine<'_>) {
    let name = machine.name;
    let Some(&target) = machine.cpus.get(1) else {
        // One vCPU: an MPIDR that is not the partition's is refused.
        let result = psci::call(psci::CPU_ON, 1, boot::secondary_entry_address(), 0);
        report!(
            "transom-test {name}: cpu-on mpidr 0x1 (not this partition's) returned {result} {}",
            verdict(result == psci::INVALID_PARAMETERS)
        );
        return;
    };
    let result = psci::call(
        psci::CPU_ON,
        target,
        boot::secondary_entry_address(),
        boot::secondary_stack_top(),
    );
    let up = result == psci::SUCCESS && wait_for(2000, || SECONDARY_UP.load(Ordering::SeqCst));
    let off = up
        && wait_for(2000, || {
            psci::call(psci::AFFINITY_INFO, target, 0, 0) == psci::AFFINITY_OFF
        });
    let mpidr = SECONDARY_MPIDR.load(Ordering::SeqCst);
    report!(
        "transom-test {name}: cpu-on mpidr {target:#x} returned {result}, vCPU reported MPIDR_EL1 {mpidr:#x}, affinity-info off {}",
        verdict(up && off && mpidr & 0xff_00ff_ffff == target)
    );
}

/// The second vCPU: report, then `CPU_OFF`.
pub fn secondary() -> ! {
    let mpidr: u64;
    // SAFETY: reads MPIDR_EL1 (VMPIDR_EL2 as Transom set it).
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    let name = NAME.get().map_or("?", |name| name.as_str());
    report!("transom-test {name}: secondary vCPU up, MPIDR_EL1 {mpidr:#x}");
    SECONDARY_MPIDR.store(mpidr, Ordering::SeqCst);
    SECONDARY_UP.store(true, Ordering::SeqCst);
    loop {
        psci::call(psci::CPU_OFF, 0, 0, 0);
    }
}

/// vCPU 0's affinity, for routing SPIs to it.
fn own_affinity() -> u64 {
    let mpidr: u64;
    // SAFETY: reads MPIDR_EL1.
    unsafe { asm!("mrs {}, mpidr_el1", out(reg) mpidr, options(nomem, nostack)) };
    mpidr & 0xff_00ff_ffff
}

fn unmask_irqs() {
    // SAFETY: clears PSTATE.I; the vector table is installed.
    unsafe { asm!("msr daifclr, #2", "isb", options(nomem, nostack)) };
}

fn mask_irqs() {
    // SAFETY: sets PSTATE.I.
    unsafe { asm!("msr daifset, #2", "isb", options(nomem, nostack)) };
}

fn virtual_timer(machine: &Machine<'_>) {
    let name = machine.name;
    let intid = machine.virtual_timer;
    exceptions::set_virtual_timer(intid);
    gic::enable(machine.gic, intid, own_affinity());
    unmask_irqs();
    let tval = ticks(1);
    // SAFETY: programs this vCPU's virtual timer to fire in 1 ms.
    unsafe {
        asm!(
            "msr cntv_tval_el0, {tval}",
            "msr cntv_ctl_el0, {enable}",
            "isb",
            tval = in(reg) tval,
            enable = in(reg) TIMER_ENABLE,
            options(nomem, nostack),
        );
    }
    let arrived = wait_for(2000, || exceptions::interrupts_taken(intid) > 0);
    mask_irqs();
    stop_timer();
    report!(
        "transom-test {name}: virtual-timer INTID {intid} taken {} times {}",
        exceptions::interrupts_taken(intid),
        verdict(arrived)
    );
}

/// Turns the virtual timer off (from the IRQ handler: the line drops).
pub fn stop_timer() {
    // SAFETY: disables this vCPU's virtual timer.
    unsafe { asm!("msr cntv_ctl_el0, xzr", "isb", options(nomem, nostack)) };
}

/// Masks and clears the transmit interrupt of the PL011 at `base` (from the IRQ
/// handler: the line drops before the interrupt is ended).
pub fn quiet_uart(base: u64) {
    // SAFETY: IMSC and ICR of the partition's own PL011.
    unsafe {
        let mask = mmio::read::<4>(base + UART_IMSC);
        mmio::write::<4>(base + UART_IMSC, mask & !UART_TX);
        mmio::write::<4>(base + UART_ICR, UART_TX);
    }
}

fn passthrough_interrupt(machine: &Machine<'_>) {
    let name = machine.name;
    let Some((uart, intid)) = machine.passthrough_uart else {
        report!(
            "transom-test {name}: passthrough-irq skipped: no passthrough-uart= on the command line"
        );
        return;
    };
    exceptions::set_passthrough_uart(uart, intid);
    gic::enable(machine.gic, intid, own_affinity());
    // SAFETY: the partition's own PL011 (direct-mapped): clear a transmit
    // interrupt earlier output left raised, check it is quiet, unmask it.
    let quiet_before = unsafe {
        mmio::write::<4>(uart + UART_ICR, UART_TX);
        let quiet = mmio::read::<4>(uart + UART_MIS) & UART_TX == 0;
        let mask = mmio::read::<4>(uart + UART_IMSC);
        mmio::write::<4>(uart + UART_IMSC, mask | UART_TX);
        quiet
    };
    unmask_irqs();
    // One character: QEMU's PL011 raises its transmit interrupt once it is sent
    // (`hw/char/pl011.c`: `int_level |= INT_TX`).
    // SAFETY: UARTDR of the partition's own PL011.
    unsafe { mmio::write::<4>(uart + UART_DR, u64::from(b'~')) };
    let arrived = wait_for(2000, || exceptions::interrupts_taken(intid) > 0);
    mask_irqs();
    quiet_uart(uart);
    report!(
        "\ntransom-test {name}: passthrough-irq uart {uart:#010x} INTID {intid} taken {} times {}",
        exceptions::interrupts_taken(intid),
        verdict(quiet_before && arrived)
    );
}

/// The GIC kind, for the `started` line.
pub fn gic_name(gic: Gic) -> &'static str {
    match gic {
        Gic::V2 { .. } => "GICv2",
        Gic::V3 { .. } => "GICv3",
    }
}
