//! The Linux figures of `cargo xtask bench`: how long the demo's Debian kernel and
//! busybox initramfs take to reach `/init` under Transom, against the same kernel
//! and initramfs booted directly on QEMU `virt` with the same CPU model
//! (Cortex-A72, one CPU) and no Transom.
//!
//! - Wall time from QEMU's start to the moment each guest's `init started` line
//!   reaches the host, in rounds that alternate the runs' order within one
//!   invocation, so a change in the host's load hits every run alike. The figure
//!   is the median over the rounds of one round's ratio Transom / direct (target
//!   at most 1.10). Under Transom, the arrival of the hypervisor's line saying it
//!   entered the guest shows how much of that went before the guest ran.
//! - Instructions under `-icount shift=0` to the same point, read by the guest from
//!   its own virtual counter ([`crate::cntvct`]): they count from QEMU's reset,
//!   so under Transom they include the hypervisor's boot and its copying of the
//!   guest's files, where the direct boot's kernel is put in RAM by QEMU's loader.
//!   While every CPU idles, virtual time runs on with the host's clock (icount's
//!   default `sleep=on`): the counts repeat to within about 0.1 %, not exactly. Linux's
//!   own clock at `Run /init as init process` is shown too; it starts when the
//!   kernel registers its timer, so it leaves out everything before. The CPUs take
//!   turns on the one virtual clock: with two guests booting at once, each guest's
//!   count includes the other's instructions, and only the one-guest run compares
//!   with the direct boot.
//! - The accesses each guest made that trapped to the hypervisor, from its entry to
//!   its power-off, as the hypervisor logs them when the partition stops ("n/a"
//!   when it does not).

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use transom_vmm_core::verdict::Verdict;

use crate::boards::BoardName;
use crate::guest_run::RunFiles;
use crate::linux::{self, DemoRun, DirectOptions};
use crate::run::{Echo, Ending, TimedLine};
use crate::{cntvct, image};

/// Rounds of the wall-time comparison; the median of their ratios is reported.
const ROUNDS: usize = 5;
/// How long one boot may take (`-icount` runs single-threaded, and slower).
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
/// The ratio of wall times the issue asks for, at most.
const TARGET_RATIO: f64 = 1.10;
/// Instructions per tick of `virt`'s 62.5 MHz counter under `-icount shift=0`
/// (1 ns per instruction).
const INSTRUCTIONS_PER_TICK: u64 = 16;

/// What is booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Setup {
    /// linux-a's kernel and initramfs on QEMU `virt` without Transom.
    Direct,
    /// Transom with linux-a alone.
    Alone,
    /// Transom with linux-a and linux-b.
    Both,
}

impl Setup {
    const ALL: [Setup; 3] = [Setup::Direct, Setup::Alone, Setup::Both];

    fn label(self) -> &'static str {
        match self {
            Setup::Direct => "direct (no Transom, -smp 1)",
            Setup::Alone => "Transom, linux-a alone",
            Setup::Both => "Transom, linux-a and linux-b",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Setup::Direct => "direct",
            Setup::Alone => "transom-linux-a",
            Setup::Both => "transom-linux-a-linux-b",
        }
    }

    fn partitions(self) -> &'static [&'static str] {
        match self {
            Setup::Direct | Setup::Alone => &["linux-a"],
            Setup::Both => &["linux-a", "linux-b"],
        }
    }
}

/// What the hypervisor counted for a partition when it stopped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Trapped {
    /// Every trapped access.
    pub total: u64,
    /// Those to the virtual GIC.
    pub gic: Option<u64>,
    /// Those forwarded to devices.
    pub devices: Option<u64>,
    /// Those to the virtual UART.
    pub uart: Option<u64>,
}

