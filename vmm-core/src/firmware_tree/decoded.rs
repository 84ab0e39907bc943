//! Which CPU physical addresses the tree's nodes decode, for
//! [`FirmwareTree::decodes`](super::FirmwareTree::decodes): the `reg` entries of the
//! root's children and of the children of every bus with `ranges` (translated up
//! through each enclosing bus), and the windows of the buses that are devices.

use alloc::vec::Vec;
use core::ops::DerefMut;

use transom_boards::PhysRange;

use super::TreeError;
use super::dtb::MAX_DEPTH;
use super::properties::{Cells, Name, Properties, WindowCells, cells, reg_entries, windows};

/// The most decoded ranges [`FirmwareTree::parse`](super::FirmwareTree::parse) keeps
/// without a heap, once rows of adjacent devices are merged (QEMU `virt`'s tree
/// needs 11). A tree with more is walked again by the first
/// [`FirmwareTree::decodes`](super::FirmwareTree::decodes), onto the heap.
pub(super) const MAX_DECODED: usize = 32;

/// The decoded ranges [`FirmwareTree::parse`](super::FirmwareTree::parse) keeps.
pub(super) type FixedRanges = heapless::Vec<PhysRange, MAX_DECODED>;

/// A list the walk adds decoded ranges to.
pub(super) trait RangeList: DerefMut<Target = [PhysRange]> {
    /// Appends `range`; `false` if the list is full.
    fn push_range(&mut self, range: PhysRange) -> bool;
    /// Keeps the first `len` ranges.
    fn cut(&mut self, len: usize);
    /// Sorts the ranges by their start.
    fn sort_by_start(&mut self);
}

impl RangeList for FixedRanges {
    fn push_range(&mut self, range: PhysRange) -> bool {
        self.push(range).is_ok()
    }

    fn cut(&mut self, len: usize) {
        self.truncate(len);
    }

    /// By insertion: the list is short. Trees list devices by address, but often
    /// from the top down (QEMU `virt` lists the one it created last first): a list
    /// that starts above where it ends is turned around first, so that few ranges
    /// move.
    fn sort_by_start(&mut self) {
        if let (Some(first), Some(last)) = (self.first(), self.last())
            && first.start > last.start
        {
            self.reverse();
        }
        for index in 1..self.len() {
            let range = self[index];
            let mut slot = index;
            while slot > 0 {
                let before = self[slot - 1];
                if before.start <= range.start {
                    break;
                }
                self[slot] = before;
                slot -= 1;
            }
            self[slot] = range;
        }
    }
}

impl RangeList for Vec<PhysRange> {
    fn push_range(&mut self, range: PhysRange) -> bool {
        self.push(range);
        true
    }

    fn cut(&mut self, len: usize) {
        self.truncate(len);
    }

    fn sort_by_start(&mut self) {
        self.sort_unstable_by_key(|range| range.start);
    }
}

/// The index of the range of `decoded`, sorted and disjoint, that holds `address`,
/// if one does: a binary search for the last range that starts at or below it.
#[inline(always)]
pub(super) fn find(decoded: &[PhysRange], address: u64) -> Option<usize> {
    // The candidate lies in `rest`, which starts `skipped` ranges into `decoded`.
    let mut rest = decoded;
    let mut skipped = 0;
    while rest.len() > 1 {
        let half = rest.len() / 2;
        let (low, high) = rest.split_at(half);
        if high.first().is_some_and(|range| range.start <= address) {
            skipped += half;
            rest = high;
        } else {
            rest = low;
        }
    }
    let holds = rest.first().is_some_and(|range| range.contains(address));
    holds.then_some(skipped)
}

/// How the walk ended.
#[derive(Clone, Copy)]
pub(super) enum Collected {
    /// The list holds every decoded range, sorted, touching ranges merged.
    All,
    /// The list filled up.
    TooMany,
}

/// Why the walk stopped adding ranges.
#[derive(Clone, Copy)]
enum Stop {
    /// The list is full.
    Full,
    /// A `reg`, `ranges` or cell count the walk reads has a value it cannot use.
    Malformed,
}

