//! QEMU machine definitions for Transom's boards, as code.
//!
//! Each [`Machine`] knows its QEMU binary, machine type, CPU, memory, how its console
//! UART is wired to the host, and the exit convention: the hypervisor ends a run with
//! semihosting `SYS_EXIT`, so every machine enables semihosting and passes
//! `transom.exit=semihosting` on the command line it gives the hypervisor.

#![forbid(unsafe_code)]

pub mod rpi4_tree;

use std::path::{Path, PathBuf};

/// The bootarg that tells the hypervisor to end runs with semihosting.
pub const SEMIHOSTING_EXIT_BOOTARG: &str = "transom.exit=semihosting";

/// The GIC version of QEMU `virt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GicVersion {
    /// GICv2 (GIC-400 like), up to 8 CPUs.
    V2,
    /// GICv3 with redistributors.
    V3,
}

/// The CPU model of QEMU `virt`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum VirtCpu {
    /// `cortex-a72`, the Raspberry Pi 4's core: 4 and 64 KiB granules only.
    #[default]
    CortexA72,
    /// `max`: every feature QEMU emulates, the 16 KiB granule among them.
    Max,
}

impl VirtCpu {
    /// The `-cpu` value.
    pub fn qemu_name(self) -> &'static str {
        match self {
            VirtCpu::CortexA72 => "cortex-a72",
            VirtCpu::Max => "max",
        }
    }
}

/// A QEMU machine Transom runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Machine {
    /// `-machine virt,virtualization=on`, by default with a Cortex-A72.
    Virt {
        /// GIC version.
        gic: GicVersion,
        /// CPU model.
        cpu: VirtCpu,
        /// CPUs.
        cpus: u32,
        /// RAM, MiB.
        memory_mib: u32,
    },
    /// `-machine raspi4b`: four Cortex-A72, 2 GiB, GIC-400. QEMU starts the kernel at
    /// EL2 and parks the secondaries on the spin table at 0xd8.
    Raspi4b,
}

/// Why a machine definition cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MachineError {
    /// The CPU count is out of the machine's range.
    Cpus {
        /// What was asked for.
        requested: u32,
        /// The most the machine takes.
        max: u32,
    },
    /// `raspi4b` has exactly four CPUs.
    FixedCpus,
}

impl std::fmt::Display for MachineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MachineError::Cpus { requested, max } => {
                write!(
                    f,
                    "{requested} CPUs requested; this machine takes 1 to {max}"
                )
            }
            MachineError::FixedCpus => f.write_str("raspi4b always has 4 CPUs; drop --smp"),
        }
    }
}

impl std::error::Error for MachineError {}

/// The most CPUs the hypervisor has stacks for (`transom_kernel::arch::MAX_CPUS`).
pub const MAX_HYPERVISOR_CPUS: u32 = 8;

impl Machine {
    /// QEMU `virt` with `gic` and `cpus` CPUs, 1 GiB of RAM.
    pub fn virt(gic: GicVersion, cpus: u32) -> Result<Machine, MachineError> {
        // GICv2 addresses at most 8 CPUs; GICv3 more, but the hypervisor has 8 stacks.
        let max = MAX_HYPERVISOR_CPUS;
        if cpus == 0 || cpus > max {
            return Err(MachineError::Cpus {
                requested: cpus,
                max,
            });
        }
        Ok(Machine::Virt {
            gic,
            cpu: VirtCpu::default(),
            cpus,
            memory_mib: 1024,
        })
    }

    /// The same machine with CPU model `cpu` (`virt` only; other machines have a
    /// fixed CPU and are returned unchanged).
    pub fn with_cpu(mut self, model: VirtCpu) -> Machine {
        if let Machine::Virt { cpu, .. } = &mut self {
            *cpu = model;
        }
        self
    }

