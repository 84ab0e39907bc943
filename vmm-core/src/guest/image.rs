//! The arm64 Linux `Image` header: reading it, and where the image goes in a
//! partition's RAM.
//!
//! Linux `Documentation/arch/arm64/booting.rst`, section 4 "Call the kernel image",
//! defines a 64-byte header at the start of the decompressed image, every field
//! little-endian:
//!
//! | offset | size | field | what Transom does with it |
//! |---|---|---|---|
//! | 0x00 | 4 | `code0` | executable code (a branch to `stext`); not read |
//! | 0x04 | 4 | `code1` | executable code; not read |
//! | 0x08 | 8 | `text_offset` | the image is placed this far above a 2 MiB aligned base |
//! | 0x10 | 8 | `image_size` | bytes from the image's start the kernel may use; 0 before v3.17 |
//! | 0x18 | 8 | `flags` | bit 0 endianness, bits 1-2 page size, bit 3 placement |
//! | 0x20 | 8 | `res2` | reserved (0); not read |
//! | 0x28 | 8 | `res3` | reserved (0); not read |
//! | 0x30 | 8 | `res4` | reserved (0); not read |
//! | 0x38 | 4 | `magic` | `0x644d5241`, "ARM\x64"; checked |
//! | 0x3c | 4 | `res5` | PE/COFF header offset for EFI; not read |
//!
//! [`parse`] checks the header and refuses what Transom cannot boot (a gzip file,
//! since arm64 Linux has no decompressor of its own; a big-endian kernel, since
//! partitions run little-endian). [`plan`] places the image as booting.rst asks: at
//! `text_offset` above the lowest 2 MiB aligned address of the partition's RAM, with
//! `image_size` bytes (at least the file) free from there.

use core::fmt;

use transom_boards::{Granule, PhysRange};

/// Size of the header (booting.rst 4: "a 64-byte header").
pub const HEADER_SIZE: usize = 64;

/// The magic, "ARM\x64" read as a little-endian `u32` (booting.rst 4).
pub const MAGIC: u32 = 0x644d_5241;

/// Where the magic lies in the header.
pub const MAGIC_OFFSET: usize = 0x38;

/// The `text_offset` of kernels before v3.17, whose `image_size` is zero
/// (booting.rst 4: "Where image_size is zero, text_offset can be assumed to be
/// 0x80000").
pub const LEGACY_TEXT_OFFSET: u64 = 0x8_0000;

/// The image's base is aligned to 2 MiB (booting.rst 4: "placed text_offset bytes
/// from a 2MB aligned base address").
pub const BASE_ALIGNMENT: u64 = 2 * 1024 * 1024;

/// The end of the 48-bit physical address range an image with placement bit 1 must
/// stay within (booting.rst 4, flags bit 3).
pub const PLACEMENT_LIMIT_48_BITS: u64 = 1 << 48;

/// The first two bytes of every gzip file (RFC 1952 2.3.1: ID1 = 31, ID2 = 139).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Header field offsets (booting.rst 4).
const TEXT_OFFSET_OFFSET: usize = 0x08;
const IMAGE_SIZE_OFFSET: usize = 0x10;
const FLAGS_OFFSET: usize = 0x18;

/// Flags bit 0: 1 if the kernel is big-endian.
const FLAG_BIG_ENDIAN: u64 = 1 << 0;
/// Flags bits 1-2: the kernel's page size.
const FLAG_PAGE_SIZE_SHIFT: u32 = 1;
const FLAG_PAGE_SIZE_MASK: u64 = 0b11;
/// Flags bit 3: 0 = base as close as possible to the start of RAM, 1 = anywhere
/// within the 48-bit physical range.
const FLAG_PLACEMENT_ANYWHERE: u64 = 1 << 3;

