//! BCM2835 auxiliary mini UART (the Raspberry Pi's "UART1").
//!
//! Registers from the *BCM2711 ARM Peripherals* datasheet (2020-10), chapter 2
//! "Auxiliaries: UART1, SPI1 & SPI2", section 2.2 "Mini UART" (identical to BCM2835
//! ARM Peripherals section 2.2). The mini UART's own window is 0x40 bytes at AUX + 0x40
//! (0xFE215040 on a Pi 4 in low-peripheral mode); its enable bit lives in
//! `AUX_ENABLES` at AUX + 0x04, outside that window, so the driver takes both blocks.
//!
//! The mini UART has no clock of its own: it divides the VPU core clock (500 MHz on
//! a Pi 4 with `core_freq=500`, which the firmware fixes when `enable_uart=1`).
//! Its GPIO alternate function (GPIO 14/15, ALT5) is set by the firmware from
//! `config.txt`, as on any Pi that uses it as a console.

use core::convert::Infallible;
use core::mem::offset_of;

use bitflags::bitflags;
use embedded_hal_nb::nb;
use safe_mmio::fields::{ReadPure, ReadPureWrite, ReadWrite};
use safe_mmio::{UniqueMmioPointer, field};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `AUX_ENABLES` (datasheet 2.1.1).
#[repr(transparent)]
#[derive(Copy, Clone, Debug, Eq, PartialEq, FromBytes, Immutable, IntoBytes, KnownLayout)]
pub struct AuxEnables(u32);

bitflags! {
    impl AuxEnables: u32 {
        /// Mini UART enable; its registers are inaccessible while clear.
        const MINI_UART = 1 << 0;
        /// SPI1 enable.
        const SPI1 = 1 << 1;
        /// SPI2 enable.
        const SPI2 = 1 << 2;
    }
}

/// `AUX_MU_LSR_REG`, line status (datasheet 2.2.2).
#[repr(transparent)]
#[derive(Copy, Clone, Debug, Eq, PartialEq, FromBytes, Immutable, IntoBytes, KnownLayout)]
pub struct LineStatus(u32);

bitflags! {
    impl LineStatus: u32 {
        /// The receive FIFO holds at least one byte.
        const DATA_READY = 1 << 0;
        /// A byte was lost because the receive FIFO was full.
        const RX_OVERRUN = 1 << 1;
        /// The transmit FIFO can accept at least one byte.
        const TX_EMPTY = 1 << 5;
        /// The transmit FIFO is empty and the transmitter is idle.
        const TX_IDLE = 1 << 6;
    }
}

/// `AUX_MU_LCR_REG`, line control (datasheet 2.2.2).
#[repr(transparent)]
#[derive(Copy, Clone, Debug, Eq, PartialEq, FromBytes, Immutable, IntoBytes, KnownLayout)]
pub struct LineControl(u32);

bitflags! {
    impl LineControl: u32 {
        /// 8-bit mode. The datasheet documents bit 0 alone; both bits must be set
        /// (BCM2835 datasheet errata, "mini UART 8-bit mode").
        const EIGHT_BIT = 0b11;
        /// Send break.
        const BREAK = 1 << 6;
        /// Access the baud register through IO/IER (DLAB).
        const DLAB = 1 << 7;
    }
}

/// `AUX_MU_IIR_REG` writes (datasheet 2.2.2): FIFO clear bits.
#[repr(transparent)]
#[derive(Copy, Clone, Debug, Eq, PartialEq, FromBytes, Immutable, IntoBytes, KnownLayout)]
pub struct FifoClear(u32);

bitflags! {
    impl FifoClear: u32 {
        /// Clear the receive FIFO.
        const RX = 1 << 1;
        /// Clear the transmit FIFO.
        const TX = 1 << 2;
    }
}

/// `AUX_MU_CNTL_REG`, extra control (datasheet 2.2.2).
#[repr(transparent)]
#[derive(Copy, Clone, Debug, Eq, PartialEq, FromBytes, Immutable, IntoBytes, KnownLayout)]
pub struct ExtraControl(u32);

bitflags! {
    impl ExtraControl: u32 {
        /// Receiver enable.
        const RX_ENABLE = 1 << 0;
        /// Transmitter enable.
        const TX_ENABLE = 1 << 1;
    }
}

/// The first two AUX registers (datasheet table 2.1.1), at the AUX base.
#[derive(FromBytes, Immutable, KnownLayout)]
#[repr(C, align(4))]
pub struct AuxRegisters {
    /// 0x00 `AUX_IRQ`: pending auxiliary interrupts.
    pub irq: ReadPure<u32>,
    /// 0x04 `AUX_ENABLES`: auxiliary enables.
    pub enables: ReadPureWrite<AuxEnables>,
}

const _: () = assert!(offset_of!(AuxRegisters, enables) == 0x04);

