//! The boot-info page a Transom-native guest gets, its address in x1: the
//! partition's windows as the hypervisor mapped them, so a guest without a device
//! tree parser still knows each device's exact address, size, how it is reached
//! and its interrupts.
//!
//! A guest asks for it with a boot-info entry in the bundle
//! ([`super::bundle::EntryKind::BootInfo`]); Linux guests never get one, because
//! Linux's booting document requires x1 to be 0.
//!
//! # Format, version 1
//!
//! Every integer is little-endian. The page starts with a 32-byte header:
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 8 | magic | `b"TRANSOMI"` ([`MAGIC`]) |
//! | 8 | 4 | version | 1 ([`VERSION`]) |
//! | 12 | 4 | window count | entries after the header |
//! | 16 | 4 | entry size | 96 ([`ENTRY_SIZE`]) |
//! | 20 | 4 | vCPUs | the partition's vCPU count |
//! | 24 | 8 | device tree | the IPA of the guest's device tree (also in x0) |
//!
//! Then one 96-byte entry per window, in the board table's grant order:
//!
//! | offset | size | field | value |
//! |---|---|---|---|
//! | 0 | 32 | device | the board table's name, NUL-padded (at most 31 bytes) |
//! | 32 | 8 | span start | the first IPA of the granule-rounded span |
//! | 40 | 8 | span end | the IPA after the span |
//! | 48 | 8 | device | the device's exact IPA (inside the span) |
//! | 56 | 8 | size | the device's exact size in bytes |
//! | 64 | 4 | mode | 1 direct (mapped), 2 trapped (each access checked and forwarded) |
//! | 68 | 4 | widths | the access sizes a trapped window forwards: bit 0 8-bit, 1 16-bit, 2 32-bit, 3 64-bit; bit 4 unaligned accesses too |
//! | 72 | 4 | interrupt count | 0 to 4 |
//! | 76 | 4 | reserved | 0 |
//! | 80 | 16 | interrupts | up to four GIC INTIDs, then zeros |
//!
//! A reader refuses a magic or version it does not know.

use transom_boards::{Access, IntId, Mapping, PhysRange};

/// The first 8 bytes of the page.
pub const MAGIC: [u8; 8] = *b"TRANSOMI";
/// The format version.
pub const VERSION: u32 = 1;
/// Size of the header.
pub const HEADER_SIZE: usize = 32;
/// Size of one window's entry.
pub const ENTRY_SIZE: usize = 96;
/// The page's size: at most this many bytes are written.
pub const PAGE_SIZE: usize = 4096;
/// The most windows a page describes.
pub const MAX_WINDOWS: usize = (PAGE_SIZE - HEADER_SIZE) / ENTRY_SIZE;
/// Size of an entry's device name field.
const NAME_FIELD_SIZE: usize = 32;
/// The most interrupts an entry lists.
const MAX_INTERRUPTS: usize = 4;

/// One window, as the page describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootWindow<'a> {
    /// The device's name in the board table.
    pub device: &'a str,
    /// The granule-rounded span.
    pub span: PhysRange,
    /// The device's exact IPA.
    pub device_ipa: u64,
    /// The device's exact size.
    pub size: u64,
    /// Direct or trapped.
    pub mode: Mapping,
    /// What a trapped window forwards.
    pub access: Access,
    /// Its interrupts.
    pub interrupts: &'a [IntId],
}

/// Why a page could not be written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootInfoError {
    /// More windows than a page holds.
    TooManyWindows {
        /// The partition's window count.
        windows: usize,
    },
    /// A device name longer than its field.
    NameTooLong {
        /// The window's index.
        window: usize,
    },
    /// More interrupts than an entry lists.
    TooManyInterrupts {
        /// The window's index.
        window: usize,
    },
}

impl core::fmt::Display for BootInfoError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            BootInfoError::TooManyWindows { windows } => write!(
                f,
                "{windows} windows do not fit the boot-info page (at most {MAX_WINDOWS})"
            ),
            BootInfoError::NameTooLong { window } => write!(
                f,
                "window {window}'s device name is longer than {} bytes",
                NAME_FIELD_SIZE - 1
            ),
            BootInfoError::TooManyInterrupts { window } => write!(
                f,
                "window {window} has more than {MAX_INTERRUPTS} interrupts"
            ),
        }
    }
}