/// What Transom needs from an `Image` header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// How far above its 2 MiB aligned base the image is placed: the header's
    /// `text_offset`, or [`LEGACY_TEXT_OFFSET`] when `image_size` is zero.
    pub text_offset: u64,
    /// The header's `image_size`: bytes from the image's start that must be free for
    /// the kernel; zero for kernels before v3.17.
    pub image_size: u64,
    /// The header's `flags`.
    pub flags: u64,
}

/// The kernel's page size, flags bits 1-2 (booting.rst 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelPageSize {
    /// 0: the header does not say.
    Unspecified,
    /// A page size the kernel was built for.
    Known(Granule),
}

/// Where the kernel may be placed, flags bit 3 (booting.rst 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// 0: the 2 MiB aligned base should be as close as possible to the start of RAM,
    /// since memory below it is not reachable through the kernel's linear mapping.
    NearRamStart,
    /// 1: the base may be anywhere such that all `image_size` bytes from the image's
    /// start lie below 2^48.
    Within48Bits,
}

impl ImageHeader {
    /// Whether the header predates v3.17 (`image_size` is zero): its size is then the
    /// file's, and as much RAM as possible should stay free after it.
    pub fn is_legacy(&self) -> bool {
        self.image_size == 0
    }

    /// Whether flags bit 0 marks a big-endian kernel.
    pub fn is_big_endian(&self) -> bool {
        self.flags & FLAG_BIG_ENDIAN != 0
    }

    /// The page size the kernel was built for (flags bits 1-2).
    pub fn page_size(&self) -> KernelPageSize {
        match (self.flags >> FLAG_PAGE_SIZE_SHIFT) & FLAG_PAGE_SIZE_MASK {
            1 => KernelPageSize::Known(Granule::Size4KiB),
            2 => KernelPageSize::Known(Granule::Size16KiB),
            3 => KernelPageSize::Known(Granule::Size64KiB),
            _ => KernelPageSize::Unspecified,
        }
    }

    /// Where the kernel may be placed (flags bit 3).
    pub fn placement(&self) -> Placement {
        if self.flags & FLAG_PLACEMENT_ANYWHERE == 0 {
            Placement::NearRamStart
        } else {
            Placement::Within48Bits
        }
    }

    /// The bytes from the image's start the kernel needs: `image_size`, but never
    /// less than the file itself (a legacy header's `image_size` is zero).
    pub fn effective_size(&self, file_len: u64) -> u64 {
        self.image_size.max(file_len)
    }
}

/// Where an image goes in a partition's RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// The 2 MiB aligned base: the partition's RAM start rounded up to 2 MiB.
    pub base: u64,
    /// Where the image's first byte goes and the guest starts: `base + text_offset`.
    pub load_address: u64,
    /// One past the last byte the kernel may use: `load_address` plus the larger of
    /// `image_size` and the file's length.
    pub end: u64,
}

/// Why an image cannot be booted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageError {
    /// Fewer bytes than the 64-byte header.
    TooShort {
        /// The file's length.
        length: usize,
    },
    /// The file is gzip-compressed (`Image.gz`); arm64 Linux has no decompressor, the
    /// boot loader must decompress it (booting.rst 3).
    Gzip,
    /// The magic at 0x38 is not "ARM\x64".
    BadMagic {
        /// The little-endian `u32` found there.
        found: u32,
    },
    /// Flags bit 0 is set: a big-endian kernel.
    BigEndian,
    /// The image does not fit in the partition's RAM.
    DoesNotFit {
        /// The 2 MiB aligned base the image is placed above.
        base: u64,
        /// The header's (effective) `text_offset`.
        text_offset: u64,
        /// The bytes from the image's start the kernel needs.
        size: u64,
        /// The partition's RAM bank.
        ram: PhysRange,
    },
    /// Flags bit 3 is set and the image would reach past 2^48.
    Beyond48Bits {
        /// One past the image's last byte.
        end: u64,
    },
}

