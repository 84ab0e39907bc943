//! Puts the kernel's linker script where the board binaries' link step finds it.

use std::path::PathBuf;

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::copy("transom.ld", out_dir.join("transom.ld")).expect("copy transom.ld");
    println!("cargo:rustc-link-search={}", out_dir.display());
    println!("cargo:rerun-if-changed=transom.ld");
}
