//! Device drivers for Transom.
//!
//! A driver takes a [`safe_mmio::UniqueMmioPointer`] to its register block and never
//! names an address: the board crate is the one place where a base address becomes a
//! pointer. Register blocks are `#[repr(C)]` structs with their documented offsets
//! asserted at compile time, so the same types serve the real device, the fake
//! register blocks in the host tests and, later, the hypervisor's device emulation.

#![no_std]
#![forbid(unsafe_code)]

pub mod mini_uart;
pub mod pl011;
