//! What the kernel does with the board table at boot: which device pages EL2 maps
//! for itself, the log of every partition's grants, and the cross-check of the table
//! against the firmware's device tree.

use transom_boards::{Board, DeviceKind, Granule, Mapping, Partition, PhysRange, Region, same_str};
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

/// Every grant of the board table, resolved once. Finding a grant's region is a
/// search by name, and deciding its mapping walks its span region by region; the
/// EL2 map and each partition's stage 2 need both. For the table's own granule
/// [`Grants::resolve`] runs at compile time (`primary_main`); a boot with another
/// granule (`transom.granule`) runs it again.
#[derive(Clone, Copy)]
pub struct Grants {
    /// The table's devices, which the grants index.
    devices: &'static [Region],
    /// Each grant's device (its index in `devices`) and mapping, in table order:
    /// four bytes a grant, so the boot moves little.
    resolved: [(u16, Mapping); MAX_GRANTS],
    /// Where each partition's grants start in `resolved`; one more entry marks the
    /// end of the last.
    starts: [u8; MAX_PARTITIONS + 1],
}

const _: () = assert!(MAX_GRANTS <= u8::MAX as usize);

impl Grants {
    /// Resolves every grant of `board`, in table order. A grant naming no region
    /// (which the table's validation rejects) is left out. Panics if the table has
    /// more than [`MAX_GRANTS`] grants, [`MAX_PARTITIONS`] partitions or 65,536
    /// devices, which `primary_main` rules out at compile time.
    pub const fn resolve(board: &Board) -> Grants {
        let devices = board.devices;
        assert!(devices.len() <= 1 << 16, "devices are indexed by a u16");
        let mut resolved = [(0, Mapping::Trapped); MAX_GRANTS];
        let mut starts = [0; MAX_PARTITIONS + 1];
        let mut count = 0;
        assert!(
            board.partitions.len() <= MAX_PARTITIONS,
            "a partition per CPU at most"
        );
        let mut index = 0;
        while index < board.partitions.len() {
            let partition = &board.partitions[index];
            starts[index] = count as u8;
            let mut grant = 0;
            while grant < partition.grants.len() {
                let name = partition.grants[grant].device;
                let mut device = 0;
                while device < devices.len() && !same_str(devices[device].name, name) {
                    device += 1;
                }
                if device < devices.len() {
                    assert!(count < MAX_GRANTS, "more grants than MAX_GRANTS");
                    let mapping = board.mapping(partition, &partition.grants[grant]);
                    resolved[count] = (device as u16, mapping);
                    count += 1;
                }
                grant += 1;
            }
            index += 1;
        }
        starts[index] = count as u8;
        Grants {
            devices,
            resolved,
            starts,
        }
    }

    /// The grants of partition `index`, in table order.
    pub fn of(&self, index: usize) -> impl Iterator<Item = ResolvedGrant> + '_ {
        let range = match (self.starts.get(index), self.starts.get(index + 1)) {
            (Some(&start), Some(&end)) if start <= end => usize::from(start)..usize::from(end),
            _ => 0..0,
        };
        self.resolved[range]
            .iter()
            .map(|&(device, mapping)| self.entry(device, mapping))
    }

    /// Every grant, in table order.
    pub fn all(&self) -> impl Iterator<Item = ResolvedGrant> + '_ {
        let end = self.starts.iter().copied().max().unwrap_or(0);
        self.resolved[..usize::from(end)]
            .iter()
            .map(|&(device, mapping)| self.entry(device, mapping))
    }

    fn entry(&self, device: u16, mapping: Mapping) -> ResolvedGrant {
        ResolvedGrant {
            region: &self.devices[usize::from(device)],
            mapping,
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
    for grant in grants.all() {
        if grant.mapping == Mapping::Trapped {
            add(grant.region);
        }
    }
    (windows, overflowed)
}

/// Logs the table and each partition's CPUs and RAM. Each grant is logged once its
/// stage-2 window is mapped (`stage2::build_partition_spaces`).
pub fn log_partitions(board: &Board) {
    defmt::info!(
        "board table: {=usize} devices, {=usize} partitions, {} stage-2 granule",
        board.devices.len(),
        board.partitions.len(),
        board.granule
    );
    for partition in board.partitions {
        log_partition(partition);
    }
}

fn log_partition(partition: &Partition) {
    // Partitions mostly have one RAM range: it goes on the line with the CPUs.
    let (first, more) = partition
        .ram
        .split_first()
        .map_or((None, &[][..]), |(first, more)| (Some(first), more));
    match first {
        Some(ram) => defmt::info!(
            "partition {=str}: CPUs {=[?]}, RAM {=u64:#x}..{=u64:#x} ({=u64} MiB)",
            partition.name,
            partition.cpus,
            ram.start,
            ram.end,
            ram.size() / (1024 * 1024)
        ),
        None => defmt::info!(
            "partition {=str}: CPUs {=[?]}, no RAM",
            partition.name,
            partition.cpus
        ),
    }
    for ram in more {
        defmt::info!(
            "partition {=str}: RAM {=u64:#x}..{=u64:#x} ({=u64} MiB)",
            partition.name,
            ram.start,
            ram.end,
            ram.size() / (1024 * 1024)
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
    // A board table lists the frames of every GIC generation the machine can have
    // (QEMU `virt` has gic-version=2 and 3); the absent ones are expected, and
    // reported together.
    let mut absent_frames = heapless::Vec::<AbsentFrame<'_>, 8>::new();
    for region in board.devices {
        match tree.decodes(region.base) {
            Ok(true) => {}
            Ok(false) if region.kind.is_interrupt_controller() => {
                if let Err(frame) = absent_frames.push(AbsentFrame(region)) {
                    log_absent_frames(&absent_frames);
                    absent_frames.clear();
                    let _ = absent_frames.push(frame);
                }
            }
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
    if !absent_frames.is_empty() {
        log_absent_frames(&absent_frames);
    }
}

/// A GIC frame of the board table that the machine does not have.
struct AbsentFrame<'a>(&'a Region);

impl defmt::Format for AbsentFrame<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(
            f,
            "{} {=str} at {=u64:#x}",
            self.0.kind,
            self.0.name,
            self.0.base
        );
    }
}

fn log_absent_frames(frames: &[AbsentFrame<'_>]) {
    defmt::info!(
        "board table: GIC frames not on this machine: {=[?]}",
        frames
    );
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
