//! Properties of `span()` and `offset()` for every granule, over random regions
//! below the 52-bit physical address limit: the span covers the region, is
//! granule-aligned and as small as possible (no page of it lies wholly outside the
//! region), and the offset locates the region inside it.

use proptest::prelude::*;
use transom_boards::{Granule, PHYS_ADDRESS_LIMIT, PhysRange};

fn granule() -> impl Strategy<Value = Granule> {
    prop::sample::select(Granule::ALL.to_vec())
}

/// A region of 1 byte to 1 GiB ending below the physical address limit, biased to
/// sizes and bases near page boundaries.
fn region() -> impl Strategy<Value = PhysRange> {
    let size = prop_oneof![1u64..=0x40, 0x40u64..=0x2_0000, 0x2_0000u64..=(1 << 30)];
    size.prop_flat_map(|size| {
        let base = prop_oneof![
            0..PHYS_ADDRESS_LIMIT - size,
            (0..(PHYS_ADDRESS_LIMIT - size) >> 16).prop_map(|page| page << 16),
            (1..(PHYS_ADDRESS_LIMIT - size) >> 16).prop_map(|page| (page << 16) - 1),
        ];
        base.prop_map(move |base| PhysRange::new(base, size))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4096))]

    #[test]
    fn span_covers_the_region(granule in granule(), region in region()) {
        let span = region.span(granule);
        prop_assert!(span.covers(&region), "{span} does not cover {region}");
    }

    #[test]
    fn span_is_granule_aligned(granule in granule(), region in region()) {
        let span = region.span(granule);
        prop_assert!(span.is_aligned(granule), "{span} is not {granule}-aligned");
    }

    #[test]
    fn offset_is_below_the_granule_and_locates_the_region(
        granule in granule(),
        region in region(),
    ) {
        let offset = region.offset(granule);
        prop_assert!(offset < granule.size());
        prop_assert_eq!(region.span(granule).start + offset, region.start);
    }

    /// Nothing outside the span is mapped, and the span has no page that holds no
    /// byte of the region: its first and last pages both hold region bytes.
    #[test]
    fn span_is_minimal(granule in granule(), region in region()) {
        let span = region.span(granule);
        let first_page = PhysRange::new(span.start, granule.size());
        let last_page = PhysRange::new(span.end - granule.size(), granule.size());
        prop_assert!(first_page.overlaps(&region));
        prop_assert!(last_page.overlaps(&region));
        let pages = span.size() / granule.size();
        let region_pages = region.size().div_ceil(granule.size());
        // A region touches at most one more page than its size needs (when it straddles).
        prop_assert!(pages == region_pages || pages == region_pages + 1);
    }
}
