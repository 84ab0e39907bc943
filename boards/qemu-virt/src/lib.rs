//! The board table of QEMU `virt` (`-machine virt,virtualization=on`).
//!
//! ```text
//! 0x00_0000_0000 +---------------------------------+
//!                | flash0, flash1 (CFI)            |
//! 0x00_0800_0000 +---------------------------------+
//!                | GICD | GICC | v2m | GICH | GICV  |  GICv2 frames, 64 KiB each
//!                | ITS (v3) | GICR (v3) ...         |
//! 0x00_0900_0000 | PL011 UART0 (hypervisor console)|
//!                | RTC | fw_cfg | GPIO | PL011 UART1|
//! 0x00_0a00_0000 | 32 virtio-mmio, 0x200 apart     |  8 transports per 4 KiB page
//! 0x00_0c00_0000 | platform bus                    |
//! 0x00_1000_0000 | PCIe MMIO, PIO                  |
//! 0x00_4000_0000 +---------------------------------+ RAM
//!                | 0x4000_0000 hypervisor (128 MiB)|
//!                | 0x4800_0000 QEMU's handoff      |  initrd and DTB of -kernel boots
//!                | 0x5000_0000 linux-a (256 MiB)   |
//!                | 0x6000_0000 linux-b (256 MiB)   |
//! 0x40_1000_0000 | PCIe ECAM                       |
//! 0x80_0000_0000 | PCIe high MMIO                  |
//! ```
//!
//! Addresses and interrupts from QEMU 10.0's `hw/arm/virt.c` (`base_memmap`,
//! `extended_memmap`, `a15irqmap`), checked against the device tree QEMU generates
//! (`-machine virt,virtualization=on,dumpdtb=virt.dtb`, with `gic-version=2` and
//! `3`). UART1 exists when QEMU is given a second `-serial`.

#![no_std]
#![forbid(unsafe_code)]

mod layout;

pub use layout::LOAD_ADDRESS;
use transom_boards::{
    Board, Console, DeviceKind, Grant, Granule, Hypervisor, IntId, Partition, PhysRange, Region,
    Reserved, ReservedReason, SecondaryBoot, UartKind, Unused, check_board,
};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;

/// `VIRT_MEM`: RAM starts at 1 GiB; `virt` allows up to 255 GiB below the high
/// PCIe ECAM.
pub const RAM: PhysRange = PhysRange::new(0x4000_0000, 255 * GIB);

/// The hypervisor: image at `LOAD_ADDRESS`, then stacks, tables and heap.
pub const HYPERVISOR_MEMORY: PhysRange = PhysRange::new(0x4000_0000, 128 * MIB);

/// Where QEMU puts what it loads for a `-kernel` boot besides the kernel
/// (`hw/arm/boot.c`: the initrd at `loader_start + min(ram_size / 2, 128 MiB)`, the
/// DTB after it): 128 MiB from 0x4800_0000 for RAM sizes of 256 MiB and more.
pub const BOOT_HANDOFF: PhysRange = PhysRange::new(0x4800_0000, 128 * MIB);

/// UART0's `apb-pclk` in QEMU's generated device tree.
pub const PL011_CLOCK_HZ: u32 = 24_000_000;

/// The transports' names, as QEMU's device tree names their nodes.
const VIRTIO_NAMES: [&str; VIRTIO_TRANSPORTS] = [
    "virtio_mmio@a000000",
    "virtio_mmio@a000200",
    "virtio_mmio@a000400",
    "virtio_mmio@a000600",
    "virtio_mmio@a000800",
    "virtio_mmio@a000a00",
    "virtio_mmio@a000c00",
    "virtio_mmio@a000e00",
    "virtio_mmio@a001000",
    "virtio_mmio@a001200",
    "virtio_mmio@a001400",
    "virtio_mmio@a001600",
    "virtio_mmio@a001800",
    "virtio_mmio@a001a00",
    "virtio_mmio@a001c00",
    "virtio_mmio@a001e00",
    "virtio_mmio@a002000",
    "virtio_mmio@a002200",
    "virtio_mmio@a002400",
    "virtio_mmio@a002600",
    "virtio_mmio@a002800",
    "virtio_mmio@a002a00",
    "virtio_mmio@a002c00",
    "virtio_mmio@a002e00",
    "virtio_mmio@a003000",
    "virtio_mmio@a003200",
    "virtio_mmio@a003400",
    "virtio_mmio@a003600",
    "virtio_mmio@a003800",
    "virtio_mmio@a003a00",
    "virtio_mmio@a003c00",
    "virtio_mmio@a003e00",
];

