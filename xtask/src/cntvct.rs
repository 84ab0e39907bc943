//! `/bin/cntvct` of the Linux demo's initramfs: a static arm64 Linux program of 20
//! instructions (`tests/guests/cntvct.s`) that prints the virtual counter
//! `CNTVCT_EL0` in decimal.
//!
//! The guest's `/init` runs it just before its `init started` marker. Neither QEMU
//! without Transom nor Transom offsets the guest's virtual counter (`CNTVOFF_EL2` =
//! 0), so the value counts from QEMU's reset in both; under `-icount shift=0` each
//! tick of `virt`'s 62.5 MHz counter is 16 executed instructions. Linux's own
//! timestamps cannot serve: its `sched_clock` starts at 0 when the kernel registers
//! the timer, after the hypervisor and the kernel's early boot have run.

use object::elf::{
    ELFCLASS64, ELFDATA2LSB, ELFMAG, ELFOSABI_NONE, EM_AARCH64, ET_EXEC, EV_CURRENT, FileHeader64,
    Ident, PF_R, PF_X, PT_LOAD, ProgramHeader64,
};
use object::endian::{LittleEndian, U16, U32, U64};
use object::pod::bytes_of;

/// Where the program is in the initramfs, and its name in `/init`.
pub const PATH: &str = "bin/cntvct";

/// The words of `tests/guests/cntvct.s`, as `llvm-mc -triple=aarch64` encodes them.
const CODE: [u32; 20] = [
    0xd53b_e041, // mrs x1, cntvct_el0
    0x9100_03e2, // mov x2, sp
    0xaa02_03e3, // mov x3, x2
    0x5280_0144, // mov w4, #'\n'
    0x381f_fc64, // strb w4, [x3, #-1]!
    0xd280_0145, // mov x5, #10
    0x9ac5_0826, // 1: udiv x6, x1, x5
    0x9b05_84c7, // msub x7, x6, x5, x1
    0x1100_c0e7, // add w7, w7, #'0'
    0x381f_fc67, // strb w7, [x3, #-1]!
    0xaa06_03e1, // mov x1, x6
    0xb5ff_ff61, // cbnz x1, 1b
    0xd280_0020, // mov x0, #1
    0xaa03_03e1, // mov x1, x3
    0xcb03_0042, // sub x2, x2, x3
    0xd280_0808, // mov x8, #64 (write)
    0xd400_0001, // svc #0
    0xd280_0000, // mov x0, #0
    0xd280_0ba8, // mov x8, #93 (exit)
    0xd400_0001, // svc #0
];

/// Where the program is loaded: the usual start of a static executable's text.
const LOAD_ADDRESS: u64 = 0x40_0000;
/// The segment's alignment: the largest page size arm64 Linux uses (64 KiB), so any
/// kernel maps it.
const SEGMENT_ALIGNMENT: u64 = 0x1_0000;
/// The ELF64 file header's size (System V ABI, "ELF Header").
const FILE_HEADER_SIZE: u16 = 64;
/// The ELF64 program header's size (System V ABI, "Program Header").
const PROGRAM_HEADER_SIZE: u16 = 56;

/// The program: an ELF64 header, one loadable read+execute segment that is the
/// whole file, the code right after the headers, and no section headers (Linux
/// needs none to run it).
pub fn program() -> Vec<u8> {
    let endian = LittleEndian;
    let code: Vec<u8> = CODE.iter().flat_map(|word| word.to_le_bytes()).collect();
    let code_offset = u64::from(FILE_HEADER_SIZE + PROGRAM_HEADER_SIZE);
    let file_size = code_offset + code.len() as u64;
    let header = FileHeader64::<LittleEndian> {
        e_ident: Ident {
            magic: ELFMAG,
            class: ELFCLASS64,
            data: ELFDATA2LSB,
            version: EV_CURRENT,
            os_abi: ELFOSABI_NONE,
            abi_version: 0,
            padding: [0; 7],
        },
        e_type: U16::new(endian, ET_EXEC),
        e_machine: U16::new(endian, EM_AARCH64),
        e_version: U32::new(endian, EV_CURRENT.into()),
        e_entry: U64::new(endian, LOAD_ADDRESS + code_offset),
        e_phoff: U64::new(endian, FILE_HEADER_SIZE.into()),
        e_shoff: U64::new(endian, 0),
        e_flags: U32::new(endian, 0),
        e_ehsize: U16::new(endian, FILE_HEADER_SIZE),
        e_phentsize: U16::new(endian, PROGRAM_HEADER_SIZE),
        e_phnum: U16::new(endian, 1),
        e_shentsize: U16::new(endian, 0),
        e_shnum: U16::new(endian, 0),
        e_shstrndx: U16::new(endian, 0),
    };
    let segment = ProgramHeader64::<LittleEndian> {
        p_type: U32::new(endian, PT_LOAD),
        p_flags: U32::new(endian, PF_R | PF_X),
        p_offset: U64::new(endian, 0),
        p_vaddr: U64::new(endian, LOAD_ADDRESS),
        p_paddr: U64::new(endian, LOAD_ADDRESS),
        p_filesz: U64::new(endian, file_size),
        p_memsz: U64::new(endian, file_size),
        p_align: U64::new(endian, SEGMENT_ALIGNMENT),
    };
    let mut bytes = Vec::with_capacity(file_size as usize);
    bytes.extend_from_slice(bytes_of(&header));
    bytes.extend_from_slice(bytes_of(&segment));
    bytes.extend_from_slice(&code);
    bytes
}

/// The word `/init` prints before the counter's value.
pub const COUNTER: &str = "CNTVCT_EL0";

/// The value in `/init`'s counter line (`... CNTVCT_EL0 <decimal> ...`), if `line`
/// is that line.
pub fn parse(line: &str) -> Option<u64> {
    let (_, after) = line.split_once(COUNTER)?;
    after.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use object::read::elf::{ElfFile64, FileHeader, ProgramHeader};
    use object::{Architecture, Object};

    use super::*;

    #[test]
    fn the_program_is_a_static_arm64_executable() {
        let bytes = program();
        let file = ElfFile64::<LittleEndian>::parse(&bytes[..]).expect("an ELF64 file");
        assert_eq!(file.architecture(), Architecture::Aarch64);
        assert_eq!(file.elf_header().e_type(LittleEndian), ET_EXEC);
        let segments = file.elf_program_headers();
        assert_eq!(segments.len(), 1);
        let segment = &segments[0];
        assert_eq!(segment.p_type(LittleEndian), PT_LOAD);
        assert_eq!(segment.p_filesz(LittleEndian), bytes.len() as u64);
        // The entry is the first instruction, right after the headers: mrs x1, cntvct_el0.
        let entry = usize::try_from(file.entry() - LOAD_ADDRESS).expect("small");
        assert_eq!(entry, 120);
        assert_eq!(bytes[entry..entry + 4], 0xd53b_e041u32.to_le_bytes());
        assert_eq!(bytes.len(), 120 + 4 * CODE.len());
    }

    #[test]
    fn the_counter_line_is_parsed() {
        assert_eq!(
            parse("transom-guest linux-a: CNTVCT_EL0 123456 at init start"),
            Some(123_456)
        );
        assert_eq!(
            parse("transom-guest linux-a: CNTVCT_EL0  at init start"),
            None
        );
        assert_eq!(parse("transom-guest linux-a: init started"), None);
    }
}
