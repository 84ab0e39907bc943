//! The board table of the Raspberry Pi 4 Model B (BCM2711, low-peripheral mode).
//!
//! ```text
//! 0x0_0000_0000 +--------------------------------+ RAM bank 0 (every model)
//!               | 0x0000: armstub, spin table    |  reserved page
//!               | 0x8_0000: hypervisor (32 MiB)  |
//!               | 0x0800_0000: firmware handoff  |  DTB, initramfs (reserved)
//!               | 0x1000_0000: serial-guest      |
//!               | 0x2000_0000: gpio-guest        |
//! 0x0_3b40_0000 | VideoCore carve-out (gpu_mem)  |  reserved
//! 0x0_4000_0000 +--------------------------------+ RAM bank 1 (2 GiB and up)
//! 0x0_fc00_0000 +--------------------------------+ main peripherals
//!               | 0xfe00_3000 system timer       |
//!               | 0xfe00_b880 mailbox            |
//!               | 0xfe20_0000 GPIO               |
//!               | 0xfe20_1000 UART0 (console)    |  UART2..5 in the same page
//!               | 0xfe21_5000 AUX                |  mini UART, SPI1, SPI2 in it
//! 0x0_ff80_0000 +--------------------------------+ ARM local peripherals
//!               | 0xff84_1000 GIC-400            |
//! 0x1_0000_0000 +--------------------------------+ RAM bank 2 (8 GiB model)
//! ```
//!
//! Sources, cited per entry below:
//! - *BCM2711 ARM Peripherals* (Raspberry Pi Ltd, 2022), 1.2.4: low-peripheral mode
//!   maps VPU bus addresses 0x7e00_0000.. to ARM 0xfe00_0000.., and the ARM local
//!   block (GIC-400) to 0xff80_0000; each chapter gives its block's bus address.
//! - Linux's `bcm2711.dtsi` / `bcm283x.dtsi` (the Pi 4 device tree): `reg` sizes and
//!   the `<GIC_SPI n>` interrupt of each node. All PL011s share SPI 121, the AUX
//!   block (mini UART, SPI1, SPI2) shares SPI 93.
//! - GIC-400 TRM (r0p1), 3.2 "Memory map": GICD +0x1000 (4 KiB), GICC +0x2000
//!   (8 KiB), GICH +0x4000 (8 KiB), GICV +0x6000 (8 KiB).

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

/// The firmware clocks UART0 at 48 MHz (`init_uart_clock` default).
pub const UART0_CLOCK_HZ: u32 = 48_000_000;

/// The first GiB of SDRAM, on every model; the VideoCore carve-out is at its top.
pub const RAM_LOW: PhysRange = PhysRange::new(0, GIB);
/// From 1 GiB up to the peripherals (2, 4 and 8 GiB models).
pub const RAM_MID: PhysRange = PhysRange::new(0x4000_0000, 0xbc00_0000);
/// Above 4 GiB (8 GiB model).
pub const RAM_HIGH: PhysRange = PhysRange::new(0x1_0000_0000, 4 * GIB);

/// The hypervisor: image at `LOAD_ADDRESS` (0x8_0000), stacks, tables and heap.
pub const HYPERVISOR_MEMORY: PhysRange = PhysRange::new(0, 32 * MIB);

/// GPU memory at the top of the first GiB: `gpu_mem=76` (MiB) is the Pi 4
/// firmware's default (config.txt documentation, "gpu_mem"); QEMU `raspi4b` keeps
/// 64 MiB at 0x3c00_0000, inside this range.
pub const VIDEOCORE: PhysRange = PhysRange::new(0x3b40_0000, 76 * MIB);

