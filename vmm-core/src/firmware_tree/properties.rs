//! The properties the hypervisor reads, and how their values are coded
//! (Devicetree Specification v0.4, 2.2.4 and 2.3).

use zerocopy::FromBytes;

use super::TreeError;

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

    /// The name that starts `names`, a tail of the strings block (5.5), if the
    /// hypervisor reads it. Picks the one candidate by the first bytes, which rule
    /// out most names.
    #[inline(always)]
    fn of(names: &[u8]) -> Option<Name> {
        match *names.first()? {
            b'#' => match names.get(1)? {
                b'a' => is(names, b"#address-cells\0", Name::AddressCells),
                b's' => is(names, b"#size-cells\0", Name::SizeCells),
                _ => None,
            },
            b'b' => is(names, b"bootargs\0", Name::Bootargs),
            // Many names start with a `c` or an `l` (`compatible`, `clocks`, `cpu`,
            // `label`, `linux,code`), and the candidates are long (a compare of 17
            // bytes or more is a call): another byte rules most out first.
            b'c' => match names.get(3)? {
                b'-' => is(names, b"cpu-release-addr\0", Name::CpuReleaseAddr),
                _ => None,
            },
            b'd' => is(names, b"device_type\0", Name::DeviceType),
            b'e' => is(names, b"enable-method\0", Name::EnableMethod),
            b'l' if names.get(6) != Some(&b'i') => None,
            b'l' => match names.get(13)? {
                b's' => is(names, b"linux,initrd-start\0", Name::InitrdStart),
                _ => is(names, b"linux,initrd-end\0", Name::InitrdEnd),
            },
            b'm' => is(names, b"method\0", Name::Method),
            b'r' => match names.get(1)? {
                b'e' => is(names, b"reg\0", Name::Reg),
                _ => is(names, b"ranges\0", Name::Ranges),
            },
            _ => None,
        }
    }
}

/// `name` if `names` starts with `text` (a name and its NUL).
#[inline(always)]
fn is<const N: usize>(names: &[u8], text: &[u8; N], name: Name) -> Option<Name> {
    (names.first_chunk::<N>() == Some(text)).then_some(name)
}

/// Whether `a` and `b` hold the same bytes: compared one by one, which for the short
/// names and strings the reader compares is shorter than a call to `memcmp`.
#[inline(always)]
pub(super) fn same_bytes(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a == b)
}

/// How many names [`NameCache`] remembers at once.
const NAME_SLOTS: usize = 256;

/// The slot of [`NameCache`] for the big-endian `nameoff` word `stored_offset`: the
/// offset's low byte, which is the word's last in memory.
#[inline(always)]
fn slot(stored_offset: u32) -> usize {
    const _: () = assert!(NAME_SLOTS == 256);
    let [.., low] = stored_offset.to_ne_bytes();
    usize::from(low)
}

/// Remembers which [`Name`], if any, the name at each offset of the strings block
/// is. Tools write each name into the strings block once and point every property
/// of that name at it (dtc and libfdt do), so a tree of hundreds of properties has a
/// few dozen names: each is checked and compared with the known ones once, then
/// found by its offset. A name written twice is only compared twice.
pub(super) struct NameCache {
    /// The `nameoff` word, as the block holds it (big-endian), whose name slot
    /// `nameoff % NAME_SLOTS` (see [`slot`]) remembers: always one that lies in the
    /// strings block, so a word found here needs no check. An empty slot holds a
    /// word that does not map to it, which no word read from the blob matches.
    offsets: [u32; NAME_SLOTS],
    names: [Option<Name>; NAME_SLOTS],
}

impl NameCache {
    /// A cache that remembers no name yet.
    pub(super) fn new() -> NameCache {
        // `u32::MAX` maps to the last slot, so that slot holds 0 instead.
        let mut offsets = [u32::MAX; NAME_SLOTS];
        offsets[NAME_SLOTS - 1] = 0;
        NameCache {
            offsets,
            names: [None; NAME_SLOTS],
        }
    }

