//! The test guest (`tests/guests/probe`) in linux-a and linux-b at once on QEMU
//! `virt` with 4 CPUs and the width probe on (`transom.width-probe`), with a GICv3
//! and with a GICv2; and in the Pi 4 table's gpio-guest on QEMU `raspi4b`, whose
//! GIC-400 the guest's CPU interface runs on through GICV. The same position-independent image runs in both partitions
//! (RAM at 0x5000_0000 and 0x6000_0000); each reads its windows from its device
//! tree and prints one line per check on its console: linux-a on its own UART1
//! (captured as QEMU's second serial), linux-b on the hypervisor's virtual PL011
//! (the `[linux-b] ...` lines of the hypervisor's log).
//!
//! Addresses, from QEMU `hw/arm/virt.c` and the board table: linux-a's
//! virtio-mmio transport 31 at 0x0a00_3e00 and linux-b's transport 30 at
//! 0x0a00_3c00 share the page 0x0a00_3000, so both windows are trapped; UART1 at
//! 0x0904_0000 raises SPI 8 (INTID 40, IHI 0069H 2.2.1: SPIs from INTID 32); the
//! virtual timer is PPI 11 (INTID 27, BSA "PPI assignments"); the width probe is
//! at the highest free page below RAM, 0x3fff_f000.

use std::path::PathBuf;

use transom_qemu::{GicVersion, Machine, RunConfig};
use transom_tests::assert_verdict;
use transom_vmm_core::guest::bundle::{BundleBuilder, EntryKind};
use transom_vmm_core::verdict::Verdict;
use xtask::boards::BoardName;
use xtask::guest_run::{RunFiles, virtual_uart_prefix};
use xtask::image;
use xtask::run::{Echo, Outcome};

/// One partition and what its guest must report.
struct Expected {
    partition: &'static str,
    /// The physical CPU of its vCPU 0.
    cpu: u32,
    /// Its console PL011 (UART1, or the virtual PL011 at UART0's address).
    console: u32,
    /// Its virtio-mmio transport's exact address.
    transport: u32,
    /// The other partition's transport, in the same page.
    neighbour: u32,
    /// Its second vCPU's physical CPU, if it has one.
    second_cpu: Option<u32>,
    /// The PL011 whose interrupt it takes, if any.
    passthrough_uart: Option<u32>,
    /// Its boot-info request: how many windows the page lists and its transport's
    /// INTID (virtio-mmio transport n raises SPI 16 + n, `hw/arm/virt.c`).
    boot_info: Option<(u32, u32)>,
}

const LINUX_A: Expected = Expected {
    partition: "linux-a",
    cpu: 1,
    console: 0x0904_0000,
    transport: 0x0a00_3e00,
    neighbour: 0x0a00_3c00,
    second_cpu: Some(3),
    passthrough_uart: Some(0x0904_0000),
    // Transport 31 and UART1; SPI 47 is INTID 79.
    boot_info: Some((2, 79)),
};

const LINUX_B: Expected = Expected {
    partition: "linux-b",
    cpu: 2,
    console: 0x0900_0000,
    transport: 0x0a00_3c00,
    neighbour: 0x0a00_3e00,
    second_cpu: None,
    passthrough_uart: None,
    boot_info: None,
};

/// virtio-mmio `MagicValue`: "virt" little-endian (virtio 1.2, 4.2.2).
const VIRTIO_MAGIC: u32 = 0x7472_6976;

/// `ESR_EL1` of the synchronous external abort Transom injects on a refused read
/// taken at EL1 (Arm ARM D24.2.47): EC 0x25 (data abort, same EL) in bits 31:26,
/// IL (bit 25) for a 32-bit instruction, WnR 0, DFSC 0x10 (synchronous external
/// abort).
const ESR_READ_ABORT: u32 = 0x9600_0010;

/// INTIDs (GIC architecture, IHI 0069H 2.2.1): the virtual timer's PPI 11 and
/// UART1's SPI 8.
const VIRTUAL_TIMER_INTID: u32 = 27;
const UART1_INTID: u32 = 40;

