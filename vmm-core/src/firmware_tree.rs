//! What the hypervisor reads from the firmware's device tree: RAM, `/chosen`, CPUs,
//! PSCI.
//!
//! Parsed with the `fdt` crate's 0.2 line: 0.1.5 loses every node after an `FDT_NOP`
//! token, and libfdt edits (QEMU adding `/chosen/bootargs` or rewriting `/memory`,
//! the Pi firmware patching its tree) leave such tokens behind. Everything is kept in
//! fixed-capacity lists, because the kernel reads the tree before its heap exists;
//! only what the nodes decode, which the kernel asks for once its heap is up, is
//! collected on the heap.

use alloc::vec::Vec;
use core::cell::OnceCell;

use fdt::Fdt;
use fdt::nodes::Node;
use fdt::parsing::NoPanic;
use fdt::parsing::unaligned::UnalignedParser;
use transom_boards::PhysRange;

/// The most RAM ranges recorded.
pub const MAX_RANGES: usize = 8;
/// The most CPUs recorded.
pub const MAX_TREE_CPUS: usize = 16;

/// RAM ranges.
pub type Ranges = heapless::Vec<PhysRange, MAX_RANGES>;
/// CPUs.
pub type Cpus = heapless::Vec<TreeCpu, MAX_TREE_CPUS>;

type TreeNode<'a> = Node<'a, (UnalignedParser<'a>, NoPanic)>;

/// Why the firmware's device tree cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeError {
    /// No blob with a valid header at the address the firmware passed.
    NoBlob {
        /// The address.
        address: usize,
    },
    /// The blob's structure does not parse.
    Malformed,
    /// No `memory` node with a `reg`.
    NoMemory,
    /// No `/cpus` node with a `cpu` child.
    NoCpus,
    /// More entries than the hypervisor has room for.
    TooMany {
        /// What there are too many of.
        what: &'static str,
    },
}

impl From<fdt::FdtError> for TreeError {
    fn from(_: fdt::FdtError) -> Self {
        TreeError::Malformed
    }
}

/// One CPU as the tree describes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeCpu {
    /// `reg`: the CPU's `MPIDR` affinity.
    pub mpidr: u64,
    /// `cpu-release-addr`, for `enable-method = "spin-table"`.
    pub release_address: Option<u64>,
    /// `enable-method = "psci"`.
    pub psci: bool,
}

/// The firmware's tree.
pub struct FirmwareTree<'a> {
    fdt: Fdt<'a, (UnalignedParser<'a>, NoPanic)>,
    bytes: &'a [u8],
    /// Where the blob lies.
    pub blob: PhysRange,
    /// `/chosen`, looked up once: the boot reads its properties several times, and
    /// each path lookup walks the tree.
    chosen: Result<Option<TreeNode<'a>>, TreeError>,
    /// What the tree's nodes decode, collected by the first [`FirmwareTree::decodes`].
    decoded: OnceCell<Result<Vec<PhysRange>, TreeError>>,
}

impl<'a> FirmwareTree<'a> {
    /// Parses the blob `bytes` found at `address` (`None`: no valid header there).
    pub fn parse(address: usize, bytes: Option<&'a [u8]>) -> Result<FirmwareTree<'a>, TreeError> {
        let bytes = bytes.ok_or(TreeError::NoBlob { address })?;
        let fdt = Fdt::new_unaligned_fallible(bytes)?;
        let blob = PhysRange::new(address as u64, bytes.len() as u64);
        let chosen = fdt.find_node("/chosen").map_err(TreeError::from);
        Ok(FirmwareTree {
            fdt,
            bytes,
            blob,
            chosen,
            decoded: OnceCell::new(),
        })
    }

    fn node(&self, path: &str) -> Result<Option<TreeNode<'a>>, TreeError> {
        Ok(self.fdt.find_node(path)?)
    }

