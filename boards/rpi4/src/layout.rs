// The image layout of the Raspberry Pi 4, shared by the build script and the board table.

/// The firmware loads `kernel8.img` at 0x8_0000 (`kernel_address` default for arm64).
pub const LOAD_ADDRESS: u64 = 0x8_0000;
