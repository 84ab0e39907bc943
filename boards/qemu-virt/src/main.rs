//! Transom for QEMU `virt`: the composition root that binds the board table (the
//! library, `src/lib.rs`) to the kernel and turns the console's address into a
//! driver.

#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
compile_error!(
    "transom-qemu-virt is a bare-metal image: build it with `cargo xtask build --board qemu-virt`"
);

#[cfg(target_os = "none")]
mod image {
    use core::ptr::NonNull;

    use safe_mmio::UniqueMmioPointer;
    use transom_board_qemu_virt::{BOARD, PL011_CLOCK_HZ};
    use transom_drivers::pl011::{Pl011, Pl011Registers};

    /// QEMU `virt`.
    struct QemuVirt;

    impl transom_kernel::Board for QemuVirt {
        const DESC: transom_kernel::boards::Board = BOARD;

        type Console = Pl011<'static>;

        fn console() -> Pl011<'static> {
            let console = BOARD.console_region();
            let base = NonNull::new(console.base as *mut Pl011Registers).expect("non-zero address");
            // SAFETY: the console region is QEMU virt's PL011 at 0x0900_0000 (a 4 KiB
            // register block, larger than `Pl011Registers`), which the kernel maps
            // Device-nGnRE before calling this; the table forbids granting it to a
            // guest, and this function runs once, so this is the only pointer to it.
            let registers = unsafe { UniqueMmioPointer::new(base) };
            let mut uart = Pl011::new(registers);
            uart.enable(PL011_CLOCK_HZ, BOARD.hypervisor.console.baud)
                .expect("115200 baud is reachable from a 24 MHz UARTCLK");
            uart
        }
    }

    transom_kernel::board_entry!(QemuVirt);
}