/// The devices. ARM physical addresses = bus address - 0x7e00_0000 + 0xfe00_0000.
const DEVICES: &[Region] = &[
    // Datasheet 10.2: system timer at 0x7e00_3000; bcm2711.dtsi: 0x1000 bytes,
    // SPIs 64..67 (one per compare channel).
    Region::new("system-timer", 0xfe00_3000, 4 * KIB, DeviceKind::Timer).with_interrupts(&[
        IntId::spi(64),
        IntId::spi(65),
        IntId::spi(66),
        IntId::spi(67),
    ]),
    // bcm283x.dtsi `mailbox@7e00b880`, 0x40 bytes; bcm2711.dtsi: SPI 33.
    Region::new("mailbox", 0xfe00_b880, 0x40, DeviceKind::Mailbox)
        .with_interrupts(&[IntId::spi(33)]),
    // bcm283x.dtsi `watchdog@7e100000` (power management, reset), 0x114 bytes.
    Region::new("watchdog", 0xfe10_0000, 0x114, DeviceKind::Other),
    // Datasheet 5.2: GPIO at 0x7e20_0000, registers up to GPIO_PUP_PDN_CNTRL_REG3
    // at 0xf0 (0xf4 bytes); bcm2711.dtsi: SPIs 113..116 (banks 0, 1, 2, all).
    Region::new("gpio", 0xfe20_0000, 0xf4, DeviceKind::Other).with_interrupts(&[
        IntId::spi(113),
        IntId::spi(114),
        IntId::spi(115),
        IntId::spi(116),
    ]),
    // Datasheet 11.5: the PL011s at 0x7e20_1000, 0x7e20_1400, .. 0x7e20_1a00;
    // bcm2711.dtsi: 0x200 bytes each, all on SPI 121.
    Region::new("uart0", 0xfe20_1000, 0x200, DeviceKind::Pl011).with_interrupts(&[IntId::spi(121)]),
    Region::new("uart2", 0xfe20_1400, 0x200, DeviceKind::Pl011).with_interrupts(&[IntId::spi(121)]),
    Region::new("uart3", 0xfe20_1600, 0x200, DeviceKind::Pl011).with_interrupts(&[IntId::spi(121)]),
    Region::new("uart4", 0xfe20_1800, 0x200, DeviceKind::Pl011).with_interrupts(&[IntId::spi(121)]),
    Region::new("uart5", 0xfe20_1a00, 0x200, DeviceKind::Pl011).with_interrupts(&[IntId::spi(121)]),
    // Datasheet 9.5: SPI0 at 0x7e20_4000, SPI3..6 at 0x7e20_4600 .. 0x7e20_4c00;
    // bcm2711.dtsi: 0x200 bytes each, all on SPI 118.
    Region::new("spi0", 0xfe20_4000, 0x200, DeviceKind::Other).with_interrupts(&[IntId::spi(118)]),
    Region::new("spi3", 0xfe20_4600, 0x200, DeviceKind::Other).with_interrupts(&[IntId::spi(118)]),
    Region::new("spi4", 0xfe20_4800, 0x200, DeviceKind::Other).with_interrupts(&[IntId::spi(118)]),
    Region::new("spi5", 0xfe20_4a00, 0x200, DeviceKind::Other).with_interrupts(&[IntId::spi(118)]),
    Region::new("spi6", 0xfe20_4c00, 0x200, DeviceKind::Other).with_interrupts(&[IntId::spi(118)]),
    // Datasheet 3.2: BSC0 at 0x7e20_5000, BSC3..6 at 0x7e20_5600 .. 0x7e20_5c00;
    // bcm2711.dtsi: 0x200 bytes each, all on SPI 117.
    Region::new("i2c0", 0xfe20_5000, 0x200, DeviceKind::Other).with_interrupts(&[IntId::spi(117)]),
    Region::new("i2c3", 0xfe20_5600, 0x200, DeviceKind::Other).with_interrupts(&[IntId::spi(117)]),
    Region::new("i2c4", 0xfe20_5800, 0x200, DeviceKind::Other).with_interrupts(&[IntId::spi(117)]),
    Region::new("i2c5", 0xfe20_5a00, 0x200, DeviceKind::Other).with_interrupts(&[IntId::spi(117)]),
    Region::new("i2c6", 0xfe20_5c00, 0x200, DeviceKind::Other).with_interrupts(&[IntId::spi(117)]),
    // Datasheet 2.1.1: AUX_IRQ/AUX_ENABLES at 0x7e21_5000 (8 bytes), the mini UART
    // at 0x7e21_5040, SPI1 at 0x7e21_5080, SPI2 at 0x7e21_50c0 (0x40 each);
    // bcm283x.dtsi sizes; bcm2711.dtsi: all on SPI 93.
    Region::new("aux", 0xfe21_5000, 0x8, DeviceKind::Other).with_interrupts(&[IntId::spi(93)]),
    Region::new("mini-uart", 0xfe21_5040, 0x40, DeviceKind::MiniUart)
        .with_interrupts(&[IntId::spi(93)]),
    Region::new("spi1", 0xfe21_5080, 0x40, DeviceKind::Other).with_interrupts(&[IntId::spi(93)]),
    Region::new("spi2", 0xfe21_50c0, 0x40, DeviceKind::Other).with_interrupts(&[IntId::spi(93)]),
    // bcm2711.dtsi `emmc2@7e340000`, 0x100 bytes, SPI 126 (the SD card).
    Region::new("emmc2", 0xfe34_0000, 0x100, DeviceKind::Other).with_interrupts(&[IntId::spi(126)]),
    // bcm2711.dtsi `local_intc@40000000` (ARM local, 0xff80_0000), 0x100 bytes.
    Region::new("local-intc", 0xff80_0000, 0x100, DeviceKind::Other),
    // bcm2711.dtsi `gic400@40041000` and the GIC-400 TRM memory map.
    Region::new("gicd", 0xff84_1000, 4 * KIB, DeviceKind::GicDistributor),
    Region::new("gicc", 0xff84_2000, 8 * KIB, DeviceKind::GicCpuInterface),
    Region::new("gich", 0xff84_4000, 8 * KIB, DeviceKind::GicHypervisor),
    Region::new("gicv", 0xff84_6000, 8 * KIB, DeviceKind::GicVirtualCpu),
];