    /// The QEMU executable.
    pub fn qemu_binary(&self) -> &'static str {
        "qemu-system-aarch64"
    }

    /// The QEMU `-machine` type, as `-machine help` lists it.
    pub fn machine_type(&self) -> &'static str {
        match self {
            Machine::Virt { .. } => "virt",
            Machine::Raspi4b => "raspi4b",
        }
    }

    /// How many CPUs the machine has.
    pub fn cpus(&self) -> u32 {
        match self {
            Machine::Virt { cpus, .. } => *cpus,
            Machine::Raspi4b => 4,
        }
    }

    /// Whether QEMU needs a device tree file (`-dtb`); `virt` generates its own.
    pub fn needs_device_tree(&self) -> bool {
        matches!(self, Machine::Raspi4b)
    }

    /// The full QEMU argument list (without the binary).
    ///
    /// The console UART goes to QEMU's stdout as raw bytes (`-chardev stdio` with no
    /// monitor multiplexed in), so the host reads the defmt stream from a pipe.
    pub fn arguments(&self, run: &RunConfig) -> Vec<String> {
        let mut args: Vec<String> = Vec::new();
        let mut push = |items: &[&str]| args.extend(items.iter().map(|item| item.to_string()));
        match self {
            Machine::Virt {
                gic,
                cpu,
                cpus,
                memory_mib,
            } => {
                let gic_version = match gic {
                    GicVersion::V2 => 2,
                    GicVersion::V3 => 3,
                };
                let machine = format!("virt,virtualization=on,gic-version={gic_version}");
                push(&["-machine", &machine, "-cpu", cpu.qemu_name()]);
                push(&["-smp", &cpus.to_string(), "-m", &format!("{memory_mib}M")]);
            }
            Machine::Raspi4b => {
                // Single-threaded TCG: raspi4b is many times slower with MTTCG.
                push(&["-machine", "raspi4b", "-accel", "tcg,thread=single"]);
            }
        }
        push(&["-display", "none", "-monitor", "none", "-no-reboot"]);
        push(&[
            "-chardev",
            "stdio,id=console,signal=off",
            "-serial",
            "chardev:console",
        ]);
        if matches!(self, Machine::Virt { .. }) {
            // A second `-serial` makes `virt` create UART1 (0x0904_0000), a PL011 the
            // board table grants to a guest.
            push(&["-serial", "null"]);
        }
        push(&["-semihosting-config", "enable=on,target=native"]);
        push(&["-kernel", &run.image.display().to_string()]);
        if let Some(initrd) = &run.initrd {
            // QEMU loads it after the kernel and names it in `/chosen`
            // (`linux,initrd-start`/`-end`): how the guest bundle reaches Transom.
            push(&["-initrd", &initrd.display().to_string()]);
        }
        if let Some(tree) = &run.device_tree {
            push(&["-dtb", &tree.display().to_string()]);
        }
        let mut bootargs = String::from(SEMIHOSTING_EXIT_BOOTARG);
        for extra in &run.extra_bootargs {
            bootargs.push(' ');
            bootargs.push_str(extra);
        }
        push(&["-append", &bootargs]);
        if run.gdb {
            // Wait for a debugger on TCP port 1234 before the first instruction.
            push(&["-s", "-S"]);
        }
        args
    }
}

/// What one run boots.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RunConfig {
    /// The raw image for `-kernel`.
    pub image: PathBuf,
    /// The device tree for `-dtb`, for machines that need one.
    pub device_tree: Option<PathBuf>,
    /// The file for `-initrd`: the guest bundle, when the run has guests.
    pub initrd: Option<PathBuf>,
    /// Bootargs after the exit convention's own.
    pub extra_bootargs: Vec<String>,
    /// Stop at reset and wait for GDB on port 1234.
    pub gdb: bool,
}

impl RunConfig {
    /// A run of `image` with no extras.
    pub fn new(image: &Path) -> RunConfig {
        RunConfig {
            image: image.to_path_buf(),
            ..RunConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value_after<'a>(args: &'a [String], flag: &str) -> Vec<&'a str> {
        args.windows(2)
            .filter(|pair| pair[0] == flag)
            .map(|pair| pair[1].as_str())
            .collect()
    }