/// `VIRT_MMIO`: 32 transports of 0x200 bytes from 0x0a00_0000, SPIs 16..48.
const VIRTIO_TRANSPORTS: usize = 32;
const VIRTIO_BASE: u64 = 0x0a00_0000;
const VIRTIO_SIZE: u64 = 0x200;
const VIRTIO_FIRST_SPI: u32 = 16;

/// Transport `index`.
const fn virtio(index: usize) -> Region {
    let base = VIRTIO_BASE + index as u64 * VIRTIO_SIZE;
    Region::new(
        VIRTIO_NAMES[index],
        base,
        VIRTIO_SIZE,
        DeviceKind::VirtioMmio,
    )
    .with_interrupts(&[IntId::spi(VIRTIO_FIRST_SPI + index as u32)])
}

/// The name of transport `index`.
pub const fn virtio_name(index: usize) -> &'static str {
    VIRTIO_NAMES[index]
}

/// Fixed devices first, then the transports.
const FIXED_DEVICES: usize = 19;

const fn devices() -> [Region; FIXED_DEVICES + VIRTIO_TRANSPORTS] {
    let fixed = [
        // VIRT_FLASH: two 64 MiB CFI banks.
        Region::new("flash0", 0x0000_0000, 64 * MIB, DeviceKind::Other),
        Region::new("flash1", 0x0400_0000, 64 * MIB, DeviceKind::Other),
        // VIRT_GIC_DIST, VIRT_GIC_CPU, VIRT_GIC_V2M, VIRT_GIC_HYP, VIRT_GIC_VCPU.
        Region::new("gicd", 0x0800_0000, 64 * KIB, DeviceKind::GicDistributor),
        Region::new("gicc", 0x0801_0000, 64 * KIB, DeviceKind::GicCpuInterface),
        Region::new("gic-v2m", 0x0802_0000, 4 * KIB, DeviceKind::GicMsiFrame),
        Region::new("gich", 0x0803_0000, 64 * KIB, DeviceKind::GicHypervisor),
        Region::new("gicv", 0x0804_0000, 64 * KIB, DeviceKind::GicVirtualCpu),
        // VIRT_GIC_ITS, VIRT_GIC_REDIST (room for 123 redistributors).
        Region::new("gic-its", 0x0808_0000, 128 * KIB, DeviceKind::GicMsiFrame),
        Region::new(
            "gicr",
            0x080a_0000,
            0x00f6_0000,
            DeviceKind::GicRedistributor,
        ),
        // VIRT_UART0, VIRT_RTC, VIRT_FW_CFG, VIRT_GPIO, VIRT_UART1.
        Region::new("uart0", 0x0900_0000, 4 * KIB, DeviceKind::Pl011)
            .with_interrupts(&[IntId::spi(1)]),
        // The PL031 QEMU's tree describes as `pl031@9010000`.
        Region::new("rtc", 0x0901_0000, 4 * KIB, DeviceKind::Other)
            .with_interrupts(&[IntId::spi(2)])
            .with_compatible(&["arm,pl031", "arm,primecell"]),
        Region::new("fw-cfg", 0x0902_0000, 0x18, DeviceKind::Other),
        Region::new("gpio", 0x0903_0000, 4 * KIB, DeviceKind::Other)
            .with_interrupts(&[IntId::spi(7)]),
        Region::new("uart1", 0x0904_0000, 4 * KIB, DeviceKind::Pl011)
            .with_interrupts(&[IntId::spi(8)]),
        // VIRT_PLATFORM_BUS, VIRT_PCIE_MMIO, VIRT_PCIE_PIO, VIRT_HIGH_PCIE_ECAM.
        Region::new("platform-bus", 0x0c00_0000, 32 * MIB, DeviceKind::Other),
        Region::new("pcie-mmio", 0x1000_0000, 0x2eff_0000, DeviceKind::Other),
        Region::new("pcie-pio", 0x3eff_0000, 64 * KIB, DeviceKind::Other),
        Region::new("pcie-ecam", 0x40_1000_0000, 256 * MIB, DeviceKind::Other),
        // VIRT_HIGH_PCIE_MMIO.
        Region::new(
            "pcie-mmio-high",
            0x80_0000_0000,
            512 * GIB,
            DeviceKind::Other,
        ),
    ];
    let mut all = [fixed[0]; FIXED_DEVICES + VIRTIO_TRANSPORTS];
    let mut index = 0;
    while index < FIXED_DEVICES {
        all[index] = fixed[index];
        index += 1;
    }
    while index < FIXED_DEVICES + VIRTIO_TRANSPORTS {
        all[index] = virtio(index - FIXED_DEVICES);
        index += 1;
    }
    all
}

