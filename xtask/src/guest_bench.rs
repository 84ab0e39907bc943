//! The guest figures of `cargo xtask bench`: instructions per trapped 32-bit access
//! forwarded to a device, per direct-mapped access, per null HVC round trip, and
//! from the hypervisor's entry to the first guest instruction.
//!
//! QEMU runs with `-icount shift=0`: virtual time advances by 1 ns per executed
//! instruction, at every exception level, so the guest's virtual counter (62.5 MHz
//! on `virt`, `CNTVOFF_EL2` = 0) ticks once every 16 instructions and every figure
//! is a deterministic instruction count. The guest (`tests/guests/bench.s`) runs
//! each access 4096 times in a loop and an empty loop of the same length; the
//! difference, over the iterations, is what one access costs, the accessing
//! instruction itself included.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use transom_qemu::{GicVersion, Machine, RunConfig};
use transom_vmm_core::guest::bundle::{BundleBuilder, EntryKind};

use crate::boards::BoardName;
use crate::run::{self, Echo, Ending};
use crate::{image, workspace_root};

/// Iterations of each loop of the guest.
const ITERATIONS: u64 = 4096;
/// Instructions per tick of the virtual counter under `-icount shift=0` on `virt`
/// (1 ns per instruction, `CNTFRQ_EL0` = 62.5 MHz).
const INSTRUCTIONS_PER_TICK: u64 = 16;
/// Instructions of the HVC loop's body besides the `HVC` (loading the function ID).
const HVC_LOOP_EXTRA: u64 = 2;

/// The words of `tests/guests/bench.s`, as `llvm-mc -triple=aarch64` encodes them.
const GUEST: [u32; 89] = [
    0x14000010, 0x00000000, 0x00000000, 0x00000000, 0x00001000, 0x00000000, 0x0000000a, 0x00000000,
    0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x00000000, 0x644d5241, 0x00000000,
    0xd53be053, 0xd2a12081, 0xd287c004, 0xf2a14004, 0xd2800305, 0xf2a12085, 0xd2820014, 0x52800ca0,
    0xaa1303e8, 0x94000032, 0xd5033fdf, 0xd53be04a, 0xaa1403e9, 0xf1000529, 0x54ffffe1, 0xd5033fdf,
    0xd53be04b, 0xcb0a0168, 0x52800d80, 0x94000028, 0xd5033fdf, 0xd53be04a, 0xaa1403e9, 0xb9400083,
    0xf1000529, 0x54ffffc1, 0xd5033fdf, 0xd53be04b, 0xcb0a0168, 0x52800e80, 0x9400001d, 0xd5033fdf,
    0xd53be04a, 0xaa1403e9, 0xb94000a3, 0xf1000529, 0x54ffffc1, 0xd5033fdf, 0xd53be04b, 0xcb0a0168,
    0x52800c80, 0x94000012, 0xd5033fdf, 0xd53be04a, 0xaa1403e9, 0x52800000, 0x72b08000, 0xd4000002,
    0xf1000529, 0x54ffff81, 0xd5033fdf, 0xd53be04b, 0xcb0a0168, 0x52800d00, 0x94000005, 0x52800100,
    0x72b08000, 0xd4000002, 0x14000000, 0x39000020, 0xd2800783, 0x9ac32502, 0x92400c42, 0x9100c046,
    0x91015c47, 0xf100285f, 0x9a8730c2, 0x39000022, 0xf1001063, 0x54ffff0a, 0x52800142, 0x39000022,
    0xd65f03c0,
];

/// What the guest measured, in counter ticks.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ticks {
    /// The counter at the guest's second instruction.
    pub entry: u64,
    /// The empty loop.
    pub empty: u64,
    /// The loop with a trapped read.
    pub trapped: u64,
    /// The loop with a direct read.
    pub direct: u64,
    /// The loop with an HVC.
    pub hypercall: u64,
}

/// The four figures, in instructions.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Figures {
    /// Per trapped 32-bit read forwarded to a device.
    pub trapped_access: f64,
    /// Per direct-mapped read.
    pub direct_access: f64,
    /// Per null HVC round trip (PSCI_VERSION).
    pub null_hvc: f64,
    /// From the hypervisor's first instruction to the guest's first.
    pub entry_to_guest: u64,
    /// The same, with a second guest of [`SECOND_GUEST_BYTES`] in linux-b.
    pub entry_beside_second_guest: u64,
}

