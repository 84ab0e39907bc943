//! `cargo xtask guest linux`: the Linux demo guests, from an unmodified Debian arm64
//! kernel and busybox, and a way to boot one directly on QEMU `virt` without Transom.
//!
//! ```text
//! Debian (apt-get download, dpkg-deb -x)     or by hand (--kernel/--modules/--busybox)
//!   linux-image-<release>-arm64 --> Image (raw; a gzip one is decompressed)
//!                               \-> virtio_mmio.ko, virtio_blk.ko + their depends
//!   busybox-static              --> busybox (static, aarch64)
//!           |
//!           v        per partition, under target/guests/linux/<partition>/
//!   initramfs.cpio.gz: /init, /bin/busybox, /bin/cntvct, /lib/modules/*.ko,
//!                      /dev/console
//!   disk.img: 1 MiB, "TRANSOM-DISK-<partition>" in its first sector
//! ```
//!
//! Debian's files are cached under `target/guests/linux/debian/` with the resolved
//! versions, so a second run touches neither apt nor the network (`--refresh`
//! resolves again). [`demo_run`] sets up the demo as `cargo xtask qemu --demo
//! linux` boots it, for the tests and the benchmark.

use std::collections::BTreeSet;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail, ensure};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::{Architecture, Object, ObjectSection};
use transom_qemu::{GicVersion, Machine, RunConfig, VirtCpu, VirtioDisk};
use transom_vmm_core::guest::image;

use crate::boards::BoardName;
use crate::bundle::GuestFlags;
use crate::compression::{self, Format};
use crate::debian::{self, Package, Resolved};
use crate::disk::{self, DiskSpec};
use crate::guest_run::{self, GuestRun, RunFiles};
use crate::image::BuiltImage;
use crate::run::{self, Echo, Lines, Outcome, TimedLine};
use crate::{cntvct, cpio, workspace_root};

/// The demo partitions and their kernel command lines. Each starts the initramfs's
/// `/init` and reboots instead of hanging when the kernel panics (`panic=-1`; under
/// Transom, and under QEMU's `-no-reboot`, that ends the run); none is `quiet`.
/// linux-a drives QEMU's UART1 (0x0904_0000) itself and logs from its first
/// instructions with `earlycon`; linux-b's console is the PL011 the hypervisor
/// emulates at 0x0900_0000 of its address space.
pub const DEMO_GUESTS: [(&str, &str); 2] = [
    (
        "linux-a",
        "console=ttyAMA0 earlycon=pl011,0x09040000 rdinit=/init panic=-1",
    ),
    ("linux-b", "console=ttyAMA0 rdinit=/init panic=-1"),
];

/// The command line of a direct boot on QEMU `virt` (UART0 is ttyAMA0 there), and of
/// partitions other than the demo's.
pub const DIRECT_COMMAND_LINE: &str = "console=ttyAMA0 rdinit=/init panic=-1";

/// The modules `/init` loads, as named in `modinfo`; what they depend on comes
/// along (Debian's bookworm config builds both as modules, virtio and virtio_ring
/// in).
pub const WANTED_MODULES: [&str; 2] = ["virtio_mmio", "virtio_blk"];

/// Where an initramfs keeps its modules.
const MODULE_DIR: &str = "lib/modules";

/// The kernel command line of `partition`: the demo's, or a plain one.
pub fn command_line(partition: &str) -> String {
    DEMO_GUESTS
        .iter()
        .find(|(name, _)| *name == partition)
        .map(|(_, line)| line.to_string())
        .unwrap_or_else(|| DIRECT_COMMAND_LINE.to_string())
}

/// What every line `/init` prints starts with.
pub fn marker(partition: &str) -> String {
    format!("transom-guest {partition}:")
}

/// The start of `/init`'s first line, `transom-guest <partition>: init started on
/// <release>`: the end of the boot, for the benchmark.
pub fn started(partition: &str) -> String {
    format!("{} init started", marker(partition))
}

/// The line `printk` writes when the kernel hands over to `/init`
/// (`init/main.c`, `run_init_process`).
pub const RUN_INIT: &str = "Run /init as init process";

/// Where the Linux guests are built and Debian's files cached.
pub fn cache_dir() -> PathBuf {
    workspace_root().join("target").join("guests").join("linux")
}

/// Where the files come from: by hand where given, Debian otherwise.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sources {
    /// An arm64 `Image` (or a gzip-compressed one) instead of Debian's kernel.
    pub kernel: Option<PathBuf>,
    /// A directory with the kernel's modules (`.ko`, `.ko.xz`, `.ko.gz`; a
    /// `lib/modules/<release>` tree or a flat directory).
    pub modules: Option<PathBuf>,
    /// A static arm64 busybox instead of Debian's.
    pub busybox: Option<PathBuf>,
    /// Resolve Debian's packages again instead of using the cached ones.
    pub refresh: bool,
}

/// The kernel the guests run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    /// The raw arm64 `Image`.
    pub image: PathBuf,
    /// Its release (`6.1.0-56-arm64`), from its `Linux version` banner.
    pub release: Option<String>,
    /// Where it came from, for messages.
    pub origin: String,
}

/// A kernel module for the initramfs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Module {
    /// Its name (`modinfo` `name=`).
    pub name: String,
    /// Where it was read.
    pub source: PathBuf,
    /// The modules it depends on (`depends=`), each loaded before it.
    pub depends: Vec<String>,
    /// Its `vermagic=`.
    pub vermagic: Option<String>,
    /// The ELF, decompressed.
    pub bytes: Vec<u8>,
}

