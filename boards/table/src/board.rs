//! A board's whole table: the hypervisor's share, the devices, the memory and the
//! partitions, and the direct-or-trapped decision for each grant.

use crate::range::{Granule, PhysRange};
use crate::region::{Region, Reserved, Unused};
use crate::text::same_str;

/// The UART models Transom has console drivers for, with what the driver needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UartKind {
    /// Arm PL011, with its reference clock `UARTCLK`.
    Pl011 {
        /// `UARTCLK`, Hz.
        clock_hz: u32,
    },
    /// BCM2835 auxiliary mini UART, clocked from the VPU core clock.
    MiniUart {
        /// The core clock, Hz.
        core_clock_hz: u32,
    },
}

/// The hypervisor's console: one of the board's device regions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Console {
    /// The name of the device region.
    pub device: &'static str,
    /// The driver and its clock.
    pub uart: UartKind,
    /// The line speed.
    pub baud: u32,
}

/// What the hypervisor keeps for itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Hypervisor {
    /// Its console. No guest may be granted it or map a page of it.
    pub console: Console,
    /// RAM for the image, its stacks, page tables and heap: no guest RAM overlaps it.
    pub memory: PhysRange,
    /// Bytes of heap, placed after the image inside `memory`.
    pub heap_size: usize,
}

/// How the firmware holds secondary CPUs until the hypervisor releases them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecondaryBoot {
    /// PSCI `CPU_ON` through the conduit the firmware's device tree names (`/psci`).
    Psci,
    /// The spin-table protocol: the firmware parks each secondary polling its
    /// `cpu-release-addr`; writing an entry address there and `sev` releases it.
    SpinTable,
}

/// What a grant asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrantMode {
    /// Direct if the rounded span is clean, trapped otherwise.
    Auto,
    /// Always trapped, even if the span is clean (to watch or filter accesses).
    Trap,
    /// Must be direct: a span that is not clean is a table error.
    Direct,
}

/// How a granted region reaches its guest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mapping {
    /// Its rounded span is mapped at stage 2: no exits.
    Direct,
    /// Nothing is mapped: every access faults to the hypervisor, is checked against
    /// the exact bytes and widths, and is forwarded.
    Trapped,
}

labels!(
    /// `direct` or `trapped`.
    Mapping, |mapping| mapping, {
        Mapping::Direct => "direct",
        Mapping::Trapped => "trapped",
    }
);

/// A device given to a partition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// The name of the device region.
    pub device: &'static str,
    /// Direct, trapped or decided by the table.
    pub mode: GrantMode,
}

impl Grant {
    /// Direct if the span is clean, trapped otherwise.
    pub const fn auto(device: &'static str) -> Grant {
        Grant {
            device,
            mode: GrantMode::Auto,
        }
    }

    /// Always trapped.
    pub const fn trapped(device: &'static str) -> Grant {
        Grant {
            device,
            mode: GrantMode::Trap,
        }
    }

    /// Must be direct.
    pub const fn direct(device: &'static str) -> Grant {
        Grant {
            device,
            mode: GrantMode::Direct,
        }
    }
}

/// A guest: its CPUs, RAM and devices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Partition {
    /// A name unique on the board.
    pub name: &'static str,
    /// Logical CPU indices (the order of the firmware tree's `/cpus`), each in one
    /// partition only.
    pub cpus: &'static [usize],
    /// Granule-aligned RAM, identity-mapped.
    pub ram: &'static [PhysRange],
    /// The devices it is given.
    pub grants: &'static [Grant],
}

/// A board as the kernel sees it: everything the hypervisor may touch and how the
/// machine is split among guests. Checked by [`validate`](crate::validate) through
/// [`check_board!`](crate::check_board) at compile time.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    /// The board's name, as logged and as given to `cargo xtask --board`.
    pub name: &'static str,
    /// The stage-2 page size; every alignment rule uses it.
    pub granule: Granule,
    /// The address the image is linked and loaded at.
    pub load_address: u64,
    /// How many CPUs the board can have.
    pub max_cpus: usize,
    /// How the secondary CPUs are started.
    pub secondary_boot: SecondaryBoot,
    /// The hypervisor's console and memory.
    pub hypervisor: Hypervisor,
    /// RAM banks the board may have; the firmware's tree says which exist.
    pub ram: &'static [PhysRange],
    /// Ranges no guest may have as RAM.
    pub reserved: &'static [Reserved],
    /// Every device, with its exact bytes.
    pub devices: &'static [Region],
    /// Bytes declared harmless padding.
    pub unused: &'static [Unused],
    /// The guests.
    pub partitions: &'static [Partition],
}

