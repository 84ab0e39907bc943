//! Running EL1 code in a partition: the world switch into a guest and back out, the
//! `HCR_EL2` a guest runs under, and access to a partition's RAM from EL2.
//!
//! [`run`] saves the hypervisor's callee-saved registers on the EL2 stack once, then
//! loops in assembly: it loads the guest's general registers, `ELR_EL2` and
//! `SPSR_EL2` from a [`GuestContext`] and `eret`s; every exception from a lower EL
//! comes back through the vectors to `__transom_guest_exit`, which stores the
//! guest's registers and `ESR_EL2` into the same context and calls the exit handler
//! directly, as a C function, on the same stack. The handler's own prologue keeps
//! the callee-saved registers it uses, so the world switch does not save the
//! hypervisor's again on every exit. When the handler says so, the loop ends and
//! [`run`] returns.
//!
//! `FAR_EL2` and `HPFAR_EL2` are not copied on every exit: only aborts need them,
//! and they hold the values of the exit being handled until the next exception to
//! EL2, which cannot come while a handler runs (EL2 runs with every interrupt
//! masked and takes no synchronous exception it returns from), so [`exit_far`] and
//! [`exit_fault_ipa`] read them when asked.
//!
//! The guest's FP/SIMD registers (q0..q31, `FPSR`, `FPCR`) are not switched at all:
//! the hypervisor is built for `aarch64-unknown-none-softfloat`, so no EL2 code
//! touches them, `CPTR_EL2.TFP` stays clear, and each vCPU is pinned to its own
//! physical CPU and never scheduled, so a guest's FP/SIMD state simply stays live
//! in its CPU's registers from one entry to the next. (A vCPU started again on the
//! same CPU after `CPU_OFF` finds what its partition left there; a CPU never
//! serves another partition.) Lazy switching through `CPTR_EL2.TFP` would only pay
//! off if EL2 needed the registers or CPUs were shared. The EL1 system registers
//! and SP_EL1 are not switched either, for the same reason.

use core::arch::{asm, global_asm};
use core::mem::{offset_of, size_of};

use aarch64_cpu::asm::barrier;
use aarch64_cpu::registers::{HCR_EL2, SCTLR_EL1, VTTBR_EL2, Writeable};
use transom_boards::PhysRange;

use super::vectors::VectorKind;

/// A guest's general registers and what the last exit reported (its FP/SIMD
/// registers stay in the CPU: see the module documentation).
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, Default)]
pub struct GuestContext {
    /// x0..x30.
    pub x: [u64; 31],
    /// `ELR_EL2`: where the guest resumes.
    pub elr: u64,
    /// `SPSR_EL2`: the guest's PSTATE.
    pub spsr: u64,
    /// `ESR_EL2` of the last exit.
    pub esr: u64,
}

/// `FAR_EL2` of the exit being handled (see the module documentation for why it
/// still holds it): the faulting virtual address of an abort.
pub fn exit_far() -> u64 {
    let far: u64;
    // SAFETY: reads a syndrome register; no memory is touched.
    unsafe { asm!("mrs {}, far_el2", out(reg) far, options(nomem, nostack, preserves_flags)) };
    far
}

/// The IPA of the stage-2 abort being handled: `HPFAR_EL2.FIPA` (bits 47:4, IPA
/// bits 51:12, Arm ARM D24.2.69) with the page offset from `FAR_EL2`. Only
/// meaningful while a stage-2 abort (not one on a stage-1 walk) is handled.
pub fn exit_fault_ipa() -> u64 {
    const FIPA_MASK: u64 = 0x0000_0fff_ffff_fff0;
    let (hpfar, far): (u64, u64);
    // SAFETY: reads two syndrome registers; no memory is touched.
    unsafe {
        asm!(
            "mrs {hpfar}, hpfar_el2",
            "mrs {far}, far_el2",
            hpfar = out(reg) hpfar,
            far = out(reg) far,
            options(nomem, nostack, preserves_flags)
        )
    };
    ((hpfar & FIPA_MASK) << 8) | (far & 0xfff)
}

