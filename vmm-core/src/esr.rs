//! Decoding of the exception syndrome register (`ESR_EL2`).
//!
//! Field layouts follow the Arm Architecture Reference Manual for A-profile
//! (DDI 0487 K.a), section D24.2.48 "ESR_EL2, Exception Syndrome Register (EL2)"
//! and, for data and instruction aborts, the ISS encodings in D24.2.48 under
//! "ISS encoding for an exception from a Data Abort".

use core::fmt;

/// A bit field `[lsb, lsb + width)` of a 64-bit register.
#[derive(Clone, Copy)]
struct Field {
    lsb: u32,
    width: u32,
}

impl Field {
    const fn new(lsb: u32, width: u32) -> Field {
        Field { lsb, width }
    }

    const fn get(self, value: u64) -> u64 {
        let mask = (1u64 << self.width) - 1;
        (value >> self.lsb) & mask
    }

    const fn is_set(self, value: u64) -> bool {
        self.get(value) != 0
    }
}

/// `ESR_ELx.EC`, bits [31:26].
const EC: Field = Field::new(26, 6);
/// `ESR_ELx.IL`, bit [25]: 32-bit instruction.
const IL: Field = Field::new(25, 1);
/// `ESR_ELx.ISS`, bits [24:0].
const ISS: Field = Field::new(0, 25);

/// Data abort ISS: `ISV`, bit [24], the syndrome fields below are valid.
const DA_ISV: Field = Field::new(24, 1);
/// Data abort ISS: `SAS`, bits [23:22], log2 of the access size.
const DA_SAS: Field = Field::new(22, 2);
/// Data abort ISS: `SSE`, bit [21], the load sign-extends.
const DA_SSE: Field = Field::new(21, 1);
/// Data abort ISS: `SRT`, bits [20:16], the transfer register.
const DA_SRT: Field = Field::new(16, 5);
/// Data abort ISS: `SF`, bit [15], the transfer register is 64 bits wide.
const DA_SF: Field = Field::new(15, 1);
/// Data abort ISS: `WnR`, bit [6], the access was a write.
const DA_WNR: Field = Field::new(6, 1);
/// Data and instruction abort ISS: `S1PTW`, bit [7], fault on a stage-1 table walk.
const ABORT_S1PTW: Field = Field::new(7, 1);
/// Data and instruction abort ISS: `FnV`, bit [10], `FAR` is not valid.
const ABORT_FNV: Field = Field::new(10, 1);
/// Data and instruction abort ISS: `DFSC`/`IFSC`, bits [5:0].
const ABORT_FSC: Field = Field::new(0, 6);

/// The exception class, `ESR_ELx.EC`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExceptionClass {
    /// `0b000000`: unknown reason (for example an undefined instruction).
    Unknown,
    /// `0b000001`: trapped WFI or WFE.
    WfiWfe,
    /// `0b000111`: access to SVE, Advanced SIMD or floating point, trapped by `CPTR_EL2`.
    FpAccess,
    /// `0b001110`: illegal execution state.
    IllegalState,
    /// `0b010101`: SVC in AArch64 state.
    Svc64,
    /// `0b010110`: HVC in AArch64 state.
    Hvc64,
    /// `0b010111`: SMC in AArch64 state.
    Smc64,
    /// `0b011000`: trapped MSR, MRS or system instruction.
    SysReg,
    /// `0b100000`: instruction abort from a lower exception level.
    InstructionAbortLower,
    /// `0b100001`: instruction abort taken without a change of exception level.
    InstructionAbortSame,
    /// `0b100010`: PC alignment fault.
    PcAlignment,
    /// `0b100100`: data abort from a lower exception level.
    DataAbortLower,
    /// `0b100101`: data abort taken without a change of exception level.
    DataAbortSame,
    /// `0b100110`: SP alignment fault.
    SpAlignment,
    /// `0b101111`: SError.
    SError,
    /// `0b111100`: BRK in AArch64 state.
    Brk64,
    /// Any class this decoder does not name.
    Other(u8),
}

