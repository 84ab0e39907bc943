//! What the hypervisor reads from the firmware's device tree: RAM, `/chosen`, CPUs,
//! PSCI, reserved memory, and which addresses the tree's devices decode.
//!
//! Read with Transom's own reader of the flattened format (`dtb`), not the `fdt`
//! crate: the crate's node API walks the structure block again for every path and
//! every property looked up, which cost some 760,000 instructions of the boot on
//! QEMU `virt`'s 7.5 KiB tree. The boot needs everything before its heap exists, so
//! [`FirmwareTree::parse`] checks the header and walks the structure block once,
//! keeping all it finds in fixed-capacity lists. `FDT_NOP` tokens, which libfdt
//! edits (QEMU adding `/chosen/bootargs` or rewriting `/memory`, the Pi firmware
//! patching its tree) leave behind, are skipped. A blob that breaks the format
//! (truncated, an unknown token, an offset or a length past its block, nodes nested
//! too deep) is [`TreeError::Malformed`], never a panic or a hang.

mod decoded;
mod dtb;
mod properties;

use alloc::vec::Vec;
use core::cell::{Cell, OnceCell};

use transom_boards::PhysRange;

use decoded::{Collected, DecodeWalk, FixedRanges, RangeList, find};
use dtb::{Dtb, MAX_DEPTH, Visitor};
use properties::{Cells, Name, Properties, reg_entries, same_bytes};

/// The most RAM ranges recorded.
pub const MAX_RANGES: usize = 8;
/// The most CPUs recorded.
pub const MAX_TREE_CPUS: usize = 16;

/// RAM ranges.
pub type Ranges = heapless::Vec<PhysRange, MAX_RANGES>;
/// CPUs.
pub type Cpus = heapless::Vec<TreeCpu, MAX_TREE_CPUS>;

/// Why the firmware's device tree cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeError {
    /// No blob with a valid header at the address the firmware passed.
    NoBlob {
        /// The address.
        address: usize,
    },
    /// The blob does not follow the flattened devicetree format, or a property the
    /// hypervisor reads has a value it cannot hold.
    Malformed,
    /// No `memory` node with a `reg`.
    NoMemory,
    /// No `/cpus` node with a `cpu` child.
    NoCpus,
    /// More entries than the hypervisor has room for.
    TooMany {
        /// What there are too many of.
        what: &'static str,
    },
}

/// One CPU as the tree describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeCpu {
    /// `reg`: the CPU's `MPIDR` affinity.
    pub mpidr: u64,
    /// `cpu-release-addr`, for `enable-method = "spin-table"`.
    pub release_address: Option<u64>,
    /// `enable-method = "psci"`.
    pub psci: bool,
}

/// The firmware's tree.
pub struct FirmwareTree<'a> {
    dtb: Dtb<'a>,
    /// Where the blob lies.
    pub blob: PhysRange,
    /// What [`FirmwareTree::parse`] read.
    facts: Facts<'a>,
    /// What the tree's nodes decode, sorted, touching ranges merged, if `decoded`
    /// says they are listed here.
    listed: FixedRanges,
    /// Where what the tree's nodes decode is found.
    decoded: Decoded,
    /// The index in `listed` of the range the last [`FirmwareTree::decodes`] found:
    /// lookups in address order (the kernel's cross-check of a board table) mostly
    /// land in it, in the gap after it or in the next range.
    last_found: Cell<usize>,
}

/// Where what the tree's nodes decode is found.
enum Decoded {
    /// In the fixed list [`FirmwareTree::parse`] filled.
    Listed,
    /// More than [`FixedRanges`] holds: collected on the heap by the first
    /// [`FirmwareTree::decodes`], with one more walk.
    Spilled(OnceCell<Result<Vec<PhysRange>, TreeError>>),
    /// A `reg`, `ranges` or cell count that cannot be used.
    Unreadable(TreeError),
}

impl<'a> FirmwareTree<'a> {
    /// Parses the blob `bytes` found at `address` (`None`: no valid header there):
    /// checks its header and reads, in one walk of its structure block, everything
    /// the other methods answer with. Allocates nothing.
    ///
    /// Never inlined: called once, it keeps the walk's state out of the caller's
    /// frame.
    #[inline(never)]
    pub fn parse(address: usize, bytes: Option<&'a [u8]>) -> Result<FirmwareTree<'a>, TreeError> {
        let bytes = bytes.ok_or(TreeError::NoBlob { address })?;
        let dtb = Dtb::new(bytes)?;
        let mut tree = FirmwareTree {
            dtb,
            blob: PhysRange::new(address as u64, bytes.len() as u64),
            facts: Facts::new(),
            listed: FixedRanges::new(),
            decoded: Decoded::Listed,
            last_found: Cell::new(0),
        };
        tree.read()?;
        Ok(tree)
    }

    /// Walks the structure block, reading what the other methods answer with.
    fn read(&mut self) -> Result<(), TreeError> {
        self.facts.reserved = reservations(&self.dtb);
        let mut walk = TreeWalk::new(&mut self.facts, &mut self.listed);
        self.dtb.walk(&mut walk)?;
        self.decoded = match walk.finish() {
            Ok(Collected::All) => Decoded::Listed,
            Ok(Collected::TooMany) => Decoded::Spilled(OnceCell::new()),
            Err(error) => Decoded::Unreadable(error),
        };
        Ok(())
    }

    /// RAM ranges from every `memory` node under the root: a node whose
    /// `device_type` is `"memory"` or whose name (before any `@`) is `memory`.
    pub fn memory(&self) -> Result<Ranges, TreeError> {
        self.facts.memory.clone()
    }

    /// `/chosen/bootargs`, empty if absent.
    pub fn bootargs(&self) -> Result<&'a str, TreeError> {
        self.facts.bootargs
    }

    /// The initrd from `/chosen/linux,initrd-start` and `linux,initrd-end` (each
    /// 32 or 64 bits).
    pub fn initrd(&self) -> Result<Option<PhysRange>, TreeError> {
        self.facts.initrd
    }

