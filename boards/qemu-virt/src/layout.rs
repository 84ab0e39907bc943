// The image layout of QEMU `virt`, shared by the build script and the board table.

/// QEMU loads a raw arm64 `Image` at RAM base (0x4000_0000) + `text_offset` (0x8_0000).
pub const LOAD_ADDRESS: u64 = 0x4008_0000;
