//! Each partition's stage 2, built at boot from the board table: RAM identity-mapped
//! after a check against every reserved range, each grant as its window (direct
//! spans mapped, trapped ones recorded), its own VMID, and a log of all of it.

use alloc::vec::Vec;

use transom_boards::{Board, Partition, PhysRange, Region};
use transom_vmm_core::firmware_tree::FirmwareTree;
use transom_vmm_core::stage2::layout::Stage2Layout;
use transom_vmm_core::stage2::reserved::{ReservedRegistry, ReservedSource};
use transom_vmm_core::stage2::table::{HeapTables, Stage2Error, Stage2Tables};
use transom_vmm_core::stage2::window::{MappedWindow, PartitionSpace};
use transom_vmm_core::verdict::Verdict;

use crate::arch::stage2::{self, PartitionTlb};
use crate::board_table::Grants;

/// Tables each partition's stage 2 may use besides its root: RAM in blocks needs
/// one or two, and each device window one more at most (the demo partitions use
/// four). An arena this size holds 64 KiB with the 4 KiB granule, 1 MiB with the
/// 64 KiB one, which the Pi's 8 MiB heap affords for each of its partitions.
pub const TABLES_PER_PARTITION: usize = 16;

/// One partition's translation, as its vCPUs use it.
pub struct PartitionStage2 {
    /// The partition's name, from the table.
    pub name: &'static str,
    /// Its index in the table.
    pub index: usize,
    /// Its VMID: its index in the table plus one (VMID 0 is never a guest's).
    pub vmid: u8,
    /// The `VTTBR_EL2` value: root table and VMID.
    pub vttbr: u64,
    /// The `VTCR_EL2` value (the same for every partition; each CPU that runs a
    /// vCPU loads it).
    pub vtcr: u64,
    /// Its RAM banks, identity-mapped.
    pub ram: &'static [PhysRange],
    /// Its windows, in grant order, with the device region each shows (so no one
    /// looks the region up by name again).
    pub windows: Vec<(&'static Region, MappedWindow)>,
    /// The tables and the trap table.
    pub space: PartitionSpace<HeapTables>,
}

impl PartitionStage2 {
    /// Shows the GIC's virtual CPU interface `gicv` at `guest`, the CPU interface
    /// (GICC) of the guest's device tree, for as many bytes as both have. The guest
    /// then runs its CPU interface on the hardware's virtual one, without traps
    /// (IHI 0048B.b 5.1: GICV has GICC's register layout).
    pub fn map_virtual_cpu_interface(
        &mut self,
        guest: PhysRange,
        gicv: &Region,
        page_size: u64,
    ) -> Result<(), Stage2Error> {
        let range = PhysRange::new(guest.start, guest.size().min(gicv.size));
        let mut tlb = PartitionTlb {
            vttbr: self.vttbr,
            page_size,
        };
        self.space
            .map_device_at(range, gicv.base, gicv.attributes, &mut tlb)
    }
}

/// A partition's RAM ranges in a log line: `0x50000000..0x60000000`, comma-separated.
struct RamRanges(&'static [PhysRange]);

impl defmt::Format for RamRanges {
    fn format(&self, f: defmt::Formatter<'_>) {
        for (index, range) in self.0.iter().enumerate() {
            if index > 0 {
                defmt::write!(f, ", ");
            }
            defmt::write!(f, "{=u64:#x}..{=u64:#x}", range.start, range.end);
        }
    }
}

/// Logs a grant as its partition's stage 2 maps it: the window's span, the exact
/// device address (identity-mapped, so the IPA is the physical address) with its
/// offset in the span and its size, the attributes, the widths a trapped access may
/// have, the interrupts and the mode.
fn log_window(partition: &str, region: &Region, window: &MappedWindow) {
    let interrupts: heapless::Vec<u32, { transom_boards::MAX_REGION_INTERRUPTS }> =
        region.interrupts.as_slice().iter().map(|id| id.0).collect();
    defmt::info!(
        "stage 2 of {=str}: grant {=str} ({}) span {=u64:#x}..{=u64:#x} device IPA {=u64:#x} (+{=u64:#x}, {=u64:#x} bytes) {} widths {} INTIDs {=[?]}: {}",
        partition,
        region.name,
        region.kind,
        window.span.start,
        window.span.end,
        window.device_ipa,
        window.device_ipa - window.span.start,
        window.size,
        region.attributes,
        region.access.widths,
        interrupts.as_slice(),
        window.mode
    );
}

/// Builds the stage 2 (see the module doc) of every partition `wanted` picks, loads
/// `VTCR_EL2` for the table's granule and this CPU's physical address size, and
/// logs each partition built.
/// Fails, after logging why, if the CPU cannot use the granule, RAM overlaps a
/// reserved range or the tables cannot be built.
///
/// Each partition's tables come from an arena of [`TABLES_PER_PARTITION`] tables
/// besides the root.
pub fn build_partition_spaces(
    board: &Board,
    grants: &Grants,
    tree: &FirmwareTree<'_>,
    wanted: impl Fn(&Partition) -> bool,
) -> Result<Vec<PartitionStage2>, Verdict> {
    let layout = match Stage2Layout::for_cpu(board.granule, stage2::mmfr0()) {
        Ok(layout) => layout,
        Err(error) => {
            defmt::error!("stage 2: {}", defmt::Display2Format(&error));
            return Err(Verdict::BoardMismatch);
        }
    };
    stage2::set_vtcr(layout.vtcr());
    defmt::info!(
        "stage 2: {} granule, {=u32}-bit IPA, start level {=u32} ({=u64} root tables), VTCR_EL2 {=u64:#x}",
        board.granule,
        layout.ipa_bits,
        layout.start_level,
        layout.root_tables,
        layout.vtcr()
    );
    let reserved = reserved_ranges(board, tree);
    let mut partitions = Vec::with_capacity(board.partitions.len());
    for (index, partition) in board.partitions.iter().enumerate() {
        if !wanted(partition) {
            continue;
        }
        let memory = HeapTables::new(&layout, TABLES_PER_PARTITION);
        let Some(Ok(tables)) = memory.map(|memory| Stage2Tables::new(layout, memory)) else {
            defmt::error!("stage 2 of {=str}: out of memory", partition.name);
            return Err(Verdict::TestFailure);
        };
        let vmid = index as u8 + 1;
        let vttbr = stage2::vttbr(tables.root_address(), vmid);
        let mut tlb = PartitionTlb {
            vttbr,
            page_size: board.granule.size(),
        };
        let mut space = PartitionSpace::new(tables);
        for &ram in partition.ram {
            if let Err(conflict) = reserved.check_ram(partition.name, ram) {
                defmt::error!("stage 2: {}", defmt::Display2Format(&conflict));
                return Err(Verdict::TestFailure);
            }
            space
                .map_ram(ram, &mut tlb)
                .map_err(|error| failed(partition.name, &error))?;
        }
        let mut windows = Vec::with_capacity(partition.grants.len());
        for grant in grants.of(index) {
            let region = grant.region;
            let window = space
                .map_window(region, grant.mapping, &mut tlb)
                .map_err(|error| failed(partition.name, &error))?;
            log_window(partition.name, region, &window);
            windows.push((region, window));
        }
        defmt::info!(
            "stage 2 of {=str}: VMID {=u8}, VTTBR_EL2 {=u64:#x}, {=u64} table pages, RAM {} identity-mapped Normal-WB",
            partition.name,
            vmid,
            vttbr,
            space.tables().table_pages(),
            RamRanges(partition.ram)
        );
        partitions.push(PartitionStage2 {
            name: partition.name,
            index,
            vmid,
            vttbr,
            vtcr: layout.vtcr(),
            ram: partition.ram,
            windows,
            space,
        });
    }
    Ok(partitions)
}

/// Logs why partition `name`'s tables could not be built.
fn failed(name: &str, error: &Stage2Error) -> Verdict {
    defmt::error!("stage 2 of {=str}: {}", name, defmt::Debug2Format(error));
    Verdict::TestFailure
}

/// The board's reserved ranges and the firmware tree's.
fn reserved_ranges(board: &Board, tree: &FirmwareTree<'_>) -> ReservedRegistry {
    let mut reserved = ReservedRegistry::from_board(board);
    match tree.reserved_memory() {
        Ok(ranges) => {
            for range in ranges {
                reserved.add("firmware reservation", range, ReservedSource::FirmwareTree);
            }
        }
        Err(error) => defmt::warn!(
            "stage 2: unreadable reserved memory in the firmware's tree: {}",
            defmt::Debug2Format(&error)
        ),
    }
    reserved
}
