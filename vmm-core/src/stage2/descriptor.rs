//! Stage-2 descriptors (Arm ARM D8.3 "Translation table descriptor formats", D8.6.5
//! "Stage 2 memory type and Cacheability attributes when FEAT_S2FWB is disabled",
//! D8.4.3 "Stage 2 data access permissions", D8.4.2 execute-never).

use transom_boards::MemoryAttributes;

/// Bits [1:0]: a valid table (levels 0..2) or page (level 3) descriptor.
const TABLE_OR_PAGE: u64 = 0b11;
/// Bits [1:0]: a valid block descriptor.
const BLOCK: u64 = 0b01;
const TYPE_MASK: u64 = 0b11;
const MEMATTR_SHIFT: u32 = 2;
const MEMATTR_MASK: u64 = 0b1111 << MEMATTR_SHIFT;
const S2AP_READ: u64 = 1 << 6;
const S2AP_WRITE: u64 = 1 << 7;
const SH_SHIFT: u32 = 8;
const INNER_SHAREABLE: u64 = 0b11 << SH_SHIFT;
const ACCESS_FLAG: u64 = 1 << 10;
/// XN[1:0] at bits [54:53]; 0b10 is execute-never at EL1 and EL0 (with or without
/// FEAT_XNX).
const EXECUTE_NEVER: u64 = 0b10 << 53;
/// Output address bits [47:12]; a granule's page offset bits below are zero.
const ADDRESS_MASK: u64 = 0x0000_ffff_ffff_f000;

/// Stage-2 `MemAttr[3:0]` (D8.6.5, table D8-87): Device types 0b00xx, Normal
/// outer in bits 3..2, inner in bits 1..0, with 0b01 non-cacheable, 0b11 write-back.
pub const fn mem_attr(attributes: MemoryAttributes) -> u64 {
    match attributes {
        MemoryAttributes::DeviceNGnRnE => 0b0000,
        MemoryAttributes::DeviceNGnRE => 0b0001,
        MemoryAttributes::DeviceGRE => 0b0011,
        MemoryAttributes::NormalNonCacheable => 0b0101,
        MemoryAttributes::NormalWriteBack => 0b1111,
    }
}

const fn attributes_of(mem_attr: u64) -> Option<MemoryAttributes> {
    match mem_attr {
        0b0000 => Some(MemoryAttributes::DeviceNGnRnE),
        0b0001 => Some(MemoryAttributes::DeviceNGnRE),
        0b0011 => Some(MemoryAttributes::DeviceGRE),
        0b0101 => Some(MemoryAttributes::NormalNonCacheable),
        0b1111 => Some(MemoryAttributes::NormalWriteBack),
        _ => None,
    }
}

/// What a guest may do with a mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permissions {
    /// Loads.
    pub read: bool,
    /// Stores.
    pub write: bool,
    /// Instruction fetches.
    pub execute: bool,
}

impl Permissions {
    /// Guest RAM: read, write, execute.
    pub const RAM: Permissions = Permissions {
        read: true,
        write: true,
        execute: true,
    };
    /// A device: read and write, never execute.
    pub const DEVICE: Permissions = Permissions {
        read: true,
        write: true,
        execute: false,
    };
    /// Read-only data, not executable.
    pub const READ_ONLY: Permissions = Permissions {
        read: true,
        write: false,
        execute: false,
    };
}

/// The attributes of a leaf mapping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    /// Memory type.
    pub attributes: MemoryAttributes,
    /// Access permissions.
    pub permissions: Permissions,
}

impl Leaf {
    /// Guest RAM: Normal write-back, read/write/execute.
    pub const RAM: Leaf = Leaf {
        attributes: MemoryAttributes::NormalWriteBack,
        permissions: Permissions::RAM,
    };

    /// A device with `attributes`: read/write, execute-never. Devices are never
    /// executable, whatever the caller asks.
    pub const fn device(attributes: MemoryAttributes) -> Leaf {
        Leaf {
            attributes,
            permissions: Permissions::DEVICE,
        }
    }

    /// The descriptor bits other than the type and the address: MemAttr, S2AP, SH
    /// (inner shareable for Normal memory; Device memory is always treated as outer
    /// shareable, D8.6.2), AF set (so the first access does not fault) and XN.
    const fn bits(&self) -> u64 {
        let mut bits = mem_attr(self.attributes) << MEMATTR_SHIFT | ACCESS_FLAG;
        if self.permissions.read {
            bits |= S2AP_READ;
        }
        if self.permissions.write {
            bits |= S2AP_WRITE;
        }
        let is_normal = matches!(
            self.attributes,
            MemoryAttributes::NormalNonCacheable | MemoryAttributes::NormalWriteBack
        );
        if is_normal {
            bits |= INNER_SHAREABLE;
        }
        let device = !is_normal;
        if !self.permissions.execute || device {
            bits |= EXECUTE_NEVER;
        }
        bits
    }
}

/// One 64-bit translation table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Descriptor(pub u64);

/// What an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry {
    /// Nothing: accesses fault.
    Invalid,
    /// The next level's table at this physical address.
    Table(u64),
    /// A block or page mapping of `output` with `leaf` attributes.
    Leaf {
        /// The output (physical) address.
        output: u64,
        /// Its attributes.
        leaf: Leaf,
    },
}

