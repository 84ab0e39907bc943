//! Physical address ranges, stage-2 granules and the rounding between them.
//!
//! A device window is kept as the exact bytes the device decodes. Mapping needs
//! granule-aligned pages, so [`PhysRange::span`] rounds the start down and the end up
//! (never the size alone: a 0x40-byte region at 0xfe21_5fe0 crosses into the next page
//! and spans two), and [`PhysRange::offset`] says where inside that span the device
//! starts. A caller gives the guest `span.start + offset`, never `span.start`.

use core::fmt;

/// The highest physical address width the architecture defines (FEAT_LPA / LPA2: 52
/// bits). Board tables stay below it, which also keeps every rounded span inside
/// `u64`.
pub const PHYS_ADDRESS_LIMIT: u64 = 1 << 52;

/// A half-open physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl PhysRange {
    /// The range `[start, start + size)`.
    ///
    /// Panics (at compile time, in a `const`) if the range wraps; board tables whose
    /// sizes may be wrong use [`PhysRange::checked`] and let
    /// [`validate`](crate::validate) report it.
    pub const fn new(start: u64, size: u64) -> PhysRange {
        let Some(end) = start.checked_add(size) else {
            panic!("PhysRange wraps around the address space");
        };
        PhysRange { start, end }
    }

    /// The range `[start, start + size)`, or `None` if it wraps.
    pub const fn checked(start: u64, size: u64) -> Option<PhysRange> {
        match start.checked_add(size) {
            Some(end) => Some(PhysRange { start, end }),
            None => None,
        }
    }

    /// The size in bytes.
    pub const fn size(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the range holds no byte.
    pub const fn is_empty(&self) -> bool {
        self.start >= self.end
    }

    /// Whether `address` lies inside.
    pub const fn contains(&self, address: u64) -> bool {
        self.start <= address && address < self.end
    }

    /// Whether every byte of `other` lies inside `self`.
    pub const fn covers(&self, other: &PhysRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }

    /// Whether the two ranges share at least one byte.
    pub const fn overlaps(&self, other: &PhysRange) -> bool {
        self.start < other.end && other.start < self.end
    }

    /// The overlap of two ranges, if any.
    pub const fn intersection(&self, other: &PhysRange) -> Option<PhysRange> {
        let start = if self.start > other.start {
            self.start
        } else {
            other.start
        };
        let end = if self.end < other.end {
            self.end
        } else {
            other.end
        };
        if start < end {
            Some(PhysRange { start, end })
        } else {
            None
        }
    }

    /// Whether both ends lie on `granule` boundaries.
    pub const fn is_aligned(&self, granule: Granule) -> bool {
        granule.is_aligned(self.start) && granule.is_aligned(self.end)
    }

    /// The granule-aligned pages that hold the range: `[align_down(start),
    /// align_up(end))`.
    ///
    /// Panics if the end rounds past 2^64, which no physical address does
    /// (see [`PHYS_ADDRESS_LIMIT`]; [`validate`](crate::validate) rejects such tables).
    pub const fn span(&self, granule: Granule) -> PhysRange {
        let start = granule.align_down(self.start);
        let Some(end) = granule.align_up(self.end) else {
            panic!("a span rounds past the end of the 64-bit address space");
        };
        PhysRange { start, end }
    }

    /// Where the range starts inside its [`span`](PhysRange::span): `start -
    /// align_down(start)`, always below the granule size.
    pub const fn offset(&self, granule: Granule) -> u64 {
        self.start - granule.align_down(self.start)
    }
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..{:#x}", self.start, self.end)
    }
}

/// A translation granule: the page size of a stage-2 table, chosen per board.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granule {
    /// 4 KiB pages.
    Size4KiB,
    /// 16 KiB pages.
    Size16KiB,
    /// 64 KiB pages.
    Size64KiB,
}

labels!(
    /// How the granule is written in messages: `4 KiB`, `16 KiB`, `64 KiB`.
    Granule, |granule| granule, {
        Granule::Size4KiB => "4 KiB",
        Granule::Size16KiB => "16 KiB",
        Granule::Size64KiB => "64 KiB",
    }
);

impl Granule {
    /// Every granule, smallest first.
    pub const ALL: [Granule; 3] = [Granule::Size4KiB, Granule::Size16KiB, Granule::Size64KiB];

