//! What a board says about each device: its exact bytes, what it is, how it may be
//! accessed, how stage 2 maps it and which interrupts it raises; plus the byte
//! ranges declared unused and the ranges reserved from RAM.

use core::fmt;

use crate::range::PhysRange;

/// What a device region is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceKind {
    /// Arm PL011 UART.
    Pl011,
    /// BCM2835 auxiliary mini UART.
    MiniUart,
    /// NS16550-compatible UART.
    Uart16550,
    /// GIC distributor (GICD).
    GicDistributor,
    /// GICv2 CPU interface (GICC).
    GicCpuInterface,
    /// GICv2 virtual interface control (GICH): the hypervisor's list registers.
    GicHypervisor,
    /// GICv2 virtual CPU interface (GICV): what a guest sees as its GICC.
    GicVirtualCpu,
    /// GICv3 redistributors (GICR).
    GicRedistributor,
    /// An MSI frame of the interrupt controller (GICv2m, GICv3 ITS).
    GicMsiFrame,
    /// A virtio-mmio transport.
    VirtioMmio,
    /// A timer.
    Timer,
    /// A mailbox.
    Mailbox,
    /// Anything else.
    Other,
}

labels!(
    /// How the kind is written in messages and logs.
    DeviceKind, |kind| kind, {
        DeviceKind::Pl011 => "PL011",
        DeviceKind::MiniUart => "mini UART",
        DeviceKind::Uart16550 => "16550",
        DeviceKind::GicDistributor => "GICD",
        DeviceKind::GicCpuInterface => "GICC",
        DeviceKind::GicHypervisor => "GICH",
        DeviceKind::GicVirtualCpu => "GICV",
        DeviceKind::GicRedistributor => "GICR",
        DeviceKind::GicMsiFrame => "GIC MSI frame",
        DeviceKind::VirtioMmio => "virtio-mmio",
        DeviceKind::Timer => "timer",
        DeviceKind::Mailbox => "mailbox",
        DeviceKind::Other => "device",
    }
);

impl DeviceKind {
    /// Whether this is a frame of the interrupt controller. The hypervisor owns every
    /// one of them; guests get a virtual GIC instead.
    pub const fn is_interrupt_controller(self) -> bool {
        matches!(
            self,
            DeviceKind::GicDistributor
                | DeviceKind::GicCpuInterface
                | DeviceKind::GicHypervisor
                | DeviceKind::GicVirtualCpu
                | DeviceKind::GicRedistributor
                | DeviceKind::GicMsiFrame
        )
    }

    /// Whether the hypervisor can use this as its console.
    pub const fn is_uart(self) -> bool {
        matches!(
            self,
            DeviceKind::Pl011 | DeviceKind::MiniUart | DeviceKind::Uart16550
        )
    }

    /// The access widths a region of this kind allows unless the board says
    /// otherwise.
    ///
    /// - PL011: Linux's `amba-pl011` uses 16-bit accesses unless the tree says
    ///   `reg-io-width = <4>`, earlycon uses 8- and 32-bit ones; the registers are
    ///   32 bits wide (PL011 TRM 3.2).
    /// - mini UART and 16550: byte registers on a 32-bit stride (BCM2711 ARM
    ///   Peripherals 2.2.2; Linux `8250_bcm2835aux` uses 32-bit accesses).
    /// - virtio-mmio: 32-bit registers, device configuration read at its natural
    ///   width of 8, 16 or 32 bits; 64-bit fields are read as two 32-bit halves
    ///   (virtio 1.2, 4.2.2.2).
    /// - GIC frames: 32-bit registers, byte access to the priority and target
    ///   bytes, 64-bit access to GICD_IROUTER and GICR_TYPER (GICv3 spec 12.1.3).
    /// - everything else: 32-bit registers.
    pub const fn default_access(self) -> Access {
        let widths = match self {
            DeviceKind::Pl011 => AccessWidths::W8
                .union(AccessWidths::W16)
                .union(AccessWidths::W32),
            DeviceKind::MiniUart | DeviceKind::Uart16550 => {
                AccessWidths::W8.union(AccessWidths::W32)
            }
            DeviceKind::VirtioMmio => AccessWidths::W8
                .union(AccessWidths::W16)
                .union(AccessWidths::W32),
            DeviceKind::GicDistributor | DeviceKind::GicRedistributor => AccessWidths::W8
                .union(AccessWidths::W32)
                .union(AccessWidths::W64),
            _ => AccessWidths::W32,
        };
        Access {
            widths,
            unaligned: false,
        }
    }