impl Board {
    /// The device region called `name`.
    pub const fn device(&self, name: &str) -> Option<&'static Region> {
        let devices: &'static [Region] = self.devices;
        let mut index = 0;
        while index < devices.len() {
            if same_str(devices[index].name, name) {
                return Some(&devices[index]);
            }
            index += 1;
        }
        None
    }

    /// The console's device region. Panics if the table names none, which
    /// [`validate`](crate::validate) rejects.
    pub const fn console_region(&self) -> &'static Region {
        match self.device(self.hypervisor.console.device) {
            Some(region) => region,
            None => panic!("the console names no device region"),
        }
    }

    /// Whether partition `partition` is granted the device called `device`.
    pub const fn grants_device(&self, partition: &Partition, device: &str) -> bool {
        let mut index = 0;
        while index < partition.grants.len() {
            if same_str(partition.grants[index].device, device) {
                return true;
            }
            index += 1;
        }
        false
    }

    /// How `grant` of `partition` reaches the guest: trapped if asked, else direct
    /// exactly when every byte of the region's rounded span belongs to regions
    /// granted to the same partition or to declared-unused ranges.
    ///
    /// Panics if the grant names no device, which [`validate`](crate::validate)
    /// rejects.
    pub const fn mapping(&self, partition: &Partition, grant: &Grant) -> Mapping {
        if matches!(grant.mode, GrantMode::Trap) {
            return Mapping::Trapped;
        }
        let Some(region) = self.device(grant.device) else {
            panic!("a grant names no device region");
        };
        let range = region.range();
        let span = range.span(self.granule);
        // A region that fills its span has no neighbour in it.
        if range.covers(&span) {
            return Mapping::Direct;
        }
        match self.first_foreign_byte(partition, &span) {
            None => Mapping::Direct,
            Some(_) => Mapping::Trapped,
        }
    }

    /// How the grant of `device` to the partition called `partition` reaches it;
    /// `None` if there is no such partition or grant.
    pub fn grant_mapping(&self, partition: &str, device: &str) -> Option<Mapping> {
        let partition = self
            .partitions
            .iter()
            .find(|candidate| candidate.name == partition)?;
        let grant = partition
            .grants
            .iter()
            .find(|grant| grant.device == device)?;
        Some(self.mapping(partition, grant))
    }

    /// The first byte of `span` that neither a region granted to `partition` nor a
    /// declared-unused range covers, with the device that holds it, if any.
    pub const fn first_foreign_byte(
        &self,
        partition: &Partition,
        span: &PhysRange,
    ) -> Option<ForeignByte> {
        let mut cursor = span.start;
        while cursor < span.end {
            match self.clean_run_end(partition, cursor) {
                Some(end) => cursor = end,
                None => {
                    return Some(ForeignByte {
                        address: cursor,
                        device: self.device_at(cursor),
                    });
                }
            }
        }
        None
    }

    /// The end of a granted region or unused range that holds `address`.
    const fn clean_run_end(&self, partition: &Partition, address: u64) -> Option<u64> {
        let mut index = 0;
        while index < self.unused.len() {
            if self.unused[index].range.contains(address) {
                return Some(self.unused[index].range.end);
            }
            index += 1;
        }
        let mut index = 0;
        while index < partition.grants.len() {
            if let Some(region) = self.device(partition.grants[index].device) {
                let range = region.range();
                if range.contains(address) {
                    return Some(range.end);
                }
            }
            index += 1;
        }
        None
    }

    /// The device region that holds `address`.
    pub const fn device_at(&self, address: u64) -> Option<&'static Region> {
        let devices: &'static [Region] = self.devices;
        let mut index = 0;
        while index < devices.len() {
            if devices[index].range().contains(address) {
                return Some(&devices[index]);
            }
            index += 1;
        }
        None
    }
}

/// A byte inside a rounded span that the partition was not given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForeignByte {
    /// Its address.
    pub address: u64,
    /// The device it belongs to; `None` for bytes the table does not describe.
    pub device: Option<&'static Region>,
}