impl ExceptionClass {
    /// Decodes the 6-bit `EC` value.
    #[inline]
    pub const fn from_bits(ec: u8) -> ExceptionClass {
        match ec {
            0b00_0000 => ExceptionClass::Unknown,
            0b00_0001 => ExceptionClass::WfiWfe,
            0b00_0111 => ExceptionClass::FpAccess,
            0b00_1110 => ExceptionClass::IllegalState,
            0b01_0101 => ExceptionClass::Svc64,
            0b01_0110 => ExceptionClass::Hvc64,
            0b01_0111 => ExceptionClass::Smc64,
            0b01_1000 => ExceptionClass::SysReg,
            0b10_0000 => ExceptionClass::InstructionAbortLower,
            0b10_0001 => ExceptionClass::InstructionAbortSame,
            0b10_0010 => ExceptionClass::PcAlignment,
            0b10_0100 => ExceptionClass::DataAbortLower,
            0b10_0101 => ExceptionClass::DataAbortSame,
            0b10_0110 => ExceptionClass::SpAlignment,
            0b10_1111 => ExceptionClass::SError,
            0b11_1100 => ExceptionClass::Brk64,
            other => ExceptionClass::Other(other),
        }
    }

    /// A short human name, as the Arm ARM's EC table words it.
    pub const fn name(self) -> &'static str {
        match self {
            ExceptionClass::Unknown => "unknown reason",
            ExceptionClass::WfiWfe => "trapped WFI/WFE",
            ExceptionClass::FpAccess => "trapped FP/SIMD access",
            ExceptionClass::IllegalState => "illegal execution state",
            ExceptionClass::Svc64 => "SVC",
            ExceptionClass::Hvc64 => "HVC",
            ExceptionClass::Smc64 => "SMC",
            ExceptionClass::SysReg => "trapped system register access",
            ExceptionClass::InstructionAbortLower => "instruction abort from a lower EL",
            ExceptionClass::InstructionAbortSame => "instruction abort at the same EL",
            ExceptionClass::PcAlignment => "PC alignment fault",
            ExceptionClass::DataAbortLower => "data abort from a lower EL",
            ExceptionClass::DataAbortSame => "data abort at the same EL",
            ExceptionClass::SpAlignment => "SP alignment fault",
            ExceptionClass::SError => "SError",
            ExceptionClass::Brk64 => "BRK",
            ExceptionClass::Other(_) => "unnamed exception class",
        }
    }

    #[inline]
    const fn is_abort(self) -> bool {
        matches!(
            self,
            ExceptionClass::InstructionAbortLower
                | ExceptionClass::InstructionAbortSame
                | ExceptionClass::DataAbortLower
                | ExceptionClass::DataAbortSame
        )
    }

    #[inline]
    const fn is_data_abort(self) -> bool {
        matches!(
            self,
            ExceptionClass::DataAbortLower | ExceptionClass::DataAbortSame
        )
    }
}

/// The fault status code of an abort (`DFSC` or `IFSC`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultStatus {
    /// `0b0000LL`: address size fault at level LL.
    AddressSize {
        /// Translation table level.
        level: u8,
    },
    /// `0b0001LL`: translation fault at level LL.
    Translation {
        /// Translation table level.
        level: u8,
    },
    /// `0b0010LL`: access flag fault at level LL.
    AccessFlag {
        /// Translation table level.
        level: u8,
    },
    /// `0b0011LL`: permission fault at level LL.
    Permission {
        /// Translation table level.
        level: u8,
    },
    /// `0b010000`: synchronous external abort, not on a table walk.
    SyncExternal,
    /// `0b100001`: alignment fault.
    Alignment,
    /// Any other code.
    Other(u8),
}

