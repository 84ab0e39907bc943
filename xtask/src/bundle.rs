//! `cargo xtask qemu --guest PARTITION=IMAGE [--initrd PARTITION=FILE]
//! [--bootargs PARTITION="..."]`: the guest bundle a run hands the hypervisor as its
//! initrd (format: `transom_vmm_core::guest::bundle`).
//!
//! Each image is checked the way the hypervisor will check it (its arm64 `Image`
//! header, and that it fits in the partition's RAM from the board table), so a wrong
//! file fails here, naming the file and the partition, instead of in the guest.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail, ensure};
use transom_boards::{Board, Partition, PhysRange};
use transom_vmm_core::bootargs::PREFIX as HYPERVISOR_OPTION_PREFIX;
use transom_vmm_core::guest::bundle::{BundleBuilder, EntryKind};
use transom_vmm_core::guest::image::{self, LoadPlan};

use crate::boards::BoardName;
use crate::workspace_root;

const GIB: u64 = 1 << 30;

/// booting.rst 4: the initrd "must reside entirely within a 1 GB aligned physical
/// memory window of up to 32 GB in size that fully covers the kernel Image as well".
const INITRD_WINDOW_ALIGNMENT: u64 = GIB;
const INITRD_WINDOW_SIZE: u64 = 32 * GIB;

/// The `--guest`, `--initrd` and `--bootargs` values of one command line, each
/// `PARTITION=VALUE`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GuestFlags {
    /// `--guest PARTITION=IMAGE`: the partition's arm64 Linux `Image`.
    pub guests: Vec<String>,
    /// `--initrd PARTITION=FILE`: the partition's initrd.
    pub initrds: Vec<String>,
    /// `--bootargs PARTITION=LINE`: the partition's kernel command line.
    pub bootargs: Vec<String>,
    /// `--boot-info PARTITION`: the partition's guest is Transom-native and gets a
    /// boot-info page in x1.
    pub boot_info: Vec<String>,
}

/// One partition's guest, from the flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestSpec {
    /// The partition, as the board table names it.
    pub partition: String,
    /// Its kernel image.
    pub image: PathBuf,
    /// Its initrd.
    pub initrd: Option<PathBuf>,
    /// Its kernel command line.
    pub command_line: Option<String>,
    /// Whether it is Transom-native and gets a boot-info page in x1.
    pub boot_info: bool,
}

/// `board`'s table.
pub fn board_table(board: BoardName) -> &'static Board {
    match board {
        BoardName::QemuVirt => &transom_board_qemu_virt::BOARD,
        BoardName::Rpi4 => &transom_board_rpi4::BOARD,
    }
}

/// Where bundles are written: `target/bundles`.
pub fn output_dir() -> PathBuf {
    workspace_root().join("target").join("bundles")
}

/// The bundle `cargo xtask qemu` writes for `board`: [`output_dir`]`/<board>.bundle`.
pub fn default_path(board: BoardName) -> PathBuf {
    output_dir().join(format!("{}.bundle", board.name()))
}

/// The bundle for `board` with the guests `flags` name, written to `path`; `None`
/// when no `--guest` is given.
pub fn prepare(board: BoardName, flags: &GuestFlags, path: &Path) -> Result<Option<PathBuf>> {
    let guests = parse_flags(board_table(board), flags)?;
    if guests.is_empty() {
        return Ok(None);
    }
    write_file(board, &guests, path).map(Some)
}

