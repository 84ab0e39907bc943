//! Stage-2 translation tables for any granule: map and unmap ranges with blocks
//! where alignment allows and pages otherwise, break-before-make on every change of
//! a live entry, and a software walker.
//!
//! `aarch64-paging` (which has stage-2 attributes since 0.12) supports only the
//! 4 KiB granule (`PAGE_SHIFT = 12` in its `paging.rs`); Transom's boards may choose
//! 16 KiB or 64 KiB, so this module is its own.

use alloc::vec::Vec;

use transom_boards::PhysRange;

use super::descriptor::{Descriptor, Entry, Leaf};
use super::layout::{LEAF_LEVEL, Stage2Layout};

/// Memory for translation tables, addressed by physical address.
pub trait TableMemory {
    /// A zeroed block of `bytes` (a table, or concatenated root tables) aligned to
    /// `bytes`; its physical address, or `None` when out of memory.
    fn allocate(&mut self, bytes: u64) -> Option<u64>;
    /// Gives back the block at `address`: a table, never the root.
    fn free(&mut self, address: u64);
    /// Entry `index` of the table at `address`.
    fn read(&self, address: u64, index: usize) -> u64;
    /// Writes entry `index` of the table at `address`.
    fn write(&mut self, address: u64, index: usize, value: u64);
    /// Writes entries `index..index + count` of the table at `address`: `first`,
    /// then each entry `step` more than the one before (a run of leaves, which a
    /// range of RAM makes hundreds long). As many [`TableMemory::write`]s unless
    /// the memory has a faster way.
    fn write_run(&mut self, address: u64, index: usize, first: u64, step: u64, count: usize) {
        let mut value = first;
        for offset in 0..count {
            self.write(address, index + offset, value);
            value += step;
        }
    }
}

/// The TLB maintenance a change of the tables needs; the kernel implements it with
/// the Arm ARM's sequences (D8.16 "Translation Lookaside Buffers", K11.5.3 for
/// break-before-make), the tests fake it.
pub trait TlbMaintenance {
    /// A leaf (block or page) that translated `ipa`, or a table with no valid
    /// entry left whose walk covered `ipa`, has just been made invalid: make the
    /// store visible to the walkers (`DSB ISHST`) and remove what the TLBs and walk
    /// caches hold for it (one `TLBI IPAS2E1IS` at `ipa`: an entry is invalidated
    /// by any address it translates, whatever its level; then `DSB ISH`), before
    /// the entry is written again.
    fn invalidate_entry(&mut self, ipa: u64);
    /// A table that still translated `[ipa, ipa + size)` through its subtree has
    /// just been made invalid: as [`TlbMaintenance::invalidate_entry`], for every
    /// page of the range (`TLBI IPAS2E1IS` per page, or a whole-VMID
    /// invalidation when that is fewer instructions).
    fn invalidate_range(&mut self, ipa: u64, size: u64);
    /// New entries were written where there were none: make them visible to the
    /// walkers (`DSB ISHST`).
    fn publish(&mut self);
    /// A batch of changes that invalidated entries is complete: remove cached
    /// combined stage-1 and stage-2 entries too (`TLBI VMALLE1IS`, `DSB ISH`, `ISB`).
    fn complete(&mut self);
}

/// Why a stage-2 change failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage2Error {
    /// The range is not aligned to the granule.
    Misaligned {
        /// The range.
        range: PhysRange,
        /// The granule's size.
        granule_size: u64,
    },
    /// The range, or its output, passes the IPA or physical address limit.
    OutOfRange {
        /// The range.
        range: PhysRange,
        /// One past the highest address.
        limit: u64,
    },
    /// No memory for a table.
    OutOfMemory,
}

/// One translation, as the software walker finds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translation {
    /// The output address of the IPA.
    pub output: u64,
    /// The attributes of the leaf.
    pub leaf: Leaf,
    /// The level of the leaf (3 for a page).
    pub level: u32,
}

