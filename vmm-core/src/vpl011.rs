//! A virtual PL011 for partitions without a UART of their own: enough of the
//! register file (Arm PrimeCell UART (PL011) TRM, DDI 0183, 3.2 "Summary of
//! registers") for Linux's `amba-pl011` driver and for bare-metal guests to write
//! text, which the hypervisor prints line by line under the partition's name.
//!
//! Transmit is always ready (`UARTFR.TXFE` set, `TXFF` clear); receive is always
//! empty (`RXFE` set). Interrupts never fire: the raw status reads as none pending.

/// Bytes a line may hold before it is printed anyway.
pub const LINE_CAPACITY: usize = 120;

/// The PL011's own register frame: 4 KiB, the ID registers in its last 32 bytes.
pub const FRAME_SIZE: u64 = 0x1000;

/// The ID registers take the last 32 bytes of the frame.
const ID_BYTES: u64 = 0x20;

/// Register offsets (DDI 0183, "Summary of registers").
mod offset {
    pub const DR: u64 = 0x000;
    pub const RSR: u64 = 0x004;
    pub const FR: u64 = 0x018;
    pub const ILPR: u64 = 0x020;
    pub const IBRD: u64 = 0x024;
    pub const FBRD: u64 = 0x028;
    pub const LCR_H: u64 = 0x02c;
    pub const CR: u64 = 0x030;
    pub const IFLS: u64 = 0x034;
    pub const IMSC: u64 = 0x038;
    pub const RIS: u64 = 0x03c;
    pub const MIS: u64 = 0x040;
    pub const ICR: u64 = 0x044;
    pub const DMACR: u64 = 0x048;
}

/// `UARTFR`: receive FIFO empty (bit 4) and transmit FIFO empty (bit 7).
const FR_RXFE: u32 = 1 << 4;
const FR_TXFE: u32 = 1 << 7;

/// `UARTPeriphID0..3`, `UARTPCellID0..3` (DDI 0183): part 0x011,
/// designer Arm (0x41), revision r1p5 (3), PrimeCell cell ID 0xB105F00D.
const ID_REGISTERS: [u32; 8] = [0x11, 0x10, 0x34, 0x00, 0x0d, 0xf0, 0x05, 0xb1];

/// `UARTCR` at reset: TXE and RXE set (DDI 0183, `UARTCR`).
const CR_RESET: u32 = 0x300;
/// `UARTIFLS` at reset: both FIFOs at half (DDI 0183, `UARTIFLS`).
const IFLS_RESET: u32 = 0x12;

/// One virtual PL011.
#[derive(Clone, Debug)]
pub struct VirtualPl011 {
    frame_size: u64,
    line: heapless::Vec<u8, LINE_CAPACITY>,
    ibrd: u32,
    fbrd: u32,
    lcr_h: u32,
    cr: u32,
    ifls: u32,
    imsc: u32,
    dmacr: u32,
    ilpr: u32,
}

impl Default for VirtualPl011 {
    fn default() -> Self {
        VirtualPl011::new(FRAME_SIZE)
    }
}

impl VirtualPl011 {
    /// A UART in its reset state, in a frame of `frame_size` bytes (4 KiB for a
    /// real PL011; a smaller one where the board has less room). Its ID registers
    /// are the frame's last 32 bytes, where Linux's AMBA bus reads them
    /// (`amba_read_periphid`: `size - 0x20`).
    pub const fn new(frame_size: u64) -> Self {
        VirtualPl011 {
            frame_size,
            line: heapless::Vec::new(),
            ibrd: 0,
            fbrd: 0,
            lcr_h: 0,
            cr: CR_RESET,
            ifls: IFLS_RESET,
            imsc: 0,
            dmacr: 0,
            ilpr: 0,
        }
    }

    /// A read of the register at `offset`. Reserved and write-only offsets read as
    /// zero.
    pub fn read(&self, offset: u64) -> u32 {
        match offset {
            offset::FR => FR_RXFE | FR_TXFE,
            offset::ILPR => self.ilpr,
            offset::IBRD => self.ibrd,
            offset::FBRD => self.fbrd,
            offset::LCR_H => self.lcr_h,
            offset::CR => self.cr,
            offset::IFLS => self.ifls,
            offset::IMSC => self.imsc,
            offset::DMACR => self.dmacr,
            // DR (nothing received), RSR (no errors), RIS/MIS (nothing pending).
            offset::DR | offset::RSR | offset::RIS | offset::MIS => 0,
            id if (self.frame_size.saturating_sub(ID_BYTES)..self.frame_size).contains(&id)
                && id.is_multiple_of(4) =>
            {
                ID_REGISTERS[((id - self.frame_size.saturating_sub(ID_BYTES)) / 4) as usize]
            }
            _ => 0,
        }
    }

