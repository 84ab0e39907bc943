//! Host-testable hypervisor logic shared by the kernel and the host tools.
//!
//! Everything here is `no_std`, free of `unsafe` and free of addresses: the kernel
//! feeds it register values and acts on the answers. Later issues add the stage-2
//! builder, device windows and the MMIO bus here.

#![no_std]
#![forbid(unsafe_code)]

pub mod bootargs;
pub mod esr;
pub mod firmware_tree;
pub mod verdict;
