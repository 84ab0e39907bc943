//! The guest bundle: one file that carries each partition's kernel image, initrd and
//! command line to the hypervisor.
//!
//! The firmware loads the bundle as the initrd (QEMU `-initrd`; on a Pi, `initramfs`
//! in `config.txt`) and names it in the firmware tree's `/chosen`
//! (`linux,initrd-start`, `linux,initrd-end`). The hypervisor reads it there with
//! [`Bundle::parse`] and gives each partition its files ([`Bundle::guest`]).
//! `cargo xtask qemu --guest ...` writes one with [`BundleBuilder`].
//!
//! # Format, version 2
//!
//! Every integer is little-endian; every offset counts from the bundle's first byte.
//!
//! The header, 32 bytes:
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 8 | magic | `b"TRANSOMB"` ([`MAGIC`]) |
//! | 8 | 4 | version | 2 ([`VERSION`]) |
//! | 12 | 4 | entry count | the number of entries in the table |
//! | 16 | 8 | total length | bytes in the whole bundle, header included |
//! | 24 | 8 | reserved | 0 |
//!
//! The entry table follows the header, 56 bytes per entry:
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 32 | partition | the partition's name as the board table spells it: 1 to 31 bytes of UTF-8 without NUL, then NUL bytes to the end of the field |
//! | 32 | 4 | kind | 1 kernel image, 2 initrd, 3 command line, 4 boot-info request ([`EntryKind`]) |
//! | 36 | 4 | reserved | 0 |
//! | 40 | 8 | offset | where the payload starts: a multiple of 8 |
//! | 48 | 8 | length | the payload's length in bytes |
//!
//! The payloads follow the table, in entry order: each starts at a multiple of 8, at or
//! after the end of the table and of the payload before it, and ends within the total
//! length. Padding between payloads is written as zeros and never read. An entry may
//! instead share the payload of an earlier entry of its kind, by naming exactly that
//! entry's offset and length: two partitions booting the same kernel carry it once
//! (a Linux `Image` is some 30 MiB, which a Pi's firmware reads from the SD card).
//! The hypervisor copies every payload into its partition's RAM, so a shared payload
//! is never shared memory between partitions.
//!
//! Version 2 added shared payloads; version 1 bundles had none.
//!
//! Rules on the entries:
//!
//! - at most one entry of each kind per partition;
//! - a partition with an initrd, a command line or a boot-info request has a kernel
//!   image too;
//! - a boot-info request has an empty payload: it marks the image as Transom-native,
//!   and the guest gets the address of its boot-info page ([`super::boot_info`]) in
//!   x1 (other guests get x1 = 0, as Linux's booting document requires);
//! - a command line is UTF-8 without NUL (the hypervisor adds the terminator when it
//!   writes the guest's `/chosen/bootargs`).
//!
//! A file longer than the total length is read as the bundle followed by padding
//! (firmware may round what it loads up); a shorter one is truncated and refused. A
//! reader refuses every version but its own: the version changes whenever the layout
//! does.

use alloc::vec::Vec;
use core::fmt;

/// The first 8 bytes of every bundle.
pub const MAGIC: [u8; 8] = *b"TRANSOMB";

/// The format version this module reads and writes.
pub const VERSION: u32 = 2;

/// Size of the header.
pub const HEADER_SIZE: usize = 32;

/// Size of one entry of the table.
pub const ENTRY_SIZE: usize = 56;

/// Size of an entry's partition name field.
pub const NAME_FIELD_SIZE: usize = 32;

/// The longest partition name: the field keeps at least one terminating NUL.
pub const MAX_NAME_LEN: usize = NAME_FIELD_SIZE - 1;

/// Payloads start at multiples of this.
pub const PAYLOAD_ALIGNMENT: u64 = 8;

/// Header field offsets.
const VERSION_OFFSET: usize = 8;
const ENTRY_COUNT_OFFSET: usize = 12;
const TOTAL_LENGTH_OFFSET: usize = 16;
const HEADER_RESERVED_OFFSET: usize = 24;

/// Entry field offsets.
const KIND_OFFSET: usize = 32;
const ENTRY_RESERVED_OFFSET: usize = 36;
const PAYLOAD_OFFSET_OFFSET: usize = 40;
const PAYLOAD_LENGTH_OFFSET: usize = 48;

/// What an entry's payload is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u32)]
pub enum EntryKind {
    /// An arm64 Linux `Image` (see [`super::image`]).
    Image = 1,
    /// An initrd (initramfs), handed to the guest as is.
    Initrd = 2,
    /// The guest's kernel command line: UTF-8 without NUL.
    CommandLine = 3,
    /// No payload: the image is Transom-native and wants its boot-info page's
    /// address in x1.
    BootInfo = 4,
}

impl EntryKind {
    /// Every kind, in code order.
    pub const ALL: [EntryKind; 4] = [
        EntryKind::Image,
        EntryKind::Initrd,
        EntryKind::CommandLine,
        EntryKind::BootInfo,
    ];

    /// The kind with `code`, if there is one.
    pub fn from_code(code: u32) -> Option<EntryKind> {
        EntryKind::ALL.into_iter().find(|kind| kind.code() == code)
    }

    /// The code in the entry's kind field.
    pub fn code(self) -> u32 {
        self as u32
    }

    /// How the kind is written in messages: `kernel image`, `initrd`, `command line`.
    pub fn label(self) -> &'static str {
        match self {
            EntryKind::Image => "kernel image",
            EntryKind::Initrd => "initrd",
            EntryKind::CommandLine => "command line",
            EntryKind::BootInfo => "boot-info request",
        }
    }
}

impl fmt::Display for EntryKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A partition name (1 to [`MAX_NAME_LEN`] bytes of UTF-8 without NUL), held by value
/// so errors can name the partition.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PartitionName {
    bytes: [u8; MAX_NAME_LEN],
    len: u8,
}

impl PartitionName {
    /// `name`, checked: the error says what is wrong, for entry `entry`.
    pub fn new(name: &str, entry: usize) -> Result<PartitionName, BundleError> {
        if name.is_empty() {
            return Err(BundleError::NameEmpty { entry });
        }
        if name.len() > MAX_NAME_LEN {
            return Err(BundleError::NameTooLong {
                entry,
                length: name.len(),
            });
        }
        if let Some(at) = name.bytes().position(|byte| byte == 0) {
            return Err(BundleError::NameHasNul { entry, at });
        }
        let mut bytes = [0; MAX_NAME_LEN];
        bytes[..name.len()].copy_from_slice(name.as_bytes());
        Ok(PartitionName {
            bytes,
            len: name.len() as u8,
        })
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.len)])
            .expect("a PartitionName is built from a &str")
    }
}