/// One partition's guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Guest {
    /// The partition.
    pub partition: String,
    /// Its initramfs (`cpio` `newc`, gzip).
    pub initramfs: PathBuf,
    /// Its disk.
    pub disk: PathBuf,
    /// Its kernel command line.
    pub command_line: String,
}

/// Everything `prepare` produced.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The kernel.
    pub kernel: Kernel,
    /// The modules, in load order.
    pub modules: Vec<Module>,
    /// Where the modules came from; `None` for a kernel given by hand without
    /// modules, which must then have virtio-mmio and virtio-blk built in.
    pub modules_dir: Option<PathBuf>,
    /// The wanted modules the kernel has built in (its `modules.builtin` says so).
    pub built_in: Vec<String>,
    /// The busybox.
    pub busybox: PathBuf,
    /// The Debian packages used, if any.
    pub debian: Option<Resolved>,
    /// One per partition asked for.
    pub guests: Vec<Guest>,
}

impl Prepared {
    /// The `--guest`, `--initrd` and `--bootargs` values that boot these guests.
    pub fn guest_flags(&self) -> GuestFlags {
        let mut flags = GuestFlags::default();
        for guest in &self.guests {
            let name = &guest.partition;
            let image = self.kernel.image.display();
            flags.guests.push(format!("{name}={image}"));
            let initramfs = guest.initramfs.display();
            flags.initrds.push(format!("{name}={initramfs}"));
            flags
                .bootargs
                .push(format!("{name}={}", guest.command_line));
        }
        flags
    }

    /// The guests' disks.
    pub fn disks(&self) -> Vec<DiskSpec> {
        self.guests
            .iter()
            .map(|guest| DiskSpec {
                partition: guest.partition.clone(),
                file: guest.disk.clone(),
            })
            .collect()
    }
}

/// Fetches or takes the kernel, modules and busybox, and writes an initramfs and a
/// disk for each of `partitions`.
pub fn prepare(sources: &Sources, partitions: &[&str]) -> Result<Prepared> {
    let cache = cache_dir();
    let needs_debian = sources.kernel.is_none() || sources.busybox.is_none();
    let debian = if needs_debian {
        let files = debian_files(&cache.join("debian"), sources.refresh);
        Some(files.map_err(|error| anyhow!("{error:#}\n{}", manual_hint(sources)))?)
    } else {
        None
    };

    let kernel = match (&sources.kernel, &debian) {
        (Some(path), _) => kernel_by_hand(path, &cache.join("custom"))?,
        (None, Some(files)) => Kernel {
            release: kernel_release_of(&read(&files.image, "kernel")?),
            image: files.image.clone(),
            origin: format!("Debian {}", files.resolved.kernel),
        },
        (None, None) => unreachable!("Debian is fetched when no kernel is given"),
    };
    // Modules belong to one kernel build: Debian's go with Debian's kernel only.
    let modules_dir = match (&sources.modules, &sources.kernel, &debian) {
        (Some(dir), _, _) => Some(dir.clone()),
        (None, None, Some(files)) => Some(files.modules.clone()),
        _ => None,
    };
    let (modules, built_in) = match &modules_dir {
        Some(dir) => resolve_modules(dir, &WANTED_MODULES)?,
        None => (Vec::new(), Vec::new()),
    };
    check_vermagic(&kernel, &modules)?;

    let busybox = match (&sources.busybox, &debian) {
        (Some(path), _) => path.clone(),
        (None, Some(files)) => files.busybox.clone(),
        (None, None) => unreachable!("Debian is fetched when no busybox is given"),
    };
    let busybox_bytes = read(&busybox, "busybox")?;
    check_busybox(&busybox_bytes).with_context(|| format!("busybox {}", busybox.display()))?;

    let mut guests = Vec::new();
    for &partition in partitions {
        let dir = cache.join(partition);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let initramfs = dir.join("initramfs.cpio.gz");
        let archive = initramfs_archive(partition, &busybox_bytes, &modules)?;
        write_if_changed(&initramfs, &compression::gzip(&archive))?;
        let disk = dir.join("disk.img");
        write_if_changed(&disk, &disk::image(partition))?;
        guests.push(Guest {
            partition: partition.to_string(),
            initramfs,
            disk,
            command_line: command_line(partition),
        });
    }
    Ok(Prepared {
        kernel,
        modules,
        modules_dir,
        built_in,
        busybox,
        debian: debian.map(|files| files.resolved),
        guests,
    })
}

/// Writes `bytes` to `path` unless it holds them already, so a QEMU that has the
/// file open (another run of the same guest) does not see it change under it.
fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<()> {
    if fs::read(path).is_ok_and(|existing| existing == bytes) {
        return Ok(());
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))
}

/// How to do without apt, naming what is still missing.
fn manual_hint(sources: &Sources) -> String {
    let mut missing = Vec::new();
    if sources.kernel.is_none() {
        missing.push("--kernel PATH (an arm64 Linux Image or Image.gz, e.g. /boot/vmlinuz-* of Debian's linux-image-6.1.0-*-arm64)");
        if sources.modules.is_none() {
            missing.push("--modules DIR (that kernel's lib/modules/<release>, or a directory with virtio_mmio.ko and virtio_blk.ko; leave out if they are built in)");
        }
    }
    if sources.busybox.is_none() {
        missing.push("--busybox PATH (a static arm64 busybox, e.g. /bin/busybox of Debian's busybox-static:arm64)");
    }
    format!(
        "The Linux guest's files could not be fetched from Debian; give them by hand \
         instead:\n    {}",
        missing.join("\n    ")
    )
}

