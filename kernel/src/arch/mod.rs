//! The architecture seam: every instruction that is not plain Rust lives below here.
//!
//! Each architecture module exports the same names; this file picks one. aarch64 at
//! EL2 is the only one so far (x86_64 with AMD SVM comes with its own issue).

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
pub use aarch64::*;

#[cfg(not(target_arch = "aarch64"))]
compile_error!("transom-kernel builds for aarch64-unknown-none-softfloat; use `cargo xtask build`");
