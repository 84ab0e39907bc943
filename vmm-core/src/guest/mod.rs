//! What a guest is given: its image (the arm64 Linux `Image` protocol), the bundle
//! that carries images, initrds and command lines to the hypervisor, and the device
//! tree each partition's guest boots with (and, for Transom-native guests, the
//! boot-info page).

pub mod boot_info;
pub mod bundle;
pub mod fdt_writer;
pub mod image;
pub mod tree;