    /// `/psci/method` (`"smc"` or `"hvc"`), if the tree has a PSCI node.
    pub fn psci_method(&self) -> Result<Option<&'a str>, TreeError> {
        self.facts.psci_method
    }

    /// The CPUs under `/cpus`, in tree order: its children whose `device_type` is
    /// `"cpu"` and that have a `reg`.
    pub fn cpus(&self) -> Result<Cpus, TreeError> {
        self.facts.cpus.clone()
    }

    /// Reserved RAM: the `/memreserve/` entries of the blob's header and the `reg`
    /// of each `/reserved-memory` child (Devicetree Specification v0.4, 5.3 and
    /// 3.5).
    pub fn reserved_memory(&self) -> Result<Ranges, TreeError> {
        self.facts.reserved.clone()
    }

    /// Whether some node decodes `address`: a `reg` entry holds it, or a window
    /// (`ranges`) of a bus node that is itself a device holds it. A bus counts as a
    /// device when it has a `reg` (a PCIe host bridge: its `ranges` are its MMIO
    /// windows) or no children (QEMU's platform bus, filled at run time); a plain
    /// translating bus (the Pi's `/soc`) does not, or every address in it would
    /// count. Addresses are translated to CPU physical addresses through every
    /// enclosing bus's `ranges`; nodes under a bus without `ranges` (I2C, SPI
    /// devices) are not memory-mapped and are skipped.
    ///
    /// [`FirmwareTree::parse`] already collected what the nodes decode, so each call
    /// is a look at the range the last call found, or a binary search. Only a tree
    /// with more decoded ranges than its fixed list holds (32, touching ranges
    /// merged) is walked again by the first call, onto the heap: call it only once
    /// the heap exists.
    #[inline]
    pub fn decodes(&self, address: u64) -> Result<bool, TreeError> {
        match &self.decoded {
            Decoded::Listed => Ok(self.listed_holds(address)),
            Decoded::Unreadable(error) => Err(*error),
            Decoded::Spilled(on_heap) => self.decodes_on_heap(on_heap, address),
        }
    }

    /// Whether a range of `listed` holds `address`. Looks first at the range the last
    /// lookup found and the gap after it, up to the next range: lookups in address
    /// order mostly land there, found or not. Any other is a binary search.
    #[inline(always)]
    fn listed_holds(&self, address: u64) -> bool {
        let listed = self.listed.as_slice();
        let last_found = self.last_found.get();
        if let Some(found) = listed.get(last_found)
            && found.start <= address
        {
            if address < found.end {
                return true;
            }
            // The ranges are sorted and disjoint: none before `found` holds it.
            match listed.get(last_found + 1) {
                None => return false,
                Some(next) if address < next.start => return false,
                Some(next) if address < next.end => {
                    self.last_found.set(last_found + 1);
                    return true;
                }
                Some(_) => {}
            }
        }
        let Some(found) = find(listed, address) else {
            return false;
        };
        self.last_found.set(found);
        true
    }

    /// [`FirmwareTree::decodes`] for a tree whose decoded ranges did not fit the
    /// fixed list: collects them on the heap the first time.
    #[inline(never)]
    fn decodes_on_heap(
        &self,
        on_heap: &OnceCell<Result<Vec<PhysRange>, TreeError>>,
        address: u64,
    ) -> Result<bool, TreeError> {
        match on_heap.get_or_init(|| self.decoded_on_heap()) {
            Ok(decoded) => Ok(find(decoded, address).is_some()),
            Err(error) => Err(*error),
        }
    }

    /// What the nodes decode, collected on the heap by one more walk.
    fn decoded_on_heap(&self) -> Result<Vec<PhysRange>, TreeError> {
        let mut facts = Facts::new();
        let mut decoded = Vec::new();
        let mut walk = TreeWalk::new(&mut facts, &mut decoded);
        self.dtb.walk(&mut walk)?;
        match walk.finish()? {
            Collected::All => Ok(decoded),
            Collected::TooMany => Err(TreeError::TooMany {
                what: "decoded ranges",
            }),
        }
    }
}

/// The walk of [`FirmwareTree::parse`]: records the properties of each node that
/// either half reads, once, for both, and hands them over once they are all known.
struct TreeWalk<'a, 't, L> {
    /// The properties of the node whose properties are being read.
    properties: Properties<'a>,
    /// What the children of the open nodes, root first, read of them; set once a
    /// node's properties are over, if it has children.
    levels: [Level; MAX_DEPTH],
    boot: BootWalk<'a, 't>,
    decode: DecodeWalk<'a, 't, L>,
}

impl<'a, 't, L: RangeList> TreeWalk<'a, 't, L> {
    /// A walk that reads into `facts` and `decoded`.
    fn new(facts: &'t mut Facts<'a>, decoded: &'t mut L) -> TreeWalk<'a, 't, L> {
        TreeWalk {
            properties: Properties::default(),
            levels: [Level {
                cells: None,
                children: Children::Long,
            }; MAX_DEPTH],
            boot: BootWalk::new(facts),
            decode: DecodeWalk::new(decoded),
        }
    }

    /// Finishes both halves: whether the decoded list holds all.
    fn finish(self) -> Result<Collected, TreeError> {
        self.boot.finish();
        self.decode.finish()
    }
}

impl<'a, L: RangeList> Visitor<'a> for TreeWalk<'a, '_, L> {
    #[inline(always)]
    fn property(&mut self, name: Name, value: &'a [u8]) {
        self.properties.record(name, value);
    }

    /// The common node takes a short cut: a device under the root, or under a bus
    /// whose addresses are the CPU's, that the boot does not read and that has no
    /// children or `ranges`. Any other goes the long way. Never inlined: the walk's
    /// loops keep their registers.
    #[inline(never)]
    fn properties_end(&mut self, depth: usize, name: &'a [u8], has_children: bool) {
        let parent = depth
            .checked_sub(1)
            .and_then(|parent| self.levels.get(parent));
        let (cells, children) = parent.map_or((None, Children::Long), |level| {
            (level.cells, level.children)
        });
        let short_cut = match children {
            Children::Long => false,
            Children::Short => true,
            Children::ShortUnlessNamed => {
                !self.properties.has(Name::DeviceType) && RootChild::of(name) == RootChild::Other
            }
        };
        let short_cut = short_cut
            && !has_children
            && !self.properties.has(Name::Ranges)
            && !self.decode.stopped();
        match cells {
            Some(parent_cells) if short_cut => {
                let reg = self.properties.get(Name::Reg);
                self.decode.add_direct(reg, parent_cells);
            }
            _ => self.node_end(depth, name, has_children),
        }
        self.properties.clear();
    }
}

/// Which of a node's children may take the short cut of
/// [`TreeWalk::properties_end`] (if they have no children or `ranges`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Children {
    /// None: their addresses are not the CPU's, or the boot reads them.
    Long,
    /// All: their addresses are the CPU's, and the boot reads none of them.
    Short,
    /// The root's: those the boot does not look for by name or `device_type`.
    ShortUnlessNamed,
}