/// Reads the hypervisor's `partition <name>: <n> trapped accesses (<m> to the
/// virtual GIC, <k> forwarded to devices, <j> to the virtual UART)` for
/// `partition` in `message`.
pub fn parse_trapped(message: &str, partition: &str) -> Option<Trapped> {
    let prefix = format!("partition {partition}: ");
    let (_, rest) = message.split_once(&prefix)?;
    let (total, rest) = rest.split_once(" trapped accesses")?;
    let mut trapped = Trapped {
        total: total.trim().parse().ok()?,
        ..Trapped::default()
    };
    let details = rest
        .trim()
        .strip_prefix('(')
        .and_then(|details| details.strip_suffix(')'))
        .unwrap_or_default();
    for part in details.split(", ") {
        let Some((count, what)) = part.trim().split_once(' ') else {
            continue;
        };
        let Ok(count) = count.parse() else {
            continue;
        };
        let slot = match what {
            "to the virtual GIC" => &mut trapped.gic,
            "forwarded to devices" => &mut trapped.devices,
            "to the virtual UART" => &mut trapped.uart,
            _ => continue,
        };
        *slot = Some(count);
    }
    Some(trapped)
}

/// The time of a `printk` line (`[    1.127869] ...`, maybe after another bracketed
/// prefix such as `[linux-b] `), in nanoseconds.
pub fn printk_nanoseconds(line: &str) -> Option<u64> {
    line.split('[').skip(1).find_map(|part| {
        let (stamp, _) = part.split_once(']')?;
        let (seconds, fraction) = stamp.trim().split_once('.')?;
        if fraction.is_empty() || fraction.len() > 9 {
            return None;
        }
        let seconds: u64 = seconds.parse().ok()?;
        let fraction: u64 = format!("{fraction:0<9}").parse().ok()?;
        Some(seconds * 1_000_000_000 + fraction)
    })
}

/// The start of the line the hypervisor logs when it enters `partition`'s guest
/// (`partition linux-a: vCPU 0 on CPU 1, entry 0x50000000, x0 0x5fe00000`).
fn entry_line(partition: &str) -> String {
    format!("partition {partition}: vCPU 0 on CPU")
}

/// The median of `values` (the mean of the middle two for an even count).
pub fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    match sorted.len() {
        0 => f64::NAN,
        length if length % 2 == 1 => sorted[middle],
        _ => (sorted[middle - 1] + sorted[middle]) / 2.0,
    }
}

/// What one boot showed of one guest.
#[derive(Clone, Debug)]
struct GuestBoot {
    /// When the hypervisor's line saying it entered the guest reached the host, from
    /// QEMU's start (Transom only).
    entered_at: Option<Duration>,
    /// When its `init started` line reached the host, from QEMU's start.
    marker_at: Duration,
    /// Its virtual counter just before that line.
    counter: Option<u64>,
    /// Linux's clock at `Run /init as init process`, ns.
    run_init_ns: Option<u64>,
    /// What the hypervisor counted (Transom only).
    trapped: Option<Trapped>,
}

impl GuestBoot {
    /// Reads `partition`'s console `lines`.
    fn read(partition: &str, lines: &[TimedLine], trapped: Option<Trapped>) -> Result<Self> {
        let started = linux::started(partition);
        let marker = linux::marker(partition);
        let marker_at = lines
            .iter()
            .find(|line| line.text.contains(&started))
            .map(|line| line.at)
            .ok_or_else(|| {
                let tail: Vec<&str> = lines
                    .iter()
                    .rev()
                    .take(20)
                    .rev()
                    .map(|line| line.text.as_str())
                    .collect();
                anyhow!(
                    "{partition} printed no {started:?}; its console ended with:\n{}",
                    tail.join("\n")
                )
            })?;
        let counter = lines
            .iter()
            .filter(|line| line.text.contains(&marker))
            .find_map(|line| cntvct::parse(&line.text));
        let run_init_ns = lines
            .iter()
            .find(|line| line.text.contains(linux::RUN_INIT))
            .and_then(|line| printk_nanoseconds(&line.text));
        Ok(GuestBoot {
            entered_at: None,
            marker_at,
            counter,
            run_init_ns,
            trapped,
        })
    }

    /// Instructions from QEMU's reset to the marker, under `-icount shift=0`.
    fn instructions(&self) -> Option<u64> {
        self.counter.map(|ticks| ticks * INSTRUCTIONS_PER_TICK)
    }
}

/// The runs the benchmark boots.
struct Runs {
    alone: DemoRun,
    both: DemoRun,
}