impl ImageError {
    /// Bytes needed from the base: the gap up to the image plus the image.
    fn needed(text_offset: u64, size: u64) -> u64 {
        text_offset.saturating_add(size)
    }
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ImageError::TooShort { length } => write!(
                f,
                "too short: {length} bytes, the arm64 Image header is {HEADER_SIZE}"
            ),
            ImageError::Gzip => f.write_str(
                "gzip-compressed (starts with 1f 8b): arm64 Linux has no decompressor, \
                 decompress it first (gunzip -c Image.gz > Image)",
            ),
            ImageError::BadMagic { found } => write!(
                f,
                "not an arm64 Image: the magic at offset {MAGIC_OFFSET:#x} is {found:#010x}, \
                 not \"ARM\\x64\" ({MAGIC:#010x})"
            ),
            ImageError::BigEndian => f.write_str(
                "a big-endian kernel (flags bit 0 is set): Transom runs little-endian guests only",
            ),
            ImageError::DoesNotFit {
                base,
                text_offset,
                size,
                ram,
            } => {
                let needed = ImageError::needed(text_offset, size);
                let available = ram.end.saturating_sub(base);
                write!(
                    f,
                    "needs {needed:#x} bytes from {base:#x} (text_offset {text_offset:#x} + \
                     image {size:#x}), the partition's RAM {ram} has {available:#x}"
                )
            }
            ImageError::Beyond48Bits { end } => write!(
                f,
                "would end at {end:#x}, past the 48-bit physical address range \
                 ({PLACEMENT_LIMIT_48_BITS:#x}) its flags (bit 3) require"
            ),
        }
    }
}

impl core::error::Error for ImageError {}

/// Reads and checks the header at the start of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<ImageHeader, ImageError> {
    let is_gzip = bytes.starts_with(&GZIP_MAGIC);
    let Some(header) = bytes.first_chunk::<HEADER_SIZE>() else {
        return Err(if is_gzip {
            ImageError::Gzip
        } else {
            ImageError::TooShort {
                length: bytes.len(),
            }
        });
    };
    let magic = read_u32(header, MAGIC_OFFSET);
    if magic != MAGIC {
        return Err(if is_gzip {
            ImageError::Gzip
        } else {
            ImageError::BadMagic { found: magic }
        });
    }
    let image_size = read_u64(header, IMAGE_SIZE_OFFSET);
    // Before v3.17 `text_offset` had the kernel's endianness and `image_size` was 0.
    let text_offset = if image_size == 0 {
        LEGACY_TEXT_OFFSET
    } else {
        read_u64(header, TEXT_OFFSET_OFFSET)
    };
    let parsed = ImageHeader {
        text_offset,
        image_size,
        flags: read_u64(header, FLAGS_OFFSET),
    };
    if parsed.is_big_endian() {
        return Err(ImageError::BigEndian);
    }
    Ok(parsed)
}

/// Places an image of `file_len` bytes with `header` in the partition's RAM bank
/// `ram`: `text_offset` above the lowest 2 MiB aligned address in it.
pub fn plan(header: &ImageHeader, file_len: u64, ram: PhysRange) -> Result<LoadPlan, ImageError> {
    let size = header.effective_size(file_len);
    let does_not_fit = |base: u64| ImageError::DoesNotFit {
        base,
        text_offset: header.text_offset,
        size,
        ram,
    };
    let Some(base) = align_up(ram.start, BASE_ALIGNMENT) else {
        return Err(does_not_fit(ram.start));
    };
    let load_address = base.checked_add(header.text_offset);
    let end = load_address.and_then(|load_address| load_address.checked_add(size));
    let (Some(load_address), Some(end)) = (load_address, end) else {
        return Err(does_not_fit(base));
    };
    if base >= ram.end || end > ram.end {
        return Err(does_not_fit(base));
    }
    if header.placement() == Placement::Within48Bits && end > PLACEMENT_LIMIT_48_BITS {
        return Err(ImageError::Beyond48Bits { end });
    }
    Ok(LoadPlan {
        base,
        load_address,
        end,
    })
}