/// The page describing `windows` for a partition of `vcpus` vCPUs whose device tree
/// is at `tree`: [`HEADER_SIZE`] + [`ENTRY_SIZE`] bytes per window.
pub fn build(
    windows: &[BootWindow<'_>],
    vcpus: u32,
    tree: u64,
) -> Result<alloc::vec::Vec<u8>, BootInfoError> {
    if windows.len() > MAX_WINDOWS {
        return Err(BootInfoError::TooManyWindows {
            windows: windows.len(),
        });
    }
    let mut page = alloc::vec::Vec::with_capacity(HEADER_SIZE + ENTRY_SIZE * windows.len());
    page.extend_from_slice(&MAGIC);
    page.extend_from_slice(&VERSION.to_le_bytes());
    page.extend_from_slice(&(windows.len() as u32).to_le_bytes());
    page.extend_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
    page.extend_from_slice(&vcpus.to_le_bytes());
    page.extend_from_slice(&tree.to_le_bytes());
    for (index, window) in windows.iter().enumerate() {
        let name = window.device.as_bytes();
        if name.len() >= NAME_FIELD_SIZE {
            return Err(BootInfoError::NameTooLong { window: index });
        }
        if window.interrupts.len() > MAX_INTERRUPTS {
            return Err(BootInfoError::TooManyInterrupts { window: index });
        }
        let mut field = [0u8; NAME_FIELD_SIZE];
        field[..name.len()].copy_from_slice(name);
        page.extend_from_slice(&field);
        page.extend_from_slice(&window.span.start.to_le_bytes());
        page.extend_from_slice(&window.span.end.to_le_bytes());
        page.extend_from_slice(&window.device_ipa.to_le_bytes());
        page.extend_from_slice(&window.size.to_le_bytes());
        let mode: u32 = match window.mode {
            Mapping::Direct => 1,
            Mapping::Trapped => 2,
        };
        page.extend_from_slice(&mode.to_le_bytes());
        page.extend_from_slice(&widths(window.access).to_le_bytes());
        page.extend_from_slice(&(window.interrupts.len() as u32).to_le_bytes());
        page.extend_from_slice(&0u32.to_le_bytes());
        for slot in 0..MAX_INTERRUPTS {
            let intid = window.interrupts.get(slot).map_or(0, |intid| intid.0);
            page.extend_from_slice(&intid.to_le_bytes());
        }
    }
    Ok(page)
}

/// The widths field: a bit per allowed size, bit 4 for unaligned accesses.
fn widths(access: Access) -> u32 {
    let sizes = [1, 2, 4, 8]
        .iter()
        .enumerate()
        .filter(|(_, size)| access.widths.allows(**size))
        .fold(0, |bits, (bit, _)| bits | 1 << bit);
    sizes | u32::from(access.unaligned) << 4
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use transom_boards::AccessWidths;

    fn u32_at(page: &[u8], offset: usize) -> u32 {
        u32::from_le_bytes(page[offset..offset + 4].try_into().unwrap())
    }

    fn u64_at(page: &[u8], offset: usize) -> u64 {
        u64::from_le_bytes(page[offset..offset + 8].try_into().unwrap())
    }

    /// virt's transport 31 as linux-a's trapped window: 0x200 bytes at 0x0a00_3e00
    /// in the page 0x0a00_3000, 32-bit accesses only, SPI 47 (INTID 79).
    const TRANSPORT: BootWindow<'static> = BootWindow {
        device: "virtio_mmio@a003e00",
        span: PhysRange::new(0x0a00_3000, 0x1000),
        device_ipa: 0x0a00_3e00,
        size: 0x200,
        mode: Mapping::Trapped,
        access: Access {
            widths: AccessWidths::W32,
            unaligned: false,
        },
        interrupts: &[IntId(79)],
    };

    #[test]
    fn the_page_lays_out_header_and_entries_as_documented() {
        let page = build(&[TRANSPORT], 2, 0x5fe0_0000).unwrap();
        assert_eq!(page.len(), HEADER_SIZE + ENTRY_SIZE);
        assert_eq!(&page[..8], b"TRANSOMI");
        assert_eq!(u32_at(&page, 8), 1);
        assert_eq!(u32_at(&page, 12), 1);
        assert_eq!(u32_at(&page, 16), 96);
        assert_eq!(u32_at(&page, 20), 2);
        assert_eq!(u64_at(&page, 24), 0x5fe0_0000);
        let entry = &page[HEADER_SIZE..];
        assert_eq!(&entry[..20], b"virtio_mmio@a003e00\0");
        assert!(entry[20..32].iter().all(|&byte| byte == 0));
        assert_eq!(u64_at(entry, 32), 0x0a00_3000);
        assert_eq!(u64_at(entry, 40), 0x0a00_4000);
        assert_eq!(u64_at(entry, 48), 0x0a00_3e00);
        assert_eq!(u64_at(entry, 56), 0x200);
        assert_eq!(u32_at(entry, 64), 2);
        assert_eq!(u32_at(entry, 68), 0b0100);
        assert_eq!(u32_at(entry, 72), 1);
        assert_eq!(u32_at(entry, 80), 79);
        assert_eq!(u32_at(entry, 84), 0);
    }

    #[test]
    fn names_interrupts_and_window_counts_beyond_the_fields_are_refused() {
        let long = BootWindow {
            device: "a-device-name-of-thirty-two-byte",
            ..TRANSPORT
        };
        assert_eq!(
            build(&[TRANSPORT, long], 1, 0),
            Err(BootInfoError::NameTooLong { window: 1 })
        );
        let busy = BootWindow {
            interrupts: &[IntId(40), IntId(41), IntId(42), IntId(43), IntId(44)],
            ..TRANSPORT
        };
        assert_eq!(
            build(&[busy], 1, 0),
            Err(BootInfoError::TooManyInterrupts { window: 0 })
        );
        let many = [TRANSPORT; MAX_WINDOWS + 1];
        assert_eq!(
            build(&many, 1, 0),
            Err(BootInfoError::TooManyWindows {
                windows: MAX_WINDOWS + 1
            })
        );
        assert!(build(&many[..MAX_WINDOWS], 1, 0).unwrap().len() <= PAGE_SIZE);
    }
}