/// Reads the flags into one [`GuestSpec`] per `--guest`, in their order.
///
/// Refuses a value without `=`, a partition `board` does not have, a partition given
/// twice to one flag, and `--initrd` or `--bootargs` for a partition without
/// `--guest`.
pub fn parse_flags(board: &Board, flags: &GuestFlags) -> Result<Vec<GuestSpec>> {
    let mut guests: Vec<GuestSpec> = Vec::new();
    for value in &flags.guests {
        let (partition, path) = split_flag(board, "--guest", "PARTITION=IMAGE", value)?;
        ensure!(!path.is_empty(), "--guest {value}: no image path after '='");
        if guests.iter().any(|guest| guest.partition == partition) {
            bail!("--guest {value}: partition {partition} is given twice");
        }
        guests.push(GuestSpec {
            partition: partition.to_string(),
            image: PathBuf::from(path),
            initrd: None,
            command_line: None,
            boot_info: false,
        });
    }
    for partition in &flags.boot_info {
        let value = partition.as_str();
        let guest = guest_for(&mut guests, "--boot-info", value, value)?;
        ensure!(
            !guest.boot_info,
            "--boot-info {value}: partition {value} is given twice"
        );
        guest.boot_info = true;
    }
    for value in &flags.initrds {
        let (partition, path) = split_flag(board, "--initrd", "PARTITION=FILE", value)?;
        ensure!(!path.is_empty(), "--initrd {value}: no file path after '='");
        let guest = guest_for(&mut guests, "--initrd", value, partition)?;
        ensure!(
            guest.initrd.is_none(),
            "--initrd {value}: partition {partition} is given twice"
        );
        guest.initrd = Some(PathBuf::from(path));
    }
    for value in &flags.bootargs {
        let (partition, line) = split_flag(board, "--bootargs", "PARTITION=\"...\"", value)?;
        let guest = guest_for(&mut guests, "--bootargs", value, partition)?;
        ensure!(
            guest.command_line.is_none(),
            "--bootargs {value}: partition {partition} is given twice"
        );
        guest.command_line = Some(line.to_string());
    }
    Ok(guests)
}

/// Checks the words of `--bootarg` (the hypervisor's command line): each is a
/// `transom.*` option. The hypervisor skips any other word without a message, so a
/// guest's kernel option given there by mistake would vanish; it is refused here
/// with where it belongs.
pub fn check_hypervisor_bootargs(bootargs: &[String]) -> Result<()> {
    for value in bootargs {
        for word in value.split_ascii_whitespace() {
            ensure!(
                word.starts_with(HYPERVISOR_OPTION_PREFIX),
                "--bootarg {value}: {word:?} is not a hypervisor option (those start with \
                 {HYPERVISOR_OPTION_PREFIX:?}); a guest's kernel command line goes in \
                 --bootargs PARTITION=\"...\""
            );
        }
    }
    Ok(())
}

/// `PARTITION=VALUE` split at the first `=`, with a partition `board` has.
fn split_flag<'a>(
    board: &Board,
    flag: &str,
    form: &str,
    value: &'a str,
) -> Result<(&'a str, &'a str)> {
    let Some((partition, rest)) = value.split_once('=') else {
        bail!("{flag} {value}: expected {form} (no '=' in it)");
    };
    if find_partition(board, partition).is_none() {
        if partition.starts_with(HYPERVISOR_OPTION_PREFIX) {
            bail!(
                "{flag} {value}: {partition} is a hypervisor option, not a partition; \
                 give the hypervisor's options with --bootarg {value}"
            );
        }
        let known: Vec<&str> = board.partitions.iter().map(|known| known.name).collect();
        bail!(
            "{flag} {value}: the {} board has no partition {partition:?}; its partitions \
             are {}",
            board.name,
            known.join(", ")
        );
    }
    Ok((partition, rest))
}

/// The guest `--guest` gave `partition`.
fn guest_for<'a>(
    guests: &'a mut [GuestSpec],
    flag: &str,
    value: &str,
    partition: &str,
) -> Result<&'a mut GuestSpec> {
    guests
        .iter_mut()
        .find(|guest| guest.partition == partition)
        .ok_or_else(|| {
            anyhow!(
                "{flag} {value}: partition {partition} has no --guest image (add --guest \
                 {partition}=IMAGE)"
            )
        })
}

fn find_partition<'b>(board: &'b Board, name: &str) -> Option<&'b Partition> {
    board
        .partitions
        .iter()
        .find(|partition| partition.name == name)
}

/// The bank a partition's image goes in: its lowest (booting.rst 4 places the image
/// as close as possible to the start of RAM).
fn image_bank(partition: &Partition) -> Result<PhysRange> {
    partition
        .ram
        .iter()
        .min_by_key(|bank| bank.start)
        .copied()
        .ok_or_else(|| anyhow!("partition {} has no RAM in the board table", partition.name))
}

/// Reads and checks every guest's files and builds the bundle's bytes.
pub fn build(board: &Board, guests: &[GuestSpec]) -> Result<Vec<u8>> {
    let mut builder = BundleBuilder::new();
    for guest in guests {
        add_guest(board, guest, &mut builder)?;
    }
    Ok(builder.finish())
}

