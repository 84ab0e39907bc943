//! Guests on QEMU `virt`: the bundle reaches the hypervisor as the initrd, each
//! partition's `Image` is loaded and entered at EL1 on the partition's own CPU with
//! its device tree in x0, and its exits are handled while the other partition runs.
//!
//! The guests here are minimal: a few A64 instructions behind an arm64 `Image`
//! header (Linux `Documentation/arch/arm64/booting.rst`), encoded below from
//! `tests/guests/minimal.s` (assembled with `llvm-mc -triple=aarch64`, the words
//! checked against its output). Each one reads the MagicValue of its own
//! virtio-mmio transport, which shares a 4 KiB page with the other partition's
//! (QEMU `virt` spaces transports 0x200 apart), then reads the neighbour's, prints
//! what happened on its virtual PL011 and powers off with PSCI.

use std::path::PathBuf;

use transom_qemu::{GicVersion, Machine, RunConfig};
use transom_tests::assert_verdict;
use transom_vmm_core::guest::bundle::{BundleBuilder, EntryKind};
use transom_vmm_core::verdict::Verdict;
use xtask::boards::BoardName;
use xtask::run::Outcome;

/// Where the virtual PL011 is: the console UART's address, which no partition is
/// granted (QEMU `virt` UART0).
const VIRTUAL_UART: u32 = 0x0900_0000;

/// `MOVZ Xd, #imm16` and `MOVK Xd, #imm16, LSL #16` (Arm ARM C6.2.253 and C6.2.252):
/// `sf 10 100101 hw imm16 Rd` and `sf 11 100101 hw imm16 Rd`.
fn load_address(register: u32, address: u32) -> [u32; 2] {
    let movz = 0xd280_0000 | ((address & 0xffff) << 5) | register;
    let movk = 0xf2a0_0000 | ((address >> 16) << 5) | register;
    [movz, movk]
}

/// `LDR W3, [X4]`: a 32-bit load, a width virtio-mmio allows.
const LOAD_W3: u32 = 0xb940_0083;
/// `LDR X3, [X4]`: a 64-bit load, which the board table does not allow for a
/// virtio-mmio transport (its registers are 32 bits wide, virtio 1.2, 4.2.2).
const LOAD_X3: u32 = 0xf940_0083;

/// `LDP W3, W5, [X4]`: a load pair, which gives a data abort no instruction
/// syndrome (Arm ARM D24.2.48: ISV is 0 for load/store pairs).
const LOAD_PAIR: u32 = 0x2940_1483;

/// The guest of `tests/guests/minimal.s` for a partition whose transport is at
/// `own` and whose neighbour's is at `neighbour`.
fn minimal_guest(own: u32, neighbour: u32) -> Vec<u8> {
    guest_with_first_load(own, neighbour, LOAD_W3)
}

/// The same, with `first_load` as the read of its own transport.
fn guest_with_first_load(own: u32, neighbour: u32, first_load: u32) -> Vec<u8> {
    let mut words: Vec<u32> = vec![
        0x1400_0010, // b entry (0x40)
        0,           // code1
        0,
        0, // text_offset 0
        0x1000,
        0, // image_size 4 KiB
        0xa,
        0, // flags: little-endian, 4 KiB pages, anywhere in RAM
        0,
        0,
        0,
        0,
        0,
        0,           // res2..res4
        0x644d_5241, // "ARM\x64"
        0,
        // entry:
        0x1000_3e07, // adr x7, vectors (0x800)
        0xd518_c007, // msr vbar_el1, x7
        0xd503_3fdf, // isb
    ];
    words.extend(load_address(1, VIRTUAL_UART)); // x1 = the virtual PL011
    words.extend(load_address(4, own)); // x4 = own transport
    words.extend([
        first_load,  // ldr w3, [x4]: a 32-bit read, forwarded
        0x528d_2ec5, // movz w5, #0x6976
        0x72ae_8e45, // movk w5, #0x7472, lsl #16: "virt"
        0x6b05_007f, // cmp w3, w5
        0x5280_09c2, // mov w2, #'N'
        0x5280_0b26, // mov w6, #'Y'
        0x1a82_00c2, // csel w2, w6, w2, eq
        0x3900_0022, // strb w2, [x1]
    ]);
    words.extend(load_address(4, neighbour)); // x4 = the neighbour's transport
    words.extend([
        0xb940_0083, // ldr w3, [x4]: must abort
        0x5280_0b02, // mov w2, #'X'
        0x3900_0022, // strb w2, [x1]
    ]);
    let branch_at = words.len() * 4;
    words.push(0x1400_0000 | ((0xa08 - branch_at as u32) / 4)); // b off
    words.resize(0xa00 / 4, 0xd503_201f); // nop up to VBAR_EL1 + 0x200
    words.extend([
        0x5280_0822, // vectors + 0x200 (current EL, SP_ELx, synchronous): mov w2, #'A'
        0x3900_0022, // strb w2, [x1]
        // off:
        0x5280_0142, // mov w2, #'\n'
        0x3900_0022, // strb w2, [x1]
        0x5280_0100, // movz w0, #0x0008
        0x72b0_8000, // movk w0, #0x8400, lsl #16: PSCI SYSTEM_OFF
        0xd400_0002, // hvc #0
        0x1400_0000, // b .
    ]);
    words.iter().flat_map(|word| word.to_le_bytes()).collect()
}

fn write_bundle(name: &str, guests: &[(&str, Vec<u8>)]) -> PathBuf {
    let mut builder = BundleBuilder::new();
    for (partition, image) in guests {
        builder
            .add(partition, EntryKind::Image, image)
            .expect("a valid entry");
    }
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!("{name}.bundle"));
    std::fs::write(&path, builder.finish()).expect("the bundle is written");
    path
}

