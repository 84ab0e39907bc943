//! Stage-2 tests: a software walk of every mapped page, break-before-make checked
//! on every store, and random map/unmap sequences against a page-by-page model.

extern crate std;

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use core::cell::RefCell;
use std::rc::Rc;

use proptest::prelude::*;
use transom_boards::{DeviceKind, Granule, Mapping, MemoryAttributes, PhysRange, Region};

use super::descriptor::{Descriptor, Leaf, Permissions};
use super::layout::Stage2Layout;
use super::table::{HeapTables, Stage2Tables, TableMemory, TlbMaintenance};
use super::window::PartitionSpace;

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// One observed event, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    Write {
        table: u64,
        index: usize,
        old: u64,
        new: u64,
    },
    /// One entry (leaf or emptied table) at `ipa`.
    InvalidateEntry {
        ipa: u64,
    },
    /// A table's live subtree.
    Invalidate {
        ipa: u64,
        size: u64,
    },
    Publish,
    Complete,
}

type Log = Rc<RefCell<Vec<Event>>>;

/// Heap tables that log every store.
struct Recording {
    inner: HeapTables,
    log: Log,
}

impl TableMemory for Recording {
    fn allocate(&mut self, bytes: u64) -> Option<u64> {
        self.inner.allocate(bytes)
    }
    fn free(&mut self, address: u64) {
        self.inner.free(address);
    }
    fn read(&self, address: u64, index: usize) -> u64 {
        self.inner.read(address, index)
    }
    fn write(&mut self, address: u64, index: usize, value: u64) {
        let old = self.inner.read(address, index);
        self.log.borrow_mut().push(Event::Write {
            table: address,
            index,
            old,
            new: value,
        });
        self.inner.write(address, index, value);
    }
}

struct FakeTlb {
    log: Log,
}

impl TlbMaintenance for FakeTlb {
    fn invalidate_entry(&mut self, ipa: u64) {
        self.log.borrow_mut().push(Event::InvalidateEntry { ipa });
    }
    fn invalidate_range(&mut self, ipa: u64, size: u64) {
        self.log.borrow_mut().push(Event::Invalidate { ipa, size });
    }
    fn publish(&mut self) {
        self.log.borrow_mut().push(Event::Publish);
    }
    fn complete(&mut self) {
        self.log.borrow_mut().push(Event::Complete);
    }
}

fn recording(granule: Granule, ipa_bits: u32) -> (Stage2Tables<Recording>, FakeTlb, Log) {
    let log: Log = Rc::default();
    let layout = Stage2Layout::with_ipa_bits(granule, ipa_bits);
    let memory = Recording {
        inner: HeapTables::new(&layout, 64).expect("memory for the arena"),
        log: log.clone(),
    };
    let tables = Stage2Tables::new(layout, memory).expect("memory for the root");
    (tables, FakeTlb { log: log.clone() }, log)
}

/// Break-before-make (Arm ARM K11.5.3): no store replaces a valid entry with another
/// valid one, and after an entry is made invalid it is not written again before a
/// TLB invalidation.
fn assert_break_before_make(log: &Log) {
    let mut pending: BTreeMap<(u64, usize), ()> = BTreeMap::new();
    for event in log.borrow().iter() {
        match *event {
            Event::Write {
                table,
                index,
                old,
                new,
            } => {
                let old_valid = Descriptor(old).is_valid();
                let new_valid = Descriptor(new).is_valid();
                assert!(
                    !(old_valid && new_valid && old != new),
                    "valid entry {old:#x} replaced by {new:#x} without break-before-make"
                );
                if new_valid {
                    assert!(
                        !pending.contains_key(&(table, index)),
                        "entry rewritten before the TLB invalidation of its old value"
                    );
                }
                if old_valid && !new_valid {
                    pending.insert((table, index), ());
                }
            }
            Event::Invalidate { .. } | Event::InvalidateEntry { .. } => pending.clear(),
            Event::Publish | Event::Complete => {}
        }
    }
}