impl Ticks {
    /// Reads the guest's lines from its UART (`<tag><16 hex digits>`).
    pub fn parse<'a>(lines: impl Iterator<Item = &'a str>) -> Result<Ticks> {
        let mut ticks = Ticks::default();
        let mut seen = 0;
        for report in lines {
            let (tag, hex) = report.split_at_checked(1).unwrap_or(("", ""));
            let Ok(value) = u64::from_str_radix(hex, 16) else {
                continue;
            };
            let slot = match tag {
                "e" => &mut ticks.entry,
                "l" => &mut ticks.empty,
                "t" => &mut ticks.trapped,
                "d" => &mut ticks.direct,
                "h" => &mut ticks.hypercall,
                _ => continue,
            };
            *slot = value;
            seen += 1;
        }
        if seen != 5 {
            bail!("the bench guest reported {seen} of its 5 figures");
        }
        Ok(ticks)
    }

    /// Instructions from the hypervisor's first to the guest's first.
    pub fn entry_instructions(&self) -> u64 {
        self.entry * INSTRUCTIONS_PER_TICK
    }

    /// The figures, in instructions, with the entry figure of a run beside a second
    /// guest.
    pub fn figures(&self, entry_beside_second_guest: u64) -> Figures {
        let per_iteration = |loop_ticks: u64| {
            (loop_ticks.saturating_sub(self.empty) * INSTRUCTIONS_PER_TICK) as f64
                / ITERATIONS as f64
        };
        Figures {
            trapped_access: per_iteration(self.trapped),
            direct_access: per_iteration(self.direct),
            null_hvc: per_iteration(self.hypercall) - HVC_LOOP_EXTRA as f64,
            entry_to_guest: self.entry_instructions(),
            entry_beside_second_guest,
        }
    }
}

/// The guest as an arm64 `Image`.
pub fn guest_image() -> Vec<u8> {
    GUEST.iter().flat_map(|word| word.to_le_bytes()).collect()
}

/// The size of the second guest of [`measure`]: about what a Linux `Image` is
/// (Debian bookworm's arm64 kernel is some 30 MiB).
pub const SECOND_GUEST_BYTES: usize = 32 << 20;

/// A guest of `bytes` bytes (at most the RAM of a partition) that powers its
/// partition off at once: the bench guest's `Image` header with its
/// `image_size`, then `PSCI SYSTEM_OFF` at offset 0x40, where the header's first
/// instruction branches, and zeros.
pub fn powering_off_guest(bytes: usize) -> Vec<u8> {
    /// `movz w0, #0x8`; `movk w0, #0x8400, lsl #16` (PSCI 1.1 SYSTEM_OFF,
    /// 0x8400_0008); `hvc #0`; `b .`.
    const CODE: [u32; 4] = [0x52800100, 0x72b08000, 0xd4000002, 0x14000000];
    let mut image = guest_image();
    image.truncate(0x40);
    // booting.rst: image_size, little-endian, at offset 16.
    image[16..24].copy_from_slice(&(bytes as u64).to_le_bytes());
    image.extend(CODE.iter().flat_map(|word| word.to_le_bytes()));
    image.resize(bytes, 0);
    image
}

/// Boots the bench guest in linux-a under `-icount shift=0` and returns what it
/// measured; then boots it again beside a [`SECOND_GUEST_BYTES`] guest in
/// linux-b, which the hypervisor copies into linux-b's RAM after linux-a has
/// started, and takes linux-a's entry figure from that run. (Its other figures
/// are not taken: the boot CPU's copy runs while linux-a's loops count.)
pub fn measure() -> Result<Figures> {
    let alone = run_guests("guest-bench", &[("linux-a", guest_image())])?;
    let beside = run_guests(
        "guest-bench-two",
        &[
            ("linux-a", guest_image()),
            ("linux-b", powering_off_guest(SECOND_GUEST_BYTES)),
        ],
    )?;
    Ok(alone.figures(beside.entry_instructions()))
}