/// The command line each guest gets: its neighbour's transport and, for linux-a,
/// the UART whose interrupt it raises.
fn command_line(expected: &Expected) -> String {
    let mut line = format!("neighbour={:#010x}", expected.neighbour);
    if let Some(uart) = expected.passthrough_uart {
        line.push_str(&format!(" passthrough-uart={uart:#010x}"));
    }
    line
}

/// Builds the guest and boots it in both partitions on `virt` with `gic`.
fn boot(gic: GicVersion, tag: &str) -> Outcome {
    let guest = xtask::image::build_test_guest().expect("the test guest builds");
    let image = std::fs::read(&guest.image).expect("the guest image is readable");
    let mut builder = BundleBuilder::new();
    for expected in [&LINUX_A, &LINUX_B] {
        builder
            .add(expected.partition, EntryKind::Image, &image)
            .expect("a valid entry");
        builder
            .add(
                expected.partition,
                EntryKind::CommandLine,
                command_line(expected).as_bytes(),
            )
            .expect("a valid entry");
        if expected.boot_info.is_some() {
            builder
                .add(expected.partition, EntryKind::BootInfo, &[])
                .expect("a valid entry");
        }
    }
    let files = RunFiles::tagged(BoardName::QemuVirt, tag);
    let bundle: PathBuf = files.bundle.clone();
    std::fs::create_dir_all(bundle.parent().expect("a directory")).expect("bundle directory");
    std::fs::write(&bundle, builder.finish()).expect("the bundle is written");
    std::fs::create_dir_all(files.second_serial.parent().expect("a directory"))
        .expect("capture directory");

    let hypervisor = transom_tests::built(BoardName::QemuVirt);
    let machine = Machine::virt(gic, 4).expect("a valid machine");
    let mut config = RunConfig::new(&hypervisor.image);
    config.initrd = Some(bundle);
    config.second_serial = Some(files.second_serial);
    config.extra_bootargs = vec!["transom.width-probe".to_string()];
    let elf = std::fs::read(&hypervisor.elf).expect("the ELF is readable");
    xtask::run::run(
        &machine,
        &config,
        &elf,
        Some(transom_tests::BOOT_TIMEOUT),
        Echo::Quiet,
    )
    .expect("QEMU runs")
}

/// `expected`'s console: UART1's capture for linux-a, the hypervisor's
/// `[linux-b] ` lines for linux-b.
fn console(outcome: &Outcome, expected: &Expected) -> Vec<String> {
    if expected.console == 0x0904_0000 {
        return outcome.second_serial_lines();
    }
    virtual_uart_lines(outcome, expected.partition)
}

/// What `partition` printed on its virtual PL011: the hypervisor's `[partition] `
/// lines, without the prefix.
fn virtual_uart_lines(outcome: &Outcome, partition: &str) -> Vec<String> {
    let prefix = virtual_uart_prefix(partition);
    outcome
        .lines()
        .filter_map(|line| Some(line.message.strip_prefix(&prefix)?.to_string()))
        .collect()
}

