//! Transom QEMU integration tests: see tests/.
