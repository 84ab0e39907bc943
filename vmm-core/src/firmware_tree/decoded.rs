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
}

impl RangeList for FixedRanges {
    fn push_range(&mut self, range: PhysRange) -> bool {
        self.push(range).is_ok()
    }

    fn cut(&mut self, len: usize) {
        self.truncate(len);
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
}

/// Whether some range of `decoded`, sorted and disjoint, holds `address`.
pub(super) fn holds(decoded: &[PhysRange], address: u64) -> bool {
    let starting_at_or_below = decoded.partition_point(|range| range.start <= address);
    let Some(last) = starting_at_or_below.checked_sub(1) else {
        return false;
    };
    decoded
        .get(last)
        .is_some_and(|range| range.contains(address))
}

/// Why the walk stopped adding ranges.
#[derive(Clone, Copy)]
pub(super) enum Stop {
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

/// One open node, as the decoding half of the walk sees it.
#[derive(Clone, Copy, Default)]
struct Level<'a> {
    /// Whether the node's addresses mean anything to the CPU: every node between it
    /// and the root is a bus with `ranges`. Under a bus without `ranges` (I2C, SPI)
    /// they do not, and the node is skipped.
    in_view: bool,
    /// How its children's addresses translate, when they are in view.
    bus: Option<Bus<'a>>,
}

/// The half of the tree's walk that collects what the nodes decode.
pub(super) struct DecodeWalk<'a, L> {
    /// The open nodes, root first.
    levels: [Level<'a>; MAX_DEPTH],
    /// What the nodes decode, in tree order.
    decoded: L,
    /// Set once the walk stopped adding ranges.
    stopped: Option<Stop>,
}

impl<'a, L: RangeList> DecodeWalk<'a, L> {
    /// A walk that adds to `decoded`.
    pub(super) fn new(decoded: L) -> DecodeWalk<'a, L> {
        DecodeWalk {
            levels: [Level::default(); MAX_DEPTH],
            decoded,
            stopped: None,
        }
    }

    /// A node begins at `depth`; returns whether its properties matter.
    #[inline(always)]
    pub(super) fn begin_node(&mut self, depth: usize) -> bool {
        let in_view = match depth.checked_sub(1) {
            None => true,
            Some(parent) => self
                .levels
                .get(parent)
                .is_some_and(|level| level.bus.is_some()),
        };
        if let Some(level) = self.levels.get_mut(depth) {
            *level = Level { in_view, bus: None };
        }
        in_view && self.stopped.is_none()
    }

    /// The properties of the node at `depth` are over; `ancestors` are the cells of
    /// the open nodes around it, root first.
    pub(super) fn read(
        &mut self,
        depth: usize,
        has_children: bool,
        properties: &Properties<'a>,
        ancestors: &[Result<Cells, TreeError>],
    ) {
        if self.stopped.is_some() {
            return;
        }
        if let Err(stop) = self.add_decoded(depth, has_children, properties, ancestors) {
            self.stopped = Some(stop);
        }
    }

    /// What the nodes decode, sorted, with touching ranges merged; `None` if the list
    /// filled up.
    pub(super) fn finish(self) -> Result<Option<L>, TreeError> {
        let mut decoded = self.decoded;
        match self.stopped {
            Some(Stop::Full) => return Ok(None),
            Some(Stop::Error(error)) => return Err(error),
            None => {}
        }
        decoded.sort_unstable_by_key(|range| range.start);
        let merged = merge_sorted(&mut decoded);
        decoded.cut(merged);
        Ok(Some(decoded))
    }

    /// Adds what the `reg` of the node at `depth` decodes and, for a bus, sets how its
    /// children's addresses translate. A bus's windows count as decoded when the bus
    /// is itself a device: it has a `reg` (a PCIe host bridge, whose `ranges` are its
    /// MMIO windows) or no children (QEMU's platform bus, filled at run time). A
    /// plain translating bus (the Pi's `/soc`) is not, or every address in it would
    /// count.
    fn add_decoded(
        &mut self,
        depth: usize,
        has_children: bool,
        properties: &Properties<'a>,
        ancestors: &[Result<Cells, TreeError>],
    ) -> Result<(), Stop> {
        let malformed = Stop::Error(TreeError::Malformed);
        let (outer, rest) = self.levels.split_at_mut_checked(depth).ok_or(malformed)?;
        let level = rest.first_mut().ok_or(malformed)?;
        if !level.in_view {
            return Ok(());
        }
        // The root's addresses are the CPU's; its own `reg` and `ranges` say nothing.
        let Some(&parent_cells) = ancestors.last() else {
            level.bus = Some(Bus::Identity);
            return Ok(());
        };
        let reg = properties.get(Name::Reg);
        let ranges = properties.get(Name::Ranges);
        if reg.is_none() && ranges.is_none() {
            return Ok(());
        }
        let parent_cells = parent_cells.map_err(Stop::Error)?;
        // The buses between the root and the node, outermost first.
        let enclosing = outer.get(1..).unwrap_or_default();
        if let Some(reg) = reg {
            let entries = reg_entries(reg, parent_cells).map_err(Stop::Error)?;
            // Entries that do not fit 64 bits are left out.
            for entry in entries {
                let Some((address, size)) = entry else {
                    continue;
                };
                if let Some(start) = translate(enclosing, address) {
                    add_range(&mut self.decoded, start, size)?;
                }
            }
        }
        let Some(ranges) = ranges else {
            return Ok(());
        };
        let bus = if ranges.is_empty() {
            Bus::Identity
        } else {
            let own_cells = Cells::of(properties).map_err(Stop::Error)?;
            let cells = WindowCells {
                child: own_cells.address,
                parent: parent_cells.address,
                size: own_cells.size,
            };
            let is_device = reg.is_some() || !has_children;
            if is_device {
                for window in windows(ranges, cells) {
                    if let Some(start) = translate(enclosing, window.parent) {
                        add_range(&mut self.decoded, start, window.len)?;
                    }
                }
            }
            Bus::Windows(ranges, cells)
        };
        level.bus = Some(bus);
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
fn translate(enclosing: &[Level<'_>], address: u64) -> Option<u64> {
    let mut address = address;
    for level in enclosing.iter().rev() {
        let Bus::Windows(ranges, cells) = level.bus? else {
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
fn add_range(decoded: &mut impl RangeList, start: u64, len: u64) -> Result<(), Stop> {
    let range = PhysRange::new(start, len.min(u64::MAX - start));
    if let Some(last) = decoded.last_mut()
        && last.end == range.start
    {
        last.end = range.end;
        return Ok(());
    }
    if decoded.push_range(range) {
        Ok(())
    } else {
        Err(Stop::Full)
    }
}
