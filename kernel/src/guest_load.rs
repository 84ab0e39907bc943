//! Loading each partition's guest from the bundle the firmware passed as the
//! initrd: the `Image` at its `text_offset`, its initrd after it, and a device tree
//! generated for the partition at the top of its RAM, as Linux's booting document
//! (`Documentation/arch/arm64/booting.rst`) asks: x0 = the tree's address, the
//! tree 8-byte aligned and at most 2 MiB.
//!
//! Loading is two steps. [`load`] checks and lays out every guest, and writes
//! each one's device tree and boot-info page, before any guest starts: a bad
//! bundle, image or command line refuses the run with nothing running.
//! [`Prepared::place`] then copies one guest into its RAM just before its vCPU 0
//! starts (`vcpu::launch`), so the first partition does not wait for the copies
//! of the others' images (a Linux `Image` is some 30 MiB).

use alloc::boxed::Box;
use alloc::vec::Vec;

use transom_boards::{Board, DeviceKind, PhysRange};
use transom_vmm_core::firmware_tree::FirmwareTree;
use transom_vmm_core::guest::boot_info::{self, BootWindow};
use transom_vmm_core::guest::bundle::{Bundle, GuestFiles};
use transom_vmm_core::guest::fdt_writer::Blob;
use transom_vmm_core::guest::image;
use transom_vmm_core::guest::tree::{self, GuestDevice, GuestGic, GuestTree, TimerInterrupts};
use transom_vmm_core::verdict::Verdict;
use transom_vmm_core::width_probe;

use crate::arch;
use crate::stage2::PartitionStage2;
use crate::vcpu::{Partition, Start};
use crate::vgic::PartitionGic;
use transom_vmm_core::vgic::{Line, LineKind, Version};

/// The device tree's slot: the last 2 MiB of the partition's RAM (booting.rst: at
/// most 2 MiB, 8-byte aligned).
const TREE_SLOT: u64 = 2 << 20;

/// The name of the virtual PL011 in a guest's tree.
const VIRTUAL_UART: &str = "vuart";

/// The name of the width probe in a guest's tree (its node: `width-probe@<ipa>`).
const WIDTH_PROBE: &str = "width-probe";

/// A partition for each stage 2 in `spaces`, and each guest `bundle` has for
/// them, checked and laid out ([`Prepared`]). Without a bundle no partition is
/// started. A bad image, command line or tree ends the boot with
/// [`Verdict::BadGuest`], after a log line naming the partition and what is
/// wrong. With `with_width_probe` every partition gets the width probe.
pub fn load(
    board: &Board,
    tree: &FirmwareTree<'_>,
    bundle: Option<&Bundle<'static>>,
    spaces: Vec<PartitionStage2>,
    with_width_probe: bool,
) -> Result<(Vec<Partition>, Vec<Prepared>), Verdict> {
    match bundle {
        None => defmt::info!("no guest bundle: partitions are not started"),
        Some(bundle) => {
            for table in board.partitions {
                if bundle.guest(table.name).is_none() {
                    defmt::info!(
                        "partition {=str}: no guest in the bundle; not started",
                        table.name
                    );
                }
            }
        }
    }
    let probe = if with_width_probe {
        width_probe_range(board)
    } else {
        None
    };
    let gic = guest_gic(board, tree);
    let console = board.console_region().range();
    let mut partitions = Vec::with_capacity(spaces.len());
    let mut prepared = Vec::new();
    for mut stage2 in spaces {
        let table = &board.partitions[stage2.index];
        let files = bundle.and_then(|bundle| bundle.guest(stage2.name));
        // A partition granted a UART of its own uses it; the others get the
        // virtual PL011 at the console's address, printed with their name.
        let vuart = (!has_own_uart(&stage2)).then_some(console);
        let vgic = virtual_gic(board, &mut stage2, table.cpus, gic, vuart.is_some())?;
        // Built in the list's room (the list has capacity for every partition), not
        // moved there after loading: a partition is 2 KiB.
        partitions.push(Partition::new(stage2, table.cpus, vuart, vgic, probe));
        let Some(partition) = partitions.last() else {
            unreachable!("a partition was just pushed");
        };
        if let Some(files) = files {
            let index = partitions.len() - 1;
            prepared.push(prepare_one(board, index, partition, &files, gic)?);
        }
    }
    Ok((partitions, prepared))
}

