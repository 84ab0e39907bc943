//! `cargo xtask`: Transom's build, run and test driver.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand, ValueEnum};
use transom_qemu::{GicVersion, VirtCpu};
use xtask::boards::BoardName;
use xtask::guest_run::{self, RunFiles};
use xtask::run::{Echo, Ending};
use xtask::{bench, bundle, ci, disk, image, linux, prereq, run};

#[derive(Parser)]
#[command(about = "Build, boot and test Transom", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build a board's release image and print its size.
    Build(BuildArgs),
    /// Build and boot a board under QEMU, decode its defmt log, exit with its verdict.
    Qemu(QemuArgs),
    /// Run the host tests and the QEMU integration tests.
    Test,
    /// Everything CI checks: fmt, clippy (host and aarch64), docs, tests.
    Ci,
    /// Measurements (stage-2 table pages and build time per granule, the guest
    /// figures, Linux boot time); prints a table and writes JSON under target/bench.
    Bench(BenchArgs),
    /// Build guests' files for the demo partitions.
    Guest(GuestArgs),
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Only the guest figures (trapped access, direct access, null HVC, entry to
    /// the first guest instruction).
    #[arg(long)]
    guests: bool,
}

#[derive(clap::Args)]
struct GuestArgs {
    #[command(subcommand)]
    kind: GuestKind,
}

#[derive(Subcommand)]
enum GuestKind {
    /// Debian's arm64 kernel and busybox (cached under target/guests/linux), and an
    /// initramfs and a disk for linux-a and linux-b.
    Linux(LinuxArgs),
}

#[derive(clap::Args)]
struct LinuxArgs {
    #[command(flatten)]
    sources: SourceArgs,
    /// Then boot linux-a's kernel, initramfs and disk directly on QEMU virt, without
    /// Transom, and print its console.
    #[arg(long)]
    direct: bool,
    /// Seconds the direct boot may take.
    #[arg(long, default_value_t = 120)]
    direct_timeout: u64,
}

/// Where the Linux guest's files come from; Debian for those not given.
#[derive(clap::Args)]
struct SourceArgs {
    /// An arm64 Linux Image (or gzip-compressed Image) instead of Debian's kernel;
    /// without --modules, virtio-mmio and virtio-blk must be built in.
    #[arg(long, value_name = "PATH")]
    kernel: Option<PathBuf>,
    /// The kernel's modules: its lib/modules/<release>, or a directory with
    /// virtio_mmio.ko and virtio_blk.ko (and what they depend on).
    #[arg(long, value_name = "DIR")]
    modules: Option<PathBuf>,
    /// A static arm64 busybox instead of Debian's busybox-static.
    #[arg(long, value_name = "PATH")]
    busybox: Option<PathBuf>,
    /// Resolve and fetch Debian's packages again instead of using the cached ones.
    #[arg(long)]
    refresh: bool,
}