    /// The page size in bytes.
    pub const fn size(self) -> u64 {
        match self {
            Granule::Size4KiB => 4 * 1024,
            Granule::Size16KiB => 16 * 1024,
            Granule::Size64KiB => 64 * 1024,
        }
    }

    const fn offset_mask(self) -> u64 {
        self.size() - 1
    }

    /// The page boundary at or below `address`.
    pub const fn align_down(self, address: u64) -> u64 {
        address & !self.offset_mask()
    }

    /// The page boundary at or above `address`, or `None` past 2^64.
    pub const fn align_up(self, address: u64) -> Option<u64> {
        match address.checked_add(self.offset_mask()) {
            Some(bumped) => Some(self.align_down(bumped)),
            None => None,
        }
    }

    /// Whether `address` is a page boundary.
    pub const fn is_aligned(self, address: u64) -> bool {
        address & self.offset_mask() == 0
    }
}

impl fmt::Display for Granule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intersection_of_overlapping_and_disjoint_ranges() {
        let ram = PhysRange::new(0x4000_0000, 0x4000_0000);
        let firmware = PhysRange::new(0x3000_0000, 0x2000_0000);
        assert_eq!(
            ram.intersection(&firmware),
            Some(PhysRange::new(0x4000_0000, 0x1000_0000))
        );
        let far = PhysRange::new(0x9000_0000, 0x1000);
        assert_eq!(ram.intersection(&far), None);
        // Touching ranges share no byte.
        let touching = PhysRange::new(0x8000_0000, 0x1000);
        assert_eq!(ram.intersection(&touching), None);
        assert!(!ram.overlaps(&touching));
    }

    #[test]
    fn contains_is_half_open() {
        let range = PhysRange::new(0x1000, 0x1000);
        assert!(range.contains(0x1000));
        assert!(range.contains(0x1fff));
        assert!(!range.contains(0x2000));
        assert_eq!(range.size(), 0x1000);
    }

    /// The Pi 4's mini UART (BCM2711 ARM Peripherals 2.1: AUX_MU_IO_REG at
    /// 0x7e21_5040, 0x40 bytes of registers) sits 0x40 into the AUX page.
    #[test]
    fn span_and_offset_of_a_misaligned_region() {
        let mini_uart = PhysRange::new(0xfe21_5040, 0x40);
        let span = mini_uart.span(Granule::Size4KiB);
        assert_eq!(span, PhysRange::new(0xfe21_5000, 0x1000));
        assert_eq!(mini_uart.offset(Granule::Size4KiB), 0x40);
        assert_eq!(
            span.start + mini_uart.offset(Granule::Size4KiB),
            0xfe21_5040
        );
        // Under 64 KiB pages the same registers are 0x5040 into 0xfe21_0000.
        assert_eq!(
            mini_uart.span(Granule::Size64KiB),
            PhysRange::new(0xfe21_0000, 0x1_0000)
        );
        assert_eq!(mini_uart.offset(Granule::Size64KiB), 0x5040);
    }

    /// A region that crosses a page boundary spans both pages, although its size
    /// rounded up is one page: rounding the size alone would under-map it.
    #[test]
    fn a_straddling_region_spans_two_pages() {
        let straddling = PhysRange::new(0x1fe0, 0x40);
        let naive_size = Granule::Size4KiB
            .align_up(straddling.size())
            .expect("small");
        assert_eq!(naive_size, 0x1000);
        let span = straddling.span(Granule::Size4KiB);
        assert_eq!(span, PhysRange::new(0x1000, 0x2000));
        assert!(span.covers(&straddling));
    }

    #[test]
    fn aligned_regions_round_to_themselves() {
        for granule in Granule::ALL {
            let region = PhysRange::new(7 * granule.size(), 3 * granule.size());
            assert_eq!(region.span(granule), region);
            assert_eq!(region.offset(granule), 0);
            assert!(region.is_aligned(granule));
        }
    }

    #[test]
    fn align_up_reports_overflow() {
        assert_eq!(Granule::Size4KiB.align_up(u64::MAX), None);
        assert_eq!(
            Granule::Size4KiB.align_up(u64::MAX - 0xfff),
            Some(u64::MAX - 0xfff)
        );
    }
}