/// A partition's stage-2 tables.
pub struct Stage2Tables<M: TableMemory> {
    layout: Stage2Layout,
    root: u64,
    memory: M,
    table_pages: u64,
}

/// The fixed parts of one `map` call.
struct MapRequest {
    ipa_base: u64,
    output_base: u64,
    leaf: Leaf,
}

impl MapRequest {
    fn output_of(&self, ipa: u64) -> u64 {
        self.output_base + (ipa - self.ipa_base)
    }
}

impl<M: TableMemory> Stage2Tables<M> {
    /// Empty tables with `layout`, in `memory`.
    pub fn new(layout: Stage2Layout, mut memory: M) -> Result<Self, Stage2Error> {
        let root = memory
            .allocate(layout.root_bytes())
            .ok_or(Stage2Error::OutOfMemory)?;
        Ok(Stage2Tables {
            layout,
            root,
            memory,
            table_pages: layout.root_tables,
        })
    }

    /// The layout.
    pub fn layout(&self) -> &Stage2Layout {
        &self.layout
    }

    /// The physical address of the root table, for `VTTBR_EL2.BADDR`.
    pub fn root_address(&self) -> u64 {
        self.root
    }

    /// Table pages in use, root tables included.
    pub fn table_pages(&self) -> u64 {
        self.table_pages
    }

    /// The table memory.
    pub fn memory(&self) -> &M {
        &self.memory
    }

    fn check(&self, range: &PhysRange, output: u64) -> Result<(), Stage2Error> {
        let granule = self.layout.geometry.granule;
        let output_end = output.checked_add(range.size());
        if !range.is_aligned(granule) || !granule.is_aligned(output) || range.is_empty() {
            return Err(Stage2Error::Misaligned {
                range: *range,
                granule_size: granule.size(),
            });
        }
        let limit = self.layout.ipa_limit();
        let inside = range.end <= limit && output_end.is_some_and(|end| end <= limit);
        if !inside {
            return Err(Stage2Error::OutOfRange {
                range: *range,
                limit,
            });
        }
        Ok(())
    }

    /// Maps the IPAs `range` to the output addresses from `output` with `leaf`,
    /// replacing whatever mapped them (with break-before-make). Uses the largest
    /// blocks the alignment of both addresses allows.
    pub fn map(
        &mut self,
        range: PhysRange,
        output: u64,
        leaf: Leaf,
        tlb: &mut dyn TlbMaintenance,
    ) -> Result<(), Stage2Error> {
        self.check(&range, output)?;
        let request = MapRequest {
            ipa_base: range.start,
            output_base: output,
            leaf,
        };
        let mut broke = false;
        let result =
            self.descend(&range, &request, tlb, &mut broke)
                .and_then(|(table, level, fresh)| {
                    self.map_in(table, level, fresh, range, &request, tlb, &mut broke)
                });
        tlb.publish();
        if broke {
            tlb.complete();
        }
        result
    }

    /// Unmaps the IPAs `range`: accesses to them fault afterwards. Tables left empty
    /// are freed.
    pub fn unmap(
        &mut self,
        range: PhysRange,
        tlb: &mut dyn TlbMaintenance,
    ) -> Result<(), Stage2Error> {
        self.check(&range, range.start)?;
        let root = self.root;
        let level = self.layout.start_level;
        let result = self.unmap_in(root, level, range, tlb);
        tlb.complete();
        result
    }

    /// What `ipa` translates to, walking the tables as the hardware would.
    pub fn translate(&self, ipa: u64) -> Option<Translation> {
        if ipa >= self.layout.ipa_limit() {
            return None;
        }
        let mut table = self.root;
        let mut level = self.layout.start_level;
        loop {
            let descriptor = Descriptor(self.memory.read(table, self.index(level, ipa)));
            match descriptor.decode(level) {
                Entry::Invalid => return None,
                Entry::Table(next) => {
                    table = next;
                    level += 1;
                }
                Entry::Leaf { output, leaf } => {
                    let offset = ipa & (self.layout.geometry.entry_size(level) - 1);
                    return Some(Translation {
                        output: output + offset,
                        leaf,
                        level,
                    });
                }
            }
        }
    }