impl SourceArgs {
    fn sources(&self) -> linux::Sources {
        linux::Sources {
            kernel: self.kernel.clone(),
            modules: self.modules.clone(),
            busybox: self.busybox.clone(),
            refresh: self.refresh,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Demo {
    /// Debian Linux in linux-a (console on UART1) and linux-b (console on the
    /// hypervisor's virtual UART), each with its own virtio disk.
    Linux,
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The board to build for.
    #[arg(long, value_enum, default_value = "qemu-virt")]
    board: BoardName,
}

#[derive(Clone, Copy, ValueEnum)]
enum GicArg {
    V2,
    V3,
}

#[derive(Clone, Copy, ValueEnum)]
enum CpuArg {
    /// Cortex-A72 (the Pi 4's core): 4 and 64 KiB stage-2 granules.
    CortexA72,
    /// QEMU's `max`: also the 16 KiB granule.
    Max,
}

#[derive(clap::Args)]
struct QemuArgs {
    /// The board to boot.
    #[arg(long, value_enum, default_value = "qemu-virt")]
    board: BoardName,
    /// GIC version of QEMU `virt`.
    #[arg(long, value_enum, default_value = "v3")]
    gic: GicArg,
    /// CPU model of QEMU `virt` (`raspi4b` always has Cortex-A72s).
    #[arg(long, value_enum, default_value = "cortex-a72")]
    cpu: CpuArg,
    /// CPUs (`virt`: 1..=8, default 4; `raspi4b` always has 4).
    #[arg(long)]
    smp: Option<u32>,
    /// Seconds before the run is killed and reported as timed out [default: 120,
    /// 300 with --demo].
    #[arg(long)]
    timeout: Option<u64>,
    /// Wait for GDB on localhost:1234 before the first instruction (no timeout).
    #[arg(long)]
    gdb: bool,
    /// Print the console's raw bytes instead of decoding them.
    #[arg(long)]
    raw: bool,
    /// Extra hypervisor options, e.g. `transom.selftest=panic` (only `transom.*`
    /// words: a guest's kernel command line is `--bootargs`).
    #[arg(long = "bootarg")]
    bootargs: Vec<String>,
    /// A partition's guest kernel, an arm64 Linux `Image` (repeat for each
    /// partition); the guests go to the hypervisor in a bundle passed as `-initrd`.
    #[arg(long = "guest", value_name = "PARTITION=IMAGE")]
    guests: Vec<String>,
    /// The initrd of a partition given with `--guest`.
    #[arg(long = "initrd", value_name = "PARTITION=FILE")]
    initrds: Vec<String>,
    /// The kernel command line of a partition given with `--guest` (not the
    /// hypervisor's: that is `--bootarg`).
    #[arg(long = "bootargs", value_name = "PARTITION=\"...\"")]
    guest_bootargs: Vec<String>,
    /// A partition given with `--guest` whose guest is Transom-native: it gets
    /// the address of its boot-info page (its windows, exact offsets, widths and
    /// interrupts) in x1; Linux guests must not be given this.
    #[arg(long = "boot-info", value_name = "PARTITION")]
    boot_info: Vec<String>,
    /// A raw disk image for a partition, on the virtio-mmio transport the board
    /// table grants it (QEMU virt).
    #[arg(long = "disk", value_name = "PARTITION=FILE")]
    disks: Vec<String>,
    /// Boot a ready-made set of guests (fills --guest, --initrd, --bootargs and
    /// --disk; see `cargo xtask guest linux`).
    #[arg(long, value_enum, conflicts_with_all = ["guests", "initrds", "guest_bootargs", "boot_info"])]
    demo: Option<Demo>,
    #[command(flatten, next_help_heading = "With --demo linux")]
    sources: SourceArgs,
}

fn main() -> ExitCode {
    match dispatch(Cli::parse().command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("xtask: error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Build(args) => build(&args).map(|()| ExitCode::SUCCESS),
        Command::Qemu(args) => qemu(&args),
        Command::Test => ci::test().map(|()| ExitCode::SUCCESS),
        Command::Ci => ci::run().map(|()| ExitCode::SUCCESS),
        Command::Bench(args) => if args.guests {
            bench::guests()
        } else {
            bench::run()
        }
        .map(|()| ExitCode::SUCCESS),
        Command::Guest(GuestArgs {
            kind: GuestKind::Linux(args),
        }) => guest_linux(&args),
    }
}

fn build(args: &BuildArgs) -> Result<()> {
    prereq::ensure_rust_targets()?;
    let built = image::build(args.board)?;
    println!(
        "{} image: {}",
        args.board.name(),
        image::describe_size(&built.image, built.size)
    );
    Ok(())
}

fn qemu(args: &QemuArgs) -> Result<ExitCode> {
    prereq::ensure_rust_targets()?;
    prereq::ensure_qemu()?;
    let gic = match args.gic {
        GicArg::V2 => GicVersion::V2,
        GicArg::V3 => GicVersion::V3,
    };
    let cpu = match args.cpu {
        CpuArg::CortexA72 => VirtCpu::CortexA72,
        CpuArg::Max => VirtCpu::Max,
    };
    if matches!(args.cpu, CpuArg::Max) && args.board != BoardName::QemuVirt {
        bail!("--cpu max is for QEMU virt; raspi4b always has Cortex-A72s");
    }
    bundle::check_hypervisor_bootargs(&args.bootargs)?;
    let machine = args.board.machine(gic, args.smp)?.with_cpu(cpu);
    let (guests, disks) = guests_and_disks(args)?;
    let guest_run = guest_run::configure(
        args.board,
        &guests,
        &disks,
        &RunFiles::for_board(args.board),
    )?;
    let built = image::build(args.board)?;
    eprintln!(
        "xtask: booting {} on QEMU {} ({} CPUs), image {}",
        args.board.name(),
        machine.machine_type(),
        machine.cpus(),
        image::describe_size(&built.image, built.size)
    );
    for note in &guest_run.notes {
        eprintln!("xtask: {note}");
    }
    let mut config = guest_run.run_config(&built.image);
    if machine.needs_device_tree() {
        config.device_tree = Some(image::rpi4_device_tree()?);
    }
    config.gdb = args.gdb;
    config.extra_bootargs = args.bootargs.clone();
    let elf = std::fs::read(&built.elf).with_context(|| built.elf.display().to_string())?;
    let default_timeout = if args.demo.is_some() { 300 } else { 120 };
    let seconds = args.timeout.unwrap_or(default_timeout);
    let timeout = (!args.gdb).then(|| Duration::from_secs(seconds));
    let echo = if args.raw { Echo::Raw } else { Echo::Decoded };
    let outcome = run::run_watched(&machine, &config, &elf, &guest_run.watch(timeout, echo))?;
    match &outcome.ending {
        Ending::Verdict(verdict) => eprintln!("xtask: verdict: {verdict}"),
        Ending::QemuFailed { code, stderr } => {
            eprintln!("xtask: QEMU failed (exit status {code:?}):\n{stderr}")
        }
        Ending::TimedOut(limit) => eprintln!(
            "xtask: timed out after {} s; QEMU was killed",
            limit.as_secs()
        ),
    }
    let code = u8::try_from(outcome.exit_code()).unwrap_or(1);
    Ok(ExitCode::from(code))
}

/// The guests and disks of a `qemu` command line: as given, or the demo's for the
/// partitions not given a disk by hand.
fn guests_and_disks(args: &QemuArgs) -> Result<(bundle::GuestFlags, Vec<disk::DiskSpec>)> {
    let disks = disk::parse_flags(args.board, &args.disks)?;
    let sources = args.sources.sources();
    let Some(Demo::Linux) = args.demo else {
        ensure!(
            sources == linux::Sources::default(),
            "--kernel, --modules, --busybox and --refresh go with --demo linux"
        );
        let guests = bundle::GuestFlags {
            guests: args.guests.clone(),
            initrds: args.initrds.clone(),
            bootargs: args.guest_bootargs.clone(),
            boot_info: args.boot_info.clone(),
        };
        return Ok((guests, disks));
    };
    ensure!(
        args.board == BoardName::QemuVirt,
        "--demo linux is for qemu-virt, whose table has the partitions linux-a and linux-b"
    );
    let demo = linux::demo_guests(&sources, &linux::demo_partitions(), disks)?;
    describe_linux(&demo.prepared);
    Ok((demo.flags, demo.disks))
}

/// Prints what `linux::prepare` made.
fn describe_linux(prepared: &linux::Prepared) {
    let size = |path: &std::path::Path| std::fs::metadata(path).map_or(0, |meta| meta.len());
    let kernel = &prepared.kernel;
    println!(
        "kernel: {} ({}, Linux {})",
        image::describe_size(&kernel.image, size(&kernel.image)),
        kernel.origin,
        kernel.release.as_deref().unwrap_or("of unknown release")
    );
    for module in &prepared.modules {
        let depends = if module.depends.is_empty() {
            "no module dependencies".to_string()
        } else {
            format!("depends on {}", module.depends.join(", "))
        };
        println!("module: {} ({depends})", module.name);
    }
    for name in &prepared.built_in {
        println!("module: {name} is built into the kernel");
    }
    if prepared.modules_dir.is_none() {
        println!(
            "modules: none (--kernel without --modules: {} must be built into the kernel)",
            linux::WANTED_MODULES.join(" and ")
        );
    }
    println!(
        "busybox: {}",
        image::describe_size(&prepared.busybox, size(&prepared.busybox))
    );
    for guest in &prepared.guests {
        println!(
            "{}: initramfs {}",
            guest.partition,
            image::describe_size(&guest.initramfs, size(&guest.initramfs))
        );
        println!(
            "{}: disk {} (signature {:?})",
            guest.partition,
            guest.disk.display(),
            disk::signature(&guest.partition)
        );
        println!("{}: command line {:?}", guest.partition, guest.command_line);
    }
}

fn guest_linux(args: &LinuxArgs) -> Result<ExitCode> {
    let prepared = linux::prepare(&args.sources.sources(), &linux::demo_partitions())?;
    describe_linux(&prepared);
    if !args.direct {
        return Ok(ExitCode::SUCCESS);
    }
    prereq::ensure_qemu()?;
    let guest = &prepared.guests[0];
    eprintln!(
        "xtask: booting {}'s files directly on QEMU virt (no Transom): {}",
        guest.partition,
        linux::DIRECT_COMMAND_LINE
    );
    let options = linux::DirectOptions {
        timeout: Duration::from_secs(args.direct_timeout),
        echo: true,
        icount: false,
    };
    let timeout = options.timeout;
    let boot = linux::boot_directly(&prepared.kernel.image, guest, &options)?;
    if boot.timed_out {
        bail!("the direct boot timed out after {} s", timeout.as_secs());
    }
    eprintln!(
        "xtask: QEMU exited with {:?} after {:.1} s",
        boot.status,
        boot.elapsed.as_secs_f64()
    );
    if boot.status != Some(0) {
        bail!("the direct boot failed:\n{}", boot.stderr.trim());
    }
    Ok(ExitCode::SUCCESS)
}