/// What the children of an open node read of it, once its properties are over.
#[derive(Clone, Copy)]
struct Level {
    /// How it codes its children's `reg` (2.3.5; `None`: its cell counts are
    /// malformed).
    cells: Option<Cells>,
    /// Which of its children take the short cut.
    children: Children,
}

impl<'a, L: RangeList> TreeWalk<'a, '_, L> {
    /// The properties of the node at `depth`, called `name`, are over: each half
    /// reads them, and the node's children will find its cells.
    #[inline(never)]
    fn node_end(&mut self, depth: usize, name: &'a [u8], has_children: bool) {
        let parent = depth
            .checked_sub(1)
            .and_then(|parent| self.levels.get(parent));
        let parent_cells = parent.and_then(|level| level.cells);
        self.boot
            .read(depth, name, has_children, &self.properties, parent_cells);
        self.decode
            .read(depth, has_children, &self.properties, parent_cells);
        // What only the node's children read.
        if has_children && let Some(level) = self.levels.get_mut(depth) {
            let children = if !self.decode.is_direct(depth) || self.boot.reads_children(depth) {
                Children::Long
            } else if depth == 0 {
                Children::ShortUnlessNamed
            } else {
                Children::Short
            };
            *level = Level {
                cells: Cells::of(&self.properties),
                children,
            };
        }
    }
}

/// What [`FirmwareTree::parse`] reads for the boot. Each answer keeps the first
/// error met while reading it, and then stops growing, as a lookup that returned it
/// would have.
struct Facts<'a> {
    memory: Result<Ranges, TreeError>,
    bootargs: Result<&'a str, TreeError>,
    initrd: Result<Option<PhysRange>, TreeError>,
    psci_method: Result<Option<&'a str>, TreeError>,
    cpus: Result<Cpus, TreeError>,
    reserved: Result<Ranges, TreeError>,
}

impl<'a> Facts<'a> {
    /// Nothing read yet. A function, not a constant: a constant would be copied in
    /// whole, with the room of its empty lists.
    #[inline(always)]
    fn new() -> Facts<'a> {
        Facts {
            memory: Ok(Ranges::new()),
            bootargs: Ok(""),
            initrd: Ok(None),
            psci_method: Ok(None),
            cpus: Ok(Cpus::new()),
            reserved: Ok(Ranges::new()),
        }
    }

    /// Reads the `properties` of a node whose `role` the boot reads; `parent_cells`
    /// code its `reg` (`None`: they are malformed).
    #[inline(never)]
    fn read(&mut self, role: Role, properties: &Properties<'a>, parent_cells: Option<Cells>) {
        match role {
            Role::RootChild(child) => {
                add_to(&mut self.memory, |ranges| {
                    add_memory(ranges, child, properties, parent_cells)
                });
                match child {
                    RootChild::Chosen => self.read_chosen(properties),
                    RootChild::Psci => self.psci_method = properties.string(Name::Method),
                    _ => {}
                }
            }
            Role::Cpu => add_to(&mut self.cpus, |cpus| add_cpu(cpus, properties)),
            Role::Reservation => add_to(&mut self.reserved, |ranges| {
                add_reservation(ranges, properties, parent_cells)
            }),
            Role::Root | Role::Other => {}
        }
    }

    /// Reads `/chosen` (3.6).
    fn read_chosen(&mut self, chosen: &Properties<'a>) {
        self.bootargs = chosen.string(Name::Bootargs).map(Option::unwrap_or_default);
        self.initrd = initrd(chosen);
    }
}

/// What a node the boot reads is, by where it lies.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
enum Role {
    /// `/`.
    Root,
    /// A child of the root.
    RootChild(RootChild),
    /// A child of `/cpus`.
    Cpu,
    /// A child of `/reserved-memory`.
    Reservation,
    /// A node whose properties the boot does not read.
    #[default]
    Other,
}

/// The children of the root the boot looks for. Only the first node of each name
/// but `memory` counts, as a lookup by path finds the first.
#[derive(Clone, Copy, PartialEq, Eq)]
enum RootChild {
    Chosen,
    Psci,
    Cpus,
    ReservedMemory,
    /// A node named `memory` (3.4).
    NamedMemory,
    /// Any other: still a `memory` node if its `device_type` says so.
    Other,
}

impl RootChild {
    /// What the root's child `name` (its unit name, up to a NUL or its end) is, by
    /// its node name (2.2.1: the part before the `@`). Picks the candidate by the
    /// first byte, as most names match none.
    #[inline(always)]
    fn of(name: &[u8]) -> RootChild {
        let (node_name, child): (&[u8], RootChild) = match name.first() {
            Some(b'c') => match name.get(1) {
                Some(b'h') => (b"chosen", RootChild::Chosen),
                _ => (b"cpus", RootChild::Cpus),
            },
            Some(b'm') => (b"memory", RootChild::NamedMemory),
            Some(b'p') => (b"psci", RootChild::Psci),
            Some(b'r') => (b"reserved-memory", RootChild::ReservedMemory),
            _ => return RootChild::Other,
        };
        let before_at = name.get(..node_name.len()).unwrap_or_default();
        let is_named = matches!(name.get(node_name.len()), None | Some(b'@' | 0))
            && same_bytes(before_at, node_name);
        if is_named { child } else { RootChild::Other }
    }
}

/// Which children of the root that only count once have been met.
#[derive(Default)]
struct Seen {
    chosen: bool,
    psci: bool,
    cpus: bool,
    reserved_memory: bool,
}

/// The half of the tree's walk that reads what the boot needs.
struct BootWalk<'a, 'f> {
    /// What the open nodes at depths 0 to 2 are, once their properties are over,
    /// if they have children; deeper nodes hold nothing the boot reads.
    roles: [Role; 3],
    /// The children of the root met so far that only count once.
    seen: Seen,
    facts: &'f mut Facts<'a>,
}

impl<'a, 'f> BootWalk<'a, 'f> {
    /// A walk that reads into `facts`.
    fn new(facts: &'f mut Facts<'a>) -> BootWalk<'a, 'f> {
        BootWalk {
            roles: [Role::Other; 3],
            seen: Seen::default(),
            facts,
        }
    }

    /// The walk is over: an empty RAM or CPU list is an error.
    fn finish(self) {
        let facts = self.facts;
        if facts.memory.as_ref().is_ok_and(|ranges| ranges.is_empty()) {
            facts.memory = Err(TreeError::NoMemory);
        }
        if facts.cpus.as_ref().is_ok_and(|cpus| cpus.is_empty()) {
            facts.cpus = Err(TreeError::NoCpus);
        }
    }

