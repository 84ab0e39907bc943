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

/// `virt`'s virtio-mmio transports (`VIRT_MMIO` in `hw/arm/virt.c`): 32 of 0x200
/// bytes from 0x0a00_0000. Transport `n` sits on the bus QEMU names
/// `virtio-mmio-bus.n` (checked with `info qtree`).
pub const VIRT_VIRTIO_MMIO_BASE: u64 = 0x0a00_0000;
/// The size of one `virt` virtio-mmio transport.
pub const VIRT_VIRTIO_MMIO_SIZE: u64 = 0x200;
/// How many virtio-mmio transports `virt` has.
pub const VIRT_VIRTIO_MMIO_TRANSPORTS: u32 = 32;

/// The index of the `virt` virtio-mmio transport at `base`, if one starts there.
pub fn virt_virtio_transport(base: u64) -> Option<u32> {
    let offset = base.checked_sub(VIRT_VIRTIO_MMIO_BASE)?;
    if offset % VIRT_VIRTIO_MMIO_SIZE != 0 {
        return None;
    }
    let index = u32::try_from(offset / VIRT_VIRTIO_MMIO_SIZE).ok()?;
    (index < VIRT_VIRTIO_MMIO_TRANSPORTS).then_some(index)
}

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
        match (&run.second_serial, self) {
            (Some(file), _) => {
                // QEMU truncates the file when it opens it.
                let chardev = format!("file,id=serial1,path={}", qemu_escape(file));
                push(&["-chardev", &chardev, "-serial", "chardev:serial1"]);
            }
            // A second `-serial` makes `virt` create UART1 (0x0904_0000), a PL011 the
            // board table grants to a guest.
            (None, Machine::Virt { .. }) => push(&["-serial", "null"]),
            (None, Machine::Raspi4b) => {}
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
        args.extend(disk_arguments(&run.disks));
        if run.icount {
            args.extend(ICOUNT_ARGUMENTS.map(String::from));
        }
        args
    }
}

/// What [`RunConfig::icount`] adds: virtual time advances 1 ns per executed
/// instruction, so the counter of QEMU `virt` (62.5 MHz) ticks once every 16
/// instructions while a CPU runs. `sleep=off`: while every CPU idles, virtual time
/// jumps to the next timer deadline instead of following the host's clock (QEMU's
/// `-icount` documentation), so idle time on a busy host does not count as
/// instructions and the counts repeat run to run.
pub const ICOUNT_ARGUMENTS: [&str; 2] = ["-icount", "shift=0,sleep=off"];

/// A raw disk image behind a `virtio-blk-device` on one of `virt`'s virtio-mmio
/// transports (`raspi4b` has none: QEMU refuses the device there).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtioDisk {
    /// The raw image.
    pub file: PathBuf,
    /// The transport, 0 (at [`VIRT_VIRTIO_MMIO_BASE`]) to 31; `None` takes the next
    /// free one, and QEMU hands those out from the top: the first such disk gets
    /// transport 31 (0x0a00_3e00), the next 30 (0x0a00_3c00), and so on.
    pub transport: Option<u32>,
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
    /// Where the machine's second UART writes (`virt`: the PL011 UART1 at
    /// 0x0904_0000; `raspi4b`: the mini UART). `None` discards it on `virt` and
    /// leaves it out on `raspi4b`.
    pub second_serial: Option<PathBuf>,
    /// Disks, in `-device` order.
    pub disks: Vec<VirtioDisk>,
    /// `-icount shift=0`: virtual time advances 1 ns per executed instruction, so
    /// the guests' counters count instructions (benchmarks).
    pub icount: bool,
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

/// The `-drive` and `-device` pairs that put `disks` on virtio-mmio transports, the
/// drives named `disk0`, `disk1`, ... in order.
pub fn disk_arguments(disks: &[VirtioDisk]) -> Vec<String> {
    let mut args = Vec::new();
    for (index, disk) in disks.iter().enumerate() {
        let drive = format!(
            "if=none,id=disk{index},format=raw,file={}",
            qemu_escape(&disk.file)
        );
        let mut device = format!("virtio-blk-device,drive=disk{index}");
        if let Some(transport) = disk.transport {
            device.push_str(&format!(",bus=virtio-mmio-bus.{transport}"));
        }
        args.extend(["-drive".to_string(), drive, "-device".to_string(), device]);
    }
    args
}

/// `path` as a QEMU option value: a comma in it is written twice.
fn qemu_escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
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

    #[test]
    fn the_second_serial_is_discarded_unless_captured() {
        let virt = Machine::virt(GicVersion::V3, 4).expect("valid");
        let mut run = RunConfig::new(Path::new("k"));
        let args = virt.arguments(&run);
        assert_eq!(value_after(&args, "-serial"), ["chardev:console", "null"]);
        assert!(value_after(&Machine::Raspi4b.arguments(&run), "-serial").len() == 1);

        run.second_serial = Some(PathBuf::from("target/uart1,a.log"));
        for machine in [virt, Machine::Raspi4b] {
            let args = machine.arguments(&run);
            assert_eq!(
                value_after(&args, "-serial"),
                ["chardev:console", "chardev:serial1"]
            );
            assert_eq!(
                value_after(&args, "-chardev"),
                [
                    "stdio,id=console,signal=off",
                    "file,id=serial1,path=target/uart1,,a.log"
                ]
            );
        }
    }

    #[test]
    fn disks_are_virtio_blk_devices_on_the_chosen_transports() {
        let machine = Machine::virt(GicVersion::V3, 4).expect("valid");
        let mut run = RunConfig::new(Path::new("k"));
        assert!(value_after(&machine.arguments(&run), "-device").is_empty());
        run.disks = vec![
            VirtioDisk {
                file: PathBuf::from("a.img"),
                transport: Some(31),
            },
            VirtioDisk {
                file: PathBuf::from("b.img"),
                transport: None,
            },
        ];
        let args = machine.arguments(&run);
        assert_eq!(
            value_after(&args, "-drive"),
            [
                "if=none,id=disk0,format=raw,file=a.img",
                "if=none,id=disk1,format=raw,file=b.img"
            ]
        );
        assert_eq!(
            value_after(&args, "-device"),
            [
                "virtio-blk-device,drive=disk0,bus=virtio-mmio-bus.31",
                "virtio-blk-device,drive=disk1"
            ]
        );
    }

    #[test]
    fn virtio_transports_are_numbered_from_the_bottom() {
        assert_eq!(virt_virtio_transport(0x0a00_0000), Some(0));
        assert_eq!(virt_virtio_transport(0x0a00_3c00), Some(30));
        assert_eq!(virt_virtio_transport(0x0a00_3e00), Some(31));
        assert_eq!(virt_virtio_transport(0x0a00_4000), None);
        assert_eq!(virt_virtio_transport(0x0a00_0100), None);
        assert_eq!(virt_virtio_transport(0x0900_0000), None);
    }
}
