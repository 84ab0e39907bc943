//! aarch64 at EL2: entry, exception vectors, the EL2 stage-1 MMU, PSCI, semihosting,
//! stage 2 and the world switch into guests.

pub mod cpu;
mod entry;
pub mod gic;
pub mod guest;
mod mem;
pub mod memory;
pub mod mmu;
pub mod psci;
pub mod semihosting;
pub mod smp;
pub mod stage2;
pub mod stage2_probe;
pub mod vectors;

pub use entry::{MAX_CPUS, STACK_SIZE};
