//! Trapped accesses: whether a guest's stage-2 data abort in a trapped page may be
//! forwarded to the device, and how the register the guest named is read from or
//! written back.
//!
//! The syndrome (`ESR_EL2.ISS` with `ISV` = 1, Arm ARM D24.2.48 "ISS encoding for
//! an exception from a Data Abort") gives the access size (`SAS`), the transfer
//! register (`SRT`, 31 = XZR/WZR), whether a load sign-extends (`SSE`) and whether
//! the register is 64 bits wide (`SF`). The hypervisor forwards with exactly that
//! width and never splits or merges an access.

use core::fmt;

use transom_boards::PhysRange;

use crate::esr::DataAccess;
use crate::stage2::window::TrapWindow;

/// Why a trapped access is refused (the guest gets a synchronous external abort).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// No valid syndrome (`ISV` = 0): a load/store pair, a writeback addressing
    /// mode, or an instruction the syndrome cannot describe.
    NoSyndrome,
    /// The bytes accessed are not all inside one window of the partition.
    OutsideWindows,
    /// The window does not allow accesses of this size.
    Width {
        /// The access size in bytes.
        size: u8,
    },
    /// The access is not aligned to its size and the window forbids that.
    Unaligned {
        /// The access size in bytes.
        size: u8,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NoSyndrome => f.write_str("no instruction syndrome (ISV = 0)"),
            Refusal::OutsideWindows => f.write_str("outside every window of the partition"),
            Refusal::Width { size } => write!(f, "{}-bit access not allowed", size * 8),
            Refusal::Unaligned { size } => write!(f, "unaligned {}-bit access", size * 8),
        }
    }
}

/// Decides whether the access `access` at `ipa` may be forwarded, given the window
/// of the partition whose exact bytes hold `ipa` (if any). The whole access must lie
/// in the window, with a width it allows, aligned unless it allows unaligned ones.
#[inline]
pub fn check(
    window: Option<&TrapWindow>,
    ipa: u64,
    access: Option<DataAccess>,
) -> Result<DataAccess, Refusal> {
    let access = access.ok_or(Refusal::NoSyndrome)?;
    let window = window.ok_or(Refusal::OutsideWindows)?;
    let size = u64::from(access.size);
    let bytes = PhysRange {
        start: ipa,
        end: ipa.checked_add(size).ok_or(Refusal::OutsideWindows)?,
    };
    if !window.range.covers(&bytes) {
        return Err(Refusal::OutsideWindows);
    }
    if !window.access.widths.allows(size) {
        return Err(Refusal::Width { size: access.size });
    }
    // `allows` admits only powers of two, so alignment is a mask test.
    let misaligned = ipa & (size - 1) != 0;
    if !window.access.unaligned && misaligned {
        return Err(Refusal::Unaligned { size: access.size });
    }
    Ok(access)
}

/// The value a store writes: the low `size` bytes of the transfer register, zero
/// for XZR/WZR (register 31 in a load/store is the zero register, Arm ARM C1.2.5).
#[inline]
pub fn store_value(access: &DataAccess, registers: &[u64; 31]) -> u64 {
    let value = registers
        .get(usize::from(access.register))
        .copied()
        .unwrap_or(0);
    value & size_mask(access.size)
}

/// The register value after a load of `raw` (whose low `size` bytes were read):
/// sign-extended to the register's width if `SSE`, zero-extended otherwise; a
/// 32-bit register's upper half is zero (Arm ARM C6.2: writes to a W register clear
/// bits 63:32). `None` for XZR: the value is discarded.
#[inline]
pub fn load_result(access: &DataAccess, raw: u64) -> Option<u64> {
    (access.register != 31).then(|| loaded_value(access, raw))
}

/// [`load_result`] for a register known not to be XZR.
#[inline]
pub fn loaded_value(access: &DataAccess, raw: u64) -> u64 {
    // The bits above the access: shifted out and back in, with the sign (`SSE`)
    // or with zeros.
    let above = 64u32.saturating_sub(u32::from(access.size) * 8);
    let top = raw << above;
    let extended = if access.sign_extend {
        ((top as i64) >> above) as u64
    } else {
        top >> above
    };
    if access.sixty_four {
        extended
    } else {
        extended & 0xffff_ffff
    }
}

/// [`loaded_value`] for `raw` as a load of exactly the access's size returns it,
/// zero-extended (`LDRB`, `LDRH` and a 32-bit `LDR` clear the bits above, Arm ARM
/// C6.2): only a sign-extending load has anything left to do. The forwarding path
/// reads devices that way.
#[inline]
pub fn zero_extended_load_value(access: &DataAccess, raw: u64) -> u64 {
    if access.sign_extend {
        loaded_value(access, raw)
    } else {
        raw
    }
}

const fn size_mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size as u32 * 8)) - 1
    }
}

#[cfg(test)]
mod tests {
    use transom_boards::{Access, AccessWidths};

    use super::*;

    fn window(start: u64, size: u64, widths: AccessWidths, unaligned: bool) -> TrapWindow {
        TrapWindow {
            device: "virtio",
            range: PhysRange::new(start, size),
            access: Access { widths, unaligned },
        }
    }

