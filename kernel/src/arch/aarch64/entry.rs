//! The image header and the assembly entry points of the boot and secondary CPUs.
//!
//! The image starts with the arm64 Linux `Image` header (Linux
//! `Documentation/arch/arm64/booting.rst`), so QEMU's `-kernel`, the Raspberry Pi
//! firmware and any loader that boots Linux load Transom the same way: at
//! `text_offset` from a 2 MiB aligned base, with the device tree's address in x0,
//! MMU and data cache off, at EL2.
//!
//! Both entry paths do only what Rust cannot do for itself: enable FP/SIMD (the
//! target may emit SIMD instructions anywhere), put the CPU in a known state, set a
//! stack, zero `.bss` (boot CPU), install the vectors, and for secondaries turn on
//! the MMU with the boot CPU's tables before any atomic instruction runs.

use core::arch::global_asm;
use core::mem::offset_of;

use aarch64_cpu::registers::{HCR_EL2, SCTLR_EL2};

/// The raw value of a sum of `aarch64-cpu` register field settings, for constants.
macro_rules! field_values {
    ($($field:expr),+ $(,)?) => { 0 $(| $field.value)+ };
}

/// Stack bytes per CPU.
pub const STACK_SIZE: usize = 64 * 1024;
/// The most CPUs the kernel has stacks for.
pub const MAX_CPUS: usize = 8;

#[repr(C, align(16))]
struct Stacks([[u8; STACK_SIZE]; MAX_CPUS]);

/// One stack per CPU, index 0 for the boot CPU. Only the entry code takes their
/// addresses.
#[unsafe(link_section = ".stacks")]
static mut STACKS: Stacks = Stacks([[0; STACK_SIZE]; MAX_CPUS]);

/// What a secondary CPU needs before it can run Rust: the boot CPU fills it in,
/// cleans it to the point of coherency (the secondary reads it with its MMU off)
/// and releases one CPU at a time.
#[repr(C)]
pub(super) struct SecondaryBootArgs {
    pub mair: u64,
    pub tcr: u64,
    pub ttbr0: u64,
    pub sctlr: u64,
    pub stack_top: u64,
    pub cpu_index: u64,
}

/// The boot arguments of the secondary CPU being released.
#[unsafe(no_mangle)]
pub(super) static mut SECONDARY_BOOT_ARGS: SecondaryBootArgs = SecondaryBootArgs {
    mair: 0,
    tcr: 0,
    ttbr0: 0,
    sctlr: 0,
    stack_top: 0,
    cpu_index: 0,
};

/// The top of CPU `index`'s stack.
pub(super) fn stack_top(index: usize) -> u64 {
    assert!(index < MAX_CPUS, "CPU index {index} has no stack");
    let base = (&raw const STACKS) as u64;
    base + ((index + 1) * STACK_SIZE) as u64
}

/// The address the spin table or PSCI `CPU_ON` releases a secondary to.
pub(super) fn secondary_entry_address() -> u64 {
    unsafe extern "C" {
        fn secondary_entry();
    }
    secondary_entry as *const () as u64
}

/// `CPTR_EL2.TFP`, bit 10: trap FP/SIMD (aarch64-cpu does not model it).
const CPTR_EL2_TFP: u64 = 1 << 10;
/// `CPTR_EL2` with `HCR_EL2.E2H` = 0 (Arm ARM D24.2.31): its RES1 bits [13:12] and
/// [9:0] set, which keeps SVE (`TZ`) and SME (`TSM`) trapped, and `TFP` clear so
/// FP/SIMD works. Only guests use it: the hypervisor is built soft-float and never
/// touches an FP/SIMD register, so a guest's FP/SIMD state stays live in the
/// registers across its exits and is never switched (`guest.rs`).
const CPTR_EL2_RES1: u64 = 0x33ff;
const CPTR_EL2_BOOT: u64 = CPTR_EL2_RES1 & !CPTR_EL2_TFP;

/// `SCTLR_EL2` RES1 bits for `HCR_EL2.E2H` = 0 (Arm ARM D24.2.159): 29, 28, 23, 22,
/// 18, 16, 11, 5, 4. MMU, caches and alignment checks off; little-endian.
pub(super) const SCTLR_EL2_RES1: u64 = 0x30c5_0830;
const _: () = assert!(SCTLR_EL2_RES1 & field_values!(SCTLR_EL2::M::SET, SCTLR_EL2::EE::SET) == 0);