impl fmt::Display for PartitionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for PartitionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Why bytes are not a bundle, or why a builder refused an entry. Entries count from
/// 0 in table order; for the builder, `entry` is the index the entry would have had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BundleError {
    /// Fewer bytes than the header.
    HeaderTruncated {
        /// The bytes there are.
        actual: usize,
    },
    /// The first 8 bytes are not [`MAGIC`].
    BadMagic {
        /// The bytes found.
        found: [u8; 8],
    },
    /// A version this hypervisor does not read.
    UnsupportedVersion {
        /// The header's version.
        found: u32,
    },
    /// The header's reserved field is not 0.
    HeaderReserved {
        /// Its value.
        value: u64,
    },
    /// Fewer bytes than the header's total length.
    Truncated {
        /// The header's total length.
        declared: u64,
        /// The bytes there are.
        actual: u64,
    },
    /// The entry table reaches past the total length.
    TableOutOfBounds {
        /// The header's entry count.
        entries: u32,
        /// Where the table would end.
        table_end: u64,
        /// The header's total length.
        total: u64,
    },
    /// An entry's partition name is empty.
    NameEmpty {
        /// The entry.
        entry: usize,
    },
    /// An entry's partition name is longer than [`MAX_NAME_LEN`] bytes.
    NameTooLong {
        /// The entry.
        entry: usize,
        /// The name's length (32 in a bundle: a field with no terminating NUL).
        length: usize,
    },
    /// An entry's partition name has a NUL byte inside it.
    NameHasNul {
        /// The entry.
        entry: usize,
        /// The NUL's index in the name.
        at: usize,
    },
    /// An entry's partition name is not UTF-8.
    NameNotUtf8 {
        /// The entry.
        entry: usize,
        /// The index of the first byte that is not.
        valid_up_to: usize,
    },
    /// An entry's kind is none of [`EntryKind`].
    UnknownKind {
        /// The entry.
        entry: usize,
        /// The kind field.
        kind: u32,
    },
    /// A boot-info request carries a payload.
    BootInfoPayload {
        /// The partition.
        partition: PartitionName,
        /// The payload's length.
        length: u64,
    },
    /// An entry's reserved field is not 0.
    EntryReserved {
        /// The entry.
        entry: usize,
        /// Its value.
        value: u32,
    },
    /// An entry's payload offset is not a multiple of [`PAYLOAD_ALIGNMENT`].
    Misaligned {
        /// The entry.
        entry: usize,
        /// The payload offset.
        offset: u64,
    },
    /// An entry's payload ends past the total length.
    OutOfBounds {
        /// The entry.
        entry: usize,
        /// The payload offset.
        offset: u64,
        /// The payload length.
        length: u64,
        /// The header's total length.
        total: u64,
    },
    /// An entry's payload starts inside the header or the entry table.
    OverlapsTable {
        /// The entry.
        entry: usize,
        /// The payload offset.
        offset: u64,
        /// Where the table ends.
        table_end: u64,
    },
    /// An entry's payload starts before the previous entry's payload ends, and is
    /// not an earlier entry's payload of its kind.
    Overlapping {
        /// The entry.
        entry: usize,
        /// The payload offset.
        offset: u64,
        /// Where the previous entry's payload ends.
        previous_end: u64,
    },
    /// Two entries of one kind for one partition.
    Duplicate {
        /// The partition.
        partition: PartitionName,
        /// The kind.
        kind: EntryKind,
    },
    /// A partition has an initrd or a command line but no kernel image.
    MissingImage {
        /// The partition.
        partition: PartitionName,
        /// What it has.
        kind: EntryKind,
    },
    /// A command line is not UTF-8.
    CommandLineNotUtf8 {
        /// The partition.
        partition: PartitionName,
        /// The index of the first byte that is not.
        valid_up_to: usize,
    },
    /// A command line has a NUL byte.
    CommandLineHasNul {
        /// The partition.
        partition: PartitionName,
        /// The NUL's index.
        at: usize,
    },
}

impl fmt::Display for BundleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            BundleError::HeaderTruncated { actual } => write!(
                f,
                "too short: {actual} bytes, the guest bundle header alone is {HEADER_SIZE}"
            ),
            BundleError::BadMagic { found } => write!(
                f,
                "not a Transom guest bundle: it starts with b\"{}\", not b\"{}\"",
                found.escape_ascii(),
                MAGIC.escape_ascii()
            ),
            BundleError::UnsupportedVersion { found } => write!(
                f,
                "guest bundle format version {found}: this hypervisor reads version \
                 {VERSION} only (rebuild the bundle with this tree's cargo xtask)"
            ),
            BundleError::HeaderReserved { value } => write!(
                f,
                "the header's reserved field (offset {HEADER_RESERVED_OFFSET}) is {value:#x}, not 0"
            ),
            BundleError::Truncated { declared, actual } => write!(
                f,
                "truncated: the header declares {declared} bytes, only {actual} are there"
            ),
            BundleError::TableOutOfBounds {
                entries,
                table_end,
                total,
            } => write!(
                f,
                "the entry table ({entries} entries of {ENTRY_SIZE} bytes) ends at \
                 {table_end:#x}, past the total length {total:#x}"
            ),
            BundleError::NameEmpty { entry } => {
                write!(f, "entry {entry}: the partition name is empty")
            }
            BundleError::NameTooLong { entry, length } => write!(
                f,
                "entry {entry}: the partition name is {length} bytes, at most \
                 {MAX_NAME_LEN} fit (a {NAME_FIELD_SIZE}-byte field ending in NUL)"
            ),
            BundleError::NameHasNul { entry, at } => write!(
                f,
                "entry {entry}: the partition name has a NUL byte inside it (at byte {at})"
            ),
            BundleError::NameNotUtf8 { entry, valid_up_to } => write!(
                f,
                "entry {entry}: the partition name is not UTF-8 (from byte {valid_up_to})"
            ),
            BundleError::UnknownKind { entry, kind } => write!(
                f,
                "entry {entry}: unknown kind {kind} (1 = kernel image, 2 = initrd, \
                 3 = command line, 4 = boot-info request)"
            ),
            BundleError::BootInfoPayload { partition, length } => write!(
                f,
                "partition {partition}: a boot-info request has no payload, this one has {length} bytes"
            ),
            BundleError::EntryReserved { entry, value } => write!(
                f,
                "entry {entry}: the reserved field (offset {ENTRY_RESERVED_OFFSET}) is \
                 {value:#x}, not 0"
            ),
            BundleError::Misaligned { entry, offset } => write!(
                f,
                "entry {entry}: the payload offset {offset:#x} is not a multiple of \
                 {PAYLOAD_ALIGNMENT}"
            ),
            BundleError::OutOfBounds {
                entry,
                offset,
                length,
                total,
            } => write!(
                f,
                "entry {entry}: the payload at {offset:#x} of {length:#x} bytes ends at \
                 {:#x}, past the total length {total:#x}",
                u128::from(offset) + u128::from(length)
            ),
            BundleError::OverlapsTable {
                entry,
                offset,
                table_end,
            } => write!(
                f,
                "entry {entry}: the payload at {offset:#x} overlaps the header and entry \
                 table, which end at {table_end:#x}"
            ),
            BundleError::Overlapping {
                entry,
                offset,
                previous_end,
            } => write!(
                f,
                "entry {entry}: the payload at {offset:#x} overlaps entry {}'s, which \
                 ends at {previous_end:#x} (payloads follow one another in entry order, \
                 or share an earlier entry's of their kind exactly)",
                entry.saturating_sub(1)
            ),
            BundleError::Duplicate { partition, kind } => {
                write!(f, "partition {partition} has two {kind} entries")
            }
            BundleError::MissingImage { partition, kind } => {
                let what = match kind {
                    EntryKind::Image => "a kernel image",
                    EntryKind::Initrd => "an initrd",
                    EntryKind::CommandLine => "a command line",
                    EntryKind::BootInfo => "a boot-info request",
                };
                write!(f, "partition {partition} has {what} but no kernel image")
            }
            BundleError::CommandLineNotUtf8 {
                partition,
                valid_up_to,
            } => write!(
                f,
                "the command line of partition {partition} is not UTF-8 (from byte \
                 {valid_up_to})"
            ),
            BundleError::CommandLineHasNul { partition, at } => write!(
                f,
                "the command line of partition {partition} has a NUL byte (at byte {at})"
            ),
        }
    }
}

