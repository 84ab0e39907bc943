//! Transom's test guest: a small `no_std` arm64 `Image` that reads its windows
//! from the device tree Transom generated for it and checks, one console line
//! each (`transom-test NAME: CHECK ... ok` or `... FAILED ...`, or `CHECK skipped:
//! WHY` when its machine lacks what the check needs: a virtio-mmio transport, the
//! width probe, a neighbour, a passthrough UART, as on the Pi 4):
//!
//! - `exact-address`: its virtio-mmio transport answers at the exact, not page
//!   aligned, address of its `reg` (MagicValue 0x74726976, "virt", virtio 1.2
//!   4.2.2), through a trapped window;
//! - `width-probe`: 1, 2, 4 and 8-byte reads and writes reach Transom's width probe
//!   with exactly that width (its answer encodes the width it saw);
//! - `neighbour-abort`: a read of the neighbour's transport, in the same page,
//!   aborts into the guest's own vector (`VBAR_EL1` + 0x200) with `ESR_EL1.EC`
//!   0x25 and `FAR_EL1` = the neighbour's address; the guest skips the load;
//! - `width-abort`: a 64-bit read of its own transport (virtio-mmio registers are
//!   32 bits wide) aborts the same way;
//! - `no-syndrome-abort`: a load pair (`LDP`) on its own transport, which gives the
//!   hypervisor no instruction syndrome, aborts the same way;
//! - `boot-info`: with a boot-info request in the bundle, x1 holds the boot-info
//!   page, whose entry for its transport matches the tree (without one, x1 is 0);
//! - `cpu-on`: PSCI `CPU_ON` starts its second vCPU, which prints its `MPIDR_EL1`
//!   and turns itself off; `AFFINITY_INFO` then says OFF (a partition with one
//!   vCPU checks that `CPU_ON` of another MPIDR is refused);
//! - `virtual-timer`: the virtual timer's PPI arrives through the GIC and is ended;
//! - `passthrough-irq`: a PL011 of its own raises its transmit interrupt, which
//!   arrives through the GIC;
//!
//! then prints `done` and powers off with PSCI `SYSTEM_OFF`.
//!
//! The neighbour's address and the passthrough UART come from the command line
//! (`/chosen/bootargs`: `neighbour=0x0a003c00 passthrough-uart=0x09040000`);
//! everything else from the tree.
//!
//! Built by `xtask::image::build_test_guest` for `aarch64-unknown-none` with
//! `-C relocation-model=pie` and converted to a raw `Image` by
//! `xtask::image::raw_image`. It is position independent (see `boot.rs`) because
//! the same image runs in partitions whose RAM starts at different addresses.

#![no_std]
#![no_main]

mod boot;
mod checks;
mod console;
mod exceptions;
mod gic;
mod mmio;
mod mmu;
mod psci;
mod tree;

use core::panic::PanicInfo;

unsafe extern "C" {
    static __image_start: u8;
    static __image_end: u8;
}

/// The primary vCPU, from the entry code with the MMU off: x0 = the device tree,
/// x1 = the boot-info page (0 without one).
pub extern "C" fn primary_main(tree: u64, boot_info: u64) -> ! {
    let image = (&raw const __image_start) as u64..(&raw const __image_end) as u64;
    // SAFETY: the first thing the primary vCPU does, MMU off, no other vCPU
    // running; `image` covers the image, .bss and stacks.
    unsafe { mmu::build_and_enable(image) };
    // SAFETY: the device tree's header gives its size; Transom put it in the
    // guest's RAM (booting.rst: 8-byte aligned, at most 2 MiB), mapped Normal.
    let blob = unsafe {
        let header = core::slice::from_raw_parts(tree as *const u8, 8);
        let size = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
        core::slice::from_raw_parts(tree as *const u8, size as usize)
    };
    let machine = tree::read(blob);
    console::init(machine.console);
    checks::run(&machine, boot_info)
}

/// The secondary vCPU, from PSCI `CPU_ON` with the MMU off.
pub extern "C" fn secondary_main() -> ! {
    // SAFETY: the primary built the tables before calling CPU_ON; this vCPU's MMU
    // is off.
    unsafe { mmu::enable() };
    checks::secondary()
}

#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    report!("transom-test: panic: {info}");
    psci::system_off()
}
