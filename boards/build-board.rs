//! The build script of every board crate (each `Cargo.toml` names this file):
//! writes `board.ld` (the board's load address, from its `src/layout.rs`) and links
//! the image with the kernel's `transom.ld` and defmt's `defmt.x`.

use std::path::PathBuf;

include!(concat!(env!("CARGO_MANIFEST_DIR"), "/src/layout.rs"));

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let script = format!("LOAD_ADDRESS = {LOAD_ADDRESS:#x};\n");
    std::fs::write(out_dir.join("board.ld"), script).expect("write board.ld");
    println!("cargo:rustc-link-search={}", out_dir.display());
    println!("cargo:rustc-link-arg-bins=-Ttransom.ld");
    println!("cargo:rustc-link-arg-bins=-Tdefmt.x");
    println!("cargo:rerun-if-changed=src/layout.rs");
}