    /// The name whose offset in the `strings` block is the big-endian `nameoff`
    /// word `stored_offset`, if the hypervisor reads it; an offset past the block is
    /// malformed.
    #[inline(always)]
    pub(super) fn name(
        &mut self,
        stored_offset: u32,
        strings: &[u8],
    ) -> Result<Option<Name>, TreeError> {
        let slot = slot(stored_offset);
        if self.offsets[slot] == stored_offset {
            return Ok(self.names[slot]);
        }
        let names = strings
            .get(u32::from_be(stored_offset) as usize..)
            .filter(|names| !names.is_empty())
            .ok_or(TreeError::Malformed)?;
        Ok(self.learn(stored_offset, names))
    }

    /// Compares `names`, the strings block from the name at `stored_offset` on, with
    /// the known ones, and remembers what it is.
    #[inline(always)]
    fn learn(&mut self, stored_offset: u32, names: &[u8]) -> Option<Name> {
        let name = Name::of(names);
        let slot = slot(stored_offset);
        self.offsets[slot] = stored_offset;
        self.names[slot] = name;
        name
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
    #[inline(always)]
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

    /// Whether the node has a property called `name`.
    #[inline(always)]
    pub(super) fn has(&self, name: Name) -> bool {
        self.present & 1 << name as u16 != 0
    }

    /// The raw value of `name`.
    #[inline(always)]
    pub(super) fn get(&self, name: Name) -> Option<&'a [u8]> {
        self.has(name).then_some(self.values[name as usize])
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

    /// Whether `name` is the string `text`, as [`Properties::string`] reads it (so a
    /// value that is not UTF-8 is malformed); compared as bytes first, since the
    /// strings the hypervisor looks for are ASCII.
    pub(super) fn string_is(&self, name: Name, text: &str) -> Result<bool, TreeError> {
        let Some(value) = self.get(name) else {
            return Ok(false);
        };
        let mut unpadded = value;
        while let [rest @ .., 0] = unpadded {
            unpadded = rest;
        }
        if same_bytes(unpadded, text.as_bytes()) {
            return Ok(true);
        }
        core::str::from_utf8(value).map_err(|_| TreeError::Malformed)?;
        Ok(false)
    }

    /// `name` as a `<u32>` or `<u64>` (2.2.4): one or two cells.
    pub(super) fn integer(&self, name: Name) -> Result<Option<u64>, TreeError> {
        let Some(value) = self.get(name) else {
            return Ok(None);
        };
        match cells(value) {
            Some(one_or_two @ ([_] | [_, _])) => Ok(number(one_or_two)),
            _ => Err(TreeError::Malformed),
        }
    }
}

/// A node's `#address-cells` and `#size-cells` (2.3.5): how many 32-bit cells the
/// addresses and sizes in its children's `reg` take.
#[derive(Clone, Copy)]
pub(super) struct Cells {
    /// `#address-cells`.
    pub address: u32,
    /// `#size-cells`.
    pub size: u32,
}

impl Cells {
    /// What a client assumes when a node declares neither (2.3.5).
    pub(super) const DEFAULT: Cells = Cells {
        address: 2,
        size: 1,
    };