    fn load(size: u8, register: u8) -> DataAccess {
        DataAccess {
            size,
            sign_extend: false,
            register,
            sixty_four: false,
            write: false,
        }
    }

    const VIRTIO_WIDTHS: AccessWidths = AccessWidths::W8
        .union(AccessWidths::W16)
        .union(AccessWidths::W32);

    #[test]
    fn an_access_inside_the_window_with_an_allowed_width_is_forwarded() {
        let transport = window(0x0a00_3e00, 0x200, VIRTIO_WIDTHS, false);
        let access = load(4, 3);
        assert_eq!(
            check(Some(&transport), 0x0a00_3e70, Some(access)),
            Ok(access)
        );
        // The last byte of the window.
        let byte = load(1, 3);
        assert_eq!(check(Some(&transport), 0x0a00_3fff, Some(byte)), Ok(byte));
    }

    #[test]
    fn refusals() {
        let transport = window(0x0a00_3e00, 0x200, VIRTIO_WIDTHS, false);
        // ISV = 0 (a load pair, say): nothing to forward with.
        assert_eq!(
            check(Some(&transport), 0x0a00_3e00, None),
            Err(Refusal::NoSyndrome)
        );
        // A neighbour's bytes in the same page: no window.
        assert_eq!(
            check(None, 0x0a00_3c00, Some(load(4, 0))),
            Err(Refusal::OutsideWindows)
        );
        // Straddling the window's end.
        assert_eq!(
            check(Some(&transport), 0x0a00_3ffe, Some(load(4, 0))),
            Err(Refusal::OutsideWindows)
        );
        // 64-bit accesses are not in virtio-mmio's widths (virtio 1.2, 4.2.2:
        // 32-bit registers, with 8/16-bit config space accesses).
        assert_eq!(
            check(Some(&transport), 0x0a00_3e00, Some(load(8, 0))),
            Err(Refusal::Width { size: 8 })
        );
        assert_eq!(
            check(Some(&transport), 0x0a00_3e02, Some(load(4, 0))),
            Err(Refusal::Unaligned { size: 4 })
        );
        let relaxed = window(0x0a00_3e00, 0x200, VIRTIO_WIDTHS, true);
        assert!(check(Some(&relaxed), 0x0a00_3e02, Some(load(4, 0))).is_ok());
    }

    #[test]
    fn stores_take_the_low_bytes_of_the_register_and_xzr_is_zero() {
        let mut registers = [0u64; 31];
        registers[5] = 0x1122_3344_5566_7788;
        let store = |size, register| DataAccess {
            size,
            sign_extend: false,
            register,
            sixty_four: size == 8,
            write: true,
        };
        assert_eq!(store_value(&store(1, 5), &registers), 0x88);
        assert_eq!(store_value(&store(2, 5), &registers), 0x7788);
        assert_eq!(store_value(&store(4, 5), &registers), 0x5566_7788);
        assert_eq!(store_value(&store(8, 5), &registers), 0x1122_3344_5566_7788);
        assert_eq!(store_value(&store(4, 31), &registers), 0);
    }

    /// `LDRSB`/`LDRSH`/`LDRSW` sign-extend to the W or X register (`SSE`, `SF`);
    /// `LDRB`/`LDRH`/`LDR Wt` zero-extend; a load into XZR is discarded.
    #[test]
    fn loads_extend_as_the_syndrome_says() {
        let mut access = load(1, 2);
        assert_eq!(load_result(&access, 0xff), Some(0xff));
        access.sign_extend = true;
        assert_eq!(load_result(&access, 0xff), Some(0xffff_ffff));
        access.sixty_four = true;
        assert_eq!(load_result(&access, 0xff), Some(u64::MAX));
        let halfword = DataAccess {
            size: 2,
            sign_extend: true,
            register: 2,
            sixty_four: true,
            write: false,
        };
        assert_eq!(load_result(&halfword, 0x8000), Some(0xffff_ffff_ffff_8000));
        assert_eq!(load_result(&halfword, 0x7fff), Some(0x7fff));
        let word = DataAccess {
            size: 4,
            sign_extend: true,
            register: 2,
            sixty_four: true,
            write: false,
        };
        assert_eq!(load_result(&word, 0x8000_0000), Some(0xffff_ffff_8000_0000));
        let doubleword = DataAccess {
            size: 8,
            sign_extend: false,
            register: 2,
            sixty_four: true,
            write: false,
        };
        assert_eq!(load_result(&doubleword, u64::MAX), Some(u64::MAX));
        assert_eq!(load_result(&load(4, 31), 0x1234), None);
        // A zero-extended raw value needs work only when the load sign-extends.
        for access in [load(1, 2), halfword, word, doubleword] {
            for raw in [0x7f, 0x80, 0x7fff, 0x8000, 0x8000_0000, u64::MAX] {
                let raw = raw & size_mask(access.size);
                assert_eq!(
                    zero_extended_load_value(&access, raw),
                    loaded_value(&access, raw)
                );
            }
        }
        // Bytes above the access size never leak into the register.
        assert_eq!(load_result(&load(1, 0), 0xabcd), Some(0xcd));
    }
}