    /// Whether the boot reads the children of the node at `depth`, whatever their
    /// names: the root's and, once their properties are over, `/cpus`' and
    /// `/reserved-memory`'s.
    #[inline(always)]
    fn reads_children(&self, depth: usize) -> bool {
        match depth {
            0 => false,
            1 => matches!(
                self.roles[1],
                Role::RootChild(RootChild::Cpus | RootChild::ReservedMemory)
            ),
            _ => false,
        }
    }

    /// The properties of the node at `depth`, called `name`, are over: finds what
    /// the node is, and reads what they say. `parent_cells` code its `reg` (`None`:
    /// they are malformed).
    #[inline(always)]
    fn read(
        &mut self,
        depth: usize,
        name: &[u8],
        has_children: bool,
        properties: &Properties<'a>,
        parent_cells: Option<Cells>,
    ) {
        let role = match depth {
            0 => Role::Root,
            1 => Role::RootChild(self.first_of_its_name(RootChild::of(name))),
            2 => match self.roles[1] {
                Role::RootChild(RootChild::Cpus) => Role::Cpu,
                Role::RootChild(RootChild::ReservedMemory) => Role::Reservation,
                _ => Role::Other,
            },
            _ => return,
        };
        // Only the node's children read its role.
        if has_children {
            self.roles[depth] = role;
        }
        match role {
            // The common case: a device, not memory, unless its type says so.
            Role::RootChild(RootChild::Other) if !properties.has(Name::DeviceType) => {}
            Role::Root | Role::Other => {}
            _ => self.facts.read(role, properties, parent_cells),
        }
    }

    /// `child` unless an earlier child of the root had its name.
    #[inline(always)]
    fn first_of_its_name(&mut self, child: RootChild) -> RootChild {
        let seen = match child {
            RootChild::Chosen => &mut self.seen.chosen,
            RootChild::Psci => &mut self.seen.psci,
            RootChild::Cpus => &mut self.seen.cpus,
            RootChild::ReservedMemory => &mut self.seen.reserved_memory,
            RootChild::NamedMemory | RootChild::Other => return child,
        };
        if core::mem::replace(seen, true) {
            RootChild::Other
        } else {
            child
        }
    }
}

/// The `/memreserve/` entries of the blob's header (5.3).
fn reservations(dtb: &Dtb<'_>) -> Result<Ranges, TreeError> {
    let mut reserved = Ok(Ranges::new());
    for entry in dtb.reservations() {
        add_to(&mut reserved, |ranges| {
            let (address, size) = entry?;
            let range = PhysRange::checked(address, size).ok_or(TreeError::Malformed)?;
            push_range(ranges, range, "reserved ranges")
        });
    }
    reserved
}

/// The initrd `/chosen` names with `linux,initrd-start` and `linux,initrd-end`
/// (Linux's `chosen` binding), if the range holds a byte.
fn initrd(chosen: &Properties<'_>) -> Result<Option<PhysRange>, TreeError> {
    let start = chosen.integer(Name::InitrdStart)?;
    let end = chosen.integer(Name::InitrdEnd)?;
    match (start, end) {
        (Some(start), Some(end)) if start < end => Ok(Some(PhysRange { start, end })),
        _ => Ok(None),
    }
}

/// Adds the RAM of the root's child `child`, if it is a `memory` node (3.4);
/// `root_cells` code its `reg` (`None`: they are malformed).
fn add_memory(
    ranges: &mut Ranges,
    child: RootChild,
    properties: &Properties<'_>,
    root_cells: Option<Cells>,
) -> Result<(), TreeError> {
    let is_memory = properties.string_is(Name::DeviceType, "memory")?;
    if !is_memory && child != RootChild::NamedMemory {
        return Ok(());
    }
    let Some(reg) = properties.get(Name::Reg) else {
        return Ok(());
    };
    let root_cells = root_cells.ok_or(TreeError::Malformed)?;
    for entry in reg_entries(reg, root_cells).ok_or(TreeError::Malformed)? {
        let (address, size) = entry.ok_or(TreeError::Malformed)?;
        if size == 0 {
            continue;
        }
        let range = PhysRange::checked(address, size).ok_or(TreeError::Malformed)?;
        push_range(ranges, range, "memory ranges")?;
    }
    Ok(())
}

/// Adds the CPU a child of `/cpus` describes, if it is one (3.8).
fn add_cpu(cpus: &mut Cpus, properties: &Properties<'_>) -> Result<(), TreeError> {
    if !properties.string_is(Name::DeviceType, "cpu")? {
        return Ok(());
    }
    let Some(mpidr) = properties.integer(Name::Reg)? else {
        return Ok(());
    };
    let cpu = TreeCpu {
        mpidr,
        release_address: properties.integer(Name::CpuReleaseAddr)?,
        psci: properties.string_is(Name::EnableMethod, "psci")?,
    };
    cpus.push(cpu)
        .map_err(|_| TreeError::TooMany { what: "CPUs" })
}

/// Adds the `reg` of a child of `/reserved-memory` (3.5.2), coded with the cells of
/// `/reserved-memory` (`None`: they are malformed); entries that do not fit 64 bits
/// are left out.
fn add_reservation(
    ranges: &mut Ranges,
    properties: &Properties<'_>,
    reserved_memory_cells: Option<Cells>,
) -> Result<(), TreeError> {
    let Some(reg) = properties.get(Name::Reg) else {
        return Ok(());
    };
    let cells = reserved_memory_cells.ok_or(TreeError::Malformed)?;
    for entry in reg_entries(reg, cells).ok_or(TreeError::Malformed)? {
        if let Some((address, size)) = entry
            && size > 0
        {
            let range = PhysRange::checked(address, size).ok_or(TreeError::Malformed)?;
            push_range(ranges, range, "reserved ranges")?;
        }
    }
    Ok(())
}

fn push_range(ranges: &mut Ranges, range: PhysRange, what: &'static str) -> Result<(), TreeError> {
    ranges.push(range).map_err(|_| TreeError::TooMany { what })
}

