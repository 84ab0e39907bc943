//! Stage 2 in force on QEMU `virt`, for each granule: `transom.selftest=stage2` runs
//! a few EL1 instructions in every partition through the stage 2 built from the
//! board table, and these tests check each exit against what the table and the
//! Arm ARM say must happen.

use transom_boards::{Board, Granule, Mapping, Partition, Region};
use transom_qemu::{GicVersion, Machine, VirtCpu};
use transom_tests::{assert_verdict, boot_on};
use transom_vmm_core::verdict::Verdict;
use xtask::boards::BoardName;
use xtask::run::Outcome;

/// The last 32-bit word of a PrimeCell peripheral's 4 KiB frame is `PCellID3`,
/// 0xB1 on every PrimeCell (PL011 TRM, ARM DDI 0183, `UARTPCellID3`; PL031 TRM,
/// ARM DDI 0224, `RTCPCellID3`). QEMU models both (`pl011_id_arm`, `pl031_id`).
const PRIMECELL_ID3: u32 = 0xb1;

fn virt(cpu: VirtCpu) -> Machine {
    Machine::virt(GicVersion::V3, 4)
        .expect("a valid machine")
        .with_cpu(cpu)
}

fn granule_option(granule: Granule) -> &'static str {
    match granule {
        Granule::Size4KiB => "transom.granule=4k",
        Granule::Size16KiB => "transom.granule=16k",
        Granule::Size64KiB => "transom.granule=64k",
    }
}

fn first_window(board: &Board, partition: &Partition, mode: Mapping) -> Option<&'static Region> {
    partition
        .grants
        .iter()
        .find(|grant| board.mapping(partition, grant) == mode)
        .and_then(|grant| board.device(grant.device))
}

/// Asserts every step of the probe of every partition, derived from the table as
/// the granule changes it.
fn assert_probe_passed(outcome: &Outcome, granule: Granule) {
    let transcript = outcome.transcript();
    assert_verdict(outcome, Verdict::Pass);
    let board = Board {
        granule,
        ..transom_board_qemu_virt::BOARD
    };
    assert!(
        outcome.logged(&format!("stage 2: {} granule", granule.label())),
        "{transcript}"
    );
    for (index, partition) in board.partitions.iter().enumerate() {
        let name = partition.name;
        let ram = partition.ram.last().expect("partition RAM");
        // The program writes "TRANSOM" with the VMID (index + 1) in the low byte to
        // the last word of RAM; the hypervisor must find it at the same PA.
        let word = ram.end - 8;
        let pattern = 0x5452_414e_534f_4d00_u64 | (index as u64 + 1);
        assert!(
            outcome.logged(&format!(
                "stage-2 probe of {name}: RAM at IPA {word:#x} read back {pattern:#x}, found at PA {word:#x}"
            )),
            "{transcript}"
        );
        let direct = first_window(&board, partition, Mapping::Direct)
            .expect("each demo partition has a direct window at every granule");
        let last_word = direct.base + direct.size - 4;
        assert!(
            outcome.logged(&format!(
                "stage-2 probe of {name}: direct window {} read 32 bits at IPA {last_word:#x}: {PRIMECELL_ID3:#x}",
                direct.name
            )),
            "{transcript}"
        );
        // A trapped window is not mapped: the read stops at stage 2 with the
        // device's exact address (HPFAR_EL2 + FAR_EL2), which the trap table
        // resolves to the window's exact bytes.
        let trapped = first_window(&board, partition, Mapping::Trapped)
            .expect("each demo partition has a trapped transport");
        let exact = trapped.range();
        let line = outcome
            .lines()
            .find(|line| {
                line.message.starts_with(&format!(
                    "stage-2 probe of {name}: read at IPA {:#x} trapped (translation fault, level",
                    exact.start
                ))
            })
            .unwrap_or_else(|| panic!("no trapped read of {} in\n{transcript}", trapped.name));
        assert!(
            line.message.ends_with(&format!(
                "in window {} {:#x}..{:#x}",
                trapped.name, exact.start, exact.end
            )),
            "{}",
            line.message
        );
        // The hypervisor's own memory is in no partition's stage 2.
        assert!(
            outcome.logged(&format!(
                "stage-2 probe of {name}: read at IPA {:#x} outside the partition refused (translation fault",
                board.hypervisor.memory.start
            )),
            "{transcript}"
        );
        assert!(
            outcome.logged(&format!("stage-2 probe of {name}: passed")),
            "{transcript}"
        );
    }
}

