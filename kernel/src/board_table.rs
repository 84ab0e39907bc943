//! What the kernel does with the board table at boot: which device pages EL2 maps
//! for itself, the log of every partition's grants, and the cross-check of the table
//! against the firmware's device tree.

use transom_boards::{Board, DeviceKind, Granule, Mapping, Partition, PhysRange, Region};
use transom_vmm_core::firmware_tree::{FirmwareTree, Ranges};
use transom_vmm_core::verdict::Verdict;

/// The range of the board's first device of `kind` that the firmware's tree says
/// this machine has (a GICv3's redistributors are absent on a GICv2 `virt`).
pub fn present_frame(
    board: &Board,
    tree: &FirmwareTree<'_>,
    kind: DeviceKind,
) -> Option<PhysRange> {
    board
        .devices
        .iter()
        .find(|region| region.kind == kind && tree.decodes(region.base).unwrap_or(false))
        .map(|region| region.range())
}

/// The most grants a board table may have, over all its partitions.
pub const MAX_GRANTS: usize = 64;
/// The most partitions: each has a physical CPU of its own.
const MAX_PARTITIONS: usize = crate::arch::MAX_CPUS;

/// The grants of a board table's partitions, counted at compile time so that
/// [`Grants`] has room for them.
pub const fn grant_count(board: &Board) -> usize {
    let mut count = 0;
    let mut index = 0;
    while index < board.partitions.len() {
        count += board.partitions[index].grants.len();
        index += 1;
    }
    count
}

/// One grant with its device region and how it reaches the guest.
#[derive(Clone, Copy)]
pub struct ResolvedGrant {
    /// The device region it names.
    pub region: &'static Region,
    /// Direct or trapped, as [`Board::mapping`] decides for the boot's granule.
    pub mapping: Mapping,
}

/// Every grant of the board table, resolved once per boot. Finding a grant's region
/// is a search by name, and deciding its mapping walks its span region by region;
/// the EL2 map, the log and each partition's stage 2 all need both.
pub struct Grants {
    resolved: heapless::Vec<ResolvedGrant, MAX_GRANTS>,
    /// Where each partition's grants start in `resolved`; one more entry marks the
    /// end of the last.
    starts: heapless::Vec<usize, { MAX_PARTITIONS + 1 }>,
}

impl Grants {
    /// Resolves every grant of `board`, in table order. A grant naming no region
    /// (which the table's validation rejects) is left out. Panics if the table has
    /// more than [`MAX_GRANTS`] grants or [`MAX_PARTITIONS`] partitions, which
    /// `primary_main` rules out at compile time.
    pub fn resolve(board: &Board) -> Grants {
        let mut resolved = heapless::Vec::new();
        let mut starts = heapless::Vec::new();
        for partition in board.partitions {
            starts
                .push(resolved.len())
                .expect("a partition per CPU at most");
            for grant in partition.grants {
                let Some(region) = board.device(grant.device) else {
                    continue;
                };
                let mapping = board.mapping(partition, grant);
                let entry = ResolvedGrant { region, mapping };
                if resolved.push(entry).is_err() {
                    panic!("the board table has more than {} grants", MAX_GRANTS);
                }
            }
        }
        starts
            .push(resolved.len())
            .expect("a partition per CPU at most");
        Grants { resolved, starts }
    }

    /// The grants of partition `index`, in table order.
    pub fn of(&self, index: usize) -> &[ResolvedGrant] {
        match (self.starts.get(index), self.starts.get(index + 1)) {
            (Some(&start), Some(&end)) => &self.resolved[start..end],
            _ => &[],
        }
    }
}

/// The EL2 stage-1 tables use 4 KiB pages, whatever the board's stage-2 granule.
const EL2_GRANULE: Granule = Granule::Size4KiB;

/// The most device windows EL2 maps for itself.
pub const MAX_EL2_DEVICE_WINDOWS: usize = 64;

/// Device pages the hypervisor maps at EL2.
pub type DeviceWindows = heapless::Vec<PhysRange, MAX_EL2_DEVICE_WINDOWS>;

/// The device pages the hypervisor itself touches: its console, every frame of the
/// interrupt controller, and each trapped grant's region (accesses to it are
/// forwarded from EL2). Nothing else: a device given directly to a guest is never
/// mapped at EL2. The console comes first, so it is mapped even if the list
/// overflows; the second value says whether it did.
pub fn el2_device_windows(board: &Board, grants: &Grants) -> (DeviceWindows, bool) {
    let mut windows = DeviceWindows::new();
    let mut overflowed = false;
    let mut add = |region: &Region| {
        let span = region.range().span(EL2_GRANULE);
        if windows.contains(&span) {
            return;
        }
        overflowed |= windows.push(span).is_err();
    };
    add(board.console_region());
    for region in board.devices {
        if region.kind.is_interrupt_controller() {
            add(region);
        }
    }
    for grant in &grants.resolved {
        if grant.mapping == Mapping::Trapped {
            add(grant.region);
        }
    }
    (windows, overflowed)
}

/// Logs each partition: CPUs, RAM, and every grant with its span, exact device
/// address, attributes, allowed widths, interrupts and mode.
pub fn log_partitions(board: &Board, grants: &Grants) {
    defmt::info!(
        "board table: {=usize} devices, {=usize} partitions, {=str} stage-2 granule",
        board.devices.len(),
        board.partitions.len(),
        board.granule.label()
    );
    for (index, partition) in board.partitions.iter().enumerate() {
        log_partition(board, partition, grants.of(index));
    }
}