/// `SPSR_EL2` that enters EL1 using SP_EL1 (`M` = 0b0101, EL1h) with D, A, I and F
/// masked, as Linux's booting protocol asks of a kernel's entry.
pub const SPSR_EL1H_MASKED: u64 = 0x3c5;

/// `SCTLR_EL1` with the MMU and caches off: only its RES1 bits (11, 20, 22, 23, 28,
/// 29 in Armv8.0, Arm ARM D24.2.158), as Linux's `INIT_SCTLR_EL1_MMU_OFF`.
const SCTLR_EL1_MMU_OFF: u64 = 0x30d0_0800;

/// Bytes of hypervisor state [`run`] keeps on the EL2 stack while the guest runs:
/// x18..x30 (soft-float code has no callee-saved FP/SIMD registers), then the
/// context pointer, the exit handler and its data.
const HOST_FRAME: usize = 16 * 8;
/// Where the context pointer lies in that frame.
const HOST_FRAME_CONTEXT: usize = 13 * 8;
/// Where the exit handler lies in that frame, its data right after it.
const HOST_FRAME_HANDLER: usize = 14 * 8;

const _: () = assert!(HOST_FRAME.is_multiple_of(16));
const _: () = assert!(offset_of!(GuestContext, elr) == 31 * 8);
const _: () = assert!(offset_of!(GuestContext, spsr) == offset_of!(GuestContext, elr) + 8);
const _: () = assert!(size_of::<GuestContext>() == 34 * 8);

/// Puts this CPU in the state a partition's EL1 code runs in: stage 2 on
/// (`HCR_EL2.VM`) with the tables and VMID of `vttbr`, EL1 in AArch64, physical
/// IRQ, FIQ and SError routed to EL2, SMC trapped, set/way invalidation upgraded to
/// clean and invalidate (Arm ARM D24.2.48), and EL1's MMU and caches off.
pub fn enter_partition(vttbr: u64) {
    VTTBR_EL2.set(vttbr);
    SCTLR_EL1.set(SCTLR_EL1_MMU_OFF);
    HCR_EL2.write(
        HCR_EL2::VM::Enable
            + HCR_EL2::RW::EL1IsAarch64
            + HCR_EL2::IMO::EnableVirtualIRQ
            + HCR_EL2::FMO::EnableVirtualFIQ
            + HCR_EL2::AMO::SET
            + HCR_EL2::TSC::EnableTrapEl1SmcToEl2
            + HCR_EL2::SWIO::SET,
    );
    barrier::isb(barrier::SY);
}

/// Sets up this CPU for vCPU `vcpu` of a partition: `VMPIDR_EL2` (what the guest
/// reads as `MPIDR_EL1`: bit 31 RES1, Aff0 = the vCPU index, so the partition's
/// vCPUs are numbered from 0 whatever physical CPUs they run on), `VPIDR_EL2` (the
/// real `MIDR_EL1`), the physical counter readable from EL1 but the physical timer
/// trapped (`CNTHCTL_EL2.EL1PCTEN` = 1, `EL1PCEN` = 0, Arm ARM D24.2.27 with
/// `HCR_EL2.E2H` = 0), and no virtual counter offset (`CNTVOFF_EL2` = 0); loads
/// `vtcr` into `VTCR_EL2` (each CPU has its own), then [`enter_partition`].
pub fn enter_vcpu(vttbr: u64, vtcr: u64, vcpu: usize) {
    const VMPIDR_RES1: u64 = 1 << 31;
    const CNTHCTL_EL1PCTEN: u64 = 1 << 0;
    let vmpidr = VMPIDR_RES1 | (vcpu as u64 & 0xff);
    // SAFETY: these EL2 registers only shape what EL1 sees; the hypervisor itself
    // reads none of them.
    unsafe {
        asm!(
            "mrs {midr}, midr_el1",
            "msr vpidr_el2, {midr}",
            "msr vmpidr_el2, {vmpidr}",
            "msr cnthctl_el2, {cnthctl}",
            "msr cntvoff_el2, xzr",
            midr = out(reg) _,
            vmpidr = in(reg) vmpidr,
            cnthctl = in(reg) CNTHCTL_EL1PCTEN,
            options(nostack)
        )
    };
    super::stage2::set_vtcr(vtcr);
    enter_partition(vttbr);
}

