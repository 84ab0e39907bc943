//! Arm PrimeCell UART (PL011).
//!
//! Register map and programming sequence from the *PrimeCell UART (PL011) Technical
//! Reference Manual*, Arm DDI 0183G: section 3.2 "Summary of registers" (table 3-1) and
//! section 3.3 "Register descriptions". QEMU `virt` has one at 0x0900_0000; the
//! Raspberry Pi 4 has UART0 and UART2..5 (BCM2711 ARM Peripherals, chapter 11).

use core::convert::Infallible;
use core::mem::offset_of;

use bitflags::bitflags;
use embedded_hal_nb::nb;
use safe_mmio::fields::{ReadPure, ReadPureWrite, ReadWrite, WriteOnly};
use safe_mmio::{UniqueMmioPointer, field};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// `UARTFR`, flag register (TRM 3.3.3).
#[repr(transparent)]
#[derive(Copy, Clone, Debug, Eq, PartialEq, FromBytes, Immutable, IntoBytes, KnownLayout)]
pub struct Flags(u32);

bitflags! {
    impl Flags: u32 {
        /// Clear to send.
        const CTS = 1 << 0;
        /// UART busy transmitting.
        const BUSY = 1 << 3;
        /// Receive FIFO empty.
        const RXFE = 1 << 4;
        /// Transmit FIFO full.
        const TXFF = 1 << 5;
        /// Receive FIFO full.
        const RXFF = 1 << 6;
        /// Transmit FIFO empty.
        const TXFE = 1 << 7;
    }
}

/// `UARTLCR_H`, line control register (TRM 3.3.7).
#[repr(transparent)]
#[derive(Copy, Clone, Debug, Eq, PartialEq, FromBytes, Immutable, IntoBytes, KnownLayout)]
pub struct LineControl(u32);

bitflags! {
    impl LineControl: u32 {
        /// Send break.
        const BRK = 1 << 0;
        /// Parity enable.
        const PEN = 1 << 1;
        /// Even parity select.
        const EPS = 1 << 2;
        /// Two stop bits.
        const STP2 = 1 << 3;
        /// FIFOs enabled.
        const FEN = 1 << 4;
        /// Word length 8 bits (`WLEN` = 0b11).
        const WLEN_8 = 0b11 << 5;
        /// Stick parity.
        const SPS = 1 << 7;
    }
}

/// `UARTCR`, control register (TRM 3.3.8).
#[repr(transparent)]
#[derive(Copy, Clone, Debug, Eq, PartialEq, FromBytes, Immutable, IntoBytes, KnownLayout)]
pub struct Control(u32);

bitflags! {
    impl Control: u32 {
        /// UART enable.
        const UARTEN = 1 << 0;
        /// Transmit enable.
        const TXE = 1 << 8;
        /// Receive enable.
        const RXE = 1 << 9;
        /// Request to send.
        const RTS = 1 << 11;
    }
}

/// Interrupt bits shared by `UARTIMSC`, `UARTRIS`, `UARTMIS` and `UARTICR` (TRM 3.3.10-13).
#[repr(transparent)]
#[derive(Copy, Clone, Debug, Eq, PartialEq, FromBytes, Immutable, IntoBytes, KnownLayout)]
pub struct Interrupts(u32);

bitflags! {
    impl Interrupts: u32 {
        /// Receive.
        const RX = 1 << 4;
        /// Transmit.
        const TX = 1 << 5;
        /// Receive timeout.
        const RT = 1 << 6;
        /// Framing error.
        const FE = 1 << 7;
        /// Parity error.
        const PE = 1 << 8;
        /// Break error.
        const BE = 1 << 9;
        /// Overrun error.
        const OE = 1 << 10;
        /// Every interrupt the PL011 has, modem status ones included (bits 0..=10).
        const ALL = 0x7ff;
    }
}

/// Error bits of a received word in `UARTDR` (TRM 3.3.1).
#[repr(transparent)]
#[derive(Copy, Clone, Debug, Eq, PartialEq, FromBytes, Immutable, IntoBytes, KnownLayout)]
pub struct DataErrors(u32);

bitflags! {
    impl DataErrors: u32 {
        /// Framing error.
        const FE = 1 << 8;
        /// Parity error.
        const PE = 1 << 9;
        /// Break error.
        const BE = 1 << 10;
        /// Overrun error.
        const OE = 1 << 11;
    }
}

