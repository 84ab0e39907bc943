//! Loading each partition's guest from the bundle the firmware passed as the
//! initrd: the `Image` at its `text_offset`, its initrd after it, and a device tree
//! generated for the partition at the top of its RAM, as Linux's booting document
//! (`Documentation/arch/arm64/booting.rst`) asks: x0 = the tree's address, the
//! tree 8-byte aligned and at most 2 MiB.

use alloc::vec::Vec;

use transom_boards::{Board, DeviceKind, PhysRange};
use transom_vmm_core::firmware_tree::FirmwareTree;
use transom_vmm_core::guest::bundle::{Bundle, GuestFiles};
use transom_vmm_core::guest::image;
use transom_vmm_core::guest::tree::{self, GuestDevice, GuestGic, GuestTree, TimerInterrupts};
use transom_vmm_core::verdict::Verdict;
use transom_vmm_core::width_probe;

use crate::arch;
use crate::stage2::PartitionStage2;
use crate::vcpu::{Partition, Start};
use crate::vgic::PartitionGic;
use transom_vmm_core::vgic::{Line, LineKind};

/// The device tree's slot: the last 2 MiB of the partition's RAM (booting.rst: at
/// most 2 MiB, 8-byte aligned).
const TREE_SLOT: u64 = 2 << 20;

/// The name of the virtual PL011 in a guest's tree.
const VIRTUAL_UART: &str = "vuart";

/// The name of the width probe in a guest's tree (its node: `width-probe@<ipa>`).
const WIDTH_PROBE: &str = "width-probe";

/// The partitions, each with its guest loaded if the bundle has one, and how to
/// start them. Without a bundle no partition is started. A bad bundle, image or
/// tree ends the boot with [`Verdict::BadGuest`], after a log line naming the
/// partition and what is wrong. With `with_width_probe` every partition gets the
/// width probe.
pub fn load(
    board: &Board,
    tree: &FirmwareTree<'_>,
    spaces: Vec<PartitionStage2>,
    with_width_probe: bool,
) -> Result<(Vec<Partition>, Vec<Start>), Verdict> {
    let bundle = bundle(board, tree)?;
    if bundle.is_none() {
        defmt::info!("no guest bundle: partitions are not started");
    }
    let probe = if with_width_probe {
        width_probe_range(board)
    } else {
        None
    };
    let gic = guest_gic(board, tree);
    let console = board.console_region().range();
    let mut partitions = Vec::with_capacity(spaces.len());
    let mut starts = Vec::new();
    for (index, (stage2, table)) in spaces.into_iter().zip(board.partitions).enumerate() {
        let files = bundle.as_ref().and_then(|bundle| bundle.guest(stage2.name));
        let vgic = virtual_gic(board, &stage2, table.cpus, gic);
        let mut partition = Partition::new(stage2, table.cpus, Some(console), vgic);
        if let Some(range) = probe {
            partition = partition.with_width_probe(range);
        }
        match files {
            Some(files) => {
                let (entry, x0) = load_one(board, &partition, &files, gic)?;
                starts.push(Start {
                    partition: index,
                    entry,
                    x0,
                });
            }
            None if bundle.is_some() => defmt::info!(
                "partition {=str}: no guest in the bundle; not started",
                table.name
            ),
            None => {}
        }
        partitions.push(partition);
    }
    Ok((partitions, starts))
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

fn bundle(board: &Board, tree: &FirmwareTree<'_>) -> Result<Option<Bundle<'static>>, Verdict> {
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

/// The partition's virtual GIC, where the machine has a GICv3 the hypervisor set
/// up: the lines of its granted devices passed through, the virtual PL011's (the
/// console's line, never enabled physically) virtual.
fn virtual_gic(
    board: &Board,
    stage2: &PartitionStage2,
    cpus: &'static [usize],
    gic: Option<GuestGic>,
) -> Option<PartitionGic> {
    let Some(GuestGic::V3 {
        distributor,
        redistributors,
    }) = gic
    else {
        return None;
    };
    if !arch::gic::present() {
        return None;
    }
    let mut lines: Vec<Line> = Vec::new();
    for (device, _) in &stage2.windows {
        let Some(region) = board.device(device) else {
            continue;
        };
        for &intid in region.interrupts.as_slice() {
            if intid.0 >= transom_vmm_core::vgic::FIRST_SPI
                && !lines.iter().any(|line| line.intid == intid.0)
            {
                lines.push(Line::new(intid, LineKind::Passthrough));
            }
        }
    }
    for &intid in board.console_region().interrupts.as_slice() {
        if !lines.iter().any(|line| line.intid == intid.0) {
            lines.push(Line::new(intid, LineKind::Virtual));
        }
    }
    Some(PartitionGic::new(
        distributor,
        redistributors.start,
        cpus,
        lines,
    ))
}

/// The GIC as a guest sees it: v3 where the machine has redistributors, else v2
/// with the virtual CPU interface where the guest expects its GICC.
fn guest_gic(board: &Board, tree: &FirmwareTree<'_>) -> Option<GuestGic> {
    let frame = |kind: DeviceKind| {
        board
            .devices
            .iter()
            .find(|region| region.kind == kind && tree.decodes(region.base).unwrap_or(false))
            .map(|region| region.range())
    };
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

/// Loads one partition's guest; returns its entry point and x0.
fn load_one(
    board: &Board,
    partition: &Partition,
    files: &GuestFiles<'_>,
    gic: Option<GuestGic>,
) -> Result<(u64, u64), Verdict> {
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
            arch::guest::copy_to_guest_ram(ram, range.start, bytes);
            next_free = range.end;
            Some(range)
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
    arch::guest::copy_to_guest_ram(ram, plan.load_address, files.image);

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
    for (device, window) in &partition.stage2.windows {
        let Some(region) = board.device(device) else {
            continue;
        };
        if !has_default_compatible(region.kind) {
            defmt::warn!(
                "partition {=str}: device {=str} ({=str}) has no compatible string; left out of the guest's device tree",
                name,
                region.name,
                region.kind.label()
            );
            continue;
        }
        devices.push(GuestDevice {
            name: region.name,
            kind: region.kind,
            compatible: &[],
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
    let description = GuestTree {
        partition: name,
        memory: partition.stage2.ram,
        reserved: &[],
        cpus: &cpus,
        gic,
        timer: TimerInterrupts::BSA,
        bootargs: files.command_line.unwrap_or(""),
        stdout: own_uart.or(partition.vuart_range.map(|_| VIRTUAL_UART)),
        initrd,
        devices: &devices,
    };
    let blob = tree::build(&description).map_err(|error| refuse("device tree", &error))?;
    if blob.len() as u64 > TREE_SLOT {
        return Err(refuse(
            "device tree",
            &format_args!("{} bytes, over 2 MiB", blob.len()),
        ));
    }
    arch::guest::copy_to_guest_ram(ram, tree_base, &blob);
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
    if let Some(range) = initrd {
        defmt::info!(
            "partition {=str}: initrd {=u64:#x}..{=u64:#x}",
            name,
            range.start,
            range.end
        );
    }
    Ok((plan.load_address, tree_base))
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

/// Kinds the guest tree writer describes without more than the table holds (a
/// mini UART or 16550 also needs its clock, which the table does not give yet).
fn has_default_compatible(kind: DeviceKind) -> bool {
    matches!(kind, DeviceKind::Pl011 | DeviceKind::VirtioMmio)
}
