//! A run with guests, set up the way `cargo xtask qemu` sets it up: the guest
//! bundle as QEMU's `-initrd`, each disk on the virtio-mmio transport the board
//! table grants its partition, and QEMU `virt`'s second UART captured to a file
//! when a partition with a guest is granted it. The Linux demo
//! ([`crate::linux::demo_run`]), its tests and its benchmark are set up here too.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use transom_qemu::{RunConfig, VirtioDisk};

use crate::boards::BoardName;
use crate::bundle::{self, GuestFlags};
use crate::disk::{self, DiskSpec};
use crate::image;
use crate::run::{Echo, Outcome, TimedLine, Watch};
use crate::workspace_root;

/// Where a run's files go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFiles {
    /// The guest bundle.
    pub bundle: PathBuf,
    /// The second UART's capture.
    pub second_serial: PathBuf,
}

impl RunFiles {
    /// `cargo xtask qemu`'s: `target/bundles/<board>.bundle` and
    /// `target/qemu/<board>-uart1.log`.
    pub fn for_board(board: BoardName) -> RunFiles {
        RunFiles {
            bundle: bundle::default_path(board),
            second_serial: capture_dir().join(format!("{}-uart1.log", board.name())),
        }
    }

    /// Files of their own for runs tagged `tag` (a test, a benchmark), so they
    /// leave `cargo xtask qemu`'s alone: `target/bundles/<board>-<tag>.bundle` and
    /// `target/qemu/<board>-<tag>-uart1.log`.
    pub fn tagged(board: BoardName, tag: &str) -> RunFiles {
        let name = format!("{}-{tag}", board.name());
        RunFiles {
            bundle: bundle::output_dir().join(format!("{name}.bundle")),
            second_serial: capture_dir().join(format!("{name}-uart1.log")),
        }
    }
}

/// Where second UARTs are captured.
fn capture_dir() -> PathBuf {
    workspace_root().join("target").join("qemu")
}

/// The guests' part of a run, set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestRun {
    /// The guest bundle; `None` without guests.
    pub bundle: Option<PathBuf>,
    /// The disks, each on its partition's transport.
    pub disks: Vec<VirtioDisk>,
    /// Where the second UART is captured, when a partition with a guest is granted
    /// it.
    pub second_serial: Option<PathBuf>,
    /// That partition.
    pub second_serial_owner: Option<String>,
    /// What was set up, a sentence each, for the user.
    pub notes: Vec<String>,
}

/// Writes `board`'s bundle of the guests `guests` names and checks `disks`, with
/// the files `files` names.
pub fn configure(
    board: BoardName,
    guests: &GuestFlags,
    disks: &[DiskSpec],
    files: &RunFiles,
) -> Result<GuestRun> {
    let mut notes = Vec::new();
    let bundle = bundle::prepare(board, guests, &files.bundle)?;
    if let Some(path) = &bundle {
        let size = std::fs::metadata(path)
            .with_context(|| path.display().to_string())?
            .len();
        notes.push(format!("guest bundle {}", image::describe_size(path, size)));
    }
    let mut virtio_disks = Vec::new();
    for spec in disks {
        let virtio = disk::to_virtio(board, spec)?;
        notes.push(format!(
            "disk of {}: {} on virtio-mmio transport {}",
            spec.partition,
            spec.file.display(),
            virtio.transport.unwrap_or_default()
        ));
        virtio_disks.push(virtio);
    }
    let second_serial_owner = second_serial_owner(board, guests)?;
    let second_serial = match &second_serial_owner {
        Some(owner) => {
            let path = files.second_serial.clone();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
            }
            notes.push(format!(
                "{owner}'s console (UART1) is shown as [{owner}] and kept in {}",
                path.display()
            ));
            Some(path)
        }
        None => None,
    };
    Ok(GuestRun {
        bundle,
        disks: virtio_disks,
        second_serial,
        second_serial_owner,
        notes,
    })
}

/// The partition with a guest that QEMU virt's UART1 is granted to, if any.
fn second_serial_owner(board: BoardName, guests: &GuestFlags) -> Result<Option<String>> {
    if board != BoardName::QemuVirt {
        return Ok(None);
    }
    let table = bundle::board_table(board);
    let specs = bundle::parse_flags(table, guests)?;
    let owner = specs.into_iter().find(|spec| {
        table.partitions.iter().any(|partition| {
            partition.name == spec.partition && table.grants_device(partition, "uart1")
        })
    });
    Ok(owner.map(|spec| spec.partition))
}

/// The prefix of the lines the hypervisor prints for a partition from its virtual
/// UART (`[linux-b] ...`).
pub fn virtual_uart_prefix(partition: &str) -> String {
    format!("[{partition}] ")
}

impl GuestRun {
    /// A run of the hypervisor image `image` with these guests.
    pub fn run_config(&self, image: &Path) -> RunConfig {
        let mut config = RunConfig::new(image);
        config.initrd = self.bundle.clone();
        config.disks = self.disks.clone();
        config.second_serial = self.second_serial.clone();
        config
    }

    /// How to watch the run: the second UART's lines labelled with their partition.
    pub fn watch(&self, timeout: Option<Duration>, echo: Echo) -> Watch {
        Watch {
            timeout,
            echo,
            second_serial_label: self.second_serial_owner.clone().unwrap_or_default(),
        }
    }

    /// `partition`'s console in `outcome`: the second UART's lines if it owns that
    /// UART, the lines the hypervisor printed from its virtual UART otherwise (their
    /// `[partition] ` prefix dropped).
    pub fn console(&self, outcome: &Outcome, partition: &str) -> Vec<TimedLine> {
        if self.second_serial_owner.as_deref() == Some(partition) {
            return outcome.second_serial_timed();
        }
        let prefix = virtual_uart_prefix(partition);
        outcome
            .messages_timed()
            .into_iter()
            .filter_map(|line| {
                let text = line.text.strip_prefix(&prefix)?.to_string();
                Some(TimedLine { at: line.at, text })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tagged_files_are_apart_from_the_default_ones() {
        let default = RunFiles::for_board(BoardName::QemuVirt);
        assert!(default.bundle.ends_with("target/bundles/qemu-virt.bundle"));
        assert!(
            default
                .second_serial
                .ends_with("target/qemu/qemu-virt-uart1.log")
        );
        let tagged = RunFiles::tagged(BoardName::QemuVirt, "test-linux-b");
        assert!(
            tagged
                .bundle
                .ends_with("target/bundles/qemu-virt-test-linux-b.bundle")
        );
        assert!(
            tagged
                .second_serial
                .ends_with("target/qemu/qemu-virt-test-linux-b-uart1.log")
        );
    }

    #[test]
    fn only_the_partition_granted_uart1_has_its_console_captured() {
        let flags = |partitions: &[&str]| GuestFlags {
            guests: partitions
                .iter()
                .map(|partition| format!("{partition}=Image"))
                .collect(),
            ..GuestFlags::default()
        };
        let owner = |partitions: &[&str]| {
            second_serial_owner(BoardName::QemuVirt, &flags(partitions)).expect("valid flags")
        };
        assert_eq!(owner(&["linux-a", "linux-b"]).as_deref(), Some("linux-a"));
        assert_eq!(owner(&["linux-b"]), None);
        assert_eq!(owner(&[]), None);
    }
}