    /// The index of `ipa`'s entry in its table at `level` (the root may be
    /// concatenated tables).
    fn index(&self, level: u32, ipa: u64) -> usize {
        ((ipa >> self.layout.geometry.level_shift(level)) as usize) & (self.entries(level) - 1)
    }

    /// Entries of a table at `level` (the root may be concatenated tables).
    fn entries(&self, level: u32) -> usize {
        if level == self.layout.start_level {
            self.layout.root_entries()
        } else {
            self.layout.geometry.entries()
        }
    }

    fn allocate_table(&mut self) -> Result<u64, Stage2Error> {
        let bytes = self.layout.geometry.table_bytes();
        let table = self
            .memory
            .allocate(bytes)
            .ok_or(Stage2Error::OutOfMemory)?;
        self.table_pages += 1;
        Ok(table)
    }

    fn free_table(&mut self, table: u64, level: u32) {
        if level < LEAF_LEVEL {
            for index in 0..self.layout.geometry.entries() {
                if let Entry::Table(child) =
                    Descriptor(self.memory.read(table, index)).decode(level)
                {
                    self.free_table(child, level + 1);
                }
            }
        }
        self.memory.free(table);
        self.table_pages -= 1;
    }

    /// Replaces the live entry `index` of `table` at `level`, which maps the IPAs
    /// `entry`, with `new`: invalid first, TLB invalidation, then the new value. A
    /// leaf or an emptied table needs one invalidation at the entry's start; a
    /// table with live entries, the whole range.
    fn break_before_make(
        &mut self,
        table: u64,
        index: usize,
        level: u32,
        entry: PhysRange,
        new: Descriptor,
        tlb: &mut dyn TlbMaintenance,
    ) {
        let live_subtree = match Descriptor(self.memory.read(table, index)).decode(level) {
            Entry::Table(next) => !self.is_empty(next),
            Entry::Leaf { .. } | Entry::Invalid => false,
        };
        self.memory.write(table, index, Descriptor::INVALID.0);
        if live_subtree {
            tlb.invalidate_range(entry.start, entry.size());
        } else {
            tlb.invalidate_entry(entry.start);
        }
        if new.is_valid() {
            self.memory.write(table, index, new.0);
        }
    }

    /// Replaces the leaf `index` of `table` at `level`, which maps the IPAs `entry`
    /// to `output` with `leaf`, by a table that maps the same (break-before-make),
    /// so that part of it can change; returns the new table. Rare next to the
    /// entries a mapping makes: kept out of line.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    #[inline(never)]
    fn split_in_place(
        &mut self,
        table: u64,
        index: usize,
        level: u32,
        entry: PhysRange,
        output: u64,
        leaf: &Leaf,
        tlb: &mut dyn TlbMaintenance,
    ) -> Result<u64, Stage2Error> {
        let next = self.split(level, output, leaf)?;
        self.break_before_make(table, index, level, entry, Descriptor::table(next), tlb);
        Ok(next)
    }

    /// A table at `level + 1` that maps what the leaf at `level` mapped.
    fn split(&mut self, level: u32, output: u64, leaf: &Leaf) -> Result<u64, Stage2Error> {
        let table = self.allocate_table()?;
        let child_size = self.layout.geometry.entry_size(level + 1);
        let first = Descriptor::leaf(level + 1, output, leaf).0;
        let entries = self.layout.geometry.entries();
        self.memory.write_run(table, 0, first, child_size, entries);
        Ok(table)
    }