impl core::error::Error for BundleError {}

/// One entry of a parsed bundle.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// The partition it is for.
    pub partition: &'a str,
    /// What the payload is.
    pub kind: EntryKind,
    /// The payload.
    pub payload: &'a [u8],
}

/// What one partition's guest boots with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestFiles<'a> {
    /// The kernel image (an arm64 `Image`; check it with [`super::image::parse`]).
    pub image: &'a [u8],
    /// The initrd, if any.
    pub initrd: Option<&'a [u8]>,
    /// The kernel command line, if any.
    pub command_line: Option<&'a str>,
    /// Whether the guest is Transom-native and gets a boot-info page.
    pub boot_info: bool,
}

/// A checked bundle, borrowing its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Bundle<'a> {
    total_length: u64,
    entries: Vec<Entry<'a>>,
    /// Each partition with its files, in the order of their image entries.
    guests: Vec<(&'a str, GuestFiles<'a>)>,
}

impl<'a> Bundle<'a> {
    /// Reads and checks a bundle: every rule of the format (see the module
    /// documentation). Bytes past the total length are ignored.
    pub fn parse(bytes: &'a [u8]) -> Result<Bundle<'a>, BundleError> {
        let header = Header::read(bytes)?;
        // `Header::read` checked the bytes hold `total_length`.
        let bundle = &bytes[..header.total_length as usize];
        let mut entries = Vec::with_capacity(header.entry_count as usize);
        let mut free_from = header.table_end();
        for index in 0..header.entry_count as usize {
            let (entry, end) = read_entry(bundle, index, free_from, header.table_end(), &entries)?;
            free_from = free_from.max(end);
            if entries.iter().any(|seen: &Entry<'_>| {
                seen.partition == entry.partition && seen.kind == entry.kind
            }) {
                return Err(BundleError::Duplicate {
                    partition: PartitionName::new(entry.partition, index)?,
                    kind: entry.kind,
                });
            }
            entries.push(entry);
        }
        let guests = collect_guests(&entries)?;
        Ok(Bundle {
            total_length: header.total_length,
            entries,
            guests,
        })
    }

    /// The bundle's length from its header (the file may be longer).
    pub fn total_length(&self) -> u64 {
        self.total_length
    }

    /// Every entry, in table order.
    pub fn entries(&self) -> &[Entry<'a>] {
        &self.entries
    }

    /// The files of `partition`'s guest, if the bundle has them.
    pub fn guest(&self, partition: &str) -> Option<GuestFiles<'a>> {
        self.guests
            .iter()
            .find(|(name, _)| *name == partition)
            .map(|(_, files)| *files)
    }

    /// The partitions the bundle has a guest for, in the order of their image entries.
    pub fn partitions(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.guests.iter().map(|(name, _)| *name)
    }
}

/// The header's fields, checked.
struct Header {
    entry_count: u32,
    total_length: u64,
}

impl Header {
    fn read(bytes: &[u8]) -> Result<Header, BundleError> {
        if let Some(magic) = bytes.first_chunk::<8>()
            && *magic != MAGIC
        {
            return Err(BundleError::BadMagic { found: *magic });
        }
        let Some(header) = bytes.first_chunk::<HEADER_SIZE>() else {
            return Err(BundleError::HeaderTruncated {
                actual: bytes.len(),
            });
        };
        let version = read_u32(header, VERSION_OFFSET);
        if version != VERSION {
            return Err(BundleError::UnsupportedVersion { found: version });
        }
        let reserved = read_u64(header, HEADER_RESERVED_OFFSET);
        if reserved != 0 {
            return Err(BundleError::HeaderReserved { value: reserved });
        }
        let checked = Header {
            entry_count: read_u32(header, ENTRY_COUNT_OFFSET),
            total_length: read_u64(header, TOTAL_LENGTH_OFFSET),
        };
        let actual = bytes.len() as u64;
        if actual < checked.total_length {
            return Err(BundleError::Truncated {
                declared: checked.total_length,
                actual,
            });
        }
        if checked.table_end() > checked.total_length {
            return Err(BundleError::TableOutOfBounds {
                entries: checked.entry_count,
                table_end: checked.table_end(),
                total: checked.total_length,
            });
        }
        Ok(checked)
    }

    /// Where the entry table ends (no overflow: at most 32 + 56 * (2^32 - 1)).
    fn table_end(&self) -> u64 {
        HEADER_SIZE as u64 + u64::from(self.entry_count) * ENTRY_SIZE as u64
    }
}

