//! What the kernel reads from the firmware's device tree: RAM, `/chosen`, CPUs, PSCI.

use fdt::Fdt;
use fdt::node::FdtNode;
use transom_boards::PhysRange;

/// The most RAM ranges the kernel records.
pub const MAX_RANGES: usize = 8;
/// The most CPUs the kernel records from the tree.
pub const MAX_TREE_CPUS: usize = 16;

/// Why the firmware's device tree cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeError {
    /// No blob with a valid header at the address in x0.
    NoBlob {
        /// The address the firmware passed.
        address: usize,
    },
    /// The `fdt` crate rejected the blob.
    Malformed,
    /// No `/memory` node with a `reg`.
    NoMemory,
    /// No `/cpus` node with a `cpu` child.
    NoCpus,
    /// More entries than the kernel has room for.
    TooMany {
        /// What there are too many of.
        what: &'static str,
    },
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

/// The parts of the firmware's tree the kernel uses.
pub struct FirmwareTree {
    fdt: Fdt<'static>,
    /// Where the blob lies.
    pub blob: PhysRange,
}

impl FirmwareTree {
    /// Parses the blob `bytes` found at `address`.
    pub fn parse(address: usize, bytes: Option<&'static [u8]>) -> Result<FirmwareTree, TreeError> {
        let bytes = bytes.ok_or(TreeError::NoBlob { address })?;
        let fdt = Fdt::new(bytes).map_err(|_| TreeError::Malformed)?;
        let blob = PhysRange::new(address as u64, bytes.len() as u64);
        Ok(FirmwareTree { fdt, blob })
    }

    /// RAM ranges from every `memory` node, up to [`MAX_RANGES`].
    pub fn memory(&self) -> Result<Ranges, TreeError> {
        let mut ranges = Ranges::new();
        let memory_nodes = self.fdt.all_nodes().filter(|node| is_memory_node(node));
        for node in memory_nodes {
            let Some(regions) = node.reg() else { continue };
            for region in regions {
                let size = region.size.unwrap_or(0) as u64;
                if size > 0 {
                    let range = PhysRange::new(region.starting_address as u64, size);
                    ranges.push(range).map_err(|_| TreeError::TooMany { what: "memory ranges" })?;
                }
            }
        }
        if ranges.is_empty() {
            return Err(TreeError::NoMemory);
        }
        Ok(ranges)
    }

    /// `/chosen/bootargs`, empty if absent.
    pub fn bootargs(&self) -> &'static str {
        self.fdt
            .find_node("/chosen")
            .and_then(|chosen| chosen.property("bootargs"))
            .and_then(|bootargs| bootargs.as_str())
            .unwrap_or("")
    }

    /// The initrd range from `/chosen/linux,initrd-start` and `linux,initrd-end`.
    pub fn initrd(&self) -> Option<PhysRange> {
        let chosen = self.fdt.find_node("/chosen")?;
        let start = chosen.property("linux,initrd-start")?.as_usize()? as u64;
        let end = chosen.property("linux,initrd-end")?.as_usize()? as u64;
        (start < end).then_some(PhysRange { start, end })
    }

    /// `/psci/method`, if there is a PSCI node.
    pub fn psci_method(&self) -> Option<&'static str> {
        let psci = self
            .fdt
            .find_compatible(&["arm,psci-1.0", "arm,psci-0.2", "arm,psci"])?;
        psci.property("method")?.as_str()
    }

    /// The CPUs under `/cpus`, in tree order, up to [`MAX_TREE_CPUS`].
    pub fn cpus(&self) -> Result<Cpus, TreeError> {
        let cpus_node = self.fdt.find_node("/cpus").ok_or(TreeError::NoCpus)?;
        let mut cpus = Cpus::new();
        for node in cpus_node.children().filter(|node| is_cpu_node(node)) {
            let Some(mpidr) = node.reg().and_then(|mut reg| reg.next()) else {
                continue;
            };
            let enable_method = node
                .property("enable-method")
                .and_then(|method| method.as_str());
            let release_address = node
                .property("cpu-release-addr")
                .and_then(|address| address.as_usize())
                .map(|address| address as u64);
            let cpu = TreeCpu {
                mpidr: mpidr.starting_address as u64,
                release_address,
                psci: enable_method == Some("psci"),
            };
            cpus.push(cpu).map_err(|_| TreeError::TooMany { what: "CPUs" })?;
        }
        if cpus.is_empty() {
            return Err(TreeError::NoCpus);
        }
        Ok(cpus)
    }
}

fn is_memory_node(node: &FdtNode<'_, '_>) -> bool {
    let device_type = node
        .property("device_type")
        .and_then(|device_type| device_type.as_str());
    device_type == Some("memory") || node.name == "memory" || node.name.starts_with("memory@")
}

fn is_cpu_node(node: &FdtNode<'_, '_>) -> bool {
    let device_type = node
        .property("device_type")
        .and_then(|device_type| device_type.as_str());
    device_type == Some("cpu")
}

/// RAM ranges, in a fixed-capacity list usable before the heap exists.
pub type Ranges = heapless::Vec<PhysRange, MAX_RANGES>;
/// CPUs, in a fixed-capacity list.
pub type Cpus = heapless::Vec<TreeCpu, MAX_TREE_CPUS>;