/// `HCR_EL2` until guests exist: EL1 is AArch64, nothing trapped, no E2H.
const HCR_EL2_BOOT: u64 = field_values!(HCR_EL2::RW::EL1IsAarch64);

const CURRENT_EL_2: u64 = 2 << 2;

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       primary_entry           // code0
    .long   0                       // code1
    .quad   __text_offset           // text_offset
    .quad   __image_size            // image_size, .bss and stacks included
    .quad   0x2                     // flags: little-endian, 4 KiB pages, base near RAM start
    .quad   0, 0, 0                 // res2..res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

    .section .text, "ax"
primary_entry:
    mov     x19, x0                 // the firmware's device tree
    mrs     x0, CurrentEL
    cmp     x0, #{current_el_2}
    b.ne    wrong_exception_level
    bl      reset_el2_state

    adrp    x0, {stacks}
    add     x0, x0, :lo12:{stacks}
    ldr     x1, ={stack_size}
    add     sp, x0, x1              // top of CPU 0's stack

    adrp    x0, __bss_start
    add     x0, x0, :lo12:__bss_start
    adrp    x1, __bss_end
    add     x1, x1, :lo12:__bss_end
0:  cmp     x0, x1
    b.hs    1f
    stp     xzr, xzr, [x0], #16
    b       0b
1:
    msr     tpidr_el2, xzr          // logical CPU index 0
    mov     x0, x19
    bl      __transom_primary_main
    b       park

    .global secondary_entry
secondary_entry:
    bl      reset_el2_state
    adrp    x1, SECONDARY_BOOT_ARGS
    add     x1, x1, :lo12:SECONDARY_BOOT_ARGS
    ldr     x2, [x1, #{args_mair}]
    msr     mair_el2, x2
    ldr     x2, [x1, #{args_tcr}]
    msr     tcr_el2, x2
    ldr     x2, [x1, #{args_ttbr0}]
    msr     ttbr0_el2, x2
    isb
    tlbi    alle2
    dsb     nsh
    isb
    ldr     x2, [x1, #{args_sctlr}]
    msr     sctlr_el2, x2
    isb
    ldr     x2, [x1, #{args_stack_top}]
    mov     sp, x2
    ldr     x0, [x1, #{args_cpu_index}]
    msr     tpidr_el2, x0
    bl      __transom_secondary_main
    b       park

// Puts EL2 in a known state: FP/SIMD usable, MMU and caches off, no guest traps,
// vectors installed. Clobbers x0.
reset_el2_state:
    ldr     x0, ={cptr}
    msr     cptr_el2, x0
    ldr     x0, ={sctlr}
    msr     sctlr_el2, x0
    ldr     x0, ={hcr}
    msr     hcr_el2, x0
    adrp    x0, __vectors
    add     x0, x0, :lo12:__vectors
    msr     vbar_el2, x0
    isb
    ret

// Transom must be entered at EL2. Anywhere else nothing can be set up or logged;
// a semihosting SYS_EXIT ends a QEMU run with the exception verdict, and on real
// hardware the CPU parks.
wrong_exception_level:
    mov     x0, #0x18               // SYS_EXIT
    adr     x1, wrong_el_exit_block
    hlt     #0xf000
park:
    wfe
    b       park
    .balign 8
wrong_el_exit_block:
    .quad   0x20026                 // ADP_Stopped_ApplicationExit
    .quad   {exception_code}
"#,
    current_el_2 = const CURRENT_EL_2,
    stacks = sym STACKS,
    stack_size = const STACK_SIZE,
    cptr = const CPTR_EL2_BOOT,
    sctlr = const SCTLR_EL2_RES1,
    hcr = const HCR_EL2_BOOT,
    args_mair = const offset_of!(SecondaryBootArgs, mair),
    args_tcr = const offset_of!(SecondaryBootArgs, tcr),
    args_ttbr0 = const offset_of!(SecondaryBootArgs, ttbr0),
    args_sctlr = const offset_of!(SecondaryBootArgs, sctlr),
    args_stack_top = const offset_of!(SecondaryBootArgs, stack_top),
    args_cpu_index = const offset_of!(SecondaryBootArgs, cpu_index),
    exception_code = const transom_vmm_core::verdict::Verdict::UnexpectedException.exit_code(),
);
