//! Disks for guests: `cargo xtask qemu --disk PARTITION=FILE` puts a raw image on
//! the virtio-mmio transport the board table grants the partition, and the demo's
//! disks carry a signature the guest prints to show it reached its own disk.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use transom_boards::{Board, DeviceKind};
use transom_qemu::VirtioDisk;

use crate::boards::BoardName;
use crate::bundle::board_table;

/// The size of a demo disk.
pub const DISK_SIZE: usize = 1 << 20;

/// The signature on `partition`'s demo disk: its first line, at offset 0.
pub fn signature(partition: &str) -> String {
    format!("TRANSOM-DISK-{partition}")
}

/// A demo disk for `partition`: [`signature`] and a newline at offset 0, zeros to
/// [`DISK_SIZE`].
pub fn image(partition: &str) -> Vec<u8> {
    let mut bytes = vec![0u8; DISK_SIZE];
    let line = format!("{}\n", signature(partition));
    bytes[..line.len()].copy_from_slice(line.as_bytes());
    bytes
}

/// Writes [`image`] of `partition` to `path`.
pub fn write(path: &Path, partition: &str) -> Result<()> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, image(partition)).with_context(|| format!("writing {}", path.display()))
}

/// The virtio-mmio transport of QEMU `virt` that `board` grants `partition` (its
/// first virtio-mmio grant).
pub fn transport_of(board: &Board, partition: &str) -> Result<u32> {
    let Some(entry) = board
        .partitions
        .iter()
        .find(|entry| entry.name == partition)
    else {
        let known: Vec<&str> = board.partitions.iter().map(|entry| entry.name).collect();
        bail!(
            "the {} board has no partition {partition:?}; its partitions are {}",
            board.name,
            known.join(", ")
        );
    };
    let region = entry
        .grants
        .iter()
        .filter_map(|grant| board.device(grant.device))
        .find(|region| region.kind == DeviceKind::VirtioMmio)
        .ok_or_else(|| anyhow!("partition {partition} is granted no virtio-mmio transport"))?;
    transom_qemu::virt_virtio_transport(region.base).ok_or_else(|| {
        anyhow!(
            "partition {partition}'s transport {} at {:#x} is not one of QEMU virt's",
            region.name,
            region.base
        )
    })
}

/// A disk on `partition`'s transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskSpec {
    /// The partition.
    pub partition: String,
    /// The raw image.
    pub file: PathBuf,
}

/// Reads `--disk PARTITION=FILE` values: the partition must exist and have a
/// transport, the file must exist, and each partition has one disk.
pub fn parse_flags(board: BoardName, values: &[String]) -> Result<Vec<DiskSpec>> {
    let mut disks: Vec<DiskSpec> = Vec::new();
    for value in values {
        let Some((partition, file)) = value.split_once('=') else {
            bail!("--disk {value}: expected PARTITION=FILE (no '=' in it)");
        };
        ensure!(!file.is_empty(), "--disk {value}: no file path after '='");
        ensure!(
            !disks.iter().any(|disk| disk.partition == partition),
            "--disk {value}: partition {partition} is given twice"
        );
        let disk = DiskSpec {
            partition: partition.to_string(),
            file: PathBuf::from(file),
        };
        to_virtio(board, &disk).with_context(|| format!("--disk {value}"))?;
        disks.push(disk);
    }
    Ok(disks)
}

/// `disk` as QEMU takes it: the file on the partition's transport.
pub fn to_virtio(board: BoardName, disk: &DiskSpec) -> Result<VirtioDisk> {
    ensure!(
        board == BoardName::QemuVirt,
        "disks are virtio-mmio devices, which only QEMU virt has"
    );
    let transport = transport_of(board_table(board), &disk.partition)?;
    ensure!(
        disk.file.is_file(),
        "the disk of partition {} ({}) does not exist or is not a file",
        disk.partition,
        disk.file.display()
    );
    Ok(VirtioDisk {
        file: disk.file.clone(),
        transport: Some(transport),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_first_line() {
        let bytes = image("linux-a");
        assert_eq!(bytes.len(), DISK_SIZE);
        assert!(bytes.starts_with(b"TRANSOM-DISK-linux-a\n"));
        assert!(bytes[21..].iter().all(|&byte| byte == 0));
        assert_ne!(image("linux-b")[..21], bytes[..21]);
    }

    #[test]
    fn each_demo_partition_has_its_own_transport() {
        let board = board_table(BoardName::QemuVirt);
        assert_eq!(transport_of(board, "linux-a").expect("a"), 31);
        assert_eq!(transport_of(board, "linux-b").expect("b"), 30);
        let error = transport_of(board, "linux-c").expect_err("no such partition");
        assert!(error.to_string().contains("has no partition \"linux-c\""));
    }

    #[test]
    fn disk_flags_are_checked_before_qemu_starts() {
        let error = |values: &[&str]| {
            let values: Vec<String> = values.iter().map(|value| value.to_string()).collect();
            format!(
                "{:#}",
                parse_flags(BoardName::QemuVirt, &values).expect_err("refused")
            )
        };
        assert_eq!(
            error(&["disk.img"]),
            "--disk disk.img: expected PARTITION=FILE (no '=' in it)"
        );
        assert_eq!(
            error(&["linux-a=/no/such/disk.img"]),
            "--disk linux-a=/no/such/disk.img: the disk of partition linux-a \
             (/no/such/disk.img) does not exist or is not a file"
        );
        let this_file = file!();
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml");
        let manifest = manifest.display();
        assert_eq!(
            error(&[
                &format!("linux-a={manifest}"),
                &format!("linux-a={manifest}")
            ]),
            format!("--disk linux-a={manifest}: partition linux-a is given twice")
        );
        let parsed = parse_flags(BoardName::QemuVirt, &[format!("linux-b={manifest}")])
            .expect("an existing file");
        assert_eq!(
            to_virtio(BoardName::QemuVirt, &parsed[0]).expect("virtio"),
            VirtioDisk {
                file: PathBuf::from(manifest.to_string()),
                transport: Some(30),
            }
        );
        let rpi4 = parse_flags(BoardName::Rpi4, &[format!("serial-guest={this_file}")]);
        assert!(
            format!("{:#}", rpi4.expect_err("no virtio on the Pi")).ends_with("only QEMU virt has")
        );
    }
}