    /// The stage-2 attributes a region of this kind gets unless the board says
    /// otherwise: Device-nGnRnE for the interrupt controller (its writes must not be
    /// posted past a following read), Device-nGnRE for the rest.
    pub const fn default_attributes(self) -> MemoryAttributes {
        if self.is_interrupt_controller() {
            MemoryAttributes::DeviceNGnRnE
        } else {
            MemoryAttributes::DeviceNGnRE
        }
    }
}

/// A set of access sizes, Jailhouse-style (`JAILHOUSE_MEM_IO_8` ... `_64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessWidths(u8);

// Each width's bit is its size in bytes (`AccessWidths::allows` relies on it).
const _: () = assert!(AccessWidths::W8.0 == 1 && AccessWidths::W16.0 == 2);
const _: () = assert!(AccessWidths::W32.0 == 4 && AccessWidths::W64.0 == 8);

impl AccessWidths {
    /// No access at all.
    pub const NONE: AccessWidths = AccessWidths(0);
    /// Byte accesses.
    pub const W8: AccessWidths = AccessWidths(1 << 0);
    /// Halfword accesses.
    pub const W16: AccessWidths = AccessWidths(1 << 1);
    /// Word accesses.
    pub const W32: AccessWidths = AccessWidths(1 << 2);
    /// Doubleword accesses.
    pub const W64: AccessWidths = AccessWidths(1 << 3);
    /// Every width.
    pub const ALL: AccessWidths = AccessWidths(0b1111);

    /// Both sets.
    pub const fn union(self, other: AccessWidths) -> AccessWidths {
        AccessWidths(self.0 | other.0)
    }

    /// Whether no width is allowed.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether an access of `bytes` bytes (1, 2, 4 or 8) is allowed. Each width's
    /// bit is its size in bytes, so this is one mask (the exit handler asks on
    /// every trapped access).
    #[inline]
    pub const fn allows(self, bytes: u64) -> bool {
        bytes.is_power_of_two() && bytes & self.0 as u64 != 0
    }
}

labels!(
    /// The widths in bits, smallest first and separated by `/` ("8/16/32"), or
    /// "none": a static string per set, so a log line can carry it as a string.
    /// Each width's bit is its size in bytes: bit 0 is 8 bits, bit 3 is 64.
    AccessWidths, |widths| widths.0 & 0b1111, {
        0 => "none",
        1 => "8",
        2 => "16",
        3 => "8/16",
        4 => "32",
        5 => "8/32",
        6 => "16/32",
        7 => "8/16/32",
        8 => "64",
        9 => "8/64",
        10 => "16/64",
        11 => "8/16/64",
        12 => "32/64",
        13 => "8/32/64",
        14 => "16/32/64",
        _ => "8/16/32/64",
    }
);

impl fmt::Display for AccessWidths {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// How a guest may access a trapped region.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// The access sizes forwarded to the device.
    pub widths: AccessWidths,
    /// Whether an access not aligned to its own size is forwarded too.
    pub unaligned: bool,
}

/// Stage-2 memory types (Arm ARM D8.6.5, "Stage 2 memory type and Cacheability
/// attributes when FEAT_S2FWB is disabled"), strictest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum MemoryAttributes {
    /// Device-nGnRnE: no gathering, no reordering, no early write acknowledgement.
    DeviceNGnRnE,
    /// Device-nGnRE: the default for devices.
    DeviceNGnRE,
    /// Device-GRE: gathering and reordering allowed (a frame buffer).
    DeviceGRE,
    /// Normal, non-cacheable (SRAM that tolerates it).
    NormalNonCacheable,
    /// Normal, write-back cacheable.
    NormalWriteBack,
}