/// Reads entry `index` of `bundle` (exactly `total_length` bytes), whose payload may
/// start no earlier than `free_from`; returns it and where its payload ends.
fn read_entry<'a>(
    bundle: &'a [u8],
    index: usize,
    free_from: u64,
    table_end: u64,
    earlier: &[Entry<'a>],
) -> Result<(Entry<'a>, u64), BundleError> {
    let start = HEADER_SIZE + index * ENTRY_SIZE;
    let raw: &[u8; ENTRY_SIZE] = bundle[start..start + ENTRY_SIZE]
        .try_into()
        .expect("the table lies inside the bundle (checked with the header)");
    let partition = read_name(raw, index)?;
    let code = read_u32(raw, KIND_OFFSET);
    let kind = EntryKind::from_code(code).ok_or(BundleError::UnknownKind {
        entry: index,
        kind: code,
    })?;
    let reserved = read_u32(raw, ENTRY_RESERVED_OFFSET);
    if reserved != 0 {
        return Err(BundleError::EntryReserved {
            entry: index,
            value: reserved,
        });
    }
    let offset = read_u64(raw, PAYLOAD_OFFSET_OFFSET);
    let length = read_u64(raw, PAYLOAD_LENGTH_OFFSET);
    if offset % PAYLOAD_ALIGNMENT != 0 {
        return Err(BundleError::Misaligned {
            entry: index,
            offset,
        });
    }
    if offset < table_end {
        return Err(BundleError::OverlapsTable {
            entry: index,
            offset,
            table_end,
        });
    }
    // The exact payload of an earlier entry of this kind, which is in bounds.
    let shares_earlier = || {
        earlier.iter().any(|seen| {
            seen.kind == kind
                && seen.payload.len() as u64 == length
                && seen.payload.as_ptr() as usize - bundle.as_ptr() as usize == offset as usize
        })
    };
    if offset < free_from && !shares_earlier() {
        return Err(BundleError::Overlapping {
            entry: index,
            offset,
            previous_end: free_from,
        });
    }
    let total = bundle.len() as u64;
    let out_of_bounds = BundleError::OutOfBounds {
        entry: index,
        offset,
        length,
        total,
    };
    let end = offset.checked_add(length).ok_or(out_of_bounds)?;
    if end > total {
        return Err(out_of_bounds);
    }
    let entry = Entry {
        partition,
        kind,
        // In bounds: `end <= total == bundle.len()`.
        payload: &bundle[offset as usize..end as usize],
    };
    Ok((entry, end))
}

/// The name in an entry's 32-byte field: bytes up to the first NUL, and only NULs
/// after it.
fn read_name(raw: &[u8; ENTRY_SIZE], entry: usize) -> Result<&str, BundleError> {
    let field = &raw[..NAME_FIELD_SIZE];
    let Some(length) = field.iter().position(|&byte| byte == 0) else {
        return Err(BundleError::NameTooLong {
            entry,
            length: NAME_FIELD_SIZE,
        });
    };
    if length == 0 {
        return Err(BundleError::NameEmpty { entry });
    }
    if let Some(last_byte) = field.iter().rposition(|&byte| byte != 0)
        && last_byte > length
    {
        return Err(BundleError::NameHasNul { entry, at: length });
    }
    core::str::from_utf8(&field[..length]).map_err(|error| BundleError::NameNotUtf8 {
        entry,
        valid_up_to: error.valid_up_to(),
    })
}

/// Groups the entries by partition; every partition needs a kernel image.
fn collect_guests<'a>(
    entries: &[Entry<'a>],
) -> Result<Vec<(&'a str, GuestFiles<'a>)>, BundleError> {
    let mut guests: Vec<(&'a str, GuestFiles<'a>)> = entries
        .iter()
        .filter(|entry| entry.kind == EntryKind::Image)
        .map(|entry| {
            let files = GuestFiles {
                image: entry.payload,
                initrd: None,
                command_line: None,
                boot_info: false,
            };
            (entry.partition, files)
        })
        .collect();
    for (index, entry) in entries.iter().enumerate() {
        let name = PartitionName::new(entry.partition, index)?;
        let Some((_, files)) = guests
            .iter_mut()
            .find(|(partition, _)| *partition == entry.partition)
        else {
            return Err(BundleError::MissingImage {
                partition: name,
                kind: entry.kind,
            });
        };
        match entry.kind {
            EntryKind::Image => {}
            EntryKind::Initrd => files.initrd = Some(entry.payload),
            EntryKind::CommandLine => {
                files.command_line = Some(command_line(name, entry.payload)?);
            }
            EntryKind::BootInfo => {
                boot_info_request(name, entry.payload)?;
                files.boot_info = true;
            }
        }
    }
    Ok(guests)
}

/// A boot-info request's payload: empty.
fn boot_info_request(partition: PartitionName, bytes: &[u8]) -> Result<(), BundleError> {
    if bytes.is_empty() {
        Ok(())
    } else {
        Err(BundleError::BootInfoPayload {
            partition,
            length: bytes.len() as u64,
        })
    }
}

/// `bytes` as a command line: UTF-8 without NUL.
fn command_line(partition: PartitionName, bytes: &[u8]) -> Result<&str, BundleError> {
    let line = core::str::from_utf8(bytes).map_err(|error| BundleError::CommandLineNotUtf8 {
        partition,
        valid_up_to: error.valid_up_to(),
    })?;
    if let Some(at) = bytes.iter().position(|&byte| byte == 0) {
        return Err(BundleError::CommandLineHasNul { partition, at });
    }
    Ok(line)
}

/// Writes a bundle: entries in the order they are added, payloads after the table in
/// the same order, each 8-aligned.
///
/// Each [`add`](BundleBuilder::add) is checked on its own; a partition given an
/// initrd or a command line must also be given a kernel image, or the bundle
/// [`finish`](BundleBuilder::finish) writes will not parse
/// ([`BundleError::MissingImage`]).
#[derive(Clone, Debug, Default)]
pub struct BundleBuilder {
    entries: Vec<(PartitionName, EntryKind, Vec<u8>)>,
}

impl BundleBuilder {
    /// An empty bundle.
    pub fn new() -> BundleBuilder {
        BundleBuilder::default()
    }

    /// Adds `partition`'s payload of `kind`. Refuses a name that is empty, longer
    /// than [`MAX_NAME_LEN`] bytes or holds a NUL, a second entry of one kind for one
    /// partition, and a command line with a NUL.
    pub fn add(
        &mut self,
        partition: &str,
        kind: EntryKind,
        bytes: &[u8],
    ) -> Result<(), BundleError> {
        let name = PartitionName::new(partition, self.entries.len())?;
        if self
            .entries
            .iter()
            .any(|(seen, seen_kind, _)| *seen == name && *seen_kind == kind)
        {
            return Err(BundleError::Duplicate {
                partition: name,
                kind,
            });
        }
        if kind == EntryKind::CommandLine {
            command_line(name, bytes)?;
        }
        if kind == EntryKind::BootInfo {
            boot_info_request(name, bytes)?;
        }
        self.entries.push((name, kind, bytes.to_vec()));
        Ok(())
    }

