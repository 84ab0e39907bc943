//! The Linux demo on QEMU `virt`: Debian's arm64 kernel and the demo's busybox
//! initramfs in linux-b alone, then in linux-a and linux-b at once, each guest
//! reaching its own virtio disk and no other.
//!
//! The runs are set up by `xtask::linux::demo_run`, as `cargo xtask qemu --demo
//! linux` sets them up. The guest files come through the cache of `cargo xtask
//! guest linux` (`target/guests/linux`); the first run fetches them from Debian
//! with apt (as root on Debian, with the network), and a test fails with apt's
//! error if it cannot, rather than passing without a guest.
//!
//! Addresses, from QEMU `hw/arm/virt.c`: `VIRT_MMIO` is at 0x0a00_0000 and
//! `virt` creates 32 virtio-mmio transports of 0x200 bytes each there (the size
//! of the virtio-mmio register block, virtio 1.2, 4.2.2), so transport 31 is
//! 0x0a00_3e00..=0x0a00_3fff and transport 30 is 0x0a00_3c00..=0x0a00_3dff: both
//! in the 4 KiB page 0x0a00_3000, which the board table grants linux-a (31) and
//! linux-b (30) as trapped windows of exactly those 0x200 bytes.

use std::sync::{Mutex, MutexGuard};

use transom_qemu::{GicVersion, Machine, VirtCpu, VirtioDisk};
use transom_tests::{BOOT_TIMEOUT, assert_verdict};
use transom_vmm_core::verdict::Verdict;
use xtask::boards::BoardName;
use xtask::guest_run::RunFiles;
use xtask::linux::{self, DemoRun};
use xtask::run::{Echo, Outcome};

/// A demo partition and the facts its guest should report.
struct Expected {
    partition: &'static str,
    /// Its virtio-mmio transport (`virtio-mmio-bus.<n>`).
    transport: u32,
    /// That transport's `/proc/iomem` range: its exact base and last byte.
    iomem_range: &'static str,
    /// The transport's base as Linux names the device (`a003e00.virtio_mmio`).
    device_name: &'static str,
}

const LINUX_A: Expected = Expected {
    partition: "linux-a",
    transport: 31,
    iomem_range: "0a003e00-0a003fff",
    device_name: "a003e00",
};

const LINUX_B: Expected = Expected {
    partition: "linux-b",
    transport: 30,
    iomem_range: "0a003c00-0a003dff",
    device_name: "a003c00",
};

/// One Linux boot at a time: the runs share the cached guest files (and QEMU
/// locks a disk image a run has open), and two TCG boots at once would only slow
/// each other down.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Sets up the demo with `partitions` alone, with files of its own (`tag`).
fn demo(partitions: &[&str], tag: &str) -> DemoRun {
    let image = transom_tests::built(BoardName::QemuVirt);
    let files = RunFiles::tagged(BoardName::QemuVirt, tag);
    linux::demo_run(&image, partitions, &files)
        .unwrap_or_else(|error| panic!("setting up the Linux demo: {error:#}"))
}

fn boot(demo: &DemoRun) -> Outcome {
    demo.boot(BOOT_TIMEOUT, Echo::Quiet)
        .unwrap_or_else(|error| panic!("running QEMU: {error:#}"))
}

/// `partition`'s console lines in `outcome`.
fn console(demo: &DemoRun, outcome: &Outcome, partition: &str) -> Vec<String> {
    demo.console(outcome, partition)
        .into_iter()
        .map(|line| line.text)
        .collect()
}

/// The lines `/init` printed about `/proc/iomem`, without their prefix.
fn iomem_lines(console: &[String], partition: &str) -> Vec<String> {
    let prefix = format!("{} iomem ", linux::marker(partition));
    console
        .iter()
        .filter_map(|line| Some(line.split_once(&prefix)?.1.to_string()))
        .collect()
}

/// Asserts what `expected`'s guest reported on its console: it started, it sees
/// exactly its own transport with its exact range in `/proc/iomem`, and its disk
/// carries its own signature; and that it never names `others`' transports or
/// signatures.
fn assert_guest(console: &[String], expected: &Expected, others: &[&Expected], transcript: &str) {
    let partition = expected.partition;
    let marker = linux::marker(partition);
    let shown = format!(
        "{partition}'s console:\n{}\n\nrun:\n{transcript}",
        console.join("\n")
    );
    let has = |needle: &str| console.iter().any(|line| line.contains(needle));

    assert!(has(&format!("{marker} init started on ")), "{shown}");

    // Exactly one virtio-mmio range, with the transport's exact base and size (not
    // the 4 KiB page the window is in).
    let iomem = iomem_lines(console, partition);
    let virtio_ranges: Vec<&str> = iomem
        .iter()
        .filter(|line| line.contains("virtio"))
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(virtio_ranges, [expected.iomem_range], "{shown}");
    let device = format!("{}.virtio_mmio", expected.device_name);
    assert!(iomem.iter().any(|line| line.contains(&device)), "{shown}");

    let own_signature = xtask::disk::signature(partition);
    assert!(
        has(&format!("{marker} vda signature {own_signature}")),
        "{shown}"
    );
    assert!(has(&format!("{marker} powering off")), "{shown}");

    for other in others {
        for line in &iomem {
            assert!(
                !line.contains(other.device_name),
                "{partition} sees {}'s transport: {line}\n{shown}",
                other.partition
            );
        }
        let signature = xtask::disk::signature(other.partition);
        assert!(
            !has(&signature),
            "{partition} read {}'s disk\n{shown}",
            other.partition
        );
    }
}

