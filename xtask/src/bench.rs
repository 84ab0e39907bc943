//! `cargo xtask bench`: measurements, printed as a table and written as JSON.
//!
//! Guests (`guest_bench`): instructions per trapped access, direct access, null
//! HVC, and from hypervisor entry to the first guest instruction, under
//! `-icount shift=0`.
//!
//! Linux (`linux_bench`): the demo's Debian kernel and initramfs to `/init` under
//! Transom against a direct boot on QEMU `virt`: wall time (median ratio of
//! alternating runs), instructions under `-icount shift=0`, and each guest's trapped
//! accesses.
//!
//! Stage 2 (the stage-2 issue): for each granule, the table pages needed to
//! identity-map 1 GiB and 4 GiB of granule-aligned guest RAM (deterministic), and
//! the host time to build those tables, as the median of several runs and as a ratio
//! to the 4 KiB granule measured in the same run (wall-clock figures on shared
//! machines are noisy; only the ratio and the page counts are meant to be compared).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use transom_boards::{Granule, PhysRange};
use transom_vmm_core::stage2::descriptor::Leaf;
use transom_vmm_core::stage2::layout::Stage2Layout;
use transom_vmm_core::stage2::table::{HeapTables, Stage2Tables, TlbMaintenance};

use crate::workspace_root;

/// Runs per measurement; the median is reported.
const RUNS: usize = 15;
/// `ID_AA64MMFR0_EL1.PARange` of QEMU's cortex-a72: 44 bits.
const PA_RANGE_44_BITS: u64 = 0b0100;
const GIB: u64 = 1 << 30;
/// Where guest RAM starts (QEMU `virt`).
const RAM_BASE: u64 = 0x4000_0000;

/// TLB maintenance that does nothing: host tables are never walked by hardware.
struct NoTlb;

impl TlbMaintenance for NoTlb {
    fn invalidate_entry(&mut self, _ipa: u64) {}
    fn invalidate_range(&mut self, _ipa: u64, _size: u64) {}
    fn publish(&mut self) {}
    fn complete(&mut self) {}
}

/// One row of the stage-2 table.
struct Row {
    granule: &'static str,
    guest_gib: u64,
    table_pages: u64,
    table_bytes: u64,
    median: Duration,
}

fn map_guest(granule: Granule, bytes: u64) -> Result<(u64, u64, Duration)> {
    let layout = Stage2Layout::new(granule, PA_RANGE_44_BITS)
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    let mut times = Vec::with_capacity(RUNS);
    let mut pages = 0;
    for _ in 0..RUNS {
        let start = Instant::now();
        // A table per 2 MiB mapped, more than the blocks need.
        let memory = HeapTables::new(&layout, (bytes / (2 << 20)) as usize + 16)
            .context("reserving the table arena")?;
        let mut tables =
            Stage2Tables::new(layout, memory).map_err(|error| anyhow::anyhow!("{error:?}"))?;
        let ram = PhysRange::new(RAM_BASE, bytes);
        tables
            .map(ram, ram.start, Leaf::RAM, &mut NoTlb)
            .map_err(|error| anyhow::anyhow!("{error:?}"))?;
        times.push(start.elapsed());
        pages = tables.table_pages();
    }
    times.sort();
    Ok((
        pages,
        pages * layout.geometry.table_bytes(),
        times[RUNS / 2],
    ))
}

/// Runs the benchmarks, prints the table and writes `target/bench/stage2.json`.
pub fn run() -> Result<()> {
    let mut rows = Vec::new();
    for granule in Granule::ALL {
        for guest_gib in [1, 4] {
            let (table_pages, table_bytes, median) = map_guest(granule, guest_gib * GIB)?;
            rows.push(Row {
                granule: granule.label(),
                guest_gib,
                table_pages,
                table_bytes,
                median,
            });
        }
    }
    println!("stage 2: identity-map granule-aligned guest RAM at {RAM_BASE:#x} (44-bit IPA)");
    println!(
        "{:<8} {:>6} {:>12} {:>12} {:>16} {:>12}",
        "granule", "guest", "table pages", "table bytes", "median host µs", "vs 4 KiB"
    );
    let mut json = String::from("{\n  \"stage2\": [\n");
    for (index, row) in rows.iter().enumerate() {
        let baseline = rows
            .iter()
            .find(|other| other.granule == "4 KiB" && other.guest_gib == row.guest_gib)
            .expect("4 KiB rows come first");
        let ratio = row.median.as_secs_f64() / baseline.median.as_secs_f64().max(f64::MIN_POSITIVE);
        println!(
            "{:<8} {:>4}Gi {:>12} {:>12} {:>16.1} {:>11.2}x",
            row.granule,
            row.guest_gib,
            row.table_pages,
            row.table_bytes,
            row.median.as_secs_f64() * 1e6,
            ratio
        );
        let separator = if index + 1 < rows.len() { "," } else { "" };
        writeln!(
            json,
            "    {{\"granule\": \"{}\", \"guest_gib\": {}, \"table_pages\": {}, \"table_bytes\": {}, \"median_host_us\": {:.1}, \"time_vs_4k\": {:.3}}}{}",
            row.granule,
            row.guest_gib,
            row.table_pages,
            row.table_bytes,
            row.median.as_secs_f64() * 1e6,
            ratio,
            separator
        )?;
    }
    json.push_str("  ]\n}\n");
    let directory: PathBuf = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&directory).context("creating target/bench")?;
    let path = directory.join("stage2.json");
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    println!("written: {}", path.display());

    guests()?;
    crate::linux_bench::run(&directory)
}

/// Measures the guest figures, prints them and writes `target/bench/guests.json`.
pub fn guests() -> Result<()> {
    let figures = crate::guest_bench::measure()?;
    let json = format!(
        "{{\n  \"guests\": {}\n}}\n",
        crate::guest_bench::report(&figures)?
    );
    let directory: PathBuf = workspace_root().join("target").join("bench");
    std::fs::create_dir_all(&directory).context("creating target/bench")?;
    let path = directory.join("guests.json");
    std::fs::write(&path, json).with_context(|| format!("writing {}", path.display()))?;
    println!("written: {}", path.display());
    Ok(())
}
