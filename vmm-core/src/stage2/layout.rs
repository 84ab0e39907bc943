//! The shape of a stage-2 translation: page and level sizes of each granule, the
//! IPA size, the starting level and root concatenation, and the `VTCR_EL2` value
//! that describes them to the hardware.
//!
//! References are to the Arm Architecture Reference Manual for A-profile (DDI 0487
//! K.a): D8.2 "Translation table walk" (levels and granules), D8.2.7 "Concatenated
//! translation tables for the initial stage 2 lookup", and D24.2.209 `VTCR_EL2`.

use transom_boards::Granule;

/// The largest IPA size without FEAT_LPA/LPA2 descriptors (which are not used).
pub const MAX_IPA_BITS: u32 = 48;

/// The smallest IPA size (`ID_AA64MMFR0_EL1.PARange` 0b0000).
pub const MIN_IPA_BITS: u32 = 32;

/// At most 16 tables may be concatenated at the initial lookup level (D8.2.7).
const MAX_CONCATENATED_TABLES: u64 = 16;

/// The leaf level of every granule.
pub const LEAF_LEVEL: u32 = 3;

/// Page and level sizes of a granule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    /// The granule.
    pub granule: Granule,
    /// log2 of the page size: 12, 14 or 16.
    pub page_shift: u32,
    /// Address bits resolved per level (a table has `1 << bits_per_level` 8-byte
    /// entries): 9, 11 or 13.
    pub bits_per_level: u32,
}

impl Geometry {
    /// The geometry of `granule` (D8.2: 4 KiB tables hold 512 entries, 16 KiB 2048,
    /// 64 KiB 8192).
    pub const fn of(granule: Granule) -> Geometry {
        let page_shift = match granule {
            Granule::Size4KiB => 12,
            Granule::Size16KiB => 14,
            Granule::Size64KiB => 16,
        };
        Geometry {
            granule,
            page_shift,
            bits_per_level: page_shift - 3,
        }
    }

    /// Bytes in one table (one page).
    pub const fn table_bytes(&self) -> u64 {
        1 << self.page_shift
    }

    /// Entries in one table.
    pub const fn entries(&self) -> usize {
        1 << self.bits_per_level
    }

    /// log2 of the bytes one entry at `level` maps.
    pub const fn level_shift(&self, level: u32) -> u32 {
        self.page_shift + (LEAF_LEVEL - level) * self.bits_per_level
    }

    /// Bytes one entry at `level` maps.
    pub const fn entry_size(&self, level: u32) -> u64 {
        1 << self.level_shift(level)
    }

    /// Whether a block descriptor is allowed at `level` (besides pages at level 3).
    /// Without FEAT_LPA2: 4 KiB granule, 1 GiB blocks at level 1 and 2 MiB at level
    /// 2; 16 KiB, 32 MiB at level 2; 64 KiB, 512 MiB at level 2 (D8.3.1, table
    /// D8-19 note on block descriptors).
    pub const fn block_allowed(&self, level: u32) -> bool {
        match self.granule {
            Granule::Size4KiB => level == 1 || level == 2,
            Granule::Size16KiB | Granule::Size64KiB => level == 2,
        }
    }
}

/// Why a stage-2 layout cannot be set up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LayoutError {
    /// `ID_AA64MMFR0_EL1.PARange` holds a reserved value.
    UnknownPaRange(u64),
    /// The CPU cannot use this granule at stage 2 (`ID_AA64MMFR0_EL1.TGran*_2`).
    GranuleUnsupported(Granule),
}

impl core::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LayoutError::UnknownPaRange(value) => write!(
                f,
                "ID_AA64MMFR0_EL1.PARange holds the reserved value {value:#06b}"
            ),
            LayoutError::GranuleUnsupported(granule) => write!(
                f,
                "this CPU does not support the {} granule at stage 2 (ID_AA64MMFR0_EL1.TGran{}_2)",
                granule.label(),
                granule.size() / 1024
            ),
        }
    }
}