/// Makes the guest take the exception `injection` describes at its next entry:
/// its EL1 exception registers as the hardware would set them (`ESR_EL1`,
/// `FAR_EL1` = the address of the exit, `ELR_EL1` = where it was, `SPSR_EL1`), and
/// the context resumed at `VBAR_EL1` + the vector offset in the new PSTATE.
pub fn inject(context: &mut GuestContext, injection: &transom_vmm_core::inject::Injection) {
    let vbar: u64;
    // SAFETY: writes the guest's EL1 exception registers, which only the guest
    // reads (EL2 uses the EL2 ones), and reads VBAR_EL1.
    unsafe {
        asm!(
            "msr esr_el1, {esr}",
            "msr far_el1, {far}",
            "msr elr_el1, {elr}",
            "msr spsr_el1, {spsr}",
            "mrs {vbar}, vbar_el1",
            esr = in(reg) injection.esr,
            far = in(reg) exit_far(),
            elr = in(reg) context.elr,
            spsr = in(reg) injection.spsr_el1,
            vbar = out(reg) vbar,
            options(nostack)
        )
    };
    context.elr = vbar + injection.vector_offset;
    context.spsr = injection.pstate;
}

/// Reads `size` bytes (1, 2, 4 or 8) at device address `address` with exactly one
/// load of that width. `address` is a register EL2 maps as device memory
/// (`el2_device_windows`: a trapped window or an interrupt-controller frame).
///
/// The size comes from a data abort's 2-bit `SAS` field (`DataAccess::size`) or is
/// a register's constant width, so it is never another value; debug builds check.
/// Callers check it, and the alignment, against the trap window first.
#[inline]
pub fn mmio_read(address: u64, size: u8) -> u64 {
    let value: u64;
    assert_valid_size(size);
    // One bit test per width, 32 bits first: most device registers are words, and
    // a `match` on the size compiles to a power-of-two check and a count of
    // trailing zeros before the first load (about ten instructions on the
    // trapped-access path). The size is 1, 2, 4 or 8, so its one set bit picks.
    // SAFETY: `address` lies in a trapped window the board table grants to the
    // partition or in a GIC frame, both of which EL2 maps as device memory
    // (`el2_device_windows`); one load of the asked width is what the guest (or the
    // GIC driver) asked the device for, and a device read touches no Rust memory.
    unsafe {
        if size & 4 != 0 {
            asm!("ldr {0:w}, [{1}]", out(reg) value, in(reg) address, options(nostack));
        } else if size & 8 != 0 {
            asm!("ldr {0}, [{1}]", out(reg) value, in(reg) address, options(nostack));
        } else if size & 2 != 0 {
            asm!("ldrh {0:w}, [{1}]", out(reg) value, in(reg) address, options(nostack));
        } else {
            asm!("ldrb {0:w}, [{1}]", out(reg) value, in(reg) address, options(nostack));
        }
    }
    value
}

/// Writes the low `size` bytes (1, 2, 4 or 8) of `value` to device address
/// `address` (as for [`mmio_read`]) with exactly one store of that width.
#[inline]
pub fn mmio_write(address: u64, size: u8, value: u64) {
    assert_valid_size(size);
    // Words first, as in `mmio_read`.
    // SAFETY: as in `mmio_read`: a device address of a trapped window or a GIC
    // frame, mapped at EL2 as device memory, written once with the asked width.
    unsafe {
        if size & 4 != 0 {
            asm!("str {0:w}, [{1}]", in(reg) value, in(reg) address, options(nostack));
        } else if size & 8 != 0 {
            asm!("str {0}, [{1}]", in(reg) value, in(reg) address, options(nostack));
        } else if size & 2 != 0 {
            asm!("strh {0:w}, [{1}]", in(reg) value, in(reg) address, options(nostack));
        } else {
            asm!("strb {0:w}, [{1}]", in(reg) value, in(reg) address, options(nostack));
        }
    }
}

