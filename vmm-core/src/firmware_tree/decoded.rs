//! The walk behind [`FirmwareTree::decodes`](super::FirmwareTree::decodes): every
//! CPU physical range some node of the tree decodes, collected in one pass.

use alloc::vec::Vec;

use transom_boards::PhysRange;

use super::TreeError;
use super::dtb::{Dtb, MAX_DEPTH, Property, Visitor};
use super::properties::{Cells, Name, NameCache, Properties, WindowCells, reg_entries, windows};

/// Room for what QEMU `virt`'s tree decodes without growing the list.
const TYPICAL_RANGES: usize = 64;

/// The CPU physical addresses some node of a tree decodes: disjoint ranges, in
/// address order.
pub(super) struct Decoded(Vec<PhysRange>);

impl Decoded {
    /// What the nodes of `dtb` decode: the `reg` entries of the root's children and
    /// of the children of every bus with `ranges` (translated up through each
    /// enclosing bus), and the windows of the buses that are devices.
    pub(super) fn collect(dtb: &Dtb<'_>) -> Result<Decoded, TreeError> {
        let mut walk = DecodeWalk {
            levels: [Level::default(); MAX_DEPTH],
            names: NameCache::new(),
            decoded: Vec::with_capacity(TYPICAL_RANGES),
        };
        dtb.walk(&mut walk)?;
        let mut ranges = walk.decoded;
        ranges.retain(|range| !range.is_empty());
        ranges.sort_unstable_by_key(|range| range.start);
        ranges.dedup_by(|next, kept| {
            let touches = next.start <= kept.end;
            if touches {
                kept.end = kept.end.max(next.end);
            }
            touches
        });
        Ok(Decoded(ranges))
    }

    /// Whether some node decodes `address`.
    pub(super) fn contains(&self, address: u64) -> bool {
        let starting_at_or_below = self.0.partition_point(|range| range.start <= address);
        let Some(last) = starting_at_or_below.checked_sub(1) else {
            return false;
        };
        self.0
            .get(last)
            .is_some_and(|range| range.contains(address))
    }
}

/// How a bus maps its children's addresses to its own parent's (2.3.8).
#[derive(Clone, Copy)]
enum Bus<'a> {
    /// An empty `ranges`: the same addresses.
    Identity,
    /// A `ranges` list, and how it is coded.
    Windows(&'a [u8], WindowCells),
}

/// One open node of the walk.
#[derive(Clone, Copy, Default)]
struct Level<'a> {
    /// Whether the node's addresses mean anything to the CPU: every node between it
    /// and the root is a bus with `ranges`. Under a bus without `ranges` (I2C, SPI)
    /// they do not, and the node is skipped.
    in_view: bool,
    /// Its properties, recorded only when in view.
    properties: Properties<'a>,
    /// Whether its properties have been acted on: they are all known once its first
    /// child begins, or it ends (5.4.2).
    done: bool,
    /// How its children's addresses translate, when they are in view.
    bus: Option<Bus<'a>>,
}

struct DecodeWalk<'a> {
    /// The open nodes, the root first.
    levels: [Level<'a>; MAX_DEPTH],
    names: NameCache,
    /// What the nodes decode, in tree order.
    decoded: Vec<PhysRange>,
}

impl<'a> Visitor<'a> for DecodeWalk<'a> {
    fn begin_node(&mut self, depth: usize, _name: &'a [u8]) -> Result<bool, TreeError> {
        let in_view = match depth.checked_sub(1) {
            None => true,
            Some(parent) => {
                self.act_on_properties(parent, true)?;
                self.level(parent)?.bus.is_some()
            }
        };
        let level = self.level(depth)?;
        level.in_view = in_view;
        level.done = false;
        level.bus = None;
        level.properties.clear();
        Ok(in_view)
    }

    #[inline(always)]
    fn property(&mut self, depth: usize, property: Property<'a>) -> Result<(), TreeError> {
        if let Some(name) = self.names.name(&property) {
            self.level(depth)?.properties.record(name, property.value);
        }
        Ok(())
    }

    fn end_node(&mut self, depth: usize) -> Result<(), TreeError> {
        self.act_on_properties(depth, false)
    }
}

impl<'a> DecodeWalk<'a> {
    fn level(&mut self, depth: usize) -> Result<&mut Level<'a>, TreeError> {
        self.levels.get_mut(depth).ok_or(TreeError::Malformed)
    }

    /// Once a node's properties are all known: records what its `reg` decodes and,
    /// for a bus, how its children's addresses translate. A bus's windows count as
    /// decoded when the bus is itself a device: it has a `reg` (a PCIe host bridge,
    /// whose `ranges` are its MMIO windows) or no children (QEMU's platform bus,
    /// filled at run time). A plain translating bus (the Pi's `/soc`) is not, or
    /// every address in it would count.
    fn act_on_properties(&mut self, depth: usize, has_children: bool) -> Result<(), TreeError> {
        let (outer, rest) = self
            .levels
            .split_at_mut_checked(depth)
            .ok_or(TreeError::Malformed)?;
        let level = rest.first_mut().ok_or(TreeError::Malformed)?;
        let first_time = !level.done;
        level.done = true;
        if !first_time || !level.in_view {
            return Ok(());
        }
        // The root's addresses are the CPU's; its own `reg` and `ranges` say nothing.
        let Some((parent, _)) = outer.split_last() else {
            level.bus = Some(Bus::Identity);
            return Ok(());
        };
        let reg = level.properties.get(Name::Reg);
        let ranges = level.properties.get(Name::Ranges);
        if reg.is_none() && ranges.is_none() {
            return Ok(());
        }
        let parent_cells = Cells::of(&parent.properties)?;
        // The buses between the root and the node, outermost first.
        let enclosing = outer.get(1..).unwrap_or_default();
        if let Some(reg) = reg {
            for (address, size) in reg_entries(reg, parent_cells)?.flatten() {
                if let Some(start) = translate(enclosing, address) {
                    add_range(&mut self.decoded, start, size);
                }
            }
        }
        let Some(ranges) = ranges else {
            return Ok(());
        };
        let bus = if ranges.is_empty() {
            Bus::Identity
        } else {
            let own_cells = Cells::of(&level.properties)?;
            let cells = WindowCells {
                child: own_cells.address,
                parent: parent_cells.address,
                size: own_cells.size,
            };
            let is_device = reg.is_some() || !has_children;
            if is_device {
                for window in windows(ranges, cells) {
                    if let Some(start) = translate(enclosing, window.parent) {
                        add_range(&mut self.decoded, start, window.len);
                    }
                }
            }
            Bus::Windows(ranges, cells)
        };
        level.bus = Some(bus);
        Ok(())
    }
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
fn add_range(decoded: &mut Vec<PhysRange>, start: u64, len: u64) {
    let range = PhysRange::new(start, len.min(u64::MAX - start));
    match decoded.last_mut() {
        Some(last) if last.end == range.start => last.end = range.end,
        _ => decoded.push(range),
    }
}