/// Whether a CPU whose `ID_AA64MMFR0_EL1` reads `mmfr0` can translate stage 2 with
/// `granule` (Arm ARM D24.2.82 `ID_AA64MMFR0_EL1`). `TGran4_2` (bits 43:40),
/// `TGran64_2` (39:36) and `TGran16_2` (35:32): 0b0000 means "as the stage-1 field
/// says", 0b0001 not supported, 0b0010 and 0b0011 supported. The stage-1 fields
/// differ in polarity: `TGran4` (31:28) and `TGran64` (27:24) are 0b0000 (or
/// 0b0001 with LPA2 for `TGran4`) when supported and 0b1111 when not; `TGran16`
/// (23:20) is 0b0000 when *not* supported and 0b0001 or 0b0010 when it is.
pub const fn granule_supported(mmfr0: u64, granule: Granule) -> bool {
    let (stage2_shift, stage1_shift) = match granule {
        Granule::Size4KiB => (40, 28),
        Granule::Size16KiB => (32, 20),
        Granule::Size64KiB => (36, 24),
    };
    let stage2 = (mmfr0 >> stage2_shift) & 0xf;
    let stage1 = (mmfr0 >> stage1_shift) & 0xf;
    match stage2 {
        0b0000 => match granule {
            Granule::Size4KiB => stage1 == 0b0000 || stage1 == 0b0001,
            Granule::Size16KiB => stage1 == 0b0001 || stage1 == 0b0010,
            Granule::Size64KiB => stage1 == 0b0000,
        },
        0b0010 | 0b0011 => true,
        _ => false,
    }
}

/// The shape of one stage-2 translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stage2Layout {
    /// Granule geometry.
    pub geometry: Geometry,
    /// IPA bits translated (`64 - T0SZ`).
    pub ipa_bits: u32,
    /// The level of the first lookup.
    pub start_level: u32,
    /// Tables concatenated at the first level (1 to 16), contiguous and aligned to
    /// their total size.
    pub root_tables: u64,
}

/// The physical address size `ID_AA64MMFR0_EL1.PARange` encodes (D19.2.64):
/// 0b0000 32 bits, 0b0001 36, 0b0010 40, 0b0011 42, 0b0100 44, 0b0101 48, 0b0110 52.
pub const fn pa_range_bits(pa_range: u64) -> Result<u32, LayoutError> {
    match pa_range {
        0b0000 => Ok(32),
        0b0001 => Ok(36),
        0b0010 => Ok(40),
        0b0011 => Ok(42),
        0b0100 => Ok(44),
        0b0101 => Ok(48),
        0b0110 => Ok(52),
        other => Err(LayoutError::UnknownPaRange(other)),
    }
}

/// `VTCR_EL2.PS` for an IPA/PA size: the inverse of [`pa_range_bits`].
const fn ps_field(bits: u32) -> u64 {
    match bits {
        0..=32 => 0b000,
        33..=36 => 0b001,
        37..=40 => 0b010,
        41..=42 => 0b011,
        43..=44 => 0b100,
        _ => 0b101,
    }
}

impl Stage2Layout {
    /// The layout for `granule` on a CPU whose `ID_AA64MMFR0_EL1.PARange` is
    /// `pa_range`: the IPA space is as large as the physical one (capped at 48
    /// bits), since guest RAM and devices are mapped at their physical addresses,
    /// and the walk starts at the lowest level that, with up to 16 concatenated
    /// tables, covers it (fewer levels, shorter walks, as Linux's KVM chooses).
    pub const fn new(granule: Granule, pa_range: u64) -> Result<Stage2Layout, LayoutError> {
        let pa_bits = match pa_range_bits(pa_range) {
            Ok(bits) => bits,
            Err(error) => return Err(error),
        };
        let ipa_bits = if pa_bits > MAX_IPA_BITS {
            MAX_IPA_BITS
        } else {
            pa_bits
        };
        Ok(Stage2Layout::with_ipa_bits(granule, ipa_bits))
    }