/// A 1 GiB guest at 0x4000_0000 with 4 KiB pages: one 1 GiB block at level 1, and
/// at most 3 table pages in all (the target), for 40- and 44-bit IPAs.
#[test]
fn a_gib_of_ram_takes_a_block_and_few_tables() {
    for ipa_bits in [40, 44] {
        let (mut tables, mut tlb, log) = recording(Granule::Size4KiB, ipa_bits);
        let ram = PhysRange::new(0x4000_0000, GIB);
        tables
            .map(ram, ram.start, Leaf::RAM, &mut tlb)
            .expect("maps");
        assert!(tables.table_pages() <= 3, "{} pages", tables.table_pages());
        let translation = tables.translate(0x4123_4567).expect("mapped");
        assert_eq!(translation.output, 0x4123_4567);
        assert_eq!(translation.level, 1, "a 1 GiB block");
        assert_eq!(translation.leaf, Leaf::RAM);
        assert_eq!(tables.translate(0x3fff_ffff), None);
        assert_eq!(tables.translate(0x8000_0000), None);
        assert_break_before_make(&log);
    }
}

/// Every page of every mapped range translates to its output with its attributes;
/// the pages around them fault. For each granule.
#[test]
fn the_walker_sees_every_page_as_mapped() {
    for granule in Granule::ALL {
        let (mut tables, mut tlb, log) = recording(granule, 40);
        let page = granule.size();
        let ram = PhysRange::new(0x4000_0000, 64 * MIB);
        let device = PhysRange::new(0x0a00_0000, 4 * page);
        let device_leaf = Leaf::device(MemoryAttributes::DeviceNGnRE);
        tables
            .map(ram, ram.start, Leaf::RAM, &mut tlb)
            .expect("RAM");
        tables
            .map(device, device.start, device_leaf, &mut tlb)
            .expect("device");
        for (range, leaf) in [(ram, Leaf::RAM), (device, device_leaf)] {
            let mut address = range.start;
            while address < range.end {
                let translation = tables.translate(address + 8).expect("mapped page");
                assert_eq!(translation.output, address + 8, "{granule:?}");
                assert_eq!(translation.leaf, leaf);
                address += page;
            }
            assert_eq!(tables.translate(range.start - 1), None);
            assert_eq!(tables.translate(range.end), None);
        }
        assert!(
            !tables
                .translate(device.start)
                .expect("device")
                .leaf
                .permissions
                .execute
        );
        assert_break_before_make(&log);
    }
}

/// `HeapTables` writes a run of leaves in one call (`write_run`), where `Recording`
/// keeps the store-by-store default: both build the same tables, for a bank of RAM
/// with ragged edges (pages, blocks, pages), device pages and a change of
/// attributes inside a block (a split), for each granule.
#[test]
fn runs_of_leaves_in_one_call_build_the_same_tables() {
    for granule in Granule::ALL {
        let layout = Stage2Layout::with_ipa_bits(granule, 40);
        let (mut stored, mut tlb, _) = recording(granule, 40);
        let arena = HeapTables::new(&layout, 64).expect("memory for the arena");
        let mut run = Stage2Tables::new(layout, arena).expect("memory for the root");
        let page = granule.size();
        let block = layout.geometry.entry_size(2);
        let ram = PhysRange::new(0x4000_0000 - 3 * page, GIB + 5 * page);
        let device = PhysRange::new(0x0900_0000, 2 * page);
        let read_only = PhysRange::new(0x4000_0000 + block + page, 3 * page);
        let read_only_leaf = Leaf {
            attributes: MemoryAttributes::NormalWriteBack,
            permissions: Permissions::READ_ONLY,
        };
        let requests = [
            (ram, Leaf::RAM),
            (device, Leaf::device(MemoryAttributes::DeviceNGnRE)),
            (read_only, read_only_leaf),
        ];
        for (range, leaf) in requests {
            stored
                .map(range, range.start, leaf, &mut tlb)
                .expect("maps");
            run.map(range, range.start, leaf, &mut tlb).expect("maps");
        }
        assert_eq!(run.table_pages(), stored.table_pages(), "{granule:?}");
        let mut probes = Vec::new();
        for (range, _) in requests {
            for edge in [range.start, range.end] {
                probes.extend((0..8).map(|pages| edge - 4 * page + pages * page));
            }
        }
        probes.extend((0..64).map(|step| ram.start + step * (ram.size() / 64) + page));
        for ipa in probes {
            assert_eq!(
                run.translate(ipa),
                stored.translate(ipa),
                "{granule:?} {ipa:#x}"
            );
        }
    }
}