    /// The table in which all of `range` is mapped, its level, and whether it is
    /// new: from the root, as long as `range` lies inside one entry and is not a
    /// leaf of that entry's level, the table that entry leads to (made or split
    /// if need be). A page of a device window goes down to level 3 this way, and a
    /// bank of RAM to the table that holds its blocks, without a call per level.
    fn descend(
        &mut self,
        range: &PhysRange,
        request: &MapRequest,
        tlb: &mut dyn TlbMaintenance,
        broke: &mut bool,
    ) -> Result<(u64, u32, bool), Stage2Error> {
        let geometry = self.layout.geometry;
        let mut table = self.root;
        let mut level = self.layout.start_level;
        let mut fresh = false;
        while level < LEAF_LEVEL {
            let size = geometry.entry_size(level);
            let entry_start = range.start & !(size - 1);
            let inside_one_entry = range.end - entry_start <= size;
            let whole_entry = range.start == entry_start && range.end - entry_start == size;
            let leaf_here = whole_entry
                && geometry.block_allowed(level)
                && request.output_of(range.start).is_multiple_of(size);
            if !inside_one_entry || leaf_here {
                break;
            }
            let index = self.index(level, range.start);
            (table, fresh) = self.child_for_map(table, index, level, entry_start, tlb, broke)?;
            level += 1;
        }
        Ok((table, level, fresh))
    }

    /// The table entry `index` of `table` (at `level`, mapping the IPAs from
    /// `entry_start`) leads to, for a mapping that changes part of what the entry
    /// maps: the table there, a new empty one, or a new one that maps what the leaf
    /// there mapped (put in with break-before-make); and whether it is new and
    /// empty.
    fn child_for_map(
        &mut self,
        table: u64,
        index: usize,
        level: u32,
        entry_start: u64,
        tlb: &mut dyn TlbMaintenance,
        broke: &mut bool,
    ) -> Result<(u64, bool), Stage2Error> {
        match Descriptor(self.memory.read(table, index)).decode(level) {
            Entry::Invalid => {
                let next = self.allocate_table()?;
                self.memory.write(table, index, Descriptor::table(next).0);
                Ok((next, true))
            }
            Entry::Table(next) => Ok((next, false)),
            Entry::Leaf { output, leaf } => {
                let entry = entry_range(entry_start, self.layout.geometry.entry_size(level));
                let next = self.split_in_place(table, index, level, entry, output, &leaf, tlb)?;
                *broke = true;
                Ok((next, false))
            }
        }
    }

    /// Maps `range` (inside the span of `table`, at `level`) as `request` asks.
    /// `fresh`: this call made `table`, so no entry from `range.start` on is valid
    /// yet and none needs reading.
    #[allow(clippy::too_many_arguments)]
    fn map_in(
        &mut self,
        table: u64,
        level: u32,
        fresh: bool,
        range: PhysRange,
        request: &MapRequest,
        tlb: &mut dyn TlbMaintenance,
        broke: &mut bool,
    ) -> Result<(), Stage2Error> {
        let geometry = self.layout.geometry;
        let size = geometry.entry_size(level);
        // What every entry of this call shares, worked out once: a range of RAM
        // writes hundreds of entries.
        let leaf_here = level == LEAF_LEVEL || geometry.block_allowed(level);
        let template = Descriptor::leaf_template(level, &request.leaf);
        let mut ipa = range.start;
        while ipa < range.end {
            let entry_start = ipa & !(size - 1);
            let chunk_end = range.end.min(entry_start + size);
            let index = self.index(level, ipa);
            let output = request.output_of(ipa);
            let covers_entry = ipa == entry_start && chunk_end == entry_start + size;
            if covers_entry && leaf_here && output.is_multiple_of(size) {
                // A run of whole entries, to the range's end or this table's: RAM
                // is hundreds of them, and an empty entry takes one write.
                let entries = self.entries(level);
                let run = ((range.end - ipa) / size).min((entries - index) as u64);
                if fresh {
                    let first = template.at(output).0;
                    self.memory
                        .write_run(table, index, first, size, run as usize);
                    ipa += run * size;
                    continue;
                }
                for step in 0..run {
                    let index = index + step as usize;
                    let entry_start = ipa + step * size;
                    let new = template.at(output + step * size);
                    let current = Descriptor(self.memory.read(table, index));
                    if current == new {
                        continue;
                    }
                    if current.is_valid() {
                        self.break_before_make(
                            table,
                            index,
                            level,
                            entry_range(entry_start, size),
                            new,
                            tlb,
                        );
                        *broke = true;
                        if let Entry::Table(old) = current.decode(level) {
                            self.free_table(old, level + 1);
                        }
                    } else {
                        self.memory.write(table, index, new.0);
                    }
                }
                ipa += run * size;
                continue;
            }
            let (next, next_fresh) =
                self.child_for_map(table, index, level, entry_start, tlb, broke)?;
            let chunk = PhysRange {
                start: ipa,
                end: chunk_end,
            };
            self.map_in(next, level + 1, next_fresh, chunk, request, tlb, broke)?;
            ipa = chunk_end;
        }
        Ok(())
    }