    /// The bundle's bytes. A payload equal to an earlier one of its kind (one
    /// kernel for two partitions) is written once, and both entries name it.
    pub fn finish(self) -> Vec<u8> {
        let count = self.entries.len();
        let table_end = HEADER_SIZE + count * ENTRY_SIZE;
        // Each payload's offset, and whether it is written there (not an earlier
        // entry's of its kind, which it shares).
        let mut offsets: Vec<(usize, bool)> = Vec::with_capacity(count);
        let mut cursor = table_end;
        for (index, (_, kind, payload)) in self.entries.iter().enumerate() {
            let shared = self.entries[..index]
                .iter()
                .zip(&offsets)
                .find(|((_, seen_kind, seen), (_, written))| {
                    *written && seen_kind == kind && !payload.is_empty() && seen == payload
                })
                .map(|(_, &(offset, _))| offset);
            match shared {
                Some(offset) => offsets.push((offset, false)),
                None => {
                    let offset = cursor.next_multiple_of(PAYLOAD_ALIGNMENT as usize);
                    offsets.push((offset, true));
                    cursor = offset + payload.len();
                }
            }
        }
        let total_length = cursor;

        let mut bytes = Vec::with_capacity(total_length);
        bytes.extend_from_slice(&MAGIC);
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        let count_field = u32::try_from(count).expect("fewer than 2^32 entries");
        bytes.extend_from_slice(&count_field.to_le_bytes());
        bytes.extend_from_slice(&(total_length as u64).to_le_bytes());
        bytes.extend_from_slice(&0u64.to_le_bytes());
        for ((name, kind, payload), offset) in self.entries.iter().zip(&offsets) {
            let mut field = [0u8; NAME_FIELD_SIZE];
            field[..name.as_str().len()].copy_from_slice(name.as_str().as_bytes());
            bytes.extend_from_slice(&field);
            bytes.extend_from_slice(&kind.code().to_le_bytes());
            bytes.extend_from_slice(&0u32.to_le_bytes());
            bytes.extend_from_slice(&(offset.0 as u64).to_le_bytes());
            bytes.extend_from_slice(&(payload.len() as u64).to_le_bytes());
        }
        for ((_, _, payload), &(offset, written)) in self.entries.iter().zip(&offsets) {
            if written {
                bytes.resize(offset, 0);
                bytes.extend_from_slice(payload);
            }
        }
        bytes
    }
}

fn read_u32<const N: usize>(fields: &[u8; N], offset: usize) -> u32 {
    let mut field = [0; 4];
    field.copy_from_slice(&fields[offset..offset + 4]);
    u32::from_le_bytes(field)
}

