//! Transom's QEMU integration tests (in `tests/`) and the helpers they share.
//!
//! Each test builds the board image (once per board per test binary), boots it under
//! QEMU with the semihosting exit convention, and asserts on the decoded defmt
//! transcript and the run's verdict.

#![forbid(unsafe_code)]

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use transom_qemu::{GicVersion, Machine, RunConfig};
use transom_vmm_core::verdict::Verdict;
use xtask::boards::BoardName;
use xtask::image::{self, BuiltImage};
use xtask::run::{self, Echo, Ending, Outcome};

/// Generous: a raspi4b boot takes about a second, but CI machines are shared.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(120);

/// The image of `board`, built once per test binary.
pub fn built(board: BoardName) -> BuiltImage {
    static IMAGES: OnceLock<Mutex<HashMap<BoardName, BuiltImage>>> = OnceLock::new();
    let images = IMAGES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut images = images
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(image) = images.get(&board) {
        return image.clone();
    }
    xtask::prereq::ensure_rust_targets().expect("Rust targets");
    xtask::prereq::ensure_qemu().expect("a QEMU with virt and raspi4b");
    let image = image::build(board).expect("the image builds");
    images.insert(board, image.clone());
    image
}

/// Boots `board` with `gic` and `cpus` and the extra hypervisor options `bootargs`.
pub fn boot(board: BoardName, gic: GicVersion, cpus: Option<u32>, bootargs: &[&str]) -> Outcome {
    let machine = board.machine(gic, cpus).expect("a valid machine");
    boot_on(board, &machine, bootargs)
}

/// Boots `board`'s image on `machine` with the extra hypervisor options `bootargs`.
pub fn boot_on(board: BoardName, machine: &Machine, bootargs: &[&str]) -> Outcome {
    let image = built(board);
    let mut config = RunConfig::new(&image.image);
    if machine.needs_device_tree() {
        config.device_tree = Some(image::rpi4_device_tree().expect("raspi4b device tree"));
    }
    config.extra_bootargs = bootargs.iter().map(|arg| arg.to_string()).collect();
    let elf = std::fs::read(&image.elf).expect("the ELF is readable");
    run::run(machine, &config, &elf, Some(BOOT_TIMEOUT), Echo::Quiet).expect("QEMU runs")
}

/// Asserts that the run ended with `verdict`, showing the transcript if not.
pub fn assert_verdict(outcome: &Outcome, verdict: Verdict) {
    assert_eq!(
        outcome.ending,
        Ending::Verdict(verdict),
        "{}",
        outcome.transcript()
    );
}