/// Boots the virt board under `-icount shift=0` with a bundle of `guests`, linux-a's
/// being the bench guest, and returns what that guest measured.
fn run_guests(name: &str, guests: &[(&str, Vec<u8>)]) -> Result<Ticks> {
    let mut builder = BundleBuilder::new();
    for (partition, image) in guests {
        builder
            .add(partition, EntryKind::Image, image)
            .map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    let directory: PathBuf = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&directory).context("creating target/bench")?;
    let bundle = directory.join(format!("{name}.bundle"));
    std::fs::write(&bundle, builder.finish())
        .with_context(|| format!("writing {}", bundle.display()))?;

    let built = image::build(BoardName::QemuVirt)?;
    let machine = Machine::virt(GicVersion::V3, 4).map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut config = RunConfig::new(&built.image);
    config.initrd = Some(bundle);
    config.icount = true;
    // linux-a's own UART1, where the guest prints its figures.
    config.second_serial = Some(directory.join(format!("{name}-uart1.log")));
    let elf = std::fs::read(&built.elf).with_context(|| built.elf.display().to_string())?;
    let outcome = run::run(
        &machine,
        &config,
        &elf,
        Some(Duration::from_secs(120)),
        Echo::Quiet,
    )?;
    if outcome.ending != Ending::Verdict(transom_vmm_core::verdict::Verdict::Pass) {
        bail!(
            "the bench guest's run ended with {:?}:\n{}",
            outcome.ending,
            outcome.transcript()
        );
    }
    Ticks::parse(outcome.second_serial_lines().iter().map(String::as_str))
}

/// Prints the figures and returns them as a JSON object.
pub fn report(figures: &Figures) -> Result<String> {
    println!("\nguests: instructions under QEMU -icount shift=0 (virt, GICv3, Cortex-A72)");
    println!("{:<44} {:>10} {:>8}", "figure", "measured", "target");
    let rows = [
        (
            "trapped 32-bit access, forwarded",
            figures.trapped_access,
            "<= 150",
        ),
        ("direct-mapped 32-bit access", figures.direct_access, "-"),
        (
            "null HVC round trip (PSCI_VERSION)",
            figures.null_hvc,
            "<= 100",
        ),
        (
            "hypervisor entry to first guest instruction",
            figures.entry_to_guest as f64,
            "<= 50000",
        ),
        (
            "  the same, a 32 MiB guest in linux-b too",
            figures.entry_beside_second_guest as f64,
            "-",
        ),
    ];
    for (name, value, target) in rows {
        println!("{name:<44} {value:>10.1} {target:>8}");
    }
    let mut json = String::from("{\n");
    writeln!(
        json,
        "    \"trapped_access\": {:.1},",
        figures.trapped_access
    )?;
    writeln!(json, "    \"direct_access\": {:.1},", figures.direct_access)?;
    writeln!(json, "    \"null_hvc\": {:.1},", figures.null_hvc)?;
    writeln!(json, "    \"entry_to_guest\": {},", figures.entry_to_guest)?;
    writeln!(
        json,
        "    \"entry_beside_second_guest\": {}",
        figures.entry_beside_second_guest
    )?;
    json.push_str("  }");
    Ok(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guest_is_an_arm64_image() {
        let image = guest_image();
        // booting.rst: the magic "ARM\x64" at offset 0x38.
        assert_eq!(&image[0x38..0x3c], b"ARM\x64");
        transom_vmm_core::guest::image::parse(&image).expect("a valid header");
    }

    #[test]
    fn the_powering_off_guest_is_an_image_of_its_size() {
        let image = powering_off_guest(1 << 20);
        assert_eq!(image.len(), 1 << 20);
        let header = transom_vmm_core::guest::image::parse(&image).expect("a valid header");
        assert_eq!(header.image_size, 1 << 20);
        // The header's branch (b #0x40) reaches the SYSTEM_OFF sequence.
        assert_eq!(&image[..4], &0x14000010u32.to_le_bytes());
        assert_eq!(&image[0x40..0x44], &0x52800100u32.to_le_bytes());
    }

    #[test]
    fn figures_subtract_the_empty_loop() {
        let ticks = Ticks::parse(
            [
                "e0000000000000400",
                "l0000000000000200",
                "t0000000000002200",
                "d0000000000000300",
                "h0000000000001200",
                "x0000000000000001",
            ]
            .into_iter(),
        )
        .expect("five figures");
        let figures = ticks.figures(0x800 * 16);
        // (0x2200 - 0x200) ticks * 16 / 4096 = 32 instructions.
        assert_eq!(figures.trapped_access, 32.0);
        assert_eq!(figures.direct_access, 1.0);
        assert_eq!(figures.null_hvc, 16.0 - 2.0);
        assert_eq!(figures.entry_to_guest, 0x400 * 16);
        assert_eq!(figures.entry_beside_second_guest, 0x800 * 16);
    }

    #[test]
    fn a_missing_figure_is_an_error() {
        assert!(Ticks::parse(["e0000000000000400"].into_iter()).is_err());
    }
}