labels!(
    /// How the type is written in messages and logs.
    MemoryAttributes, |attributes| attributes, {
        MemoryAttributes::DeviceNGnRnE => "Device-nGnRnE",
        MemoryAttributes::DeviceNGnRE => "Device-nGnRE",
        MemoryAttributes::DeviceGRE => "Device-GRE",
        MemoryAttributes::NormalNonCacheable => "Normal-NC",
        MemoryAttributes::NormalWriteBack => "Normal-WB",
    }
);

/// A GIC interrupt ID (INTID): 16..32 are PPIs, 32..1020 SPIs (GICv3 spec 2.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct IntId(pub u32);

impl IntId {
    /// Shared peripheral interrupt `n` as a device tree writes it (`<GIC_SPI n ..>`).
    pub const fn spi(n: u32) -> IntId {
        IntId(32 + n)
    }

    /// Private peripheral interrupt `n` (`<GIC_PPI n ..>`).
    pub const fn ppi(n: u32) -> IntId {
        IntId(16 + n)
    }
}

impl fmt::Display for IntId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "INTID {}", self.0)
    }
}

/// The most interrupts one region lists.
pub const MAX_REGION_INTERRUPTS: usize = 4;

/// The interrupts a region raises, stored inline so that `const fn`s can compute
/// them (a computed `&'static [IntId]` cannot be built in a `const fn`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupts {
    ids: [IntId; MAX_REGION_INTERRUPTS],
    count: usize,
}

impl Interrupts {
    /// No interrupt.
    pub const NONE: Interrupts = Interrupts {
        ids: [IntId(0); MAX_REGION_INTERRUPTS],
        count: 0,
    };

    /// The interrupts in `ids`. Panics (a compile error in a `const`) past
    /// [`MAX_REGION_INTERRUPTS`].
    pub const fn new(ids: &[IntId]) -> Interrupts {
        assert!(
            ids.len() <= MAX_REGION_INTERRUPTS,
            "a region lists at most MAX_REGION_INTERRUPTS interrupts"
        );
        let mut interrupts = Interrupts::NONE;
        while interrupts.count < ids.len() {
            interrupts.ids[interrupts.count] = ids[interrupts.count];
            interrupts.count += 1;
        }
        interrupts
    }

    /// The interrupts as a slice.
    pub const fn as_slice(&self) -> &[IntId] {
        self.ids.split_at(self.count).0
    }
}

/// One device's exact register window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Region {
    /// A name unique on the board (a device tree node name is a good choice).
    pub name: &'static str,
    /// The first register's physical address.
    pub base: u64,
    /// The bytes the device decodes.
    pub size: u64,
    /// What it is.
    pub kind: DeviceKind,
    /// How a guest may access it when its window is trapped.
    pub access: Access,
    /// The stage-2 memory type a direct mapping gets.
    pub attributes: MemoryAttributes,
    /// The interrupts it raises; a grant of the region grants them too.
    pub interrupts: Interrupts,
    /// Its device tree `compatible` list, most specific first, for the guest's
    /// tree; empty: its kind's default, if the kind has one.
    pub compatible: &'static [&'static str],
}

impl Region {
    /// A region with its kind's default access widths and attributes, and no
    /// interrupts.
    pub const fn new(name: &'static str, base: u64, size: u64, kind: DeviceKind) -> Region {
        Region {
            name,
            base,
            size,
            kind,
            access: kind.default_access(),
            attributes: kind.default_attributes(),
            interrupts: Interrupts::NONE,
            compatible: &[],
        }
    }

    /// The same region with a device tree `compatible` list, for a kind without a
    /// default one (`DeviceKind::Other`) or to be more specific.
    pub const fn with_compatible(mut self, compatible: &'static [&'static str]) -> Region {
        self.compatible = compatible;
        self
    }

    /// The same region raising `interrupts`.
    pub const fn with_interrupts(mut self, interrupts: &[IntId]) -> Region {
        self.interrupts = Interrupts::new(interrupts);
        self
    }

    /// The same region with other allowed access widths.
    pub const fn with_widths(mut self, widths: AccessWidths) -> Region {
        self.access.widths = widths;
        self
    }

    /// The same region, allowing accesses not aligned to their size.
    pub const fn allowing_unaligned(mut self) -> Region {
        self.access.unaligned = true;
        self
    }

    /// The same region with other stage-2 attributes.
    pub const fn with_attributes(mut self, attributes: MemoryAttributes) -> Region {
        self.attributes = attributes;
        self
    }

    /// The exact bytes. Panics if `base + size` wraps, which
    /// [`validate`](crate::validate) reports first.
    pub const fn range(&self) -> PhysRange {
        PhysRange::new(self.base, self.size)
    }
}

