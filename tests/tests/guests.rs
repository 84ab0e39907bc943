//! Guest bundles Transom refuses before anything runs: an image without the arm64
//! `Image` magic (Linux `Documentation/arch/arm64/booting.rst`: "ARM\x64" at
//! offset 0x38), in the first partition or a later one; a truncated bundle; and a
//! bundle that reaches into a partition's RAM. The image is the test guest
//! (`tests/guests/probe`, see `test_guests.rs` for what it checks when it runs).

use std::path::PathBuf;

use transom_qemu::{GicVersion, Machine, RunConfig};
use transom_tests::assert_verdict;
use transom_vmm_core::guest::bundle::{BundleBuilder, EntryKind};
use transom_vmm_core::verdict::Verdict;
use xtask::boards::BoardName;
use xtask::run::Outcome;

/// The test guest's raw `Image`.
fn test_guest() -> Vec<u8> {
    let guest = xtask::image::build_test_guest().expect("the test guest builds");
    std::fs::read(&guest.image).expect("the guest image is readable")
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

/// A bundle whose image is not an arm64 `Image` is refused by the hypervisor with
/// the partition's name and the reason, before anything runs.
#[test]
fn a_corrupt_guest_image_is_refused() {
    let mut corrupt = test_guest();
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
    let full = write_bundle("full", &[("linux-a", test_guest())]);
    let bytes = std::fs::read(&full).expect("readable");
    let path = full.with_file_name("truncated.bundle");
    std::fs::write(&path, &bytes[..bytes.len() - 100]).expect("written");
    let outcome = boot_with_bundle(path);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::BadGuest);
    assert!(outcome.logged("guest bundle at 0x"), "{transcript}");
}

/// Every guest is checked before any starts: a corrupt image for linux-b refuses
/// the run before linux-a, whose guest is sound, is started.
#[test]
fn a_corrupt_second_guest_refuses_the_run_before_the_first_starts() {
    let mut corrupt = test_guest();
    corrupt[0x38] = b'X';
    let bundle = write_bundle(
        "corrupt-second",
        &[("linux-a", test_guest()), ("linux-b", corrupt)],
    );
    let outcome = boot_with_bundle(bundle);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::BadGuest);
    assert!(
        outcome.logged("partition linux-b: guest image: not an arm64 Image"),
        "{transcript}"
    );
    assert!(!outcome.logged("vCPU 0 on CPU"), "{transcript}");
}

/// QEMU `virt` puts the initrd 128 MiB into RAM (`hw/arm/boot.c`: `loader_start +
/// MIN(ram_size / 2, 128 MiB)`, 0x4800_0000), so a bundle of 129 MiB reaches
/// linux-a's RAM from 0x5000_0000. The guests copied there would overwrite it, and
/// linux-a's guest could read the other partitions' files: the cross-check of the
/// board table against the firmware refuses it before anything runs.
#[test]
fn a_bundle_in_a_partitions_ram_is_refused() {
    let mut builder = BundleBuilder::new();
    builder
        .add("linux-a", EntryKind::Image, &test_guest())
        .expect("a valid entry");
    builder
        .add("linux-a", EntryKind::Initrd, &vec![0; 129 << 20])
        .expect("a valid entry");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("large.bundle");
    std::fs::write(&path, builder.finish()).expect("the bundle is written");
    let outcome = boot_with_bundle(path.clone());
    // 129 MiB: not kept after the run.
    let _ = std::fs::remove_file(&path);
    let transcript = outcome.transcript();
    assert_verdict(&outcome, Verdict::BoardMismatch);
    assert!(
        outcome.logged("the firmware's initrd 0x48000000..0x"),
        "{transcript}"
    );
    assert!(
        outcome.logged("lies in RAM of partition linux-a"),
        "{transcript}"
    );
    assert!(!outcome.logged("vCPU 0 on CPU"), "{transcript}");
}
