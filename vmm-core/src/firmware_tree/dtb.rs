//! The flattened devicetree format (Devicetree Specification v0.4, chapter 5): the
//! header, the memory reservation block and the tokens of the structure block, read
//! front to back in one pass with bounds-checked slices.
//!
//! The structure block is read as native 32-bit words: the specification places it
//! at a 4-byte aligned address (5.6), and the boot reads the tree with the MMU off,
//! when an unaligned load faults, so each token is one aligned load, not four byte
//! loads.

use zerocopy::byteorder::big_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::TreeError;
use super::properties::{Name, NameCache};

/// How deep nodes may nest, the root counting as one. Real trees nest 5 or 6 deep;
/// the bound keeps every walk's per-level state in a fixed array.
pub(super) const MAX_DEPTH: usize = 16;

/// The header (5.2): ten big-endian 32-bit fields.
#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct Header {
    magic: U32,
    total_size: U32,
    off_dt_struct: U32,
    off_dt_strings: U32,
    off_mem_rsvmap: U32,
    version: U32,
    last_comp_version: U32,
    _boot_cpuid_phys: U32,
    size_dt_strings: U32,
    size_dt_struct: U32,
}

const _: () = assert!(size_of::<Header>() == 40);

/// `magic` (5.2).
const FDT_MAGIC: u32 = 0xd00d_feed;
/// The format version this reader knows (5.1): a blob is readable when its `version`
/// is at least this one and its `last_comp_version` at most this one.
const FDT_VERSION: u32 = 17;

/// One entry of the memory reservation block (5.3.2).
#[derive(FromBytes, KnownLayout, Immutable)]
#[repr(C)]
struct ReserveEntry {
    address: U64,
    size: U64,
}

const _: () = assert!(size_of::<ReserveEntry>() == 16);

// The structure block's tokens (5.4.1).
const FDT_BEGIN_NODE: u32 = 0x1;
const FDT_END_NODE: u32 = 0x2;
const FDT_PROP: u32 = 0x3;
const FDT_NOP: u32 = 0x4;
const FDT_END: u32 = 0x9;

/// A blob whose header checked out: where its blocks lie.
#[derive(Clone, Copy)]
pub(super) struct Dtb<'a> {
    /// The structure block, as native words.
    structure: &'a [u32],
    /// The strings block. Its last byte is a NUL, so every name in it ends inside it.
    strings: &'a [u8],
    /// From the memory reservation block to the end of the blob.
    reservations: &'a [u8],
}

impl<'a> Dtb<'a> {
    /// Checks the header of the blob `bytes` and locates its blocks: each must lie
    /// inside `totalsize`, the structure block at a 4-byte aligned address, and the
    /// strings block must end with a NUL.
    pub(super) fn new(bytes: &'a [u8]) -> Result<Dtb<'a>, TreeError> {
        let (header, _) = Header::read_from_prefix(bytes).map_err(|_| TreeError::Malformed)?;
        let readable =
            header.version.get() >= FDT_VERSION && header.last_comp_version.get() <= FDT_VERSION;
        if header.magic.get() != FDT_MAGIC || !readable {
            return Err(TreeError::Malformed);
        }
        let blob = bytes
            .get(..to_usize(header.total_size))
            .ok_or(TreeError::Malformed)?;
        let block = |offset: U32, size: U32| {
            let start = to_usize(offset);
            let end = start.checked_add(to_usize(size))?;
            blob.get(start..end)
        };
        let structure = block(header.off_dt_struct, header.size_dt_struct)
            .and_then(|block| <[u32]>::ref_from_bytes(block).ok())
            .ok_or(TreeError::Malformed)?;
        let strings = block(header.off_dt_strings, header.size_dt_strings)
            .filter(|strings| strings.last().is_none_or(|&last| last == 0))
            .ok_or(TreeError::Malformed)?;
        let reservations = blob
            .get(to_usize(header.off_mem_rsvmap)..)
            .ok_or(TreeError::Malformed)?;
        Ok(Dtb {
            structure,
            strings,
            reservations,
        })
    }

    /// The memory reservation block's entries (5.3.2), as (address, size) pairs, up
    /// to the (0, 0) entry that ends the list; a list that runs past the blob is
    /// malformed.
    pub(super) fn reservations(&self) -> impl Iterator<Item = Result<(u64, u64), TreeError>> + 'a {
        let mut rest = Some(self.reservations);
        core::iter::from_fn(move || {
            let Ok((entry, after)) = ReserveEntry::read_from_prefix(rest?) else {
                rest = None;
                return Some(Err(TreeError::Malformed));
            };
            rest = Some(after);
            let entry = (entry.address.get(), entry.size.get());
            if entry == (0, 0) {
                rest = None;
                return None;
            }
            Some(Ok(entry))
        })
    }

