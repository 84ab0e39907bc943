//! The board tables at boot: the kernel logs every grant of every partition, as its
//! stage 2 maps it, with its rounded span, exact device address and mode, and
//! cross-checks the table against the firmware's device tree.

use transom_boards::{Board, Mapping};
use transom_qemu::{GicVersion, Machine, VirtCpu};
use transom_tests::{assert_verdict, boot, boot_on};
use transom_vmm_core::verdict::Verdict;
use xtask::boards::BoardName;
use xtask::run::Outcome;

/// Asserts one log line per grant, with what the table says about it (the tests
/// boot with the table's own granule, so the window's span is the table's).
fn assert_grants_logged(outcome: &Outcome, board: &Board) {
    let transcript = outcome.transcript();
    let mut grants = 0;
    for partition in board.partitions {
        for grant in partition.grants {
            let region = board.device(grant.device).expect("validated table");
            let range = region.range();
            let span = range.span(board.granule);
            let expected = format!(
                "stage 2 of {}: grant {} ({}) span {:#x}..{:#x} device IPA {:#x} (+{:#x}, {:#x} bytes)",
                partition.name,
                region.name,
                region.kind.label(),
                span.start,
                span.end,
                range.start,
                range.offset(board.granule),
                range.size(),
            );
            let mode = board.mapping(partition, grant).label();
            let logged = outcome
                .lines()
                .any(|line| line.message.contains(&expected) && line.message.ends_with(mode));
            assert!(logged, "no line `{expected} ...: {mode}` in\n{transcript}");
            grants += 1;
        }
    }
    assert!(grants > 0, "the demo partitions grant devices");
}

fn assert_passes(outcome: &Outcome) {
    assert_verdict(outcome, Verdict::Pass);
}

#[test]
fn virt_logs_every_grant_with_its_mode_and_exact_address() {
    let board = transom_board_qemu_virt::BOARD;
    let outcome = boot(BoardName::QemuVirt, GicVersion::V3, Some(4), &[]);
    assert_passes(&outcome);
    assert_grants_logged(&outcome, &board);
    let transcript = outcome.transcript();
    // Transport 31 is 0xe00 into the page 0x0a00_3000, which it shares with
    // linux-b's transport 30 (QEMU virt: 0x200-byte transports from 0x0a00_0000).
    // Stage 2 keeps the exact address in the window.
    assert!(
        outcome.logged("stage 2 of linux-a: grant virtio_mmio@a003e00 (virtio-mmio) span 0xa003000..0xa004000 device IPA 0xa003e00 (+0xe00, 0x200 bytes) Device-nGnRE widths 8/16/32 INTIDs [79]: trapped"),
        "{transcript}"
    );
    // The partition has its VMID.
    assert!(
        outcome.logged("stage 2 of linux-b: VMID 2, VTTBR_EL2"),
        "{transcript}"
    );
    let linux_a = &board.partitions[0];
    assert_eq!(board.mapping(linux_a, &linux_a.grants[0]), Mapping::Trapped);
    // With a second -serial, QEMU's tree has UART1; every non-GIC device is there.
    assert!(
        !outcome.logged("is not in the firmware's device tree"),
        "{transcript}"
    );
    // GICv2-only frames are absent on a GICv3 machine, and said to be.
    assert!(
        outcome.logged("GIC frames not on this machine: [GICC gicc at 0x8010000, "),
        "{transcript}"
    );
}

#[test]
fn rpi4_logs_every_grant_and_its_tree_has_every_device() {
    let outcome = boot(BoardName::Rpi4, GicVersion::V2, None, &[]);
    assert_passes(&outcome);
    assert_grants_logged(&outcome, &transom_board_rpi4::BOARD);
    let transcript = outcome.transcript();
    // BCM2711: the mini UART is 0x40 into the AUX page.
    assert!(
        outcome.logged("stage 2 of serial-guest: grant mini-uart (mini UART) span 0xfe215000..0xfe216000 device IPA 0xfe215040 (+0x40, 0x40 bytes) Device-nGnRE"),
        "{transcript}"
    );
    assert!(
        !outcome.logged("is not in the firmware's device tree"),
        "{transcript}"
    );
    // QEMU's raspi4b reports 1 GiB less the VideoCore's 64 MiB.
    assert!(
        outcome.logged("RAM bank 0x40000000..0xfc000000 is absent on this machine"),
        "{transcript}"
    );
}

/// The table's partitions reach 0x7000_0000; with 512 MiB QEMU's RAM ends at
/// 0x6000_0000, so linux-b's RAM does not exist and the run must not go on.
#[test]
fn virt_with_too_little_ram_is_a_board_mismatch() {
    let machine = Machine::Virt {
        gic: GicVersion::V3,
        cpu: VirtCpu::CortexA72,
        cpus: 4,
        memory_mib: 512,
    };
    let outcome = boot_on(BoardName::QemuVirt, &machine, &[]);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::BoardMismatch);
    assert!(
        outcome.logged("RAM 0x60000000..0x70000000 of partition linux-b is not RAM in the firmware's device tree"),
        "{transcript}"
    );
}

/// Two CPUs: linux-b's CPU 2 does not exist, which is worth a warning.
#[test]
fn virt_with_two_cpus_warns_about_a_missing_partition_cpu() {
    let outcome = boot(BoardName::QemuVirt, GicVersion::V2, Some(2), &[]);
    assert_passes(&outcome);
    assert!(
        outcome.logged("CPU 2 of partition linux-b is not in the firmware's device tree (2 CPUs)"),
        "{}",
        outcome.transcript()
    );
}
