//! `cargo xtask ci`: every check, in the order a reviewer would run them.

use anyhow::Result;
use xshell::{Shell, cmd};

use crate::boards::AARCH64_TARGET;
use crate::{prereq, workspace_root};

/// Crates that build for the bare-metal target and are checked there.
pub const BARE_METAL_PACKAGES: [&str; 6] = [
    "transom-kernel",
    "transom-board-qemu-virt",
    "transom-board-rpi4",
    "transom-drivers",
    "transom-vmm-core",
    "transom-boards",
];

/// Formatting, lints on the host and the bare-metal target, docs, every test.
pub fn run() -> Result<()> {
    prereq::ensure_rust_targets()?;
    prereq::ensure_qemu()?;
    let sh = Shell::new()?;
    sh.change_dir(workspace_root());
    let packages: Vec<String> = BARE_METAL_PACKAGES
        .iter()
        .flat_map(|package| ["--package".to_string(), package.to_string()])
        .collect();

    step("rustfmt");
    cmd!(sh, "cargo fmt --all --check").run()?;

    step("clippy, host");
    cmd!(sh, "cargo clippy --all-targets -- -D warnings").run()?;

    step("clippy, aarch64-unknown-none");
    let clippy_packages = packages.clone();
    cmd!(
        sh,
        "cargo clippy --target {AARCH64_TARGET} {clippy_packages...} -- -D warnings"
    )
    .run()?;

    step("rustdoc");
    {
        let _deny = sh.push_env("RUSTDOCFLAGS", "-D warnings");
        cmd!(sh, "cargo doc --no-deps").run()?;
        cmd!(
            sh,
            "cargo doc --no-deps --target {AARCH64_TARGET} {packages...}"
        )
        .run()?;
    }

    step("tests (host and QEMU)");
    test()
}

/// Host unit tests and the QEMU integration tests.
pub fn test() -> Result<()> {
    prereq::ensure_rust_targets()?;
    prereq::ensure_qemu()?;
    let sh = Shell::new()?;
    sh.change_dir(workspace_root());
    cmd!(sh, "cargo test").run()?;
    Ok(())
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}
