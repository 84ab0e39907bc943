//! The properties the hypervisor reads, and how their values are coded
//! (Devicetree Specification v0.4, 2.2.4 and 2.3).

use core::slice::ChunksExact;

use super::TreeError;
use super::dtb::Property;

/// A property the hypervisor reads.
#[derive(Clone, Copy)]
#[repr(u8)]
pub(super) enum Name {
    /// `#address-cells` (2.3.5).
    AddressCells,
    /// `#size-cells` (2.3.5).
    SizeCells,
    /// `reg` (2.3.6).
    Reg,
    /// `ranges` (2.3.8).
    Ranges,
    /// `device_type` (2.3.13; still required of `memory` and `cpu` nodes, 3.4 and 3.8).
    DeviceType,
    /// `bootargs` of `/chosen` (3.6).
    Bootargs,
    /// `linux,initrd-start` of `/chosen` (Linux's `chosen` binding).
    InitrdStart,
    /// `linux,initrd-end` of `/chosen`.
    InitrdEnd,
    /// `method` of `/psci` (Linux's PSCI binding).
    Method,
    /// `enable-method` of a CPU (3.8.1).
    EnableMethod,
    /// `cpu-release-addr` of a CPU (3.8.1).
    CpuReleaseAddr,
}

impl Name {
    const COUNT: usize = Name::CpuReleaseAddr as usize + 1;

    /// The name `property` has, if the hypervisor reads it. Picks the candidates by the
    /// first byte, so most properties cost one comparison.
    #[inline(never)]
    fn of(property: &Property<'_>) -> Option<Name> {
        let candidates: &[(&[u8], Name)] = match property.initial() {
            b'#' => &[
                (b"#address-cells", Name::AddressCells),
                (b"#size-cells", Name::SizeCells),
            ],
            b'b' => &[(b"bootargs", Name::Bootargs)],
            b'c' => &[(b"cpu-release-addr", Name::CpuReleaseAddr)],
            b'd' => &[(b"device_type", Name::DeviceType)],
            b'e' => &[(b"enable-method", Name::EnableMethod)],
            b'l' => &[
                (b"linux,initrd-start", Name::InitrdStart),
                (b"linux,initrd-end", Name::InitrdEnd),
            ],
            b'm' => &[(b"method", Name::Method)],
            b'r' => &[(b"reg", Name::Reg), (b"ranges", Name::Ranges)],
            _ => return None,
        };
        let (_, name) = candidates.iter().find(|(text, _)| property.is(text))?;
        Some(*name)
    }
}

/// How many names [`NameCache`] remembers at once.
const NAME_SLOTS: usize = 128;

/// Remembers which [`Name`], if any, the name at each offset of the strings block
/// is. Tools write each name into the strings block once and point every property
/// of that name at it (dtc and libfdt do), so a tree of hundreds of properties has a
/// few dozen names: each is compared with the known ones once, then found by its
/// offset. A name written twice is only compared twice.
pub(super) struct NameCache {
    /// The offset whose name slot `offset % NAME_SLOTS` remembers (`u32::MAX`, past
    /// any strings block: none yet).
    offsets: [u32; NAME_SLOTS],
    names: [Option<Name>; NAME_SLOTS],
}

impl NameCache {
    /// A cache that remembers no name yet.
    pub(super) fn new() -> NameCache {
        NameCache {
            offsets: [u32::MAX; NAME_SLOTS],
            names: [None; NAME_SLOTS],
        }
    }

    /// The name `property` has, if the hypervisor reads it.
    #[inline(always)]
    pub(super) fn name(&mut self, property: &Property<'_>) -> Option<Name> {
        let slot = property.name_offset as usize % NAME_SLOTS;
        if self.offsets[slot] != property.name_offset {
            self.offsets[slot] = property.name_offset;
            self.names[slot] = Name::of(property);
        }
        self.names[slot]
    }
}

/// The values of one node's properties that the hypervisor reads: the first of each
/// name, as a lookup by name finds.
#[derive(Clone, Copy, Default)]
pub(super) struct Properties<'a> {
    /// Bit `name as usize` is set when `values` holds that name's value; the other
    /// values are left from an earlier node.
    present: u16,
    values: [&'a [u8]; Name::COUNT],
}

impl<'a> Properties<'a> {
    /// Forgets every value, for the next node.
    pub(super) fn clear(&mut self) {
        self.present = 0;
    }

    /// Keeps `value` as `name`'s, unless the node had a property of that name before.
    #[inline(always)]
    pub(super) fn record(&mut self, name: Name, value: &'a [u8]) {
        let bit = 1 << name as u16;
        if self.present & bit == 0 {
            self.present |= bit;
            self.values[name as usize] = value;
        }
    }

    /// The raw value of `name`.
    pub(super) fn get(&self, name: Name) -> Option<&'a [u8]> {
        let bit = 1 << name as u16;
        (self.present & bit != 0).then_some(self.values[name as usize])
    }

    /// `name` as a string (2.2.4 `<string>`): its bytes must be UTF-8; the NULs that
    /// end it are cut.
    pub(super) fn string(&self, name: Name) -> Result<Option<&'a str>, TreeError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let text = core::str::from_utf8(value).map_err(|_| TreeError::Malformed)?;
        Ok(Some(text.trim_end_matches('\0')))
    }

    /// `name` as a `<u32>` or `<u64>` (2.2.4): one or two cells.
    pub(super) fn integer(&self, name: Name) -> Result<Option<u64>, TreeError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        let integer = match *value {
            [a, b, c, d] => u64::from(u32::from_be_bytes([a, b, c, d])),
            [a, b, c, d, e, f, g, h] => u64::from_be_bytes([a, b, c, d, e, f, g, h]),
            _ => return Err(TreeError::Malformed),
        };
        Ok(Some(integer))
    }
}