/// How a bus maps its children's addresses to its own parent's (2.3.8).
#[derive(Clone, Copy)]
struct Bus<'a> {
    /// Its `ranges` windows, coded with `cells`; empty when it maps addresses to
    /// themselves (an empty `ranges`, or the root).
    windows: &'a [u8],
    cells: WindowCells,
    /// Whether its children's addresses are the CPU's: it maps addresses to
    /// themselves, and so does every bus above it.
    direct: bool,
}

impl Bus<'_> {
    /// The root's: the CPU's addresses.
    const ROOT: Bus<'static> = Bus {
        windows: &[],
        cells: WindowCells {
            child: 0,
            parent: 0,
            size: 0,
        },
        direct: true,
    };
}

/// The half of the tree's walk that collects what the nodes decode.
pub(super) struct DecodeWalk<'a, 'l, L> {
    /// How each open node, root first, translates its children's addresses, set once
    /// its properties are over if it has children: `None` when it has no `ranges`, or
    /// its own addresses mean nothing to the CPU. A node is in view (its addresses
    /// mean something) when it is the root or its parent translates; under a bus
    /// without `ranges` (I2C, SPI) nodes are skipped.
    buses: [Option<Bus<'a>>; MAX_DEPTH],
    /// What the nodes decode, in tree order.
    decoded: &'l mut L,
    /// Set once the walk stopped adding ranges.
    stopped: Option<Stop>,
}

impl<'a, 'l, L: RangeList> DecodeWalk<'a, 'l, L> {
    /// A walk that adds to `decoded`.
    pub(super) fn new(decoded: &'l mut L) -> DecodeWalk<'a, 'l, L> {
        DecodeWalk {
            buses: [None; MAX_DEPTH],
            decoded,
            stopped: None,
        }
    }

    /// The properties of the node at `depth` are over; `parent_cells` code its
    /// `reg` (`None`: they are malformed). Nothing is read once the walk stopped
    /// adding ranges.
    #[inline(always)]
    pub(super) fn read(
        &mut self,
        depth: usize,
        has_children: bool,
        properties: &Properties<'a>,
        parent_cells: Option<Cells>,
    ) {
        if self.stopped.is_some() {
            return;
        }
        let mut bus = None;
        if let Err(stop) = self.add_decoded(depth, has_children, properties, parent_cells, &mut bus)
        {
            self.stopped = Some(stop);
        } else if has_children && let Some(slot) = self.buses.get_mut(depth) {
            // Only the node's children read how it translates.
            *slot = bus;
        }
    }

    /// Whether the node at `depth`, whose properties are over, has children whose
    /// addresses are the CPU's (see [`DecodeWalk::add_direct`]).
    #[inline(always)]
    pub(super) fn is_direct(&self, depth: usize) -> bool {
        self.buses
            .get(depth)
            .is_some_and(|bus| bus.is_some_and(|bus| bus.direct))
    }

    /// Whether the walk stopped adding ranges.
    #[inline(always)]
    pub(super) fn stopped(&self) -> bool {
        self.stopped.is_some()
    }

    /// What [`DecodeWalk::read`] does for a node without children or `ranges` whose
    /// parent's children have the CPU's addresses ([`DecodeWalk::is_direct`]):
    /// adds the ranges of its `reg` (2.3.6), coded with `parent_cells`, as they are.
    #[inline(always)]
    pub(super) fn add_direct(&mut self, reg: Option<&[u8]>, parent_cells: Cells) {
        let Some(reg) = reg else {
            return;
        };
        if let Err(stop) = add_reg_direct(self.decoded, reg, parent_cells) {
            self.stopped = Some(stop);
        }
    }

    /// Sorts what the nodes decode and merges touching ranges, unless the list
    /// filled up.
    pub(super) fn finish(self) -> Result<Collected, TreeError> {
        match self.stopped {
            Some(Stop::Full) => return Ok(Collected::TooMany),
            Some(Stop::Malformed) => return Err(TreeError::Malformed),
            None => {}
        }
        self.decoded.sort_by_start();
        let merged = merge_sorted(self.decoded);
        self.decoded.cut(merged);
        Ok(Collected::All)
    }

