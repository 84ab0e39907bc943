//! Ranges no guest may have as RAM, from every source that knows of one, and the
//! holes they leave in a partition's RAM (for the guest's `/reserved-memory` or split
//! `memory` nodes, and e820 holes on x86_64).

use alloc::vec::Vec;
use core::fmt;

use transom_boards::{Board, PhysRange};

/// Who declared a reserved range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservedSource {
    /// The board table's `reserved` list.
    Board,
    /// The firmware's device tree (`/memreserve/`, `/reserved-memory`).
    FirmwareTree,
    /// The hypervisor's own image, stacks, tables and heap.
    Hypervisor,
    /// Added while running (an MSI doorbell, say).
    Runtime,
}

impl ReservedSource {
    /// How the source is written in messages.
    pub const fn label(self) -> &'static str {
        match self {
            ReservedSource::Board => "board table",
            ReservedSource::FirmwareTree => "firmware device tree",
            ReservedSource::Hypervisor => "hypervisor",
            ReservedSource::Runtime => "run time",
        }
    }
}

/// One reserved range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReservedRange {
    /// Its name.
    pub name: &'static str,
    /// Its bytes.
    pub range: PhysRange,
    /// Who declared it.
    pub source: ReservedSource,
}

/// Guest RAM that overlaps a reserved range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RamConflict {
    /// The partition.
    pub partition: &'static str,
    /// Its RAM.
    pub ram: PhysRange,
    /// The reserved range it overlaps.
    pub reserved: ReservedRange,
}

impl fmt::Display for RamConflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "RAM {} of partition `{}` overlaps reserved range `{}` {} (from the {})",
            self.ram,
            self.partition,
            self.reserved.name,
            self.reserved.range,
            self.reserved.source.label()
        )
    }
}

/// Every reserved range.
#[derive(Clone, Debug, Default)]
pub struct ReservedRegistry {
    ranges: Vec<ReservedRange>,
}

impl ReservedRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        ReservedRegistry::default()
    }

    /// The board's reserved ranges and the hypervisor's memory.
    pub fn from_board(board: &Board) -> Self {
        let mut registry = ReservedRegistry::new();
        for reserved in board.reserved {
            registry.add(reserved.name, reserved.range, ReservedSource::Board);
        }
        registry.add(
            "hypervisor",
            board.hypervisor.memory,
            ReservedSource::Hypervisor,
        );
        registry
    }

    /// Adds `range`.
    pub fn add(&mut self, name: &'static str, range: PhysRange, source: ReservedSource) {
        self.ranges.push(ReservedRange {
            name,
            range,
            source,
        });
    }

    /// Every range, in the order added.
    pub fn ranges(&self) -> &[ReservedRange] {
        &self.ranges
    }

    /// Refuses `ram` of `partition` if it overlaps a reserved range, naming both.
    pub fn check_ram(&self, partition: &'static str, ram: PhysRange) -> Result<(), RamConflict> {
        match self
            .ranges
            .iter()
            .find(|reserved| reserved.range.overlaps(&ram))
        {
            Some(reserved) => Err(RamConflict {
                partition,
                ram,
                reserved: *reserved,
            }),
            None => Ok(()),
        }
    }

    /// The reserved bytes inside `ram`, sorted and merged: the holes a guest's
    /// memory map must show.
    pub fn holes(&self, ram: PhysRange) -> Vec<PhysRange> {
        let mut holes: Vec<PhysRange> = self
            .ranges
            .iter()
            .filter_map(|reserved| reserved.range.intersection(&ram))
            .collect();
        holes.sort_by_key(|hole| hole.start);
        let mut merged: Vec<PhysRange> = Vec::with_capacity(holes.len());
        for hole in holes {
            match merged.last_mut() {
                Some(last) if hole.start <= last.end => last.end = last.end.max(hole.end),
                _ => merged.push(hole),
            }
        }
        merged
    }

    /// `ram` without its holes: the pieces a guest may use.
    pub fn usable(&self, ram: PhysRange) -> Vec<PhysRange> {
        let mut pieces = Vec::new();
        let mut cursor = ram.start;
        for hole in self.holes(ram) {
            if cursor < hole.start {
                pieces.push(PhysRange {
                    start: cursor,
                    end: hole.start,
                });
            }
            cursor = hole.end;
        }
        if cursor < ram.end {
            pieces.push(PhysRange {
                start: cursor,
                end: ram.end,
            });
        }
        pieces
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;

    use super::*;

    fn registry() -> ReservedRegistry {
        let mut registry = ReservedRegistry::new();
        registry.add("armstub", PhysRange::new(0, 0x1000), ReservedSource::Board);
        registry.add(
            "cma",
            PhysRange::new(0x3b40_0000, 0x4c0_0000),
            ReservedSource::FirmwareTree,
        );
        registry.add(
            "doorbell",
            PhysRange::new(0x3b3f_f000, 0x1000),
            ReservedSource::Runtime,
        );
        registry
    }

    #[test]
    fn overlapping_guest_ram_is_refused_naming_both_ranges() {
        let registry = registry();
        let ram = PhysRange::new(0x3000_0000, 0x1000_0000);
        let conflict = registry.check_ram("linux", ram).expect_err("overlaps");
        assert_eq!(
            conflict.to_string(),
            "RAM 0x30000000..0x40000000 of partition `linux` overlaps reserved range `cma` \
             0x3b400000..0x40000000 (from the firmware device tree)"
        );
        assert_eq!(
            registry.check_ram("linux", PhysRange::new(0x1000, 0x1000)),
            Ok(())
        );
    }

    #[test]
    fn holes_are_sorted_and_merged_and_usable_pieces_avoid_them() {
        let registry = registry();
        let ram = PhysRange::new(0, 0x4000_0000);
        assert_eq!(
            registry.holes(ram),
            [
                PhysRange::new(0, 0x1000),
                PhysRange::new(0x3b3f_f000, 0x4c0_1000),
            ]
        );
        assert_eq!(registry.usable(ram), [PhysRange::new(0x1000, 0x3b3f_e000)]);
    }
}