/// The PL011's operational registers (TRM table 3-1), 0x4C bytes.
///
/// The block stops before the test and identification registers (0x080.., 0xFE0..):
/// on the BCM2711 the PL011s are 0x200 apart, so a 4 KiB block would claim the
/// neighbouring UARTs' registers.
#[derive(FromBytes, Immutable, KnownLayout)]
#[repr(C, align(4))]
pub struct Pl011Registers {
    /// 0x000 `UARTDR`: data.
    pub dr: ReadWrite<u32>,
    /// 0x004 `UARTRSR`/`UARTECR`: receive status / error clear.
    pub rsr_ecr: ReadPureWrite<u32>,
    _reserved_008: [u32; 4],
    /// 0x018 `UARTFR`: flags.
    pub fr: ReadPure<Flags>,
    _reserved_01c: u32,
    /// 0x020 `UARTILPR`: IrDA low-power counter.
    pub ilpr: ReadPureWrite<u32>,
    /// 0x024 `UARTIBRD`: integer baud rate divisor.
    pub ibrd: ReadPureWrite<u32>,
    /// 0x028 `UARTFBRD`: fractional baud rate divisor.
    pub fbrd: ReadPureWrite<u32>,
    /// 0x02C `UARTLCR_H`: line control.
    pub lcr_h: ReadPureWrite<LineControl>,
    /// 0x030 `UARTCR`: control.
    pub cr: ReadPureWrite<Control>,
    /// 0x034 `UARTIFLS`: interrupt FIFO level select.
    pub ifls: ReadPureWrite<u32>,
    /// 0x038 `UARTIMSC`: interrupt mask set/clear.
    pub imsc: ReadPureWrite<Interrupts>,
    /// 0x03C `UARTRIS`: raw interrupt status.
    pub ris: ReadPure<Interrupts>,
    /// 0x040 `UARTMIS`: masked interrupt status.
    pub mis: ReadPure<Interrupts>,
    /// 0x044 `UARTICR`: interrupt clear.
    pub icr: WriteOnly<Interrupts>,
    /// 0x048 `UARTDMACR`: DMA control.
    pub dmacr: ReadPureWrite<u32>,
}

const _: () = assert!(offset_of!(Pl011Registers, fr) == 0x018);
const _: () = assert!(offset_of!(Pl011Registers, ibrd) == 0x024);
const _: () = assert!(offset_of!(Pl011Registers, fbrd) == 0x028);
const _: () = assert!(offset_of!(Pl011Registers, lcr_h) == 0x02c);
const _: () = assert!(offset_of!(Pl011Registers, cr) == 0x030);
const _: () = assert!(offset_of!(Pl011Registers, imsc) == 0x038);
const _: () = assert!(offset_of!(Pl011Registers, icr) == 0x044);
const _: () = assert!(offset_of!(Pl011Registers, dmacr) == 0x048);
const _: () = assert!(size_of::<Pl011Registers>() == 0x4c);

/// The integer and fractional baud rate divisors (`UARTIBRD`, `UARTFBRD`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BaudDivisor {
    /// `UARTIBRD`, 16 bits.
    pub integer: u32,
    /// `UARTFBRD`, 6 bits.
    pub fraction: u32,
}

/// A baud rate the PL011 cannot produce from its reference clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnreachableBaud {
    /// The reference clock, Hz.
    pub clock_hz: u32,
    /// The requested baud rate.
    pub baud: u32,
}

impl BaudDivisor {
    /// Computes the divisors for `baud` from the reference clock `UARTCLK`.
    ///
    /// TRM 3.3.6: `BAUDDIV = UARTCLK / (16 * baud)`, `IBRD` its integer part and
    /// `FBRD = round(fraction * 64)`. Working in 1/64ths, that is
    /// `round(UARTCLK * 4 / baud)`. `IBRD` must be 1..=0xFFFF.
    pub const fn new(clock_hz: u32, baud: u32) -> Result<BaudDivisor, UnreachableBaud> {
        const FRACTION_BITS: u32 = 6;
        const MAX_INTEGER: u64 = 0xffff;
        let error = UnreachableBaud { clock_hz, baud };
        if baud == 0 {
            return Err(error);
        }
        let sixty_fourths = (clock_hz as u64 * 4 + baud as u64 / 2) / baud as u64;
        let integer = sixty_fourths >> FRACTION_BITS;
        let fraction = sixty_fourths & ((1 << FRACTION_BITS) - 1);
        if integer == 0 || integer > MAX_INTEGER {
            return Err(error);
        }
        Ok(BaudDivisor {
            integer: integer as u32,
            fraction: fraction as u32,
        })
    }
}

/// A receive error reported in `UARTDR`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReceiveError {
    /// A byte arrived while the FIFO was full.
    Overrun,
    /// The line was held low longer than a frame.
    Break,
    /// Parity mismatch.
    Parity,
    /// No valid stop bit.
    Framing,
}

