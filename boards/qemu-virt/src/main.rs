//! Transom for QEMU `virt` (`-machine virt,virtualization=on`): the composition root.
//!
//! ```text
//! 0x0000_0000 +--------------------------+
//!             | flash                    |
//! 0x0800_0000 +--------------------------+ DEVICES.start
//!             | GIC (v2 and v3 frames)   |
//! 0x0900_0000 | PL011 UART (console)     |
//!             | RTC, fw_cfg, GPIO, ...   |
//! 0x0a00_0000 | 32 virtio-mmio, 0x200 B  |
//! 0x0c00_0000 +--------------------------+ DEVICES.end
//!             | platform bus, PCIe       |
//! 0x4000_0000 +--------------------------+ RAM
//!             | 0x4008_0000: Transom     |
//! ```
//! Addresses from QEMU's `hw/arm/virt.c` (`base_memmap`).

#![no_std]
#![no_main]

mod layout;

use core::ptr::NonNull;

use safe_mmio::UniqueMmioPointer;
use transom_boards::{Board, Console, PhysRange, SecondaryBoot, UartKind};
use transom_drivers::pl011::{Pl011, Pl011Registers};

/// `VIRT_UART`.
const PL011_BASE: u64 = 0x0900_0000;
/// The PL011's `apb-pclk` in QEMU's generated device tree.
const PL011_CLOCK_HZ: u32 = 24_000_000;
const BAUD: u32 = 115_200;

/// `VIRT_GIC_DIST` up to the end of the virtio-mmio transports.
const DEVICES: PhysRange = PhysRange::new(0x0800_0000, 0x0400_0000);
/// `VIRT_MEM`: RAM starts at 1 GiB and may reach 255 GiB.
const RAM: PhysRange = PhysRange::new(0x4000_0000, 255 * 1024 * 1024 * 1024);

const _: () = assert!(layout::LOAD_ADDRESS >= RAM.start && layout::LOAD_ADDRESS < RAM.end);

/// QEMU `virt`.
struct QemuVirt;

impl transom_kernel::Board for QemuVirt {
    const DESC: Board = Board {
        name: "qemu-virt",
        load_address: layout::LOAD_ADDRESS,
        max_cpus: 8,
        console: Console {
            kind: UartKind::Pl011 {
                clock_hz: PL011_CLOCK_HZ,
            },
            window: PhysRange::new(PL011_BASE, 0x1000),
            baud: BAUD,
        },
        ram: &[RAM],
        device_memory: &[DEVICES],
        heap_size: 16 * 1024 * 1024,
        secondary_boot: SecondaryBoot::Psci,
    };

    type Console = Pl011<'static>;

    fn console() -> Pl011<'static> {
        let base = NonNull::new(PL011_BASE as *mut Pl011Registers).expect("non-zero address");
        // SAFETY: 0x0900_0000 is QEMU virt's PL011, a 4 KiB register block that the
        // kernel maps Device-nGnRE (it lies in DEVICES); this function runs once, so
        // this is the only pointer to it.
        let registers = unsafe { UniqueMmioPointer::new(base) };
        let mut uart = Pl011::new(registers);
        uart.enable(PL011_CLOCK_HZ, BAUD)
            .expect("115200 baud is reachable from a 24 MHz UARTCLK");
        uart
    }
}

transom_kernel::board_entry!(QemuVirt);