/// The lines `expected`'s guest must print, in order, each exactly.
fn expected_report(expected: &Expected, gic: GicVersion) -> Vec<String> {
    let name = expected.partition;
    let line = |text: String| format!("transom-test {name}: {text}");
    let gic = match gic {
        GicVersion::V2 => "GICv2",
        GicVersion::V3 => "GICv3",
    };
    let mut lines = vec![
        line(format!("started, console {:#010x}, {gic}", expected.console)),
        // `vmm-core/src/guest/boot_info.rs`: the transport's entry, mode 2
        // (trapped) in the 4 KiB page around its exact address, widths 0x7 (8, 16
        // and 32-bit: virtio 1.2 4.2.2 has 32-bit control registers and a
        // configuration space read with each field's own width; no 64-bit).
        // Linux's booting.rst: x1 is 0 for a guest without one.
        line(match expected.boot_info {
            Some((windows, intid)) => format!(
                "boot-info {windows} windows, {t:#010x} size 0x200 span {s:#010x}..{e:#010x} mode 2 widths 0x7 INTID {intid} ok",
                t = expected.transport,
                s = expected.transport & !0xfff,
                e = (expected.transport & !0xfff) + 0x1000,
            ),
            None => "boot-info none (x1 = 0)".to_string(),
        }),
        line(format!(
            "exact-address {:#010x} magic {VIRTIO_MAGIC:#010x} ok",
            expected.transport
        )),
        // Width probe reads: byte k of an n-byte read at offset o is
        // (n << 4) | ((o + k) & 0xf) (`transom_vmm_core::width_probe`).
        line("width-probe read 1 at 0x1 = 0x11 ok".to_string()),
        line("width-probe read 2 at 0x2 = 0x2322 ok".to_string()),
        line("width-probe read 4 at 0x4 = 0x47464544 ok".to_string()),
        line("width-probe read 8 at 0x8 = 0x8f8e8d8c8b8a8988 ok".to_string()),
        // Writes: read back from the probe's LAST_WRITE and LAST_INFO (width << 56
        // | offset).
        line("width-probe write 1 at 0x11 = 0xa1, probe saw 1 at 0x11 = 0xa1 ok".to_string()),
        line("width-probe write 2 at 0x12 = 0xb2b2, probe saw 2 at 0x12 = 0xb2b2 ok".to_string()),
        line("width-probe write 4 at 0x14 = 0xc4c4c4c4, probe saw 4 at 0x14 = 0xc4c4c4c4 ok".to_string()),
        line("width-probe write 8 at 0x18 = 0xd8d8d8d8d8d8d8d8, probe saw 8 at 0x18 = 0xd8d8d8d8d8d8d8d8 ok".to_string()),
        // Arm ARM D24.2.47 (ESR_EL1) and D24.2.55 (FAR_EL1: the faulting virtual
        // address, the identity of the exact neighbour address).
        line(format!(
            "neighbour-abort {n:#010x} ESR_EL1 {ESR_READ_ABORT:#x} EC 0x25 DFSC 0x10 FAR_EL1 {n:#010x} ok",
            n = expected.neighbour
        )),
        // virtio 1.2 4.2.2: the transport's registers are 32 bits wide; the board
        // table allows only 32-bit accesses.
        line(format!(
            "width-abort {t:#010x} ESR_EL1 {ESR_READ_ABORT:#x} EC 0x25 DFSC 0x10 FAR_EL1 {t:#010x} ok",
            t = expected.transport
        )),
        // A load pair has no instruction syndrome (Arm ARM D24.2.48, ISV = 0):
        // refused with the same abort.
        line(format!(
            "no-syndrome-abort {t:#010x} ESR_EL1 {ESR_READ_ABORT:#x} EC 0x25 DFSC 0x10 FAR_EL1 {t:#010x} ok",
            t = expected.transport
        )),
    ];
    // PSCI (DEN0022 5.1.4, 5.1.5): CPU_ON returns SUCCESS (0), or
    // INVALID_PARAMETERS (-2) for an MPIDR that is not the partition's.
    lines.push(match expected.second_cpu {
        Some(_) => line(
            "cpu-on mpidr 0x1 returned 0, vCPU reported MPIDR_EL1 0x80000001, affinity-info off ok"
                .to_string(),
        ),
        None => line("cpu-on mpidr 0x1 (not this partition's) returned -2 ok".to_string()),
    });
    lines.push(line(format!(
        "virtual-timer INTID {VIRTUAL_TIMER_INTID} taken 1 times ok"
    )));
    lines.push(match expected.passthrough_uart {
        Some(uart) => line(format!(
            "passthrough-irq uart {uart:#010x} INTID {UART1_INTID} taken 1 times ok"
        )),
        None => {
            line("passthrough-irq skipped: no passthrough-uart= on the command line".to_string())
        }
    });
    lines.push(line("done".to_string()));
    lines
}