/// The mini UART's register window, at AUX + 0x40 (datasheet table 2.1.1).
#[derive(FromBytes, Immutable, KnownLayout)]
#[repr(C, align(4))]
pub struct MiniUartRegisters {
    /// AUX + 0x40 `AUX_MU_IO_REG`: data.
    pub io: ReadWrite<u32>,
    /// AUX + 0x44 `AUX_MU_IER_REG`: interrupt enable.
    pub ier: ReadPureWrite<u32>,
    /// AUX + 0x48 `AUX_MU_IIR_REG`: interrupt identify; writes clear the FIFOs.
    pub iir: ReadPureWrite<FifoClear>,
    /// AUX + 0x4C `AUX_MU_LCR_REG`: line control.
    pub lcr: ReadPureWrite<LineControl>,
    /// AUX + 0x50 `AUX_MU_MCR_REG`: modem control.
    pub mcr: ReadPureWrite<u32>,
    /// AUX + 0x54 `AUX_MU_LSR_REG`: line status.
    pub lsr: ReadPure<LineStatus>,
    /// AUX + 0x58 `AUX_MU_MSR_REG`: modem status.
    pub msr: ReadPure<u32>,
    /// AUX + 0x5C `AUX_MU_SCRATCH`: scratch byte.
    pub scratch: ReadPureWrite<u32>,
    /// AUX + 0x60 `AUX_MU_CNTL_REG`: extra control.
    pub cntl: ReadPureWrite<ExtraControl>,
    /// AUX + 0x64 `AUX_MU_STAT_REG`: extra status.
    pub stat: ReadPure<u32>,
    /// AUX + 0x68 `AUX_MU_BAUD_REG`: baud rate counter.
    pub baud: ReadPureWrite<u32>,
    _reserved_6c: [u32; 5],
}

const _: () = assert!(offset_of!(MiniUartRegisters, lcr) == 0x4c - 0x40);
const _: () = assert!(offset_of!(MiniUartRegisters, lsr) == 0x54 - 0x40);
const _: () = assert!(offset_of!(MiniUartRegisters, cntl) == 0x60 - 0x40);
const _: () = assert!(offset_of!(MiniUartRegisters, baud) == 0x68 - 0x40);
const _: () = assert!(size_of::<MiniUartRegisters>() == 0x40);

/// A baud rate the mini UART cannot produce from the core clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnreachableBaud {
    /// The VPU core clock, Hz.
    pub core_clock_hz: u32,
    /// The requested baud rate.
    pub baud: u32,
}

/// The `AUX_MU_BAUD_REG` value for `baud`.
///
/// Datasheet 2.2.1: `baudrate = system_clock_freq / (8 * (baudrate_reg + 1))`, so
/// `baudrate_reg = round(system_clock_freq / (8 * baud)) - 1`, a 16-bit value.
pub const fn baud_register(core_clock_hz: u32, baud: u32) -> Result<u32, UnreachableBaud> {
    const OVERSAMPLING: u64 = 8;
    const MAX_REGISTER: u64 = 0xffff;
    let error = UnreachableBaud {
        core_clock_hz,
        baud,
    };
    if baud == 0 {
        return Err(error);
    }
    let ticks_per_bit = OVERSAMPLING * baud as u64;
    let divider = (core_clock_hz as u64 + ticks_per_bit / 2) / ticks_per_bit;
    if divider == 0 || divider - 1 > MAX_REGISTER {
        return Err(error);
    }
    Ok((divider - 1) as u32)
}

/// The mini UART, 8N1, no flow control.
pub struct MiniUart<'a> {
    regs: UniqueMmioPointer<'a, MiniUartRegisters>,
}

impl<'a> MiniUart<'a> {
    /// Enables the mini UART in `AUX_ENABLES` and programs it for `baud`.
    ///
    /// Sequence as in the datasheet's register descriptions: enable the block, turn
    /// the transmitter and receiver off, mask interrupts, 8-bit mode, clear the
    /// FIFOs, set the divider, turn the transmitter and receiver on.
    pub fn enable(
        mut aux: UniqueMmioPointer<'_, AuxRegisters>,
        mut regs: UniqueMmioPointer<'a, MiniUartRegisters>,
        core_clock_hz: u32,
        baud: u32,
    ) -> Result<Self, UnreachableBaud> {
        let divider = baud_register(core_clock_hz, baud)?;
        let enables = field!(aux, enables).read();
        field!(aux, enables).write(enables | AuxEnables::MINI_UART);

        field!(regs, cntl).write(ExtraControl::empty());
        field!(regs, ier).write(0);
        field!(regs, lcr).write(LineControl::EIGHT_BIT);
        field!(regs, mcr).write(0);
        field!(regs, iir).write(FifoClear::RX | FifoClear::TX);
        field!(regs, baud).write(divider);
        field!(regs, cntl).write(ExtraControl::RX_ENABLE | ExtraControl::TX_ENABLE);
        Ok(MiniUart { regs })
    }