    /// RAM ranges from every `memory` node under the root.
    pub fn memory(&self) -> Result<Ranges, TreeError> {
        let mut ranges = Ranges::new();
        let root = self.node("/")?.ok_or(TreeError::Malformed)?;
        for node in root.children()?.iter() {
            let node = node?;
            if !is_memory_node(&node)? {
                continue;
            }
            let Some(reg) = node.reg()? else { continue };
            for entry in reg.iter::<u64, u64>() {
                let entry = entry.map_err(|_| TreeError::Malformed)?;
                if entry.len == 0 {
                    continue;
                }
                let range = PhysRange::new(entry.address, entry.len);
                ranges.push(range).map_err(|_| TreeError::TooMany {
                    what: "memory ranges",
                })?;
            }
        }
        if ranges.is_empty() {
            return Err(TreeError::NoMemory);
        }
        Ok(ranges)
    }

    /// `/chosen/bootargs`, empty if absent.
    pub fn bootargs(&self) -> Result<&'a str, TreeError> {
        let Some(chosen) = self.chosen? else {
            return Ok("");
        };
        Ok(string_property(&chosen, "bootargs")?.unwrap_or(""))
    }

    /// The initrd from `/chosen/linux,initrd-start` and `linux,initrd-end`.
    pub fn initrd(&self) -> Result<Option<PhysRange>, TreeError> {
        let Some(chosen) = self.chosen? else {
            return Ok(None);
        };
        let start = integer_property(&chosen, "linux,initrd-start")?;
        let end = integer_property(&chosen, "linux,initrd-end")?;
        match (start, end) {
            (Some(start), Some(end)) if start < end => Ok(Some(PhysRange { start, end })),
            _ => Ok(None),
        }
    }

    /// `/psci/method` (`"smc"` or `"hvc"`), if the tree has a PSCI node.
    pub fn psci_method(&self) -> Result<Option<&'a str>, TreeError> {
        let Some(psci) = self.node("/psci")? else {
            return Ok(None);
        };
        string_property(&psci, "method")
    }

    /// The CPUs under `/cpus`, in tree order.
    pub fn cpus(&self) -> Result<Cpus, TreeError> {
        let cpus_node = self.node("/cpus")?.ok_or(TreeError::NoCpus)?;
        let mut cpus = Cpus::new();
        for node in cpus_node.children()?.iter() {
            let node = node?;
            if string_property(&node, "device_type")? != Some("cpu") {
                continue;
            }
            let Some(mpidr) = integer_property(&node, "reg")? else {
                continue;
            };
            let cpu = TreeCpu {
                mpidr,
                release_address: integer_property(&node, "cpu-release-addr")?,
                psci: string_property(&node, "enable-method")? == Some("psci"),
            };
            cpus.push(cpu)
                .map_err(|_| TreeError::TooMany { what: "CPUs" })?;
        }
        if cpus.is_empty() {
            return Err(TreeError::NoCpus);
        }
        Ok(cpus)
    }
}