/// Bytes the board author declares harmless: nothing decodes them, or what does is
/// safe for any guest to read and write. A rounded span may include them and still
/// map directly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Unused {
    /// A name unique on the board.
    pub name: &'static str,
    /// The bytes.
    pub range: PhysRange,
}

/// Why a range is reserved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReservedReason {
    /// Firmware code or data (an armstub, ATF, the firmware's handoff).
    Firmware,
    /// The spin table that holds the secondary CPUs.
    SpinTable,
    /// RAM the GPU firmware keeps (the Pi's VideoCore carve-out).
    VideoCore,
    /// An MSI doorbell: a guest's RAM must not alias it.
    MsiDoorbell,
}

impl ReservedReason {
    /// How the reason is written in messages and logs.
    pub const fn label(self) -> &'static str {
        match self {
            ReservedReason::Firmware => "firmware",
            ReservedReason::SpinTable => "spin table",
            ReservedReason::VideoCore => "VideoCore carve-out",
            ReservedReason::MsiDoorbell => "MSI doorbell",
        }
    }
}

/// A range no guest may get as RAM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reserved {
    /// A name unique on the board.
    pub name: &'static str,
    /// The bytes.
    pub range: PhysRange,
    /// Why.
    pub reason: ReservedReason,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every set's label lists exactly the widths it allows, in bits, smallest
    /// first.
    #[test]
    fn widths_labels_list_the_allowed_widths() {
        extern crate std;
        use std::string::ToString;
        use std::vec::Vec;
        for bits in 0..16u8 {
            let widths = AccessWidths(bits);
            let listed: Vec<_> = [1u64, 2, 4, 8]
                .into_iter()
                .filter(|&bytes| widths.allows(bytes))
                .map(|bytes| (bytes * 8).to_string())
                .collect();
            let expected = if listed.is_empty() {
                "none".to_string()
            } else {
                listed.join("/")
            };
            assert_eq!(widths.label(), expected);
            assert_eq!(widths.to_string(), expected);
        }
    }

    #[test]
    fn widths_display_and_membership() {
        let pl011 = DeviceKind::Pl011.default_access().widths;
        assert!(pl011.allows(1) && pl011.allows(2) && pl011.allows(4));
        assert!(!pl011.allows(8) && !pl011.allows(3));
        assert_eq!(std::format!("{pl011}"), "8/16/32");
        assert_eq!(std::format!("{}", AccessWidths::NONE), "none");
    }

    #[test]
    fn interrupt_numbering_follows_the_gic() {
        // Device tree `<GIC_SPI 1 ..>` is INTID 33; the virtual timer `<GIC_PPI 11 ..>`
        // is INTID 27 (GICv3 spec 2.2, Arm generic timer binding).
        assert_eq!(IntId::spi(1), IntId(33));
        assert_eq!(IntId::ppi(11), IntId(27));
        let region = Region::new("uart", 0x1000, 0x1000, DeviceKind::Pl011)
            .with_interrupts(&[IntId::spi(1), IntId::spi(2)]);
        assert_eq!(region.interrupts.as_slice(), &[IntId(33), IntId(34)]);
    }

    #[test]
    fn interrupt_controller_defaults_to_the_strictest_type() {
        assert_eq!(
            DeviceKind::GicDistributor.default_attributes(),
            MemoryAttributes::DeviceNGnRnE
        );
        assert_eq!(
            DeviceKind::VirtioMmio.default_attributes(),
            MemoryAttributes::DeviceNGnRE
        );
        assert!(MemoryAttributes::DeviceNGnRnE < MemoryAttributes::DeviceNGnRE);
    }
}