/// Debian's files, cached.
#[derive(Clone, Debug)]
struct DebianFiles {
    resolved: Resolved,
    image: PathBuf,
    modules: PathBuf,
    busybox: PathBuf,
}

/// The file naming the cached packages, written once everything else is.
const RESOLVED_FILE: &str = "resolved";

/// Debian's kernel, modules and busybox under `dir`: the cached ones, or fetched.
fn debian_files(dir: &Path, refresh: bool) -> Result<DebianFiles> {
    if !refresh && let Some(files) = cached(dir) {
        eprintln!(
            "xtask: using the cached {} and {} ({})",
            files.resolved.kernel,
            files.resolved.busybox,
            dir.display()
        );
        return Ok(files);
    }
    if let Some(problem) = debian::apt_missing() {
        bail!("{problem}");
    }
    let resolved = debian::resolve()?;
    eprintln!(
        "xtask: Debian's current arm64 kernel is {} (via {}), busybox {}",
        resolved.kernel,
        debian::KERNEL_METAPACKAGE,
        resolved.busybox.version
    );
    let _ = fs::remove_file(dir.join(RESOLVED_FILE));
    let debs_dir = dir.join("debs");
    let debs = debian::download(&[&resolved.kernel, &resolved.busybox], &debs_dir)?;
    remove_other_files(&debs_dir, &debs)?;
    let files = files_in(dir, resolved.clone());
    let unpacked = dir.join("unpacked");
    let _ = fs::remove_dir_all(&unpacked);
    unpack_kernel(&debs[0], &resolved.kernel, &unpacked.join("kernel"), &files)?;
    unpack_busybox(&debs[1], &unpacked.join("busybox"), &files.busybox)?;
    fs::remove_dir_all(&unpacked).with_context(|| format!("removing {}", unpacked.display()))?;
    fs::write(dir.join(RESOLVED_FILE), format_resolved(&resolved))?;
    Ok(files)
}

/// Removes the files in `dir` other than `keep` (packages of older versions).
fn remove_other_files(dir: &Path, keep: &[PathBuf]) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry?.path();
        if path.is_file() && !keep.contains(&path) {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

/// Unpacks the kernel package `deb` under `tree` and keeps its `Image`, the modules
/// [`WANTED_MODULES`] need (decompressed) and its `modules.builtin` in `files`.
fn unpack_kernel(deb: &Path, package: &Package, tree: &Path, files: &DebianFiles) -> Result<()> {
    debian::extract(deb, tree)?;
    let release = debian::kernel_release(&package.name)
        .ok_or_else(|| anyhow!("{} is not a kernel package", package.name))?;
    let vmlinuz = tree.join("boot").join(format!("vmlinuz-{release}"));
    let bytes = read(&vmlinuz, "Debian's kernel")?;
    let image = kernel_image(bytes).with_context(|| vmlinuz.display().to_string())?;
    fs::write(&files.image, image).with_context(|| files.image.display().to_string())?;

    // Merged-/usr packages (trixie on) keep modules under usr/lib.
    let modules_tree = ["lib", "usr/lib"]
        .iter()
        .map(|lib| tree.join(lib).join("modules").join(release))
        .find(|modules_tree| modules_tree.is_dir())
        .ok_or_else(|| anyhow!("{} has no lib/modules/{release}", deb.display()))?;
    let (modules, _) = resolve_modules(&modules_tree, &WANTED_MODULES)?;
    let _ = fs::remove_dir_all(&files.modules);
    fs::create_dir_all(&files.modules)?;
    for module in &modules {
        let path = files.modules.join(format!("{}.ko", module.name));
        fs::write(&path, &module.bytes).with_context(|| path.display().to_string())?;
    }
    let builtin = modules_tree.join(BUILTIN_LIST);
    fs::copy(&builtin, files.modules.join(BUILTIN_LIST))
        .with_context(|| format!("copying {}", builtin.display()))?;
    Ok(())
}

/// Unpacks the busybox package `deb` under `tree` and copies its busybox to `to`.
fn unpack_busybox(deb: &Path, tree: &Path, to: &Path) -> Result<()> {
    debian::extract(deb, tree)?;
    let busybox = ["bin", "usr/bin"]
        .iter()
        .map(|bin| tree.join(bin).join("busybox"))
        .find(|path| path.is_file())
        .ok_or_else(|| anyhow!("{} has no bin/busybox", deb.display()))?;
    fs::copy(&busybox, to).with_context(|| busybox.display().to_string())?;
    Ok(())
}

/// Where the cached files of `resolved` live under `dir`.
fn files_in(dir: &Path, resolved: Resolved) -> DebianFiles {
    DebianFiles {
        resolved,
        image: dir.join("Image"),
        modules: dir.join("modules"),
        busybox: dir.join("busybox"),
    }
}

/// The cache under `dir`, if it is complete.
fn cached(dir: &Path) -> Option<DebianFiles> {
    let text = fs::read_to_string(dir.join(RESOLVED_FILE)).ok()?;
    let files = files_in(dir, parse_resolved(&text)?);
    let complete = files.image.is_file() && files.modules.is_dir() && files.busybox.is_file();
    complete.then_some(files)
}

/// The cache's record of the packages: `kernel=NAME VERSION`, `busybox=NAME VERSION`.
pub fn format_resolved(resolved: &Resolved) -> String {
    format!(
        "kernel={} {}\nbusybox={} {}\n",
        resolved.kernel.name,
        resolved.kernel.version,
        resolved.busybox.name,
        resolved.busybox.version
    )
}

/// Reads [`format_resolved`]'s output.
pub fn parse_resolved(text: &str) -> Option<Resolved> {
    let package = |key: &str| {
        let line = text
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))?;
        let (name, version) = line.split_once(' ')?;
        Some(Package {
            name: name.to_string(),
            version: version.to_string(),
        })
    };
    Some(Resolved {
        kernel: package("kernel")?,
        busybox: package("busybox")?,
    })
}

