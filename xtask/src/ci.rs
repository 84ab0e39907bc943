//! `cargo xtask ci`: every check, in the order a reviewer would run them.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use xshell::{Shell, cmd};

use crate::boards::{AARCH64_TARGET, GUEST_TARGET};
use crate::{prereq, workspace_root};

/// Crates that build for the hypervisor's bare-metal target and are checked there.
pub const BARE_METAL_PACKAGES: [&str; 6] = [
    "transom-kernel",
    "transom-board-qemu-virt",
    "transom-board-rpi4",
    "transom-drivers",
    "transom-vmm-core",
    "transom-boards",
];

/// Board crates: their tables (the library) build and are tested on the host, their
/// images (the binary) only for the bare-metal target.
pub const BOARD_PACKAGES: [&str; 2] = ["transom-board-qemu-virt", "transom-board-rpi4"];

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
    let board_tables = board_package_args();
    cmd!(
        sh,
        "cargo clippy --lib --tests {board_tables...} -- -D warnings"
    )
    .run()?;

    step("clippy, aarch64-unknown-none-softfloat");
    let clippy_packages = packages.clone();
    cmd!(
        sh,
        "cargo clippy --target {AARCH64_TARGET} {clippy_packages...} -- -D warnings"
    )
    .run()?;
    // The test guest is linted and documented like the kernel, for the target it
    // is built for (`image::build_test_guest`).
    step("clippy, the test guest (aarch64-unknown-none)");
    let guest = crate::image::TEST_GUEST_PACKAGE;
    cmd!(
        sh,
        "cargo clippy --target {GUEST_TARGET} --package {guest} -- -D warnings"
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
        cmd!(
            sh,
            "cargo doc --no-deps --target {GUEST_TARGET} --package {guest}"
        )
        .run()?;
    }

    step("tests (host and QEMU)");
    test()
}

/// Host unit tests and the QEMU integration tests, then one summary line
/// (`N passed, N failed`) over every test binary.
pub fn test() -> Result<()> {
    prereq::ensure_rust_targets()?;
    prereq::ensure_qemu()?;
    let mut totals = TestTotals::default();
    let workspace = run_tests(&[], &mut totals);
    let board_tables = board_package_args();
    let mut lib_args = vec!["--lib".to_string()];
    lib_args.extend(board_tables);
    let tables = run_tests(&lib_args, &mut totals);
    println!(
        "\ntests: {} passed, {} failed",
        totals.passed, totals.failed
    );
    workspace?;
    tables?;
    ensure!(totals.passed > 0, "cargo test ran no test");
    Ok(())
}

/// `-p <crate>` for each board crate.
fn board_package_args() -> Vec<String> {
    BOARD_PACKAGES
        .iter()
        .flat_map(|package| ["-p".to_string(), package.to_string()])
        .collect()
}

/// Runs `cargo test ARGS`, echoing its output and adding its result lines to
/// `totals`.
fn run_tests(args: &[String], totals: &mut TestTotals) -> Result<()> {
    let mut child = Command::new(env!("CARGO"))
        .arg("test")
        .args(args)
        .current_dir(workspace_root())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting cargo test")?;
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        totals.add_result_line(&line);
    }
    let status = child.wait()?;
    ensure!(
        status.success(),
        "cargo test {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}

/// Totals over the `test result:` lines of several test binaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TestTotals {
    /// Tests that passed.
    pub passed: u64,
    /// Tests that failed.
    pub failed: u64,
}

impl TestTotals {
    /// Adds the counts of a libtest summary line such as
    /// `test result: ok. 12 passed; 0 failed; 0 ignored; ...`; other lines are ignored.
    pub fn add_result_line(&mut self, line: &str) {
        let Some(counts) = line.trim().strip_prefix("test result: ") else {
            return;
        };
        for part in counts.split(['.', ';']) {
            let mut words = part.split_whitespace();
            let (Some(number), Some(label)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(number) = number.parse::<u64>() else {
                continue;
            };
            match label {
                "passed" => self.passed += number,
                "failed" => self.failed += number,
                _ => {}
            }
        }
    }
}

fn step(name: &str) {
    eprintln!("\n==> {name}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_summed() {
        let mut totals = TestTotals::default();
        totals.add_result_line(
            "test result: ok. 12 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s",
        );
        totals.add_result_line("test result: FAILED. 3 passed; 2 failed; 1 ignored");
        totals.add_result_line("running 6 tests");
        assert_eq!(
            totals,
            TestTotals {
                passed: 15,
                failed: 2
            }
        );
    }
}