#[test]
fn stage_2_with_4k_pages_confines_each_partition() {
    let granule = Granule::Size4KiB;
    let outcome = boot_on(
        BoardName::QemuVirt,
        &virt(VirtCpu::CortexA72),
        &["transom.selftest=stage2", granule_option(granule)],
    );
    assert_probe_passed(&outcome, granule);
}

#[test]
fn stage_2_with_64k_pages_confines_each_partition() {
    let granule = Granule::Size64KiB;
    let outcome = boot_on(
        BoardName::QemuVirt,
        &virt(VirtCpu::CortexA72),
        &["transom.selftest=stage2", granule_option(granule)],
    );
    assert_probe_passed(&outcome, granule);
    // 64 KiB spans: the transport's window covers all 32 transports' page.
    assert!(
        outcome.logged("stage 2 of linux-a: grant virtio_mmio@a003e00 (virtio-mmio) span 0xa000000..0xa010000 device IPA 0xa003e00 (+0x3e00, 0x200 bytes)"),
        "{}",
        outcome.transcript()
    );
}

/// The Cortex-A72 has no 16 KiB granule (`ID_AA64MMFR0_EL1.TGran16` = 0, no
/// `TGran16_2`); QEMU's `max` CPU has it.
#[test]
fn stage_2_with_16k_pages_on_a_cpu_that_has_them() {
    let granule = Granule::Size16KiB;
    let outcome = boot_on(
        BoardName::QemuVirt,
        &virt(VirtCpu::Max),
        &["transom.selftest=stage2", granule_option(granule)],
    );
    assert_probe_passed(&outcome, granule);
}

#[test]
fn a_granule_the_cpu_lacks_is_refused() {
    let outcome = boot_on(
        BoardName::QemuVirt,
        &virt(VirtCpu::CortexA72),
        &["transom.selftest=stage2", "transom.granule=16k"],
    );
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::BoardMismatch);
    assert!(
        outcome.logged(
            "stage 2: this CPU does not support the 16 KiB granule at stage 2 (ID_AA64MMFR0_EL1.TGran16_2)"
        ),
        "{transcript}"
    );
    assert!(!outcome.logged("stage-2 probe of"), "{transcript}");
}

/// The board table was checked at compile time for its own granule only; another
/// granule is checked again at boot, and a rule it breaks stops the boot with the
/// rule's message (the Pi's GIC-400 GICV frame is 8 KiB, not a 64 KiB multiple).
#[test]
fn a_granule_the_table_cannot_use_is_refused() {
    let outcome = boot_on(
        BoardName::Rpi4,
        &Machine::Raspi4b,
        &["transom.selftest=stage2", "transom.granule=64k"],
    );
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::BoardMismatch);
    let board = Board {
        granule: Granule::Size64KiB,
        ..transom_board_rpi4::BOARD
    };
    let error = transom_boards::validate(&board).expect_err("the Pi table breaks a rule at 64 KiB");
    assert!(
        outcome.logged(&format!(
            "transom.granule: the board table cannot be used with the 64 KiB granule: {error}"
        )),
        "{transcript}"
    );
    assert!(!outcome.logged("stage-2 probe of"), "{transcript}");
}

/// The Pi table at its own granule on QEMU `raspi4b`: every partition's probe
/// passes, and the mini UART's exact address (`AUX_MU_IO_REG`, 0x40 into the
/// auxiliaries' page: BCM2711 peripherals datasheet, chapter 2) is what the trapped
/// read reports.
#[test]
fn stage_2_on_raspi4b_confines_each_partition() {
    let outcome = boot_on(
        BoardName::Rpi4,
        &Machine::Raspi4b,
        &["transom.selftest=stage2"],
    );
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::Pass);
    let board = transom_board_rpi4::BOARD;
    for partition in board.partitions {
        let name = partition.name;
        assert!(
            outcome.logged(&format!(
                "stage-2 probe of {name}: read at IPA {:#x} outside the partition refused",
                board.hypervisor.memory.start
            )),
            "{transcript}"
        );
        assert!(
            outcome.logged(&format!("stage-2 probe of {name}: passed")),
            "{transcript}"
        );
    }
    assert!(
        outcome.logged("stage-2 probe of serial-guest: read at IPA 0xfe215040 trapped"),
        "{transcript}"
    );
}
