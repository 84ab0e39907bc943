//! Host-testable hypervisor logic shared by the kernel and the host tools.
//!
//! Everything here is `no_std`, free of `unsafe` and free of addresses: the kernel
//! feeds it register values and acts on the answers. `stage2` builds the
//! partitions' stage-2 tables and device windows; later issues add the MMIO bus.

#![no_std]
#![forbid(unsafe_code)]

extern crate alloc;

pub mod bootargs;
pub mod esr;
pub mod firmware_tree;
pub mod guest;
pub mod inject;
pub mod insn;
pub mod mmio;
pub mod psci;
pub mod rzcobs;
pub mod stage2;
pub mod verdict;
pub mod vgic;
pub mod vpl011;
pub mod width_probe;
