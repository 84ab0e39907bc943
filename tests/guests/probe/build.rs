//! Links the guest with `guest.ld` as a position-independent executable: the same
//! image runs in every partition, each with its RAM at a different address.

fn main() {
    let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    println!("cargo:rustc-link-search={dir}");
    println!("cargo:rustc-link-arg-bins=-Tguest.ld");
    println!("cargo:rustc-link-arg-bins=--pie");
    println!("cargo:rustc-link-arg-bins=-znotext");
    println!("cargo:rerun-if-changed=guest.ld");
}