/// Checks one guest's files and adds them to `builder`.
fn add_guest(board: &Board, guest: &GuestSpec, builder: &mut BundleBuilder) -> Result<()> {
    let name = guest.partition.as_str();
    let Some(partition) = find_partition(board, name) else {
        bail!("the {} board has no partition {name:?}", board.name);
    };
    let ram = image_bank(partition)?;

    let image_bytes = read(&guest.image, "guest image", name)?;
    let image_error = |error: image::ImageError| {
        anyhow!(
            "guest image for partition {name} ({}): {error}",
            guest.image.display()
        )
    };
    let header = image::parse(&image_bytes).map_err(image_error)?;
    let plan = image::plan(&header, image_bytes.len() as u64, ram).map_err(image_error)?;
    builder.add(name, EntryKind::Image, &image_bytes)?;

    if let Some(path) = &guest.initrd {
        let initrd = read(path, "initrd", name)?;
        initrd_range(&plan, ram, initrd.len() as u64).map_err(|error| {
            anyhow!(
                "initrd for partition {name} ({}): {error:#}",
                path.display()
            )
        })?;
        builder.add(name, EntryKind::Initrd, &initrd)?;
    }
    if let Some(line) = &guest.command_line {
        builder
            .add(name, EntryKind::CommandLine, line.as_bytes())
            .with_context(|| format!("--bootargs for partition {name}"))?;
    }
    if guest.boot_info {
        builder.add(name, EntryKind::BootInfo, &[])?;
    }
    Ok(())
}

/// Where an initrd of `length` bytes goes: right after the image, inside `ram`, and
/// within one 1 GiB aligned window of at most 32 GiB that covers the image too
/// (booting.rst 4).
fn initrd_range(plan: &LoadPlan, ram: PhysRange, length: u64) -> Result<PhysRange> {
    let available = ram.end.saturating_sub(plan.end);
    let Some(range) = PhysRange::checked(plan.end, length).filter(|_| length <= available) else {
        bail!(
            "{length:#x} bytes, the partition's RAM {ram} has {available:#x} after the \
             image (which ends at {:#x})",
            plan.end
        );
    };
    let window_start = plan.load_address & !(INITRD_WINDOW_ALIGNMENT - 1);
    let window = range.end - window_start;
    ensure!(
        window <= INITRD_WINDOW_SIZE,
        "the image and initrd span {window:#x} bytes from the 1 GiB boundary \
         {window_start:#x}; Linux needs both within a 1 GiB aligned window of at most \
         32 GiB"
    );
    Ok(range)
}

/// Reads `path`, `what` for `partition`.
fn read(path: &Path, what: &str, partition: &str) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| {
        format!(
            "reading the {what} for partition {partition} ({})",
            path.display()
        )
    })
}

/// Builds `board`'s bundle and writes it to `dir/<board>.bundle`; returns its path.
pub fn write(board: BoardName, guests: &[GuestSpec], dir: &Path) -> Result<PathBuf> {
    write_file(board, guests, &dir.join(format!("{}.bundle", board.name())))
}