    /// The layout for `granule` on a CPU whose `ID_AA64MMFR0_EL1` reads `mmfr0`:
    /// refuses a granule the CPU cannot use at stage 2, then as [`Stage2Layout::new`]
    /// with `PARange` (bits 3:0).
    pub const fn for_cpu(granule: Granule, mmfr0: u64) -> Result<Stage2Layout, LayoutError> {
        if !granule_supported(mmfr0, granule) {
            return Err(LayoutError::GranuleUnsupported(granule));
        }
        Stage2Layout::new(granule, mmfr0 & 0xf)
    }

    /// The layout for an IPA size of `ipa_bits` (32..=48).
    pub const fn with_ipa_bits(granule: Granule, ipa_bits: u32) -> Stage2Layout {
        let geometry = Geometry::of(granule);
        // Bits the levels must resolve beyond the page offset, less the 4 bits that
        // up to 16 concatenated root tables resolve.
        let table_bits = ipa_bits - geometry.page_shift;
        let bits_without_concatenation = table_bits.saturating_sub(4);
        let levels = bits_without_concatenation.div_ceil(geometry.bits_per_level);
        let levels = if levels == 0 { 1 } else { levels };
        let start_level = LEAF_LEVEL + 1 - levels;
        let covered_by_one_table = geometry.level_shift(start_level) + geometry.bits_per_level;
        let root_tables = if ipa_bits > covered_by_one_table {
            1 << (ipa_bits - covered_by_one_table)
        } else {
            1
        };
        assert!(root_tables <= MAX_CONCATENATED_TABLES);
        Stage2Layout {
            geometry,
            ipa_bits,
            start_level,
            root_tables,
        }
    }

    /// Bytes of the (concatenated) root table.
    pub const fn root_bytes(&self) -> u64 {
        self.root_tables * self.geometry.table_bytes()
    }

    /// Entries of the (concatenated) root table.
    pub const fn root_entries(&self) -> usize {
        self.root_tables as usize * self.geometry.entries()
    }

    /// One past the highest IPA.
    pub const fn ipa_limit(&self) -> u64 {
        1 << self.ipa_bits
    }

    /// `VTCR_EL2.SL0` for the start level (D24.2.209): with 4 KiB pages 0b00 starts
    /// at level 2, 0b01 level 1, 0b10 level 0; with 16 KiB and 64 KiB pages 0b00
    /// starts at level 3, 0b01 level 2, 0b10 level 1.
    pub const fn sl0(&self) -> u64 {
        match self.geometry.granule {
            Granule::Size4KiB => 2 - self.start_level as u64,
            Granule::Size16KiB | Granule::Size64KiB => 3 - self.start_level as u64,
        }
    }

    /// `VTCR_EL2.TG0` (D24.2.209): 0b00 4 KiB, 0b01 64 KiB, 0b10 16 KiB.
    pub const fn tg0(&self) -> u64 {
        match self.geometry.granule {
            Granule::Size4KiB => 0b00,
            Granule::Size64KiB => 0b01,
            Granule::Size16KiB => 0b10,
        }
    }