/// Where the width probe goes: a page below RAM that no device or reserved range
/// of the board holds (`width_probe::place`), the same IPA in every partition.
fn width_probe_range(board: &Board) -> Option<PhysRange> {
    let ram_start = board.ram.iter().map(|range| range.start).min()?;
    let devices = board.devices.iter().map(|region| region.range());
    let reserved = board.reserved.iter().map(|reserved| reserved.range);
    let placed = width_probe::place(board.granule, ram_start, devices.chain(reserved));
    match placed {
        Some(range) => defmt::info!(
            "width probe at IPA {=u64:#x}..{=u64:#x} in every partition",
            range.start,
            range.end
        ),
        None => defmt::warn!("width probe: no free page below RAM on this board; left out"),
    }
    placed
}

/// The guest bundle the firmware passed as the initrd, if it did; a bundle that
/// overlaps the hypervisor's memory, is malformed or names a partition the board
/// does not have ends the boot with [`Verdict::BadGuest`], after a log line.
pub fn bundle(board: &Board, tree: &FirmwareTree<'_>) -> Result<Option<Bundle<'static>>, Verdict> {
    let Ok(Some(range)) = tree.initrd() else {
        return Ok(None);
    };
    if range.overlaps(&board.hypervisor.memory) {
        defmt::error!(
            "the initrd {=u64:#x}..{=u64:#x} overlaps the hypervisor's memory",
            range.start,
            range.end
        );
        return Err(Verdict::BadGuest);
    }
    match Bundle::parse(arch::memory::initrd_bytes(range)) {
        Ok(bundle) => {
            for name in bundle.partitions() {
                if !board.partitions.iter().any(|p| p.name == name) {
                    defmt::error!(
                        "guest bundle: partition {=str} is not in board {=str}'s table",
                        name,
                        board.name
                    );
                    return Err(Verdict::BadGuest);
                }
            }
            Ok(Some(bundle))
        }
        Err(error) => {
            defmt::error!(
                "guest bundle at {=u64:#x} ({=u64} bytes): {}",
                range.start,
                range.size(),
                defmt::Display2Format(&error)
            );
            Err(Verdict::BadGuest)
        }
    }
}

/// The partition's virtual GIC, where the machine has a GIC the hypervisor set up:
/// the lines of its granted devices passed through, the virtual PL011's if it has one (the
/// console's line, never enabled physically) virtual. A GICv2 guest's CPU
/// interface is the GIC's virtual CPU interface, mapped at the guest's GICC.
fn virtual_gic(
    board: &Board,
    stage2: &mut PartitionStage2,
    cpus: &'static [usize],
    gic: Option<GuestGic>,
    virtual_uart: bool,
) -> Result<Option<Box<PartitionGic>>, Verdict> {
    if !arch::gic::present() {
        return Ok(None);
    }
    let (version, distributor, redistributor_base) = match gic {
        Some(GuestGic::V3 {
            distributor,
            redistributors,
        }) if !arch::gic::is_v2() => (Version::V3, distributor, redistributors.start),
        Some(GuestGic::V2 {
            distributor,
            cpu_interface,
        }) if arch::gic::is_v2() => {
            let Some(gicv) = board
                .devices
                .iter()
                .find(|region| region.kind == DeviceKind::GicVirtualCpu)
            else {
                defmt::error!(
                    "partition {=str}: the board table has no GIC virtual CPU interface (GICV)",
                    stage2.name
                );
                return Err(Verdict::BoardMismatch);
            };
            if let Err(error) =
                stage2.map_virtual_cpu_interface(cpu_interface, gicv, board.granule.size())
            {
                defmt::error!(
                    "stage 2 of {=str}: GICV {=u64:#x} at GICC {=u64:#x}: {}",
                    stage2.name,
                    gicv.base,
                    cpu_interface.start,
                    defmt::Debug2Format(&error)
                );
                return Err(Verdict::TestFailure);
            }
            defmt::info!(
                "stage 2 of {=str}: GICV {=u64:#x} mapped at the guest's GICC {=u64:#x}",
                stage2.name,
                gicv.base,
                cpu_interface.start
            );
            (Version::V2, distributor, 0)
        }
        _ => return Ok(None),
    };
    let mut lines: Vec<Line> = Vec::new();
    for (region, _) in &stage2.windows {
        for &intid in region.interrupts.as_slice() {
            if intid.0 >= transom_vmm_core::vgic::FIRST_SPI
                && !lines.iter().any(|line| line.intid == intid.0)
            {
                lines.push(Line::new(intid, LineKind::Passthrough));
            }
        }
    }
    let console_lines = if virtual_uart {
        board.console_region().interrupts.as_slice()
    } else {
        &[]
    };
    for &intid in console_lines {
        if !lines.iter().any(|line| line.intid == intid.0) {
            lines.push(Line::new(intid, LineKind::Virtual));
        }
    }
    Ok(Some(Box::new(PartitionGic::new(
        version,
        distributor,
        redistributor_base,
        cpus,
        lines,
    ))))
}

/// The GIC as a guest sees it: v3 where the machine has redistributors, else v2
/// with the virtual CPU interface where the guest expects its GICC.
fn guest_gic(board: &Board, tree: &FirmwareTree<'_>) -> Option<GuestGic> {
    let frame = |kind: DeviceKind| crate::board_table::present_frame(board, tree, kind);
    let distributor = frame(DeviceKind::GicDistributor)?;
    if let Some(redistributors) = frame(DeviceKind::GicRedistributor) {
        return Some(GuestGic::V3 {
            distributor,
            redistributors,
        });
    }
    frame(DeviceKind::GicCpuInterface).map(|cpu_interface| GuestGic::V2 {
        distributor,
        cpu_interface,
    })
}

/// Checks and lays out the guest of `partition` (at `index` in [`load`]'s list),
/// and writes its device tree and boot-info page; nothing is copied into its RAM
/// yet.
fn prepare_one(
    board: &Board,
    index: usize,
    partition: &Partition,
    files: &GuestFiles<'static>,
    gic: Option<GuestGic>,
) -> Result<Prepared, Verdict> {
    let name = partition.stage2.name;
    let refuse = |what: &str, error: &dyn core::fmt::Display| refused(name, what, error);
    let ram = *partition
        .stage2
        .ram
        .first()
        .ok_or_else(|| refuse("guest", &"the partition has no RAM"))?;
    let header = image::parse(files.image).map_err(|error| refuse("guest image", &error))?;
    let file_len = files.image.len() as u64;
    let plan =
        image::plan(&header, file_len, ram).map_err(|error| refuse("guest image", &error))?;
    let tree_base = ram.end - TREE_SLOT;
    let mut next_free = plan.end;

    let initrd = match files.initrd {
        Some(bytes) => {
            let start = board.granule.align_up(next_free).unwrap_or(u64::MAX);
            let range = PhysRange {
                start,
                end: start.saturating_add(bytes.len() as u64),
            };
            if range.end > tree_base {
                return Err(refuse(
                    "guest initrd",
                    &format_args!(
                        "{} bytes do not fit between the image's end {:#x} and the device tree at {:#x}",
                        bytes.len(),
                        plan.end,
                        tree_base
                    ),
                ));
            }
            next_free = range.end;
            Some((range, bytes))
        }
        None => None,
    };
    if plan.end > tree_base || next_free > tree_base {
        return Err(refuse(
            "guest image",
            &format_args!(
                "it ends at {:#x}, inside the device tree's slot {:#x}..{:#x}",
                plan.end, tree_base, ram.end
            ),
        ));
    }

    let Some(mut gic) = gic else {
        return Err(refuse(
            "device tree",
            &"the machine's GIC is not in the board table",
        ));
    };
    // One redistributor per vCPU: the guest's region ends after its own.
    if let (GuestGic::V3 { redistributors, .. }, Some(vgic)) = (&mut gic, &partition.gic) {
        *redistributors = vgic.redistributors;
    }
    let mut devices = Vec::new();
    for &(region, window) in &partition.stage2.windows {
        if region.compatible.is_empty() && !has_default_compatible(region.kind) {
            defmt::warn!(
                "partition {=str}: device {=str} ({}) has no compatible string; left out of the guest's device tree",
                name,
                region.name,
                region.kind
            );
            continue;
        }
        devices.push(GuestDevice {
            name: region.name,
            kind: region.kind,
            compatible: region.compatible,
            reg: PhysRange::new(window.device_ipa, window.size),
            interrupts: region.interrupts.as_slice(),
            clock_hz: None,
        });
    }
    if let Some(range) = partition.vuart_range {
        devices.push(GuestDevice {
            name: VIRTUAL_UART,
            kind: DeviceKind::Pl011,
            compatible: &[],
            reg: range,
            interrupts: if partition.gic.is_some() {
                board.console_region().interrupts.as_slice()
            } else {
                &[]
            },
            clock_hz: None,
        });
    }
    if let Some(range) = partition.width_probe {
        devices.push(GuestDevice {
            name: WIDTH_PROBE,
            kind: DeviceKind::Other,
            compatible: &[width_probe::COMPATIBLE],
            reg: range,
            interrupts: &[],
            clock_hz: None,
        });
    }
    // The console is the partition's own PL011 if it was given one; the virtual one
    // (always there, printed by the hypervisor) otherwise.
    let own_uart = devices
        .iter()
        .find(|device| device.kind == DeviceKind::Pl011 && device.name != VIRTUAL_UART)
        .map(|device| device.name);
    let cpus: Vec<u64> = (0..partition.cpus.len() as u64)
        .map(|vcpu| (1 << 31) | vcpu)
        .collect();
    // A Transom-native guest's boot-info page: the last page of its RAM, inside the
    // device tree's slot, and reserved in the tree so the guest keeps it.
    let boot_info_page = files.boot_info.then(|| {
        PhysRange::new(
            ram.end - boot_info::PAGE_SIZE as u64,
            boot_info::PAGE_SIZE as u64,
        )
    });
    let reserved: Vec<PhysRange> = boot_info_page.into_iter().collect();
    let description = GuestTree {
        partition: name,
        memory: partition.stage2.ram,
        reserved: &reserved,
        cpus: &cpus,
        gic,
        timer: TimerInterrupts::BSA,
        bootargs: files.command_line.unwrap_or(""),
        stdout: own_uart.or(partition.vuart_range.map(|_| VIRTUAL_UART)),
        initrd: initrd.map(|(range, _)| range),
        devices: &devices,
    };
    let blob = tree::build(&description).map_err(|error| refuse("device tree", &error))?;
    let tree_room = boot_info_page.map_or(ram.end, |page| page.start) - tree_base;
    if blob.len() as u64 > tree_room {
        return Err(refuse(
            "device tree",
            &format_args!("{} bytes, over its slot's {tree_room}", blob.len()),
        ));
    }
    let boot_info = match boot_info_page {
        Some(page) => Some((page.start, boot_info(partition, page, tree_base)?)),
        None => None,
    };
    defmt::info!(
        "partition {=str}: image {=u64:#x}..{=u64:#x} (text_offset {=u64:#x}), device tree {=u64:#x} ({=usize} bytes, {=usize} devices)",
        name,
        plan.load_address,
        plan.end,
        header.text_offset,
        tree_base,
        blob.len(),
        devices.len()
    );
    if let Some((range, _)) = initrd {
        defmt::info!(
            "partition {=str}: initrd {=u64:#x}..{=u64:#x}",
            name,
            range.start,
            range.end
        );
    }
    Ok(Prepared {
        start: Start {
            partition: index,
            entry: plan.load_address,
            x0: tree_base,
            x1: boot_info.as_ref().map_or(0, |&(page, _)| page),
        },
        ram,
        image: (plan.load_address, files.image),
        initrd: initrd.map(|(range, bytes)| (range.start, bytes)),
        tree: (tree_base, blob),
        boot_info,
    })
}

/// A guest checked and laid out by [`load`], its device tree and boot-info page
/// written: what [`Prepared::place`] copies into its partition's RAM, and how its
/// vCPU 0 starts. The image and initrd are the bundle's bytes, not copies.
pub struct Prepared {
    /// How the partition's vCPU 0 starts.
    pub start: Start,
    /// The RAM bank everything goes into.
    ram: PhysRange,
    image: (u64, &'static [u8]),
    initrd: Option<(u64, &'static [u8])>,
    tree: (u64, Blob),
    boot_info: Option<(u64, Vec<u8>)>,
}

impl Prepared {
    /// Copies the guest's image, initrd, device tree and boot-info page to the
    /// addresses [`load`] chose, which lie apart inside the partition's RAM.
    pub fn place(&self) {
        let (image_at, image) = self.image;
        arch::guest::copy_to_guest_ram(self.ram, image_at, image);
        if let Some((initrd_at, initrd)) = self.initrd {
            arch::guest::copy_to_guest_ram(self.ram, initrd_at, initrd);
        }
        let (tree_at, tree) = &self.tree;
        arch::guest::copy_to_guest_ram(self.ram, *tree_at, tree);
        if let Some((page, bytes)) = &self.boot_info {
            arch::guest::copy_to_guest_ram(self.ram, *page, bytes);
        }
    }
}

/// `partition`'s boot-info page, for `page` (see
/// `transom_vmm_core::guest::boot_info`).
fn boot_info(partition: &Partition, page: PhysRange, tree: u64) -> Result<Vec<u8>, Verdict> {
    let name = partition.stage2.name;
    let windows: Vec<BootWindow<'_>> = partition
        .stage2
        .windows
        .iter()
        .map(|&(region, window)| BootWindow {
            device: region.name,
            span: window.span,
            device_ipa: window.device_ipa,
            size: window.size,
            mode: window.mode,
            access: region.access,
            interrupts: region.interrupts.as_slice(),
        })
        .collect();
    let bytes = boot_info::build(&windows, partition.cpus.len() as u32, tree)
        .map_err(|error| refused(name, "boot-info page", &error))?;
    defmt::info!(
        "partition {=str}: boot-info page {=u64:#x} ({=usize} windows) in x1",
        name,
        page.start,
        windows.len()
    );
    Ok(bytes)
}

/// Logs why partition `name`'s guest is refused.
fn refused(name: &str, what: &str, error: &dyn core::fmt::Display) -> Verdict {
    defmt::error!(
        "partition {=str}: {=str}: {}",
        name,
        what,
        defmt::Display2Format(error)
    );
    Verdict::BadGuest
}

/// Whether the partition is granted a UART of its own (then it gets no virtual
/// one): its stage 2 has a window on one.
fn has_own_uart(stage2: &PartitionStage2) -> bool {
    stage2.windows.iter().any(|(region, _)| {
        matches!(
            region.kind,
            DeviceKind::Pl011 | DeviceKind::MiniUart | DeviceKind::Uart16550
        )
    })
}

/// Kinds the guest tree writer describes without more than the table holds (a
/// mini UART or 16550 also needs its clock, which the table does not give yet).
fn has_default_compatible(kind: DeviceKind) -> bool {
    matches!(kind, DeviceKind::Pl011 | DeviceKind::VirtioMmio)
}