const DEVICES: [Region; FIXED_DEVICES + VIRTIO_TRANSPORTS] = devices();

/// QEMU `virt` (run with 4 CPUs), with two demo partitions whose virtio
/// transports share the page 0x0a00_3000 (so both are trapped) and one directly
/// mapped device each: linux-a on CPUs 1 and 3, linux-b on CPU 2.
pub const BOARD: Board = Board {
    name: "qemu-virt",
    granule: Granule::Size4KiB,
    load_address: LOAD_ADDRESS,
    max_cpus: 8,
    secondary_boot: SecondaryBoot::Psci,
    hypervisor: Hypervisor {
        console: Console {
            device: "uart0",
            uart: UartKind::Pl011 {
                clock_hz: PL011_CLOCK_HZ,
            },
            baud: 115_200,
        },
        memory: HYPERVISOR_MEMORY,
        heap_size: 16 * MIB as usize,
    },
    ram: &[RAM],
    reserved: &[
        Reserved {
            name: "qemu-boot-handoff",
            range: BOOT_HANDOFF,
            reason: ReservedReason::Firmware,
        },
        // GICv2m MSI_SETSPI_NS (offset 0x40) and GICv3 GITS_TRANSLATER (translation
        // frame at +64 KiB, offset 0x40): writes there raise interrupts.
        Reserved {
            name: "v2m-doorbell",
            range: PhysRange::new(0x0802_0040, 4),
            reason: ReservedReason::MsiDoorbell,
        },
        Reserved {
            name: "its-doorbell",
            range: PhysRange::new(0x0809_0040, 4),
            reason: ReservedReason::MsiDoorbell,
        },
    ],
    devices: &DEVICES,
    // `base_memmap` spaces these devices 64 KiB apart but each decodes only its
    // first 4 KiB; nothing answers in the rest. Declared so that with a 16 or
    // 64 KiB granule the RTC and UART1 still map directly.
    unused: &[
        Unused {
            name: "rtc-padding",
            range: PhysRange::new(0x0901_1000, 0xf000),
        },
        Unused {
            name: "uart1-padding",
            range: PhysRange::new(0x0904_1000, 0xf000),
        },
    ],
    partitions: &[
        // Two vCPUs, on CPUs 1 and 3: guests bring the second up with PSCI
        // `CPU_ON`. CPU 0 is the hypervisor's, CPU 2 linux-b's.
        Partition {
            name: "linux-a",
            cpus: &[1, 3],
            ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
            grants: &[Grant::auto(virtio_name(31)), Grant::direct("uart1")],
        },
        Partition {
            name: "linux-b",
            cpus: &[2],
            ram: &[PhysRange::new(0x6000_0000, 256 * MIB)],
            grants: &[Grant::auto(virtio_name(30)), Grant::auto("rtc")],
        },
    ],
};

