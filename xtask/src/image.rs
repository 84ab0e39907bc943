//! Building a board's image: `cargo build` for the bare-metal target, then the ELF's
//! loadable segments laid out as the raw arm64 `Image` firmware loads.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use object::{Object, ObjectSegment};
use xshell::{Shell, cmd};

use crate::boards::BoardName;
use crate::workspace_root;

/// Offset of the arm64 `Image` magic, and the magic (Linux `booting.rst`).
const IMAGE_MAGIC_OFFSET: usize = 0x38;
const IMAGE_MAGIC: &[u8; 4] = b"ARM\x64";

/// A built image.
#[derive(Clone, Debug)]
pub struct BuiltImage {
    /// The board.
    pub board: BoardName,
    /// The linked ELF (symbols, defmt table, debug info).
    pub elf: PathBuf,
    /// The raw image to load.
    pub image: PathBuf,
    /// The raw image's size in bytes.
    pub size: u64,
}

/// Where images are built: a target directory of their own, so `cargo xtask` runs
/// inside `cargo test` without waiting on the outer cargo's lock.
pub fn target_dir() -> PathBuf {
    workspace_root().join("target").join("transom")
}

/// Builds `board`'s release image.
pub fn build(board: BoardName) -> Result<BuiltImage> {
    let sh = Shell::new()?;
    sh.change_dir(workspace_root());
    let target_dir = target_dir();
    let package = board.package();
    let target = board.target();
    cmd!(
        sh,
        "cargo build --release --package {package} --target {target} --target-dir {target_dir}"
    )
    .run()
    .with_context(|| format!("building the {} image", board.name()))?;

    let elf = target_dir.join(target).join("release").join(board.binary());
    let out_dir = target_dir.join("images").join(board.name());
    fs::create_dir_all(&out_dir)?;
    let image = out_dir.join(board.image_file_name());
    let bytes = fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?;
    let raw = raw_image(&bytes).with_context(|| format!("converting {}", elf.display()))?;
    write_whole(&image, &raw)?;
    Ok(BuiltImage {
        board,
        elf,
        image,
        size: raw.len() as u64,
    })
}

/// The test guest (`tests/guests/probe`), built.
#[derive(Clone, Debug)]
pub struct BuiltGuest {
    /// The linked ELF.
    pub elf: PathBuf,
    /// The raw arm64 `Image`.
    pub image: PathBuf,
}

/// The test guest's package.
pub const TEST_GUEST_PACKAGE: &str = "transom-test-guest";

/// Builds the test guest (`tests/guests/probe`) for `aarch64-unknown-none` as a
/// position-independent executable (`-C relocation-model=pie`: it applies its
/// own relocations, so one image runs at every partition's RAM base) and
/// converts it to a raw `Image`. Its own target directory keeps its `RUSTFLAGS`
/// from invalidating the hypervisor's build.
pub fn build_test_guest() -> Result<BuiltGuest> {
    let sh = Shell::new()?;
    sh.change_dir(workspace_root());
    let target_dir = workspace_root().join("target").join("test-guest");
    let target = crate::boards::GUEST_TARGET;
    {
        let _pie = sh.push_env("RUSTFLAGS", "-C relocation-model=pie");
        cmd!(
            sh,
            "cargo build --release --package {TEST_GUEST_PACKAGE} --target {target} --target-dir {target_dir}"
        )
        .run()
        .context("building the test guest")?;
    }
    let elf = target_dir
        .join(target)
        .join("release")
        .join(TEST_GUEST_PACKAGE);
    let bytes = fs::read(&elf).with_context(|| format!("reading {}", elf.display()))?;
    let raw = raw_image(&bytes).with_context(|| format!("converting {}", elf.display()))?;
    let out_dir = target_dir.join("images");
    fs::create_dir_all(&out_dir)?;
    let image = out_dir.join("transom-test-guest.img");
    write_whole(&image, &raw)?;
    Ok(BuiltGuest { elf, image })
}

/// Writes `bytes` to `path` so that a reader sees the old file or the new one,
/// never a half-written one: to a file of this process's own next to it, then
/// renamed over `path` (POSIX `rename` replaces atomically). Tests that run at
/// once each build the hypervisor and the test guest, and read an image another
/// may be writing.
pub fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static WRITES: AtomicUsize = AtomicUsize::new(0);
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(format!(
        ".{}.{}.tmp",
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let temporary = PathBuf::from(temporary);
    fs::write(&temporary, bytes).with_context(|| format!("writing {}", temporary.display()))?;
    fs::rename(&temporary, path)
        .with_context(|| format!("renaming {} to {}", temporary.display(), path.display()))
}

/// Lays the ELF's loadable bytes out from its lowest load address, as `objcopy -O
/// binary` does, and checks the arm64 `Image` header is at the start.
pub fn raw_image(elf: &[u8]) -> Result<Vec<u8>> {
    let file = object::File::parse(elf)?;
    let segments: Vec<_> = file
        .segments()
        .filter(|segment| segment.file_range().1 > 0)
        .collect();
    let Some(base) = segments.iter().map(|segment| segment.address()).min() else {
        bail!("the ELF has no loadable bytes");
    };
    ensure!(
        file.entry() == base,
        "the entry point {:#x} is not the first loaded byte {base:#x}",
        file.entry()
    );
    let mut image = Vec::new();
    for segment in &segments {
        let offset = usize::try_from(segment.address() - base)?;
        let data = segment.data()?;
        if image.len() < offset + data.len() {
            image.resize(offset + data.len(), 0);
        }
        image[offset..offset + data.len()].copy_from_slice(data);
    }
    let magic = image.get(IMAGE_MAGIC_OFFSET..IMAGE_MAGIC_OFFSET + IMAGE_MAGIC.len());
    ensure!(
        magic == Some(&IMAGE_MAGIC[..]),
        "no arm64 Image header at the start of the image"
    );
    Ok(image)
}

/// Writes the device tree QEMU `raspi4b` boots with and returns its path.
pub fn rpi4_device_tree() -> Result<PathBuf> {
    let blob = transom_qemu::rpi4_tree::build()
        .map_err(|error| anyhow::anyhow!("building the raspi4b device tree: {error:?}"))?;
    let path = target_dir()
        .join("images")
        .join("rpi4")
        .join("rpi4-qemu.dtb");
    fs::create_dir_all(path.parent().expect("has a parent"))?;
    write_whole(&path, &blob)?;
    Ok(path)
}

/// A human-readable size.
pub fn describe_size(path: &Path, size: u64) -> String {
    format!(
        "{} ({size} bytes, {:.1} KiB)",
        path.display(),
        size as f64 / 1024.0
    )
}