/// A kernel given by hand: checked, and decompressed to `dir/Image` if it must be.
fn kernel_by_hand(path: &Path, dir: &Path) -> Result<Kernel> {
    let bytes = read(path, "--kernel")?;
    let compressed = Format::detect(&bytes) != Format::Plain || is_zboot(&bytes);
    let image = kernel_image(bytes).with_context(|| format!("--kernel {}", path.display()))?;
    let release = kernel_release_of(&image);
    let origin = format!("--kernel {}", path.display());
    if !compressed {
        return Ok(Kernel {
            image: path.to_path_buf(),
            release,
            origin,
        });
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let out = dir.join("Image");
    fs::write(&out, image).with_context(|| format!("writing {}", out.display()))?;
    Ok(Kernel {
        image: out,
        release,
        origin,
    })
}

/// The EFI zboot header (`drivers/firmware/efi/libstub/zboot-header.S`): "MZ", then
/// "zimg" at 4, the payload's offset at 8 and size at 12, the compression's name at
/// 24.
const ZBOOT_MAGIC_OFFSET: usize = 4;
const ZBOOT_MAGIC: &[u8; 4] = b"zimg";
const ZBOOT_PAYLOAD_OFFSET: usize = 8;
const ZBOOT_PAYLOAD_SIZE: usize = 12;
const ZBOOT_COMPRESSION: usize = 24;

fn is_zboot(bytes: &[u8]) -> bool {
    bytes.starts_with(b"MZ")
        && bytes.get(ZBOOT_MAGIC_OFFSET..ZBOOT_MAGIC_OFFSET + 4) == Some(&ZBOOT_MAGIC[..])
}

fn le32(bytes: &[u8], offset: usize) -> Option<usize> {
    let field = bytes.get(offset..offset + 4)?;
    Some(u32::from_le_bytes(field.try_into().ok()?) as usize)
}

/// The raw arm64 `Image` in a kernel file: as is (bookworm's `vmlinuz` is one), or
/// out of gzip or a gzip EFI zboot image; checked like the bundle checks it.
pub fn kernel_image(bytes: Vec<u8>) -> Result<Vec<u8>> {
    let image = if is_zboot(&bytes) {
        let payload = le32(&bytes, ZBOOT_PAYLOAD_OFFSET)
            .zip(le32(&bytes, ZBOOT_PAYLOAD_SIZE))
            .and_then(|(offset, size)| bytes.get(offset..offset.checked_add(size)?))
            .ok_or_else(|| anyhow!("an EFI zboot image whose payload is out of the file"))?;
        let name: String = bytes[ZBOOT_COMPRESSION..]
            .iter()
            .take_while(|&&byte| byte != 0 && byte.is_ascii_graphic())
            .map(|&byte| char::from(byte))
            .collect();
        ensure!(
            name == "gzip",
            "an EFI zboot image compressed with {name:?}; only gzip is handled, extract the \
             Image by hand"
        );
        compression::gunzip(payload).context("gunzip the EFI zboot payload")?
    } else {
        compression::decompress(bytes, "the kernel")?
    };
    image::parse(&image).map_err(|error| anyhow!("{error}"))?;
    Ok(image)
}

/// The release in a kernel's `Linux version 6.1.0-56-arm64 (...)` banner.
pub fn kernel_release_of(image: &[u8]) -> Option<String> {
    const BANNER: &[u8] = b"Linux version ";
    let start = image
        .windows(BANNER.len())
        .position(|window| window == BANNER)?
        + BANNER.len();
    let release: Vec<u8> = image[start..]
        .iter()
        .take_while(|byte| byte.is_ascii_graphic())
        .copied()
        .collect();
    (!release.is_empty()).then(|| String::from_utf8_lossy(&release).into_owned())
}

/// The list of modules a kernel has built in, in its `lib/modules/<release>`.
const BUILTIN_LIST: &str = "modules.builtin";

/// A module's name from its file name: `virtio-rng.ko.xz` is `virtio_rng`.
pub fn module_name(file_name: &str) -> Option<String> {
    let (stem, _) = file_name.split_once(".ko")?;
    let suffix = &file_name[stem.len()..];
    let known = [".ko", ".ko.xz", ".ko.gz", ".ko.zst"].contains(&suffix);
    known.then(|| stem.replace('-', "_"))
}

/// What a module's `.modinfo` section says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ModInfo {
    /// `name=`.
    pub name: Option<String>,
    /// `depends=`, split at commas.
    pub depends: Vec<String>,
    /// `vermagic=`.
    pub vermagic: Option<String>,
}

/// Parses a `.modinfo` section: `key=value` strings, each ended by NUL.
pub fn parse_modinfo(section: &[u8]) -> ModInfo {
    let mut info = ModInfo::default();
    for entry in section.split(|&byte| byte == 0) {
        let entry = String::from_utf8_lossy(entry);
        let Some((key, value)) = entry.split_once('=') else {
            continue;
        };
        match key {
            "name" => info.name = Some(value.to_string()),
            "vermagic" => info.vermagic = Some(value.to_string()),
            "depends" => {
                info.depends = value
                    .split(',')
                    .filter(|name| !name.is_empty())
                    .map(|name| name.replace('-', "_"))
                    .collect();
            }
            _ => {}
        }
    }
    info
}

