//! Stage 2: the translation from a partition's intermediate physical addresses to
//! physical ones, for the 4 KiB, 16 KiB and 64 KiB granules, and the device windows
//! built on it.

pub mod descriptor;
pub mod layout;
pub mod reserved;
pub mod table;
pub mod window;

#[cfg(test)]
mod tests;
