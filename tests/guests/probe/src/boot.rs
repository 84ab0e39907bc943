//! The arm64 `Image` header, the entry points of both vCPUs and the exception
//! vectors, in assembly.
//!
//! The header follows Linux's `Documentation/arch/arm64/booting.rst`: `code0`
//! branches to the entry, `text_offset` 0, `image_size` covers `.bss` and the
//! stacks, `flags` 0xa (little-endian, 4 KiB pages, anywhere in RAM), the magic
//! "ARM\x64" at 0x38. Transom enters it at EL1 with the MMU off and x0 = the device
//! tree.
//!
//! The image is linked at 0 as a position-independent executable and runs
//! wherever its partition's RAM is (0x5000_0000 for linux-a, 0x6000_0000 for
//! linux-b on QEMU `virt`). Code reaches code and data PC-relatively (`adrp`/
//! `add`), but data that holds addresses (vtables, `&'static str`s in statics,
//! the GOT) holds them as link-time values plus an `R_AARCH64_RELATIVE`
//! relocation each. The entry code adds the load address to every one of them
//! before any Rust runs, because Rust code may read any such pointer at once;
//! it is the only place that may, since it runs before the pointers are used.
//! Every access there is an aligned 8-byte one, as Device memory (all data
//! accesses with the MMU off) requires.

use core::arch::global_asm;

/// Bytes of each vCPU's stack.
pub const STACK_SIZE: usize = 0x4000;

