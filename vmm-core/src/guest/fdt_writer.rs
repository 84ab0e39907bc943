//! Transom's writer of flattened device trees (Devicetree Specification v0.4,
//! chapter 5), for the guest trees [`super::tree`] builds at boot.
//!
//! It exists because `vm-fdt`, which wrote those trees before, builds a `CString`
//! for every property name and value, keeps its strings table in a `BTreeMap` and
//! grows its vectors as it goes: about 80,000 instructions for the bench guest's
//! tree, ten times what the boot can afford. This writer does only what `tree`
//! needs, without an allocation per node or property:
//!
//! - the blob is one `Vec` of 32-bit words reserved up front, so each token and
//!   cell is one store (the bare-metal target is built with strict alignment,
//!   where a byte buffer takes four byte stores per cell);
//! - unit addresses and numbers in node names are written as digits in place,
//!   without `core::fmt`;
//! - the property names a guest tree uses are [`names`]: checked against 2.2.4.1
//!   when the crate is compiled, each is an index into the writer's table of
//!   where it lies in the strings block, added there the first time it is used.
//!   Any other name (a `&'static str`) is checked when first used and deduplicated
//!   through a small hash table: met again at the same address it is found without
//!   comparing bytes, with the same text elsewhere by its text.
//!
//! The blob it writes, front to back (5.1; each block where 5.6 aligns it):
//!
//! ```text
//! 0x00  header (5.2)                      ten big-endian u32, filled in last
//! 0x28  memory reservation block (5.3)    only its terminating zero entry, 8-aligned
//! 0x38  structure block (5.4)             the tokens, each 4-byte aligned
//!  ..   (0 or 4 zero bytes)               so the strings block starts 8-aligned
//!  ..   strings block (5.5)               each property name once, NUL-terminated
//! ```
//!
//! It checks what would make the blob wrong rather than panic: a NUL inside a name
//! or string, names outside the character sets of 2.2.1 and 2.2.4.1, a property
//! after its node's first child or outside every node, nodes ended out of order or
//! left open, no root or a second one, a phandle given twice. A refused node or
//! property leaves the structure block as it was.

use alloc::vec::Vec;
use core::fmt;
use core::ops::Deref;

use zerocopy::IntoBytes;

/// `magic` (5.2).
const FDT_MAGIC: u32 = 0xd00d_feed;
/// `version` (5.2): the format chapter 5 describes.
const FDT_VERSION: u32 = 17;
/// `last_comp_version` (5.2): for version 17, "this field shall contain 16".
const FDT_LAST_COMP_VERSION: u32 = 16;

// The structure block's tokens (5.4.1); this writer emits no FDT_NOP.
const FDT_BEGIN_NODE: u32 = 0x1;
const FDT_END_NODE: u32 = 0x2;
const FDT_PROP: u32 = 0x3;
const FDT_END: u32 = 0x9;

/// The structure block's unit: every token starts on a 32-bit boundary (5.4.1), so
/// the writer keeps the blob in 32-bit words and stores each token and cell whole
/// (the bare-metal target is built with strict alignment, where a byte buffer would
/// take four byte stores per cell).
const WORD: usize = size_of::<u32>();

/// How deep nodes may nest, the root counting as one: Linux's `FDT_MAX_DEPTH`, the
/// bound `vm-fdt` kept.
pub const MAX_DEPTH: usize = 64;

/// The longest node name without its unit address, and the longest property name
/// (2.2.1 and 2.2.4.1: 1 to 31 characters).
pub const MAX_NAME_LEN: usize = 31;

/// The header (5.2): ten 32-bit fields, the first thing in the blob.
const HEADER_WORDS: usize = 10;

/// The memory reservation block right after the header: 40 is a multiple of 8, as
/// 5.6 asks of the block.
const OFF_MEM_RSVMAP: usize = HEADER_WORDS * WORD;
const _: () = assert!(OFF_MEM_RSVMAP.is_multiple_of(8));

/// The reservation block's one entry, the terminator: address 0, size 0 (5.3.2).
const RESERVATION_TERMINATOR_WORDS: usize = 4;

/// The structure block right after the reservation block, 4-byte aligned (5.6).
const OFF_DT_STRUCT: usize = OFF_MEM_RSVMAP + RESERVATION_TERMINATOR_WORDS * WORD;

/// Room the strings block reserves up front: the 26 names a guest tree can use
/// take 300 bytes.
const STRINGS_CAPACITY: usize = 512;

/// Slots of the property-name table: a power of two, more than twice the names a
/// guest tree uses.
const NAME_SLOTS: usize = 64;
/// Names the table records; three quarters full keeps probe runs short and leaves
/// an empty slot to end every probe. A name past them still goes to the strings
/// block, only without deduplication (5.5 does not require it).
const MAX_RECORDED_NAMES: usize = NAME_SLOTS * 3 / 4;

/// Phandles checked for uniqueness without an allocation; more spill to a `Vec`.
const INLINE_PHANDLES: usize = 8;

/// A big-endian cell (2.2.4.2, 5.4.1) as the word that holds it in memory.
fn cell(value: u32) -> u32 {
    u32::from_ne_bytes(value.to_be_bytes())
}

/// Why the writer refused a node, a property or the blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// A property value string or a name holds a NUL byte, which would end it early
    /// (2.2.4.2: `<string>` is NUL-terminated).
    NulInString,
    /// A node name outside 2.2.1: 1 to 31 characters of table 2.1 starting with a
    /// letter, at most one `@` followed by a non-empty unit address; or a root
    /// with a name, or another node without one.
    InvalidNodeName,
    /// A property name outside 2.2.4.1: 1 to 31 characters of table 2.2.
    InvalidPropertyName,
    /// A property with no node open.
    PropertyOutsideNode,
    /// A property after a child of its node: a node's properties come before its
    /// children (5.4.2).
    PropertyAfterChild,
    /// A node other than the innermost open one was ended.
    EndedOutOfOrder,
    /// [`FdtWriter::finish`] with a node still open.
    UnclosedNode,
    /// A second root node, or [`FdtWriter::finish`] without one: the structure block
    /// holds exactly one root (5.4.2).
    NotOneRoot,
    /// Nodes nested deeper than [`MAX_DEPTH`].
    TooDeep,
    /// A phandle given to a second node (2.3.3: "the phandle property specifies a
    /// numerical identifier for a node that is unique within the devicetree").
    DuplicatePhandle {
        /// The phandle.
        phandle: u32,
    },
    /// A property value or the blob past 4 GiB, which the 32-bit `len` and header
    /// fields cannot describe (5.2, 5.4.1).
    TooLarge,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::NulInString => f.write_str("a string holds a NUL byte"),
            Error::InvalidNodeName => f.write_str(
                "an invalid node name (Devicetree Specification v0.4, 2.2.1: 1 to 31 of \
                 `0-9a-zA-Z,._+-` starting with a letter, then `@unit-address`)",
            ),
            Error::InvalidPropertyName => f.write_str(
                "an invalid property name (Devicetree Specification v0.4, 2.2.4.1: 1 to 31 \
                 of `0-9a-zA-Z,._+?#-`)",
            ),
            Error::PropertyOutsideNode => f.write_str("a property outside every node"),
            Error::PropertyAfterChild => {
                f.write_str("a property after a child node: a node's properties come first")
            }
            Error::EndedOutOfOrder => f.write_str("nodes ended out of order"),
            Error::UnclosedNode => f.write_str("a node was left open"),
            Error::NotOneRoot => f.write_str("the tree needs exactly one root node"),
            Error::TooDeep => write!(f, "nodes nested deeper than {MAX_DEPTH}"),
            Error::DuplicatePhandle { phandle } => {
                write!(f, "phandle {phandle:#x} given to two nodes")
            }
            Error::TooLarge => f.write_str("the blob or a property would pass 4 GiB"),
        }
    }
}