fn log_partition(board: &Board, partition: &Partition, grants: &[ResolvedGrant]) {
    defmt::info!(
        "partition {=str}: CPUs {=[?]}",
        partition.name,
        partition.cpus
    );
    for ram in partition.ram {
        defmt::info!(
            "partition {=str}: RAM {=u64:#x}..{=u64:#x} ({=u64} MiB)",
            partition.name,
            ram.start,
            ram.end,
            ram.size() / (1024 * 1024)
        );
    }
    for grant in grants {
        let region = grant.region;
        let range = region.range();
        let span = range.span(board.granule);
        let interrupts: heapless::Vec<u32, { transom_boards::MAX_REGION_INTERRUPTS }> =
            region.interrupts.as_slice().iter().map(|id| id.0).collect();
        defmt::info!(
            "partition {=str}: grant {=str} ({=str}) span {=u64:#x}..{=u64:#x} device {=u64:#x} (+{=u64:#x}, {=u64:#x} bytes) {=str} widths {=str} INTIDs {=[?]}: {=str}",
            partition.name,
            region.name,
            region.kind.label(),
            span.start,
            span.end,
            range.start,
            range.offset(board.granule),
            range.size(),
            region.attributes.label(),
            region.access.widths.label(),
            interrupts.as_slice(),
            grant.mapping.label()
        );
    }
}

/// Compares the table with the firmware's tree. RAM the table gives the hypervisor
/// or a partition that the tree does not report is an error (the image was built for
/// another machine), and so is a partition's RAM holding the firmware's device tree
/// or initrd; a device, RAM bank or CPU the tree lacks is a warning.
pub fn cross_check(board: &Board, tree: &FirmwareTree<'_>, firmware_ram: &Ranges) -> Verdict {
    let mut verdict = Verdict::Pass;
    let hypervisor = board.hypervisor.memory;
    if !covered(&hypervisor, firmware_ram) {
        defmt::error!(
            "board table: hypervisor memory {=u64:#x}..{=u64:#x} is not RAM in the firmware's device tree",
            hypervisor.start,
            hypervisor.end
        );
        verdict = Verdict::BoardMismatch;
    }
    for partition in board.partitions {
        for ram in partition.ram {
            if !covered(ram, firmware_ram) {
                defmt::error!(
                    "board table: RAM {=u64:#x}..{=u64:#x} of partition {=str} is not RAM in the firmware's device tree",
                    ram.start,
                    ram.end,
                    partition.name
                );
                verdict = Verdict::BoardMismatch;
            }
        }
    }
    let handoff = [
        ("device tree", Some(tree.blob)),
        ("initrd", tree.initrd().ok().flatten()),
    ];
    for (what, range) in handoff {
        let Some(range) = range else { continue };
        for partition in board.partitions {
            if partition.ram.iter().any(|ram| ram.overlaps(&range)) {
                defmt::error!(
                    "board table: the firmware's {=str} {=u64:#x}..{=u64:#x} lies in RAM of partition {=str}",
                    what,
                    range.start,
                    range.end,
                    partition.name
                );
                verdict = Verdict::BoardMismatch;
            }
        }
    }
    for bank in board.ram {
        if !firmware_ram.iter().any(|reported| reported.overlaps(bank)) {
            defmt::info!(
                "board table: RAM bank {=u64:#x}..{=u64:#x} is absent on this machine",
                bank.start,
                bank.end
            );
        }
    }
    check_devices(board, tree);
    check_cpus(board, tree);
    verdict
}

fn check_devices(board: &Board, tree: &FirmwareTree<'_>) {
    for region in board.devices {
        match tree.decodes(region.base) {
            Ok(true) => {}
            // A board table lists the frames of every GIC generation the machine
            // can have (QEMU `virt` has gic-version=2 and 3); the absent ones are
            // expected.
            Ok(false) if region.kind.is_interrupt_controller() => defmt::info!(
                "board table: {=str} frame {=str} at {=u64:#x} is not on this machine",
                region.kind.label(),
                region.name,
                region.base
            ),
            Ok(false) => defmt::warn!(
                "board table: device {=str} at {=u64:#x} is not in the firmware's device tree",
                region.name,
                region.base
            ),
            Err(error) => {
                defmt::warn!(
                    "board table: cannot look devices up in the firmware's device tree: {}",
                    defmt::Debug2Format(&error)
                );
                return;
            }
        }
    }
}

fn check_cpus(board: &Board, tree: &FirmwareTree<'_>) {
    let present = tree.cpus().map(|cpus| cpus.len()).unwrap_or(0);
    for partition in board.partitions {
        for &cpu in partition.cpus {
            if cpu >= present {
                defmt::warn!(
                    "board table: CPU {=usize} of partition {=str} is not in the firmware's device tree ({=usize} CPUs)",
                    cpu,
                    partition.name,
                    present
                );
            }
        }
    }
}

/// Whether the firmware's RAM holds every byte of `range`. Adjacent reported ranges
/// join: `range` may span two `memory` entries that touch.
fn covered(range: &PhysRange, firmware_ram: &Ranges) -> bool {
    let mut cursor = range.start;
    while cursor < range.end {
        let Some(piece) = firmware_ram.iter().find(|piece| piece.contains(cursor)) else {
            return false;
        };
        cursor = piece.end;
    }
    true
}