/// Unmapping a page out of a block splits the block (break-before-make) and leaves
/// the rest mapped; unmapping everything frees every table but the root.
#[test]
fn unmap_splits_blocks_and_frees_tables() {
    for granule in Granule::ALL {
        let (mut tables, mut tlb, log) = recording(granule, 40);
        let block = Stage2Layout::with_ipa_bits(granule, 40)
            .geometry
            .entry_size(2);
        let ram = PhysRange::new(0x4000_0000, 2 * block);
        tables
            .map(ram, ram.start, Leaf::RAM, &mut tlb)
            .expect("maps");
        let hole = PhysRange::new(0x4000_0000 + granule.size(), granule.size());
        tables.unmap(hole, &mut tlb).expect("unmaps");
        assert_eq!(tables.translate(hole.start), None);
        assert_eq!(
            tables.translate(ram.start).map(|t| t.output),
            Some(ram.start)
        );
        assert_eq!(tables.translate(hole.end).map(|t| t.level), Some(3));
        assert_eq!(tables.translate(ram.end - 8).map(|t| t.level), Some(2));
        assert!(log.borrow().contains(&Event::Complete));
        tables.unmap(ram, &mut tlb).expect("unmaps all");
        assert_eq!(tables.translate(ram.start), None);
        let root_pages = tables.layout().root_tables;
        assert_eq!(tables.table_pages(), root_pages, "{granule:?}");
        assert_eq!(tables.memory().inner.live_blocks(), 1);
        assert_break_before_make(&log);
    }
}

/// Remapping a live page with other attributes goes through invalid first.
#[test]
fn changing_attributes_breaks_before_making() {
    let (mut tables, mut tlb, log) = recording(Granule::Size4KiB, 40);
    let page = PhysRange::new(0x0900_0000, 0x1000);
    let strict = Leaf::device(MemoryAttributes::DeviceNGnRnE);
    tables
        .map(
            page,
            page.start,
            Leaf::device(MemoryAttributes::DeviceNGnRE),
            &mut tlb,
        )
        .expect("maps");
    tables
        .map(page, page.start, strict, &mut tlb)
        .expect("remaps");
    assert_eq!(tables.translate(page.start).map(|t| t.leaf), Some(strict));
    // A page is a leaf: one invalidation at its IPA (TLBI IPAS2E1IS), no range.
    let invalidations: Vec<Event> = log
        .borrow()
        .iter()
        .copied()
        .filter(|event| {
            matches!(
                event,
                Event::Invalidate { .. } | Event::InvalidateEntry { .. }
            )
        })
        .collect();
    assert_eq!(invalidations, [Event::InvalidateEntry { ipa: 0x0900_0000 }]);
    assert_break_before_make(&log);
}

/// Replacing a table that still maps pages with a block must invalidate every page
/// the table translated, not just one address (a TLB may hold any of them).
#[test]
fn replacing_a_live_table_invalidates_its_whole_range() {
    let (mut tables, mut tlb, log) = recording(Granule::Size4KiB, 40);
    let block = PhysRange::new(0x4020_0000, 2 << 20);
    let page = PhysRange::new(0x4030_0000, 0x1000);
    tables
        .map(
            page,
            page.start,
            Leaf::device(MemoryAttributes::DeviceNGnRE),
            &mut tlb,
        )
        .expect("maps a page: a level-3 table under the 2 MiB entry");
    tables
        .map(block, block.start, Leaf::RAM, &mut tlb)
        .expect("maps the block over it");
    assert_eq!(tables.translate(page.start).map(|t| t.level), Some(2));
    assert!(log.borrow().contains(&Event::Invalidate {
        ipa: block.start,
        size: block.size()
    }));
    assert_break_before_make(&log);
}

#[test]
fn misaligned_or_out_of_range_requests_are_refused() {
    let (mut tables, mut tlb, _) = recording(Granule::Size64KiB, 40);
    let misaligned = PhysRange::new(0x0900_1000, 0x1000);
    assert!(
        tables
            .map(misaligned, misaligned.start, Leaf::RAM, &mut tlb)
            .is_err()
    );
    let beyond = PhysRange::new(1 << 40, 0x1_0000);
    assert!(
        tables
            .map(beyond, beyond.start, Leaf::RAM, &mut tlb)
            .is_err()
    );
}

fn space(granule: Granule) -> (PartitionSpace<Recording>, FakeTlb, Log) {
    let (tables, tlb, log) = recording(granule, 40);
    (PartitionSpace::new(tables), tlb, log)
}