    /// Walks the structure block once, front to back, telling `visitor` about each
    /// node, and about the properties the hypervisor reads ([`Name`]) of the nodes
    /// it asks for, and checks the block's shape (5.4.2): one root node; in each
    /// node its properties, then its children; no more than [`MAX_DEPTH`] levels;
    /// `FDT_END` after the root. `FDT_NOP` tokens are skipped (5.4.1).
    pub(super) fn walk(&self, visitor: &mut impl Visitor<'a>) -> Result<(), TreeError> {
        let mut cursor = Cursor {
            structure: self.structure,
            strings: self.strings,
            next: 0,
        };
        let mut names = NameCache::new();
        // Nodes begun and not yet ended.
        let mut open = 0;
        let mut next_property = NextProperty::Forbidden;
        let mut root_ended = false;
        loop {
            match cursor.next_token()? {
                Token::BeginNode(name) => {
                    if root_ended || open == MAX_DEPTH {
                        return Err(TreeError::Malformed);
                    }
                    if next_property != NextProperty::Forbidden {
                        visitor.properties_end(open - 1, true);
                    }
                    next_property = if visitor.begin_node(open, name) {
                        NextProperty::Reported
                    } else {
                        NextProperty::Skipped
                    };
                    open += 1;
                }
                Token::Property(property) => match next_property {
                    NextProperty::Reported => {
                        if let Some(name) = names.name(&property) {
                            visitor.property(name, property.value);
                        }
                    }
                    NextProperty::Skipped => {}
                    NextProperty::Forbidden => return Err(TreeError::Malformed),
                },
                Token::Nop => {}
                Token::EndNode => {
                    open = open.checked_sub(1).ok_or(TreeError::Malformed)?;
                    if next_property != NextProperty::Forbidden {
                        visitor.properties_end(open, false);
                    }
                    next_property = NextProperty::Forbidden;
                    root_ended = open == 0;
                }
                Token::End if root_ended => return Ok(()),
                Token::End => return Err(TreeError::Malformed),
            }
        }
    }
}

/// What a walk does with a property that comes next.
#[derive(Clone, Copy, PartialEq, Eq)]
enum NextProperty {
    /// Reports it: the innermost open node began last, and the visitor asked.
    Reported,
    /// Skips it: the innermost open node began last, and the visitor did not ask.
    Skipped,
    /// None may come: before the root, or once a child of the innermost open node
    /// ended, its properties are over (5.4.2).
    Forbidden,
}

/// What one walk of the structure block reports, node by node in tree order.
/// `depth` is the number of open nodes around the node: 0 for the root, always below
/// [`MAX_DEPTH`]. What the visitor makes of the values is its own business: the walk
/// fails only on the blob's structure.
pub(super) trait Visitor<'a> {
    /// A node begins; `name` is its unit name, without the NUL. Returns whether to
    /// report the node's properties.
    fn begin_node(&mut self, depth: usize, name: &'a [u8]) -> bool;
    /// A property the hypervisor reads, of the node that began last, if its
    /// `begin_node` asked.
    fn property(&mut self, name: Name, value: &'a [u8]);
    /// The properties of the node at `depth` are over: they all come before its
    /// first child (5.4.2), which begins next if `has_children`; otherwise the node
    /// ends.
    fn properties_end(&mut self, depth: usize, has_children: bool);
}

/// One property as the structure block holds it (5.4.1, `FDT_PROP`).
#[derive(Clone, Copy)]
pub(super) struct Property<'a> {
    /// Where the name lies in the strings block (`nameoff`).
    pub name_offset: u32,
    /// The strings block from the property's name on: the name, its NUL, then
    /// whatever names follow.
    names: &'a [u8],
    /// The value, `len` bytes.
    pub value: &'a [u8],
}