impl FirmwareTree<'_> {
    /// Reserved RAM: the `/memreserve/` entries of the blob's header and the `reg`
    /// of each `/reserved-memory` child (Devicetree Specification v0.4, 5.3 and
    /// 3.5).
    pub fn reserved_memory(&self) -> Result<Ranges, TreeError> {
        let mut ranges = Ranges::new();
        let mut push = |range: PhysRange| {
            ranges.push(range).map_err(|_| TreeError::TooMany {
                what: "reserved ranges",
            })
        };
        for entry in self.memory_reservations() {
            push(entry?)?;
        }
        let Some(reserved) = self.node("/reserved-memory")? else {
            return Ok(ranges);
        };
        for child in reserved.children()?.iter() {
            let Some(reg) = child?.reg()? else { continue };
            for entry in reg.iter::<u64, u64>().flatten() {
                if entry.len > 0 {
                    push(PhysRange::new(entry.address, entry.len))?;
                }
            }
        }
        Ok(ranges)
    }

    /// The header's memory reservation block: big-endian (address, size) pairs up
    /// to a (0, 0) entry.
    fn memory_reservations(&self) -> impl Iterator<Item = Result<PhysRange, TreeError>> + '_ {
        let offset = self.fdt.header().memory_reserve_map_offset as usize;
        let block = self.bytes.get(offset..).unwrap_or_default();
        block
            .chunks(16)
            .map(|entry| {
                let address = entry.get(..8).and_then(|bytes| bytes.try_into().ok());
                let size = entry.get(8..16).and_then(|bytes| bytes.try_into().ok());
                match (address, size) {
                    (Some(address), Some(size)) => {
                        Ok((u64::from_be_bytes(address), u64::from_be_bytes(size)))
                    }
                    _ => Err(TreeError::Malformed),
                }
            })
            .take_while(|entry| *entry != Ok((0, 0)))
            .map(|entry| {
                let (address, size) = entry?;
                PhysRange::checked(address, size).ok_or(TreeError::Malformed)
            })
    }

    /// Whether some node decodes `address`: a `reg` entry holds it, or a window
    /// (`ranges`) of a bus node that is itself a device holds it. A bus counts as a
    /// device when it has a `reg` (a PCIe host bridge: its `ranges` are its MMIO
    /// windows) or no children (QEMU's platform bus, filled at run time); a plain
    /// translating bus (the Pi's `/soc`) does not, or every address in it would
    /// count. Addresses are translated to CPU physical addresses through every
    /// enclosing bus's `ranges`; nodes under a bus without `ranges` (I2C, SPI
    /// devices) are not memory-mapped and are skipped.
    ///
    /// The first call walks the tree once and keeps what every node decodes (on the
    /// heap: call it only once the heap exists); later calls only search that list,
    /// so checking each of a board's devices costs one walk, not one per device.
    pub fn decodes(&self, address: u64) -> Result<bool, TreeError> {
        let decoded = self.decoded.get_or_init(|| self.decoded_ranges());
        match decoded {
            Ok(ranges) => Ok(ranges.iter().any(|range| range.contains(address))),
            Err(error) => Err(*error),
        }
    }

    /// Every CPU physical range some node decodes, in one walk of the tree.
    fn decoded_ranges(&self) -> Result<Vec<PhysRange>, TreeError> {
        let root = self.node("/")?.ok_or(TreeError::Malformed)?;
        let identity = BusTranslation::Identity;
        let mut decoded = Vec::new();
        decoded_below(&root, &[identity], 0, &mut decoded)?;
        Ok(decoded)
    }
}

/// How deep [`FirmwareTree::decodes`] looks; real trees nest buses 3 or 4 deep.
const MAX_BUS_DEPTH: usize = 8;

/// How one bus level maps its children's addresses to its own parent's.
#[derive(Clone, Copy)]
enum BusTranslation<'a> {
    /// An empty `ranges`: the same addresses.
    Identity,
    /// A `ranges` list.
    Windows(fdt::properties::ranges::Ranges<'a>),
}

/// Translates `address` of a node's child up through `levels` (innermost last) to
/// a CPU physical address.
fn translate(levels: &[BusTranslation<'_>], address: u64) -> Option<u64> {
    let mut address = address;
    for level in levels.iter().rev() {
        let BusTranslation::Windows(ranges) = level else {
            continue;
        };
        let window = ranges.iter::<u128, u64, u64>().flatten().find(|window| {
            let child = window.child_bus_address;
            child <= u128::from(address) && u128::from(address) < child + u128::from(window.len)
        })?;
        let offset = u128::from(address) - window.child_bus_address;
        address = window.parent_bus_address.checked_add(offset as u64)?;
    }
    Some(address)
}

/// The range of `len` bytes at `start`, cut at the top of the address space.
fn decoded_range(start: u64, len: u64) -> PhysRange {
    PhysRange::new(start, len.min(u64::MAX - start))
}

/// Adds to `decoded` what `node`'s children (and theirs, through buses) decode.
fn decoded_below(
    node: &TreeNode<'_>,
    levels: &[BusTranslation<'_>],
    depth: usize,
    decoded: &mut Vec<PhysRange>,
) -> Result<(), TreeError> {
    if depth >= MAX_BUS_DEPTH {
        return Ok(());
    }
    for child in node.children()?.iter() {
        let child = child?;
        if let Some(reg) = child.reg()? {
            for entry in reg.iter::<u64, u64>().flatten() {
                if let Some(start) = translate(levels, entry.address) {
                    decoded.push(decoded_range(start, entry.len));
                }
            }
        }
        let Some(ranges) = child.raw_property("ranges")? else {
            continue;
        };
        let translation = if ranges.value.is_empty() {
            BusTranslation::Identity
        } else {
            let Some(windows) = child.ranges()? else {
                continue;
            };
            let is_device = child.reg()?.is_some() || child.children()?.iter().next().is_none();
            let decoding_windows = windows.iter::<u128, u64, u64>().flatten();
            for window in decoding_windows.filter(|_| is_device) {
                if let Some(start) = translate(levels, window.parent_bus_address) {
                    decoded.push(decoded_range(start, window.len));
                }
            }
            BusTranslation::Windows(windows)
        };
        let mut inner: heapless::Vec<BusTranslation<'_>, MAX_BUS_DEPTH> = heapless::Vec::new();
        inner
            .extend_from_slice(levels)
            .map_err(|_| TreeError::TooMany {
                what: "nested buses",
            })?;
        inner.push(translation).map_err(|_| TreeError::TooMany {
            what: "nested buses",
        })?;
        decoded_below(&child, &inner, depth + 1, decoded)?;
    }
    Ok(())
}

fn is_memory_node(node: &TreeNode<'_>) -> Result<bool, TreeError> {
    if string_property(node, "device_type")? == Some("memory") {
        return Ok(true);
    }
    Ok(node.name()?.name == "memory")
}

fn string_property<'a>(node: &TreeNode<'a>, name: &str) -> Result<Option<&'a str>, TreeError> {
    let Some(property) = node.raw_property(name)? else {
        return Ok(None);
    };
    property
        .as_value::<&str>()
        .map(Some)
        .map_err(|_| TreeError::Malformed)
}