/// The Pi's mini UART, 0x40 into its page: a trapped window reports the exact
/// address, records the exact bytes, and maps nothing.
#[test]
fn a_trapped_window_returns_the_exact_address_and_maps_nothing() {
    let (mut space, mut tlb, _) = space(Granule::Size4KiB);
    let mini_uart = Region::new("mini-uart", 0xfe21_5040, 0x40, DeviceKind::MiniUart);
    let window = space
        .map_window(&mini_uart, Mapping::Trapped, &mut tlb)
        .expect("maps");
    assert_eq!(window.span, PhysRange::new(0xfe21_5000, 0x1000));
    assert_eq!(window.device_ipa, 0xfe21_5040);
    assert_eq!(space.tables().translate(0xfe21_5040), None);
    assert_eq!(
        space.trapped_window(0xfe21_5040).map(|t| t.device),
        Some("mini-uart")
    );
    assert_eq!(
        space.trapped_window(0xfe21_507f).map(|t| t.device),
        Some("mini-uart")
    );
    // AUX, in the same page, is not the guest's.
    assert_eq!(space.trapped_window(0xfe21_5000), None);
    assert!(space.is_trapped_page(0xfe21_5000));
    space
        .unmap_window(&mini_uart, &window, &mut tlb)
        .expect("unmaps");
    assert!(!space.is_trapped_page(0xfe21_5040));
}

/// Two direct windows sharing a page: unmapping one keeps the page mapped for the
/// other; a straddling region maps both of its pages.
#[test]
fn direct_windows_share_pages_by_count() {
    let (mut space, mut tlb, log) = space(Granule::Size4KiB);
    let first = Region::new("first", 0x0a00_0000, 0x800, DeviceKind::Other);
    let second = Region::new("second", 0x0a00_0800, 0x1000, DeviceKind::Other);
    let a = space
        .map_window(&first, Mapping::Direct, &mut tlb)
        .expect("maps");
    let b = space
        .map_window(&second, Mapping::Direct, &mut tlb)
        .expect("maps");
    assert_eq!(
        b.span,
        PhysRange::new(0x0a00_0000, 0x2000),
        "straddles two pages"
    );
    assert_eq!(b.device_ipa, 0x0a00_0800);
    space.unmap_window(&first, &a, &mut tlb).expect("unmaps");
    assert!(
        space.tables().translate(0x0a00_0000).is_some(),
        "second still holds it"
    );
    space.unmap_window(&second, &b, &mut tlb).expect("unmaps");
    assert_eq!(space.tables().translate(0x0a00_0000), None);
    assert_eq!(space.tables().translate(0x0a00_1000), None);
    assert_break_before_make(&log);
}

/// A 16 KiB region with 64 KiB pages: its span is one 64 KiB page, the exact
/// address is its base.
#[test]
fn a_sub_granule_region_under_64k_pages() {
    let (mut space, mut tlb, _) = space(Granule::Size64KiB);
    let bar = Region::new("bar", 0x1000_4000, 0x4000, DeviceKind::Other);
    let window = space
        .map_window(&bar, Mapping::Trapped, &mut tlb)
        .expect("maps");
    assert_eq!(window.span, PhysRange::new(0x1000_0000, 0x1_0000));
    assert_eq!(window.device_ipa, 0x1000_4000);
    assert_eq!(space.trapped_window(0x1000_3ff8), None);
    assert!(space.trapped_window(0x1000_4000).is_some());
}

/// What a page maps to in the model.
type Model = BTreeMap<u64, (u64, Leaf)>;

#[derive(Clone, Debug)]
enum Operation {
    Map {
        first: u64,
        pages: u64,
        output: u64,
        device: bool,
    },
    Unmap {
        first: u64,
        pages: u64,
    },
}