    /// The current line status.
    pub fn line_status(&mut self) -> LineStatus {
        field!(self.regs, lsr).read()
    }

    /// Queues one byte if the transmit FIFO has room.
    pub fn try_write_byte(&mut self, byte: u8) -> nb::Result<(), Infallible> {
        if !self.line_status().contains(LineStatus::TX_EMPTY) {
            return Err(nb::Error::WouldBlock);
        }
        field!(self.regs, io).write(u32::from(byte));
        Ok(())
    }

    /// Takes one received byte, if any.
    pub fn try_read_byte(&mut self) -> nb::Result<u8, Infallible> {
        if !self.line_status().contains(LineStatus::DATA_READY) {
            return Err(nb::Error::WouldBlock);
        }
        Ok(field!(self.regs, io).read().to_le_bytes()[0])
    }

    /// Whether everything queued has left the transmitter.
    pub fn is_idle(&mut self) -> bool {
        self.line_status().contains(LineStatus::TX_IDLE)
    }
}

impl embedded_io::ErrorType for MiniUart<'_> {
    type Error = Infallible;
}

impl embedded_io::Write for MiniUart<'_> {
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        for &byte in buf {
            nb::block!(self.try_write_byte(byte))?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        while !self.is_idle() {}
        Ok(())
    }
}

impl embedded_hal_nb::serial::ErrorType for MiniUart<'_> {
    type Error = Infallible;
}

impl embedded_hal_nb::serial::Write<u8> for MiniUart<'_> {
    fn write(&mut self, word: u8) -> nb::Result<(), Infallible> {
        self.try_write_byte(word)
    }

    fn flush(&mut self) -> nb::Result<(), Infallible> {
        if self.is_idle() {
            Ok(())
        } else {
            Err(nb::Error::WouldBlock)
        }
    }
}

impl embedded_hal_nb::serial::Read<u8> for MiniUart<'_> {
    fn read(&mut self) -> nb::Result<u8, Infallible> {
        self.try_read_byte()
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use embedded_io::Write as _;
    use std::boxed::Box;
    use zerocopy::FromZeros;

    #[test]
    fn divider_for_the_pi4_core_clock() {
        // 500 MHz / (8 * 115200) = 542.5 -> 543 - 1.
        assert_eq!(baud_register(500_000_000, 115_200), Ok(542));
    }

    #[test]
    fn divider_for_the_pi3_core_clock() {
        // The Pi 3's 250 MHz core clock gives the well-known 270.
        assert_eq!(baud_register(250_000_000, 115_200), Ok(270));
    }

    #[test]
    fn unreachable_bauds_are_refused() {
        assert!(baud_register(500_000_000, 0).is_err());
        assert!(baud_register(1_000_000, 1_000_000).is_err());
        assert!(baud_register(u32::MAX, 300).is_err());
    }

    #[test]
    fn enable_sets_the_aux_bit_and_programs_the_line() {
        let mut aux = AuxRegisters::new_box_zeroed().expect("allocation");
        aux.enables.0 = AuxEnables::SPI1;
        let mut regs: Box<MiniUartRegisters> =
            MiniUartRegisters::new_box_zeroed().expect("allocation");
        regs.lsr.0 = LineStatus::TX_EMPTY | LineStatus::TX_IDLE;
        let mut uart = MiniUart::enable(
            UniqueMmioPointer::from(&mut *aux),
            UniqueMmioPointer::from(&mut *regs),
            500_000_000,
            115_200,
        )
        .expect("reachable baud");
        uart.write_all(b"hi").expect("infallible");
        // SPI1 stays enabled: the driver only adds its own bit.
        assert_eq!(aux.enables.0, AuxEnables::SPI1 | AuxEnables::MINI_UART);
        assert_eq!(regs.lcr.0, LineControl::EIGHT_BIT);
        assert_eq!(regs.baud.0, 542);
        assert_eq!(
            regs.cntl.0,
            ExtraControl::RX_ENABLE | ExtraControl::TX_ENABLE
        );
        assert_eq!(regs.iir.0, FifoClear::RX | FifoClear::TX);
        assert_eq!(regs.io.0, u32::from(b'i'));
    }

    #[test]
    fn full_fifo_would_block() {
        let mut aux = AuxRegisters::new_box_zeroed().expect("allocation");
        let mut regs = MiniUartRegisters::new_box_zeroed().expect("allocation");
        let mut uart = MiniUart::enable(
            UniqueMmioPointer::from(&mut *aux),
            UniqueMmioPointer::from(&mut *regs),
            500_000_000,
            115_200,
        )
        .expect("reachable baud");
        assert_eq!(uart.try_write_byte(b'x'), Err(nb::Error::WouldBlock));
        assert_eq!(uart.try_read_byte(), Err(nb::Error::WouldBlock));
    }
}