fn boot_with_bundle(bundle: PathBuf) -> Outcome {
    let machine = Machine::virt(GicVersion::V3, 4).expect("a valid machine");
    let image = transom_tests::built(BoardName::QemuVirt);
    let mut config = RunConfig::new(&image.image);
    config.initrd = Some(bundle);
    let elf = std::fs::read(&image.elf).expect("the ELF is readable");
    xtask::run::run(
        &machine,
        &config,
        &elf,
        Some(transom_tests::BOOT_TIMEOUT),
        xtask::run::Echo::Quiet,
    )
    .expect("QEMU runs")
}

/// Two partitions at once on CPUs 1 and 2: each reads its own transport's
/// MagicValue ("virt", virtio 1.2, 4.2.2) through a trapped window with exactly
/// its 32-bit width, gets an abort in its own vector for the neighbour's, and
/// powers off; the run ends when both have.
#[test]
fn two_minimal_guests_share_a_page_and_see_only_their_own_transport() {
    let a = (0x0a00_3e00, 0x0a00_3c00);
    let bundle = write_bundle(
        "two-minimal",
        &[
            ("linux-a", minimal_guest(a.0, a.1)),
            ("linux-b", minimal_guest(a.1, a.0)),
        ],
    );
    let outcome = boot_with_bundle(bundle);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::Pass);
    for (partition, cpu, neighbour) in [("linux-a", 1, 0xa003c00), ("linux-b", 2, 0xa003e00)] {
        assert!(
            outcome.logged(&format!("partition {partition}: vCPU 0 on CPU {cpu}")),
            "{transcript}"
        );
        // 'Y': the forwarded read returned "virt"; 'A': the neighbour's read
        // aborted into the guest's own vector.
        assert!(outcome.logged(&format!("[{partition}] YA")), "{transcript}");
        assert!(
            outcome.logged(&format!(
                "partition {partition}: read at IPA {neighbour:#x} from PC"
            )),
            "{transcript}"
        );
        assert!(
            outcome.logged(&format!(
                "partition {partition}: powered off (PSCI SYSTEM_OFF)"
            )),
            "{transcript}"
        );
    }
    assert!(
        outcome.logged("refused (outside every window of the partition): abort injected"),
        "{transcript}"
    );
    assert!(
        outcome.logged("every partition has stopped"),
        "{transcript}"
    );
}

/// A bundle whose image is not an arm64 `Image` is refused by the hypervisor with
/// the partition's name and the reason, before anything runs.
#[test]
fn a_corrupt_guest_image_is_refused() {
    let mut corrupt = minimal_guest(0x0a00_3e00, 0x0a00_3c00);
    corrupt[0x38] = b'X';
    let bundle = write_bundle("corrupt", &[("linux-a", corrupt)]);
    let outcome = boot_with_bundle(bundle);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::BadGuest);
    assert!(
        outcome
            .logged("partition linux-a: guest image: not an arm64 Image: the magic at offset 0x38"),
        "{transcript}"
    );
    assert!(!outcome.logged("vCPU 0 on CPU"), "{transcript}");
}

/// A truncated bundle is refused as a whole.
#[test]
fn a_truncated_bundle_is_refused() {
    let full = write_bundle(
        "full",
        &[("linux-a", minimal_guest(0x0a00_3e00, 0x0a00_3c00))],
    );
    let bytes = std::fs::read(&full).expect("readable");
    let path = full.with_file_name("truncated.bundle");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).expect("written");
    let outcome = boot_with_bundle(path);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::BadGuest);
    assert!(outcome.logged("guest bundle at 0x"), "{transcript}");
}

/// A width the window does not allow is refused even inside the partition's own
/// window: the 64-bit read aborts into the guest's vector ('A' straight away, no
/// 'Y'), and the hypervisor says why.
#[test]
fn an_unallowed_width_aborts_into_the_guest() {
    let bundle = write_bundle(
        "wide",
        &[(
            "linux-a",
            guest_with_first_load(0x0a00_3e00, 0x0a00_3c00, LOAD_X3),
        )],
    );
    let outcome = boot_with_bundle(bundle);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::Pass);
    assert!(
        outcome.logged("partition linux-a: read at IPA 0xa003e00 from PC 0x5000005c refused (64-bit access not allowed): abort injected"),
        "{transcript}"
    );
    assert!(outcome.logged("[linux-a] A"), "{transcript}");
    assert!(!outcome.logged("[linux-a] Y"), "{transcript}");
}

/// A load pair on the guest's own window has no syndrome to forward with: the
/// guest gets an abort in its own vector, and the hypervisor's log names the
/// instruction it read through the guest's translation (its encoding and class),
/// then carries on.
#[test]
fn a_load_pair_without_syndrome_is_named_and_aborted() {
    let bundle = write_bundle(
        "pair",
        &[(
            "linux-a",
            guest_with_first_load(0x0a00_3e00, 0x0a00_3c00, LOAD_PAIR),
        )],
    );
    let outcome = boot_with_bundle(bundle);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::Pass);
    assert!(
        outcome.logged(
            "partition linux-a: access to IPA 0xa003e00 without a syndrome (ISV = 0): the instruction at PC 0x5000005c is 0x29401483, a load/store pair (LDP/STP), which Transom does not emulate"
        ),
        "{transcript}"
    );
    assert!(
        outcome.logged("refused (no instruction syndrome (ISV = 0)): abort injected"),
        "{transcript}"
    );
    assert!(outcome.logged("[linux-a] A"), "{transcript}");
    assert!(!outcome.logged("[linux-a] Y"), "{transcript}");
}