    fn unmap_in(
        &mut self,
        table: u64,
        level: u32,
        range: PhysRange,
        tlb: &mut dyn TlbMaintenance,
    ) -> Result<(), Stage2Error> {
        let size = self.layout.geometry.entry_size(level);
        let mut ipa = range.start;
        while ipa < range.end {
            let entry_start = ipa & !(size - 1);
            let chunk_end = range.end.min(entry_start + size);
            let index = self.index(level, ipa);
            let current = Descriptor(self.memory.read(table, index));
            let covers_entry = ipa == entry_start && chunk_end == entry_start + size;
            match current.decode(level) {
                Entry::Invalid => {}
                entry if covers_entry => {
                    self.break_before_make(
                        table,
                        index,
                        level,
                        entry_range(entry_start, size),
                        Descriptor::INVALID,
                        tlb,
                    );
                    if let Entry::Table(old) = entry {
                        self.free_table(old, level + 1);
                    }
                }
                Entry::Leaf { output, leaf } => {
                    let entry = entry_range(entry_start, size);
                    let next =
                        self.split_in_place(table, index, level, entry, output, &leaf, tlb)?;
                    let chunk = PhysRange {
                        start: ipa,
                        end: chunk_end,
                    };
                    self.unmap_in(next, level + 1, chunk, tlb)?;
                }
                Entry::Table(next) => {
                    let chunk = PhysRange {
                        start: ipa,
                        end: chunk_end,
                    };
                    self.unmap_in(next, level + 1, chunk, tlb)?;
                    if self.is_empty(next) {
                        self.break_before_make(
                            table,
                            index,
                            level,
                            entry_range(entry_start, size),
                            Descriptor::INVALID,
                            tlb,
                        );
                        self.free_table(next, level + 1);
                    }
                }
            }
            ipa = chunk_end;
        }
        Ok(())
    }

    fn is_empty(&self, table: u64) -> bool {
        (0..self.layout.geometry.entries())
            .all(|index| !Descriptor(self.memory.read(table, index)).is_valid())
    }
}

/// Tables on the heap, in one arena reserved up front. Its address is the physical
/// address because the hypervisor's heap is identity-mapped, and a table's entries
/// are found from its address with one subtraction: the stage-2 builder reads and
/// writes entries one at a time, so a lookup per access (a map from address to
/// block) costs more than the walk itself. Each table is zeroed when it is handed
/// out, not when the arena is reserved. Safe code throughout: no raw allocation.
pub struct HeapTables {
    /// The arena. Its capacity never changes, so its address never does; its length
    /// grows as tables are handed out.
    words: Vec<u64>,
    /// The address of `words[first]`, aligned to the root tables' size.
    base: u64,
    /// Padding words in front of the aligned part.
    first: usize,
    /// One past the last word the arena may hand out.
    limit: usize,
    /// Entries of one (non-root) table.
    table_words: usize,
    /// Word offsets, from `first`, of freed tables.
    free: Vec<usize>,
    live: usize,
}

