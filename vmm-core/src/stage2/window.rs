//! Device windows: a granted region mapped into a partition's stage 2 by its
//! granule-rounded span, with the exact device address handed back; trapped
//! windows recorded for the exit handler instead of mapped.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use transom_boards::{Access, Mapping, MemoryAttributes, PhysRange, Region};

use super::descriptor::Leaf;
use super::table::{Stage2Error, Stage2Tables, TableMemory, TlbMaintenance};

/// A window as mapped: what the guest is told and what `unmap_window` undoes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MappedWindow {
    /// The granule-aligned IPA span (mapped if direct, trapped if not).
    pub span: PhysRange,
    /// The exact guest address of the device: `span.start + offset`, never the
    /// rounded base.
    pub device_ipa: u64,
    /// The device's size in bytes.
    pub size: u64,
    /// Direct or trapped.
    pub mode: Mapping,
}

/// A trapped window, as the exit handler checks an access against it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrapWindow {
    /// The device's name.
    pub device: &'static str,
    /// Its exact bytes (IPA = physical address).
    pub range: PhysRange,
    /// The widths and alignment it allows.
    pub access: Access,
}

/// A partition's address space: its stage-2 tables, the pages its direct windows
/// hold (counted, since two windows may share a page) and its trapped windows, by
/// page and in address order.
pub struct PartitionSpace<M: TableMemory> {
    tables: Stage2Tables<M>,
    direct_pages: BTreeMap<u64, u32>,
    traps: BTreeMap<u64, Vec<TrapWindow>>,
    /// Every trapped window, sorted by address (a partition's windows never
    /// overlap), so the exit handler's scan stops at the first window ending
    /// above the IPA.
    trapped: Vec<TrapWindow>,
}

impl<M: TableMemory> PartitionSpace<M> {
    /// A space over `tables`.
    pub fn new(tables: Stage2Tables<M>) -> Self {
        PartitionSpace {
            tables,
            direct_pages: BTreeMap::new(),
            traps: BTreeMap::new(),
            trapped: Vec::new(),
        }
    }

    /// The stage-2 tables.
    pub fn tables(&self) -> &Stage2Tables<M> {
        &self.tables
    }

    /// Identity-maps guest RAM (IPA = PA, so devices that DMA into it keep working).
    pub fn map_ram(
        &mut self,
        ram: PhysRange,
        tlb: &mut dyn TlbMaintenance,
    ) -> Result<(), Stage2Error> {
        self.tables.map(ram, ram.start, Leaf::RAM, tlb)
    }

    /// Maps `region` as `mode` decides: a direct window maps its rounded span with
    /// the region's attributes (never executable); a trapped one maps nothing and
    /// is recorded for every page of its span. Returns the span and the exact
    /// device address.
    pub fn map_window(
        &mut self,
        region: &Region,
        mode: Mapping,
        tlb: &mut dyn TlbMaintenance,
    ) -> Result<MappedWindow, Stage2Error> {
        let granule = self.tables.layout().geometry.granule;
        let range = region.range();
        let span = range.span(granule);
        let window = MappedWindow {
            span,
            device_ipa: span.start + range.offset(granule),
            size: range.size(),
            mode,
        };
        match mode {
            Mapping::Direct => {
                let leaf = Leaf::device(region.attributes);
                for page in pages(span, granule.size()) {
                    let holders = self.direct_pages.entry(page.start).or_insert(0);
                    *holders += 1;
                    if *holders == 1 {
                        self.tables.map(page, page.start, leaf, tlb)?;
                    }
                }
            }
            Mapping::Trapped => {
                let trap = TrapWindow {
                    device: region.name,
                    range,
                    access: region.access,
                };
                for page in pages(span, granule.size()) {
                    self.traps.entry(page.start).or_default().push(trap);
                }
                let at = self
                    .trapped
                    .partition_point(|other| other.range.start <= range.start);
                self.trapped.insert(at, trap);
            }
        }
        Ok(window)
    }

    /// Maps the IPAs `range` to the device registers at `output` with
    /// `attributes`: the one device mapping whose IPA is not its address, a GICv2's
    /// virtual CPU interface shown where the guest expects its CPU interface.
    pub fn map_device_at(
        &mut self,
        range: PhysRange,
        output: u64,
        attributes: MemoryAttributes,
        tlb: &mut dyn TlbMaintenance,
    ) -> Result<(), Stage2Error> {
        self.tables
            .map(range, output, Leaf::device(attributes), tlb)
    }

    /// Undoes exactly what `map_window` did for `window` of `region`: a page another
    /// live direct window still holds stays mapped.
    pub fn unmap_window(
        &mut self,
        region: &Region,
        window: &MappedWindow,
        tlb: &mut dyn TlbMaintenance,
    ) -> Result<(), Stage2Error> {
        let granule_size = self.tables.layout().geometry.granule.size();
        match window.mode {
            Mapping::Direct => {
                for page in pages(window.span, granule_size) {
                    let Some(holders) = self.direct_pages.get_mut(&page.start) else {
                        continue;
                    };
                    *holders -= 1;
                    if *holders == 0 {
                        self.direct_pages.remove(&page.start);
                        self.tables.unmap(page, tlb)?;
                    }
                }
            }
            Mapping::Trapped => {
                for page in pages(window.span, granule_size) {
                    let Some(traps) = self.traps.get_mut(&page.start) else {
                        continue;
                    };
                    traps.retain(|trap| trap.device != region.name);
                    if traps.is_empty() {
                        self.traps.remove(&page.start);
                    }
                }
                self.trapped.retain(|trap| trap.device != region.name);
            }
        }
        Ok(())
    }

    /// The trapped window whose exact bytes hold `ipa`, if any. An IPA in a trapped
    /// page but outside every window of it gets `None`: the access is refused.
    /// Called on every trapped access.
    #[inline]
    pub fn trapped_window(&self, ipa: u64) -> Option<&TrapWindow> {
        // A partition has a handful of trapped windows: a scan of the sorted list
        // that stops at the first window ending above `ipa` costs fewer
        // instructions than a binary search for so few.
        self.trapped
            .iter()
            .find(|trap| ipa < trap.range.end)
            .filter(|trap| trap.range.start <= ipa)
    }

    /// Whether `ipa` lies in a page of some trapped window.
    pub fn is_trapped_page(&self, ipa: u64) -> bool {
        let granule = self.tables.layout().geometry.granule;
        self.traps.contains_key(&granule.align_down(ipa))
    }
}

/// The granule pages of an aligned `span`.
fn pages(span: PhysRange, page_size: u64) -> impl Iterator<Item = PhysRange> {
    (span.start..span.end)
        .step_by(page_size as usize)
        .map(move |start| PhysRange::new(start, page_size))
}
