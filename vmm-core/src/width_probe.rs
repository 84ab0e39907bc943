//! The width probe: a test-only emulated device (`transom.width-probe` on the
//! hypervisor's command line) that shows which width and offset each guest access
//! reached a device with, so a test guest can prove that Transom forwards 8, 16, 32
//! and 64-bit accesses with exactly the guest's width.
//!
//! It takes one page at an IPA nothing else uses in the guest's map
//! ([`place`]), never mapped in stage 2, so every access traps. Naturally aligned
//! 1, 2, 4 and 8-byte reads and writes are answered; any other access is refused
//! (the kernel injects an abort, as for any refused access). The kernel logs one
//! line per access.
//!
//! Register map (offsets in the page):
//!
//! ```text
//! 0x000..0xff0  PATTERN     read:  byte k of an n-byte read at offset o is
//!                                  (n << 4) | ((o + k) & 0xf): the width the probe
//!                                  saw in every byte's high nibble, the offset
//!                                  in the low one (a 4-byte read at 0x4 answers
//!                                  0x4746_4544; four 1-byte reads would answer
//!                                  0x17, 0x16, 0x15, 0x14)
//!                        write: recorded as the last write
//! 0xff0         LAST_WRITE  read:  the last write's value, zero-extended
//! 0xff8         LAST_INFO   read:  the last write's width (bits 63:56) and
//!                                  offset (bits 11:0); 0 before any write
//! ```
//!
//! Writes anywhere (`LAST_WRITE` and `LAST_INFO` included) are recorded, so a guest
//! checks a write by reading the two registers back with 64-bit reads.

use transom_boards::{Granule, PhysRange};

/// The probe's compatible string in a guest's device tree.
pub const COMPATIBLE: &str = "transom,width-probe";

/// The probe's frame: one 4 KiB page (the smallest granule; with a larger one the
/// rest of the granule page is the probe's too, and reads there answer the
/// pattern of the offset's low 12 bits).
pub const FRAME_SIZE: u64 = 0x1000;

/// Register offsets (see the module's map).
pub mod offset {
    /// The last write's value.
    pub const LAST_WRITE: u64 = 0xff0;
    /// The last write's width and offset.
    pub const LAST_INFO: u64 = 0xff8;
}

/// Where `LAST_INFO` holds the width.
pub const INFO_WIDTH_SHIFT: u32 = 56;

/// What one access was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeAccess {
    /// Offset in the frame.
    pub offset: u64,
    /// Width in bytes: 1, 2, 4 or 8.
    pub size: u8,
}

/// Why the probe refuses an access.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProbeRefusal {
    /// Not 1, 2, 4 or 8 bytes, or not naturally aligned.
    Width,
    /// Outside the frame.
    Outside,
}

impl core::fmt::Display for ProbeRefusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeRefusal::Width => f.write_str("not a naturally aligned 1, 2, 4 or 8-byte access"),
            ProbeRefusal::Outside => f.write_str("outside the probe's frame"),
        }
    }
}

/// One partition's probe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WidthProbe {
    last_write: u64,
    last_info: u64,
}

impl WidthProbe {
    /// A probe that has seen no write.
    pub const fn new() -> Self {
        WidthProbe {
            last_write: 0,
            last_info: 0,
        }
    }

    /// Checks an access of `size` bytes at `offset`.
    pub fn check(offset: u64, size: u8) -> Result<ProbeAccess, ProbeRefusal> {
        if offset >= FRAME_SIZE {
            return Err(ProbeRefusal::Outside);
        }
        let natural = matches!(size, 1 | 2 | 4 | 8) && offset.is_multiple_of(u64::from(size));
        if !natural {
            return Err(ProbeRefusal::Width);
        }
        Ok(ProbeAccess { offset, size })
    }

    /// The answer to the read `access` (zero-extended to 64 bits).
    pub fn read(&self, access: ProbeAccess) -> u64 {
        match (access.offset, access.size) {
            (offset::LAST_WRITE, 8) => self.last_write,
            (offset::LAST_INFO, 8) => self.last_info,
            _ => pattern(access),
        }
    }

    /// Records the write `access` of `value` (its low `size` bytes).
    pub fn write(&mut self, access: ProbeAccess, value: u64) {
        let bits = 8 * u32::from(access.size);
        let mask = u64::MAX.checked_shr(64 - bits).unwrap_or(u64::MAX);
        self.last_write = value & mask;
        self.last_info = (u64::from(access.size) << INFO_WIDTH_SHIFT) | access.offset;
    }
}