    #[test]
    fn virt_boots_at_el2_with_the_requested_gic() {
        let machine = Machine::virt(GicVersion::V2, 2).expect("valid");
        let args = machine.arguments(&RunConfig::new(Path::new("/tmp/image")));
        assert_eq!(
            value_after(&args, "-machine"),
            ["virt,virtualization=on,gic-version=2"]
        );
        assert_eq!(value_after(&args, "-smp"), ["2"]);
        assert_eq!(value_after(&args, "-cpu"), ["cortex-a72"]);
        let max = machine.clone().with_cpu(VirtCpu::Max);
        let args = max.arguments(&RunConfig::new(Path::new("/tmp/image")));
        assert_eq!(value_after(&args, "-cpu"), ["max"]);
        assert_eq!(value_after(&args, "-kernel"), ["/tmp/image"]);
        assert!(value_after(&args, "-dtb").is_empty());
    }

    #[test]
    fn console_is_a_raw_stdio_chardev_without_monitor() {
        let args = Machine::Raspi4b.arguments(&RunConfig::new(Path::new("k")));
        assert_eq!(value_after(&args, "-monitor"), ["none"]);
        assert_eq!(value_after(&args, "-serial"), ["chardev:console"]);
        assert_eq!(
            value_after(&args, "-chardev"),
            ["stdio,id=console,signal=off"]
        );
        assert!(!args.iter().any(|arg| arg == "-nographic"));
    }

    #[test]
    fn every_run_uses_the_semihosting_exit_convention() {
        let mut run = RunConfig::new(Path::new("k"));
        run.extra_bootargs.push("transom.selftest=panic".into());
        for machine in [
            Machine::Raspi4b,
            Machine::virt(GicVersion::V3, 4).expect("valid"),
        ] {
            let args = machine.arguments(&run);
            assert_eq!(
                value_after(&args, "-semihosting-config"),
                ["enable=on,target=native"]
            );
            assert_eq!(
                value_after(&args, "-append"),
                ["transom.exit=semihosting transom.selftest=panic"]
            );
        }
    }

    #[test]
    fn raspi4b_runs_single_threaded_tcg_with_a_device_tree() {
        let mut run = RunConfig::new(Path::new("kernel8.img"));
        run.device_tree = Some(PathBuf::from("rpi4.dtb"));
        let args = Machine::Raspi4b.arguments(&run);
        assert_eq!(value_after(&args, "-accel"), ["tcg,thread=single"]);
        assert_eq!(value_after(&args, "-dtb"), ["rpi4.dtb"]);
        assert!(Machine::Raspi4b.needs_device_tree());
        assert!(value_after(&args, "-smp").is_empty());
    }

    #[test]
    fn the_guest_bundle_is_the_initrd_after_the_kernel() {
        let mut run = RunConfig::new(Path::new("/tmp/image"));
        for machine in [
            Machine::Raspi4b,
            Machine::virt(GicVersion::V3, 4).expect("valid"),
        ] {
            assert!(value_after(&machine.arguments(&run), "-initrd").is_empty());
        }
        run.initrd = Some(PathBuf::from("target/bundles/qemu-virt.bundle"));
        for machine in [
            Machine::Raspi4b,
            Machine::virt(GicVersion::V3, 4).expect("valid"),
        ] {
            let args = machine.arguments(&run);
            assert_eq!(
                value_after(&args, "-initrd"),
                ["target/bundles/qemu-virt.bundle"]
            );
            let kernel = args.iter().position(|arg| arg == "-kernel");
            let initrd = args.iter().position(|arg| arg == "-initrd");
            assert!(kernel < initrd, "-initrd comes after -kernel: {args:?}");
        }
    }

    #[test]
    fn gdb_waits_for_the_debugger() {
        let mut run = RunConfig::new(Path::new("k"));
        run.gdb = true;
        let args = Machine::virt(GicVersion::V3, 1)
            .expect("valid")
            .arguments(&run);
        assert!(args.iter().any(|arg| arg == "-S"));
        assert!(args.iter().any(|arg| arg == "-s"));
    }

    #[test]
    fn cpu_counts_outside_the_hypervisor_range_are_refused() {
        assert_eq!(
            Machine::virt(GicVersion::V3, 0),
            Err(MachineError::Cpus {
                requested: 0,
                max: 8
            })
        );
        assert!(Machine::virt(GicVersion::V2, 9).is_err());
        assert!(Machine::virt(GicVersion::V2, 8).is_ok());
    }
}