    /// The `VTCR_EL2` value for this layout: T0SZ, SL0, table walks inner and
    /// outer write-back read/write-allocate and inner shareable, TG0, PS, 8-bit VMIDs,
    /// and RES1 bit 31.
    pub const fn vtcr(&self) -> u64 {
        const T0SZ_SHIFT: u64 = 0;
        const SL0_SHIFT: u64 = 6;
        const IRGN0_SHIFT: u64 = 8;
        const ORGN0_SHIFT: u64 = 10;
        const SH0_SHIFT: u64 = 12;
        const TG0_SHIFT: u64 = 14;
        const PS_SHIFT: u64 = 16;
        const RES1: u64 = 1 << 31;
        const WRITE_BACK_ALLOCATE: u64 = 0b01;
        const INNER_SHAREABLE: u64 = 0b11;
        let t0sz = 64 - self.ipa_bits as u64;
        RES1 | (t0sz << T0SZ_SHIFT)
            | (self.sl0() << SL0_SHIFT)
            | (WRITE_BACK_ALLOCATE << IRGN0_SHIFT)
            | (WRITE_BACK_ALLOCATE << ORGN0_SHIFT)
            | (INNER_SHAREABLE << SH0_SHIFT)
            | (self.tg0() << TG0_SHIFT)
            | (ps_field(self.ipa_bits) << PS_SHIFT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Cortex-A72 MPCore TRM (Arm 100095), `ID_AA64MMFR0_EL1`, and QEMU's
    /// `aarch64_a72_initfn` (target/arm/cpu64.c): 0x1124, so
    /// 4K and 64K granules (TGran4 = TGran64 = 0b0000), no 16K (TGran16 = 0b0000),
    /// no TGran*_2 fields (pre-v8.5), 44-bit PA.
    const CORTEX_A72_MMFR0: u64 = 0x0000_0000_0000_1124;

    #[test]
    fn cortex_a72_has_no_16k_granule_at_stage_2() {
        assert!(granule_supported(CORTEX_A72_MMFR0, Granule::Size4KiB));
        assert!(granule_supported(CORTEX_A72_MMFR0, Granule::Size64KiB));
        assert!(!granule_supported(CORTEX_A72_MMFR0, Granule::Size16KiB));
        assert_eq!(
            Stage2Layout::for_cpu(Granule::Size16KiB, CORTEX_A72_MMFR0),
            Err(LayoutError::GranuleUnsupported(Granule::Size16KiB))
        );
        let layout = Stage2Layout::for_cpu(Granule::Size64KiB, CORTEX_A72_MMFR0).expect("64K");
        assert_eq!(layout.ipa_bits, 44);
    }

    /// D24.2.82: a TGran*_2 field other than 0b0000 overrides the stage-1 field.
    #[test]
    fn stage_2_fields_override_the_stage_1_fields() {
        // TGran16 = 0b0001 (supported at stage 1) but TGran16_2 = 0b0001 (not at
        // stage 2).
        let stage1_only = (0b0001 << 20) | (0b0001 << 32) | 0b0101;
        assert!(!granule_supported(stage1_only, Granule::Size16KiB));
        // TGran64 = 0b1111 (not at stage 1) but TGran64_2 = 0b0010 (stage 2 only).
        let stage2_only = (0b1111 << 24) | (0b0010 << 36) | 0b0101;
        assert!(granule_supported(stage2_only, Granule::Size64KiB));
        // TGran4 = 0b1111 and TGran4_2 = 0b0000: not supported anywhere.
        assert!(!granule_supported(0b1111 << 28, Granule::Size4KiB));
        // TGran4_2 = 0b0011: supported with 52-bit addresses.
        assert!(granule_supported(
            (0b1111 << 28) | (0b0011 << 40),
            Granule::Size4KiB
        ));
        // TGran16 = 0b0010 (LPA2) with TGran16_2 = 0b0000: supported.
        assert!(granule_supported(0b0010 << 20, Granule::Size16KiB));
    }

    #[test]
    fn layout_errors_name_the_register_field() {
        let text = alloc::format!("{}", LayoutError::GranuleUnsupported(Granule::Size16KiB));
        assert!(
            text.contains("16 KiB") && text.contains("TGran16_2"),
            "{text}"
        );
        let text = alloc::format!("{}", LayoutError::UnknownPaRange(0b1001));
        assert!(
            text.contains("PARange") && text.contains("0b1001"),
            "{text}"
        );
    }

    /// D8.2: entries per table and the size each level maps.
    #[test]
    fn level_sizes_per_granule() {
        let four = Geometry::of(Granule::Size4KiB);
        assert_eq!(four.entries(), 512);
        assert_eq!(four.entry_size(3), 4 << 10);
        assert_eq!(four.entry_size(2), 2 << 20);
        assert_eq!(four.entry_size(1), 1 << 30);
        let sixteen = Geometry::of(Granule::Size16KiB);
        assert_eq!(sixteen.entries(), 2048);
        assert_eq!(sixteen.entry_size(2), 32 << 20);
        let sixty_four = Geometry::of(Granule::Size64KiB);
        assert_eq!(sixty_four.entries(), 8192);
        assert_eq!(sixty_four.entry_size(2), 512 << 20);
        assert!(four.block_allowed(1) && four.block_allowed(2));
        assert!(!sixteen.block_allowed(1) && sixteen.block_allowed(2));
        assert!(!sixty_four.block_allowed(1) && sixty_four.block_allowed(2));
    }

    /// D8.2.7 and Linux's KVM: a 40-bit IPA with 4 KiB pages starts at level 1 with
    /// two concatenated tables (T0SZ 24, SL0 0b01).
    #[test]
    fn forty_bit_ipa_with_4k_pages() {
        let layout = Stage2Layout::new(Granule::Size4KiB, 0b0010).expect("40 bits");
        assert_eq!(layout.ipa_bits, 40);
        assert_eq!((layout.start_level, layout.root_tables), (1, 2));
        let vtcr = layout.vtcr();
        assert_eq!(vtcr & 0x3f, 24, "T0SZ");
        assert_eq!((vtcr >> 6) & 0b11, 0b01, "SL0");
        assert_eq!((vtcr >> 14) & 0b11, 0b00, "TG0");
        assert_eq!((vtcr >> 16) & 0b111, 0b010, "PS");
        assert_eq!((vtcr >> 8) & 0b11, 0b01, "IRGN0");
        assert_eq!((vtcr >> 10) & 0b11, 0b01, "ORGN0");
        assert_eq!((vtcr >> 12) & 0b11, 0b11, "SH0");
        assert_eq!(vtcr >> 31, 1, "RES1");
    }

    /// QEMU's cortex-a72 reports PARange 0b0100 (44 bits).
    #[test]
    fn forty_four_bit_ipa_per_granule() {
        let four = Stage2Layout::new(Granule::Size4KiB, 0b0100).expect("44 bits");
        assert_eq!(
            (four.start_level, four.root_tables, four.sl0()),
            (0, 1, 0b10)
        );
        let sixteen = Stage2Layout::new(Granule::Size16KiB, 0b0100).expect("44 bits");
        assert_eq!(
            (
                sixteen.start_level,
                sixteen.root_tables,
                sixteen.sl0(),
                sixteen.tg0()
            ),
            (1, 1, 0b10, 0b10)
        );
        let sixty_four = Stage2Layout::new(Granule::Size64KiB, 0b0100).expect("44 bits");
        // Level 2 resolves bits 29..42; 4 tables cover 44 bits.
        assert_eq!(
            (
                sixty_four.start_level,
                sixty_four.root_tables,
                sixty_four.sl0(),
                sixty_four.tg0()
            ),
            (2, 4, 0b01, 0b01)
        );
        assert_eq!(sixty_four.vtcr() & 0x3f, 20, "T0SZ = 64 - 44");
    }

    /// Every PARange and granule gives a layout the hardware accepts: at most 16
    /// concatenated tables, and the levels from the start level down cover exactly
    /// the IPA size.
    #[test]
    fn every_layout_is_consistent() {
        for granule in Granule::ALL {
            for pa_range in 0..=6 {
                let layout = Stage2Layout::new(granule, pa_range).expect("known PARange");
                assert!(layout.ipa_bits <= MAX_IPA_BITS);
                assert!((1..=16).contains(&layout.root_tables));
                let geometry = layout.geometry;
                let covered = geometry.level_shift(layout.start_level)
                    + geometry.bits_per_level
                    + layout.root_tables.trailing_zeros();
                assert!(covered >= layout.ipa_bits, "{granule:?} {pa_range}");
                // Not one level more than needed.
                assert!(
                    covered - layout.ipa_bits < geometry.bits_per_level || layout.root_tables == 1
                );
            }
        }
        assert_eq!(
            Stage2Layout::new(Granule::Size4KiB, 0b0111),
            Err(LayoutError::UnknownPaRange(0b0111))
        );
    }
}
