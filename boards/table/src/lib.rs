//! The types a board crate fills in to describe its machine to the kernel.
//!
//! A board names its console UART, its RAM banks, the address ranges that hold
//! devices, how its secondary CPUs are started and how much heap the hypervisor
//! gets. The kernel maps and uses exactly what the table says, intersected with what
//! the firmware's device tree reports. (The board-table issue grows this into
//! compile-time-checked tables of devices and partitions.)

#![no_std]
#![forbid(unsafe_code)]

use core::fmt;

/// A half-open physical address range `[start, end)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PhysRange {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl PhysRange {
    /// The range `[start, start + size)`.
    ///
    /// Panics (at compile time, in a `const`) if the range wraps.
    pub const fn new(start: u64, size: u64) -> PhysRange {
        let Some(end) = start.checked_add(size) else {
            panic!("PhysRange wraps around the address space");
        };
        PhysRange { start, end }
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
}

impl fmt::Display for PhysRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#011x}..{:#011x}", self.start, self.end)
    }
}

/// The UART models Transom has drivers for.
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

/// The hypervisor's console.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Console {
    /// Which UART it is.
    pub kind: UartKind,
    /// Its exact register window.
    pub window: PhysRange,
    /// The line speed.
    pub baud: u32,
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

/// A board as the kernel sees it.
#[derive(Clone, Copy, Debug)]
pub struct Board {
    /// The board's name, as logged and as given to `cargo xtask --board`.
    pub name: &'static str,
    /// The address the image is linked and loaded at.
    pub load_address: u64,
    /// How many CPUs the board can have.
    pub max_cpus: usize,
    /// The hypervisor's console.
    pub console: Console,
    /// RAM banks the board may have; the kernel uses the part the firmware confirms.
    pub ram: &'static [PhysRange],
    /// Address ranges that hold devices, mapped Device-nGnRE at EL2.
    pub device_memory: &'static [PhysRange],
    /// Bytes of hypervisor heap, placed after the image.
    pub heap_size: usize,
    /// How the secondary CPUs are started.
    pub secondary_boot: SecondaryBoot,
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
    }

    #[test]
    fn contains_is_half_open() {
        let range = PhysRange::new(0x1000, 0x1000);
        assert!(range.contains(0x1000));
        assert!(range.contains(0x1fff));
        assert!(!range.contains(0x2000));
        assert_eq!(range.size(), 0x1000);
    }
}