/// An open node, from [`FdtWriter::begin_node`]; hand it back to
/// [`FdtWriter::end_node`], innermost first.
#[must_use = "a node must be ended"]
#[derive(Debug)]
pub struct Node {
    depth: usize,
}

/// The significant lower-case hex digits of `value` ("0" for zero), in `buffer`.
fn hex_digits(value: u64, buffer: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let count = (u64::BITS - (value | 1).leading_zeros()).div_ceil(4) as usize;
    for (index, digit) in buffer[..count].iter_mut().enumerate() {
        let shift = 4 * (count - 1 - index);
        *digit = DIGITS[((value >> shift) & 0xf) as usize];
    }
    &buffer[..count]
}

/// The decimal digits of `value` ("0" for zero), in `buffer`.
fn decimal_digits(mut value: u64, buffer: &mut [u8; 20]) -> &[u8] {
    let mut start = buffer.len();
    loop {
        start -= 1;
        buffer[start] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            return &buffer[start..];
        }
    }
}

/// Bit of [`NAME_CHARS`]: a character of a node name (2.2.1, table 2.1).
const NODE_NAME_CHAR: u8 = 1 << 0;
/// Bit of [`NAME_CHARS`]: a character of a property name (2.2.4.1, table 2.2).
const PROPERTY_NAME_CHAR: u8 = 1 << 1;

/// Each byte's classes, so a name is checked with one table load per character.
static NAME_CHARS: [u8; 256] = NAME_CHAR_TABLE;
/// [`NAME_CHARS`] for `const` code, which cannot read a `static`.
const NAME_CHAR_TABLE: [u8; 256] = name_chars();

const fn name_chars() -> [u8; 256] {
    let mut table = [0; 256];
    let mut index = 0;
    while index < table.len() {
        let byte = index as u8;
        let alphanumeric = byte.is_ascii_alphanumeric();
        if alphanumeric || matches!(byte, b',' | b'.' | b'_' | b'+' | b'-') {
            table[index] |= NODE_NAME_CHAR;
        }
        if alphanumeric || matches!(byte, b',' | b'.' | b'_' | b'+' | b'?' | b'#' | b'-') {
            table[index] |= PROPERTY_NAME_CHAR;
        }
        index += 1;
    }
    table
}

/// Whether every byte of `bytes` is of `class`.
fn all_of_class(bytes: &[u8], class: u8) -> bool {
    bytes
        .iter()
        .all(|&byte| NAME_CHARS[usize::from(byte)] & class != 0)
}

/// The name part of a node name by 2.2.1: 1 to 31 characters of table 2.1, the
/// first a letter.
fn is_node_name_base(base: &[u8]) -> bool {
    (1..=MAX_NAME_LEN).contains(&base.len())
        && base[0].is_ascii_alphabetic()
        && all_of_class(base, NODE_NAME_CHAR)
}

/// A non-root node name by 2.2.1: `node-name[@unit-address]`. The unit address's
/// form depends on the bus, so only its characters are checked, as `vm-fdt` did.
fn check_node_name(name: &[u8]) -> Result<(), Error> {
    let (base, unit_address) = match name.iter().position(|&byte| byte == b'@') {
        Some(at) => (&name[..at], Some(&name[at + 1..])),
        None => (name, None),
    };
    let unit_address_ok = unit_address
        .is_none_or(|address| !address.is_empty() && all_of_class(address, NODE_NAME_CHAR));
    if is_node_name_base(base) && unit_address_ok {
        Ok(())
    } else {
        Err(name_error(name, Error::InvalidNodeName))
    }
}

/// What is wrong with a name that failed its check: a NUL, or else `otherwise`.
#[cold]
fn name_error(name: &[u8], otherwise: Error) -> Error {
    if name.contains(&0) {
        Error::NulInString
    } else {
        otherwise
    }
}

/// Copies a string value into `out` (as long as `value`); false if the value holds
/// a NUL, which would end it early. Checking while copying reads the value once.
fn copy_string(out: &mut [u8], value: &str) -> bool {
    for (byte, &value_byte) in out.iter_mut().zip(value.as_bytes()) {
        if value_byte == 0 {
            return false;
        }
        *byte = value_byte;
    }
    true
}

/// Copies a name into `out` (as long as `name`); false if a character of it is
/// not of `class`.
fn copy_name(out: &mut [u8], name: &[u8], class: u8) -> bool {
    for (byte, &name_byte) in out.iter_mut().zip(name) {
        if NAME_CHARS[usize::from(name_byte)] & class == 0 {
            return false;
        }
        *byte = name_byte;
    }
    true
}

/// A property name, as every `property_*` method of [`FdtWriter`] takes it: one of
/// [`names`], or any `&'static str` (checked against 2.2.4.1 when first used).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PropertyName(NameRepr);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NameRepr {
    /// The index of a name in [`KNOWN_NAMES`].
    Known(u8),
    /// Any other name.
    Text(&'static str),
}

impl PropertyName {
    const fn known(index: KnownName) -> PropertyName {
        PropertyName(NameRepr::Known(index as u8))
    }

    /// The name's text.
    pub fn as_str(&self) -> &'static str {
        match self.0 {
            NameRepr::Known(index) => KNOWN_NAMES[usize::from(index)],
            NameRepr::Text(text) => text,
        }
    }
}

impl From<&'static str> for PropertyName {
    fn from(text: &'static str) -> PropertyName {
        PropertyName(NameRepr::Text(text))
    }
}

