//! The EL2 exception vector table and the trap frame it builds.
//!
//! Layout per Arm ARM D1.3.1 "Exception vectors": four groups (current EL with SP0,
//! current EL with SPx, lower EL in AArch64, lower EL in AArch32) of four entries
//! (synchronous, IRQ, FIQ, SError), 0x80 bytes each, the table 2 KiB aligned.
//! Every entry saves the general registers and the exception registers into a
//! [`TrapFrame`] on the current stack and calls `handle_exception`; if that
//! returns, the frame is restored and `eret` resumes. Exceptions from a lower EL
//! come from a guest: those entries leave through the world switch in
//! [`super::guest`] instead.

use core::arch::global_asm;
use core::mem::{offset_of, size_of};

/// Registers saved on exception entry.
#[repr(C)]
pub struct TrapFrame {
    /// x0..x30.
    pub x: [u64; 31],
    /// `ELR_EL2`: where the exception was taken.
    pub elr: u64,
    /// `SPSR_EL2`: the interrupted PSTATE.
    pub spsr: u64,
    /// `ESR_EL2`: the syndrome.
    pub esr: u64,
    /// `FAR_EL2`: the faulting address, for aborts.
    pub far: u64,
    _pad: u64,
}

const FRAME_SIZE: usize = size_of::<TrapFrame>();
const _: () = assert!(
    FRAME_SIZE.is_multiple_of(16),
    "the stack pointer must stay 16-byte aligned"
);

/// Which vector an exception came through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum VectorKind {
    /// Synchronous, from EL2 itself.
    CurrentSync = 0,
    /// IRQ, from EL2 itself.
    CurrentIrq = 1,
    /// FIQ, from EL2 itself.
    CurrentFiq = 2,
    /// SError, from EL2 itself.
    CurrentSError = 3,
    /// Synchronous, from a lower EL (a guest).
    LowerSync = 4,
    /// IRQ, from a lower EL.
    LowerIrq = 5,
    /// FIQ, from a lower EL.
    LowerFiq = 6,
    /// SError, from a lower EL.
    LowerSError = 7,
    /// Anything through the SP0 or AArch32 groups, which Transom never uses.
    Unused = 8,
}

impl VectorKind {
    /// The kind the assembly passes as a number.
    pub fn from_raw(raw: u64) -> VectorKind {
        match raw {
            0 => VectorKind::CurrentSync,
            1 => VectorKind::CurrentIrq,
            2 => VectorKind::CurrentFiq,
            3 => VectorKind::CurrentSError,
            4 => VectorKind::LowerSync,
            5 => VectorKind::LowerIrq,
            6 => VectorKind::LowerFiq,
            7 => VectorKind::LowerSError,
            _ => VectorKind::Unused,
        }
    }

    /// A short description for the log.
    pub fn name(self) -> &'static str {
        match self {
            VectorKind::CurrentSync => "synchronous exception at EL2",
            VectorKind::CurrentIrq => "IRQ at EL2",
            VectorKind::CurrentFiq => "FIQ at EL2",
            VectorKind::CurrentSError => "SError at EL2",
            VectorKind::LowerSync => "synchronous exception from a lower EL",
            VectorKind::LowerIrq => "IRQ from a lower EL",
            VectorKind::LowerFiq => "FIQ from a lower EL",
            VectorKind::LowerSError => "SError from a lower EL",
            VectorKind::Unused => "exception through an unused vector (SP0 or AArch32)",
        }
    }
}

/// Rust side of every vector. `frame` lives on the interrupted stack.
extern "C" fn handle_exception(frame: &mut TrapFrame, raw_kind: u64) {
    crate::boot::unexpected_exception(VectorKind::from_raw(raw_kind), frame);
}

global_asm!(
    r#"
.macro VECTOR kind
    .balign 0x80
    sub     sp, sp, #{frame_size}
    stp     x0, x1, [sp, #0]
    mov     x1, #\kind
    b       exception_common
.endm

// A lower-EL entry: the guest's x0 and x1 go below the frame of
// `__transom_guest_run`, the kind to x1, and the world switch takes over.
.macro GUEST_EXIT kind
    .balign 0x80
    stp     x0, x1, [sp, #-16]!
    mov     x1, #\kind
    b       __transom_guest_exit
.endm

    .section .text.vectors, "ax"
    .balign 0x800
    .global __vectors
__vectors:
    VECTOR 8    // current EL, SP0
    VECTOR 8
    VECTOR 8
    VECTOR 8
    VECTOR 0    // current EL, SPx
    VECTOR 1
    VECTOR 2
    VECTOR 3
    GUEST_EXIT 4    // lower EL, AArch64
    GUEST_EXIT 5
    GUEST_EXIT 6
    GUEST_EXIT 7
    VECTOR 8    // lower EL, AArch32
    VECTOR 8
    VECTOR 8
    VECTOR 8

exception_common:
    stp     x2, x3, [sp, #16]
    stp     x4, x5, [sp, #32]
    stp     x6, x7, [sp, #48]
    stp     x8, x9, [sp, #64]
    stp     x10, x11, [sp, #80]
    stp     x12, x13, [sp, #96]
    stp     x14, x15, [sp, #112]
    stp     x16, x17, [sp, #128]
    stp     x18, x19, [sp, #144]
    stp     x20, x21, [sp, #160]
    stp     x22, x23, [sp, #176]
    stp     x24, x25, [sp, #192]
    stp     x26, x27, [sp, #208]
    stp     x28, x29, [sp, #224]
    str     x30, [sp, #240]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [sp, #{elr}]
    mrs     x2, esr_el2
    mrs     x3, far_el2
    stp     x2, x3, [sp, #{esr}]
    mov     x0, sp
    bl      {handler}
    ldp     x2, x3, [sp, #{elr}]
    msr     elr_el2, x2
    msr     spsr_el2, x3
    ldp     x0, x1, [sp, #0]
    ldp     x2, x3, [sp, #16]
    ldp     x4, x5, [sp, #32]
    ldp     x6, x7, [sp, #48]
    ldp     x8, x9, [sp, #64]
    ldp     x10, x11, [sp, #80]
    ldp     x12, x13, [sp, #96]
    ldp     x14, x15, [sp, #112]
    ldp     x16, x17, [sp, #128]
    ldp     x18, x19, [sp, #144]
    ldp     x20, x21, [sp, #160]
    ldp     x22, x23, [sp, #176]
    ldp     x24, x25, [sp, #192]
    ldp     x26, x27, [sp, #208]
    ldp     x28, x29, [sp, #224]
    ldr     x30, [sp, #240]
    add     sp, sp, #{frame_size}
    eret
"#,
    frame_size = const FRAME_SIZE,
    elr = const offset_of!(TrapFrame, elr),
    esr = const offset_of!(TrapFrame, esr),
    handler = sym handle_exception,
);

const _: () = assert!(offset_of!(TrapFrame, elr) == 248);
const _: () = assert!(offset_of!(TrapFrame, esr) == 264);
const _: () = assert!(offset_of!(TrapFrame, far) == offset_of!(TrapFrame, esr) + 8);
const _: () = assert!(offset_of!(TrapFrame, spsr) == offset_of!(TrapFrame, elr) + 8);
