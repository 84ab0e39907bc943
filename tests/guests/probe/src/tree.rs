//! What the guest reads from the device tree Transom generated for it (x0 at
//! entry): its name, console, virtio-mmio transports, GIC, virtual timer PPI,
//! CPUs, the width probe, and from `/chosen/bootargs` the neighbour's transport
//! and the UART whose interrupt it may take.

use fdt::Fdt;
use fdt::nodes::Node;
use fdt::parsing::Panic;
use fdt::parsing::unaligned::UnalignedParser;
use heapless::Vec;

type Tree<'a> = Fdt<'a, (UnalignedParser<'a>, Panic)>;
type TreeNode<'a> = Node<'a, (UnalignedParser<'a>, Panic)>;

/// The most transports, CPUs the guest records.
const MAX: usize = 8;

/// The first PPI and SPI INTIDs (GIC architecture, IHI 0069H 2.2.1).
const FIRST_PPI: u32 = 16;
const FIRST_SPI: u32 = 32;

/// The interrupt controller, at guest physical addresses.
#[derive(Clone, Copy, Debug)]
pub enum Gic {
    /// `arm,cortex-a15-gic`: GICD and GICC.
    V2 {
        /// The distributor.
        distributor: u64,
        /// The CPU interface.
        cpu_interface: u64,
    },
    /// `arm,gic-v3`: GICD and the first redistributor.
    V3 {
        /// The distributor.
        distributor: u64,
        /// The redistributors (vCPU 0's first, 128 KiB each).
        redistributors: u64,
    },
}

/// The guest's machine, as its tree describes it.
pub struct Machine<'a> {
    /// The partition's name (the root's `model` is "transom partition NAME").
    pub name: &'a str,
    /// The console PL011.
    pub console: u64,
    /// The virtio-mmio transports' exact addresses.
    pub transports: Vec<u64, MAX>,
    /// The GIC.
    pub gic: Gic,
    /// The virtual timer's INTID (the third of `/timer`'s `interrupts`).
    pub virtual_timer: u32,
    /// Each CPU's `reg` (its MPIDR affinity), in tree order.
    pub cpus: Vec<u64, MAX>,
    /// The width probe (`transom,width-probe`), if the hypervisor gave one.
    pub width_probe: Option<u64>,
    /// `neighbour=ADDRESS` on the command line: another partition's transport in
    /// the same page as one of ours.
    pub neighbour: Option<u64>,
    /// `passthrough-uart=ADDRESS` on the command line: a PL011 of this partition
    /// whose interrupt the guest raises, and that interrupt's INTID from its node.
    pub passthrough_uart: Option<(u64, u32)>,
}

/// Reads the tree at `blob`.
pub fn read(blob: &[u8]) -> Machine<'_> {
    let tree: Tree<'_> = Fdt::new_unaligned(blob).expect("the device tree parses");
    let root = tree.find_node("/").expect("a root node");
    let model = string(&root, "model").unwrap_or("transom partition ?");
    let name = model.strip_prefix("transom partition ").unwrap_or(model);
    let chosen = tree.find_node("/chosen").expect("a /chosen node");
    let stdout = string(&chosen, "stdout-path").expect("/chosen/stdout-path");
    let stdout = stdout.split(':').next().unwrap_or(stdout);
    let console_node = tree.find_node(stdout).expect("the stdout-path node");
    let console = first_reg(&console_node).expect("the console has a reg");
    let bootargs = string(&chosen, "bootargs").unwrap_or("");

    let mut transports = Vec::new();
    let mut gic = None;
    let mut width_probe = None;
    let mut virtual_timer = 0;
    for node in root.children().iter() {
        if is_compatible(&node, "virtio,mmio") {
            let _ = transports.push(first_reg(&node).expect("a transport has a reg"));
        } else if is_compatible(&node, "transom,width-probe") {
            width_probe = first_reg(&node);
        } else if is_compatible(&node, "arm,gic-v3") {
            let reg = regs::<2>(&node);
            gic = Some(Gic::V3 {
                distributor: reg[0],
                redistributors: reg[1],
            });
        } else if is_compatible(&node, "arm,cortex-a15-gic") {
            let reg = regs::<2>(&node);
            gic = Some(Gic::V2 {
                distributor: reg[0],
                cpu_interface: reg[1],
            });
        } else if is_compatible(&node, "arm,armv8-timer") {
            let specifiers = cells(&node, "interrupts");
            // Secure, non-secure, virtual, hypervisor: <type number flags> each.
            virtual_timer = intid(&specifiers[6..9]);
        }
    }

    let mut cpus = Vec::new();
    let cpus_node = tree.find_node("/cpus").expect("a /cpus node");
    for cpu in cpus_node.children().iter() {
        if string(&cpu, "device_type") == Some("cpu") {
            let reg = cells(&cpu, "reg");
            let affinity = reg
                .iter()
                .fold(0u64, |value, cell| value << 32 | u64::from(*cell));
            let _ = cpus.push(affinity);
        }
    }

    let neighbour = argument(bootargs, "neighbour");
    let passthrough_uart = argument(bootargs, "passthrough-uart").map(|base| {
        let node = root
            .children()
            .iter()
            .find(|node| is_compatible(node, "arm,pl011") && first_reg(node) == Some(base))
            .expect("the passthrough UART is in the tree");
        let specifier = cells(&node, "interrupts");
        (base, intid(&specifier[..3]))
    });

    Machine {
        name,
        console,
        transports,
        gic: gic.expect("a GIC node"),
        virtual_timer,
        cpus,
        width_probe,
        neighbour,
        passthrough_uart,
    }
}