/// Declares the known property names: [`KnownName`] numbers them, [`KNOWN_NAMES`]
/// holds their text, and [`names`] has a [`PropertyName`] constant for each.
macro_rules! known_names {
    ($($(#[$doc:meta])* $name:ident = $text:literal,)*) => {
        /// The index of each known name; each variant is named as its constant in
        /// [`names`].
        #[allow(non_camel_case_types, clippy::upper_case_acronyms)]
        #[derive(Clone, Copy)]
        #[repr(u8)]
        enum KnownName {
            $($name,)*
        }

        /// The text of each known name, by [`KnownName`].
        const KNOWN_NAMES: &[&str] = &[$($text,)*];

        /// The property names guest trees use, checked against the Devicetree
        /// Specification's rules (2.2.4.1) when the crate is compiled. The writer
        /// finds each by its index, without hashing or comparing it.
        pub mod names {
            use super::{KnownName, PropertyName};
            $(
                $(#[$doc])*
                #[doc = concat!("`", $text, "`")]
                pub const $name: PropertyName = PropertyName::known(KnownName::$name);
            )*
        }
    };
}

known_names! {
    ADDRESS_CELLS = "#address-cells",
    SIZE_CELLS = "#size-cells",
    INTERRUPT_CELLS = "#interrupt-cells",
    CLOCK_CELLS = "#clock-cells",
    REDISTRIBUTOR_REGIONS = "#redistributor-regions",
    COMPATIBLE = "compatible",
    MODEL = "model",
    REG = "reg",
    RANGES = "ranges",
    DEVICE_TYPE = "device_type",
    INTERRUPT_PARENT = "interrupt-parent",
    INTERRUPT_CONTROLLER = "interrupt-controller",
    INTERRUPTS = "interrupts",
    PHANDLE = "phandle",
    BOOTARGS = "bootargs",
    STDOUT_PATH = "stdout-path",
    SERIAL0 = "serial0",
    INITRD_START = "linux,initrd-start",
    INITRD_END = "linux,initrd-end",
    NO_MAP = "no-map",
    ENABLE_METHOD = "enable-method",
    METHOD = "method",
    ALWAYS_ON = "always-on",
    CLOCKS = "clocks",
    CLOCK_NAMES = "clock-names",
    CLOCK_FREQUENCY = "clock-frequency",
}

/// How many names are known.
const KNOWN_COUNT: usize = KNOWN_NAMES.len();

/// Whether `name` is a property name by 2.2.4.1: 1 to 31 characters of table 2.2.
/// A `const fn`, so the known names are checked when the crate is compiled; the
/// writer checks any other name with it when first used.
const fn is_property_name(name: &[u8]) -> bool {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return false;
    }
    let mut index = 0;
    while index < name.len() {
        if NAME_CHAR_TABLE[name[index] as usize] & PROPERTY_NAME_CHAR == 0 {
            return false;
        }
        index += 1;
    }
    true
}

const fn same_text(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut index = 0;
    while index < a.len() {
        if a[index] != b[index] {
            return false;
        }
        index += 1;
    }
    true
}

// Every known name is valid and listed once, so the writer adds them unchecked.
const _: () = {
    assert!(KNOWN_COUNT < u8::MAX as usize);
    let mut index = 0;
    while index < KNOWN_COUNT {
        assert!(
            is_property_name(KNOWN_NAMES[index].as_bytes()),
            "a known property name breaks 2.2.4.1"
        );
        let mut other = index + 1;
        while other < KNOWN_COUNT {
            assert!(
                !same_text(KNOWN_NAMES[index], KNOWN_NAMES[other]),
                "a known property name is listed twice"
            );
            other += 1;
        }
        index += 1;
    }
};

/// Where a known name lies in the strings block, before it is added.
const NOT_ADDED: u32 = u32::MAX;

/// A property name in the strings block, as [`Strings`] records it.
#[derive(Clone, Copy)]
struct NameEntry {
    /// The address of the `&'static str` it was last looked up with: the same
    /// address and length is the same name without comparing bytes. Names are
    /// `'static`, so no other name can later take that address.
    address: usize,
    /// Where the name starts in the strings block.
    offset: u32,
    /// Its length, without the NUL.
    len: u32,
}

/// The strings block (5.5) being written, each property name once.
struct Strings {
    bytes: Vec<u8>,
    /// Where each known name lies in `bytes`, or [`NOT_ADDED`].
    known: [u32; KNOWN_COUNT],
    /// The names in `bytes`, found by [`name_slot`] with linear probing: 0 for an
    /// empty slot, else one more than the index in `entries`.
    slots: [u8; NAME_SLOTS],
    entries: Vec<NameEntry>,
}

const _: () = assert!(MAX_RECORDED_NAMES < u8::MAX as usize);

/// The slot a name's probe starts at: a hash of its length, first and last byte,
/// which tells the names of a device tree apart well and costs no loop.
fn name_slot(name: &[u8]) -> usize {
    let (first, last) = match name {
        [first, .., last] => (*first, *last),
        [only] => (*only, *only),
        [] => (0, 0),
    };
    let key = name.len() as u32 ^ (u32::from(first) << 8) ^ (u32::from(last) << 16);
    (key.wrapping_mul(0x9e37_79b1) >> (u32::BITS - NAME_SLOTS.trailing_zeros())) as usize
}

impl Strings {
    fn new() -> Strings {
        Strings {
            bytes: Vec::with_capacity(STRINGS_CAPACITY),
            known: [NOT_ADDED; KNOWN_COUNT],
            slots: [0; NAME_SLOTS],
            entries: Vec::with_capacity(MAX_RECORDED_NAMES),
        }
    }

    /// Where `name` lies in the strings block, adding it if it is not there yet.
    #[inline]
    fn offset_of(&mut self, name: PropertyName) -> Result<u32, Error> {
        match name.0 {
            NameRepr::Known(index) => Ok(self.known_offset(usize::from(index))),
            NameRepr::Text(text) => match self.find_by_address(text) {
                Some(offset) => Ok(offset),
                None => self.find_by_text_or_add(text),
            },
        }
    }

    /// Where the known name `index` lies, adding it the first time: it was
    /// checked when the crate was compiled.
    #[inline]
    fn known_offset(&mut self, index: usize) -> u32 {
        let offset = self.known[index];
        if offset != NOT_ADDED {
            return offset;
        }
        self.add_known(index)
    }

    #[inline(never)]
    fn add_known(&mut self, index: usize) -> u32 {
        let offset = self.bytes.len() as u32;
        self.bytes.extend_from_slice(KNOWN_NAMES[index].as_bytes());
        self.bytes.push(0);
        self.known[index] = offset;
        offset
    }

    /// Where the table has `name` under the same address: the lookup every
    /// property makes, without comparing bytes.
    #[inline]
    fn find_by_address(&self, name: &'static str) -> Option<u32> {
        let bytes = name.as_bytes();
        let address = bytes.as_ptr() as usize;
        let mut slot = name_slot(bytes);
        // At most three quarters of the slots are taken, so the probe meets an
        // empty one.
        while let Some(index) = usize::from(self.slots[slot]).checked_sub(1) {
            let entry = self.entries.get(index)?;
            if entry.address == address && entry.len as usize == bytes.len() {
                return Some(entry.offset);
            }
            slot = (slot + 1) % NAME_SLOTS;
        }
        None
    }

    /// Where the table has `name`'s text under another address (then it records
    /// this one), or where `name` goes once added.
    #[cold]
    #[inline(never)]
    fn find_by_text_or_add(&mut self, name: &'static str) -> Result<u32, Error> {
        // A known name's text goes where the known name does: each name once.
        if let Some(index) = KNOWN_NAMES.iter().position(|known| *known == name) {
            return Ok(self.known_offset(index));
        }
        let bytes = name.as_bytes();
        let mut slot = name_slot(bytes);
        while let Some(index) = usize::from(self.slots[slot]).checked_sub(1) {
            let entry = &mut self.entries[index];
            let start = entry.offset as usize;
            if entry.len as usize == bytes.len()
                && self.bytes.get(start..start + bytes.len()) == Some(bytes)
            {
                entry.address = bytes.as_ptr() as usize;
                return Ok(entry.offset);
            }
            slot = (slot + 1) % NAME_SLOTS;
        }
        self.add(bytes, slot)
    }

    /// Adds a name the table does not hold, checked by 2.2.4.1 (1 to 31 characters
    /// of table 2.2), recording it at `slot` while the table has room. Kept apart
    /// from the lookup, which every property makes, so that stays small.
    fn add(&mut self, bytes: &[u8], slot: usize) -> Result<u32, Error> {
        if !is_property_name(bytes) {
            return Err(name_error(bytes, Error::InvalidPropertyName));
        }
        let offset = u32::try_from(self.bytes.len()).map_err(|_| Error::TooLarge)?;
        // The name and its NUL (a `resize` would zero the room first, by a call).
        self.bytes.extend_from_slice(bytes);
        self.bytes.push(0);
        let address = bytes.as_ptr() as usize;
        if self.entries.len() < MAX_RECORDED_NAMES {
            self.entries.push(NameEntry {
                address,
                offset,
                len: bytes.len() as u32,
            });
            self.slots[slot] = self.entries.len() as u8;
        }
        Ok(offset)
    }
}

/// A finished devicetree blob, what [`FdtWriter::finish`] returns: its bytes (it
/// derefs to `[u8]`), kept in the 32-bit words the writer stored them in.
#[derive(Clone, Debug)]
pub struct Blob {
    words: Vec<u32>,
    len: usize,
}

impl Deref for Blob {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.words.as_bytes()[..self.len]
    }
}

impl AsRef<[u8]> for Blob {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

/// Writes one flattened device tree, front to back: nodes and properties in the
/// order they appear, then [`FdtWriter::finish`] for the blob.
///
/// # Example
///
/// ```
/// use transom_vmm_core::guest::fdt_writer::FdtWriter;
///
/// let mut fdt = FdtWriter::new(1024);
/// let root = fdt.begin_node("")?;
/// fdt.property_u32("#address-cells", 2)?;
/// let memory = fdt.begin_node_at("memory", 0x4000_0000)?;
/// fdt.property_string("device_type", "memory")?;
/// fdt.property_array_u64("reg", &[0x4000_0000, 0x1000_0000])?;
/// fdt.end_node(memory)?;
/// fdt.end_node(root)?;
/// let blob = fdt.finish()?;
/// assert_eq!(&blob[..4], &0xd00d_feed_u32.to_be_bytes());
/// # Ok::<(), transom_vmm_core::guest::fdt_writer::Error>(())
/// ```
pub struct FdtWriter {
    /// The header's room, the reservation block and the structure block so far,
    /// each word holding four bytes of the blob in memory order.
    words: Vec<u32>,
    /// The strings block so far.
    strings: Strings,
    /// The phandles given so far: the first ones inline, the rest spilled.
    phandles: heapless::Vec<u32, INLINE_PHANDLES>,
    more_phandles: Vec<u32>,
    /// How many nodes are open.
    depth: usize,
    /// Whether a child of the innermost open node has been written: its
    /// properties are over (5.4.2).
    child_written: bool,
    /// Whether the root node has begun.
    root_begun: bool,
}

impl FdtWriter {
    /// A writer whose blob reserves `capacity` bytes up front; it grows past them if
    /// it must.
    pub fn new(capacity: usize) -> FdtWriter {
        let mut words = Vec::with_capacity(capacity.div_ceil(WORD));
        // The header is written by `finish`, when its sizes are known; the
        // reservation block's terminator is zero.
        words.resize(OFF_DT_STRUCT / WORD, 0);
        FdtWriter {
            words,
            strings: Strings::new(),
            phandles: heapless::Vec::new(),
            more_phandles: Vec::new(),
            depth: 0,
            child_written: false,
            root_begun: false,
        }
    }

    /// Begins a node named `name` inside the innermost open one (`""` for the
    /// root): an `FDT_BEGIN_NODE` token and the name (5.4.1).
    pub fn begin_node(&mut self, name: &str) -> Result<Node, Error> {
        self.check_node_start(name.is_empty())?;
        if !name.is_empty() {
            check_node_name(name.as_bytes())?;
        }
        self.words.push(cell(FDT_BEGIN_NODE));
        let out = self.append_string(name.len());
        out.copy_from_slice(name.as_bytes());
        Ok(self.open_node())
    }

    /// Begins a node named `<name>@<unit_address>`, the address in lower-case hex
    /// without leading zeros, as Linux and dtc write unit addresses (2.2.1).
    pub fn begin_node_at(&mut self, name: &str, unit_address: u64) -> Result<Node, Error> {
        let mut digits = [0; 16];
        let digits = hex_digits(unit_address, &mut digits);
        self.begin_node_numbered_as(name, b'@', digits)
    }

    /// Begins a node named `<name>-<number>`, the number in decimal
    /// (`clock-24000000`); the whole name is a node name without a unit address.
    pub fn begin_node_numbered(&mut self, name: &str, number: u64) -> Result<Node, Error> {
        let mut digits = [0; 20];
        let digits = decimal_digits(number, &mut digits);
        if name.len() + 1 + digits.len() > MAX_NAME_LEN {
            return Err(Error::InvalidNodeName);
        }
        self.begin_node_numbered_as(name, b'-', digits)
    }

    /// Begins a node named `name`, `separator` and `digits`, written straight into
    /// the structure block.
    fn begin_node_numbered_as(
        &mut self,
        name: &str,
        separator: u8,
        digits: &[u8],
    ) -> Result<Node, Error> {
        self.check_node_start(false)?;
        let base = name.as_bytes();
        let invalid = || name_error(base, Error::InvalidNodeName);
        let starts_with_letter = base.first().is_some_and(u8::is_ascii_alphabetic);
        if !starts_with_letter || base.len() > MAX_NAME_LEN {
            return Err(invalid());
        }
        let start = self.words.len();
        self.words.push(cell(FDT_BEGIN_NODE));
        let out = self.append_string(base.len() + 1 + digits.len());
        let (base_out, number) = out.split_at_mut(base.len());
        if !copy_name(base_out, base, NODE_NAME_CHAR) {
            self.words.truncate(start);
            return Err(invalid());
        }
        number[0] = separator;
        number[1..].copy_from_slice(digits);
        Ok(self.open_node())
    }

    /// Where a node may begin: the first node is the root, which alone has no name,
    /// and every other node lies inside it.
    fn check_node_start(&self, is_root: bool) -> Result<(), Error> {
        if self.depth >= MAX_DEPTH {
            return Err(Error::TooDeep);
        }
        if self.depth == 0 && self.root_begun {
            return Err(Error::NotOneRoot);
        }
        if is_root != (self.depth == 0) {
            return Err(Error::InvalidNodeName);
        }
        Ok(())
    }

    fn open_node(&mut self) -> Node {
        self.depth += 1;
        self.root_begun = true;
        self.child_written = false;
        Node { depth: self.depth }
    }

    /// Ends `node`, which must be the innermost open one: an `FDT_END_NODE` token.
    pub fn end_node(&mut self, node: Node) -> Result<(), Error> {
        if node.depth != self.depth {
            return Err(Error::EndedOutOfOrder);
        }
        self.words.push(cell(FDT_END_NODE));
        self.depth -= 1;
        // The parent's properties are over: this node was its child.
        self.child_written = true;
        Ok(())
    }

    /// A property of the innermost open node with the raw `value`.
    pub fn property(&mut self, name: impl Into<PropertyName>, value: &[u8]) -> Result<(), Error> {
        self.property_header(name.into(), value.len())?;
        self.append_bytes(value.len()).copy_from_slice(value);
        Ok(())
    }

    /// An empty property (2.2.4.2 `<empty>`), a true boolean.
    pub fn property_null(&mut self, name: impl Into<PropertyName>) -> Result<(), Error> {
        self.property_header(name.into(), 0)
    }

    /// A one-cell property (2.2.4.2 `<u32>`), big-endian.
    pub fn property_u32(&mut self, name: impl Into<PropertyName>, value: u32) -> Result<(), Error> {
        self.property_header(name.into(), size_of::<u32>())?;
        self.words.push(cell(value));
        Ok(())
    }

    /// A two-cell property (2.2.4.2 `<u64>`), big-endian.
    pub fn property_u64(&mut self, name: impl Into<PropertyName>, value: u64) -> Result<(), Error> {
        self.property_array_u64(name.into(), &[value])
    }

    /// A property of cells (2.2.4.2 `<prop-encoded-array>`), each big-endian.
    pub fn property_array_u32(
        &mut self,
        name: impl Into<PropertyName>,
        cells: &[u32],
    ) -> Result<(), Error> {
        self.property_header(name.into(), size_of_val(cells))?;
        self.words.extend(cells.iter().map(|&value| cell(value)));
        Ok(())
    }

    /// A property of 64-bit values, each as two big-endian cells, the high one first
    /// (2-cell addresses and sizes).
    pub fn property_array_u64(
        &mut self,
        name: impl Into<PropertyName>,
        values: &[u64],
    ) -> Result<(), Error> {
        self.property_header(name.into(), size_of_val(values))?;
        for &value in values {
            self.words.push(cell((value >> 32) as u32));
            self.words.push(cell(value as u32));
        }
        Ok(())
    }

    /// A property of the cells `cells` yields, each big-endian, without collecting
    /// them first.
    pub fn property_cells(
        &mut self,
        name: impl Into<PropertyName>,
        cells: impl IntoIterator<Item = u32>,
    ) -> Result<(), Error> {
        // `len` is the second word of the property's header.
        let len_index = self.words.len() + 1;
        self.property_header(name.into(), 0)?;
        let start = self.words.len();
        self.words.extend(cells.into_iter().map(cell));
        let len = (self.words.len() - start) * WORD;
        let len = u32::try_from(len).map_err(|_| Error::TooLarge)?;
        self.words[len_index] = cell(len);
        Ok(())
    }

    /// A string property (2.2.4.2 `<string>`): `value` and its NUL.
    pub fn property_string(
        &mut self,
        name: impl Into<PropertyName>,
        value: &str,
    ) -> Result<(), Error> {
        let start = self.words.len();
        self.property_header(name.into(), value.len() + 1)?;
        let out = self.append_string(value.len());
        if !copy_string(out, value) {
            return Err(self.nul_in_string(start));
        }
        Ok(())
    }

    /// A string property whose value is `parts` one after the other
    /// (`"/" + node name`), without building it first.
    pub fn property_string_concat(
        &mut self,
        name: impl Into<PropertyName>,
        parts: &[&str],
    ) -> Result<(), Error> {
        let len = parts.iter().map(|part| part.len()).sum::<usize>();
        let start = self.words.len();
        self.property_header(name.into(), len + 1)?;
        let mut out = self.append_string(len);
        for part in parts {
            let (written, rest) = out.split_at_mut(part.len());
            if !copy_string(written, part) {
                return Err(self.nul_in_string(start));
            }
            out = rest;
        }
        Ok(())
    }

    /// A string property holding the path of the root's child
    /// `<node_name>@<unit_address>`: `/<node_name>@<unit address in hex>`, as
    /// [`FdtWriter::begin_node_at`] names it (2.2.3).
    pub fn property_path_at(
        &mut self,
        name: impl Into<PropertyName>,
        node_name: &str,
        unit_address: u64,
    ) -> Result<(), Error> {
        let mut digits = [0; 16];
        let digits = hex_digits(unit_address, &mut digits);
        let len = 1 + node_name.len() + 1 + digits.len();
        let start = self.words.len();
        self.property_header(name.into(), len + 1)?;
        let out = self.append_string(len);
        let (root, rest) = out.split_at_mut(1);
        root[0] = b'/';
        let (node, unit) = rest.split_at_mut(node_name.len());
        if !copy_string(node, node_name) {
            return Err(self.nul_in_string(start));
        }
        unit[0] = b'@';
        unit[1..].copy_from_slice(digits);
        Ok(())
    }

    /// A string-list property (2.2.4.2 `<stringlist>`): each of `values` with its
    /// NUL.
    pub fn property_string_list(
        &mut self,
        name: impl Into<PropertyName>,
        values: &[&str],
    ) -> Result<(), Error> {
        let len = values.iter().map(|value| value.len() + 1).sum();
        let start = self.words.len();
        self.property_header(name.into(), len)?;
        let mut out = self.append_bytes(len);
        for value in values {
            // The last byte, the NUL, is already zero.
            let (written, rest) = out.split_at_mut(value.len() + 1);
            if !copy_string(written, value) {
                return Err(self.nul_in_string(start));
            }
            out = rest;
        }
        Ok(())
    }

    /// The open node's `phandle` (2.3.3), which no other node may have.
    pub fn property_phandle(&mut self, phandle: u32) -> Result<(), Error> {
        let given = self.phandles.contains(&phandle) || self.more_phandles.contains(&phandle);
        if given {
            return Err(Error::DuplicatePhandle { phandle });
        }
        self.property_u32(names::PHANDLE, phandle)?;
        if let Err(phandle) = self.phandles.push(phandle) {
            self.more_phandles.push(phandle);
        }
        Ok(())
    }

    /// Ends the structure block with `FDT_END`, appends the strings block and fills
    /// in the header (5.2): the blob.
    pub fn finish(mut self) -> Result<Blob, Error> {
        if self.depth != 0 {
            return Err(Error::UnclosedNode);
        }
        if !self.root_begun {
            return Err(Error::NotOneRoot);
        }
        self.words.push(cell(FDT_END));
        let size_dt_struct = self.words.len() * WORD - OFF_DT_STRUCT;
        // The strings block needs no alignment (5.5); starting it 8-aligned lets
        // the copy below, and the guest loader's, move whole words. `totalsize`
        // covers the gap (5.2: "any free space gaps between the blocks").
        if !self.words.len().is_multiple_of(2) {
            self.words.push(0);
        }
        let off_dt_strings = self.words.len() * WORD;
        let strings = core::mem::take(&mut self.strings.bytes);
        self.append_bytes(strings.len()).copy_from_slice(&strings);
        let total_size = off_dt_strings + strings.len();
        let field = |value: usize| u32::try_from(value).map_err(|_| Error::TooLarge);
        let header = [
            FDT_MAGIC,              // magic
            field(total_size)?,     // totalsize
            OFF_DT_STRUCT as u32,   // off_dt_struct
            field(off_dt_strings)?, // off_dt_strings
            OFF_MEM_RSVMAP as u32,  // off_mem_rsvmap
            FDT_VERSION,            // version
            FDT_LAST_COMP_VERSION,  // last_comp_version
            0,                      // boot_cpuid_phys: vCPU 0's `reg` in Transom's trees
            field(strings.len())?,  // size_dt_strings
            field(size_dt_struct)?, // size_dt_struct
        ];
        for (word, field) in self.words.iter_mut().zip(header) {
            *word = cell(field);
        }
        Ok(Blob {
            words: self.words,
            len: total_size,
        })
    }

    /// Writes an `FDT_PROP` token, the value's `len` and the name's offset `nameoff`
    /// (5.4.1), once the property may come here.
    fn property_header(&mut self, name: PropertyName, len: usize) -> Result<(), Error> {
        if self.depth == 0 || self.child_written || len > u32::MAX as usize {
            return Err(self.misplaced_property(len));
        }
        let name_offset = self.strings.offset_of(name)?;
        self.words
            .extend([cell(FDT_PROP), cell(len as u32), cell(name_offset)]);
        Ok(())
    }

    /// Why a property of `len` bytes may not come here.
    #[cold]
    fn misplaced_property(&self, len: usize) -> Error {
        if self.depth == 0 {
            Error::PropertyOutsideNode
        } else if self.child_written {
            Error::PropertyAfterChild
        } else {
            debug_assert!(len > u32::MAX as usize);
            Error::TooLarge
        }
    }

    /// Takes back a property whose string held a NUL, from the structure block's
    /// length `start` on: an error leaves nothing written.
    #[cold]
    fn nul_in_string(&mut self, start: usize) -> Error {
        self.words.truncate(start);
        Error::NulInString
    }

    /// Appends `len` bytes, zero and padded to the next token (5.4.1), and returns
    /// them to be written.
    fn append_bytes(&mut self, len: usize) -> &mut [u8] {
        let start = self.words.len();
        self.words
            .extend(core::iter::repeat_n(0, len.div_ceil(WORD)));
        &mut self.words[start..].as_mut_bytes()[..len]
    }

    /// Appends a string of `len` bytes, its NUL and the padding, and returns its
    /// bytes (without the NUL) to be written.
    fn append_string(&mut self, len: usize) -> &mut [u8] {
        &mut self.append_bytes(len + 1)[..len]
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use alloc::boxed::Box;
    use alloc::string::String;
    use fdt::Fdt;
    use std::format;
    use std::string::ToString;
    use std::vec;

    /// A structure-block token as 5.4.1 defines it, decoded for the tests.
    #[derive(Debug, PartialEq, Eq)]
    enum Token<'a> {
        BeginNode(&'a str),
        EndNode,
        Property { name: &'a str, value: &'a [u8] },
    }

    fn be32(blob: &[u8], offset: usize) -> u32 {
        u32::from_be_bytes(blob[offset..offset + 4].try_into().expect("4 bytes"))
    }

    /// The header field at `index` (5.2: magic, totalsize, off_dt_struct,
    /// off_dt_strings, off_mem_rsvmap, version, last_comp_version, boot_cpuid_phys,
    /// size_dt_strings, size_dt_struct).
    fn header(blob: &[u8], index: usize) -> usize {
        be32(blob, 4 * index) as usize
    }

    /// The NUL-terminated string at `offset`.
    fn c_str(bytes: &[u8], offset: usize) -> &str {
        let len = bytes[offset..]
            .iter()
            .position(|&byte| byte == 0)
            .expect("NUL-terminated");
        core::str::from_utf8(&bytes[offset..offset + len]).expect("UTF-8")
    }

    /// Decodes the structure block front to back, checking what 5.4.1 asks of each
    /// token: it starts 4-byte aligned, the bytes padding a name or a value up to
    /// the next token are zero, `nameoff` points at a string in the strings block,
    /// and `FDT_END` is the last token, ending the block where `size_dt_struct`
    /// says.
    fn tokens(blob: &[u8]) -> Vec<Token<'_>> {
        let off_dt_struct = header(blob, 2);
        let off_dt_strings = header(blob, 3);
        let size_dt_strings = header(blob, 8);
        let size_dt_struct = header(blob, 9);
        let strings = &blob[off_dt_strings..off_dt_strings + size_dt_strings];
        let end = off_dt_struct + size_dt_struct;
        let mut offset = off_dt_struct;
        let mut tokens = Vec::new();
        let skip_padding = |offset: usize| {
            let padded = offset.next_multiple_of(4);
            assert!(
                blob[offset..padded].iter().all(|&byte| byte == 0),
                "padding at {offset:#x} is not zero"
            );
            padded
        };
        loop {
            assert!(offset.is_multiple_of(4), "token at {offset:#x} unaligned");
            let token = be32(blob, offset);
            offset += 4;
            match token {
                FDT_BEGIN_NODE => {
                    let name = c_str(blob, offset);
                    offset = skip_padding(offset + name.len() + 1);
                    tokens.push(Token::BeginNode(name));
                }
                FDT_END_NODE => tokens.push(Token::EndNode),
                FDT_PROP => {
                    let len = be32(blob, offset) as usize;
                    let name_offset = be32(blob, offset + 4) as usize;
                    assert!(name_offset < strings.len(), "nameoff past the strings");
                    let value = &blob[offset + 8..offset + 8 + len];
                    offset = skip_padding(offset + 8 + len);
                    tokens.push(Token::Property {
                        name: c_str(strings, name_offset),
                        value,
                    });
                }
                FDT_END => {
                    assert_eq!(offset, end, "FDT_END ends the structure block");
                    return tokens;
                }
                other => panic!("unknown token {other:#x} at {:#x}", offset - 4),
            }
        }
    }

    /// A root with two properties and a `memory@...` child with a string and a reg.
    fn small_tree() -> Blob {
        let mut fdt = FdtWriter::new(256);
        let root = fdt.begin_node("").expect("root");
        fdt.property_u32("#address-cells", 2).expect("u32");
        fdt.property_u32("#size-cells", 2).expect("u32");
        let memory = fdt.begin_node_at("memory", 0x4000_0000).expect("memory");
        fdt.property_string("device_type", "memory")
            .expect("string");
        fdt.property_array_u64("reg", &[0x4000_0000, 0x1000_0000])
            .expect("u64s");
        fdt.end_node(memory).expect("end memory");
        fdt.end_node(root).expect("end root");
        fdt.finish().expect("finish")
    }

    /// 5.2: the header's ten big-endian fields describe the blob: magic 0xd00dfeed,
    /// `totalsize` the whole blob, `version` 17 with `last_comp_version` 16, and each
    /// block's offset and size inside `totalsize`; 5.1: the reservation block, the
    /// structure block and the strings block in that order.
    #[test]
    fn the_header_locates_every_block() {
        let blob = small_tree();
        assert_eq!(header(&blob, 0), 0xd00d_feed, "magic");
        assert_eq!(header(&blob, 1), blob.len(), "totalsize");
        assert_eq!(header(&blob, 5), 17, "version");
        assert_eq!(header(&blob, 6), 16, "last_comp_version");
        assert_eq!(header(&blob, 7), 0, "boot_cpuid_phys");
        let off_dt_struct = header(&blob, 2);
        let off_dt_strings = header(&blob, 3);
        let off_mem_rsvmap = header(&blob, 4);
        let size_dt_strings = header(&blob, 8);
        let size_dt_struct = header(&blob, 9);
        assert_eq!(
            off_mem_rsvmap, 40,
            "the reservation block right after the header"
        );
        assert!(off_mem_rsvmap < off_dt_struct);
        assert!(off_dt_struct + size_dt_struct <= off_dt_strings);
        assert_eq!(off_dt_strings + size_dt_strings, blob.len());
        // 5.5: the strings block is the names, each NUL-terminated.
        let strings = &blob[off_dt_strings..];
        assert_eq!(strings, b"#address-cells\0#size-cells\0device_type\0reg\0");
        // The gap the writer may leave before the strings block is zero.
        let struct_end = off_dt_struct + size_dt_struct;
        assert!(
            blob[struct_end..off_dt_strings]
                .iter()
                .all(|&byte| byte == 0)
        );
    }

    /// 5.3.2: the memory reservation block ends with an entry whose address and size
    /// are both 0; this writer reserves nothing, so that entry is all of it.
    /// 5.6: the block is 8-byte aligned and the structure block 4-byte aligned.
    #[test]
    fn the_reservation_block_is_its_terminator_and_blocks_are_aligned() {
        let blob = small_tree();
        let off_mem_rsvmap = header(&blob, 4);
        let off_dt_struct = header(&blob, 2);
        assert!(off_mem_rsvmap.is_multiple_of(8));
        assert!(off_dt_struct.is_multiple_of(4));
        assert_eq!(off_dt_struct - off_mem_rsvmap, 16);
        assert_eq!(blob[off_mem_rsvmap..off_dt_struct], [0; 16]);
        // The blob's first byte is 8-aligned in memory, so the guest loader can
        // copy it word by word.
        assert!((blob.as_ptr() as usize).is_multiple_of(4));
    }

    /// 5.4.1 and 5.4.2: `FDT_BEGIN_NODE` with the name and its unit address, the
    /// node's `FDT_PROP`s (`len`, `nameoff`, the value, zero padding), its children,
    /// `FDT_END_NODE`, and `FDT_END` after the root; every value big-endian
    /// (2.2.4.2).
    #[test]
    fn the_structure_block_holds_the_tokens_in_order() {
        let blob = small_tree();
        assert_eq!(
            tokens(&blob),
            [
                Token::BeginNode(""),
                Token::Property {
                    name: "#address-cells",
                    value: &[0, 0, 0, 2]
                },
                Token::Property {
                    name: "#size-cells",
                    value: &[0, 0, 0, 2]
                },
                Token::BeginNode("memory@40000000"),
                Token::Property {
                    name: "device_type",
                    value: b"memory\0"
                },
                Token::Property {
                    name: "reg",
                    value: &[0, 0, 0, 0, 0x40, 0, 0, 0, 0, 0, 0, 0, 0x10, 0, 0, 0]
                },
                Token::EndNode,
                Token::EndNode,
            ]
        );
    }

    /// Every kind of value, read back by the `fdt` crate: 2.2.4.2's `<empty>`,
    /// `<u32>`, `<u64>`, `<string>`, `<prop-encoded-array>` and `<stringlist>`, a
    /// path (2.2.3), node names with a unit address and a number (2.2.1).
    #[test]
    fn every_value_kind_reads_back() {
        let mut fdt = FdtWriter::new(0);
        let root = fdt.begin_node("").expect("root");
        fdt.property_string_concat("model", &["transom ", "partition ", "x"])
            .expect("concat");
        let chosen = fdt.begin_node("chosen").expect("chosen");
        fdt.property_path_at("stdout-path", "serial", 0x900_0000)
            .expect("path");
        fdt.end_node(chosen).expect("end");
        let clock = fdt.begin_node_numbered("clock", 24_000_000).expect("clock");
        fdt.property_phandle(7).expect("phandle");
        fdt.end_node(clock).expect("end");
        let device = fdt.begin_node_at("serial", 0x900_0000).expect("serial");
        fdt.property_string_list("compatible", &["arm,pl011", "arm,primecell"])
            .expect("list");
        fdt.property_null("always-on").expect("null");
        fdt.property_u64("linux,initrd-start", 0x1_2345_6789)
            .expect("u64");
        fdt.property_array_u32("clocks", &[7, 7]).expect("u32s");
        fdt.property_cells("interrupts", [0, 1, 4]).expect("cells");
        fdt.property("raw", &[1, 2, 3]).expect("raw");
        fdt.end_node(device).expect("end");
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");

        let tree = Fdt::new_unaligned(&blob).expect("parses");
        let value = |path: &str, name: &str| {
            let node = tree.find_node(path).expect("node");
            node.raw_property(name).expect("property").value
        };
        assert_eq!(value("/", "model"), b"transom partition x\0");
        assert_eq!(value("/chosen", "stdout-path"), b"/serial@9000000\0");
        assert_eq!(value("/clock-24000000", "phandle"), 7u32.to_be_bytes());
        let serial = "/serial@9000000";
        assert_eq!(value(serial, "compatible"), b"arm,pl011\0arm,primecell\0");
        assert_eq!(value(serial, "always-on"), b"");
        assert_eq!(
            value(serial, "linux,initrd-start"),
            0x1_2345_6789u64.to_be_bytes()
        );
        assert_eq!(value(serial, "clocks"), [0, 0, 0, 7, 0, 0, 0, 7]);
        assert_eq!(
            value(serial, "interrupts"),
            [0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 4]
        );
        assert_eq!(value(serial, "raw"), [1, 2, 3]);
        // The structure block after the 3-byte value is padded to the next token.
        assert!(tokens(&blob).contains(&Token::EndNode));
    }

    /// Unit addresses in lower-case hex without leading zeros, 0 as `0`; numbers in
    /// decimal (2.2.1: the unit address "must match the first address specified in
    /// the reg property", and Linux and dtc print it so).
    #[test]
    fn numbers_in_node_names() {
        let mut fdt = FdtWriter::new(0);
        let root = fdt.begin_node("").expect("root");
        for (address, _) in [(0, "cpu@0"), (u64::MAX, "cpu@ffffffffffffffff")] {
            let node = fdt.begin_node_at("cpu", address).expect("cpu");
            fdt.end_node(node).expect("end");
        }
        for number in [0, 1_843_200] {
            let node = fdt.begin_node_numbered("clock", number).expect("clock");
            fdt.end_node(node).expect("end");
        }
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");
        let names: Vec<&str> = tokens(&blob)
            .into_iter()
            .filter_map(|token| match token {
                Token::BeginNode(name) => Some(name),
                _ => None,
            })
            .collect();
        assert_eq!(
            names,
            [
                "",
                "cpu@0",
                "cpu@ffffffffffffffff",
                "clock-0",
                "clock-1843200"
            ]
        );
    }

    /// 5.5: each property name is in the strings block once and every property using
    /// it points at that one copy, whether it is looked up with the same `&str` or
    /// with another holding the same text.
    #[test]
    fn property_names_are_deduplicated() {
        static SAME_TEXT: [u8; 10] = *b"compatible";
        let same_text: &'static str = core::str::from_utf8(&SAME_TEXT).expect("UTF-8");
        assert_ne!(same_text.as_ptr(), "compatible".as_ptr());

        let mut fdt = FdtWriter::new(0);
        let root = fdt.begin_node("").expect("root");
        fdt.property_string("compatible", "a").expect("first");
        for index in 0..3 {
            let node = fdt.begin_node_at("node", index).expect("node");
            fdt.property_string("compatible", "b").expect("same &str");
            fdt.property_string(same_text, "c").expect("same text");
            fdt.property_u32("reg", 0).expect("reg");
            fdt.end_node(node).expect("end");
        }
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");
        let strings = &blob[header(&blob, 3)..];
        assert_eq!(strings, b"compatible\0reg\0");
        let compatibles = tokens(&blob)
            .into_iter()
            .filter(|token| {
                matches!(
                    token,
                    Token::Property {
                        name: "compatible",
                        ..
                    }
                )
            })
            .count();
        assert_eq!(compatibles, 7);
    }

    /// A known name ([`names`]) writes what its text does, byte for byte, and the
    /// two share one entry of the strings block: a tree may mix them.
    #[test]
    fn known_names_write_what_their_text_does() {
        let write = |known: bool| {
            let pick = |name: PropertyName| {
                if known {
                    name
                } else {
                    PropertyName::from(name.as_str())
                }
            };
            let mut fdt = FdtWriter::new(0);
            let root = fdt.begin_node("").expect("root");
            fdt.property_u32(pick(names::ADDRESS_CELLS), 2)
                .expect("cells");
            fdt.property_string(pick(names::COMPATIBLE), "a")
                .expect("compatible");
            let node = fdt.begin_node_at("node", 1).expect("node");
            fdt.property_array_u64(pick(names::REG), &[1, 2])
                .expect("reg");
            fdt.property_string(pick(names::COMPATIBLE), "b")
                .expect("again");
            fdt.property_phandle(7).expect("phandle");
            fdt.end_node(node).expect("end");
            fdt.end_node(root).expect("end");
            fdt.finish().expect("finish")
        };
        let known = write(true);
        assert_eq!(*known, *write(false));
        let strings = &known[header(&known, 3)..];
        assert_eq!(strings, b"#address-cells\0compatible\0reg\0phandle\0");

        // Mixed: the text first, then the known name, then the text again.
        let mut fdt = FdtWriter::new(0);
        let root = fdt.begin_node("").expect("root");
        fdt.property_null("interrupt-controller").expect("text");
        let node = fdt.begin_node_at("node", 1).expect("node");
        fdt.property_null(names::INTERRUPT_CONTROLLER)
            .expect("known");
        fdt.property_null("interrupt-controller")
            .expect("text again");
        fdt.end_node(node).expect("end");
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");
        assert_eq!(&blob[header(&blob, 3)..], b"interrupt-controller\0");
    }

    /// Every known name is a valid property name by 2.2.4.1 (also checked when the
    /// crate is compiled) and the writer's run-time check agrees.
    #[test]
    fn known_names_pass_the_run_time_check() {
        for &name in KNOWN_NAMES {
            assert!(is_property_name(name.as_bytes()), "{name}");
            Strings::new()
                .add(name.as_bytes(), 0)
                .expect("the run-time check passes it");
        }
        assert!(!is_property_name(b""));
        assert!(!is_property_name(b"a b"));
        assert!(!is_property_name(b"0123456789012345678901234567890x"));
    }

    /// More distinct names than the table records: those past it are still
    /// written and pointed at correctly, only not shared (5.5 does not require
    /// sharing).
    #[test]
    fn names_past_the_table_still_resolve() {
        let names: Vec<&'static str> = (0..MAX_RECORDED_NAMES + 10)
            .map(|index| &*Box::leak(format!("name-{index}").into_boxed_str()))
            .collect();
        let mut fdt = FdtWriter::new(0);
        let root = fdt.begin_node("").expect("root");
        for (index, &name) in names.iter().chain(&names).enumerate() {
            fdt.property_u32(name, index as u32).expect("property");
        }
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");
        let read: Vec<(String, u32)> = tokens(&blob)
            .into_iter()
            .filter_map(|token| match token {
                Token::Property { name, value } => Some((
                    String::from(name),
                    u32::from_be_bytes(value.try_into().expect("one cell")),
                )),
                _ => None,
            })
            .collect();
        let expected: Vec<(String, u32)> = names
            .iter()
            .chain(&names)
            .enumerate()
            .map(|(index, &name)| (String::from(name), index as u32))
            .collect();
        assert_eq!(read, expected);
        // The recorded names are shared; only the ten past the table repeat.
        let size_dt_strings = header(&blob, 8);
        let once: usize = names.iter().map(|name| name.len() + 1).sum();
        let repeated: usize = names[MAX_RECORDED_NAMES..]
            .iter()
            .map(|name| name.len() + 1)
            .sum();
        assert_eq!(size_dt_strings, once + repeated);
    }

    /// The errors: a NUL in a string value or a name, names outside 2.2.1 and
    /// 2.2.4.1, and a structure block 5.4.2 would not accept (a property after a
    /// child or outside every node, nodes ended out of order or left open, no root
    /// or two), a phandle twice (2.3.3), nodes nested past [`MAX_DEPTH`].
    #[test]
    fn every_error_is_reported_not_panicked() {
        let open = || {
            let mut fdt = FdtWriter::new(0);
            let root = fdt.begin_node("").expect("root");
            (fdt, root)
        };

        let (mut fdt, _root) = open();
        assert_eq!(
            fdt.property_string("bootargs", "a\0b"),
            Err(Error::NulInString)
        );
        assert_eq!(
            fdt.property_string_list("compatible", &["a", "b\0"]),
            Err(Error::NulInString)
        );
        assert_eq!(
            fdt.property_string_concat("model", &["a", "\0"]),
            Err(Error::NulInString)
        );
        assert_eq!(
            fdt.property_path_at("stdout-path", "se\0rial", 0),
            Err(Error::NulInString)
        );
        assert_eq!(fdt.property_u32("a\0b", 0), Err(Error::NulInString));
        assert_eq!(fdt.begin_node("a\0b").map(drop), Err(Error::NulInString));
        assert_eq!(
            fdt.begin_node_at("a\0", 0).map(drop),
            Err(Error::NulInString)
        );

        for name in ["", "0abc", "a b", "a@1@2", "a@", "a@x y", "@1"] {
            assert_eq!(
                fdt.begin_node(name).map(drop),
                Err(Error::InvalidNodeName),
                "{name:?}"
            );
        }
        let long = "a".repeat(MAX_NAME_LEN + 1);
        assert_eq!(fdt.begin_node(&long).map(drop), Err(Error::InvalidNodeName));
        assert_eq!(
            fdt.begin_node_at("a@b", 1).map(drop),
            Err(Error::InvalidNodeName)
        );
        assert_eq!(
            fdt.begin_node_numbered(&"c".repeat(20), u64::MAX).map(drop),
            Err(Error::InvalidNodeName)
        );
        let valid = fdt
            .begin_node("Vendor,Name_1.x+y-z@1,A")
            .expect("table 2.1");
        fdt.end_node(valid).expect("end");

        let (mut fdt, _root) = open();
        let long: &'static str = Box::leak("p".repeat(MAX_NAME_LEN + 1).into_boxed_str());
        for name in ["", "a b", "a@b", "a/b", long] {
            assert_eq!(
                fdt.property_null(name),
                Err(Error::InvalidPropertyName),
                "{name:?}"
            );
        }
        fdt.property_null("#a,b.c_d+e?f-G1").expect("table 2.2");

        let (mut fdt, root) = open();
        let child = fdt.begin_node("child").expect("child");
        fdt.end_node(child).expect("end child");
        assert_eq!(fdt.property_u32("late", 1), Err(Error::PropertyAfterChild));
        fdt.end_node(root).expect("end root");
        assert_eq!(
            fdt.property_u32("outside", 1),
            Err(Error::PropertyOutsideNode)
        );
        assert_eq!(fdt.begin_node("").map(drop), Err(Error::NotOneRoot));

        let mut fdt = FdtWriter::new(0);
        assert_eq!(
            fdt.property_u32("outside", 1),
            Err(Error::PropertyOutsideNode)
        );
        assert_eq!(
            fdt.begin_node("named").map(drop),
            Err(Error::InvalidNodeName)
        );
        assert_eq!(FdtWriter::new(0).finish().map(drop), Err(Error::NotOneRoot));

        let (mut fdt, root) = open();
        let child = fdt.begin_node("child").expect("child");
        assert_eq!(fdt.end_node(root), Err(Error::EndedOutOfOrder));
        fdt.end_node(child).expect("end child");
        assert_eq!(fdt.finish().map(drop), Err(Error::UnclosedNode));

        let (mut fdt, _root) = open();
        let mut nodes = vec![];
        while fdt.depth < MAX_DEPTH {
            nodes.push(fdt.begin_node("n").expect("nested"));
        }
        assert_eq!(fdt.begin_node("n").map(drop), Err(Error::TooDeep));

        // Past the phandles kept inline too.
        let (mut fdt, _root) = open();
        for phandle in 1..=2 * INLINE_PHANDLES as u32 {
            let node = fdt
                .begin_node_numbered("node", phandle.into())
                .expect("node");
            fdt.property_phandle(phandle).expect("first use");
            fdt.end_node(node).expect("end");
        }
        for phandle in [1, 2 * INLINE_PHANDLES as u32] {
            let node = fdt.begin_node("again").expect("node");
            assert_eq!(
                fdt.property_phandle(phandle),
                Err(Error::DuplicatePhandle { phandle })
            );
            fdt.end_node(node).expect("end");
        }
    }

    /// A string refused for its NUL leaves the structure block as it was: the
    /// node goes on and the blob holds no trace of the refused property.
    #[test]
    fn a_refused_string_leaves_nothing_behind() {
        let mut fdt = FdtWriter::new(0);
        let root = fdt.begin_node("").expect("root");
        let refused: [(&str, Result<(), Error>); 4] = [
            ("string", fdt.property_string("bootargs", "quiet\0")),
            (
                "list",
                fdt.property_string_list("compatible", &["a", "b\0c"]),
            ),
            (
                "concat",
                fdt.property_string_concat("model", &["abcd", "\0"]),
            ),
            ("path", fdt.property_path_at("stdout-path", "\0", 0)),
        ];
        for (what, result) in refused {
            assert_eq!(result, Err(Error::NulInString), "{what}");
        }
        fdt.property_string("bootargs", "quiet")
            .expect("the node goes on");
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");
        assert_eq!(
            tokens(&blob),
            [
                Token::BeginNode(""),
                Token::Property {
                    name: "bootargs",
                    value: b"quiet\0"
                },
                Token::EndNode,
            ]
        );
    }

    /// Strings of every length against the 4-byte padding (5.4.1): each value is
    /// its bytes and NUL, followed by zeros up to the next token.
    #[test]
    fn strings_of_every_length_are_padded() {
        let texts = [
            "",
            "a",
            "ab",
            "abc",
            "abcd",
            "abcde",
            "abcdefgh",
            "abcdefghi",
        ];
        let mut fdt = FdtWriter::new(0);
        let root = fdt.begin_node("").expect("root");
        for (index, text) in texts.iter().enumerate() {
            let node = fdt.begin_node_at("n", index as u64).expect("node");
            fdt.property_string("s", text).expect("string");
            fdt.property_string_list("l", &[text, "x", text])
                .expect("list");
            fdt.property_string_concat("c", &[text, "yz", text])
                .expect("concat");
            fdt.end_node(node).expect("end");
        }
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");
        let values: Vec<Vec<u8>> = tokens(&blob)
            .into_iter()
            .filter_map(|token| match token {
                Token::Property { value, .. } => Some(value.to_vec()),
                _ => None,
            })
            .collect();
        let expected: Vec<Vec<u8>> = texts
            .iter()
            .flat_map(|text| {
                [
                    format!("{text}\0"),
                    format!("{text}\0x\0{text}\0"),
                    format!("{text}yz{text}\0"),
                ]
            })
            .map(String::into_bytes)
            .collect();
        assert_eq!(values, expected);
    }

    /// Each error's message names what is wrong.
    #[test]
    fn error_messages() {
        assert_eq!(Error::NulInString.to_string(), "a string holds a NUL byte");
        assert_eq!(
            Error::PropertyAfterChild.to_string(),
            "a property after a child node: a node's properties come first"
        );
        assert_eq!(
            Error::DuplicatePhandle { phandle: 2 }.to_string(),
            "phandle 0x2 given to two nodes"
        );
        assert_eq!(Error::TooDeep.to_string(), "nodes nested deeper than 64");
    }
}