/// The Raspberry Pi 4 Model B, with two demo partitions: one with two UARTs that
/// share pages with other devices (both trapped), one with the GPIO block and the
/// system timer (both direct).
pub const BOARD: Board = Board {
    name: "rpi4",
    granule: Granule::Size4KiB,
    load_address: LOAD_ADDRESS,
    max_cpus: 4,
    secondary_boot: SecondaryBoot::SpinTable,
    hypervisor: Hypervisor {
        console: Console {
            device: "uart0",
            uart: UartKind::Pl011 {
                clock_hz: UART0_CLOCK_HZ,
            },
            baud: 115_200,
        },
        memory: HYPERVISOR_MEMORY,
        heap_size: 8 * MIB as usize,
    },
    ram: &[RAM_LOW, RAM_MID, RAM_HIGH],
    reserved: &[
        // The firmware's armstub8 occupies the first page; the secondaries poll
        // its spin table at 0xd8 + 8n (bcm2711.dtsi `cpu-release-addr`), and the
        // firmware lists the page in `/memreserve/`.
        Reserved {
            name: "armstub",
            range: PhysRange::new(0, 4 * KIB),
            reason: ReservedReason::SpinTable,
        },
        // Where the firmware puts the device tree and the initramfs: config.txt
        // `device_tree_address=0x08000000` on the Pi (see README.md); QEMU `raspi4b`
        // uses the same address (`hw/arm/boot.c`: RAM base + 128 MiB).
        Reserved {
            name: "firmware-handoff",
            range: PhysRange::new(0x0800_0000, 128 * MIB),
            reason: ReservedReason::Firmware,
        },
        Reserved {
            name: "videocore",
            range: VIDEOCORE,
            reason: ReservedReason::VideoCore,
        },
    ],
    devices: DEVICES,
    unused: &[
        // Datasheet 5.2 lists no GPIO register past 0xf0: the rest of the page
        // decodes nothing a guest could use to reach another device.
        Unused {
            name: "gpio-tail",
            range: PhysRange::new(0xfe20_00f4, 0x1000 - 0xf4),
        },
    ],
    partitions: &[
        Partition {
            name: "serial-guest",
            cpus: &[1],
            ram: &[PhysRange::new(0x1000_0000, 256 * MIB)],
            grants: &[Grant::auto("mini-uart"), Grant::auto("uart2")],
        },
        Partition {
            name: "gpio-guest",
            cpus: &[2],
            ram: &[PhysRange::new(0x2000_0000, 256 * MIB)],
            grants: &[Grant::direct("gpio"), Grant::auto("system-timer")],
        },
    ],
};

check_board!(BOARD);

#[cfg(test)]
mod tests {
    extern crate std;

    use std::vec::Vec;

    use transom_boards::{Mapping, Violation, validate};

    use super::*;

    fn mapping_of(board: &Board, partition: &str, device: &str) -> Mapping {
        board
            .grant_mapping(partition, device)
            .expect("the partition grants the device")
    }