/// A `KEY=0xHEX` word's value.
fn argument(bootargs: &str, key: &str) -> Option<u64> {
    bootargs.split_ascii_whitespace().find_map(|word| {
        let value = word.strip_prefix(key)?.strip_prefix('=')?;
        let hex = value.strip_prefix("0x").unwrap_or(value);
        u64::from_str_radix(hex, 16).ok()
    })
}

/// The INTID of a GIC specifier `<type number flags>`
/// (`interrupt-controller/arm,gic.yaml`: type 0 SPI, 1 PPI).
fn intid(specifier: &[u32]) -> u32 {
    match specifier[0] {
        1 => FIRST_PPI + specifier[1],
        _ => FIRST_SPI + specifier[1],
    }
}

fn is_compatible(node: &TreeNode<'_>, compatible: &str) -> bool {
    node.raw_property("compatible").is_some_and(|property| {
        property
            .value
            .split(|byte| *byte == 0)
            .any(|entry| entry == compatible.as_bytes())
    })
}

fn string<'a>(node: &TreeNode<'a>, name: &str) -> Option<&'a str> {
    let value = node.raw_property(name)?.value;
    let text = core::str::from_utf8(value).ok()?;
    Some(text.trim_end_matches('\0'))
}

fn cells(node: &TreeNode<'_>, name: &str) -> Vec<u32, 16> {
    let value = node
        .raw_property(name)
        .map_or(&[][..], |property| property.value);
    value
        .chunks_exact(4)
        .map(|cell| u32::from_be_bytes([cell[0], cell[1], cell[2], cell[3]]))
        .take(16)
        .collect()
}

/// The addresses of a node's `reg`, two cells each for address and size (the
/// root's `#address-cells` and `#size-cells` in Transom's trees).
fn regs<const N: usize>(node: &TreeNode<'_>) -> [u64; N] {
    let cells = cells(node, "reg");
    let mut addresses = [0; N];
    for (index, entry) in cells.chunks_exact(4).take(N).enumerate() {
        addresses[index] = u64::from(entry[0]) << 32 | u64::from(entry[1]);
    }
    addresses
}

fn first_reg(node: &TreeNode<'_>) -> Option<u64> {
    node.raw_property("reg")?;
    Some(regs::<1>(node)[0])
}