    /// A write of `value` to the register at `offset`. Hands `emit` a complete
    /// line when a newline arrives or the line is full; carriage returns are
    /// dropped.
    pub fn write(&mut self, offset: u64, value: u32, emit: impl FnOnce(&[u8])) {
        match offset {
            offset::DR => self.transmit(value as u8, emit),
            offset::ILPR => self.ilpr = value & 0xff,
            offset::IBRD => self.ibrd = value & 0xffff,
            offset::FBRD => self.fbrd = value & 0x3f,
            offset::LCR_H => self.lcr_h = value & 0xff,
            offset::CR => self.cr = value & 0xff87,
            offset::IFLS => self.ifls = value & 0x3f,
            offset::IMSC => self.imsc = value & 0x7ff,
            offset::DMACR => self.dmacr = value & 0x7,
            // ICR clears interrupts that never fire; RSR writes clear errors that
            // never happen.
            offset::ICR | offset::RSR => {}
            // Read-only or reserved.
            _ => {}
        }
    }

    /// Whatever is buffered, for a partition that stops mid-line.
    pub fn flush(&mut self, emit: impl FnOnce(&[u8])) {
        if !self.line.is_empty() {
            emit(&self.line);
            self.line.clear();
        }
    }

    fn transmit(&mut self, byte: u8, emit: impl FnOnce(&[u8])) {
        match byte {
            b'\r' => {}
            b'\n' => {
                emit(&self.line);
                self.line.clear();
            }
            _ => {
                if self.line.push(byte).is_err() {
                    emit(&self.line);
                    self.line.clear();
                    // Cannot fail: the line was just emptied.
                    let _ = self.line.push(byte);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use std::string::String;
    use std::vec::Vec;

    use super::*;

    fn collect(uart: &mut VirtualPl011, text: &str) -> Vec<String> {
        let mut lines = Vec::new();
        for byte in text.bytes() {
            uart.write(offset::DR, u32::from(byte), |line| {
                lines.push(String::from_utf8_lossy(line).into_owned())
            });
        }
        lines
    }

    #[test]
    fn text_comes_out_a_line_at_a_time() {
        let mut uart = VirtualPl011::new(FRAME_SIZE);
        assert_eq!(collect(&mut uart, "hello\r\nwor"), ["hello"]);
        assert_eq!(collect(&mut uart, "ld\n"), ["world"]);
        let mut flushed = Vec::new();
        collect(&mut uart, "tail");
        uart.flush(|line| flushed.push(String::from_utf8_lossy(line).into_owned()));
        assert_eq!(flushed, ["tail"]);
    }

    #[test]
    fn a_long_line_is_split_at_the_capacity() {
        let mut uart = VirtualPl011::new(FRAME_SIZE);
        let text: String = "x".repeat(LINE_CAPACITY + 5);
        let lines = collect(&mut uart, &text);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0].len(), LINE_CAPACITY);
    }

    /// DDI 0183 `UARTFR`: TXFE and RXFE set means "can send, nothing to receive",
    /// which is what drivers poll before writing UARTDR.
    #[test]
    fn flags_say_ready_to_send_and_nothing_received() {
        let uart = VirtualPl011::new(FRAME_SIZE);
        assert_eq!(uart.read(offset::FR), 0x90);
        assert_eq!(uart.read(offset::DR), 0);
        assert_eq!(uart.read(offset::CR), 0x300);
    }

    #[test]
    fn control_registers_keep_what_is_written() {
        let mut uart = VirtualPl011::new(FRAME_SIZE);
        uart.write(offset::IBRD, 13, |_| {});
        uart.write(offset::FBRD, 1, |_| {});
        uart.write(offset::LCR_H, 0x70, |_| {});
        uart.write(offset::CR, 0x301, |_| {});
        uart.write(offset::IMSC, 0x50, |_| {});
        assert_eq!(uart.read(offset::IBRD), 13);
        assert_eq!(uart.read(offset::FBRD), 1);
        assert_eq!(uart.read(offset::LCR_H), 0x70);
        assert_eq!(uart.read(offset::CR), 0x301);
        assert_eq!(uart.read(offset::IMSC), 0x50);
        // Nothing is ever pending.
        assert_eq!(uart.read(offset::MIS), 0);
    }

    /// Linux's AMBA bus reads the PrimeCell ID registers to bind `amba-pl011`:
    /// PeriphID0/1 give part number 0x011, PCellID0..3 the 0xB105F00D cell ID.
    #[test]
    fn identifies_as_a_pl011_primecell() {
        let uart = VirtualPl011::new(FRAME_SIZE);
        let ids: Vec<u32> = (0..8).map(|i| uart.read(0xfe0 + 4 * i)).collect();
        assert_eq!(ids, ID_REGISTERS);
        let part = (ids[1] & 0xf) << 8 | ids[0];
        assert_eq!(part, 0x011);
        let cell = ids[4] | ids[5] << 8 | ids[6] << 16 | ids[7] << 24;
        assert_eq!(cell, 0xb105_f00d);
        // In a 0x200-byte frame (the Pi's UART0 slot) they move to 0x1e0.
        let small = VirtualPl011::new(0x200);
        assert_eq!(small.read(0x1e0), 0x11);
        assert_eq!(small.read(0xfe0), 0);
    }
}
