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

    /// Walks the structure block once, front to back, telling `visitor` about the
    /// properties the hypervisor reads ([`Name`]) of each node, and then that the
    /// node's properties are over; checks the block's shape (5.4.2): one root node;
    /// in each node its properties, then its children; no more than [`MAX_DEPTH`]
    /// levels; `FDT_END` after the root. `FDT_NOP` tokens are skipped (5.4.1).
    ///
    /// Never inlined: its loops keep the cursor in registers only in a function of
    /// their own.
    #[inline(never)]
    pub(super) fn walk(&self, visitor: &mut impl Visitor<'a>) -> Result<(), TreeError> {
        let mut cursor = Cursor {
            structure: self.structure,
            next: 0,
        };
        let mut names = NameCache::new();
        // Nodes begun and not yet ended.
        let mut open = 0;
        // The token in hand: a node's properties end at the first token that is
        // neither `FDT_PROP` nor `FDT_NOP`, which is then handled here.
        let mut token = cursor.token_after_nops()?;
        while token == FDT_BEGIN_NODE {
            if open == MAX_DEPTH {
                return Err(TreeError::Malformed);
            }
            let name = cursor.node_name()?;
            token = cursor.properties(self.strings, &mut names, visitor)?;
            visitor.properties_end(open, name, token == FDT_BEGIN_NODE);
            open += 1;
            // The nodes that end before the next begins; the root's end is the last.
            while token == FDT_END_NODE {
                open -= 1;
                if open == 0 {
                    return cursor.finish();
                }
                token = cursor.token_after_nops()?;
            }
        }
        // A property once a child ended (or before the root), `FDT_END` with nodes
        // open, or no token at all.
        Err(TreeError::Malformed)
    }
}

/// What one walk of the structure block reports, node by node in tree order. What
/// the visitor makes of the values is its own business: the walk fails only on the
/// blob's structure.
pub(super) trait Visitor<'a> {
    /// A property the hypervisor reads, of the node whose properties are being read.
    /// Its value starts 4-byte aligned (5.4.1).
    fn property(&mut self, name: Name, value: &'a [u8]);
    /// The properties of a node are over. `depth` is the number of open nodes around
    /// it: 0 for the root, always below [`MAX_DEPTH`]; `name` is its unit name, up
    /// to its NUL and padding (5.4.1): the name ends at the first NUL in it. Its
    /// properties all come before its first child (5.4.2), which begins next if
    /// `has_children`; otherwise the node ends.
    fn properties_end(&mut self, depth: usize, name: &'a [u8], has_children: bool);
}

/// A token as the structure block holds it, big-endian: compared so, the walk does
/// not swap the bytes of every word it reads.
const fn stored(token: u32) -> u32 {
    token.to_be()
}

/// The words a property's value of `len` bytes takes, with its padding (5.4.1).
#[inline(always)]
fn padded_words(len: u32) -> usize {
    // At most 2^30: no sum of it and an index overflows.
    u64::from(len).div_ceil(4) as usize
}

/// Whether one of the bytes of `word` is NUL: the word-at-a-time test, which sets the
/// top bit of each NUL byte (and maybe of bytes above the first), and of none if
/// there is no NUL.
#[inline(always)]
fn has_a_nul(word: u32) -> bool {
    word.wrapping_sub(0x0101_0101) & !word & 0x8080_8080 != 0
}

/// Reads the structure block's words in order.
struct Cursor<'a> {
    structure: &'a [u32],
    /// The index of the next word to read. A property's value moves it on without a
    /// check, at most 2^30 words past the block: the next read fails there.
    next: usize,
}

// The walk's inner loops: inlined, so the cursor stays in registers.
impl<'a> Cursor<'a> {
    /// The next token (5.4.1); a block that ends before `FDT_END` is malformed.
    #[inline(always)]
    fn token(&mut self) -> Result<u32, TreeError> {
        let word = self.structure.get(self.next).ok_or(TreeError::Malformed)?;
        self.next += 1;
        Ok(u32::from_be(*word))
    }

    /// The next token that is not `FDT_NOP` (5.4.1).
    #[inline(always)]
    fn token_after_nops(&mut self) -> Result<u32, TreeError> {
        loop {
            let token = self.token()?;
            if token != FDT_NOP {
                return Ok(token);
            }
        }
    }

    /// The NUL-terminated name after `FDT_BEGIN_NODE`, with its NUL and the padding
    /// to the next 4-byte boundary; moves past them. Looks for the NUL a word at a
    /// time.
    #[inline(always)]
    fn node_name(&mut self) -> Result<&'a [u8], TreeError> {
        let words = self.structure.get(self.next..).unwrap_or_default();
        let last = words
            .iter()
            .position(|&word| has_a_nul(word))
            .ok_or(TreeError::Malformed)?;
        let name = words.get(..=last).unwrap_or_default();
        self.next += name.len();
        Ok(name.as_bytes())
    }

    /// Reads the properties of a node, telling `visitor` about those the hypervisor
    /// reads; returns the token after them.
    #[inline(always)]
    fn properties(
        &mut self,
        strings: &[u8],
        names: &mut NameCache,
        visitor: &mut impl Visitor<'a>,
    ) -> Result<u32, TreeError> {
        loop {
            // A token and the two words a property's header holds after it (5.4.1),
            // read under one bounds check. `next` may lie past the block, after a
            // value that does.
            let words = self.structure.get(self.next..).unwrap_or_default();
            let Some(&[token, len, name_offset]) = words.first_chunk() else {
                // No room for a property header: the block ends with a token or two.
                match self.token()? {
                    FDT_NOP => continue,
                    FDT_PROP => return Err(TreeError::Malformed),
                    token => return Ok(token),
                }
            };
            if token != stored(FDT_PROP) {
                self.next += 1;
                if token == stored(FDT_NOP) {
                    continue;
                }
                return Ok(u32::from_be(token));
            }
            let value_at = self.next + 3;
            let len = u32::from_be(len);
            self.next = value_at + padded_words(len);
            let Some(name) = names.name(name_offset, strings)? else {
                continue;
            };
            // A value past the block is malformed here, or by the next read if no
            // one reads it. `value_at` is in the block (the header was), so the sum
            // cannot overflow.
            let value_start = value_at * 4;
            let value = self
                .structure
                .as_bytes()
                .get(value_start..value_start + len as usize)
                .ok_or(TreeError::Malformed)?;
            visitor.property(name, value);
        }
    }

    /// The root has ended: only `FDT_NOP` tokens may come before `FDT_END` (5.4.2).
    fn finish(&mut self) -> Result<(), TreeError> {
        loop {
            match self.token()? {
                FDT_NOP => {}
                FDT_END => return Ok(()),
                _ => return Err(TreeError::Malformed),
            }
        }
    }
}

/// A header field as an offset or size.
fn to_usize(field: U32) -> usize {
    field.get() as usize
}