    /// The board with the mini UART as console and `grants` as one partition.
    fn with_grants(grants: &'static [Grant]) -> Board {
        let partitions = [Partition {
            name: "guest",
            cpus: &[1],
            ram: const { &[PhysRange::new(0x1000_0000, 256 * MIB)] },
            grants,
        }];
        Board {
            hypervisor: Hypervisor {
                console: Console {
                    device: "mini-uart",
                    uart: UartKind::MiniUart {
                        core_clock_hz: 500_000_000,
                    },
                    baud: 115_200,
                },
                ..BOARD.hypervisor
            },
            partitions: Vec::from(partitions).leak(),
            ..BOARD
        }
    }

    /// The mini UART shares its page with AUX, SPI1 and SPI2 (datasheet 2.1.1).
    #[test]
    fn the_mini_uart_granted_alone_is_trapped() {
        assert_eq!(
            mapping_of(&BOARD, "serial-guest", "mini-uart"),
            Mapping::Trapped
        );
        let mini_uart = BOARD.device("mini-uart").expect("mini UART");
        assert_eq!(mini_uart.range().offset(BOARD.granule), 0x40);
    }

    #[test]
    fn uart2_shares_uart0s_page_and_is_trapped() {
        assert_eq!(
            mapping_of(&BOARD, "serial-guest", "uart2"),
            Mapping::Trapped
        );
    }

    /// UART0 without UART2..5 leaves them in its page; even with all five the page
    /// holds bytes no region describes (0x200..0x400, 0xc00..0x1000), so it stays
    /// trapped unless the board declares those unused.
    #[test]
    fn uart0_without_its_neighbours_is_trapped() {
        let alone = with_grants(const { &[Grant::auto("uart0")] });
        assert_eq!(validate(&alone), Ok(()));
        assert_eq!(mapping_of(&alone, "guest", "uart0"), Mapping::Trapped);
        let all = with_grants(
            const {
                &[
                    Grant::auto("uart0"),
                    Grant::auto("uart2"),
                    Grant::auto("uart3"),
                    Grant::auto("uart4"),
                    Grant::auto("uart5"),
                ]
            },
        );
        assert_eq!(validate(&all), Ok(()));
        assert_eq!(mapping_of(&all, "guest", "uart0"), Mapping::Trapped);
    }

    /// The GPIO block is 0xf4 bytes; the board declares the rest of its page unused,
    /// so it may be forced direct.
    #[test]
    fn gpio_maps_directly_over_its_declared_unused_tail() {
        assert_eq!(mapping_of(&BOARD, "gpio-guest", "gpio"), Mapping::Direct);
        assert_eq!(
            mapping_of(&BOARD, "gpio-guest", "system-timer"),
            Mapping::Direct
        );
    }

    /// The mini UART to one guest and SPI1 to another: both raise SPI 93.
    #[test]
    fn aux_devices_in_two_partitions_share_an_interrupt() {
        let partitions = [
            Partition {
                name: "serial",
                cpus: &[1],
                ram: const { &[PhysRange::new(0x1000_0000, 256 * MIB)] },
                grants: const { &[Grant::auto("mini-uart")] },
            },
            Partition {
                name: "spi",
                cpus: &[2],
                ram: const { &[PhysRange::new(0x2000_0000, 256 * MIB)] },
                grants: const { &[Grant::auto("spi1")] },
            },
        ];
        let board = Board {
            partitions: Vec::from(partitions).leak(),
            ..BOARD
        };
        let error = validate(&board).expect_err("SPI 93 in two partitions");
        assert_eq!(
            error.violation,
            Violation::InterruptInTwoPartitions {
                interrupt: IntId::spi(93),
                first: "serial",
                first_device: "mini-uart",
                second: "spi",
                second_device: "spi1",
            }
        );
    }

    /// The GIC-400's GICV is 8 KiB at 0xff84_6000 (TRM 3.2): it cannot be mapped
    /// with 64 KiB pages, so the Pi's table is invalid at that granule.
    #[test]
    fn a_64k_granule_cannot_map_the_gic400s_gicv() {
        let board = Board {
            granule: Granule::Size64KiB,
            ..BOARD
        };
        let error = validate(&board).expect_err("GICH/GICV are 8 KiB frames");
        assert!(
            matches!(
                error.violation,
                Violation::GicVirtualizationMisaligned { .. }
            ),
            "{error}"
        );
    }
}