impl Runs {
    /// Boots `setup` (under `-icount shift=0` if `icount`) and reads each guest.
    fn boot(&self, setup: Setup, icount: bool) -> Result<Vec<GuestBoot>> {
        let demo = match setup {
            Setup::Direct => return self.boot_directly(icount).map(|boot| vec![boot]),
            Setup::Alone => &self.alone,
            Setup::Both => &self.both,
        };
        let mut demo = demo.clone();
        demo.config.icount = icount;
        let outcome = demo.boot(BOOT_TIMEOUT, Echo::Quiet)?;
        if outcome.ending != Ending::Verdict(Verdict::Pass) {
            bail!(
                "{} ended with {:?}:\n{}",
                setup.label(),
                outcome.ending,
                outcome.transcript()
            );
        }
        let messages = outcome.messages_timed();
        let mut guests = Vec::new();
        for partition in setup.partitions() {
            let trapped = messages
                .iter()
                .find_map(|line| parse_trapped(&line.text, partition));
            let console = demo.console(&outcome, partition);
            let mut boot =
                GuestBoot::read(partition, &console, trapped).with_context(|| setup.label())?;
            let entry = entry_line(partition);
            boot.entered_at = messages
                .iter()
                .find(|line| line.text.contains(&entry))
                .map(|line| line.at);
            guests.push(boot);
        }
        Ok(guests)
    }

    /// Boots linux-a's kernel and initramfs directly on QEMU `virt`.
    fn boot_directly(&self, icount: bool) -> Result<GuestBoot> {
        let prepared = &self.alone.guests.prepared;
        let guest = &prepared.guests[0];
        let options = DirectOptions {
            timeout: BOOT_TIMEOUT,
            echo: false,
            icount,
        };
        let boot = linux::boot_directly(&prepared.kernel.image, guest, &options)?;
        if boot.timed_out || boot.status != Some(0) {
            bail!(
                "the direct boot failed (exit status {:?}, timed out: {}):\n{}\n{}",
                boot.status,
                boot.timed_out,
                boot.stderr.trim(),
                boot.console
            );
        }
        GuestBoot::read(&guest.partition, &boot.lines, None).context("the direct boot")
    }
}

/// One row of a table: a setup and one of its guests.
struct Row {
    setup: Setup,
    partition: &'static str,
}

fn rows() -> Vec<Row> {
    Setup::ALL
        .iter()
        .flat_map(|&setup| {
            setup
                .partitions()
                .iter()
                .map(move |&partition| Row { setup, partition })
        })
        .collect()
}

/// `boots[setup]`'s guest `partition`.
fn guest<'a>(boots: &'a [(Setup, Vec<GuestBoot>)], row: &Row) -> &'a GuestBoot {
    let (_, guests) = boots
        .iter()
        .find(|(setup, _)| *setup == row.setup)
        .expect("every setup is booted");
    let index = row
        .setup
        .partitions()
        .iter()
        .position(|partition| *partition == row.partition)
        .expect("the row's partition is the setup's");
    &guests[index]
}

/// Runs the benchmark, prints its tables and writes `directory/linux.json`.
pub fn run(directory: &Path) -> Result<()> {
    let image = image::build(BoardName::QemuVirt)?;
    let board = BoardName::QemuVirt;
    let runs = Runs {
        alone: linux::demo_run(&image, &["linux-a"], &RunFiles::tagged(board, "bench-a"))?,
        both: linux::demo_run(
            &image,
            &linux::demo_partitions(),
            &RunFiles::tagged(board, "bench-ab"),
        )?,
    };
    let release = runs.alone.guests.prepared.kernel.release.clone();
    let release = release.unwrap_or_else(|| "of unknown release".into());

    // Wall time: each round boots every setup once, in an order that alternates.
    let mut rounds: Vec<Vec<(Setup, Vec<GuestBoot>)>> = Vec::new();
    for round in 0..ROUNDS {
        let mut order = Setup::ALL.to_vec();
        if round % 2 == 1 {
            order.reverse();
        }
        let mut boots = Vec::new();
        for setup in order {
            boots.push((setup, runs.boot(setup, false)?));
        }
        let times: Vec<String> = rows()
            .iter()
            .map(|row| {
                let seconds = guest(&boots, row).marker_at.as_secs_f64();
                format!("{} {}: {seconds:.2} s", row.setup.key(), row.partition)
            })
            .collect();
        eprintln!(
            "xtask: linux round {}/{ROUNDS}: {}",
            round + 1,
            times.join(", ")
        );
        rounds.push(boots);
    }
    let mut icount_boots = Vec::new();
    for setup in Setup::ALL {
        icount_boots.push((setup, runs.boot(setup, true)?));
    }

    let json = report(&release, &rounds, &icount_boots)?;
    let path = directory.join("linux.json");
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    println!("written: {}", path.display());
    Ok(())
}