global_asm!(
    r#"
    .section .text.head, "ax"
    .global _start
_start:
    b       __transom_guest_primary // code0
    .long   0                       // code1
    .quad   0                       // text_offset
    .quad   __image_size            // image_size, .bss and stacks included
    .quad   0xa                     // flags: LE, 4 KiB pages, anywhere in RAM
    .quad   0, 0, 0                 // res2, res3, res4
    .ascii  "ARM\x64"               // magic
    .long   0                       // res5

    .section .text.boot, "ax"
    .global __transom_guest_primary
__transom_guest_primary:
    mov     x19, x0                 // the device tree
    mov     x20, x1                 // the boot-info page, or 0
    // FP/SIMD at EL1 (CPACR_EL1.FPEN = 0b11): Rust code may use the vector
    // registers.
    mov     x9, #(3 << 20)
    msr     cpacr_el1, x9
    isb
    // R_AARCH64_RELATIVE: *(base + r_offset) = base + r_addend (ELF64 Rela:
    // r_offset, r_info, r_addend; type 1027 in r_info's low 32 bits).
    adr     x9, _start
    adrp    x10, __rela_start
    add     x10, x10, :lo12:__rela_start
    adrp    x11, __rela_end
    add     x11, x11, :lo12:__rela_end
1:  cmp     x10, x11
    b.hs    3f
    ldr     x12, [x10], #8          // r_offset
    ldr     x13, [x10], #8          // r_info
    ldr     x14, [x10], #8          // r_addend
    cmp     w13, #1027
    b.ne    2f
    add     x14, x14, x9
    str     x14, [x12, x9]
    b       1b
2:  // Another relocation type: the image cannot run here.
    movz    x0, #0x0008
    movk    x0, #0x8400, lsl #16    // PSCI SYSTEM_OFF
    hvc     #0
    b       2b
3:  // Zero .bss (the stacks included).
    adrp    x10, __bss_start
    add     x10, x10, :lo12:__bss_start
    adrp    x11, __bss_end
    add     x11, x11, :lo12:__bss_end
4:  cmp     x10, x11
    b.hs    5f
    str     xzr, [x10], #8
    b       4b
5:  adrp    x9, __transom_guest_stack0_top
    add     x9, x9, :lo12:__transom_guest_stack0_top
    mov     sp, x9
    adr     x9, __transom_guest_vectors
    msr     vbar_el1, x9
    isb
    mov     x0, x19
    mov     x1, x20
    bl      {primary_main}
6:  wfe
    b       6b

    // PSCI CPU_ON's entry: x0 = the context ID, which the primary vCPU sets to
    // the top of this vCPU's stack.
    .global __transom_guest_secondary
__transom_guest_secondary:
    mov     x9, #(3 << 20)
    msr     cpacr_el1, x9
    isb
    mov     sp, x0
    adr     x9, __transom_guest_vectors
    msr     vbar_el1, x9
    isb
    bl      {secondary_main}
7:  wfe
    b       7b

    // Saves what a Rust `extern "C"` function may clobber (x0..x18, x29, x30,
    // q0..q7, q16..q31, FPCR, FPSR), calls `\handler`, restores and returns.
    .macro EXCEPTION handler
    sub     sp, sp, #0x220
    stp     x0, x1, [sp, #0x00]
    stp     x2, x3, [sp, #0x10]
    stp     x4, x5, [sp, #0x20]
    stp     x6, x7, [sp, #0x30]
    stp     x8, x9, [sp, #0x40]
    stp     x10, x11, [sp, #0x50]
    stp     x12, x13, [sp, #0x60]
    stp     x14, x15, [sp, #0x70]
    stp     x16, x17, [sp, #0x80]
    stp     x18, x29, [sp, #0x90]
    mrs     x9, fpcr
    mrs     x10, fpsr
    stp     x30, x9, [sp, #0xa0]
    str     x10, [sp, #0xb0]
    stp     q0, q1, [sp, #0xc0]
    stp     q2, q3, [sp, #0xe0]
    stp     q4, q5, [sp, #0x100]
    stp     q6, q7, [sp, #0x120]
    stp     q16, q17, [sp, #0x140]
    stp     q18, q19, [sp, #0x160]
    stp     q20, q21, [sp, #0x180]
    stp     q22, q23, [sp, #0x1a0]
    stp     q24, q25, [sp, #0x1c0]
    stp     q26, q27, [sp, #0x1e0]
    stp     q28, q29, [sp, #0x200]
    bl      \handler
    ldp     q28, q29, [sp, #0x200]
    ldp     q26, q27, [sp, #0x1e0]
    ldp     q24, q25, [sp, #0x1c0]
    ldp     q22, q23, [sp, #0x1a0]
    ldp     q20, q21, [sp, #0x180]
    ldp     q18, q19, [sp, #0x160]
    ldp     q16, q17, [sp, #0x140]
    ldp     q6, q7, [sp, #0x120]
    ldp     q4, q5, [sp, #0x100]
    ldp     q2, q3, [sp, #0xe0]
    ldp     q0, q1, [sp, #0xc0]
    ldr     x10, [sp, #0xb0]
    ldp     x30, x9, [sp, #0xa0]
    msr     fpcr, x9
    msr     fpsr, x10
    ldp     x18, x29, [sp, #0x90]
    ldp     x16, x17, [sp, #0x80]
    ldp     x14, x15, [sp, #0x70]
    ldp     x12, x13, [sp, #0x60]
    ldp     x10, x11, [sp, #0x50]
    ldp     x8, x9, [sp, #0x40]
    ldp     x6, x7, [sp, #0x30]
    ldp     x4, x5, [sp, #0x20]
    ldp     x2, x3, [sp, #0x10]
    ldp     x0, x1, [sp, #0x00]
    add     sp, sp, #0x220
    eret
    .endm

    // VBAR_EL1 (Arm ARM D1.3.1): 16 entries of 0x80 bytes; the guest runs at EL1
    // on SP_EL1, so its own exceptions come to "current EL with SP_ELx":
    // synchronous at +0x200, IRQ at +0x280.
    .section .text.vectors, "ax"
    .balign 2048
__transom_guest_vectors:
    .rept 4                         // 0x000..0x180: current EL with SP_EL0
    .balign 128
    b       __transom_guest_unexpected
    .endr
    .balign 128                     // 0x200
    b       __transom_guest_sync
    .balign 128                     // 0x280
    b       __transom_guest_irq
    .balign 128                     // 0x300: FIQ
    b       __transom_guest_unexpected
    .balign 128                     // 0x380: SError
    b       __transom_guest_unexpected
    .rept 8                         // 0x400..0x780: lower EL
    .balign 128
    b       __transom_guest_unexpected
    .endr

__transom_guest_sync:
    EXCEPTION {sync_exception}
__transom_guest_irq:
    EXCEPTION {irq_exception}
__transom_guest_unexpected:
    EXCEPTION {unexpected_exception}

    .section .bss.stacks, "aw", @nobits
    .balign 16
    .space  {stack_size}
    .global __transom_guest_stack0_top
__transom_guest_stack0_top:
    .space  {stack_size}
    .global __transom_guest_stack1_top
__transom_guest_stack1_top:
"#,
    primary_main = sym crate::primary_main,
    secondary_main = sym crate::secondary_main,
    sync_exception = sym crate::exceptions::sync_exception,
    irq_exception = sym crate::exceptions::irq_exception,
    unexpected_exception = sym crate::exceptions::unexpected_exception,
    stack_size = const STACK_SIZE,
);

unsafe extern "C" {
    #[link_name = "__transom_guest_secondary"]
    fn secondary_entry();
    #[link_name = "__transom_guest_stack1_top"]
    static SECONDARY_STACK_TOP: u8;
}

/// The secondary vCPU's entry point (its run-time address, for PSCI `CPU_ON`).
pub fn secondary_entry_address() -> u64 {
    secondary_entry as *const () as u64
}

/// The top of the secondary vCPU's stack (its run-time address).
pub fn secondary_stack_top() -> u64 {
    (&raw const SECONDARY_STACK_TOP) as u64
}