impl embedded_hal_nb::serial::Error for ReceiveError {
    fn kind(&self) -> embedded_hal_nb::serial::ErrorKind {
        use embedded_hal_nb::serial::ErrorKind;
        match self {
            ReceiveError::Overrun => ErrorKind::Overrun,
            ReceiveError::Break => ErrorKind::Other,
            ReceiveError::Parity => ErrorKind::Parity,
            ReceiveError::Framing => ErrorKind::FrameFormat,
        }
    }
}

/// A PL011 driver, 8N1 with FIFOs.
pub struct Pl011<'a> {
    regs: UniqueMmioPointer<'a, Pl011Registers>,
}

impl<'a> Pl011<'a> {
    /// Takes the register block of a PL011.
    pub fn new(regs: UniqueMmioPointer<'a, Pl011Registers>) -> Self {
        Pl011 { regs }
    }

    /// Programs the UART for `baud`, 8 data bits, no parity, one stop bit, FIFOs on,
    /// interrupts masked, following TRM 3.3.8 (disable, drain, flush, program, enable).
    pub fn enable(&mut self, clock_hz: u32, baud: u32) -> Result<(), UnreachableBaud> {
        let divisor = BaudDivisor::new(clock_hz, baud)?;

        field!(self.regs, cr).write(Control::empty());
        while field!(self.regs, fr).read().contains(Flags::BUSY) {}
        // Clearing FEN flushes the transmit FIFO.
        field!(self.regs, lcr_h).write(LineControl::empty());

        field!(self.regs, imsc).write(Interrupts::empty());
        field!(self.regs, icr).write(Interrupts::ALL);
        field!(self.regs, ibrd).write(divisor.integer);
        field!(self.regs, fbrd).write(divisor.fraction);
        // The divisors are latched by the write to UARTLCR_H, so it comes after them.
        field!(self.regs, lcr_h).write(LineControl::WLEN_8 | LineControl::FEN);
        field!(self.regs, cr).write(Control::UARTEN | Control::TXE | Control::RXE);
        Ok(())
    }

    /// The current flags.
    pub fn flags(&mut self) -> Flags {
        field!(self.regs, fr).read()
    }

    /// Queues one byte if the transmit FIFO has room.
    pub fn try_write_byte(&mut self, byte: u8) -> nb::Result<(), Infallible> {
        if self.flags().contains(Flags::TXFF) {
            return Err(nb::Error::WouldBlock);
        }
        field!(self.regs, dr).write(u32::from(byte));
        Ok(())
    }

    /// Takes one received byte, if any.
    pub fn try_read_byte(&mut self) -> nb::Result<u8, ReceiveError> {
        if self.flags().contains(Flags::RXFE) {
            return Err(nb::Error::WouldBlock);
        }
        let word = field!(self.regs, dr).read();
        let errors = DataErrors::from_bits_truncate(word);
        let error = if errors.contains(DataErrors::OE) {
            Some(ReceiveError::Overrun)
        } else if errors.contains(DataErrors::BE) {
            Some(ReceiveError::Break)
        } else if errors.contains(DataErrors::PE) {
            Some(ReceiveError::Parity)
        } else if errors.contains(DataErrors::FE) {
            Some(ReceiveError::Framing)
        } else {
            None
        };
        match error {
            Some(error) => Err(nb::Error::Other(error)),
            None => Ok(word.to_le_bytes()[0]),
        }
    }

    /// Whether the transmitter has sent everything queued.
    pub fn is_idle(&mut self) -> bool {
        !self.flags().contains(Flags::BUSY)
    }
}

impl embedded_io::ErrorType for Pl011<'_> {
    type Error = Infallible;
}

/// Bytes the transmit FIFO holds: 16 in the PL011 (TRM 2.4.3, "16x8 transmit
/// FIFO"), and in the BCM2711's (its peripherals manual, 11.2).
const TX_FIFO_DEPTH: usize = 16;

impl embedded_io::Write for Pl011<'_> {
    /// Writes every byte. When the FIFO is empty (`TXFE`), as many bytes as it
    /// holds go in without a flag read each; otherwise one byte per `TXFF` check.
    /// With FIFOs off (`FEN` clear) `TXFE` only says the holding register is empty,
    /// so the burst is one byte.
    fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        let burst = if field!(self.regs, lcr_h).read().contains(LineControl::FEN) {
            TX_FIFO_DEPTH
        } else {
            1
        };
        let mut rest = buf;
        while let Some((&first, _)) = rest.split_first() {
            if self.flags().contains(Flags::TXFE) {
                let (now, later) = rest.split_at(rest.len().min(burst));
                for &byte in now {
                    field!(self.regs, dr).write(u32::from(byte));
                }
                rest = later;
            } else {
                nb::block!(self.try_write_byte(first))?;
                rest = &rest[1..];
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        while !self.is_idle() {}
        Ok(())
    }
}

impl embedded_hal_nb::serial::ErrorType for Pl011<'_> {
    type Error = ReceiveError;
}