/// The `.modinfo` of an aarch64 module.
fn modinfo(bytes: &[u8]) -> Result<ModInfo> {
    let file = object::File::parse(bytes).context("not an ELF file")?;
    ensure!(
        file.architecture() == Architecture::Aarch64,
        "a {:?} module, not an aarch64 one",
        file.architecture()
    );
    let section = file
        .section_by_name(".modinfo")
        .ok_or_else(|| anyhow!("no .modinfo section: not a kernel module"))?;
    Ok(parse_modinfo(section.data()?))
}

/// The modules `wanted` needs from `dir`, dependencies first, and those of `wanted`
/// the kernel has built in (per `dir/modules.builtin`).
pub fn resolve_modules(dir: &Path, wanted: &[&str]) -> Result<(Vec<Module>, Vec<String>)> {
    ensure!(
        dir.is_dir(),
        "the modules directory {} does not exist",
        dir.display()
    );
    let mut index = std::collections::BTreeMap::new();
    index_modules(dir, &mut index)?;
    let built_in = built_in_modules(dir);
    let mut resolver = Resolver {
        dir,
        index: &index,
        built_in: &built_in,
        loading: Vec::new(),
        modules: Vec::new(),
    };
    let mut wanted_built_in = Vec::new();
    for name in wanted {
        if !index.contains_key(*name) && built_in.contains(*name) {
            wanted_built_in.push(name.to_string());
            continue;
        }
        resolver.visit(name)?;
    }
    Ok((resolver.modules, wanted_built_in))
}

/// Every module file under `dir`, by module name.
fn index_modules(
    dir: &Path,
    index: &mut std::collections::BTreeMap<String, PathBuf>,
) -> Result<()> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if path.is_dir() {
            index_modules(&path, index)?;
        } else if let Some(name) = path
            .file_name()
            .and_then(|name| module_name(&name.to_string_lossy()))
        {
            index.entry(name).or_insert(path);
        }
    }
    Ok(())
}

/// The names in `dir/modules.builtin` (`kernel/drivers/virtio/virtio.ko` lines).
fn built_in_modules(dir: &Path) -> BTreeSet<String> {
    let text = fs::read_to_string(dir.join(BUILTIN_LIST)).unwrap_or_default();
    text.lines()
        .filter_map(|line| line.rsplit('/').next())
        .filter_map(module_name)
        .collect()
}

/// A depth-first walk of `depends=`.
struct Resolver<'a> {
    dir: &'a Path,
    index: &'a std::collections::BTreeMap<String, PathBuf>,
    built_in: &'a BTreeSet<String>,
    loading: Vec<String>,
    modules: Vec<Module>,
}

impl Resolver<'_> {
    fn visit(&mut self, name: &str) -> Result<()> {
        if self.modules.iter().any(|module| module.name == name) {
            return Ok(());
        }
        ensure!(
            !self.loading.iter().any(|loading| loading == name),
            "modules depend on each other in a circle: {} -> {name}",
            self.loading.join(" -> ")
        );
        let Some(path) = self.index.get(name) else {
            if self.built_in.contains(name) {
                return Ok(());
            }
            let needed_by = match self.loading.last() {
                Some(parent) => format!(" (needed by {parent})"),
                None => String::new(),
            };
            bail!(
                "module {name}{needed_by} is neither in {} nor listed in its {BUILTIN_LIST}",
                self.dir.display()
            );
        };
        let bytes = compression::decompress(read(path, "module")?, &path.display().to_string())?;
        let info = modinfo(&bytes).with_context(|| format!("module {}", path.display()))?;
        self.loading.push(name.to_string());
        for dependency in &info.depends {
            self.visit(dependency)?;
        }
        self.loading.pop();
        self.modules.push(Module {
            name: name.to_string(),
            source: path.clone(),
            depends: info.depends,
            vermagic: info.vermagic,
            bytes,
        });
        Ok(())
    }
}

/// Refuses modules built for another kernel release than `kernel`'s: the guest's
/// `insmod` would fail with no more than "Invalid module format".
fn check_vermagic(kernel: &Kernel, modules: &[Module]) -> Result<()> {
    let Some(release) = &kernel.release else {
        return Ok(());
    };
    for module in modules {
        let Some(built_for) = module
            .vermagic
            .as_deref()
            .and_then(|magic| magic.split_whitespace().next())
        else {
            continue;
        };
        ensure!(
            built_for == release,
            "module {} ({}) is built for Linux {built_for}, but the kernel ({}) is {release}",
            module.name,
            module.source.display(),
            kernel.origin
        );
    }
    Ok(())
}

/// Refuses a busybox that is not a static aarch64 ELF.
fn check_busybox(bytes: &[u8]) -> Result<()> {
    let file =
        ElfFile64::<object::Endianness>::parse(bytes).context("not a 64-bit ELF executable")?;
    ensure!(
        file.architecture() == Architecture::Aarch64,
        "built for {:?}, not aarch64",
        file.architecture()
    );
    let endian = file.endian();
    let dynamic = file
        .elf_program_headers()
        .iter()
        .any(|header| header.p_type(endian) == object::elf::PT_INTERP);
    ensure!(
        !dynamic,
        "dynamically linked; the initramfs has no libc, use a static one (busybox-static)"
    );
    Ok(())
}