fn read_u64<const N: usize>(fields: &[u8; N], offset: usize) -> u64 {
    let mut field = [0; 8];
    field.copy_from_slice(&fields[offset..offset + 8]);
    u64::from_le_bytes(field)
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;
    use alloc::vec;

    use proptest::prelude::*;

    use super::*;

    /// Where field `field` of entry `index` lies.
    fn entry_field(index: usize, field: usize) -> usize {
        HEADER_SIZE + index * ENTRY_SIZE + field
    }

    fn put_u32(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn put_u64(bytes: &mut [u8], at: usize, value: u64) {
        bytes[at..at + 8].copy_from_slice(&value.to_le_bytes());
    }

    fn name(partition: &str) -> PartitionName {
        PartitionName::new(partition, 0).expect("a valid name")
    }

    /// linux-a: a 13-byte image (so the next payload needs padding), an initrd and a
    /// command line; linux-b: an image only.
    fn sample() -> Vec<u8> {
        let mut builder = BundleBuilder::new();
        builder
            .add("linux-a", EntryKind::Image, b"image of a..")
            .expect("add");
        builder
            .add("linux-a", EntryKind::Initrd, &[0x30, 0x37, 0x30, 0x37])
            .expect("add");
        builder
            .add(
                "linux-a",
                EntryKind::CommandLine,
                b"console=ttyAMA0 earlycon",
            )
            .expect("add");
        builder
            .add("linux-b", EntryKind::Image, b"image of b")
            .expect("add");
        builder.finish()
    }

    #[test]
    fn round_trip_gives_every_partition_its_files() {
        let bytes = sample();
        let bundle = Bundle::parse(&bytes).expect("parses");
        assert_eq!(bundle.total_length(), bytes.len() as u64);
        assert_eq!(
            bundle.partitions().collect::<Vec<_>>(),
            ["linux-a", "linux-b"]
        );
        assert_eq!(
            bundle.guest("linux-a"),
            Some(GuestFiles {
                image: b"image of a..",
                initrd: Some(&[0x30, 0x37, 0x30, 0x37]),
                command_line: Some("console=ttyAMA0 earlycon"),
                boot_info: false,
            })
        );
        assert_eq!(
            bundle.guest("linux-b"),
            Some(GuestFiles {
                image: b"image of b",
                initrd: None,
                command_line: None,
                boot_info: false,
            })
        );
        assert_eq!(bundle.guest("linux-c"), None);
        let kinds: Vec<_> = bundle.entries().iter().map(|entry| entry.kind).collect();
        assert_eq!(
            kinds,
            [
                EntryKind::Image,
                EntryKind::Initrd,
                EntryKind::CommandLine,
                EntryKind::Image
            ]
        );
    }

    #[test]
    fn the_layout_is_the_documented_one() {
        let bytes = sample();
        // Header: magic, version 2, 4 entries, total length, reserved 0.
        assert_eq!(&bytes[0..8], b"TRANSOMB");
        assert_eq!(bytes[8..12], 2u32.to_le_bytes());
        assert_eq!(bytes[12..16], 4u32.to_le_bytes());
        assert_eq!(bytes[16..24], (bytes.len() as u64).to_le_bytes());
        assert_eq!(bytes[24..32], [0; 8]);
        // Entry 0: "linux-a" NUL-padded to 32 bytes, kind 1, reserved 0, the first
        // payload right after the 4-entry table (32 + 4 * 56 = 0x100), 12 bytes.
        let mut name_field = [0u8; 32];
        name_field[..7].copy_from_slice(b"linux-a");
        assert_eq!(bytes[entry_field(0, 0)..entry_field(0, 32)], name_field);
        assert_eq!(
            bytes[entry_field(0, 32)..entry_field(0, 36)],
            1u32.to_le_bytes()
        );
        assert_eq!(bytes[entry_field(0, 36)..entry_field(0, 40)], [0; 4]);
        assert_eq!(
            bytes[entry_field(0, 40)..entry_field(0, 48)],
            0x100u64.to_le_bytes()
        );
        assert_eq!(
            bytes[entry_field(0, 48)..entry_field(0, 56)],
            12u64.to_le_bytes()
        );
        // Entry 1 (initrd, kind 2) starts at the next multiple of 8: 0x110.
        assert_eq!(
            bytes[entry_field(1, 32)..entry_field(1, 36)],
            2u32.to_le_bytes()
        );
        assert_eq!(
            bytes[entry_field(1, 40)..entry_field(1, 48)],
            0x110u64.to_le_bytes()
        );
        assert_eq!(&bytes[0x100..0x10c], b"image of a..");
        assert_eq!(bytes[0x10c..0x110], [0; 4], "zero padding");
        // Entry 2 is a command line, kind 3.
        assert_eq!(
            bytes[entry_field(2, 32)..entry_field(2, 36)],
            3u32.to_le_bytes()
        );
    }

    #[test]
    fn an_empty_bundle_is_a_header() {
        let bytes = BundleBuilder::new().finish();
        assert_eq!(bytes.len(), HEADER_SIZE);
        let bundle = Bundle::parse(&bytes).expect("parses");
        assert_eq!(bundle.partitions().count(), 0);
        assert!(bundle.entries().is_empty());
    }

    #[test]
    fn a_31_byte_name_fits_and_32_does_not() {
        let longest = "a-partition-name-of-31-bytes-xx";
        assert_eq!(longest.len(), MAX_NAME_LEN);
        let mut builder = BundleBuilder::new();
        builder
            .add(longest, EntryKind::Image, b"image")
            .expect("31 bytes fit");
        let bytes = builder.finish();
        let bundle = Bundle::parse(&bytes).expect("parses");
        assert_eq!(bundle.partitions().collect::<Vec<_>>(), [longest]);

        let error = BundleBuilder::new()
            .add("a-partition-name-of-32-bytes-xxx", EntryKind::Image, b"")
            .expect_err("too long");
        assert_eq!(
            error,
            BundleError::NameTooLong {
                entry: 0,
                length: 32
            }
        );
        assert_eq!(
            error.to_string(),
            "entry 0: the partition name is 32 bytes, at most 31 fit \
             (a 32-byte field ending in NUL)"
        );
    }

    #[test]
    fn the_builder_refuses_bad_names_duplicates_and_nul_in_command_lines() {
        let mut builder = BundleBuilder::new();
        assert_eq!(
            builder.add("", EntryKind::Image, b""),
            Err(BundleError::NameEmpty { entry: 0 })
        );
        assert_eq!(
            builder.add("linux\0a", EntryKind::Image, b""),
            Err(BundleError::NameHasNul { entry: 0, at: 5 })
        );
        builder
            .add("linux-a", EntryKind::Image, b"image")
            .expect("first");
        let duplicate = builder
            .add("linux-a", EntryKind::Image, b"again")
            .expect_err("duplicate");
        assert_eq!(
            duplicate,
            BundleError::Duplicate {
                partition: name("linux-a"),
                kind: EntryKind::Image
            }
        );
        assert_eq!(
            duplicate.to_string(),
            "partition linux-a has two kernel image entries"
        );
        let nul = builder
            .add("linux-a", EntryKind::CommandLine, b"quiet\0root=/dev/vda")
            .expect_err("NUL");
        assert_eq!(
            nul,
            BundleError::CommandLineHasNul {
                partition: name("linux-a"),
                at: 5
            }
        );
        assert_eq!(
            nul.to_string(),
            "the command line of partition linux-a has a NUL byte (at byte 5)"
        );
        assert_eq!(
            builder.add("linux-a", EntryKind::CommandLine, &[0xff]),
            Err(BundleError::CommandLineNotUtf8 {
                partition: name("linux-a"),
                valid_up_to: 0
            })
        );
        // Refused entries leave no trace.
        builder
            .add("linux-a", EntryKind::CommandLine, b"quiet")
            .expect("a valid command line");
        let bytes = builder.finish();
        let bundle = Bundle::parse(&bytes).expect("parses");
        assert_eq!(bundle.entries().len(), 2);
    }

    #[test]
    fn a_longer_file_is_padding_a_shorter_one_is_truncated() {
        let bytes = sample();
        let mut padded = bytes.clone();
        padded.resize(bytes.len() + 4096, 0);
        assert_eq!(Bundle::parse(&padded), Bundle::parse(&bytes));

        let cut = &bytes[..bytes.len() - 1];
        let error = Bundle::parse(cut).expect_err("truncated");
        assert_eq!(
            error,
            BundleError::Truncated {
                declared: bytes.len() as u64,
                actual: bytes.len() as u64 - 1
            }
        );
        assert_eq!(
            error.to_string(),
            alloc::format!(
                "truncated: the header declares {} bytes, only {} are there",
                bytes.len(),
                bytes.len() - 1
            )
        );
        let error = Bundle::parse(&bytes[..12]).expect_err("no header");
        assert_eq!(error, BundleError::HeaderTruncated { actual: 12 });
        assert_eq!(
            error.to_string(),
            "too short: 12 bytes, the guest bundle header alone is 32"
        );
        assert_eq!(
            Bundle::parse(&[]),
            Err(BundleError::HeaderTruncated { actual: 0 })
        );
    }

    #[test]
    fn header_errors() {
        let elf = b"\x7fELF\x02\x01\x01\0and the rest of an ELF header";
        let error = Bundle::parse(elf).expect_err("not a bundle");
        assert_eq!(
            error,
            BundleError::BadMagic {
                found: *b"\x7fELF\x02\x01\x01\0"
            }
        );
        assert_eq!(
            error.to_string(),
            "not a Transom guest bundle: it starts with b\"\\x7fELF\\x02\\x01\\x01\\x00\", \
             not b\"TRANSOMB\""
        );

        let mut bytes = sample();
        put_u32(&mut bytes, VERSION_OFFSET, 1);
        let error = Bundle::parse(&bytes).expect_err("version 1");
        assert_eq!(error, BundleError::UnsupportedVersion { found: 1 });
        assert_eq!(
            error.to_string(),
            "guest bundle format version 1: this hypervisor reads version 2 only \
             (rebuild the bundle with this tree's cargo xtask)"
        );

        let mut bytes = sample();
        put_u64(&mut bytes, HEADER_RESERVED_OFFSET, 5);
        assert_eq!(
            Bundle::parse(&bytes),
            Err(BundleError::HeaderReserved { value: 5 })
        );

        let mut bytes = sample();
        put_u32(&mut bytes, ENTRY_COUNT_OFFSET, 1000);
        let error = Bundle::parse(&bytes).expect_err("table past the end");
        assert_eq!(
            error,
            BundleError::TableOutOfBounds {
                entries: 1000,
                table_end: 32 + 1000 * 56,
                total: bytes.len() as u64
            }
        );
        assert!(
            error
                .to_string()
                .starts_with("the entry table (1000 entries of 56 bytes) ends at 0xdae0")
        );
    }

    #[test]
    fn name_errors() {
        let mut bytes = sample();
        bytes[entry_field(0, 0)..entry_field(0, 32)].fill(0);
        assert_eq!(
            Bundle::parse(&bytes),
            Err(BundleError::NameEmpty { entry: 0 })
        );

        let mut bytes = sample();
        bytes[entry_field(1, 0)..entry_field(1, 32)].fill(b'a');
        assert_eq!(
            Bundle::parse(&bytes),
            Err(BundleError::NameTooLong {
                entry: 1,
                length: 32
            })
        );

        // "linux-a" then NUL then "x": a NUL inside the name.
        let mut bytes = sample();
        bytes[entry_field(0, 8)] = b'x';
        let error = Bundle::parse(&bytes).expect_err("NUL inside");
        assert_eq!(error, BundleError::NameHasNul { entry: 0, at: 7 });
        assert_eq!(
            error.to_string(),
            "entry 0: the partition name has a NUL byte inside it (at byte 7)"
        );

        let mut bytes = sample();
        bytes[entry_field(3, 2)] = 0xff;
        let error = Bundle::parse(&bytes).expect_err("not UTF-8");
        assert_eq!(
            error,
            BundleError::NameNotUtf8 {
                entry: 3,
                valid_up_to: 2
            }
        );
        assert_eq!(
            error.to_string(),
            "entry 3: the partition name is not UTF-8 (from byte 2)"
        );
    }

    #[test]
    fn kind_and_reserved_errors() {
        let mut bytes = sample();
        put_u32(&mut bytes, entry_field(2, KIND_OFFSET), 7);
        let error = Bundle::parse(&bytes).expect_err("kind 7");
        assert_eq!(error, BundleError::UnknownKind { entry: 2, kind: 7 });
        assert_eq!(
            error.to_string(),
            "entry 2: unknown kind 7 (1 = kernel image, 2 = initrd, 3 = command line, \
             4 = boot-info request)"
        );

        let mut bytes = sample();
        put_u32(&mut bytes, entry_field(1, ENTRY_RESERVED_OFFSET), 0x10);
        let error = Bundle::parse(&bytes).expect_err("reserved");
        assert_eq!(
            error,
            BundleError::EntryReserved {
                entry: 1,
                value: 0x10
            }
        );
        assert_eq!(
            error.to_string(),
            "entry 1: the reserved field (offset 36) is 0x10, not 0"
        );
    }

    #[test]
    fn payload_placement_errors() {
        let offset_field = |index| entry_field(index, PAYLOAD_OFFSET_OFFSET);
        let length_field = |index| entry_field(index, PAYLOAD_LENGTH_OFFSET);

        let mut bytes = sample();
        put_u64(&mut bytes, offset_field(0), 0x104);
        let error = Bundle::parse(&bytes).expect_err("misaligned");
        assert_eq!(
            error,
            BundleError::Misaligned {
                entry: 0,
                offset: 0x104
            }
        );
        assert_eq!(
            error.to_string(),
            "entry 0: the payload offset 0x104 is not a multiple of 8"
        );

        let mut bytes = sample();
        let total = bytes.len() as u64;
        put_u64(&mut bytes, length_field(3), 0x1000);
        let error = Bundle::parse(&bytes).expect_err("out of bounds");
        let BundleError::OutOfBounds { entry: 3, .. } = error else {
            panic!("{error:?}");
        };
        assert!(
            error.to_string().ends_with(&alloc::format!(
                "bytes ends at {:#x}, past the total length {total:#x}",
                0x130 + 0x1000
            )),
            "{error}"
        );
        put_u64(&mut bytes, length_field(3), u64::MAX);
        assert!(matches!(
            Bundle::parse(&bytes),
            Err(BundleError::OutOfBounds { entry: 3, .. })
        ));

        let mut bytes = sample();
        put_u64(&mut bytes, offset_field(0), 0x20);
        let error = Bundle::parse(&bytes).expect_err("in the table");
        assert_eq!(
            error,
            BundleError::OverlapsTable {
                entry: 0,
                offset: 0x20,
                table_end: 0x100
            }
        );
        assert_eq!(
            error.to_string(),
            "entry 0: the payload at 0x20 overlaps the header and entry table, which end at 0x100"
        );

        // Entry 1's payload moved back onto entry 0's (which ends at 0x10c).
        let mut bytes = sample();
        put_u64(&mut bytes, offset_field(1), 0x108);
        let error = Bundle::parse(&bytes).expect_err("overlap");
        assert_eq!(
            error,
            BundleError::Overlapping {
                entry: 1,
                offset: 0x108,
                previous_end: 0x10c
            }
        );
        assert_eq!(
            error.to_string(),
            "entry 1: the payload at 0x108 overlaps entry 0's, which ends at 0x10c \
             (payloads follow one another in entry order, or share an earlier entry's of \
             their kind exactly)"
        );
    }

    /// Two partitions with one kernel and one initrd: each payload is written once
    /// and named by both entries (version 2), and each partition reads its own
    /// entries' bytes.
    #[test]
    fn equal_payloads_are_stored_once() {
        let kernel = [0x4b_u8; 100];
        let initrd = [0x49_u8; 20];
        let mut builder = BundleBuilder::new();
        for partition in ["linux-a", "linux-b"] {
            builder.add(partition, EntryKind::Image, &kernel).unwrap();
            builder.add(partition, EntryKind::Initrd, &initrd).unwrap();
        }
        builder
            .add("linux-b", EntryKind::CommandLine, b"quiet")
            .unwrap();
        let bytes = builder.finish();
        let table_end = HEADER_SIZE + 5 * ENTRY_SIZE;
        // The kernel, the initrd (8-aligned after it) and the command line.
        assert_eq!(bytes.len(), table_end + 104 + 24 + 5);
        let field = |entry: usize, at: usize| {
            let start = HEADER_SIZE + entry * ENTRY_SIZE + at;
            u64::from_le_bytes(bytes[start..start + 8].try_into().unwrap())
        };
        let (offset, length) = (PAYLOAD_OFFSET_OFFSET, PAYLOAD_LENGTH_OFFSET);
        assert_eq!(
            (field(2, offset), field(2, length)),
            (field(0, offset), 100)
        );
        assert_eq!((field(3, offset), field(3, length)), (field(1, offset), 20));
        let bundle = Bundle::parse(&bytes).expect("a bundle with shared payloads");
        for partition in ["linux-a", "linux-b"] {
            let files = bundle.guest(partition).expect("both guests");
            assert_eq!(files.image, kernel);
            assert_eq!(files.initrd, Some(&initrd[..]));
        }
        // Payloads that differ, or are equal but of another kind, are each written.
        let mut builder = BundleBuilder::new();
        builder.add("linux-a", EntryKind::Image, &kernel).unwrap();
        builder.add("linux-a", EntryKind::Initrd, &kernel).unwrap();
        builder
            .add("linux-b", EntryKind::Image, &kernel[1..])
            .unwrap();
        let bytes = builder.finish();
        assert_eq!(bytes.len(), HEADER_SIZE + 3 * ENTRY_SIZE + 104 + 104 + 99);
    }

    /// Sharing names an earlier payload of the entry's kind exactly; any other
    /// payload that starts before the previous one ends still overlaps.
    #[test]
    fn only_an_exact_earlier_payload_of_its_kind_is_shared() {
        let kernel = [0x4b_u8; 100];
        let mut builder = BundleBuilder::new();
        builder.add("linux-a", EntryKind::Image, &kernel).unwrap();
        builder.add("linux-a", EntryKind::Initrd, &[1; 16]).unwrap();
        builder.add("linux-b", EntryKind::Image, &kernel).unwrap();
        let shared = builder.finish();
        let image_offset = HEADER_SIZE as u64 + 3 * ENTRY_SIZE as u64;
        let offset_field = |entry: usize| HEADER_SIZE + entry * ENTRY_SIZE + PAYLOAD_OFFSET_OFFSET;
        let length_field = |entry: usize| HEADER_SIZE + entry * ENTRY_SIZE + PAYLOAD_LENGTH_OFFSET;
        Bundle::parse(&shared).expect("entry 2 shares entry 0's payload");

        // Entry 2 names entry 0's offset with another length.
        let mut bytes = shared.clone();
        put_u64(&mut bytes, length_field(2), 96);
        assert_eq!(
            Bundle::parse(&bytes),
            Err(BundleError::Overlapping {
                entry: 2,
                offset: image_offset,
                previous_end: image_offset + 104 + 16,
            })
        );
        // Entry 2 starts inside entry 0's payload.
        let mut bytes = shared.clone();
        put_u64(&mut bytes, offset_field(2), image_offset + 8);
        put_u64(&mut bytes, length_field(2), 92);
        assert!(matches!(
            Bundle::parse(&bytes),
            Err(BundleError::Overlapping { entry: 2, .. })
        ));
        // Entry 1 (an initrd) names the image's payload: another kind.
        let mut bytes = shared;
        put_u64(&mut bytes, offset_field(1), image_offset);
        put_u64(&mut bytes, length_field(1), 100);
        assert_eq!(
            Bundle::parse(&bytes),
            Err(BundleError::Overlapping {
                entry: 1,
                offset: image_offset,
                previous_end: image_offset + 100,
            })
        );
    }

    #[test]
    fn entry_errors_across_entries() {
        // linux-b's image renamed to linux-a: two images for linux-a.
        let mut bytes = sample();
        bytes[entry_field(3, 6)] = b'a';
        let error = Bundle::parse(&bytes).expect_err("duplicate");
        assert_eq!(
            error,
            BundleError::Duplicate {
                partition: name("linux-a"),
                kind: EntryKind::Image
            }
        );

        let mut builder = BundleBuilder::new();
        builder
            .add("linux-b", EntryKind::Initrd, b"cpio")
            .expect("add");
        let bytes = builder.finish();
        let error = Bundle::parse(&bytes).expect_err("no image");
        assert_eq!(
            error,
            BundleError::MissingImage {
                partition: name("linux-b"),
                kind: EntryKind::Initrd
            }
        );
        assert_eq!(
            error.to_string(),
            "partition linux-b has an initrd but no kernel image"
        );
    }

    #[test]
    fn command_line_errors() {
        let bytes = sample();
        let bundle = Bundle::parse(&bytes).expect("parses");
        let line = bundle.entries()[2].payload;
        let at = line.as_ptr() as usize - bytes.as_ptr() as usize;

        let mut bytes = sample();
        bytes[at + 3] = 0xff;
        let error = Bundle::parse(&bytes).expect_err("not UTF-8");
        assert_eq!(
            error,
            BundleError::CommandLineNotUtf8 {
                partition: name("linux-a"),
                valid_up_to: 3
            }
        );
        assert_eq!(
            error.to_string(),
            "the command line of partition linux-a is not UTF-8 (from byte 3)"
        );

        let mut bytes = sample();
        bytes[at + 7] = 0;
        assert_eq!(
            Bundle::parse(&bytes),
            Err(BundleError::CommandLineHasNul {
                partition: name("linux-a"),
                at: 7
            })
        );
    }

    #[test]
    fn entry_kinds_have_their_documented_codes() {
        assert_eq!(EntryKind::Image.code(), 1);
        assert_eq!(EntryKind::Initrd.code(), 2);
        assert_eq!(EntryKind::CommandLine.code(), 3);
        assert_eq!(EntryKind::BootInfo.code(), 4);
        for kind in EntryKind::ALL {
            assert_eq!(EntryKind::from_code(kind.code()), Some(kind));
        }
        assert_eq!(EntryKind::from_code(0), None);
        assert_eq!(EntryKind::from_code(5), None);
    }

    #[test]
    fn a_boot_info_request_marks_its_guest_native_and_has_no_payload() {
        let mut builder = BundleBuilder::new();
        builder
            .add("native", EntryKind::Image, b"image")
            .expect("add");
        builder
            .add("native", EntryKind::BootInfo, b"")
            .expect("add");
        builder
            .add("linux", EntryKind::Image, b"image")
            .expect("add");
        let bytes = builder.finish();
        let bundle = Bundle::parse(&bytes).expect("parses");
        assert!(bundle.guest("native").expect("native").boot_info);
        assert!(!bundle.guest("linux").expect("linux").boot_info);

        let error = BundleBuilder::new()
            .add("native", EntryKind::BootInfo, b"x")
            .expect_err("a payload");
        assert_eq!(
            error.to_string(),
            "partition native: a boot-info request has no payload, this one has 1 bytes"
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Arbitrary bytes are an error or a bundle, never a panic.
        #[test]
        fn parse_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = Bundle::parse(&bytes);
        }

        /// Bytes behind a valid header get as far as the entries, and never panic.
        #[test]
        fn parse_never_panics_past_the_header(
            count in 0u32..6,
            rest in prop::collection::vec(any::<u8>(), 0..512),
        ) {
            let total = (HEADER_SIZE + rest.len()) as u64;
            let mut bytes = vec![0u8; HEADER_SIZE];
            bytes[..8].copy_from_slice(&MAGIC);
            put_u32(&mut bytes, VERSION_OFFSET, VERSION);
            put_u32(&mut bytes, ENTRY_COUNT_OFFSET, count);
            put_u64(&mut bytes, TOTAL_LENGTH_OFFSET, total);
            bytes.extend_from_slice(&rest);
            let _ = Bundle::parse(&bytes);
        }

        /// One byte of a valid bundle changed: an error or a bundle, never a panic.
        #[test]
        fn parse_never_panics_on_a_corrupted_bundle(index in any::<prop::sample::Index>(), value: u8) {
            let mut bytes = sample();
            let at = index.index(bytes.len());
            bytes[at] = value;
            let _ = Bundle::parse(&bytes);
        }

        /// A valid bundle cut anywhere short of its total length is an error.
        #[test]
        fn every_truncation_is_an_error(index in any::<prop::sample::Index>()) {
            let bytes = sample();
            let cut = index.index(bytes.len());
            prop_assert!(Bundle::parse(&bytes[..cut]).is_err());
        }
    }
}