/// Prints the tables and returns the JSON.
fn report(
    release: &str,
    rounds: &[Vec<(Setup, Vec<GuestBoot>)>],
    icount_boots: &[(Setup, Vec<GuestBoot>)],
) -> Result<String> {
    let direct = Row {
        setup: Setup::Direct,
        partition: "linux-a",
    };
    println!(
        "\nlinux: Debian {release} and the demo's busybox initramfs, from QEMU's start to \
         `transom-guest <partition>: init started`"
    );
    println!(
        "(QEMU virt, GICv3, Cortex-A72; Transom on 4 CPUs, one per guest; linux-a's files \
         for the direct boot)"
    );
    println!(
        "\nwall time from QEMU's start, {} rounds in alternating order (medians)",
        rounds.len()
    );
    println!(
        "{:<32} {:<8} {:>12} {:>10} {:>8} {:>8}",
        "run", "guest", "guest entry", "init s", "ratio", "target"
    );
    let mut json = format!(
        "{{\n  \"linux\": {{\n    \"kernel\": \"{release}\",\n    \"rounds\": {},\n    \"wall\": [\n",
        rounds.len()
    );
    let rows = rows();
    for (index, row) in rows.iter().enumerate() {
        let seconds: Vec<f64> = rounds
            .iter()
            .map(|boots| guest(boots, row).marker_at.as_secs_f64())
            .collect();
        let ratios: Vec<f64> = rounds
            .iter()
            .map(|boots| {
                guest(boots, row).marker_at.as_secs_f64()
                    / guest(boots, &direct).marker_at.as_secs_f64()
            })
            .collect();
        let entries: Option<Vec<f64>> = rounds
            .iter()
            .map(|boots| Some(guest(boots, row).entered_at?.as_secs_f64()))
            .collect();
        let entry = entries.as_deref().map(median);
        let target = if row.setup == Setup::Direct {
            "-".to_string()
        } else {
            format!("<= {TARGET_RATIO:.2}")
        };
        println!(
            "{:<32} {:<8} {:>12} {:>10.3} {:>8.3} {:>8}",
            row.setup.label(),
            row.partition,
            entry.map_or("-".into(), |seconds| format!("{seconds:.3}")),
            median(&seconds),
            median(&ratios),
            target
        );
        let listed: Vec<String> = seconds.iter().map(|value| format!("{value:.3}")).collect();
        let separator = if index + 1 < rows.len() { "," } else { "" };
        writeln!(
            json,
            "      {{\"run\": \"{}\", \"guest\": \"{}\", \"seconds\": [{}], \"median_s\": {:.3}, \"median_ratio\": {:.3}, \"median_guest_entry_s\": {}}}{separator}",
            row.setup.key(),
            row.partition,
            listed.join(", "),
            median(&seconds),
            median(&ratios),
            entry.map_or("null".into(), |seconds| format!("{seconds:.3}"))
        )?;
    }
    json.push_str("    ],\n    \"icount\": [\n");

    println!(
        "\ninstructions under -icount shift=0, from QEMU's reset to `init started` \
         (the guest's CNTVCT_EL0 x {INSTRUCTIONS_PER_TICK})"
    );
    println!(
        "(the CPUs take turns on one virtual clock: with two guests booting at once, each \
         count includes the other's instructions)"
    );
    println!(
        "{:<32} {:<8} {:>14} {:>8} {:>22}",
        "run", "guest", "instructions", "ratio", "Linux clock at /init"
    );
    let direct_instructions = guest(icount_boots, &direct).instructions();
    for (index, row) in rows.iter().enumerate() {
        let boot = guest(icount_boots, row);
        let instructions = boot.instructions();
        let ratio = instructions
            .zip(direct_instructions)
            .map(|(count, direct)| count as f64 / direct as f64);
        println!(
            "{:<32} {:<8} {:>14} {:>8} {:>22}",
            row.setup.label(),
            row.partition,
            or_na(instructions),
            ratio.map_or("n/a".into(), |ratio| format!("{ratio:.3}")),
            boot.run_init_ns
                .map_or("n/a".into(), |ns| format!("{:.6} s", ns as f64 / 1e9))
        );
        let separator = if index + 1 < rows.len() { "," } else { "" };
        writeln!(
            json,
            "      {{\"run\": \"{}\", \"guest\": \"{}\", \"instructions\": {}, \"ratio\": {}, \"linux_clock_at_run_init_ns\": {}}}{separator}",
            row.setup.key(),
            row.partition,
            json_number(instructions),
            ratio.map_or("null".into(), |ratio| format!("{ratio:.4}")),
            json_number(boot.run_init_ns)
        )?;
    }
    json.push_str("    ],\n    \"trapped\": [\n");

    println!("\ntrapped accesses from each guest's entry to its power-off (the -icount runs)");
    println!(
        "{:<32} {:<8} {:>9} {:>9} {:>9} {:>9}",
        "run", "guest", "total", "GIC", "devices", "UART"
    );
    let transom_rows: Vec<&Row> = rows
        .iter()
        .filter(|row| row.setup != Setup::Direct)
        .collect();
    for (index, row) in transom_rows.iter().enumerate() {
        let trapped = guest(icount_boots, row).trapped;
        let field = |pick: fn(&Trapped) -> Option<u64>| trapped.as_ref().and_then(pick);
        let total = field(|trapped| Some(trapped.total));
        let gic = field(|trapped| trapped.gic);
        let devices = field(|trapped| trapped.devices);
        let uart = field(|trapped| trapped.uart);
        println!(
            "{:<32} {:<8} {:>9} {:>9} {:>9} {:>9}",
            row.setup.label(),
            row.partition,
            or_na(total),
            or_na(gic),
            or_na(devices),
            or_na(uart)
        );
        let separator = if index + 1 < transom_rows.len() {
            ","
        } else {
            ""
        };
        writeln!(
            json,
            "      {{\"run\": \"{}\", \"guest\": \"{}\", \"total\": {}, \"gic\": {}, \"devices\": {}, \"uart\": {}}}{separator}",
            row.setup.key(),
            row.partition,
            json_number(total),
            json_number(gic),
            json_number(devices),
            json_number(uart)
        )?;
    }
    json.push_str("    ]\n  }\n}\n");
    Ok(json)
}