/// Builds `board`'s bundle and writes it to `path`; returns the path.
pub fn write_file(board: BoardName, guests: &[GuestSpec], path: &Path) -> Result<PathBuf> {
    let bytes = build(board_table(board), guests)?;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
    Ok(path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use transom_vmm_core::guest::bundle::{Bundle, GuestFiles};

    use super::*;

    const MIB: u64 = 1 << 20;

    /// A directory under the system's temporary directory, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(test: &str) -> TempDir {
            let path = std::env::temp_dir().join(format!(
                "transom-xtask-bundle-{}-{test}",
                std::process::id()
            ));
            let _ = fs::remove_dir_all(&path);
            fs::create_dir_all(&path).expect("create a temporary directory");
            TempDir(path)
        }

        fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
            let path = self.0.join(name);
            fs::write(&path, bytes).expect("write a temporary file");
            path
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    /// An arm64 `Image` as booting.rst 4 lays out its header: `text_offset` at 0x08,
    /// `image_size` at 0x10, flags at 0x18 (little-endian, 4K pages), "ARM\x64" at
    /// 0x38; then a few bytes of "code".
    fn arm64_image(image_size: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; 64];
        bytes[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        bytes[0x18..0x20].copy_from_slice(&0b0010u64.to_le_bytes());
        bytes[0x38..0x3c].copy_from_slice(b"ARM\x64");
        bytes.extend_from_slice(&[0xd5, 0x03, 0x20, 0x1f]);
        bytes
    }

    fn flags(guests: &[&str], initrds: &[&str], bootargs: &[&str]) -> GuestFlags {
        let owned = |values: &[&str]| values.iter().map(|value| value.to_string()).collect();
        GuestFlags {
            guests: owned(guests),
            initrds: owned(initrds),
            bootargs: owned(bootargs),
            boot_info: Vec::new(),
        }
    }

    #[test]
    fn boot_info_marks_a_guest_native_and_needs_its_guest() {
        let mut given = flags(&["linux-a=a/Image", "linux-b=b/Image"], &[], &[]);
        given.boot_info = vec!["linux-b".into()];
        let guests = parse_flags(qemu_virt(), &given).expect("valid flags");
        assert_eq!(
            guests
                .iter()
                .map(|guest| guest.boot_info)
                .collect::<Vec<_>>(),
            [false, true]
        );
        let mut orphan = flags(&["linux-a=a/Image"], &[], &[]);
        orphan.boot_info = vec!["linux-b".into()];
        let error = parse_flags(qemu_virt(), &orphan).expect_err("no guest");
        assert_eq!(
            error.to_string(),
            "--boot-info linux-b: partition linux-b has no --guest image (add --guest \
             linux-b=IMAGE)"
        );
    }

    fn qemu_virt() -> &'static Board {
        board_table(BoardName::QemuVirt)
    }

    fn parse_error(flags: &GuestFlags) -> String {
        format!(
            "{:#}",
            parse_flags(qemu_virt(), flags).expect_err("refused")
        )
    }

    #[test]
    fn board_tables_match_their_names() {
        for board in BoardName::ALL {
            assert_eq!(board_table(board).name, board.name());
        }
    }

    #[test]
    fn flags_become_one_spec_per_guest() {
        let flags = flags(
            &["linux-a=out/Image", "linux-b=other/Image"],
            &["linux-a=rootfs.cpio"],
            &["linux-a=console=ttyAMA0 root=/dev/ram0"],
        );
        let guests = parse_flags(qemu_virt(), &flags).expect("valid flags");
        assert_eq!(
            guests,
            [
                GuestSpec {
                    partition: "linux-a".into(),
                    image: "out/Image".into(),
                    initrd: Some("rootfs.cpio".into()),
                    command_line: Some("console=ttyAMA0 root=/dev/ram0".into()),
                    boot_info: false,
                },
                GuestSpec {
                    partition: "linux-b".into(),
                    image: "other/Image".into(),
                    initrd: None,
                    command_line: None,
                    boot_info: false,
                },
            ]
        );
        assert!(
            parse_flags(qemu_virt(), &GuestFlags::default())
                .expect("no flags")
                .is_empty()
        );
        // An empty command line is a command line.
        let empty = parse_flags(
            qemu_virt(),
            &self::flags(&["linux-a=I"], &[], &["linux-a="]),
        )
        .expect("valid");
        assert_eq!(empty[0].command_line.as_deref(), Some(""));
    }

    #[test]
    fn flag_errors_say_what_is_wrong() {
        assert_eq!(
            parse_error(&flags(&["Image"], &[], &[])),
            "--guest Image: expected PARTITION=IMAGE (no '=' in it)"
        );
        assert_eq!(
            parse_error(&flags(&["linux-a=I"], &["rootfs.cpio"], &[])),
            "--initrd rootfs.cpio: expected PARTITION=FILE (no '=' in it)"
        );
        assert_eq!(
            parse_error(&flags(&["linux-c=Image"], &[], &[])),
            "--guest linux-c=Image: the qemu-virt board has no partition \"linux-c\"; \
             its partitions are linux-a, linux-b"
        );
        assert_eq!(
            parse_error(&flags(&["linux-a=one", "linux-a=two"], &[], &[])),
            "--guest linux-a=two: partition linux-a is given twice"
        );
        assert_eq!(
            parse_error(&flags(&["linux-a=I"], &["linux-a=x", "linux-a=y"], &[])),
            "--initrd linux-a=y: partition linux-a is given twice"
        );
        assert_eq!(
            parse_error(&flags(
                &["linux-a=I"],
                &[],
                &["linux-a=quiet", "linux-a=debug"]
            )),
            "--bootargs linux-a=debug: partition linux-a is given twice"
        );
        assert_eq!(
            parse_error(&flags(&["linux-a=I"], &["linux-b=rootfs.cpio"], &[])),
            "--initrd linux-b=rootfs.cpio: partition linux-b has no --guest image (add \
             --guest linux-b=IMAGE)"
        );
        assert_eq!(
            parse_error(&flags(&[], &[], &["linux-b=quiet"])),
            "--bootargs linux-b=quiet: partition linux-b has no --guest image (add \
             --guest linux-b=IMAGE)"
        );
        assert_eq!(
            parse_error(&flags(&["linux-a="], &[], &[])),
            "--guest linux-a=: no image path after '='"
        );
        // The two command-line flags, each given the other's value.
        assert_eq!(
            parse_error(&flags(&["linux-a=I"], &[], &["transom.selftest=panic"])),
            "--bootargs transom.selftest=panic: transom.selftest is a hypervisor option, \
             not a partition; give the hypervisor's options with --bootarg \
             transom.selftest=panic"
        );
        let error = check_hypervisor_bootargs(&[
            "transom.exit=psci".to_string(),
            "transom.granule=64k console=ttyAMA0".to_string(),
        ])
        .expect_err("a guest's option is not the hypervisor's");
        assert_eq!(
            error.to_string(),
            "--bootarg transom.granule=64k console=ttyAMA0: \"console=ttyAMA0\" is not a \
             hypervisor option (those start with \"transom.\"); a guest's kernel command \
             line goes in --bootargs PARTITION=\"...\""
        );
        check_hypervisor_bootargs(&["transom.selftest=stage2 transom.granule=16k".to_string()])
            .expect("hypervisor options");
        // The rpi4 table lists its own partitions.
        let error = parse_flags(
            board_table(BoardName::Rpi4),
            &flags(&["linux-a=Image"], &[], &[]),
        )
        .expect_err("no linux-a on the Pi");
        assert!(
            error
                .to_string()
                .ends_with("its partitions are serial-guest, gpio-guest"),
            "{error}"
        );
    }

    #[test]
    fn a_bundle_holds_the_checked_files() {
        let dir = TempDir::new("holds");
        let image_a = arm64_image(32 * MIB);
        let image_b = arm64_image(0);
        let guests = [
            GuestSpec {
                partition: "linux-a".into(),
                image: dir.file("Image-a", &image_a),
                initrd: Some(dir.file("rootfs.cpio", b"070701 cpio")),
                command_line: Some("console=ttyAMA0".into()),
                boot_info: false,
            },
            GuestSpec {
                partition: "linux-b".into(),
                image: dir.file("Image-b", &image_b),
                initrd: None,
                command_line: None,
                boot_info: false,
            },
        ];
        let path = write(BoardName::QemuVirt, &guests, &dir.0).expect("written");
        assert_eq!(path, dir.0.join("qemu-virt.bundle"));
        let bytes = fs::read(&path).expect("read back");
        let bundle = Bundle::parse(&bytes).expect("a valid bundle");
        assert_eq!(
            bundle.partitions().collect::<Vec<_>>(),
            ["linux-a", "linux-b"]
        );
        assert_eq!(
            bundle.guest("linux-a"),
            Some(GuestFiles {
                image: &image_a,
                initrd: Some(b"070701 cpio"),
                command_line: Some("console=ttyAMA0"),
                boot_info: false,
            })
        );
        assert_eq!(bundle.guest("linux-b").expect("linux-b").image, image_b);
    }

    #[test]
    fn a_bad_image_is_named_with_its_partition_and_file() {
        let dir = TempDir::new("bad-image");
        let spec = |path: PathBuf| GuestSpec {
            partition: "linux-a".into(),
            image: path,
            initrd: None,
            command_line: None,
            boot_info: false,
        };
        let build_error = |path: PathBuf| {
            format!(
                "{:#}",
                build(qemu_virt(), &[spec(path)]).expect_err("refused")
            )
        };

        let gzip = dir.file("Image.gz", &[0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0, 3]);
        assert_eq!(
            build_error(gzip.clone()),
            format!(
                "guest image for partition linux-a ({}): gzip-compressed (starts with 1f 8b): \
                 arm64 Linux has no decompressor, decompress it first (gunzip -c Image.gz > \
                 Image)",
                gzip.display()
            )
        );

        let mut elf = vec![0u8; 128];
        elf[..4].copy_from_slice(b"\x7fELF");
        let elf = dir.file("vmlinux", &elf);
        assert_eq!(
            build_error(elf.clone()),
            format!(
                "guest image for partition linux-a ({}): not an arm64 Image: the magic at \
                 offset 0x38 is 0x00000000, not \"ARM\\x64\" (0x644d5241)",
                elf.display()
            )
        );

        // image_size 512 MiB: more than linux-a's 256 MiB at 0x5000_0000.
        let big = dir.file("Image-big", &arm64_image(512 * MIB));
        assert_eq!(
            build_error(big.clone()),
            format!(
                "guest image for partition linux-a ({}): needs 0x20000000 bytes from \
                 0x50000000 (text_offset 0x0 + image 0x20000000), the partition's RAM \
                 0x50000000..0x60000000 has 0x10000000",
                big.display()
            )
        );

        let missing = dir.0.join("no-such-Image");
        let error = build_error(missing.clone());
        assert!(
            error.starts_with(&format!(
                "reading the guest image for partition linux-a ({}): ",
                missing.display()
            )),
            "{error}"
        );
    }

    #[test]
    fn an_initrd_must_fit_after_the_image() {
        let dir = TempDir::new("initrd-fit");
        // The image claims all but 4 KiB of linux-a's 256 MiB.
        let image = dir.file("Image", &arm64_image(256 * MIB - 4096));
        let initrd = dir.file("rootfs.cpio", &[0u8; 8192]);
        let guest = GuestSpec {
            partition: "linux-a".into(),
            image,
            initrd: Some(initrd.clone()),
            command_line: None,
            boot_info: false,
        };
        let error = build(qemu_virt(), std::slice::from_ref(&guest)).expect_err("no room");
        assert_eq!(
            format!("{error:#}"),
            format!(
                "initrd for partition linux-a ({}): 0x2000 bytes, the partition's RAM \
                 0x50000000..0x60000000 has 0x1000 after the image (which ends at \
                 0x5ffff000)",
                initrd.display()
            )
        );
        let fits = GuestSpec {
            initrd: Some(dir.file("small.cpio", &[0u8; 4096])),
            ..guest
        };
        assert!(build(qemu_virt(), &[fits]).is_ok());
    }

    #[test]
    fn an_initrd_stays_in_the_32_gib_window_of_the_image() {
        // booting.rst 4: the initrd lies within a 1 GiB aligned window of up to 32 GiB
        // that covers the kernel image too.
        let ram = PhysRange::new(0x8_0000_0000, 64 * GIB);
        let plan = LoadPlan {
            base: 0x8_4000_0000,
            load_address: 0x8_4000_0000,
            end: 0x8_4200_0000,
        };
        let range = initrd_range(&plan, ram, 16 * MIB).expect("inside the window");
        assert_eq!(range, PhysRange::new(0x8_4200_0000, 16 * MIB));
        let limit = 32 * GIB - 32 * MIB;
        assert!(initrd_range(&plan, ram, limit).is_ok());
        let error = initrd_range(&plan, ram, limit + 1).expect_err("past 32 GiB");
        assert!(
            error
                .to_string()
                .ends_with("Linux needs both within a 1 GiB aligned window of at most 32 GiB"),
            "{error}"
        );
    }

    #[test]
    fn a_command_line_with_nul_is_refused() {
        let dir = TempDir::new("nul");
        let guest = GuestSpec {
            partition: "linux-a".into(),
            image: dir.file("Image", &arm64_image(MIB)),
            initrd: None,
            command_line: Some("quiet\0debug".into()),
            boot_info: false,
        };
        let error = build(qemu_virt(), &[guest]).expect_err("NUL");
        assert_eq!(
            format!("{error:#}"),
            "--bootargs for partition linux-a: the command line of partition linux-a has \
             a NUL byte (at byte 5)"
        );
    }
}