/// Checks, in debug builds, that an MMIO access is 1, 2, 4 or 8 bytes: the
/// callers check it against the window, or the register, before.
#[inline(always)]
fn assert_valid_size(size: u8) {
    debug_assert!(
        matches!(size, 1 | 2 | 4 | 8),
        "no {size}-byte device access"
    );
}

/// Returns this CPU to the hypervisor's own state: stage 2 off, nothing trapped.
pub fn leave_partition() {
    HCR_EL2.write(HCR_EL2::RW::EL1IsAarch64);
    barrier::isb(barrier::SY);
}

/// What an exit handler asks for next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Enter the guest again, with every register loaded from the context.
    Enter,
    /// Enter the guest again without reloading x19 to x29: the handler wrote none
    /// of them in the context, and they still hold the guest's values, because the
    /// handler (like all Rust code) preserves them (callee-saved in AAPCS64, x29 as
    /// the frame pointer). Saves the loads on the hottest exits.
    EnterCalleeSavedIntact,
    /// End the loop.
    Leave,
}

impl Next {
    /// The code `__transom_guest_exit` branches on.
    const fn code(self) -> u64 {
        match self {
            Next::EnterCalleeSavedIntact => 0,
            Next::Leave => 1,
            Next::Enter => 2,
        }
    }
}

/// Runs the guest described by `context`, calling `on_exit` with the vector of each
/// exit (the context then holds the guest's registers and `ESR_EL2`), until it
/// returns [`Next::Leave`]. The CPU must be set up by [`enter_partition`].
pub fn run<F>(context: &mut GuestContext, mut on_exit: F)
where
    F: FnMut(&mut GuestContext, VectorKind) -> Next,
{
    /// The exit handler the world switch calls; it returns a [`Next::code`].
    ///
    /// # Safety
    ///
    /// `context` and `on_exit` are the pointers [`run`] gave
    /// `__transom_guest_run` (`on_exit` to an `F`), valid and used by nothing else
    /// while it runs; `kind` is a [`VectorKind`] discriminant (the lower-EL vectors
    /// pass only the constants 4 to 7).
    unsafe extern "C" fn exit<F>(
        context: *mut GuestContext,
        kind: VectorKind,
        on_exit: *mut (),
    ) -> u64
    where
        F: FnMut(&mut GuestContext, VectorKind) -> Next,
    {
        // SAFETY: by this function's contract, both point to live objects of `run`'s
        // frame (`on_exit` to an `F`) that nothing else uses while the guest loop runs.
        let (context, on_exit) = unsafe { (&mut *context, &mut *on_exit.cast::<F>()) };
        on_exit(context, kind).code()
    }

    unsafe extern "C" {
        fn __transom_guest_run(
            context: *mut GuestContext,
            handler: unsafe extern "C" fn(*mut GuestContext, VectorKind, *mut ()) -> u64,
            data: *mut (),
        );
    }
    // SAFETY: `__transom_guest_run` follows the C ABI: it saves x18..x30 on the
    // stack, restores them and SP before returning, and writes only `*context`,
    // which the exclusive borrow makes ours; it calls `exit::<F>` only with the
    // pointers given here, which stay valid (borrowed for the call) and are used by
    // nothing else meanwhile, and with a vector kind the lower-EL vectors set (4 to
    // 7, `VectorKind::LowerSync` to `LowerSError`), as `exit` requires, with SP
    // 16-byte aligned below its frame. The guest runs at EL1 under the stage 2
    // `enter_partition` installed, so it can reach only its partition's memory and
    // cannot touch the EL2 stack or image. The hypervisor is soft-float, so the FP/SIMD registers
    // the guest changes hold no state of its Rust code.
    unsafe { __transom_guest_run(context, exit::<F>, (&raw mut on_exit).cast()) };
}