/// linux-b alone: its console is the hypervisor's virtual PL011, its disk is the
/// only one and sits on its own transport (30), and nothing is on UART1.
#[test]
fn linux_b_alone_boots_and_reads_its_own_disk() {
    let _one = one_at_a_time();
    let demo = demo(&[LINUX_B.partition], "test-linux-b");
    let disk = &demo.guests.prepared.guests[0].disk;
    assert_eq!(
        demo.config.disks,
        [VirtioDisk {
            file: disk.clone(),
            transport: Some(LINUX_B.transport),
        }]
    );
    assert_eq!(demo.guest_run.second_serial_owner, None);

    let outcome = boot(&demo);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::Pass);
    let console = console(&demo, &outcome, LINUX_B.partition);
    assert_guest(&console, &LINUX_B, &[&LINUX_A], &transcript);
}

/// linux-a and linux-b at once, each on its own CPU: linux-a's console is UART1,
/// linux-b's the virtual PL011; each sees only its own transport of the page they
/// share, and reads only its own disk.
#[test]
fn linux_a_and_linux_b_each_see_only_their_own_transport_and_disk() {
    let _one = one_at_a_time();
    let demo = demo(&[LINUX_A.partition, LINUX_B.partition], "test-linux-ab");
    let transports: Vec<Option<u32>> = demo
        .config
        .disks
        .iter()
        .map(|disk| disk.transport)
        .collect();
    assert_eq!(
        transports,
        [Some(LINUX_A.transport), Some(LINUX_B.transport)]
    );
    assert_eq!(
        demo.guest_run.second_serial_owner.as_deref(),
        Some(LINUX_A.partition)
    );

    let outcome = boot(&demo);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::Pass);
    for (expected, other) in [(&LINUX_A, &LINUX_B), (&LINUX_B, &LINUX_A)] {
        let console = console(&demo, &outcome, expected.partition);
        assert_guest(&console, expected, &[other], &transcript);
    }
    // linux-b's directly mapped PL031 (QEMU `VIRT_RTC`, 0x0901_0000) is in its tree
    // with the table's `compatible`, and Linux's rtc-pl031 driver takes it; linux-a
    // is not given it.
    let rtc = "rtc-pl031 9010000.rtc: registered as rtc0";
    let has_rtc = |partition: &str| {
        console(&demo, &outcome, partition)
            .iter()
            .any(|line| line.contains(rtc))
    };
    assert!(has_rtc(LINUX_B.partition), "{transcript}");
    assert!(!has_rtc(LINUX_A.partition), "{transcript}");
    // Only a partition without a UART of its own gets the virtual PL011 (at UART0's
    // 0x0900_0000): linux-b, not linux-a, which has UART1.
    let vuart = |partition: &str| {
        iomem_lines(&console(&demo, &outcome, partition), partition)
            .iter()
            .any(|line| line.starts_with("09000000-09000fff"))
    };
    assert!(vuart(LINUX_B.partition), "{transcript}");
    assert!(!vuart(LINUX_A.partition), "{transcript}");
}

/// Both guests again on `virt` with `gic-version=2`: Linux drives a GICv2
/// (`arm,cortex-a15-gic`) whose distributor Transom emulates and whose CPU
/// interface is the hardware's virtual one (QEMU `VIRT_GIC_VCPU`, 0x0804_0000)
/// mapped at the guest's GICC (`VIRT_GIC_CPU`, 0x0801_0000). Each guest's disk
/// works only if its transport's passthrough interrupt and the virtual timer's PPI
/// arrive through the GICv2 list registers.
#[test]
fn linux_a_and_linux_b_boot_on_a_gicv2() {
    let _one = one_at_a_time();
    let mut demo = demo(&[LINUX_A.partition, LINUX_B.partition], "test-linux-ab-v2");
    demo.machine = Machine::virt(GicVersion::V2, 4)
        .expect("a valid machine")
        .with_cpu(VirtCpu::CortexA72);

    let outcome = boot(&demo);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::Pass);
    for partition in [LINUX_A.partition, LINUX_B.partition] {
        let mapped =
            format!("stage 2 of {partition}: GICV 0x8040000 mapped at the guest's GICC 0x8010000");
        assert!(
            outcome.lines().any(|line| line.message == mapped),
            "no `{mapped}` in\n{transcript}"
        );
    }
    for (expected, other) in [(&LINUX_A, &LINUX_B), (&LINUX_B, &LINUX_A)] {
        let console = console(&demo, &outcome, expected.partition);
        assert_guest(&console, expected, &[other], &transcript);
    }
}
