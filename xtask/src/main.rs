//! `cargo xtask`: Transom's build, run and test driver.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand, ValueEnum};
use transom_qemu::{GicVersion, RunConfig, VirtCpu};
use xtask::boards::BoardName;
use xtask::run::{Echo, Ending};
use xtask::{bench, bundle, ci, image, prereq, run};

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
    /// Measurements (stage-2 table pages and build time per granule); prints a
    /// table and writes JSON under target/bench.
    Bench,
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
    /// Seconds before the run is killed and reported as timed out.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Wait for GDB on localhost:1234 before the first instruction (no timeout).
    #[arg(long)]
    gdb: bool,
    /// Print the console's raw bytes instead of decoding them.
    #[arg(long)]
    raw: bool,
    /// Extra hypervisor options, e.g. `transom.selftest=panic`.
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
        Command::Bench => bench::run().map(|()| ExitCode::SUCCESS),
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
    let machine = args.board.machine(gic, args.smp)?.with_cpu(cpu);
    let guests = bundle::GuestFlags {
        guests: args.guests.clone(),
        initrds: args.initrds.clone(),
        bootargs: args.guest_bootargs.clone(),
    };
    let guest_bundle = bundle::prepare(args.board, &guests)?;
    let built = image::build(args.board)?;
    eprintln!(
        "xtask: booting {} on QEMU {} ({} CPUs), image {}",
        args.board.name(),
        machine.machine_type(),
        machine.cpus(),
        image::describe_size(&built.image, built.size)
    );
    let mut config = RunConfig::new(&built.image);
    if machine.needs_device_tree() {
        config.device_tree = Some(image::rpi4_device_tree()?);
    }
    if let Some(path) = guest_bundle {
        let size = std::fs::metadata(&path)
            .with_context(|| path.display().to_string())?
            .len();
        eprintln!("xtask: guest bundle {}", image::describe_size(&path, size));
        config.initrd = Some(path);
    }
    config.extra_bootargs = args.bootargs.clone();
    config.gdb = args.gdb;
    if args.gdb {
        eprintln!("xtask: waiting for GDB: target remote localhost:1234");
    }
    let elf = std::fs::read(&built.elf).with_context(|| built.elf.display().to_string())?;
    let timeout = (!args.gdb).then(|| Duration::from_secs(args.timeout));
    let echo = if args.raw { Echo::Raw } else { Echo::Decoded };
    let outcome = run::run(&machine, &config, &elf, timeout, echo)?;
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