fn operation() -> impl Strategy<Value = Operation> {
    // A 64-page arena, with outputs shifted so blocks are sometimes possible.
    let map =
        (0u64..64, 1u64..64, 0u64..4, any::<bool>()).prop_map(|(first, pages, shift, device)| {
            Operation::Map {
                first,
                pages: pages.min(64 - first),
                output: shift,
                device,
            }
        });
    let unmap = (0u64..64, 1u64..64).prop_map(|(first, pages)| Operation::Unmap {
        first,
        pages: pages.min(64 - first),
    });
    prop_oneof![map, unmap]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Random map/unmap sequences agree page by page with a simple model, for every
    /// granule, and keep break-before-make.
    #[test]
    fn random_sequences_match_the_model(
        granule_index in 0usize..3,
        operations in prop::collection::vec(operation(), 1..24),
    ) {
        let granule = Granule::ALL[granule_index];
        let page = granule.size();
        // An arena starting on a level-2 block boundary, so whole-block maps happen
        // with the 4 KiB granule (64 pages are less than a block of the others).
        let base = 0x8000_0000u64;
        let (mut tables, mut tlb, log) = recording(granule, 40);
        // The same sequence on the arena itself, which lends its tables as slices:
        // runs over empty entries take the fast path `Recording` never does.
        let layout = Stage2Layout::with_ipa_bits(granule, 40);
        let arena = HeapTables::new(&layout, 64).expect("memory for the arena");
        let mut lent = Stage2Tables::new(layout, arena).expect("memory for the root");
        let mut lent_tlb = FakeTlb { log: Log::default() };
        let mut model = Model::new();
        for operation in &operations {
            match *operation {
                Operation::Map { first, pages, output, device } => {
                    let range = PhysRange::new(base + first * page, pages * page);
                    let output_start = 0x10_0000_0000 + (first + output) * page;
                    let leaf = if device { Leaf::device(MemoryAttributes::DeviceNGnRE) } else { Leaf::RAM };
                    tables.map(range, output_start, leaf, &mut tlb).expect("maps");
                    lent.map(range, output_start, leaf, &mut lent_tlb).expect("maps");
                    for index in 0..pages {
                        model.insert(first + index, (output_start + index * page, leaf));
                    }
                }
                Operation::Unmap { first, pages } => {
                    let range = PhysRange::new(base + first * page, pages * page);
                    tables.unmap(range, &mut tlb).expect("unmaps");
                    lent.unmap(range, &mut lent_tlb).expect("unmaps");
                    for index in 0..pages {
                        model.remove(&(first + index));
                    }
                }
            }
        }
        for index in 0..64 {
            let translation = tables.translate(base + index * page + 0x18);
            let expected = model.get(&index).map(|(output, leaf)| (output + 0x18, *leaf));
            prop_assert_eq!(translation.map(|t| (t.output, t.leaf)), expected, "page {}", index);
            let translation = lent.translate(base + index * page + 0x18);
            prop_assert_eq!(translation.map(|t| (t.output, t.leaf)), expected, "page {} (lent)", index);
        }
        if model.is_empty() {
            prop_assert_eq!(tables.table_pages(), tables.layout().root_tables);
        }
        assert_break_before_make(&log);
    }
}

#[test]
fn permissions_of_a_read_only_leaf_walk_back() {
    let (mut tables, mut tlb, _) = recording(Granule::Size16KiB, 40);
    let range = PhysRange::new(0x4000_0000, 0x4000);
    let leaf = Leaf {
        attributes: MemoryAttributes::NormalWriteBack,
        permissions: Permissions::READ_ONLY,
    };
    tables
        .map(range, range.start, leaf, &mut tlb)
        .expect("maps");
    let translation = tables.translate(range.start).expect("mapped");
    assert!(translation.leaf.permissions.read && !translation.leaf.permissions.write);
}

/// The arena hands out blocks aligned to their size (VMSAv8-64 D8.2: a table is
/// aligned to its size, concatenated root tables to their total size), zeroes a
/// freed table before handing it out again, and says so when it is full.
#[test]
fn the_table_arena_aligns_reuses_zeroed_and_fills_up() {
    for granule in [Granule::Size4KiB, Granule::Size16KiB, Granule::Size64KiB] {
        // 40-bit IPA with 4 KiB tables: two concatenated root tables.
        let layout = Stage2Layout::with_ipa_bits(granule, 40);
        let mut arena = HeapTables::new(&layout, 2).expect("room for the arena");
        let root = arena.allocate(layout.root_bytes()).expect("the root");
        assert!(root.is_multiple_of(layout.root_bytes()), "{granule:?}");
        let table_bytes = layout.geometry.table_bytes();
        let first = arena.allocate(table_bytes).expect("a table");
        let second = arena.allocate(table_bytes).expect("a second table");
        assert!(first.is_multiple_of(table_bytes) && second.is_multiple_of(table_bytes));
        assert_eq!(
            arena.allocate(table_bytes),
            None,
            "{granule:?}: two tables only"
        );
        arena.write(first, 3, 0xdead_0003);
        arena.free(first);
        assert_eq!(arena.live_blocks(), 2);
        let again = arena.allocate(table_bytes).expect("the freed table");
        assert_eq!(again, first);
        assert_eq!(arena.read(again, 3), 0, "a reused table is zeroed");
    }
}