fn assert_guest(outcome: &Outcome, expected: &Expected, gic: GicVersion) {
    let name = expected.partition;
    let transcript = outcome.transcript();
    let console = console(outcome, expected);
    let shown = format!(
        "{name}'s console:\n{}\n\nrun:\n{transcript}",
        console.join("\n")
    );
    // The report, in order (the secondary vCPU's line may come between).
    let report: Vec<&String> = console
        .iter()
        .filter(|line| line.starts_with(&format!("transom-test {name}: ")))
        .filter(|line| !line.contains("secondary vCPU up"))
        .collect();
    assert_eq!(
        report,
        expected_report(expected, gic).iter().collect::<Vec<_>>(),
        "{shown}"
    );

    let logged = |needle: &str| assert!(outcome.logged(needle), "missing {needle:?}\n{shown}");
    logged(&format!("partition {name}: vCPU 0 on CPU {}", expected.cpu));
    // Each width-probe access, with the width and offset the probe saw.
    for (direction, size, offset, value) in [
        ("read", 1, 0x1, "0x11"),
        ("read", 2, 0x2, "0x2322"),
        ("read", 4, 0x4, "0x47464544"),
        ("read", 8, 0x8, "0x8f8e8d8c8b8a8988"),
        ("write", 1, 0x11, "0xa1"),
        ("write", 2, 0x12, "0xb2b2"),
        ("write", 4, 0x14, "0xc4c4c4c4"),
        ("write", 8, 0x18, "0xd8d8d8d8d8d8d8d8"),
    ] {
        logged(&format!(
            "width-probe {name}: {direction} {size} bytes at offset {offset:#x} value {value}"
        ));
    }
    // The refused accesses, as the hypervisor saw them.
    let refused = |ipa: u32, reason: &str| {
        outcome.lines().any(|line| {
            line.message
                .starts_with(&format!("partition {name}: read at IPA {ipa:#x} from PC "))
                && line
                    .message
                    .ends_with(&format!("refused ({reason}): abort injected"))
        })
    };
    assert!(
        refused(expected.neighbour, "outside every window of the partition"),
        "{shown}"
    );
    assert!(
        refused(expected.transport, "64-bit access not allowed"),
        "{shown}"
    );
    // The load pair: the hypervisor names the instruction it read through the
    // guest's own translation (`LDP Wt1, Wt2, [Xn]`: opc 00, 101 0 010 1).
    let pair = format!(
        "partition {name}: access to IPA {:#x} without a syndrome (ISV = 0): the instruction at PC 0x",
        expected.transport
    );
    assert!(
        outcome.lines().any(|line| line.message.starts_with(&pair)
            && line
                .message
                .contains(", a load/store pair (LDP/STP), which Transom does not emulate")),
        "{shown}"
    );
    if let Some(cpu) = expected.second_cpu {
        logged(&format!(
            "partition {name}: PSCI CPU_ON vCPU 1 on CPU {cpu} at 0x"
        ));
        assert!(
            console.iter().any(|line| line
                == &format!("transom-test {name}: secondary vCPU up, MPIDR_EL1 0x80000001")),
            "{shown}"
        );
    }
    logged(&format!("partition {name}: powered off (PSCI SYSTEM_OFF)"));
}

fn check(gic: GicVersion, tag: &str) {
    let outcome = boot(gic, tag);
    assert_verdict(&outcome, Verdict::Pass);
    assert!(
        outcome.logged("width probe at IPA 0x3ffff000..0x40000000 in every partition"),
        "{}",
        outcome.transcript()
    );
    for expected in [&LINUX_A, &LINUX_B] {
        assert_guest(&outcome, expected, gic);
    }
    assert!(
        outcome.logged("every partition has stopped"),
        "{}",
        outcome.transcript()
    );
}

/// Both partitions at once with a GICv3: every check passes in each.
#[test]
fn test_guests_on_gicv3() {
    check(GicVersion::V3, "test-guests-v3");
}

