//! Which CPU physical addresses the tree's nodes decode, for
//! [`FirmwareTree::decodes`](super::FirmwareTree::decodes): the `reg` entries of the
//! root's children and of the children of every bus with `ranges` (translated up
//! through each enclosing bus), and the windows of the buses that are devices.

use alloc::vec::Vec;
use core::ops::DerefMut;

use transom_boards::PhysRange;

use super::TreeError;
use super::dtb::MAX_DEPTH;
use super::properties::{Cells, Name, Properties, WindowCells, reg_entries, windows};

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

    /// By insertion: the list is short, and a tree lists most devices in order.
    fn sort_by_start(&mut self) {
        for index in 1..self.len() {
            let range = self[index];
            let mut slot = index;
            while let Some(before) = slot.checked_sub(1)
                && self[before].start > range.start
            {
                self[slot] = self[before];
                slot = before;
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

/// Whether some range of `decoded`, sorted and disjoint, holds `address`: a binary
/// search for the last range that starts at or below it, whose steps pick the half
/// without a branch.
#[inline(always)]
pub(super) fn holds(decoded: &[PhysRange], address: u64) -> bool {
    let mut size = decoded.len();
    if size == 0 {
        return false;
    }
    // `decoded[base]` is the candidate; the answer lies in `base..base + size`.
    let mut base = 0;
    while size > 1 {
        let half = size / 2;
        let middle = base + half;
        if decoded[middle].start <= address {
            base = middle;
        }
        size -= half;
    }
    decoded[base].contains(address)
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
    /// A property the walk reads has a value it cannot use.
    Error(TreeError),
}

/// How a bus maps its children's addresses to its own parent's (2.3.8).
#[derive(Clone, Copy)]
enum Bus<'a> {
    /// An empty `ranges`: the same addresses.
    Identity,
    /// A `ranges` list, and how it is coded.
    Windows(&'a [u8], WindowCells),
}

/// The half of the tree's walk that collects what the nodes decode.
pub(super) struct DecodeWalk<'a, 'l, L> {
    /// How each open node, root first, translates its children's addresses: `None`
    /// when it has no `ranges`, or its own addresses mean nothing to the CPU. A node
    /// is in view (its addresses mean something) when it is the root or its parent
    /// translates; under a bus without `ranges` (I2C, SPI) nodes are skipped.
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
    /// `reg` (`None`: they are malformed). Nothing is read once the walk stopped adding ranges.
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
        if let Err(stop) = self.add_decoded(depth, has_children, properties, parent_cells) {
            self.stopped = Some(stop);
        }
    }

    /// Sorts what the nodes decode and merges touching ranges, unless the list
    /// filled up.
    pub(super) fn finish(self) -> Result<Collected, TreeError> {
        match self.stopped {
            Some(Stop::Full) => return Ok(Collected::TooMany),
            Some(Stop::Error(error)) => return Err(error),
            None => {}
        }
        self.decoded.sort_by_start();
        let merged = merge_sorted(self.decoded);
        self.decoded.cut(merged);
        Ok(Collected::All)
    }

    /// Adds what the `reg` of the node at `depth` decodes and, for a bus, sets how its
    /// children's addresses translate. A bus's windows count as decoded when the bus
    /// is itself a device: it has a `reg` (a PCIe host bridge, whose `ranges` are its
    /// MMIO windows) or no children (QEMU's platform bus, filled at run time). A
    /// plain translating bus (the Pi's `/soc`) is not, or every address in it would
    /// count.
    #[inline(always)]
    fn add_decoded(
        &mut self,
        depth: usize,
        has_children: bool,
        properties: &Properties<'a>,
        parent_cells: Option<Cells>,
    ) -> Result<(), Stop> {
        let malformed = Stop::Error(TreeError::Malformed);
        let (outer, rest) = self.buses.split_at_mut_checked(depth).ok_or(malformed)?;
        let bus = rest.first_mut().ok_or(malformed)?;
        *bus = None;
        // The root's addresses are the CPU's; its own `reg` and `ranges` say nothing.
        let Some((parent, _)) = outer.split_last() else {
            *bus = Some(Bus::Identity);
            return Ok(());
        };
        if parent.is_none() {
            return Ok(());
        }
        let reg = properties.get(Name::Reg);
        let ranges = properties.get(Name::Ranges);
        if reg.is_none() && ranges.is_none() {
            return Ok(());
        }
        let parent_cells = parent_cells.ok_or(malformed)?;
        // The buses between the root and the node, outermost first.
        let enclosing = outer.get(1..).unwrap_or_default();
        if let Some(reg) = reg {
            let entries = reg_entries(reg, parent_cells).map_err(Stop::Error)?;
            // Entries that do not fit 64 bits are left out.
            for entry in entries {
                if let Some((address, size)) = entry
                    && let Some(start) = translate(enclosing, address)
                {
                    add_range(self.decoded, start, size)?;
                }
            }
        }
        let Some(ranges) = ranges else {
            return Ok(());
        };
        *bus = Some(if ranges.is_empty() {
            Bus::Identity
        } else {
            let own_cells = Cells::of(properties).ok_or(malformed)?;
            let cells = WindowCells {
                child: own_cells.address,
                parent: parent_cells.address,
                size: own_cells.size,
            };
            let is_device = reg.is_some() || !has_children;
            if is_device {
                for window in windows(ranges, cells) {
                    if let Some(start) = translate(enclosing, window.parent) {
                        add_range(self.decoded, start, window.len)?;
                    }
                }
            }
            Bus::Windows(ranges, cells)
        });
        Ok(())
    }
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
#[inline(always)]
fn translate(enclosing: &[Option<Bus<'_>>], address: u64) -> Option<u64> {
    let mut address = address;
    for bus in enclosing.iter().rev() {
        let Bus::Windows(ranges, cells) = (*bus)? else {
            continue;
        };
        let on_bus = u128::from(address);
        let (window, offset) = windows(ranges, cells).find_map(|window| {
            let offset = on_bus.checked_sub(window.child)?;
            (offset < u128::from(window.len)).then_some((window, offset))
        })?;
        address = window.parent.checked_add(u64::try_from(offset).ok()?)?;
    }
    Some(address)
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