/// The `/init` of `partition`'s initramfs, loading `modules` in order (file names
/// under `/lib/modules`).
pub fn init_script(partition: &str, modules: &[&str]) -> String {
    let marker = marker(partition);
    let modules = modules.join(" ");
    let counter_program = cntvct::PATH;
    let counter_word = cntvct::COUNTER;
    format!(
        r#"#!/bin/busybox sh
# /init of Transom's Linux demo guest for partition {partition}, written by
# `cargo xtask guest linux`. Every line it prints starts with "{marker}".
# /{counter_program} prints the virtual counter, which counts from QEMU's reset.
/bin/busybox mkdir -p /proc /sys /dev /sbin /usr/bin /usr/sbin /tmp
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() {{ echo "{marker} $*"; }}
counter=$(/{counter_program})
say "init started on $(uname -r)"
say "{counter_word} $counter at init start"
for module in {modules}; do
    insmod /{MODULE_DIR}/$module.ko || say "insmod $module.ko failed"
done
grep -i -e virtio -e pl011 -e serial -e uart /proc/iomem | while read -r line; do
    say "iomem $line"
done
tries=0
while [ ! -b /dev/vda ] && [ $tries -lt 50 ]; do
    usleep 100000
    tries=$((tries + 1))
done
if [ -b /dev/vda ]; then
    signature=$(dd if=/dev/vda bs=512 count=1 2>/dev/null | head -n 1 | tr -d '\000')
    say "vda signature $signature"
else
    say "no /dev/vda"
fi
say "powering off"
poweroff -f
say "poweroff failed"
"#
    )
}

/// The initramfs of `partition` (uncompressed `newc`).
pub fn initramfs_archive(partition: &str, busybox: &[u8], modules: &[Module]) -> Result<Vec<u8>> {
    let mut archive = cpio::Archive::new();
    for dir in ["bin", "dev", "lib", MODULE_DIR, "proc", "sys"] {
        archive.directory(dir, 0o755)?;
    }
    // The kernel opens /dev/console for /init's stdin, stdout and stderr before
    // devtmpfs is mounted: TTYAUX_MAJOR 5, minor 1 (devices.txt).
    archive.char_device("dev/console", 0o600, 5, 1)?;
    archive.file("bin/busybox", 0o755, busybox)?;
    archive.symlink("bin/sh", "busybox")?;
    archive.file(cntvct::PATH, 0o755, &cntvct::program())?;
    let mut names = Vec::new();
    for module in modules {
        archive.file(
            &format!("{MODULE_DIR}/{}.ko", module.name),
            0o644,
            &module.bytes,
        )?;
        names.push(module.name.as_str());
    }
    archive.file("init", 0o755, init_script(partition, &names).as_bytes())?;
    Ok(archive.finish())
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("reading the {what} {}", path.display()))
}

/// What a direct boot printed, and how it ended.
#[derive(Clone, Debug)]
pub struct DirectBoot {
    /// The console (UART0) output.
    pub console: String,
    /// The console's lines, with when each reached the host from QEMU's start.
    pub lines: Vec<TimedLine>,
    /// QEMU's exit status: 0 when the guest powered off.
    pub status: Option<i32>,
    /// Whether the run was killed at its timeout.
    pub timed_out: bool,
    /// From QEMU's start to its exit.
    pub elapsed: Duration,
    /// What QEMU printed on stderr.
    pub stderr: String,
}

/// How a direct boot runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectOptions {
    /// Kill QEMU after this long.
    pub timeout: Duration,
    /// Print the console as it comes.
    pub echo: bool,
    /// Run under `-icount shift=0` ([`transom_qemu::ICOUNT_ARGUMENTS`]).
    pub icount: bool,
}

/// QEMU's arguments for booting `image` with `initramfs` directly on `virt` (one
/// Cortex-A72, 256 MiB, GICv3, no Transom), `disk` on the transport linux-a has
/// under Transom, the console on stdout.
pub fn direct_boot_args(image: &Path, initramfs: &Path, disk: &Path) -> Vec<String> {
    let mut args: Vec<String> = [
        "-machine",
        "virt,gic-version=3",
        "-cpu",
        VirtCpu::CortexA72.qemu_name(),
        "-smp",
        "1",
        "-m",
        "256M",
        "-display",
        "none",
        "-monitor",
        "none",
        "-no-reboot",
        "-chardev",
        "stdio,id=console,signal=off",
        "-serial",
        "chardev:console",
        "-kernel",
    ]
    .map(String::from)
    .to_vec();
    args.push(image.display().to_string());
    args.push("-initrd".into());
    args.push(initramfs.display().to_string());
    args.push("-append".into());
    args.push(DIRECT_COMMAND_LINE.into());
    let transport = transom_qemu::VIRT_VIRTIO_MMIO_TRANSPORTS - 1;
    args.extend(transom_qemu::disk_arguments(&[VirtioDisk {
        file: disk.to_path_buf(),
        transport: Some(transport),
    }]));
    args
}