fn or_na(value: Option<u64>) -> String {
    value.map_or("n/a".into(), |value| value.to_string())
}

fn json_number(value: Option<u64>) -> String {
    value.map_or("null".into(), |value| value.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hypervisor_s_count_is_read() {
        let line = "partition linux-a: 503 trapped accesses (416 to the virtual GIC, 75 \
                    forwarded to devices, 12 to the virtual UART)";
        assert_eq!(
            parse_trapped(line, "linux-a"),
            Some(Trapped {
                total: 503,
                gic: Some(416),
                devices: Some(75),
                uart: Some(12),
            })
        );
        assert_eq!(parse_trapped(line, "linux-b"), None);
        assert_eq!(
            parse_trapped("partition linux-b: 7 trapped accesses", "linux-b"),
            Some(Trapped {
                total: 7,
                ..Trapped::default()
            })
        );
        assert_eq!(
            parse_trapped("partition linux-a: powered off", "linux-a"),
            None
        );
    }

    #[test]
    fn printk_times_are_read_to_the_nanosecond() {
        assert_eq!(
            printk_nanoseconds("[    1.127869] Run /init as init process"),
            Some(1_127_869_000)
        );
        assert_eq!(
            printk_nanoseconds("[linux-b] [   12.000001] Run /init as init process"),
            Some(12_000_001_000)
        );
        assert_eq!(
            printk_nanoseconds("transom-guest linux-a: init started"),
            None
        );
    }

    #[test]
    fn the_median_takes_the_middle() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn every_guest_of_every_setup_has_a_row() {
        let rows: Vec<(Setup, &str)> = rows()
            .iter()
            .map(|row| (row.setup, row.partition))
            .collect();
        assert_eq!(
            rows,
            [
                (Setup::Direct, "linux-a"),
                (Setup::Alone, "linux-a"),
                (Setup::Both, "linux-a"),
                (Setup::Both, "linux-b"),
            ]
        );
    }
}
