//! Transom for the Raspberry Pi 4: the composition root that binds the board table
//! (the library, `src/lib.rs`) to the kernel and turns the console's address into a
//! driver.

#![cfg_attr(target_os = "none", no_std)]
#![cfg_attr(target_os = "none", no_main)]

#[cfg(not(target_os = "none"))]
compile_error!(
    "transom-rpi4 is a bare-metal image: build it with `cargo xtask build --board rpi4`"
);

#[cfg(target_os = "none")]
mod image {
    use core::ptr::NonNull;

    use safe_mmio::UniqueMmioPointer;
    use transom_board_rpi4::{BOARD, UART0_CLOCK_HZ};
    use transom_drivers::pl011::{Pl011, Pl011Registers};

    /// The Raspberry Pi 4 Model B.
    struct RaspberryPi4;

    impl transom_kernel::Board for RaspberryPi4 {
        const DESC: transom_kernel::boards::Board = BOARD;

        type Console = Pl011<'static>;

        fn console() -> Pl011<'static> {
            let console = BOARD.console_region();
            let base = NonNull::new(console.base as *mut Pl011Registers).expect("non-zero address");
            // SAFETY: the console region is UART0 at 0xFE20_1000, a PL011 that the
            // kernel maps Device-nGnRE before calling this. `Pl011Registers` spans 0x4C
            // bytes, inside UART0's 0x200-byte window, so the pointer claims none of
            // UART2..5 in the same page. The table forbids granting UART0 to a guest
            // and this function runs once, so this is the only pointer to it.
            let registers = unsafe { UniqueMmioPointer::new(base) };
            let mut uart = Pl011::new(registers);
            uart.enable(UART0_CLOCK_HZ, BOARD.hypervisor.console.baud)
                .expect("115200 baud is reachable from a 48 MHz UARTCLK");
            uart
        }
    }

    transom_kernel::board_entry!(RaspberryPi4);
}