impl FaultStatus {
    /// Decodes a 6-bit fault status code.
    #[inline]
    pub const fn from_bits(code: u8) -> FaultStatus {
        let kind = code >> 2;
        let level = code & 0b11;
        match kind {
            0b0000 => FaultStatus::AddressSize { level },
            0b0001 => FaultStatus::Translation { level },
            0b0010 => FaultStatus::AccessFlag { level },
            0b0011 => FaultStatus::Permission { level },
            _ => match code {
                0b01_0000 => FaultStatus::SyncExternal,
                0b10_0001 => FaultStatus::Alignment,
                other => FaultStatus::Other(other),
            },
        }
    }
}

impl fmt::Display for FaultStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FaultStatus::AddressSize { level } => write!(f, "address size fault, level {level}"),
            FaultStatus::Translation { level } => write!(f, "translation fault, level {level}"),
            FaultStatus::AccessFlag { level } => write!(f, "access flag fault, level {level}"),
            FaultStatus::Permission { level } => write!(f, "permission fault, level {level}"),
            FaultStatus::SyncExternal => f.write_str("synchronous external abort"),
            FaultStatus::Alignment => f.write_str("alignment fault"),
            FaultStatus::Other(code) => write!(f, "fault status {code:#08b}"),
        }
    }
}

/// The access a data abort with a valid syndrome (`ISV` = 1) describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DataAccess {
    /// Access size in bytes: 1, 2, 4 or 8.
    pub size: u8,
    /// A load that sign-extends (`SSE`).
    pub sign_extend: bool,
    /// The general register transferred (`SRT`); 31 means XZR.
    pub register: u8,
    /// The register is 64 bits wide (`SF`).
    pub sixty_four: bool,
    /// The access was a write (`WnR`).
    pub write: bool,
}

/// What an abort syndrome says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Abort {
    /// The fault status code.
    pub status: FaultStatus,
    /// The fault happened on a stage-1 translation table walk (`S1PTW`).
    pub on_stage1_walk: bool,
    /// `FAR` holds the faulting address (`FnV` is clear).
    pub far_valid: bool,
    /// The decoded access, for a data abort with `ISV` set.
    pub access: Option<DataAccess>,
}

/// An `ESR_ELx` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Esr(pub u64);

impl Esr {
    /// The exception class.
    #[inline]
    pub const fn class(self) -> ExceptionClass {
        ExceptionClass::from_bits(EC.get(self.0) as u8)
    }

    /// The trapped instruction was 32 bits wide (`IL`).
    pub const fn is_32bit_instruction(self) -> bool {
        IL.is_set(self.0)
    }

    /// The instruction-specific syndrome, `ISS`.
    #[inline]
    pub const fn iss(self) -> u32 {
        ISS.get(self.0) as u32
    }

    /// The abort syndrome, for the instruction and data abort classes.
    #[inline]
    pub const fn abort(self) -> Option<Abort> {
        let class = self.class();
        if !class.is_abort() {
            return None;
        }
        let iss = ISS.get(self.0);
        let access = if class.is_data_abort() && DA_ISV.is_set(iss) {
            Some(DataAccess {
                size: 1 << DA_SAS.get(iss),
                sign_extend: DA_SSE.is_set(iss),
                register: DA_SRT.get(iss) as u8,
                sixty_four: DA_SF.is_set(iss),
                write: DA_WNR.is_set(iss),
            })
        } else {
            None
        };
        Some(Abort {
            status: FaultStatus::from_bits(ABORT_FSC.get(iss) as u8),
            on_stage1_walk: ABORT_S1PTW.is_set(iss),
            far_valid: !ABORT_FNV.is_set(iss),
            access,
        })
    }
}