impl HeapTables {
    /// An arena for the root tables of `layout` and `tables` more tables; `None` if
    /// the heap has no room for it.
    pub fn new(layout: &Stage2Layout, tables: usize) -> Option<Self> {
        let root_words = usize::try_from(layout.root_bytes() / 8).ok()?;
        let table_words = layout.geometry.entries();
        let aligned_words = root_words.checked_add(tables.checked_mul(table_words)?)?;
        // Room to move the start up to a multiple of the root's size.
        let capacity = aligned_words.checked_add(root_words)?;
        let mut words = Vec::new();
        words.try_reserve_exact(capacity).ok()?;
        let start = words.as_ptr() as u64;
        let base = start.checked_next_multiple_of(layout.root_bytes())?;
        let first = usize::try_from((base - start) / 8).ok()?;
        words.resize(first, 0);
        Some(HeapTables {
            words,
            base,
            first,
            limit: first + aligned_words,
            table_words,
            free: Vec::new(),
            live: 0,
        })
    }

    /// Blocks allocated and not freed.
    pub fn live_blocks(&self) -> usize {
        self.live
    }

    #[inline]
    fn word(&self, address: u64, index: usize) -> usize {
        let offset = usize::try_from(address.wrapping_sub(self.base) / 8).unwrap_or(usize::MAX);
        self.first.saturating_add(offset).saturating_add(index)
    }
}

impl TableMemory for HeapTables {
    fn allocate(&mut self, bytes: u64) -> Option<u64> {
        let words = usize::try_from(bytes / 8).ok()?;
        let reused = if words == self.table_words {
            self.free.pop()
        } else {
            None
        };
        let offset = match reused {
            Some(offset) => {
                self.words[self.first + offset..][..words].fill(0);
                offset
            }
            None => {
                // Every block is a multiple of a table and at most the root's size,
                // and `base` is aligned to the root's size: an offset that is a
                // multiple of the block's words is aligned to its size.
                let offset = (self.words.len() - self.first).next_multiple_of(words);
                let end = self.first.checked_add(offset)?.checked_add(words)?;
                if end > self.limit {
                    return None;
                }
                // One copy of zeroes (a `memcpy` the kernel implements with block
                // moves), not `resize`, which stores one word per loop iteration.
                let mut grow = end - self.words.len();
                while grow > 0 {
                    let chunk = grow.min(ZEROES.len());
                    self.words.extend_from_slice(&ZEROES[..chunk]);
                    grow -= chunk;
                }
                offset
            }
        };
        self.live += 1;
        Some(self.base + offset as u64 * 8)
    }

    fn free(&mut self, address: u64) {
        let offset = self.word(address, 0) - self.first;
        self.free.push(offset);
        self.live -= 1;
    }

    #[inline]
    fn read(&self, address: u64, index: usize) -> u64 {
        self.words[self.word(address, index)]
    }

    #[inline]
    fn write(&mut self, address: u64, index: usize, value: u64) {
        let word = self.word(address, index);
        self.words[word] = value;
    }

    fn write_run(&mut self, address: u64, index: usize, first: u64, step: u64, count: usize) {
        let start = self.word(address, index);
        // Eight at a time: little more than an addition and half a store each.
        let mut chunks = self.words[start..][..count].chunks_exact_mut(8);
        let mut value = first;
        for chunk in &mut chunks {
            for entry in chunk {
                *entry = value;
                value += step;
            }
        }
        for entry in chunks.into_remainder() {
            *entry = value;
            value += step;
        }
    }
}

/// A 4 KiB table's worth of empty entries, copied into the arena as tables are
/// handed out.
static ZEROES: [u64; 512] = [0; 512];

/// The IPAs an entry of `size` bytes at `start` maps.
const fn entry_range(start: u64, size: u64) -> PhysRange {
    PhysRange {
        start,
        end: start + size,
    }
}
