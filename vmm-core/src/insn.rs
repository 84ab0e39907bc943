//! Naming the A64 load or store behind a data abort that carries no instruction
//! syndrome (`ESR_EL2.ISS.ISV` = 0), so the log line says which instruction the
//! guest used. Transom does not emulate these (a pair, a writeback, an atomic...);
//! it injects an abort, and the name tells the guest's author what to change.
//!
//! Classes from the Arm ARM's A64 encoding index, C4.1.66 "Loads and Stores"; the
//! masks below test the fields that table decodes (bits 31:21 and 11:10).

use core::fmt;

/// What kind of load or store an instruction is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadStore {
    /// `LDP`/`STP`/`LDNP`/`STNP`/`LDPSW`: two registers (C4.1.66 "Load/store
    /// register pair"); `writeback` for the pre- and post-indexed forms.
    Pair {
        /// Whether the base register is written back.
        writeback: bool,
    },
    /// `LDR`/`STR` (and sized variants) with a pre- or post-indexed immediate:
    /// the base register is written back.
    Writeback,
    /// Exclusive or ordered (`LDXR`, `STXR`, `LDAR`, `STLR`, ...).
    ExclusiveOrOrdered,
    /// An atomic memory operation (`LDADD`, `SWP`, `CAS`, ...).
    Atomic,
    /// `LD1`..`LD4`/`ST1`..`ST4`: SIMD structures.
    SimdStructure,
    /// One SIMD&FP register (`LDR Qn`, `STR Dn`, ...).
    SimdRegister,
    /// One general register without writeback (these normally have a syndrome).
    Register,
    /// Not a load or store.
    Other,
}

impl LoadStore {
    /// Classifies the A64 instruction `word`.
    pub fn of(word: u32) -> LoadStore {
        let simd = word & (1 << 26) != 0;
        if word & 0x3a00_0000 == 0x2800_0000 {
            // bits 29:27 = 101, bit 25 = 0; bits 24:23: 01 post-index, 11 pre-index.
            let index = (word >> 23) & 0b11;
            return LoadStore::Pair {
                writeback: index == 0b01 || index == 0b11,
            };
        }
        if word & 0x3f00_0000 == 0x0800_0000 {
            return LoadStore::ExclusiveOrOrdered;
        }
        if word & 0xbf00_0000 == 0x0c00_0000 {
            return LoadStore::SimdStructure;
        }
        let single = match word & 0x3b00_0000 {
            // bits 29:27 = 111, 25:24 = 00: immediate, register-offset or atomic forms.
            0x3800_0000 => {
                let bit21 = word & (1 << 21) != 0;
                let op4 = (word >> 10) & 0b11;
                match (bit21, op4) {
                    (false, 0b01 | 0b11) => return LoadStore::Writeback,
                    (true, 0b00) => return LoadStore::Atomic,
                    _ => true,
                }
            }
            // bits 25:24 = 01: unsigned immediate offset.
            0x3900_0000 => true,
            _ => false,
        };
        match (single, simd) {
            (true, true) => LoadStore::SimdRegister,
            (true, false) => LoadStore::Register,
            _ => LoadStore::Other,
        }
    }
}

impl fmt::Display for LoadStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LoadStore::Pair { writeback: true } => {
                "a load/store pair with writeback (LDP/STP pre/post-index)"
            }
            LoadStore::Pair { writeback: false } => "a load/store pair (LDP/STP)",
            LoadStore::Writeback => "a load/store with writeback (pre/post-index)",
            LoadStore::ExclusiveOrOrdered => {
                "an exclusive or ordered load/store (LDXR/STXR/LDAR/STLR)"
            }
            LoadStore::Atomic => "an atomic memory operation (LDADD/SWP/CAS)",
            LoadStore::SimdStructure => "a SIMD structure load/store (LD1-LD4/ST1-ST4)",
            LoadStore::SimdRegister => "a SIMD&FP register load/store",
            LoadStore::Register => "a single-register load/store",
            LoadStore::Other => "not a load or store",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encodings from `llvm-mc -triple=aarch64 -mattr=+lse -show-encoding`.
    #[test]
    fn each_class_is_named() {
        let cases = [
            (0xa940_0440, LoadStore::Pair { writeback: false }), // ldp x0, x1, [x2]
            (0x2981_10a3, LoadStore::Pair { writeback: true }),  // stp w3, w4, [x5, #8]!
            (0xf840_8420, LoadStore::Writeback),                 // ldr x0, [x1], #8
            (0xb800_4c20, LoadStore::Writeback),                 // str w0, [x1, #4]!
            (0xb940_0020, LoadStore::Register),                  // ldr w0, [x1]
            (0xb85f_c020, LoadStore::Register),                  // ldur w0, [x1, #-4]
            (0xb862_6820, LoadStore::Register),                  // ldr w0, [x1, x2]
            (0x3dc0_0020, LoadStore::SimdRegister),              // ldr q0, [x1]
            (0xc85f_7c20, LoadStore::ExclusiveOrOrdered),        // ldxr x0, [x1]
            (0x889f_fc20, LoadStore::ExclusiveOrOrdered),        // stlr w0, [x1]
            (0xb820_0041, LoadStore::Atomic),                    // ldadd w0, w1, [x2]
            (0x4c40_7800, LoadStore::SimdStructure),             // ld1 {v0.4s}, [x0]
            (0x8b02_0020, LoadStore::Other),                     // add x0, x1, x2
        ];
        for (word, class) in cases {
            assert_eq!(LoadStore::of(word), class, "{word:#010x}");
        }
    }
}