/// A node's `#address-cells` and `#size-cells` (2.3.5): how many 32-bit cells the
/// addresses and sizes in its children's `reg` take.
#[derive(Clone, Copy)]
pub(super) struct Cells {
    /// `#address-cells`.
    pub address: usize,
    /// `#size-cells`.
    pub size: usize,
}

impl Cells {
    /// The cells a node with `properties` declares. Each is one `<u32>`; an absent one
    /// takes the value the specification tells a client to assume (2 and 1).
    pub(super) fn of(properties: &Properties<'_>) -> Result<Cells, TreeError> {
        let count = |name, default| match properties.get(name) {
            None => Ok(default),
            Some(&[a, b, c, d]) => Ok(u32::from_be_bytes([a, b, c, d]) as usize),
            Some(_) => Err(TreeError::Malformed),
        };
        Ok(Cells {
            address: count(Name::AddressCells, 2)?,
            size: count(Name::SizeCells, 1)?,
        })
    }
}

/// The (address, size) entries of a `reg` value (2.3.6), coded with its parent's
/// `cells`; an entry whose address or size does not fit 64 bits is `None`. A value
/// that is not a whole number of entries is malformed.
pub(super) fn reg_entries(value: &[u8], cells: Cells) -> Result<RegEntries<'_>, TreeError> {
    let address_bytes = cell_bytes(cells.address);
    let entry_bytes = address_bytes.saturating_add(cell_bytes(cells.size));
    if entry_bytes == 0 || !value.len().is_multiple_of(entry_bytes) {
        return Err(TreeError::Malformed);
    }
    Ok(RegEntries {
        entries: value.chunks_exact(entry_bytes),
        address_bytes,
    })
}

/// The entries of a `reg` value: see [`reg_entries`].
pub(super) struct RegEntries<'a> {
    entries: ChunksExact<'a, u8>,
    address_bytes: usize,
}

impl Iterator for RegEntries<'_> {
    type Item = Option<(u64, u64)>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let (address, size) = self.entries.next()?.split_at(self.address_bytes);
        Some(cells_u64(address).zip(cells_u64(size)))
    }
}

/// How a bus's `ranges` is coded (2.3.8): child addresses with the bus's own
/// `#address-cells`, parent addresses with its parent's, lengths with the bus's own
/// `#size-cells`.
#[derive(Clone, Copy)]
pub(super) struct WindowCells {
    /// Cells of a child bus address.
    pub child: usize,
    /// Cells of a parent bus address.
    pub parent: usize,
    /// Cells of a length.
    pub size: usize,
}

/// One `ranges` entry: `len` bytes at `child` on the bus are at `parent` on the
/// bus's parent.
#[derive(Clone, Copy)]
pub(super) struct Window {
    /// The child bus address (up to four cells: a PCI address takes three).
    pub child: u128,
    /// The parent bus address.
    pub parent: u64,
    /// The length.
    pub len: u64,
}

/// The windows of a non-empty `ranges` value (2.3.8). Entries whose numbers do not
/// fit their types are left out, and so are bytes short of a whole entry.
pub(super) fn windows(value: &[u8], cells: WindowCells) -> impl Iterator<Item = Window> + '_ {
    let child_bytes = cell_bytes(cells.child);
    let parent_bytes = cell_bytes(cells.parent);
    let entry_bytes = child_bytes
        .saturating_add(parent_bytes)
        .saturating_add(cell_bytes(cells.size));
    let entries = if entry_bytes == 0 { &[][..] } else { value };
    entries
        .chunks_exact(entry_bytes.max(1))
        .filter_map(move |entry| {
            let (child, rest) = entry.split_at(child_bytes);
            let (parent, len) = rest.split_at(parent_bytes);
            Some(Window {
                child: cells_value(child)?,
                parent: cells_u64(parent)?,
                len: cells_u64(len)?,
            })
        })
}

/// The bytes `count` cells take.
fn cell_bytes(count: usize) -> usize {
    count.saturating_mul(4)
}

/// [`cells_value`] if it fits 64 bits; the common counts of cells take a short cut.
#[inline(always)]
fn cells_u64(cells: &[u8]) -> Option<u64> {
    match *cells {
        [a, b, c, d, e, f, g, h] => Some(u64::from_be_bytes([a, b, c, d, e, f, g, h])),
        [a, b, c, d] => Some(u64::from(u32::from_be_bytes([a, b, c, d]))),
        _ => u64::try_from(cells_value(cells)?).ok(),
    }
}

/// The big-endian number the 32-bit cells in `cells` spell (2.2.4
/// `<prop-encoded-array>`), if it fits 128 bits.
fn cells_value(cells: &[u8]) -> Option<u128> {
    cells.chunks_exact(4).try_fold(0u128, |value, cell| {
        let cell = u32::from_be_bytes(cell.try_into().ok()?);
        let room_for_a_cell = value >> (u128::BITS - u32::BITS) == 0;
        room_for_a_cell.then(|| value << u32::BITS | u128::from(cell))
    })
}
