//! Boot tests: the hypervisor comes up at EL2 on every QEMU machine, reports its
//! board, RAM, heap and CPUs, and ends the run with the verdict it should.

use transom_qemu::GicVersion;
use transom_tests::boot;
use transom_vmm_core::verdict::Verdict;
use xtask::boards::BoardName;
use xtask::run::{Ending, Outcome};

fn assert_boot_report(outcome: &Outcome, board: &str, cpus: u32) {
    let transcript = outcome.transcript();
    assert_eq!(
        outcome.ending,
        Ending::Verdict(Verdict::Pass),
        "transcript:\n{transcript}"
    );
    // `virtualization=on` (virt) and QEMU's raspi boot code enter the kernel at EL2,
    // as the Linux arm64 boot protocol recommends for hypervisors.
    assert!(outcome.logged("running at EL2"), "{transcript}");
    assert!(outcome.logged(&format!("on board {board}")), "{transcript}");
    assert!(outcome.logged("RAM: "), "{transcript}");
    assert!(outcome.logged("heap: "), "{transcript}");
    assert!(outcome.logged("MMU and caches on"), "{transcript}");
    assert!(
        outcome.logged(&format!("CPUs online: {cpus}/{cpus}")),
        "{transcript}"
    );
    for cpu in 1..cpus {
        assert!(
            outcome.logged(&format!("CPU {cpu} online:")),
            "CPU {cpu} reports in:\n{transcript}"
        );
    }
    assert!(
        !outcome
            .events
            .iter()
            .any(|event| matches!(event, xtask::log_decode::LogEvent::Undecodable { .. })),
        "every frame decodes:\n{transcript}"
    );
}

#[test]
fn virt_gicv3_four_cpus() {
    let outcome = boot(BoardName::QemuVirt, GicVersion::V3, Some(4), &[]);
    assert_boot_report(&outcome, "qemu-virt", 4);
    // QEMU virt's default -m of this machine definition is 1 GiB at 0x4000_0000.
    assert!(
        outcome.logged("RAM: 0x40000000..0x80000000"),
        "{}",
        outcome.transcript()
    );
}

#[test]
fn virt_gicv2_two_cpus() {
    let outcome = boot(BoardName::QemuVirt, GicVersion::V2, Some(2), &[]);
    assert_boot_report(&outcome, "qemu-virt", 2);
}

#[test]
fn raspi4b_spin_table_cpus() {
    let outcome = boot(BoardName::Rpi4, GicVersion::V2, None, &[]);
    assert_boot_report(&outcome, "rpi4", 4);
    // The Pi's RAM starts at 0 and the image at 0x8_0000 (kernel8.img).
    assert!(
        outcome.logged("image: 0x80000.."),
        "{}",
        outcome.transcript()
    );
}

#[test]
fn deliberate_panic_gives_the_panic_verdict_and_its_message() {
    let outcome = boot(
        BoardName::QemuVirt,
        GicVersion::V3,
        Some(1),
        &["transom.selftest=panic"],
    );
    let transcript = outcome.transcript();
    assert_eq!(
        outcome.ending,
        Ending::Verdict(Verdict::Panic),
        "{transcript}"
    );
    assert!(
        outcome.logged("deliberate panic (transom.selftest=panic)"),
        "{transcript}"
    );
    assert!(
        outcome.logged("panicked at kernel/src/boot.rs:"),
        "{transcript}"
    );
    assert_ne!(Verdict::Panic.exit_code(), Verdict::TestFailure.exit_code());
}

/// The boot log is held until the launch and sent afterwards (`kernel/src/log.rs`):
/// frames past what it holds, and a frame longer than its raw buffer, still reach
/// the host, every one, in the order they were logged.
#[test]
fn the_held_boot_log_loses_and_reorders_nothing() {
    let outcome = boot(
        BoardName::QemuVirt,
        GicVersion::V3,
        Some(1),
        &["transom.selftest=log"],
    );
    let transcript = outcome.transcript();
    assert_eq!(
        outcome.ending,
        Ending::Verdict(Verdict::Pass),
        "{transcript}"
    );
    let long = "0123456789".repeat(30);
    let mut expected: Vec<String> = Vec::new();
    for line in 0..600 {
        expected.push(format!("self-test: log line {line} of 600"));
        if line == 300 {
            expected.push(format!("self-test: a long line: {long}"));
        }
    }
    let logged: Vec<&str> = outcome
        .lines()
        .map(|line| line.message.as_str())
        .filter(|message| message.starts_with("self-test: "))
        .collect();
    assert_eq!(logged, expected, "{transcript}");
    // No frame was cut or garbled on the way.
    assert!(
        outcome
            .events
            .iter()
            .all(|event| matches!(event, xtask::log_decode::LogEvent::Line(_))),
        "{transcript}"
    );
    assert!(outcome.logged("run ended: pass"), "{transcript}");
}

#[test]
fn unmapped_access_is_decoded_and_gives_the_exception_verdict() {
    let outcome = boot(
        BoardName::Rpi4,
        GicVersion::V2,
        None,
        &["transom.selftest=exception"],
    );
    let transcript = outcome.transcript();
    assert_eq!(
        outcome.ending,
        Ending::Verdict(Verdict::UnexpectedException),
        "{transcript}"
    );
    // A load from an address no table maps: EC 0x25 (data abort, same EL), DFSC
    // 0b0001LL translation fault (Arm ARM D24.2.48), FAR = the address.
    assert!(
        outcome.logged("data abort at the same EL (EC 0x25, translation fault"),
        "{transcript}"
    );
    assert!(outcome.logged("FAR_EL2 0x7f00000000"), "{transcript}");
}

#[test]
fn unknown_hypervisor_options_are_warned_about() {
    let outcome = boot(
        BoardName::QemuVirt,
        GicVersion::V3,
        Some(1),
        &["transom.colour=blue"],
    );
    assert_eq!(outcome.ending, Ending::Verdict(Verdict::Pass));
    assert!(
        outcome.logged("ignoring unknown hypervisor option `transom.colour=blue`"),
        "{}",
        outcome.transcript()
    );
}