    /// Adds what the `reg` of the node at `depth` decodes and, for a bus, sets `bus`
    /// to how its children's addresses translate (left `None` otherwise). A bus's
    /// windows count as decoded when the bus is itself a device: it has a `reg` (a
    /// PCIe host bridge, whose `ranges` are its MMIO windows) or no children (QEMU's
    /// platform bus, filled at run time). A plain translating bus (the Pi's `/soc`)
    /// is not, or every address in it would count.
    #[inline(always)]
    fn add_decoded(
        &mut self,
        depth: usize,
        has_children: bool,
        properties: &Properties<'a>,
        parent_cells: Option<Cells>,
        bus: &mut Option<Bus<'a>>,
    ) -> Result<(), Stop> {
        let outer = self.buses.get(..depth).ok_or(Stop::Malformed)?;
        // The root's addresses are the CPU's; its own `reg` and `ranges` say nothing.
        let Some((&parent, _)) = outer.split_last() else {
            *bus = Some(Bus::ROOT);
            return Ok(());
        };
        let Some(parent) = parent else {
            return Ok(());
        };
        let reg = properties.get(Name::Reg);
        let ranges = properties.get(Name::Ranges);
        if reg.is_none() && ranges.is_none() {
            return Ok(());
        }
        let parent_cells = parent_cells.ok_or(Stop::Malformed)?;
        // The buses between the root and the node, outermost first.
        let enclosing = outer.get(1..).unwrap_or_default();
        if let Some(reg) = reg {
            if parent.direct {
                add_reg_direct(self.decoded, reg, parent_cells)?;
            } else {
                add_translated(self.decoded, enclosing, reg, parent_cells)?;
            }
        }
        let Some(ranges) = ranges else {
            return Ok(());
        };
        let own_cells = Cells::of(properties);
        let is_device = reg.is_some() || !has_children;
        add_bus(
            self.decoded,
            enclosing,
            (parent, bus),
            (ranges, own_cells, parent_cells),
            is_device,
        )
    }
}

/// Adds the ranges of the `reg` value `reg` (2.3.6) coded with `parent_cells`, of a
/// node whose addresses are the CPU's, to `decoded`; entries that do not fit 64 bits
/// are left out.
#[inline(always)]
fn add_reg_direct(
    decoded: &mut impl RangeList,
    reg: &[u8],
    parent_cells: Cells,
) -> Result<(), Stop> {
    // The common shapes, one entry of two or one address cells and of two or one
    // size cells, are read without the loop.
    let one_entry = match (parent_cells.address, parent_cells.size, cells(reg)) {
        (2, 2, Some(&[high, low, size_high, size_low])) => {
            Some((join(high, low), join(size_high, size_low)))
        }
        (2, 1, Some(&[high, low, size])) => Some((join(high, low), join(0, size))),
        (1, 1, Some(&[address, size])) => Some((join(0, address), join(0, size))),
        _ => None,
    };
    if let Some((address, size)) = one_entry {
        return add_range(decoded, address, size);
    }
    let entries = reg_entries(reg, parent_cells).ok_or(Stop::Malformed)?;
    for (address, size) in entries.flatten() {
        add_range(decoded, address, size)?;
    }
    Ok(())
}

/// The 64-bit number of two big-endian cells (2.2.4), as the block holds them.
#[inline(always)]
fn join(high: u32, low: u32) -> u64 {
    u64::from(u32::from_be(high)) << 32 | u64::from(u32::from_be(low))
}

/// Adds the ranges of the `reg` value `reg` (2.3.6) coded with `parent_cells`,
/// translated through the `enclosing` buses, to `decoded`; entries that do not fit
/// 64 bits are left out.
#[inline(never)]
fn add_translated(
    decoded: &mut impl RangeList,
    enclosing: &[Option<Bus<'_>>],
    reg: &[u8],
    parent_cells: Cells,
) -> Result<(), Stop> {
    let entries = reg_entries(reg, parent_cells).ok_or(Stop::Malformed)?;
    for (address, size) in entries.flatten() {
        if let Some(start) = translate(enclosing, address) {
            add_range(decoded, start, size)?;
        }
    }
    Ok(())
}

/// Sets `bus` to how a bus node translates its children's addresses, from its
/// `ranges` value (2.3.8), its own cells (`None`: malformed) and its parent's;
/// `parent` is how its parent translates. The windows of a bus that `is_device` are
/// added to `decoded`, translated through the `enclosing` buses. (`bus` is set
/// through a reference: returned in a `Result`, it was copied byte by byte.)
#[inline(never)]
fn add_bus<'a>(
    decoded: &mut impl RangeList,
    enclosing: &[Option<Bus<'a>>],
    (parent, bus): (Bus<'a>, &mut Option<Bus<'a>>),
    (ranges, own_cells, parent_cells): (&'a [u8], Option<Cells>, Cells),
    is_device: bool,
) -> Result<(), Stop> {
    if ranges.is_empty() {
        *bus = Some(Bus {
            direct: parent.direct,
            ..Bus::ROOT
        });
        return Ok(());
    }
    let own_cells = own_cells.ok_or(Stop::Malformed)?;
    let cells = WindowCells {
        child: own_cells.address,
        parent: parent_cells.address,
        size: own_cells.size,
    };
    *bus = Some(Bus {
        windows: ranges,
        cells,
        direct: false,
    });
    if is_device {
        for window in windows(ranges, cells) {
            if let Some(start) = translate(enclosing, window.parent) {
                add_range(decoded, start, window.len)?;
            }
        }
    }
    Ok(())
}

/// Merges the touching or overlapping ranges of `ranges`, sorted by start, into the
/// first ones; returns how many that leaves.
fn merge_sorted(ranges: &mut [PhysRange]) -> usize {
    let mut merged: usize = 0;
    for index in 0..ranges.len() {
        let range = ranges[index];
        if let Some(last) = merged.checked_sub(1).and_then(|last| ranges.get_mut(last))
            && range.start <= last.end
        {
            last.end = last.end.max(range.end);
            continue;
        }
        ranges[merged] = range;
        merged += 1;
    }
    merged
}

/// Translates `address` on the innermost of the `enclosing` buses (outermost first)
/// up to a CPU physical address; `None` if some bus has no window holding it.
fn translate(enclosing: &[Option<Bus<'_>>], address: u64) -> Option<u64> {
    let mut address = address;
    for bus in enclosing.iter().rev() {
        let bus = (*bus)?;
        if !bus.windows.is_empty() {
            address = through_windows(bus.windows, bus.cells, address)?;
        }
    }
    Some(address)
}

/// Translates `address` on a bus with the windows `ranges`, coded with `cells`, to
/// its parent's address; `None` if no window holds it.
fn through_windows(ranges: &[u8], cells: WindowCells, address: u64) -> Option<u64> {
    let on_bus = u128::from(address);
    let (window, offset) = windows(ranges, cells).find_map(|window| {
        let offset = on_bus.checked_sub(window.child)?;
        (offset < u128::from(window.len)).then_some((window, offset))
    })?;
    window.parent.checked_add(u64::try_from(offset).ok()?)
}

/// Adds the range of `len` bytes at `start`, cut at the top of the address space, to
/// `decoded`; a range that starts where the last one ends (a row of devices, such as
/// QEMU's virtio transports) extends it instead.
#[inline(always)]
fn add_range(decoded: &mut impl RangeList, start: u64, len: u64) -> Result<(), Stop> {
    let end = start.saturating_add(len);
    if let Some(last) = decoded.last_mut()
        && last.end == start
    {
        last.end = end;
        return Ok(());
    }
    if decoded.push_range(PhysRange { start, end }) {
        Ok(())
    } else {
        Err(Stop::Full)
    }
}