/// Runs `add` on the list in `answer`, unless an error already stands there; an
/// error it returns replaces the list.
#[inline(always)]
fn add_to<T>(answer: &mut Result<T, TreeError>, add: impl FnOnce(&mut T) -> Result<(), TreeError>) {
    if let Ok(list) = answer
        && let Err(error) = add(list)
    {
        *answer = Err(error);
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;
    use vm_fdt::FdtWriter;

    /// A Pi-like `/soc` bus (VPU bus addresses translated by `ranges`) with a
    /// UART, an I2C bus without `ranges` and a PCIe-like bridge with a `reg` and an
    /// MMIO window.
    fn bus_tree() -> Vec<u8> {
        let mut fdt = FdtWriter::new().expect("writer");
        let root = fdt.begin_node("").expect("root");
        fdt.property_u32("#address-cells", 2).expect("prop");
        fdt.property_u32("#size-cells", 1).expect("prop");
        let soc = fdt.begin_node("soc").expect("node");
        fdt.property_u32("#address-cells", 1).expect("prop");
        fdt.property_u32("#size-cells", 1).expect("prop");
        fdt.property_array_u32("ranges", &[0x7e00_0000, 0x0, 0xfe00_0000, 0x0180_0000])
            .expect("prop");
        let uart = fdt.begin_node("serial@7e201000").expect("node");
        fdt.property_array_u32("reg", &[0x7e20_1000, 0x200])
            .expect("prop");
        fdt.end_node(uart).expect("end");
        let i2c = fdt.begin_node("i2c@7e205000").expect("node");
        fdt.property_array_u32("reg", &[0x7e20_5000, 0x200])
            .expect("prop");
        fdt.property_u32("#address-cells", 1).expect("prop");
        fdt.property_u32("#size-cells", 0).expect("prop");
        let eeprom = fdt.begin_node("eeprom@50").expect("node");
        fdt.property_u32("reg", 0x50).expect("prop");
        fdt.end_node(eeprom).expect("end");
        fdt.end_node(i2c).expect("end");
        fdt.end_node(soc).expect("end");
        let pcie = fdt.begin_node("pcie@10000000").expect("node");
        fdt.property_u32("#address-cells", 3).expect("prop");
        fdt.property_u32("#size-cells", 2).expect("prop");
        fdt.property_array_u32("reg", &[0x40, 0x1000_0000, 0x1000_0000])
            .expect("prop");
        // One 32-bit MMIO window: PCI 0x1000_0000 -> CPU 0x1000_0000, 0x2eff_0000 bytes.
        fdt.property_array_u32(
            "ranges",
            &[0x0200_0000, 0, 0x1000_0000, 0, 0x1000_0000, 0, 0x2eff_0000],
        )
        .expect("prop");
        fdt.end_node(pcie).expect("end");
        fdt.end_node(root).expect("end");
        fdt.finish().expect("finish")
    }

    /// `/memreserve/` entries and `/reserved-memory` children both count.
    #[test]
    fn reserved_memory_from_header_and_nodes() {
        let reservations = [vm_fdt::FdtReserveEntry::new(0, 0x1000).expect("entry")];
        let mut fdt = FdtWriter::new_with_mem_reserv(&reservations).expect("writer");
        let root = fdt.begin_node("").expect("root");
        fdt.property_u32("#address-cells", 2).expect("prop");
        fdt.property_u32("#size-cells", 2).expect("prop");
        let reserved = fdt.begin_node("reserved-memory").expect("node");
        fdt.property_u32("#address-cells", 2).expect("prop");
        fdt.property_u32("#size-cells", 2).expect("prop");
        fdt.property_null("ranges").expect("prop");
        let carve_out = fdt.begin_node("linux,cma@3b400000").expect("node");
        fdt.property_array_u64("reg", &[0x3b40_0000, 0x4c0_0000])
            .expect("prop");
        fdt.end_node(carve_out).expect("end");
        fdt.end_node(reserved).expect("end");
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");
        let tree = FirmwareTree::parse(0x1000, Some(&blob)).expect("parses");
        let ranges = tree.reserved_memory().expect("reads");
        assert_eq!(
            ranges.as_slice(),
            &[
                PhysRange::new(0, 0x1000),
                PhysRange::new(0x3b40_0000, 0x4c0_0000)
            ]
        );
    }

    #[test]
    fn devices_are_found_at_their_translated_addresses() {
        let blob = bus_tree();
        let tree = FirmwareTree::parse(0x1000, Some(&blob)).expect("parses");
        // 0x7e20_1000 on the VPU bus is 0xfe20_1000 for the CPU.
        assert_eq!(tree.decodes(0xfe20_1000), Ok(true));
        assert_eq!(tree.decodes(0xfe20_11ff), Ok(true));
        assert_eq!(tree.decodes(0xfe20_1200), Ok(false));
        assert_eq!(tree.decodes(0x7e20_1000), Ok(false));
        // The translating bus's window is not a device: an empty slot in it is absent.
        assert_eq!(tree.decodes(0xfe30_0000), Ok(false));
        // I2C addresses are not memory addresses.
        assert_eq!(tree.decodes(0x50), Ok(false));
        // The host bridge decodes its ECAM (`reg`) and its MMIO window (`ranges`).
        assert_eq!(tree.decodes(0x40_1000_0000), Ok(true));
        assert_eq!(tree.decodes(0x3eff_0000 - 1), Ok(true));
        assert_eq!(tree.decodes(0x3eff_0000), Ok(false));
    }

    /// A QEMU-`virt`-like tree: two memory banks, PSCI CPUs, bootargs, an initrd.
    fn sample_tree() -> Vec<u8> {
        let mut fdt = FdtWriter::new().expect("writer");
        let root = fdt.begin_node("").expect("root");
        fdt.property_u32("#address-cells", 2).expect("prop");
        fdt.property_u32("#size-cells", 2).expect("prop");
        let chosen = fdt.begin_node("chosen").expect("node");
        fdt.property_string("bootargs", "transom.exit=semihosting")
            .expect("prop");
        fdt.property_u64("linux,initrd-start", 0x4800_0000)
            .expect("prop");
        fdt.property_u32("linux,initrd-end", 0x4810_0000)
            .expect("prop");
        fdt.end_node(chosen).expect("end");
        for (name, base) in [
            ("memory@40000000", 0x4000_0000u64),
            ("memory@100000000", 0x1_0000_0000),
        ] {
            let memory = fdt.begin_node(name).expect("node");
            fdt.property_string("device_type", "memory").expect("prop");
            fdt.property_array_u64("reg", &[base, 0x4000_0000])
                .expect("prop");
            fdt.end_node(memory).expect("end");
        }
        let psci = fdt.begin_node("psci").expect("node");
        fdt.property_string("method", "smc").expect("prop");
        fdt.end_node(psci).expect("end");
        let cpus = fdt.begin_node("cpus").expect("node");
        fdt.property_u32("#address-cells", 1).expect("prop");
        fdt.property_u32("#size-cells", 0).expect("prop");
        for index in 0..2u32 {
            let cpu = fdt.begin_node(&std::format!("cpu@{index}")).expect("node");
            fdt.property_string("device_type", "cpu").expect("prop");
            fdt.property_u32("reg", index).expect("prop");
            fdt.property_string("enable-method", "psci").expect("prop");
            fdt.end_node(cpu).expect("end");
        }
        fdt.end_node(cpus).expect("end");
        fdt.end_node(root).expect("end");
        fdt.finish().expect("finish")
    }

    /// Inserts `count` `FDT_NOP` tokens before the `cpus` node, as libfdt leaves them
    /// after deleting a node (Devicetree Specification v0.4, 5.4.1: FDT_NOP "shall be
    /// ignored by any program parsing the device tree").
    fn with_nops_before_cpus(blob: &[u8], count: usize) -> Vec<u8> {
        const FDT_BEGIN_NODE: [u8; 4] = [0, 0, 0, 1];
        const FDT_NOP: [u8; 4] = [0, 0, 0, 4];
        let be32 =
            |offset: usize| u32::from_be_bytes(blob[offset..offset + 4].try_into().expect("4"));
        let off_struct = be32(8) as usize;
        let needle = [&FDT_BEGIN_NODE[..], b"cpus\0"].concat();
        let position = off_struct
            + blob[off_struct..]
                .windows(needle.len())
                .position(|window| window == needle.as_slice())
                .expect("cpus node");
        let extra = 4 * count;
        let mut patched = Vec::new();
        patched.extend_from_slice(&blob[..position]);
        for _ in 0..count {
            patched.extend_from_slice(&FDT_NOP);
        }
        patched.extend_from_slice(&blob[position..]);
        // Header fields after the structure block move: totalsize, off_dt_strings,
        // size_dt_struct (spec 5.2).
        for (field, grows) in [(4usize, true), (12, true), (36, true)] {
            let value = be32(field) as usize + if grows { extra } else { 0 };
            patched[field..field + 4].copy_from_slice(&(value as u32).to_be_bytes());
        }
        patched
    }

    #[test]
    fn reads_memory_bootargs_initrd_psci_and_cpus() {
        let blob = sample_tree();
        let tree = FirmwareTree::parse(0x4000_0000, Some(&blob)).expect("parses");
        let memory = tree.memory().expect("memory");
        assert_eq!(
            memory.as_slice(),
            [
                PhysRange::new(0x4000_0000, 0x4000_0000),
                PhysRange::new(0x1_0000_0000, 0x4000_0000)
            ]
        );
        assert_eq!(tree.bootargs(), Ok("transom.exit=semihosting"));
        assert_eq!(
            tree.initrd(),
            Ok(Some(PhysRange::new(0x4800_0000, 0x10_0000)))
        );
        assert_eq!(tree.psci_method(), Ok(Some("smc")));
        let cpus = tree.cpus().expect("cpus");
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[1].mpidr, 1);
        assert!(cpus[1].psci);
        assert_eq!(cpus[1].release_address, None);
    }

    #[test]
    fn nodes_after_nop_tokens_are_found() {
        let blob = with_nops_before_cpus(&sample_tree(), 19);
        let tree = FirmwareTree::parse(0, Some(&blob)).expect("parses");
        assert_eq!(tree.cpus().expect("cpus after NOPs").len(), 2);
    }

    #[test]
    fn a_missing_blob_or_node_is_an_error_not_a_panic() {
        assert_eq!(
            FirmwareTree::parse(0x1234, None).err(),
            Some(TreeError::NoBlob { address: 0x1234 })
        );
        let mut fdt = FdtWriter::new().expect("writer");
        let root = fdt.begin_node("").expect("root");
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");
        let tree = FirmwareTree::parse(0, Some(&blob)).expect("parses");
        assert_eq!(tree.memory(), Err(TreeError::NoMemory));
        assert_eq!(tree.cpus(), Err(TreeError::NoCpus));
        assert_eq!(tree.bootargs(), Ok(""));
        assert_eq!(tree.psci_method(), Ok(None));
    }

    /// A piece of a structure block, for blobs `vm_fdt` cannot write (Devicetree
    /// Specification v0.4, 5.4.1).
    enum Piece<'a> {
        /// `FDT_BEGIN_NODE` and the name, NUL-terminated and padded.
        Begin(&'a str),
        /// `FDT_PROP`, the value's length, its name's offset, the padded value.
        Prop(&'a str, &'a [u8]),
        /// `FDT_END_NODE`.
        End,
        /// `FDT_NOP`.
        Nop,
        /// `FDT_END`.
        Finish,
        /// Any big-endian word.
        Word(u32),
    }

    /// A version-17 blob (5.2) with an empty memory reservation block and `pieces`
    /// as its structure block; each property name is written to the strings block.
    fn raw_blob(pieces: &[Piece<'_>]) -> Vec<u8> {
        const HEADER: usize = 40;
        const RESERVATIONS: usize = 16;
        let mut structure = Vec::new();
        let mut strings = Vec::new();
        let word = |structure: &mut Vec<u8>, value: u32| {
            structure.extend_from_slice(&value.to_be_bytes());
        };
        let padded = |structure: &mut Vec<u8>, bytes: &[u8]| {
            structure.extend_from_slice(bytes);
            structure.resize(structure.len().next_multiple_of(4), 0);
        };
        for piece in pieces {
            match piece {
                Piece::Begin(name) => {
                    word(&mut structure, 1);
                    padded(&mut structure, &[name.as_bytes(), b"\0"].concat());
                }
                Piece::Prop(name, value) => {
                    word(&mut structure, 3);
                    word(&mut structure, value.len() as u32);
                    word(&mut structure, strings.len() as u32);
                    strings.extend_from_slice(name.as_bytes());
                    strings.push(0);
                    padded(&mut structure, value);
                }
                Piece::End => word(&mut structure, 2),
                Piece::Nop => word(&mut structure, 4),
                Piece::Finish => word(&mut structure, 9),
                Piece::Word(value) => word(&mut structure, *value),
            }
        }
        let off_struct = HEADER + RESERVATIONS;
        let off_strings = off_struct + structure.len();
        let total = off_strings + strings.len();
        let header = [
            0xd00d_feed,
            total,
            off_struct,
            off_strings,
            HEADER,
            17,
            16,
            0,
            strings.len(),
            structure.len(),
        ];
        let mut blob: Vec<u8> = header
            .iter()
            .flat_map(|&field| (field as u32).to_be_bytes())
            .collect();
        blob.resize(off_struct, 0);
        blob.extend_from_slice(&structure);
        blob.extend_from_slice(&strings);
        blob
    }

    fn parse(blob: &[u8]) -> Result<FirmwareTree<'_>, TreeError> {
        FirmwareTree::parse(0x4000_0000, Some(blob))
    }

    /// `reg = <0x40000000 0x10000000>` in two 2-cell numbers.
    const MEMORY_REG: [u8; 16] = [0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0];

    /// 5.4.2: any number of `FDT_NOP` tokens may come before each node, each
    /// property and each `FDT_END_NODE`; 5.4.1: they are ignored.
    #[test]
    fn nop_tokens_between_nodes_and_properties_are_ignored() {
        let blob = raw_blob(&[
            Piece::Nop,
            Piece::Begin(""),
            Piece::Nop,
            Piece::Prop("#size-cells", &2u32.to_be_bytes()),
            Piece::Nop,
            Piece::Nop,
            Piece::Begin("memory@40000000"),
            Piece::Nop,
            Piece::Prop("device_type", b"memory\0"),
            Piece::Nop,
            Piece::Prop("reg", &MEMORY_REG),
            Piece::Nop,
            Piece::End,
            Piece::Nop,
            Piece::Begin("chosen"),
            Piece::Prop("bootargs", b"console=ttyAMA0\0"),
            Piece::Nop,
            Piece::End,
            Piece::Nop,
            Piece::End,
            Piece::Nop,
            Piece::Finish,
        ]);
        let tree = parse(&blob).expect("parses");
        assert_eq!(
            tree.memory().expect("memory").as_slice(),
            [PhysRange::new(0x4000_0000, 0x1000_0000)]
        );
        assert_eq!(tree.bootargs(), Ok("console=ttyAMA0"));
        assert_eq!(tree.decodes(0x4000_0000), Ok(true));
    }

    /// 5.2: `totalsize` covers every block, so a blob shorter than it is cut off;
    /// 5.4.1: the structure block ends with `FDT_END`, so one that stops short of it
    /// is too.
    #[test]
    fn a_truncated_blob_is_malformed() {
        let blob = sample_tree();
        assert_eq!(
            parse(&blob[..blob.len() - 1]).err(),
            Some(TreeError::Malformed)
        );
        assert_eq!(parse(&blob[..20]).err(), Some(TreeError::Malformed));
        let no_end = raw_blob(&[Piece::Begin(""), Piece::Begin("chosen"), Piece::End]);
        assert_eq!(parse(&no_end).err(), Some(TreeError::Malformed));
        let unterminated_name = raw_blob(&[Piece::Word(1), Piece::Word(0x6162_6364)]);
        assert_eq!(parse(&unterminated_name).err(), Some(TreeError::Malformed));
    }

    /// 5.4.1: a property's `len` bytes of value lie in the structure block, and its
    /// `nameoff` points into the strings block (5.5), whose names end with a NUL.
    #[test]
    fn a_property_past_its_block_is_malformed() {
        const FDT_PROP: u32 = 3;
        let too_long = raw_blob(&[
            Piece::Begin(""),
            Piece::Prop("model", b"virt\0"),
            Piece::Word(FDT_PROP),
            Piece::Word(0x1000),
            Piece::Word(0),
            Piece::End,
            Piece::Finish,
        ]);
        assert_eq!(parse(&too_long).err(), Some(TreeError::Malformed));
        let name_past_strings = raw_blob(&[
            Piece::Begin(""),
            Piece::Prop("model", b"virt\0"),
            Piece::Word(FDT_PROP),
            Piece::Word(0),
            Piece::Word(6),
            Piece::End,
            Piece::Finish,
        ]);
        assert_eq!(parse(&name_past_strings).err(), Some(TreeError::Malformed));
        let mut unterminated_names = raw_blob(&[
            Piece::Begin(""),
            Piece::Prop("model", b"virt\0"),
            Piece::End,
            Piece::Finish,
        ]);
        let last = unterminated_names.len() - 1;
        unterminated_names[last] = b'x';
        assert_eq!(parse(&unterminated_names).err(), Some(TreeError::Malformed));
    }

    /// 5.4.1 defines five tokens; 5.4.2: one root node, each node's properties before
    /// its children.
    #[test]
    fn an_unknown_token_or_a_misplaced_piece_is_malformed() {
        let unknown = raw_blob(&[Piece::Begin(""), Piece::Word(5), Piece::End, Piece::Finish]);
        assert_eq!(parse(&unknown).err(), Some(TreeError::Malformed));
        let property_after_child = raw_blob(&[
            Piece::Begin(""),
            Piece::Begin("chosen"),
            Piece::End,
            Piece::Prop("model", b"virt\0"),
            Piece::End,
            Piece::Finish,
        ]);
        assert_eq!(
            parse(&property_after_child).err(),
            Some(TreeError::Malformed)
        );
        let two_roots = raw_blob(&[
            Piece::Begin(""),
            Piece::End,
            Piece::Begin(""),
            Piece::End,
            Piece::Finish,
        ]);
        assert_eq!(parse(&two_roots).err(), Some(TreeError::Malformed));
        let unbalanced = raw_blob(&[Piece::Begin(""), Piece::End, Piece::End, Piece::Finish]);
        assert_eq!(parse(&unbalanced).err(), Some(TreeError::Malformed));
    }

    /// Nesting deeper than the reader's fixed stack is refused, not overflowed.
    #[test]
    fn nodes_nested_too_deep_are_malformed() {
        let nested = |depth: usize| {
            let mut pieces = std::vec![Piece::Begin("")];
            pieces.extend((1..depth).map(|_| Piece::Begin("bus")));
            pieces.extend((0..depth).map(|_| Piece::End));
            pieces.push(Piece::Finish);
            raw_blob(&pieces)
        };
        assert!(parse(&nested(dtb::MAX_DEPTH)).is_ok());
        assert_eq!(
            parse(&nested(dtb::MAX_DEPTH + 1)).err(),
            Some(TreeError::Malformed)
        );
    }

    /// 2.3.6: `reg` is coded with the parent's `#address-cells` and `#size-cells`;
    /// 2.3.5: a client assumes 2 and 1 when they are absent.
    #[test]
    fn reg_takes_its_parents_cells_or_the_defaults() {
        let one_cell_each = raw_blob(&[
            Piece::Begin(""),
            Piece::Prop("#address-cells", &1u32.to_be_bytes()),
            Piece::Prop("#size-cells", &1u32.to_be_bytes()),
            Piece::Begin("memory@40000000"),
            Piece::Prop("device_type", b"memory\0"),
            Piece::Prop(
                "reg",
                &[0x40, 0, 0, 0, 0x10, 0, 0, 0, 0x60, 0, 0, 0, 0, 0x10, 0, 0],
            ),
            Piece::End,
            Piece::Begin("reserved-memory"),
            Piece::Prop("#address-cells", &1u32.to_be_bytes()),
            Piece::Prop("#size-cells", &1u32.to_be_bytes()),
            Piece::Prop("ranges", &[]),
            Piece::Begin("firmware@48000000"),
            Piece::Prop("reg", &[0x48, 0, 0, 0, 0, 0, 0x10, 0]),
            Piece::End,
            Piece::End,
            Piece::End,
            Piece::Finish,
        ]);
        let tree = parse(&one_cell_each).expect("parses");
        assert_eq!(
            tree.memory().expect("memory").as_slice(),
            [
                PhysRange::new(0x4000_0000, 0x1000_0000),
                PhysRange::new(0x6000_0000, 0x10_0000)
            ]
        );
        assert_eq!(
            tree.reserved_memory().expect("reserved").as_slice(),
            [PhysRange::new(0x4800_0000, 0x1000)]
        );
        assert_eq!(tree.decodes(0x4800_0fff), Ok(true));

        // No cells on the root: 2 address cells and 1 size cell.
        let default_cells = raw_blob(&[
            Piece::Begin(""),
            Piece::Begin("memory@100000000"),
            Piece::Prop("device_type", b"memory\0"),
            Piece::Prop("reg", &[0, 0, 0, 1, 0, 0, 0, 0, 0x20, 0, 0, 0]),
            Piece::End,
            Piece::End,
            Piece::Finish,
        ]);
        let tree = parse(&default_cells).expect("parses");
        assert_eq!(
            tree.memory().expect("memory").as_slice(),
            [PhysRange::new(0x1_0000_0000, 0x2000_0000)]
        );

        // 2 + 2 cells declared, a 2 + 1 cell entry given: not a whole entry.
        let mut cells = sample_tree();
        let value = [
            &0x4000_0000u64.to_be_bytes()[..],
            &0x4000_0000u64.to_be_bytes(),
        ]
        .concat();
        let position = cells
            .windows(value.len())
            .position(|window| window == value.as_slice())
            .expect("the first memory reg");
        // Shrink the `len` word before the value from 16 to 12 bytes, and nop out the
        // last cell's word.
        cells[position - 8..position - 4].copy_from_slice(&12u32.to_be_bytes());
        cells[position + 12..position + 16].copy_from_slice(&4u32.to_be_bytes());
        let tree = parse(&cells).expect("parses");
        assert_eq!(tree.memory(), Err(TreeError::Malformed));
    }

    /// `linux,initrd-start` and `linux,initrd-end` (Linux's `chosen` binding) are each
    /// a `<u32>` or a `<u64>`, big-endian (2.2.4); any other length is malformed.
    #[test]
    fn the_initrd_takes_32_or_64_bit_values() {
        let chosen = |start: &[u8], end: &[u8]| {
            raw_blob(&[
                Piece::Begin(""),
                Piece::Begin("chosen"),
                Piece::Prop("linux,initrd-start", start),
                Piece::Prop("linux,initrd-end", end),
                Piece::End,
                Piece::End,
                Piece::Finish,
            ])
        };
        let blob = chosen(&0x4800_0000u32.to_be_bytes(), &0x4810_0000u32.to_be_bytes());
        assert_eq!(
            parse(&blob).expect("parses").initrd(),
            Ok(Some(PhysRange::new(0x4800_0000, 0x10_0000)))
        );
        let blob = chosen(
            &0x1_4800_0000u64.to_be_bytes(),
            &0x1_4810_0000u64.to_be_bytes(),
        );
        assert_eq!(
            parse(&blob).expect("parses").initrd(),
            Ok(Some(PhysRange::new(0x1_4800_0000, 0x10_0000)))
        );
        let blob = chosen(&[0x48, 0, 0], &0x4810_0000u32.to_be_bytes());
        assert_eq!(
            parse(&blob).expect("parses").initrd(),
            Err(TreeError::Malformed)
        );
        // An empty range is no initrd.
        let blob = chosen(&0x4800_0000u32.to_be_bytes(), &0x4800_0000u32.to_be_bytes());
        assert_eq!(parse(&blob).expect("parses").initrd(), Ok(None));
    }

    /// A tree whose devices decode more separate ranges than `parse` keeps without
    /// a heap is walked again, onto the heap, by the first `decodes`.
    #[test]
    fn many_devices_spill_to_a_heap_walk() {
        let devices = decoded::MAX_DECODED as u64 + 8;
        let mut fdt = FdtWriter::new().expect("writer");
        let root = fdt.begin_node("").expect("root");
        fdt.property_u32("#address-cells", 2).expect("prop");
        fdt.property_u32("#size-cells", 2).expect("prop");
        for index in 0..devices {
            // 4 KiB apart, 256 bytes each: no two touch.
            let base = 0x1000_0000 + index * 0x1000;
            let node = fdt
                .begin_node(&std::format!("device@{base:x}"))
                .expect("node");
            fdt.property_array_u64("reg", &[base, 0x100]).expect("prop");
            fdt.end_node(node).expect("end");
        }
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");
        let tree = parse(&blob).expect("parses");
        assert!(matches!(tree.decoded, Decoded::Spilled(_)));
        let last = 0x1000_0000 + (devices - 1) * 0x1000;
        assert_eq!(tree.decodes(0x1000_0000), Ok(true));
        assert_eq!(tree.decodes(last + 0xff), Ok(true));
        assert_eq!(tree.decodes(last + 0x100), Ok(false));
        assert_eq!(tree.decodes(0x1000_0100), Ok(false));
    }

    /// A device's `reg` that is not a whole number of entries (2.3.6) spoils only
    /// `decodes`, not what the boot reads.
    #[test]
    fn a_bad_device_reg_spoils_only_decodes() {
        let blob = raw_blob(&[
            Piece::Begin(""),
            Piece::Prop("#size-cells", &2u32.to_be_bytes()),
            Piece::Begin("memory@40000000"),
            Piece::Prop("device_type", b"memory\0"),
            Piece::Prop("reg", &MEMORY_REG),
            Piece::End,
            Piece::Begin("serial@9000000"),
            Piece::Prop("reg", &[0, 0, 0, 0, 0x09, 0, 0, 0, 0, 0]),
            Piece::End,
            Piece::End,
            Piece::Finish,
        ]);
        let tree = parse(&blob).expect("parses");
        assert_eq!(
            tree.memory().expect("memory").as_slice(),
            [PhysRange::new(0x4000_0000, 0x1000_0000)]
        );
        assert_eq!(tree.decodes(0x4000_0000), Err(TreeError::Malformed));
    }
}