impl embedded_hal_nb::serial::Write<u8> for Pl011<'_> {
    fn write(&mut self, word: u8) -> nb::Result<(), ReceiveError> {
        self.try_write_byte(word).map_err(|error| match error {
            nb::Error::WouldBlock => nb::Error::WouldBlock,
        })
    }

    fn flush(&mut self) -> nb::Result<(), ReceiveError> {
        if self.is_idle() {
            Ok(())
        } else {
            Err(nb::Error::WouldBlock)
        }
    }
}

impl embedded_hal_nb::serial::Read<u8> for Pl011<'_> {
    fn read(&mut self) -> nb::Result<u8, ReceiveError> {
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

    fn fake_registers() -> Box<Pl011Registers> {
        Pl011Registers::new_box_zeroed().expect("allocation")
    }

    #[test]
    fn divisor_matches_the_trm_worked_example() {
        // TRM 3.3.6: UARTCLK = 4 MHz, 230400 baud -> BAUDDIV 1.085 -> IBRD 1, FBRD 5.
        assert_eq!(
            BaudDivisor::new(4_000_000, 230_400),
            Ok(BaudDivisor {
                integer: 1,
                fraction: 5
            })
        );
    }

    #[test]
    fn divisor_for_the_pi4_uart0_clock() {
        // The Pi 4 firmware clocks UART0 at 48 MHz: 48e6 / (16 * 115200) = 26.042.
        assert_eq!(
            BaudDivisor::new(48_000_000, 115_200),
            Ok(BaudDivisor {
                integer: 26,
                fraction: 3
            })
        );
    }

    #[test]
    fn unreachable_bauds_are_refused() {
        assert!(BaudDivisor::new(48_000_000, 0).is_err());
        // Faster than UARTCLK / 16.
        assert!(BaudDivisor::new(1_000_000, 1_000_000).is_err());
        // IBRD would not fit in 16 bits.
        assert!(BaudDivisor::new(u32::MAX, 300).is_err());
    }

    #[test]
    fn enable_programs_8n1_with_fifos() {
        let mut regs = fake_registers();
        let mut uart = Pl011::new(UniqueMmioPointer::from(&mut *regs));
        uart.enable(48_000_000, 115_200).expect("reachable baud");
        assert_eq!(regs.ibrd.0, 26);
        assert_eq!(regs.fbrd.0, 3);
        assert_eq!(regs.lcr_h.0, LineControl::WLEN_8 | LineControl::FEN);
        assert_eq!(regs.cr.0, Control::UARTEN | Control::TXE | Control::RXE);
        assert_eq!(regs.imsc.0, Interrupts::empty());
        assert_eq!(regs.icr.0, Interrupts::ALL);
    }

    #[test]
    fn write_goes_through_the_data_register() {
        let mut regs = fake_registers();
        let mut uart = Pl011::new(UniqueMmioPointer::from(&mut *regs));
        uart.write_all(b"ok").expect("infallible");
        assert_eq!(regs.dr.0, u32::from(b'k'));
    }

    #[test]
    fn an_empty_fifo_takes_a_burst() {
        let mut regs = fake_registers();
        regs.fr.0 = Flags::TXFE;
        regs.lcr_h.0 = LineControl::FEN | LineControl::WLEN_8;
        let mut uart = Pl011::new(UniqueMmioPointer::from(&mut *regs));
        // 20 bytes: one burst of the FIFO's 16, then another of 4.
        uart.write_all(b"0123456789abcdefghij").expect("infallible");
        assert_eq!(regs.dr.0, u32::from(b'j'));
    }

    #[test]
    fn full_fifo_would_block() {
        let mut regs = fake_registers();
        regs.fr.0 = Flags::TXFF;
        let mut uart = Pl011::new(UniqueMmioPointer::from(&mut *regs));
        assert_eq!(uart.try_write_byte(b'x'), Err(nb::Error::WouldBlock));
    }

    #[test]
    fn receive_errors_are_reported() {
        let mut regs = fake_registers();
        regs.dr.0 = DataErrors::OE.bits() | u32::from(b'a');
        let mut uart = Pl011::new(UniqueMmioPointer::from(&mut *regs));
        assert_eq!(
            uart.try_read_byte(),
            Err(nb::Error::Other(ReceiveError::Overrun))
        );
        regs.dr.0 = u32::from(b'a');
        let mut uart = Pl011::new(UniqueMmioPointer::from(&mut *regs));
        assert_eq!(uart.try_read_byte(), Ok(b'a'));
        regs.fr.0 = Flags::RXFE;
        let mut uart = Pl011::new(UniqueMmioPointer::from(&mut *regs));
        assert_eq!(uart.try_read_byte(), Err(nb::Error::WouldBlock));
    }
}