impl fmt::Display for Esr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let class = self.class();
        write!(f, "{} (EC {:#04x}", class.name(), EC.get(self.0))?;
        let Some(abort) = self.abort() else {
            return write!(f, ", ISS {:#x})", self.iss());
        };
        write!(f, ", {}", abort.status)?;
        if abort.on_stage1_walk {
            f.write_str(", on a stage-1 walk")?;
        }
        if !abort.far_valid {
            f.write_str(", FAR not valid")?;
        }
        match abort.access {
            Some(access) => {
                let direction = if access.write { "write" } else { "read" };
                write!(
                    f,
                    ", {direction} of {} bytes via x{})",
                    access.size, access.register
                )
            }
            None => f.write_str(")"),
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::string::ToString;

    /// A load `ldr x1, [x0]` that misses every stage-1 table at level 1, taken at EL2:
    /// EC = 0x25, IL = 1, ISV = 1, SAS = 0b11 (64-bit), SRT = 1, SF = 1,
    /// WnR = 0, DFSC = 0b000101 (translation fault, level 1).
    const LDR_X1_TRANSLATION_L1: u64 =
        (0x25 << 26) | (1 << 25) | (1 << 24) | (0b11 << 22) | (1 << 16) | (1 << 15) | 0b00_0101;

    #[test]
    fn data_abort_with_valid_syndrome() {
        let esr = Esr(LDR_X1_TRANSLATION_L1);
        assert_eq!(esr.class(), ExceptionClass::DataAbortSame);
        assert!(esr.is_32bit_instruction());
        let abort = esr.abort().expect("a data abort has an abort syndrome");
        assert_eq!(abort.status, FaultStatus::Translation { level: 1 });
        assert_eq!(
            abort.access,
            Some(DataAccess {
                size: 8,
                sign_extend: false,
                register: 1,
                sixty_four: true,
                write: false,
            })
        );
        assert_eq!(
            esr.to_string(),
            "data abort at the same EL (EC 0x25, translation fault, level 1, read of 8 bytes via x1)"
        );
    }

    #[test]
    fn store_byte_permission_fault_from_lower_el() {
        // `strb w3, [x2]` from EL1 hitting a read-only stage-2 page at level 3:
        // EC = 0x24, ISV = 1, SAS = 0 (byte), SRT = 3, WnR = 1, DFSC = 0b001111.
        let value = (0x24 << 26) | (1 << 25) | (1 << 24) | (3 << 16) | (1 << 6) | 0b00_1111;
        let abort = Esr(value).abort().expect("data abort");
        assert_eq!(abort.status, FaultStatus::Permission { level: 3 });
        let access = abort.access.expect("ISV set");
        assert_eq!((access.size, access.register, access.write), (1, 3, true));
        assert!(!access.sixty_four);
    }

    #[test]
    fn data_abort_without_syndrome_has_no_access() {
        // ISV = 0, as for a load/store pair; DFSC = 0b010000 external abort, FnV = 1.
        let value = (0x24 << 26) | (1 << 25) | (1 << 10) | 0b01_0000;
        let abort = Esr(value).abort().expect("data abort");
        assert_eq!(abort.access, None);
        assert_eq!(abort.status, FaultStatus::SyncExternal);
        assert!(!abort.far_valid);
    }

    #[test]
    fn non_abort_classes_have_no_abort_syndrome() {
        // `hvc #0x5`: EC = 0x16, ISS = imm16.
        let hvc = Esr((0x16 << 26) | (1 << 25) | 0x5);
        assert_eq!(hvc.class(), ExceptionClass::Hvc64);
        assert_eq!(hvc.iss(), 5);
        assert_eq!(hvc.abort(), None);
        assert_eq!(hvc.to_string(), "HVC (EC 0x16, ISS 0x5)");
    }

    #[test]
    fn every_class_code_decodes_to_itself_or_other() {
        for ec in 0u8..64 {
            let class = ExceptionClass::from_bits(ec);
            if let ExceptionClass::Other(code) = class {
                assert_eq!(code, ec);
            }
        }
    }

    #[test]
    fn fault_levels_come_from_the_low_bits() {
        for level in 0..4 {
            assert_eq!(
                FaultStatus::from_bits(0b00_0100 | level),
                FaultStatus::Translation { level }
            );
            assert_eq!(
                FaultStatus::from_bits(0b00_1100 | level),
                FaultStatus::Permission { level }
            );
        }
        assert_eq!(FaultStatus::from_bits(0b10_0001), FaultStatus::Alignment);
    }
}