/// Both partitions at once with a GICv2 (the distributor emulated, each guest's
/// CPU interface on the GICV frame): the same checks.
#[test]
fn test_guests_on_gicv2() {
    check(GicVersion::V2, "test-guests-v2");
}

/// The Pi 4 table's gpio-guest on QEMU `raspi4b` (four Cortex-A72, GIC-400 with its
/// virtualization extensions): the GIC-400's distributor emulated and the guest's
/// CPU interface on its GICV frame, as on the board. The guest has no virtio-mmio
/// transport, width probe, neighbour or UART of its own (its console is the
/// virtual PL011 at the hypervisor's console, uart0 at 0xfe20_1000, BCM2711
/// peripherals 2.1), so only the checks that need none of them run; the virtual
/// timer's PPI 11 (INTID 27, as on `virt`: bcm2711.dtsi's `armv8-timer`) must
/// arrive.
#[test]
fn test_guest_on_raspi4b() {
    let guest = image::build_test_guest().expect("the test guest builds");
    let probe = std::fs::read(&guest.image).expect("the guest image is readable");
    let mut builder = BundleBuilder::new();
    builder
        .add("gpio-guest", EntryKind::Image, &probe)
        .expect("a valid entry");
    let files = RunFiles::tagged(BoardName::Rpi4, "test-guest");
    std::fs::create_dir_all(files.bundle.parent().expect("a directory")).expect("bundle directory");
    std::fs::write(&files.bundle, builder.finish()).expect("the bundle is written");

    let hypervisor = transom_tests::built(BoardName::Rpi4);
    let machine = BoardName::Rpi4
        .machine(GicVersion::V2, None)
        .expect("a valid machine");
    let mut config = RunConfig::new(&hypervisor.image);
    config.device_tree = Some(image::rpi4_device_tree().expect("raspi4b device tree"));
    config.initrd = Some(files.bundle);
    let elf = std::fs::read(&hypervisor.elf).expect("the ELF is readable");
    let outcome = xtask::run::run(
        &machine,
        &config,
        &elf,
        Some(transom_tests::BOOT_TIMEOUT),
        Echo::Quiet,
    )
    .expect("QEMU runs");
    assert_verdict(&outcome, Verdict::Pass);

    // The timer line counts interrupts taken, which depends on timing: it is
    // checked apart.
    let (timer, report): (Vec<String>, Vec<String>) = virtual_uart_lines(&outcome, "gpio-guest")
        .into_iter()
        .partition(|line| line.contains("virtual-timer"));
    let line = |text: &str| format!("transom-test gpio-guest: {text}");
    let expected = vec![
        line("started, console 0xfe201000, GICv2"),
        line("boot-info none (x1 = 0)"),
        line("exact-address skipped: no virtio-mmio transport"),
        line("width-probe skipped: no width probe in the tree"),
        line("neighbour-abort skipped: no neighbour= on the command line"),
        line("width-abort skipped: no virtio-mmio transport"),
        line("no-syndrome-abort skipped: no virtio-mmio transport"),
        // One vCPU: CPU_ON of another MPIDR is INVALID_PARAMETERS (PSCI 5.6.2).
        line("cpu-on mpidr 0x1 (not this partition's) returned -2 ok"),
        line("passthrough-irq skipped: no passthrough-uart= on the command line"),
        line("done"),
    ];
    assert_eq!(report, expected, "{}", outcome.transcript());
    // At least one interrupt, and the check's verdict.
    let [timer] = timer.as_slice() else {
        panic!("not one virtual-timer line\n{}", outcome.transcript());
    };
    assert!(
        timer.starts_with("transom-test gpio-guest: virtual-timer INTID 27 taken ")
            && timer.ends_with(" ok")
            && !timer.contains("taken 0 times"),
        "{timer}\n{}",
        outcome.transcript()
    );
    assert!(
        outcome.logged("partition gpio-guest: powered off (PSCI SYSTEM_OFF)"),
        "{}",
        outcome.transcript()
    );
}