/// Runs the guest described by `context` until its next exit, and returns the
/// vector the exit came through (for code that steps a guest exit by exit).
pub fn run_to_exit(context: &mut GuestContext) -> VectorKind {
    let mut taken = VectorKind::Unused;
    run(context, |_, kind| {
        taken = kind;
        Next::Leave
    });
    taken
}

/// Copies `bytes` to physical address `address` inside `ram` and makes them visible
/// to a guest that runs with its caches off: cleaned to the point of coherency, and
/// the instruction caches invalidated (they may be run as code).
///
/// # Panics
///
/// If the bytes do not lie inside `ram`.
pub fn copy_to_guest_ram(ram: PhysRange, address: u64, bytes: &[u8]) {
    let end = address
        .checked_add(bytes.len() as u64)
        .expect("the copy does not wrap");
    assert!(
        ram.start <= address && end <= ram.end,
        "copy to {address:#x}..{end:#x} outside partition RAM {ram}"
    );
    // SAFETY: `ram` is a partition's RAM bank, which EL2 maps read-write at its
    // physical address (the boot code maps every RAM bank the board and firmware
    // agree on) and which no Rust object of the hypervisor lives in (the board
    // table's rules keep partition RAM out of the hypervisor's memory); the range
    // was checked to lie inside it.
    unsafe {
        core::ptr::copy_nonoverlapping(bytes.as_ptr(), address as *mut u8, bytes.len());
    }
    super::cpu::clean_dcache_to_poc(address, bytes.len() as u64);
    // SAFETY: invalidates every instruction cache to the point of unification in
    // the inner shareable domain; no memory is written.
    unsafe { asm!("ic ialluis", "dsb ish", "isb", options(nostack)) };
}

/// Reads the 64-bit word a guest wrote at `address` in `ram` with its caches off:
/// the line is cleaned and invalidated first, so the read misses any stale line.
///
/// # Panics
///
/// If the word does not lie inside `ram` or is not 8-byte aligned.
pub fn read_guest_ram_u64(ram: PhysRange, address: u64) -> u64 {
    assert!(
        address.is_multiple_of(8) && ram.start <= address && address + 8 <= ram.end,
        "read of {address:#x} outside partition RAM {ram}"
    );
    // SAFETY: `dc civac` writes a line back (if dirty) and drops it; the contents of
    // memory stay what they are. The address is mapped (see below).
    unsafe { asm!("dc civac, {}", "dsb sy", in(reg) address, options(nostack)) };
    // SAFETY: as in `copy_to_guest_ram`, partition RAM is mapped at EL2 and holds no
    // hypervisor object; the word is aligned and inside the bank.
    unsafe { core::ptr::read(address as *const u64) }
}

/// The A64 instruction at the running guest's virtual address `pc`, read from
/// its RAM `banks`: translated through the guest's own stage 1 and its stage 2
/// with `AT S12E1R` (Arm ARM C5.5.13; the vCPU's EL1 registers and `VTTBR_EL2` are
/// live while its exit is handled). `None` if the translation faults or ends
/// outside `banks`. `PAR_EL1` is the guest's; it is put back.
pub fn guest_instruction(banks: &[PhysRange], pc: u64) -> Option<u32> {
    let par: u64;
    // SAFETY: `AT` only writes `PAR_EL1`, which is restored before the guest runs
    // again; it changes no memory and no translation.
    unsafe {
        asm!(
            "mrs {saved}, par_el1",
            "at s12e1r, {va}",
            "isb",
            "mrs {par}, par_el1",
            "msr par_el1, {saved}",
            saved = out(reg) _,
            par = out(reg) par,
            va = in(reg) pc,
            options(nostack)
        );
    }
    // PAR_EL1.F (bit 0) set: the walk faulted. Otherwise PA in bits 51:12.
    if par & 1 != 0 || !pc.is_multiple_of(4) {
        return None;
    }
    let address = (par & 0x000f_ffff_ffff_f000) | (pc & 0xfff);
    let bank = banks
        .iter()
        .find(|bank| bank.start <= address && address + 4 <= bank.end)?;
    let word = read_guest_ram_u64(*bank, address & !7);
    Some((word >> (8 * (address & 4))) as u32)
}