/// `value` rounded up to a multiple of `alignment` (a power of two), if it fits.
fn align_up(value: u64, alignment: u64) -> Option<u64> {
    let mask = alignment - 1;
    value.checked_add(mask).map(|raised| raised & !mask)
}

fn read_u32(header: &[u8; HEADER_SIZE], offset: usize) -> u32 {
    let mut field = [0; 4];
    field.copy_from_slice(&header[offset..offset + 4]);
    u32::from_le_bytes(field)
}

fn read_u64(header: &[u8; HEADER_SIZE], offset: usize) -> u64 {
    let mut field = [0; 8];
    field.copy_from_slice(&header[offset..offset + 8]);
    u64::from_le_bytes(field)
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;
    use alloc::vec;
    use alloc::vec::Vec;

    use super::*;

    const MIB: u64 = 1024 * 1024;

    /// A header as booting.rst 4 lays it out: `code0` a branch (`b #0x40`, as
    /// kernels without EFI have), little-endian fields, magic "ARM\x64" at 0x38.
    fn header(text_offset: u64, image_size: u64, flags: u64) -> Vec<u8> {
        let mut bytes = vec![0u8; HEADER_SIZE];
        bytes[0x00..0x04].copy_from_slice(&0x1400_0010u32.to_le_bytes());
        bytes[0x08..0x10].copy_from_slice(&text_offset.to_le_bytes());
        bytes[0x10..0x18].copy_from_slice(&image_size.to_le_bytes());
        bytes[0x18..0x20].copy_from_slice(&flags.to_le_bytes());
        bytes[0x38..0x3c].copy_from_slice(b"ARM\x64");
        bytes
    }

    /// Flags of a v5.8+ defconfig kernel: little-endian, 4K pages (bits 1-2 = 1),
    /// placement anywhere (bit 3).
    const FLAGS_LE_4K_ANYWHERE: u64 = 0b1010;

    #[test]
    fn reads_a_valid_header() {
        // booting.rst 4: text_offset @0x08, image_size @0x10, flags @0x18, little-endian.
        let bytes = header(0, 0x0290_0000, FLAGS_LE_4K_ANYWHERE);
        let parsed = parse(&bytes).expect("a valid header");
        assert_eq!(
            parsed,
            ImageHeader {
                text_offset: 0,
                image_size: 0x0290_0000,
                flags: FLAGS_LE_4K_ANYWHERE,
            }
        );
        assert!(!parsed.is_legacy());
        assert!(!parsed.is_big_endian());
        assert_eq!(parsed.page_size(), KernelPageSize::Known(Granule::Size4KiB));
        assert_eq!(parsed.placement(), Placement::Within48Bits);
        // The magic is "ARM\x64" read little-endian (booting.rst 4: 0x644d5241).
        assert_eq!(u32::from_le_bytes(*b"ARM\x64"), MAGIC);
    }

    #[test]
    fn flags_bits_1_2_give_the_page_size_and_bit_3_the_placement() {
        // booting.rst 4: bits 1-2 = 0 unspecified, 1 4K, 2 16K, 3 64K; bit 3 = 0 near
        // the start of DRAM, 1 anywhere within 48 bits.
        let cases = [
            (0b000, KernelPageSize::Unspecified),
            (0b010, KernelPageSize::Known(Granule::Size4KiB)),
            (0b100, KernelPageSize::Known(Granule::Size16KiB)),
            (0b110, KernelPageSize::Known(Granule::Size64KiB)),
        ];
        for (flags, page_size) in cases {
            let parsed = parse(&header(0, MIB, flags)).expect("valid");
            assert_eq!(parsed.page_size(), page_size, "flags {flags:#b}");
            assert_eq!(parsed.placement(), Placement::NearRamStart);
        }
        let anywhere = parse(&header(0, MIB, 0b1000)).expect("valid");
        assert_eq!(anywhere.placement(), Placement::Within48Bits);
    }

    #[test]
    fn a_wrong_magic_is_not_an_image() {
        // booting.rst 4: `u32 magic = 0x644d5241` at offset 0x38.
        let mut bytes = header(0, MIB, 0);
        bytes[0x38..0x3c].copy_from_slice(&0x0000_457fu32.to_le_bytes());
        let error = parse(&bytes).expect_err("bad magic");
        assert_eq!(error, ImageError::BadMagic { found: 0x457f });
        assert_eq!(
            error.to_string(),
            "not an arm64 Image: the magic at offset 0x38 is 0x0000457f, \
             not \"ARM\\x64\" (0x644d5241)"
        );
    }

    #[test]
    fn a_gzip_file_must_be_decompressed_first() {
        // booting.rst 3: the AArch64 kernel has no decompressor; the boot loader
        // decompresses Image.gz. RFC 1952: every gzip member starts 1f 8b.
        let mut gzip = vec![0x1f, 0x8b, 0x08, 0x00, 0, 0, 0, 0, 0x00, 0x03];
        assert_eq!(parse(&gzip), Err(ImageError::Gzip));
        gzip.resize(4096, 0xaa);
        let error = parse(&gzip).expect_err("gzip");
        assert_eq!(error, ImageError::Gzip);
        assert!(error.to_string().starts_with("gzip-compressed"));
        assert!(error.to_string().contains("decompress"));
    }

    #[test]
    fn fewer_than_64_bytes_is_too_short() {
        // booting.rst 4: "a 64-byte header".
        let bytes = header(0, MIB, 0);
        let error = parse(&bytes[..12]).expect_err("truncated");
        assert_eq!(error, ImageError::TooShort { length: 12 });
        assert_eq!(
            error.to_string(),
            "too short: 12 bytes, the arm64 Image header is 64"
        );
        assert_eq!(parse(&[]), Err(ImageError::TooShort { length: 0 }));
        assert_eq!(
            parse(&bytes[..63]),
            Err(ImageError::TooShort { length: 63 })
        );
        assert!(parse(&bytes[..64]).is_ok());
    }

    #[test]
    fn a_big_endian_kernel_is_refused() {
        // booting.rst 4: flags bit 0 "Kernel endianness. 1 if BE, 0 if LE."
        let error = parse(&header(0, MIB, 0b0001)).expect_err("big-endian");
        assert_eq!(error, ImageError::BigEndian);
        assert_eq!(
            error.to_string(),
            "a big-endian kernel (flags bit 0 is set): Transom runs little-endian guests only"
        );
    }

    #[test]
    fn image_size_zero_means_text_offset_0x80000_and_the_file_length() {
        // booting.rst 4: "Where image_size is zero, text_offset can be assumed to be
        // 0x80000" (before v3.17 its endianness was unspecified, so it is not read).
        let legacy = parse(&header(0x0000_0800_0000_0000, 0, 0)).expect("valid");
        assert!(legacy.is_legacy());
        assert_eq!(legacy.text_offset, LEGACY_TEXT_OFFSET);
        assert_eq!(legacy.effective_size(0x0123_4560), 0x0123_4560);
        let ram = PhysRange::new(0x4000_0000, 256 * MIB);
        let placed = plan(&legacy, 0x0123_4560, ram).expect("fits");
        assert_eq!(placed.load_address, 0x4008_0000);
        assert_eq!(placed.end, 0x4008_0000 + 0x0123_4560);
    }

    #[test]
    fn plan_places_the_image_text_offset_above_a_2_mib_aligned_base() {
        // booting.rst 4: "placed text_offset bytes from a 2MB aligned base address";
        // flags bit 3 = 0: "as close as possible to the base of DRAM".
        let parsed = parse(&header(0x8_0000, 0x0200_0000, 0)).expect("valid");
        let ram = PhysRange::new(0x5010_0000, 256 * MIB);
        let placed = plan(&parsed, 0x0100_0000, ram).expect("fits");
        assert_eq!(
            placed,
            LoadPlan {
                base: 0x5020_0000,
                load_address: 0x5028_0000,
                end: 0x5228_0000,
            }
        );
        assert_eq!(placed.base % BASE_ALIGNMENT, 0);

        // An aligned RAM start is the base itself.
        let aligned = PhysRange::new(0x5000_0000, 256 * MIB);
        let placed = plan(&parsed, 0x0100_0000, aligned).expect("fits");
        assert_eq!(placed.base, 0x5000_0000);
    }

    #[test]
    fn plan_keeps_image_size_bytes_free_even_past_the_file() {
        // booting.rst 4: "At least image_size bytes from the start of the image must
        // be free for use by the kernel."
        let parsed = parse(&header(0, 0x0300_0000, 0)).expect("valid");
        let ram = PhysRange::new(0x5000_0000, 256 * MIB);
        assert_eq!(
            plan(&parsed, 0x0100_0000, ram).expect("fits").end,
            0x5300_0000
        );
        // A file longer than image_size keeps its whole length.
        assert_eq!(
            plan(&parsed, 0x0400_0000, ram).expect("fits").end,
            0x5400_0000
        );
    }

    #[test]
    fn plan_refuses_an_image_that_does_not_fit() {
        // booting.rst 4: image_size bytes from the image's start must be free, inside
        // usable system RAM.
        let parsed = parse(&header(0x8_0000, 0x0100_0000, 0)).expect("valid");
        let ram = PhysRange::new(0x5000_0000, 8 * MIB);
        let error = plan(&parsed, 0x0080_0000, ram).expect_err("too big");
        assert_eq!(
            error,
            ImageError::DoesNotFit {
                base: 0x5000_0000,
                text_offset: 0x8_0000,
                size: 0x0100_0000,
                ram,
            }
        );
        assert_eq!(
            error.to_string(),
            "needs 0x1080000 bytes from 0x50000000 (text_offset 0x80000 + image 0x1000000), \
             the partition's RAM 0x50000000..0x50800000 has 0x800000"
        );
        // Exactly fitting is fine.
        let exact = PhysRange::new(0x5000_0000, 0x0108_0000);
        assert_eq!(plan(&parsed, 0, exact).expect("fits").end, exact.end);

        // RAM that ends before its first 2 MiB boundary has no room at all.
        let sliver = PhysRange::new(0x5010_0000, MIB / 2);
        let error = plan(&parsed, 0, sliver).expect_err("no aligned base");
        assert!(error.to_string().ends_with("has 0x0"), "{error}");
    }

    #[test]
    fn plan_refuses_an_image_past_48_bits_when_placed_anywhere() {
        // booting.rst 4, flags bit 3 = 1: "all image_size bytes counted from the start
        // of the image are within the 48-bit addressable range of physical memory".
        let anywhere = parse(&header(0, 4 * MIB, 0b1000)).expect("valid");
        let high = PhysRange::new(PLACEMENT_LIMIT_48_BITS - 2 * MIB, 64 * MIB);
        assert_eq!(
            plan(&anywhere, MIB, high),
            Err(ImageError::Beyond48Bits {
                end: PLACEMENT_LIMIT_48_BITS + 2 * MIB
            })
        );
        let low = PhysRange::new(PLACEMENT_LIMIT_48_BITS - 4 * MIB, 4 * MIB);
        assert!(plan(&anywhere, MIB, low).is_ok());
    }

    #[test]
    fn plan_does_not_overflow_at_the_top_of_the_address_space() {
        let huge = ImageHeader {
            text_offset: u64::MAX - MIB,
            image_size: 4 * MIB,
            flags: 0,
        };
        let ram = PhysRange::new(0x5000_0000, 256 * MIB);
        assert!(matches!(
            plan(&huge, 0, ram),
            Err(ImageError::DoesNotFit { .. })
        ));
        let top = PhysRange {
            start: u64::MAX - MIB,
            end: u64::MAX,
        };
        let small = parse(&header(0, MIB, 0)).expect("valid");
        assert!(matches!(
            plan(&small, 0, top),
            Err(ImageError::DoesNotFit { .. })
        ));
    }
}
