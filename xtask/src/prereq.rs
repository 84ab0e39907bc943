//! Prerequisites: the Rust targets and a QEMU that has the machines we boot.
//!
//! Missing pieces are installed where that is safe to do unattended (rustup targets;
//! QEMU from Debian backports when running as root on Debian); otherwise the exact
//! commands to run are printed and the command fails.

use std::path::Path;

use anyhow::{Result, bail};
use xshell::{Shell, cmd};

use crate::boards::{AARCH64_TARGET, GUEST_TARGET};
use crate::workspace_root;

/// The Rust targets the workspace builds for (also in `rust-toolchain.toml`).
pub const RUST_TARGETS: [&str; 3] = [AARCH64_TARGET, GUEST_TARGET, "x86_64-unknown-none"];

/// Adds any missing Rust target with rustup.
pub fn ensure_rust_targets() -> Result<()> {
    let sh = Shell::new()?;
    sh.change_dir(workspace_root());
    let Ok(installed) = cmd!(sh, "rustup target list --installed").quiet().read() else {
        bail!(
            "rustup is not available; install the targets by hand: \
             `rustup target add {}`",
            RUST_TARGETS.join(" ")
        );
    };
    let missing: Vec<&str> = RUST_TARGETS
        .into_iter()
        .filter(|target| !installed.lines().any(|line| line.trim() == *target))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: adding Rust targets {}", missing.join(", "));
    cmd!(sh, "rustup target add {missing...}").run()?;
    Ok(())
}

/// What the installed QEMU can do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum QemuStatus {
    /// Not installed.
    Missing,
    /// Installed, but without the `raspi4b` machine (QEMU before 9.0).
    NoRaspi4b {
        /// `qemu-system-aarch64 --version`'s first line.
        version: String,
    },
    /// Good to go.
    Ready,
}

/// Probes `qemu-system-aarch64`.
pub fn qemu_status() -> QemuStatus {
    let Ok(sh) = Shell::new() else {
        return QemuStatus::Missing;
    };
    let Ok(version) = cmd!(sh, "qemu-system-aarch64 --version").quiet().read() else {
        return QemuStatus::Missing;
    };
    let machines = cmd!(sh, "qemu-system-aarch64 -machine help")
        .quiet()
        .read()
        .unwrap_or_default();
    if has_machine(&machines, "raspi4b") && has_machine(&machines, "virt") {
        QemuStatus::Ready
    } else {
        QemuStatus::NoRaspi4b {
            version: version.lines().next().unwrap_or_default().to_string(),
        }
    }
}

/// Whether `-machine help` output lists `machine`.
pub fn has_machine(help: &str, machine: &str) -> bool {
    help.lines()
        .any(|line| line.split_whitespace().next() == Some(machine))
}

/// The Debian release codename, if this is Debian.
fn debian_codename() -> Option<String> {
    let release = std::fs::read_to_string("/etc/os-release").ok()?;
    let is_debian = release.lines().any(|line| line == "ID=debian");
    let codename = release
        .lines()
        .find_map(|line| line.strip_prefix("VERSION_CODENAME="))?;
    is_debian.then(|| codename.trim_matches('"').to_string())
}

fn running_as_root() -> bool {
    let sh = Shell::new();
    sh.ok()
        .and_then(|sh| cmd!(sh, "id -u").quiet().read().ok())
        .is_some_and(|uid| uid.trim() == "0")
}

/// The commands that install a suitable QEMU on Debian `codename`.
pub fn qemu_install_commands(codename: &str) -> Vec<String> {
    if codename == "bookworm" {
        vec![
            "echo 'deb http://deb.debian.org/debian bookworm-backports main' \
             > /etc/apt/sources.list.d/bookworm-backports.list"
                .to_string(),
            "apt-get update".to_string(),
            "apt-get install -y -t bookworm-backports qemu-system-arm qemu-system-x86".to_string(),
        ]
    } else {
        vec![
            "apt-get update".to_string(),
            "apt-get install -y qemu-system-arm qemu-system-x86".to_string(),
        ]
    }
}

/// Makes sure a QEMU with `virt` and `raspi4b` is installed.
pub fn ensure_qemu() -> Result<()> {
    let status = qemu_status();
    if status == QemuStatus::Ready {
        return Ok(());
    }
    let problem = match &status {
        QemuStatus::Missing => "qemu-system-aarch64 is not installed".to_string(),
        QemuStatus::NoRaspi4b { version } => {
            format!("{version} has no `raspi4b` machine (needs QEMU 9.0 or later)")
        }
        QemuStatus::Ready => unreachable!("handled above"),
    };
    let codename = debian_codename();
    let commands = qemu_install_commands(codename.as_deref().unwrap_or("bookworm"));
    if codename.is_none() || !running_as_root() {
        bail!(
            "{problem}. Install QEMU 9.0 or later; on Debian, as root:\n    {}",
            commands.join("\n    ")
        );
    }
    eprintln!("xtask: {problem}; installing QEMU from Debian");
    install_qemu(codename.as_deref().unwrap_or_default())?;
    if qemu_status() != QemuStatus::Ready {
        bail!("QEMU was installed but still lacks `virt` or `raspi4b`");
    }
    Ok(())
}

fn install_qemu(codename: &str) -> Result<()> {
    let sh = Shell::new()?;
    sh.set_var("DEBIAN_FRONTEND", "noninteractive");
    if codename == "bookworm" {
        let sources = Path::new("/etc/apt/sources.list.d/bookworm-backports.list");
        let already = std::fs::read_to_string("/etc/apt/sources.list")
            .unwrap_or_default()
            .contains("bookworm-backports")
            || std::fs::read_dir("/etc/apt/sources.list.d")
                .into_iter()
                .flatten()
                .flatten()
                .any(|entry| {
                    std::fs::read_to_string(entry.path())
                        .unwrap_or_default()
                        .contains("bookworm-backports")
                });
        if !already {
            std::fs::write(
                sources,
                "deb http://deb.debian.org/debian bookworm-backports main\n",
            )?;
        }
        cmd!(sh, "apt-get update -q").run()?;
        cmd!(
            sh,
            "apt-get install -y -q -t bookworm-backports qemu-system-arm qemu-system-x86"
        )
        .run()?;
    } else {
        cmd!(sh, "apt-get update -q").run()?;
        cmd!(sh, "apt-get install -y -q qemu-system-arm qemu-system-x86").run()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machine_help_is_matched_by_first_word() {
        let help = "Supported machines are:\n\
                    raspi3b              Raspberry Pi 3B (revision 1.2)\n\
                    virt                 QEMU 7.2 ARM Virtual Machine (alias of virt-7.2)\n";
        assert!(has_machine(help, "virt"));
        assert!(!has_machine(help, "raspi4b"));
        assert!(!has_machine(help, "Raspberry"));
    }

    #[test]
    fn bookworm_installs_from_backports() {
        let commands = qemu_install_commands("bookworm");
        assert!(
            commands
                .iter()
                .any(|command| command.contains("bookworm-backports main"))
        );
        assert!(
            commands
                .last()
                .is_some_and(|command| command.contains("-t bookworm-backports"))
        );
        let trixie = qemu_install_commands("trixie");
        assert!(!trixie.iter().any(|command| command.contains("backports")));
    }
}