/// The `PATTERN` answer to `access`: byte k is `(size << 4) | ((offset + k) & 0xf)`.
pub fn pattern(access: ProbeAccess) -> u64 {
    (0..u64::from(access.size)).fold(0, |value, byte| {
        let lane = (u64::from(access.size) << 4) | ((access.offset + byte) & 0xf);
        value | (lane << (8 * byte))
    })
}

/// The probe's IPA for a board whose lowest RAM starts at `ram_start`: the highest
/// granule page below it that holds no byte of `taken` (the board's devices and
/// reserved ranges). Guests see RAM and devices where the machine has them, so the
/// hole below RAM is free in every partition's map. `None` when RAM starts at 0 or
/// no page there is free.
pub fn place(
    granule: Granule,
    ram_start: u64,
    taken: impl Iterator<Item = PhysRange> + Clone,
) -> Option<PhysRange> {
    let page = granule.size();
    let mut start = granule.align_down(ram_start).checked_sub(page)?;
    loop {
        let candidate = PhysRange::new(start, page);
        if !taken.clone().any(|range| range.overlaps(&candidate)) {
            return Some(PhysRange::new(start, FRAME_SIZE));
        }
        start = start.checked_sub(page)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(offset: u64, size: u8) -> ProbeAccess {
        WidthProbe::check(offset, size).expect("a valid access")
    }

    #[test]
    fn reads_answer_their_width_and_offset_in_every_byte() {
        let probe = WidthProbe::new();
        assert_eq!(probe.read(access(0x1, 1)), 0x11);
        assert_eq!(probe.read(access(0x2, 2)), 0x2322);
        assert_eq!(probe.read(access(0x4, 4)), 0x4746_4544);
        assert_eq!(probe.read(access(0x8, 8)), 0x8f8e_8d8c_8b8a_8988);
        // The low nibble wraps every 16 bytes.
        assert_eq!(probe.read(access(0x1c, 4)), 0x4f4e_4d4c);
    }

    #[test]
    fn only_naturally_aligned_power_of_two_widths_in_the_frame() {
        assert_eq!(WidthProbe::check(0x3, 2), Err(ProbeRefusal::Width));
        assert_eq!(WidthProbe::check(0x4, 8), Err(ProbeRefusal::Width));
        assert_eq!(WidthProbe::check(0x0, 3), Err(ProbeRefusal::Width));
        assert_eq!(WidthProbe::check(0x0, 16), Err(ProbeRefusal::Width));
        assert_eq!(WidthProbe::check(0x1000, 1), Err(ProbeRefusal::Outside));
        assert_eq!(
            WidthProbe::check(0xff8, 8),
            Ok(ProbeAccess {
                offset: 0xff8,
                size: 8
            })
        );
    }

    #[test]
    fn the_last_write_reads_back_with_its_width_and_offset() {
        let mut probe = WidthProbe::new();
        assert_eq!(probe.read(access(offset::LAST_INFO, 8)), 0);
        probe.write(access(0x6, 2), 0xffff_1234);
        assert_eq!(probe.read(access(offset::LAST_WRITE, 8)), 0x1234);
        assert_eq!(probe.read(access(offset::LAST_INFO, 8)), 2 << 56 | 0x6);
        probe.write(access(0x10, 8), 0x0123_4567_89ab_cdef);
        assert_eq!(
            probe.read(access(offset::LAST_WRITE, 8)),
            0x0123_4567_89ab_cdef
        );
        assert_eq!(probe.read(access(offset::LAST_INFO, 8)), 8 << 56 | 0x10);
        // Narrower reads of the two registers answer the pattern.
        assert_eq!(probe.read(access(offset::LAST_INFO, 4)), 0x4b4a_4948);
    }

    /// QEMU `virt`: RAM from 0x4000_0000, the PCIe PIO window ends at 0x3f00_0000.
    #[test]
    fn placed_in_the_highest_free_page_below_ram() {
        let devices = [
            PhysRange::new(0x3eff_0000, 0x1_0000),
            PhysRange::new(0x0900_0000, 0x1000),
        ];
        assert_eq!(
            place(Granule::Size4KiB, 0x4000_0000, devices.iter().copied()),
            Some(PhysRange::new(0x3fff_f000, FRAME_SIZE))
        );
        let busy = [PhysRange::new(0x3fff_f000, 0x1000)];
        assert_eq!(
            place(Granule::Size4KiB, 0x4000_0000, busy.iter().copied()),
            Some(PhysRange::new(0x3fff_e000, FRAME_SIZE))
        );
        assert_eq!(
            place(Granule::Size64KiB, 0x4000_0000, busy.iter().copied()),
            Some(PhysRange::new(0x3ffe_0000, FRAME_SIZE))
        );
        // RAM from 0 (the Pi): no room below it.
        assert_eq!(place(Granule::Size4KiB, 0, devices.iter().copied()), None);
    }
}