    /// The cells a node with `properties` declares. Each is one `<u32>`; an absent one
    /// takes the value the specification tells a client to assume (2 and 1). `None`
    /// if one is not a `<u32>`.
    #[inline(always)]
    pub(super) fn of(properties: &Properties<'_>) -> Option<Cells> {
        let count = |name, default| match properties.get(name) {
            None => Some(default),
            Some(value) => match cells(value)? {
                &[count] => Some(u32::from_be(count)),
                _ => None,
            },
        };
        Some(Cells {
            address: count(Name::AddressCells, Cells::DEFAULT.address)?,
            size: count(Name::SizeCells, Cells::DEFAULT.size)?,
        })
    }
}

/// `value` as the 32-bit big-endian cells it holds (2.2.4), read as native words:
/// every value starts 4-byte aligned in the structure block (5.4.1). `None` if it
/// is not a whole number of cells.
#[inline(always)]
pub(super) fn cells(value: &[u8]) -> Option<&[u32]> {
    <[u32]>::ref_from_bytes(value).ok()
}

/// `value` cut to the whole cells it holds.
#[inline(always)]
fn whole_cells(value: &[u8]) -> &[u32] {
    let whole = value.get(..value.len() & !3).unwrap_or_default();
    cells(whole).unwrap_or_default()
}

/// The (address, size) entries of a `reg` value (2.3.6), coded with its parent's
/// `cells`; an entry whose address or size does not fit 64 bits is `None`. `None`
/// if the value is not a whole number of entries (malformed).
#[inline(always)]
pub(super) fn reg_entries(value: &[u8], cells_of_parent: Cells) -> Option<RegEntries<'_>> {
    let address_cells = cells_of_parent.address as usize;
    let entry_cells = address_cells + cells_of_parent.size as usize;
    let entries = cells(value)?;
    if entry_cells == 0 || !entries.len().is_multiple_of(entry_cells) {
        return None;
    }
    Some(RegEntries {
        rest: entries,
        address_cells,
        entry_cells,
    })
}

/// The entries of a `reg` value: see [`reg_entries`].
pub(super) struct RegEntries<'a> {
    /// The entries not read yet.
    rest: &'a [u32],
    address_cells: usize,
    entry_cells: usize,
}

impl Iterator for RegEntries<'_> {
    type Item = Option<(u64, u64)>;

    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let (entry, rest) = self.rest.split_at_checked(self.entry_cells)?;
        self.rest = rest;
        let (address, size) = entry.split_at_checked(self.address_cells)?;
        Some(number(address).zip(number(size)))
    }
}

/// How a bus's `ranges` is coded (2.3.8): child addresses with the bus's own
/// `#address-cells`, parent addresses with its parent's, lengths with the bus's own
/// `#size-cells`.
#[derive(Clone, Copy)]
pub(super) struct WindowCells {
    /// Cells of a child bus address.
    pub child: u32,
    /// Cells of a parent bus address.
    pub parent: u32,
    /// Cells of a length.
    pub size: u32,
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
    let child_cells = cells.child as usize;
    let parent_cells = cells.parent as usize;
    let entry_cells = child_cells + parent_cells + cells.size as usize;
    let entries = if entry_cells == 0 {
        &[][..]
    } else {
        whole_cells(value)
    };
    entries
        .chunks_exact(entry_cells.max(1))
        .filter_map(move |entry| {
            let (child, rest) = entry.split_at(child_cells);
            let (parent, len) = rest.split_at(parent_cells);
            Some(Window {
                child: wide_number(child)?,
                parent: number(parent)?,
                len: number(len)?,
            })
        })
}

/// [`wide_number`] if it fits 64 bits; the common counts of cells take a short cut.
#[inline(always)]
fn number(cells: &[u32]) -> Option<u64> {
    match *cells {
        [high, low] => Some(u64::from(u32::from_be(high)) << 32 | u64::from(u32::from_be(low))),
        [low] => Some(u64::from(u32::from_be(low))),
        _ => u64::try_from(wide_number(cells)?).ok(),
    }
}

/// The big-endian number the 32-bit `cells` spell (2.2.4 `<prop-encoded-array>`), if
/// it fits 128 bits.
fn wide_number(cells: &[u32]) -> Option<u128> {
    cells.iter().try_fold(0u128, |value, &cell| {
        let room_for_a_cell = value >> (u128::BITS - u32::BITS) == 0;
        room_for_a_cell.then(|| value << u32::BITS | u128::from(u32::from_be(cell)))
    })
}
