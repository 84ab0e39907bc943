//! `cargo xtask`: build images, boot them under QEMU, decode their defmt logs, test.
//!
//! The library half is what the QEMU integration tests (`tests/`) drive; the binary
//! is a thin clap front end over it.

#![forbid(unsafe_code)]

pub mod bench;
pub mod boards;
pub mod bundle;
pub mod ci;
pub mod cntvct;
pub mod compression;
pub mod cpio;
pub mod debian;
pub mod disk;
pub mod guest_bench;
pub mod guest_run;
pub mod image;
pub mod linux;
pub mod linux_bench;
pub mod log_decode;
pub mod prereq;
pub mod run;

use std::path::{Path, PathBuf};

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace root")
        .to_path_buf()
}