/// A one- or two-cell integer property.
fn integer_property(node: &TreeNode<'_>, name: &str) -> Result<Option<u64>, TreeError> {
    let Some(property) = node.raw_property(name)? else {
        return Ok(None);
    };
    property
        .as_value::<u64>()
        .or_else(|_| property.as_value::<u32>().map(u64::from))
        .map(Some)
        .map_err(|_| TreeError::Malformed)
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;
    use vm_fdt::FdtWriter;

    /// A Pi-like `/soc` bus (VPU bus addresses translated by `ranges`) with a
    /// UART, an I2C bus without `ranges` and a PCIe-like bridge with a `reg` and an
    /// MMIO window.
    fn bus_tree() -> Vec<u8> {
        let mut fdt = FdtWriter::new().expect("writer");
        let root = fdt.begin_node("").expect("root");
        fdt.property_u32("#address-cells", 2).expect("prop");
        fdt.property_u32("#size-cells", 1).expect("prop");
        let soc = fdt.begin_node("soc").expect("node");
        fdt.property_u32("#address-cells", 1).expect("prop");
        fdt.property_u32("#size-cells", 1).expect("prop");
        fdt.property_array_u32("ranges", &[0x7e00_0000, 0x0, 0xfe00_0000, 0x0180_0000])
            .expect("prop");
        let uart = fdt.begin_node("serial@7e201000").expect("node");
        fdt.property_array_u32("reg", &[0x7e20_1000, 0x200])
            .expect("prop");
        fdt.end_node(uart).expect("end");
        let i2c = fdt.begin_node("i2c@7e205000").expect("node");
        fdt.property_array_u32("reg", &[0x7e20_5000, 0x200])
            .expect("prop");
        fdt.property_u32("#address-cells", 1).expect("prop");
        fdt.property_u32("#size-cells", 0).expect("prop");
        let eeprom = fdt.begin_node("eeprom@50").expect("node");
        fdt.property_u32("reg", 0x50).expect("prop");
        fdt.end_node(eeprom).expect("end");
        fdt.end_node(i2c).expect("end");
        fdt.end_node(soc).expect("end");
        let pcie = fdt.begin_node("pcie@10000000").expect("node");
        fdt.property_u32("#address-cells", 3).expect("prop");
        fdt.property_u32("#size-cells", 2).expect("prop");
        fdt.property_array_u32("reg", &[0x40, 0x1000_0000, 0x1000_0000])
            .expect("prop");
        // One 32-bit MMIO window: PCI 0x1000_0000 -> CPU 0x1000_0000, 0x2eff_0000 bytes.
        fdt.property_array_u32(
            "ranges",
            &[0x0200_0000, 0, 0x1000_0000, 0, 0x1000_0000, 0, 0x2eff_0000],
        )
        .expect("prop");
        fdt.end_node(pcie).expect("end");
        fdt.end_node(root).expect("end");
        fdt.finish().expect("finish")
    }

    /// `/memreserve/` entries and `/reserved-memory` children both count.
    #[test]
    fn reserved_memory_from_header_and_nodes() {
        let reservations = [vm_fdt::FdtReserveEntry::new(0, 0x1000).expect("entry")];
        let mut fdt = FdtWriter::new_with_mem_reserv(&reservations).expect("writer");
        let root = fdt.begin_node("").expect("root");
        fdt.property_u32("#address-cells", 2).expect("prop");
        fdt.property_u32("#size-cells", 2).expect("prop");
        let reserved = fdt.begin_node("reserved-memory").expect("node");
        fdt.property_u32("#address-cells", 2).expect("prop");
        fdt.property_u32("#size-cells", 2).expect("prop");
        fdt.property_null("ranges").expect("prop");
        let carve_out = fdt.begin_node("linux,cma@3b400000").expect("node");
        fdt.property_array_u64("reg", &[0x3b40_0000, 0x4c0_0000])
            .expect("prop");
        fdt.end_node(carve_out).expect("end");
        fdt.end_node(reserved).expect("end");
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");
        let tree = FirmwareTree::parse(0x1000, Some(&blob)).expect("parses");
        let ranges = tree.reserved_memory().expect("reads");
        assert_eq!(
            ranges.as_slice(),
            &[
                PhysRange::new(0, 0x1000),
                PhysRange::new(0x3b40_0000, 0x4c0_0000)
            ]
        );
    }

    #[test]
    fn devices_are_found_at_their_translated_addresses() {
        let blob = bus_tree();
        let tree = FirmwareTree::parse(0x1000, Some(&blob)).expect("parses");
        // 0x7e20_1000 on the VPU bus is 0xfe20_1000 for the CPU.
        assert_eq!(tree.decodes(0xfe20_1000), Ok(true));
        assert_eq!(tree.decodes(0xfe20_11ff), Ok(true));
        assert_eq!(tree.decodes(0xfe20_1200), Ok(false));
        assert_eq!(tree.decodes(0x7e20_1000), Ok(false));
        // The translating bus's window is not a device: an empty slot in it is absent.
        assert_eq!(tree.decodes(0xfe30_0000), Ok(false));
        // I2C addresses are not memory addresses.
        assert_eq!(tree.decodes(0x50), Ok(false));
        // The host bridge decodes its ECAM (`reg`) and its MMIO window (`ranges`).
        assert_eq!(tree.decodes(0x40_1000_0000), Ok(true));
        assert_eq!(tree.decodes(0x3eff_0000 - 1), Ok(true));
        assert_eq!(tree.decodes(0x3eff_0000), Ok(false));
    }

    /// A QEMU-`virt`-like tree: two memory banks, PSCI CPUs, bootargs, an initrd.
    fn sample_tree() -> Vec<u8> {
        let mut fdt = FdtWriter::new().expect("writer");
        let root = fdt.begin_node("").expect("root");
        fdt.property_u32("#address-cells", 2).expect("prop");
        fdt.property_u32("#size-cells", 2).expect("prop");
        let chosen = fdt.begin_node("chosen").expect("node");
        fdt.property_string("bootargs", "transom.exit=semihosting")
            .expect("prop");
        fdt.property_u64("linux,initrd-start", 0x4800_0000)
            .expect("prop");
        fdt.property_u32("linux,initrd-end", 0x4810_0000)
            .expect("prop");
        fdt.end_node(chosen).expect("end");
        for (name, base) in [
            ("memory@40000000", 0x4000_0000u64),
            ("memory@100000000", 0x1_0000_0000),
        ] {
            let memory = fdt.begin_node(name).expect("node");
            fdt.property_string("device_type", "memory").expect("prop");
            fdt.property_array_u64("reg", &[base, 0x4000_0000])
                .expect("prop");
            fdt.end_node(memory).expect("end");
        }
        let psci = fdt.begin_node("psci").expect("node");
        fdt.property_string("method", "smc").expect("prop");
        fdt.end_node(psci).expect("end");
        let cpus = fdt.begin_node("cpus").expect("node");
        fdt.property_u32("#address-cells", 1).expect("prop");
        fdt.property_u32("#size-cells", 0).expect("prop");
        for index in 0..2u32 {
            let cpu = fdt.begin_node(&std::format!("cpu@{index}")).expect("node");
            fdt.property_string("device_type", "cpu").expect("prop");
            fdt.property_u32("reg", index).expect("prop");
            fdt.property_string("enable-method", "psci").expect("prop");
            fdt.end_node(cpu).expect("end");
        }
        fdt.end_node(cpus).expect("end");
        fdt.end_node(root).expect("end");
        fdt.finish().expect("finish")
    }

    /// Inserts `count` `FDT_NOP` tokens before the `cpus` node, as libfdt leaves them
    /// after deleting a node (Devicetree Specification v0.4, 5.4.1: FDT_NOP "shall be
    /// ignored by any program parsing the device tree").
    fn with_nops_before_cpus(blob: &[u8], count: usize) -> Vec<u8> {
        const FDT_BEGIN_NODE: [u8; 4] = [0, 0, 0, 1];
        const FDT_NOP: [u8; 4] = [0, 0, 0, 4];
        let be32 =
            |offset: usize| u32::from_be_bytes(blob[offset..offset + 4].try_into().expect("4"));
        let off_struct = be32(8) as usize;
        let needle = [&FDT_BEGIN_NODE[..], b"cpus\0"].concat();
        let position = off_struct
            + blob[off_struct..]
                .windows(needle.len())
                .position(|window| window == needle.as_slice())
                .expect("cpus node");
        let extra = 4 * count;
        let mut patched = Vec::new();
        patched.extend_from_slice(&blob[..position]);
        for _ in 0..count {
            patched.extend_from_slice(&FDT_NOP);
        }
        patched.extend_from_slice(&blob[position..]);
        // Header fields after the structure block move: totalsize, off_dt_strings,
        // size_dt_struct (spec 5.2).
        for (field, grows) in [(4usize, true), (12, true), (36, true)] {
            let value = be32(field) as usize + if grows { extra } else { 0 };
            patched[field..field + 4].copy_from_slice(&(value as u32).to_be_bytes());
        }
        patched
    }

    #[test]
    fn reads_memory_bootargs_initrd_psci_and_cpus() {
        let blob = sample_tree();
        let tree = FirmwareTree::parse(0x4000_0000, Some(&blob)).expect("parses");
        let memory = tree.memory().expect("memory");
        assert_eq!(
            memory.as_slice(),
            [
                PhysRange::new(0x4000_0000, 0x4000_0000),
                PhysRange::new(0x1_0000_0000, 0x4000_0000)
            ]
        );
        assert_eq!(tree.bootargs(), Ok("transom.exit=semihosting"));
        assert_eq!(
            tree.initrd(),
            Ok(Some(PhysRange::new(0x4800_0000, 0x10_0000)))
        );
        assert_eq!(tree.psci_method(), Ok(Some("smc")));
        let cpus = tree.cpus().expect("cpus");
        assert_eq!(cpus.len(), 2);
        assert_eq!(cpus[1].mpidr, 1);
        assert!(cpus[1].psci);
        assert_eq!(cpus[1].release_address, None);
    }

    #[test]
    fn nodes_after_nop_tokens_are_found() {
        let blob = with_nops_before_cpus(&sample_tree(), 19);
        let tree = FirmwareTree::parse(0, Some(&blob)).expect("parses");
        assert_eq!(tree.cpus().expect("cpus after NOPs").len(), 2);
    }

    #[test]
    fn a_missing_blob_or_node_is_an_error_not_a_panic() {
        assert_eq!(
            FirmwareTree::parse(0x1234, None).err(),
            Some(TreeError::NoBlob { address: 0x1234 })
        );
        let mut fdt = FdtWriter::new().expect("writer");
        let root = fdt.begin_node("").expect("root");
        fdt.end_node(root).expect("end");
        let blob = fdt.finish().expect("finish");
        let tree = FirmwareTree::parse(0, Some(&blob)).expect("parses");
        assert_eq!(tree.memory(), Err(TreeError::NoMemory));
        assert_eq!(tree.cpus(), Err(TreeError::NoCpus));
        assert_eq!(tree.bootargs(), Ok(""));
        assert_eq!(tree.psci_method(), Ok(None));
    }
}