impl Descriptor {
    /// An invalid entry.
    pub const INVALID: Descriptor = Descriptor(0);

    /// A table descriptor pointing at `table`.
    pub const fn table(table: u64) -> Descriptor {
        Descriptor(table & ADDRESS_MASK | TABLE_OR_PAGE)
    }

    /// A leaf at `level` (a page at level 3, a block above) mapping `output`.
    pub const fn leaf(level: u32, output: u64, leaf: &Leaf) -> Descriptor {
        Descriptor::leaf_template(level, leaf).at(output)
    }

    /// A leaf at `level` with `leaf`'s attributes and output address 0: mapping a
    /// range writes many leaves that differ only in their address.
    pub const fn leaf_template(level: u32, leaf: &Leaf) -> Descriptor {
        let kind = if level == super::layout::LEAF_LEVEL {
            TABLE_OR_PAGE
        } else {
            BLOCK
        };
        Descriptor(leaf.bits() | kind)
    }

    /// This template with output address `output`.
    pub const fn at(self, output: u64) -> Descriptor {
        Descriptor(output & ADDRESS_MASK | self.0)
    }

    /// Whether the entry is valid.
    pub const fn is_valid(self) -> bool {
        self.0 & 1 == 1
    }

    /// Decodes the entry found at `level`.
    pub const fn decode(self, level: u32) -> Entry {
        if !self.is_valid() {
            return Entry::Invalid;
        }
        let address = self.0 & ADDRESS_MASK;
        let is_table = self.0 & TYPE_MASK == TABLE_OR_PAGE && level < super::layout::LEAF_LEVEL;
        if is_table {
            return Entry::Table(address);
        }
        let Some(attributes) = attributes_of((self.0 & MEMATTR_MASK) >> MEMATTR_SHIFT) else {
            // Not an encoding this module writes: report it as device memory with no
            // access, which is what a guest would effectively get.
            return Entry::Leaf {
                output: address,
                leaf: Leaf {
                    attributes: MemoryAttributes::DeviceNGnRnE,
                    permissions: Permissions {
                        read: false,
                        write: false,
                        execute: false,
                    },
                },
            };
        };
        let permissions = Permissions {
            read: self.0 & S2AP_READ != 0,
            write: self.0 & S2AP_WRITE != 0,
            execute: self.0 & EXECUTE_NEVER == 0,
        };
        Entry::Leaf {
            output: address,
            leaf: Leaf {
                attributes,
                permissions,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// D8.6.5 table D8-87: MemAttr encodings with FEAT_S2FWB disabled.
    #[test]
    fn memory_types_encode_as_the_arm_arm_lists() {
        assert_eq!(mem_attr(MemoryAttributes::DeviceNGnRnE), 0b0000);
        assert_eq!(mem_attr(MemoryAttributes::DeviceNGnRE), 0b0001);
        assert_eq!(mem_attr(MemoryAttributes::DeviceGRE), 0b0011);
        assert_eq!(mem_attr(MemoryAttributes::NormalNonCacheable), 0b0101);
        assert_eq!(mem_attr(MemoryAttributes::NormalWriteBack), 0b1111);
    }

    /// A 2 MiB RAM block at 0x4020_0000: block type 0b01, MemAttr 0b1111 at [5:2],
    /// S2AP 0b11 at [7:6], SH 0b11 at [9:8], AF at 10, XN clear.
    #[test]
    fn ram_block_descriptor_bits() {
        let descriptor = Descriptor::leaf(2, 0x4020_0000, &Leaf::RAM);
        assert_eq!(
            descriptor.0,
            0x4020_0000 | 0b1111 << 2 | 0b11 << 6 | 0b11 << 8 | 1 << 10 | 0b01
        );
        assert_eq!(
            descriptor.decode(2),
            Entry::Leaf {
                output: 0x4020_0000,
                leaf: Leaf::RAM
            }
        );
    }

    /// A device page: type 0b11 at level 3, Device-nGnRE, XN[1:0] = 0b10, non-shareable
    /// field left zero; a device asked to be executable is still execute-never.
    #[test]
    fn device_pages_are_never_executable() {
        let executable_device = Leaf {
            attributes: MemoryAttributes::DeviceNGnRE,
            permissions: Permissions::RAM,
        };
        let descriptor = Descriptor::leaf(3, 0x0900_0000, &executable_device);
        assert_eq!(descriptor.0 & 0b11, 0b11);
        assert_eq!((descriptor.0 >> 2) & 0b1111, 0b0001);
        assert_eq!((descriptor.0 >> 53) & 0b11, 0b10);
        assert_eq!((descriptor.0 >> 8) & 0b11, 0b00);
        let Entry::Leaf { leaf, .. } = descriptor.decode(3) else {
            panic!("a leaf");
        };
        assert!(!leaf.permissions.execute);
    }

    #[test]
    fn tables_and_invalid_entries_decode() {
        assert_eq!(
            Descriptor::table(0x8_1000).decode(1),
            Entry::Table(0x8_1000)
        );
        assert_eq!(Descriptor::INVALID.decode(1), Entry::Invalid);
        // At level 3, type 0b11 is a page, not a table.
        assert!(matches!(
            Descriptor::leaf(3, 0x1000, &Leaf::RAM).decode(3),
            Entry::Leaf { .. }
        ));
    }
}