/// Boots `guest` with `image` directly on QEMU `virt` (see [`direct_boot_args`]) and
/// returns its console.
pub fn boot_directly(image: &Path, guest: &Guest, options: &DirectOptions) -> Result<DirectBoot> {
    let binary = "qemu-system-aarch64";
    let mut args = direct_boot_args(image, &guest.initramfs, &guest.disk);
    if options.icount {
        args.extend(transom_qemu::ICOUNT_ARGUMENTS.map(String::from));
    }
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {binary}"))?;
    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let echo = options.echo;
    let console = thread::spawn(move || {
        let mut lines = Lines::default();
        let mut buffer = [0u8; 4096];
        while let Ok(count) = stdout.read(&mut buffer) {
            if count == 0 {
                break;
            }
            if echo {
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(&buffer[..count]);
                let _ = out.flush();
            }
            lines.feed(&buffer[..count], started.elapsed());
        }
        lines.finish(started.elapsed());
        lines
    });
    let errors = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let mut timed_out = false;
    let status = loop {
        if let Some(status) = child.try_wait().context("waiting for QEMU")? {
            break status;
        }
        if started.elapsed() >= options.timeout {
            timed_out = true;
            let _ = child.kill();
            break child.wait().context("waiting for QEMU")?;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let elapsed = started.elapsed();
    let console = console.join().unwrap_or_default();
    Ok(DirectBoot {
        console: String::from_utf8_lossy(console.bytes()).replace('\r', ""),
        lines: console.timed(),
        status: status.code(),
        timed_out,
        elapsed,
        stderr: errors.join().unwrap_or_default(),
    })
}

/// The demo's partitions, in [`DEMO_GUESTS`] order.
pub fn demo_partitions() -> Vec<&'static str> {
    DEMO_GUESTS.iter().map(|(name, _)| *name).collect()
}

/// The Linux demo's guests, as a qemu-virt run takes them.
#[derive(Clone, Debug)]
pub struct DemoGuests {
    /// Their files.
    pub prepared: Prepared,
    /// The `--guest`, `--initrd` and `--bootargs` values that boot them.
    pub flags: GuestFlags,
    /// Their disks.
    pub disks: Vec<DiskSpec>,
}

/// The guests of `partitions` (some of [`DEMO_GUESTS`]) with the files of
/// `sources`, [`prepare`]d; each partition gets its demo disk unless `disks` (given
/// by hand) has one for it.
pub fn demo_guests(
    sources: &Sources,
    partitions: &[&str],
    mut disks: Vec<DiskSpec>,
) -> Result<DemoGuests> {
    let demo = demo_partitions();
    for partition in partitions {
        ensure!(
            demo.contains(partition),
            "{partition} is not a partition of the Linux demo ({})",
            demo.join(", ")
        );
    }
    let prepared = prepare(sources, partitions)?;
    for demo_disk in prepared.disks() {
        if !disks
            .iter()
            .any(|disk| disk.partition == demo_disk.partition)
        {
            disks.push(demo_disk);
        }
    }
    Ok(DemoGuests {
        flags: prepared.guest_flags(),
        prepared,
        disks,
    })
}

/// The machine `cargo xtask qemu --demo linux` boots without other options: QEMU
/// `virt` with GICv3 and four Cortex-A72s.
pub fn demo_machine() -> Result<Machine> {
    let machine = BoardName::QemuVirt.machine(GicVersion::V3, None)?;
    Ok(machine.with_cpu(VirtCpu::CortexA72))
}

/// A Linux demo run on qemu-virt, set up.
#[derive(Clone, Debug)]
pub struct DemoRun {
    /// The QEMU machine.
    pub machine: Machine,
    /// The hypervisor's image.
    pub image: BuiltImage,
    /// The guests' files.
    pub guests: DemoGuests,
    /// The guests' part of the run.
    pub guest_run: GuestRun,
    /// What QEMU runs; change it (`icount`) before [`DemoRun::boot`].
    pub config: RunConfig,
}

/// Sets up the Linux demo with `partitions` alone (some of [`DEMO_GUESTS`]), as
/// `cargo xtask qemu --demo linux` sets it up with its default machine
/// ([`demo_machine`]): Debian's files, fetched once and then cached
/// ([`prepare`]); the bundle and the second UART's capture in `files`; each
/// partition's disk on its own transport, and no disk for the others.
pub fn demo_run(image: &BuiltImage, partitions: &[&str], files: &RunFiles) -> Result<DemoRun> {
    let board = BoardName::QemuVirt;
    let guests = demo_guests(&Sources::default(), partitions, Vec::new())?;
    let guest_run = guest_run::configure(board, &guests.flags, &guests.disks, files)?;
    let config = guest_run.run_config(&image.image);
    Ok(DemoRun {
        machine: demo_machine()?,
        image: image.clone(),
        guests,
        guest_run,
        config,
    })
}

impl DemoRun {
    /// Boots it, killing QEMU after `timeout`.
    pub fn boot(&self, timeout: Duration, echo: Echo) -> Result<Outcome> {
        let elf = fs::read(&self.image.elf)
            .with_context(|| format!("reading {}", self.image.elf.display()))?;
        let watch = self.guest_run.watch(Some(timeout), echo);
        run::run_watched(&self.machine, &self.config, &elf, &watch)
    }

    /// `partition`'s console lines in `outcome` (see [`GuestRun::console`]).
    pub fn console(&self, outcome: &Outcome, partition: &str) -> Vec<TimedLine> {
        self.guest_run.console(outcome, partition)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An arm64 `Image` header (booting.rst 4): "ARM\x64" at 0x38, 4K pages.
    fn arm64_image() -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        bytes[0x10..0x18].copy_from_slice(&(1u64 << 20).to_le_bytes());
        bytes[0x18..0x20].copy_from_slice(&0b0010u64.to_le_bytes());
        bytes[0x38..0x3c].copy_from_slice(b"ARM\x64");
        bytes.extend_from_slice(b"Linux version 6.1.0-56-arm64 (debian-kernel@lists.debian.org)");
        bytes
    }

    #[test]
    fn a_raw_or_gzip_image_is_accepted() {
        let raw = arm64_image();
        assert_eq!(kernel_image(raw.clone()).expect("raw"), raw);
        let gzipped = compression::gzip(&raw);
        assert!(compression::is_gzip(&gzipped));
        assert_eq!(kernel_image(gzipped).expect("gzip"), raw);
        assert_eq!(kernel_release_of(&raw).as_deref(), Some("6.1.0-56-arm64"));
        assert_eq!(kernel_release_of(b"no banner"), None);
    }

    #[test]
    fn a_gzip_zboot_image_is_unpacked() {
        let payload = compression::gzip(&arm64_image());
        let mut zboot = vec![0u8; 64];
        zboot[..4].copy_from_slice(b"MZ\0\0");
        zboot[4..8].copy_from_slice(b"zimg");
        zboot[8..12].copy_from_slice(&64u32.to_le_bytes());
        zboot[12..16].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        zboot[24..29].copy_from_slice(b"gzip\0");
        zboot.extend_from_slice(&payload);
        assert_eq!(kernel_image(zboot.clone()).expect("zboot"), arm64_image());
        zboot[24..29].copy_from_slice(b"zstd\0");
        let error = kernel_image(zboot).expect_err("zstd zboot");
        assert!(error.to_string().contains("\"zstd\""), "{error}");
    }

    #[test]
    fn a_non_image_is_refused() {
        let error = kernel_image(b"\x7fELF and more bytes than a header needs........".repeat(2))
            .expect_err("ELF");
        assert!(
            error.to_string().starts_with("not an arm64 Image"),
            "{error}"
        );
    }

    #[test]
    fn modinfo_names_dependencies() {
        let section = b"license=GPL\0depends=virtio,virtio_ring\0retpoline=Y\0\
                        name=virtio_blk\0vermagic=6.1.0-56-arm64 SMP mod_unload aarch64\0";
        assert_eq!(
            parse_modinfo(section),
            ModInfo {
                name: Some("virtio_blk".into()),
                depends: vec!["virtio".into(), "virtio_ring".into()],
                vermagic: Some("6.1.0-56-arm64 SMP mod_unload aarch64".into()),
            }
        );
        assert_eq!(parse_modinfo(b"depends=\0").depends, Vec::<String>::new());
        assert_eq!(module_name("virtio_blk.ko").as_deref(), Some("virtio_blk"));
        assert_eq!(
            module_name("virtio-rng.ko.xz").as_deref(),
            Some("virtio_rng")
        );
        assert_eq!(module_name("virtio.ko.gz").as_deref(), Some("virtio"));
        assert_eq!(module_name("modules.order"), None);
        assert_eq!(module_name("x.kobj"), None);
    }

    #[test]
    fn the_init_script_loads_modules_and_reads_the_disk() {
        let script = init_script("linux-a", &["virtio_mmio", "virtio_blk"]);
        assert!(script.starts_with("#!/bin/busybox sh\n"));
        assert!(script.contains("for module in virtio_mmio virtio_blk; do"));
        assert!(script.contains("insmod /lib/modules/$module.ko"));
        assert!(script.contains(r#"say() { echo "transom-guest linux-a: $*"; }"#));
        // The counter is read just before the marker and printed after it.
        assert!(script.contains(
            "counter=$(/bin/cntvct)\nsay \"init started on $(uname -r)\"\n\
             say \"CNTVCT_EL0 $counter at init start\"\n"
        ));
        assert!(script.contains("dd if=/dev/vda bs=512 count=1"));
        assert!(script.contains("\npoweroff -f\n"));
    }

    #[test]
    fn the_cache_record_round_trips() {
        let resolved = Resolved {
            kernel: Package {
                name: "linux-image-6.1.0-56-arm64".into(),
                version: "6.1.192-2".into(),
            },
            busybox: Package {
                name: "busybox-static".into(),
                version: "1:1.35.0-4+deb12u1+b1".into(),
            },
        };
        let text = format_resolved(&resolved);
        assert_eq!(
            text,
            "kernel=linux-image-6.1.0-56-arm64 6.1.192-2\n\
             busybox=busybox-static 1:1.35.0-4+deb12u1+b1\n"
        );
        assert_eq!(parse_resolved(&text), Some(resolved));
        assert_eq!(parse_resolved("kernel=x 1\n"), None);
    }

    #[test]
    fn demo_command_lines_boot_the_initramfs_and_never_hang() {
        for (partition, _) in DEMO_GUESTS {
            let line = command_line(partition);
            assert!(line.contains("rdinit=/init"), "{line}");
            assert!(line.contains("panic=-1"), "{line}");
            assert!(!line.split_whitespace().any(|option| option == "quiet"));
        }
        assert!(command_line("linux-a").contains("earlycon=pl011,0x09040000"));
        assert_eq!(
            command_line("other"),
            "console=ttyAMA0 rdinit=/init panic=-1"
        );
        let args = direct_boot_args(Path::new("I"), Path::new("r.gz"), Path::new("d.img"));
        let after = |flag: &str| {
            args.iter()
                .position(|arg| arg == flag)
                .map(|index| args[index + 1].as_str())
        };
        assert_eq!(after("-append"), Some(DIRECT_COMMAND_LINE));
        assert_eq!(after("-initrd"), Some("r.gz"));
        assert_eq!(
            after("-device"),
            Some("virtio-blk-device,drive=disk0,bus=virtio-mmio-bus.31")
        );
    }
}