global_asm!(
    r#"
    .section .text, "ax"
// x0: the context, x1: the exit handler, x2: the handler's data. The frame keeps
// the context pointer, so each entry reloads it from there.
    .global __transom_guest_run
__transom_guest_run:
    sub     sp, sp, #{host_frame}
    stp     x18, x19, [sp, #0]
    stp     x20, x21, [sp, #16]
    stp     x22, x23, [sp, #32]
    stp     x24, x25, [sp, #48]
    stp     x26, x27, [sp, #64]
    stp     x28, x29, [sp, #80]
    stp     x30, x0, [sp, #96]
    stp     x1, x2, [sp, #{host_handler}]
    b       __transom_guest_enter

// Entered from a lower-EL vector with the guest's x0 and x1 pushed on the EL2
// stack (just below the frame `__transom_guest_run` left) and the vector kind in x1.
    .global __transom_guest_exit
__transom_guest_exit:
    ldr     x0, [sp, #16 + {host_context}]
    stp     x2, x3, [x0, #16]
    stp     x4, x5, [x0, #32]
    stp     x6, x7, [x0, #48]
    stp     x8, x9, [x0, #64]
    stp     x10, x11, [x0, #80]
    stp     x12, x13, [x0, #96]
    stp     x14, x15, [x0, #112]
    stp     x16, x17, [x0, #128]
    stp     x18, x19, [x0, #144]
    stp     x20, x21, [x0, #160]
    stp     x22, x23, [x0, #176]
    stp     x24, x25, [x0, #192]
    stp     x26, x27, [x0, #208]
    stp     x28, x29, [x0, #224]
    str     x30, [x0, #240]
    ldp     x2, x3, [sp], #16
    stp     x2, x3, [x0, #0]
    mrs     x2, elr_el2
    mrs     x3, spsr_el2
    stp     x2, x3, [x0, #{elr}]
    mrs     x2, esr_el2
    str     x2, [x0, #{esr}]
// handler(context, kind, data), on the stack below the frame; it returns a
// `Next::code`: 0 enter with x19..x29 as they are, 1 leave, 2 enter.
    ldp     x3, x2, [sp, #{host_handler}]
    blr     x3
    cbz     x0, 1f
    cmp     x0, #1
    b.eq    __transom_guest_leave

__transom_guest_enter:
    ldr     x0, [sp, #{host_context}]
    ldp     x20, x21, [x0, #160]
    ldp     x22, x23, [x0, #176]
    ldp     x24, x25, [x0, #192]
    ldp     x26, x27, [x0, #208]
    ldp     x28, x29, [x0, #224]
    ldr     x19, [x0, #152]
// x19..x29 hold the guest's values.
1:  ldr     x0, [sp, #{host_context}]
    ldp     x1, x2, [x0, #{elr}]
    msr     elr_el2, x1
    msr     spsr_el2, x2
    ldp     x2, x3, [x0, #16]
    ldp     x4, x5, [x0, #32]
    ldp     x6, x7, [x0, #48]
    ldp     x8, x9, [x0, #64]
    ldp     x10, x11, [x0, #80]
    ldp     x12, x13, [x0, #96]
    ldp     x14, x15, [x0, #112]
    ldp     x16, x17, [x0, #128]
    ldr     x18, [x0, #144]
    ldr     x30, [x0, #240]
    ldp     x0, x1, [x0, #0]
    eret

__transom_guest_leave:
    ldp     x18, x19, [sp, #0]
    ldp     x20, x21, [sp, #16]
    ldp     x22, x23, [sp, #32]
    ldp     x24, x25, [sp, #48]
    ldp     x26, x27, [sp, #64]
    ldp     x28, x29, [sp, #80]
    ldr     x30, [sp, #96]
    add     sp, sp, #{host_frame}
    ret
"#,
    host_frame = const HOST_FRAME,
    host_context = const HOST_FRAME_CONTEXT,
    host_handler = const HOST_FRAME_HANDLER,
    elr = const offset_of!(GuestContext, elr),
    esr = const offset_of!(GuestContext, esr),
);