check_board!(BOARD);

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::ToString;
    use std::vec::Vec;

    use transom_boards::{Mapping, Violation, validate};

    use super::*;

    fn mapping_of(board: &Board, partition: &str, device: &str) -> Mapping {
        board
            .grant_mapping(partition, device)
            .expect("the partition grants the device")
    }

    #[test]
    fn the_table_follows_qemus_device_tree() {
        // `dumpdtb` of QEMU 10.0 `virt`: pl011@9000000 SPI 1, pl011@9040000 SPI 8,
        // virtio_mmio@a003e00 (the last transport) SPI 47, size 0x200.
        let uart0 = BOARD.device("uart0").expect("uart0");
        assert_eq!((uart0.base, uart0.size), (0x0900_0000, 0x1000));
        assert_eq!(uart0.interrupts.as_slice(), &[IntId::spi(1)]);
        let uart1 = BOARD.device("uart1").expect("uart1");
        assert_eq!(uart1.interrupts.as_slice(), &[IntId::spi(8)]);
        let last = BOARD.device(virtio_name(31)).expect("transport 31");
        assert_eq!((last.base, last.size), (0x0a00_3e00, 0x200));
        assert_eq!(last.interrupts.as_slice(), &[IntId::spi(47)]);
        assert_eq!(BOARD.console_region().name, "uart0");
    }

    /// Each partition on CPUs of its own, none on the hypervisor's CPU 0, all
    /// within QEMU `virt`'s 4 CPUs that the tests and the demo run.
    #[test]
    fn partitions_have_cpus_of_their_own_below_four() {
        let cpus: Vec<(&str, &[usize])> = BOARD
            .partitions
            .iter()
            .map(|partition| (partition.name, partition.cpus))
            .collect();
        assert_eq!(cpus, [("linux-a", &[1, 3][..]), ("linux-b", &[2][..])]);
    }

    #[test]
    fn a_pl011_alone_in_its_page_is_direct() {
        assert_eq!(mapping_of(&BOARD, "linux-a", "uart1"), Mapping::Direct);
        assert_eq!(mapping_of(&BOARD, "linux-b", "rtc"), Mapping::Direct);
    }

    /// Transports 30 and 31 share the page 0x0a00_3000 and go to two partitions.
    #[test]
    fn transports_sharing_a_page_across_partitions_are_trapped() {
        let a = mapping_of(&BOARD, "linux-a", virtio_name(31));
        let b = mapping_of(&BOARD, "linux-b", virtio_name(30));
        assert_eq!((a, b), (Mapping::Trapped, Mapping::Trapped));
        let a = BOARD.device(virtio_name(31)).expect("transport 31").range();
        let b = BOARD.device(virtio_name(30)).expect("transport 30").range();
        assert_eq!(a.span(BOARD.granule), b.span(BOARD.granule));
    }

    /// All eight transports of a page to one partition: the page is theirs.
    #[test]
    fn a_whole_page_of_transports_maps_directly() {
        let grants: Vec<Grant> = (24..32)
            .map(|index| Grant::auto(virtio_name(index)))
            .collect();
        let partitions = [Partition {
            name: "owner",
            cpus: &[1],
            ram: const { &[PhysRange::new(0x5000_0000, 256 * MIB)] },
            grants: grants.leak(),
        }];
        let board = Board {
            partitions: Vec::from(partitions).leak(),
            ..BOARD
        };
        assert_eq!(validate(&board), Ok(()));
        for index in 24..32 {
            assert_eq!(
                mapping_of(&board, "owner", virtio_name(index)),
                Mapping::Direct
            );
        }
    }

    /// With 64 KiB pages a 4 KiB device fills its page only with the padding the
    /// table declares: without it the forced-direct UART1 is an error and automatic
    /// grants are trapped; with it both stay direct, while the transports (32 in
    /// one 64 KiB page, the rest of it undescribed) are trapped.
    #[test]
    fn a_64k_granule_needs_the_declared_padding() {
        let board = Board {
            granule: Granule::Size64KiB,
            ..BOARD
        };
        assert_eq!(validate(&board), Ok(()));
        assert_eq!(mapping_of(&board, "linux-a", "uart1"), Mapping::Direct);
        assert_eq!(mapping_of(&board, "linux-b", "rtc"), Mapping::Direct);
        assert_eq!(
            mapping_of(&board, "linux-a", virtio_name(31)),
            Mapping::Trapped
        );

        let undeclared = Board {
            unused: &[],
            ..board
        };
        let error = validate(&undeclared).expect_err("uart1 cannot be direct with 64 KiB pages");
        assert!(matches!(
            error.violation,
            Violation::DirectSpanNotClean { .. }
        ));
        assert!(
            error.to_string().contains(
                "grants device `uart1` 0x9040000..0x9041000 directly, but its 64 KiB span 0x9040000..0x9050000"
            ),
            "{error}"
        );

        let auto = [Partition {
            name: "linux-a",
            cpus: &[1],
            ram: const { &[PhysRange::new(0x5000_0000, 256 * MIB)] },
            grants: const { &[Grant::auto("uart1"), Grant::auto("rtc")] },
        }];
        let board = Board {
            partitions: Vec::from(auto).leak(),
            ..undeclared
        };
        assert_eq!(validate(&board), Ok(()));
        assert_eq!(mapping_of(&board, "linux-a", "uart1"), Mapping::Trapped);
        assert_eq!(mapping_of(&board, "linux-a", "rtc"), Mapping::Trapped);
    }
}
