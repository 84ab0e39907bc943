//! Transom for the Raspberry Pi 4 (BCM2711, low-peripheral mode): the composition root.
//!
//! ```text
//! 0x0000_0000 +--------------------------+ RAM bank 0
//!             | 0x0000_00d8: spin table  |  (firmware, reserved page)
//!             | 0x0008_0000: Transom     |
//! 0x3c00_0000 +--------------------------+ VideoCore carve-out (firmware decides)
//! 0x4000_0000 +--------------------------+ RAM bank 1 (2 GiB and larger models)
//! 0xfc00_0000 +--------------------------+ DEVICES.start
//!             | 0xfe20_1000: UART0 PL011 |  (console)
//!             | 0xfe21_5040: mini UART   |
//!             | 0xff84_1000: GIC-400     |
//! 0x1_0000_0000 +------------------------+ DEVICES.end, RAM bank 2 (4 and 8 GiB)
//! ```
//! Addresses from the *BCM2711 ARM Peripherals* datasheet, section 1.2 "Address
//! map" (low-peripheral mode: main peripherals at 0xFC00_0000..0xFF80_0000, ARM local
//! peripherals from 0xFF80_0000), and the Pi 4 device tree (`bcm2711-rpi-4-b.dts`).

#![no_std]
#![no_main]

mod layout;

use core::ptr::NonNull;

use safe_mmio::UniqueMmioPointer;
use transom_boards::{Board, Console, PhysRange, SecondaryBoot, UartKind};
use transom_drivers::pl011::{Pl011, Pl011Registers};

/// UART0 (PL011), datasheet chapter 11: 0x7E20_1000 on the VPU bus.
const UART0_BASE: u64 = 0xfe20_1000;
/// UART0's size in the Pi 4 device tree (`reg = <0x7e201000 0x200>`).
const UART0_SIZE: u64 = 0x200;
/// The firmware clocks UART0 at 48 MHz (`init_uart_clock` default).
const UART0_CLOCK_HZ: u32 = 48_000_000;
const BAUD: u32 = 115_200;

/// Main and ARM-local peripherals in low-peripheral mode.
const DEVICES: PhysRange = PhysRange::new(0xfc00_0000, 0x0400_0000);
/// RAM below the VideoCore carve-out; the firmware's tree says where it ends.
const RAM_LOW: PhysRange = PhysRange::new(0, 0x3c00_0000);
/// RAM from 1 GiB up to the peripherals (2 GiB and larger models).
const RAM_MID: PhysRange = PhysRange::new(0x4000_0000, 0xbc00_0000);
/// RAM above 4 GiB (4 GiB and 8 GiB models).
const RAM_HIGH: PhysRange = PhysRange::new(0x1_0000_0000, 0x1_0000_0000);

/// The Raspberry Pi 4 Model B.
struct RaspberryPi4;

impl transom_kernel::Board for RaspberryPi4 {
    const DESC: Board = Board {
        name: "rpi4",
        load_address: layout::LOAD_ADDRESS,
        max_cpus: 4,
        console: Console {
            kind: UartKind::Pl011 {
                clock_hz: UART0_CLOCK_HZ,
            },
            window: PhysRange::new(UART0_BASE, UART0_SIZE),
            baud: BAUD,
        },
        ram: &[RAM_LOW, RAM_MID, RAM_HIGH],
        device_memory: &[DEVICES],
        heap_size: 8 * 1024 * 1024,
        secondary_boot: SecondaryBoot::SpinTable,
    };

    type Console = Pl011<'static>;

    fn console() -> Pl011<'static> {
        let base = NonNull::new(UART0_BASE as *mut Pl011Registers).expect("non-zero address");
        // SAFETY: 0xFE20_1000 is UART0, a PL011 whose registers the kernel maps
        // Device-nGnRE (it lies in DEVICES). `Pl011Registers` spans 0x4C bytes, inside
        // UART0's 0x200-byte window, so the pointer claims none of UART2..5 in the same
        // page. This function runs once, so this is the only pointer to UART0.
        let registers = unsafe { UniqueMmioPointer::new(base) };
        let mut uart = Pl011::new(registers);
        uart.enable(UART0_CLOCK_HZ, BAUD)
            .expect("115200 baud is reachable from a 48 MHz UARTCLK");
        uart
    }
}

transom_kernel::board_entry!(RaspberryPi4);