impl Property<'_> {
    /// Whether the property is called `name`.
    pub(super) fn is(&self, name: &[u8]) -> bool {
        // Byte by byte: names mostly differ early, which a call to `memcmp` costs
        // more to find out.
        let same_start = name.iter().zip(self.names).all(|(a, b)| a == b);
        same_start && self.names.get(name.len()) == Some(&0)
    }

    /// The first byte of the name (the NUL of an empty name).
    pub(super) fn initial(&self) -> u8 {
        self.names.first().copied().unwrap_or_default()
    }
}

/// One token of the structure block, with its data.
enum Token<'a> {
    /// `FDT_BEGIN_NODE` and the node's unit name, without the NUL.
    BeginNode(&'a [u8]),
    /// `FDT_PROP`.
    Property(Property<'a>),
    /// `FDT_NOP`.
    Nop,
    /// `FDT_END_NODE`.
    EndNode,
    /// `FDT_END`.
    End,
}

/// Reads the structure block's tokens in order.
struct Cursor<'a> {
    structure: &'a [u32],
    strings: &'a [u8],
    /// The index of the next word to read.
    next: usize,
}

// The walk's inner loop: inlined, so a token stays in registers.
impl<'a> Cursor<'a> {
    /// The next token; one that is none of the five, or a block that ends before
    /// `FDT_END`, is malformed.
    #[inline(always)]
    fn next_token(&mut self) -> Result<Token<'a>, TreeError> {
        let token = self.word(self.next)?;
        self.next += 1;
        // Most tokens are properties: one comparison for them.
        if token == FDT_PROP {
            return self.property().map(Token::Property);
        }
        match token {
            FDT_BEGIN_NODE => self.node_name().map(Token::BeginNode),
            FDT_END_NODE => Ok(Token::EndNode),
            FDT_NOP => Ok(Token::Nop),
            FDT_END => Ok(Token::End),
            _ => Err(TreeError::Malformed),
        }
    }

    /// The big-endian word at `index`.
    #[inline(always)]
    fn word(&self, index: usize) -> Result<u32, TreeError> {
        let word = self.structure.get(index).ok_or(TreeError::Malformed)?;
        Ok(u32::from_be(*word))
    }

    /// The NUL-terminated name after `FDT_BEGIN_NODE`; moves past it and its padding
    /// to the next 4-byte boundary. Looks for the NUL a word at a time.
    #[inline(always)]
    fn node_name(&mut self) -> Result<&'a [u8], TreeError> {
        let start = self.next * 4;
        loop {
            let word = *self.structure.get(self.next).ok_or(TreeError::Malformed)?;
            self.next += 1;
            // The word with its first byte in memory lowest: then the lowest flagged
            // byte is the first NUL (a flag above a NUL may be a false one).
            let in_memory_order = u32::from_le(word);
            let zero_bytes =
                in_memory_order.wrapping_sub(0x0101_0101) & !in_memory_order & 0x8080_8080;
            if zero_bytes != 0 {
                let nul = (self.next - 1) * 4 + zero_bytes.trailing_zeros() as usize / 8;
                return self
                    .structure
                    .as_bytes()
                    .get(start..nul)
                    .ok_or(TreeError::Malformed);
            }
        }
    }

    /// The `len`, `nameoff` and value after `FDT_PROP`; moves past the value and its
    /// padding. A value past the block, or a name offset past the strings block, is
    /// malformed.
    #[inline(always)]
    fn property(&mut self) -> Result<Property<'a>, TreeError> {
        let (Some(&len), Some(&name_offset)) = (
            self.structure.get(self.next),
            self.structure.get(self.next + 1),
        ) else {
            return Err(TreeError::Malformed);
        };
        let (len, name_offset) = (u32::from_be(len) as usize, u32::from_be(name_offset));
        let start = (self.next + 2) * 4;
        let end = start.checked_add(len).ok_or(TreeError::Malformed)?;
        let value = self
            .structure
            .as_bytes()
            .get(start..end)
            .ok_or(TreeError::Malformed)?;
        let names = self
            .strings
            .get(name_offset as usize..)
            .filter(|names| !names.is_empty())
            .ok_or(TreeError::Malformed)?;
        self.next = end.div_ceil(4);
        Ok(Property {
            name_offset,
            names,
            value,
        })
    }
}

/// A header field as an offset or size.
fn to_usize(field: U32) -> usize {
    field.get() as usize
}
