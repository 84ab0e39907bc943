//! The device tree each partition's guest boots with: its RAM, vCPUs, PSCI, virtual
//! GIC, architected timer, `/chosen` and the devices it was given, each at its exact
//! address.
//!
//! Every node follows the Linux binding it names (paths relative to
//! `Documentation/devicetree/bindings/`). A device's `reg` is the exact window the
//! board declared, never the page span stage 2 maps: a guest given a 0x200-byte
//! virtio-mmio transport at 0x0a00_3e00 finds it at 0x0a00_3e00, not at 0x0a00_3000.
//!
//! [`build`] checks the whole description first (every error below is found before a
//! byte is written), then writes the nodes in the order a reader expects:
//!
//! ```text
//! /                 #address-cells, #size-cells, compatible, model, interrupt-parent
//! ├── chosen        bootargs, stdout-path, linux,initrd-start/-end
//! ├── aliases       serial0 = the console, so Linux names it ttyAMA0 / ttyS0
//! ├── memory@..     one per RAM piece
//! ├── reserved-memory
//! │   └── reserved@..  no-map
//! ├── cpus
//! │   └── cpu@..    one per vCPU, enable-method = "psci"
//! ├── psci          method = "hvc"
//! ├── intc@..       the virtual GIC (phandle 1)
//! ├── timer         the four architected-timer PPIs
//! ├── clock-..      fixed clocks the PrimeCells and the mini UART need (phandle 2..)
//! └── <name>@..     the devices, at their exact addresses
//! ```

use alloc::borrow::Cow;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use transom_boards::{DeviceKind, IntId, PhysRange};

use super::fdt_writer::{self, Blob, FdtWriter, names};

/// The GIC node's phandle: the root's `interrupt-parent`.
const GIC_PHANDLE: u32 = 1;
/// The first fixed-clock node's phandle; each further clock takes the next one.
const FIRST_CLOCK_PHANDLE: u32 = 2;

/// Interrupt specifier type cell of a shared peripheral interrupt
/// (`include/dt-bindings/interrupt-controller/arm-gic.h`: `GIC_SPI`).
const GIC_SPI: u32 = 0;
/// Interrupt specifier type cell of a private peripheral interrupt (`GIC_PPI`).
const GIC_PPI: u32 = 1;
/// Flags cell: level-sensitive, active high
/// (`include/dt-bindings/interrupt-controller/irq.h`: `IRQ_TYPE_LEVEL_HIGH`).
const IRQ_TYPE_LEVEL_HIGH: u32 = 4;
/// Flags cell: level-sensitive, active low (`IRQ_TYPE_LEVEL_LOW`).
const IRQ_TYPE_LEVEL_LOW: u32 = 8;
/// Where a GICv2 PPI's CPU mask starts in its flags cell
/// (`interrupt-controller/arm,gic.yaml`: "bits[15:8] PPI interrupt cpu mask").
const GICV2_PPI_CPU_MASK_SHIFT: u32 = 8;

/// The first PPI INTID; below it lie the SGIs, which no device raises.
const FIRST_PPI: u32 = 16;
/// The first SPI INTID.
const FIRST_SPI: u32 = 32;
/// The first special INTID (1020..1024); no interrupt specifier names it.
const FIRST_SPECIAL_INTID: u32 = 1020;

/// `MPIDR_EL1`'s affinity fields: Aff3 in bits 39:32, Aff2..Aff0 in bits 23:0. The
/// other bits (RES1 bit 31, U, MT) stay out of a `cpu` node's `reg`
/// (`arm/cpus.yaml`).
const MPIDR_AFFINITY_MASK: u64 = 0xff_00ff_ffff;

/// The longest node name without its unit address (Devicetree Specification v0.4,
/// 2.2.1: 1 to 31 characters).
const MAX_NODE_NAME_LEN: usize = 31;

/// The most vCPUs a GICv2 guest may have: the PPI CPU mask has 8 bits.
pub const GICV2_MAX_CPUS: usize = 8;

/// 24 MHz, as QEMU `virt` wires its `apb-pclk`: a PL011's `apb_pclk`, and the
/// clock of any PrimeCell (a PL011's `uartclk`, another's `apb_pclk`) whose
/// [`GuestDevice::clock_hz`] is `None`.
pub const DEFAULT_APB_PCLK_HZ: u32 = 24_000_000;

/// What a partition's guest is told about its machine.
#[derive(Clone, Copy, Debug)]
pub struct GuestTree<'a> {
    /// The partition's name; the root's `model` is `"transom partition <name>"`.
    pub partition: &'a str,
    /// The guest's RAM, with holes already cut: one `memory@<start>` node per piece.
    pub memory: &'a [PhysRange],
    /// Ranges inside RAM the guest must neither use nor map: one `/reserved-memory`
    /// child with `no-map` each (the node is left out when there are none).
    pub reserved: &'a [PhysRange],
    /// The vCPUs' `MPIDR_EL1` values as the guest reads them (bit 31 may be set);
    /// their affinity fields become the `cpu` nodes' `reg`.
    pub cpus: &'a [u64],
    /// The virtual interrupt controller.
    pub gic: GuestGic,
    /// The architected timer's interrupts.
    pub timer: TimerInterrupts,
    /// The kernel command line (`/chosen/bootargs`).
    pub bootargs: &'a str,
    /// The [`GuestDevice::name`] of the console, for `/chosen/stdout-path`.
    pub stdout: Option<&'a str>,
    /// Where the initrd was loaded (`/chosen/linux,initrd-start` and `-end`).
    pub initrd: Option<PhysRange>,
    /// The devices the partition was given.
    pub devices: &'a [GuestDevice<'a>],
}

/// The interrupt controller a guest sees, at guest physical addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuestGic {
    /// A GICv2 (`arm,cortex-a15-gic`, `interrupt-controller/arm,gic.yaml`).
    V2 {
        /// The distributor (GICD).
        distributor: PhysRange,
        /// The CPU interface (GICC); on real hardware the GIC's virtual CPU interface
        /// (GICV) is mapped here.
        cpu_interface: PhysRange,
    },
    /// A GICv3 (`arm,gic-v3`, `interrupt-controller/arm,gic-v3.yaml`).
    V3 {
        /// The distributor (GICD).
        distributor: PhysRange,
        /// The redistributors (GICR), one contiguous region for every vCPU.
        redistributors: PhysRange,
    },
}

/// The architected timer's four PPIs, in the order `timer/arm,arch_timer.yaml` lists
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimerInterrupts {
    /// The secure EL1 physical timer.
    pub secure_physical: IntId,
    /// The non-secure EL1 physical timer.
    pub non_secure_physical: IntId,
    /// The EL1 virtual timer, the one a guest uses directly.
    pub virtual_timer: IntId,
    /// The non-secure EL2 physical timer.
    pub hypervisor_physical: IntId,
}

impl TimerInterrupts {
    /// The assignment the Arm Base System Architecture recommends (BSA 1.0, "PPI
    /// assignments") and both QEMU `virt` and the BCM2711 use: secure INTID 29,
    /// non-secure 30, virtual 27, hypervisor 26 (PPIs 13, 14, 11, 10).
    pub const BSA: TimerInterrupts = TimerInterrupts {
        secure_physical: IntId::ppi(13),
        non_secure_physical: IntId::ppi(14),
        virtual_timer: IntId::ppi(11),
        hypervisor_physical: IntId::ppi(10),
    };

    /// The four, each with its name for error messages, in binding order.
    fn in_binding_order(&self) -> [(&'static str, IntId); 4] {
        [
            ("secure physical", self.secure_physical),
            ("non-secure physical", self.non_secure_physical),
            ("virtual", self.virtual_timer),
            ("hypervisor physical", self.hypervisor_physical),
        ]
    }
}

/// A device the guest was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GuestDevice<'a> {
    /// The board table's name for it: error messages and [`GuestTree::stdout`] use
    /// it, and a device of a kind without a generic node name is named after it.
    pub name: &'a str,
    /// What it is.
    pub kind: DeviceKind,
    /// Its `compatible` list, most specific first; empty: the kind's default
    /// (PL011: `"arm,pl011", "arm,primecell"`; virtio-mmio: `"virtio,mmio"`; mini
    /// UART: `"brcm,bcm2835-aux-uart"`; 16550: `"ns16550a"`).
    pub compatible: &'a [&'a str],
    /// Its exact window at its guest physical address.
    pub reg: PhysRange,
    /// The interrupts it raises (PPIs or SPIs).
    pub interrupts: &'a [IntId],
    /// Its input clock: a PL011's UARTCLK, another PrimeCell's APB clock, the mini
    /// UART's core clock or a 16550's `clock-frequency`. Required for the mini UART
    /// and the 16550; ignored for devices whose binding takes no clock.
    pub clock_hz: Option<u32>,
}

/// Why a guest's device tree cannot be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TreeBuildError<'a> {
    /// The partition has no RAM.
    NoMemory,
    /// The partition has no vCPU.
    NoCpus,
    /// Two vCPUs have the same MPIDR affinity, so two `cpu` nodes would share a
    /// `reg`.
    DuplicateCpu {
        /// The affinity fields both share.
        affinity: u64,
    },
    /// A GICv2 guest with more vCPUs than its PPI CPU mask can name.
    TooManyCpusForGicV2 {
        /// How many vCPUs the partition has.
        cpus: usize,
    },
    /// A timer interrupt that is not a PPI.
    TimerNotPpi {
        /// Which of the four timers.
        timer: &'static str,
        /// The INTID given.
        intid: IntId,
    },
    /// A device interrupt that is neither a PPI nor an SPI (an SGI, a special or an
    /// extended-range INTID).
    BadInterrupt {
        /// The device.
        device: &'a str,
        /// The INTID given.
        intid: IntId,
    },
    /// A device without a `compatible` list, of a kind that has no default one.
    NoCompatible {
        /// The device.
        device: &'a str,
        /// Its kind.
        kind: DeviceKind,
    },
    /// A frame of the physical interrupt controller given as a device: the guest's
    /// interrupt controller is [`GuestTree::gic`].
    InterruptControllerDevice {
        /// The device.
        device: &'a str,
        /// Its kind.
        kind: DeviceKind,
    },
    /// A device whose binding requires its input clock, without a
    /// [`GuestDevice::clock_hz`].
    MissingClock {
        /// The device.
        device: &'a str,
        /// The binding that requires the clock.
        binding: &'static str,
    },
    /// Two devices start at the same address.
    SameAddress {
        /// The first device.
        first: &'a str,
        /// The second device.
        second: &'a str,
        /// The address both start at.
        address: u64,
    },
    /// Two devices have the same name, so [`GuestTree::stdout`] could not tell them
    /// apart.
    DuplicateDeviceName {
        /// The name.
        name: &'a str,
    },
    /// [`GuestTree::stdout`] names no device of the partition.
    UnknownStdout {
        /// The name given.
        name: &'a str,
    },
    /// The device tree writer refused the tree (a string holding a NUL byte, a blob
    /// past 4 GiB).
    Writer(fdt_writer::Error),
}

impl fmt::Display for TreeBuildError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            TreeBuildError::NoMemory => {
                f.write_str("the partition has no RAM: its device tree needs a `memory` node")
            }
            TreeBuildError::NoCpus => {
                f.write_str("the partition has no vCPU: its `/cpus` node needs a `cpu` child")
            }
            TreeBuildError::DuplicateCpu { affinity } => write!(
                f,
                "two vCPUs have the MPIDR affinity {affinity:#x}; `cpu` nodes need distinct \
                 `reg` values (arm/cpus.yaml)"
            ),
            TreeBuildError::TooManyCpusForGicV2 { cpus } => write!(
                f,
                "{cpus} vCPUs with a GICv2: its PPI CPU mask names at most {GICV2_MAX_CPUS} \
                 (interrupt-controller/arm,gic.yaml)"
            ),
            TreeBuildError::TimerNotPpi { timer, intid } => write!(
                f,
                "the {timer} timer's {intid} is not a PPI (INTID {FIRST_PPI}..{FIRST_SPI}; \
                 timer/arm,arch_timer.yaml)"
            ),
            TreeBuildError::BadInterrupt { device, intid } => write!(
                f,
                "device `{device}`: {intid} is neither a PPI (INTID {FIRST_PPI}..{FIRST_SPI}) \
                 nor an SPI (INTID {FIRST_SPI}..{FIRST_SPECIAL_INTID})"
            ),
            TreeBuildError::NoCompatible { device, kind } => write!(
                f,
                "device `{device}` ({}) has no `compatible` list and its kind has no default",
                kind.label()
            ),
            TreeBuildError::InterruptControllerDevice { device, kind } => write!(
                f,
                "device `{device}` is a {} frame: a guest's interrupt controller is its \
                 virtual GIC, not a device",
                kind.label()
            ),
            TreeBuildError::MissingClock { device, binding } => write!(
                f,
                "device `{device}` needs `clock_hz`: {binding} requires its input clock"
            ),
            TreeBuildError::SameAddress {
                first,
                second,
                address,
            } => write!(
                f,
                "devices `{first}` and `{second}` both start at {address:#x}"
            ),
            TreeBuildError::DuplicateDeviceName { name } => {
                write!(f, "two devices are named `{name}`")
            }
            TreeBuildError::UnknownStdout { name } => write!(
                f,
                "`stdout` names `{name}`, which is not one of the partition's devices"
            ),
            TreeBuildError::Writer(error) => {
                write!(f, "could not write the device tree: {error}")
            }
        }
    }
}

impl From<fdt_writer::Error> for TreeBuildError<'_> {
    fn from(error: fdt_writer::Error) -> Self {
        TreeBuildError::Writer(error)
    }
}

/// Builds the flattened device tree blob the guest gets in x0.
///
/// # Example
///
/// ```
/// use transom_boards::{DeviceKind, IntId, PhysRange};
/// use transom_vmm_core::guest::tree::{self, GuestDevice, GuestGic, GuestTree, TimerInterrupts};
///
/// let uart = GuestDevice {
///     name: "uart0",
///     kind: DeviceKind::Pl011,
///     compatible: &[], // "arm,pl011", "arm,primecell"
///     reg: PhysRange::new(0x0904_0000, 0x1000),
///     interrupts: &[IntId::spi(1)],
///     clock_hz: None, // 24 MHz
/// };
/// let blob = tree::build(&GuestTree {
///     partition: "linux",
///     memory: &[PhysRange::new(0x4000_0000, 0x1000_0000)],
///     reserved: &[],
///     cpus: &[0x8000_0000],
///     gic: GuestGic::V3 {
///         distributor: PhysRange::new(0x0800_0000, 0x1_0000),
///         redistributors: PhysRange::new(0x080a_0000, 0x2_0000),
///     },
///     timer: TimerInterrupts::BSA,
///     bootargs: "console=ttyAMA0",
///     stdout: Some("uart0"),
///     initrd: None,
///     devices: &[uart],
/// })
/// .expect("a valid description");
/// assert_eq!(&blob[..4], &0xd00d_feed_u32.to_be_bytes());
/// ```
pub fn build<'a>(tree: &GuestTree<'a>) -> Result<Blob, TreeBuildError<'a>> {
    let plan = Plan::new(tree)?;
    let mut fdt = FdtWriter::new(estimated_size(tree));
    let root = fdt.begin_node("")?;
    create_root_properties(&mut fdt, tree.partition)?;
    create_chosen_node(&mut fdt, tree, plan.stdout())?;
    create_memory_nodes(&mut fdt, tree.memory)?;
    create_reserved_memory_node(&mut fdt, tree.reserved)?;
    create_cpus_node(&mut fdt, &plan.cpus)?;
    create_psci_node(&mut fdt)?;
    create_gic_node(&mut fdt, &tree.gic)?;
    create_timer_node(&mut fdt, &plan.timer_interrupts)?;
    create_clock_nodes(&mut fdt, &plan.clocks)?;
    for device in &plan.devices {
        create_device_node(&mut fdt, device, plan.ppi_cpu_mask)?;
    }
    fdt.end_node(root)?;
    Ok(fdt.finish()?)
}

/// The blob's size, overestimated so that the writer reserves it once: a fixed part
/// for the header, the root, `/chosen`, `/psci`, the GIC, the timer and the strings
/// block, and a part per node.
fn estimated_size(tree: &GuestTree<'_>) -> usize {
    /// The header, the fixed nodes and the strings block: about 900 bytes.
    const FIXED: usize = 1024;
    /// A `memory`, reserved-memory child, `cpu` or clock node: under 100 bytes.
    const PER_SMALL_NODE: usize = 128;
    /// A device node besides its interrupt cells: under 200 bytes with a long
    /// `compatible` list.
    const PER_DEVICE: usize = 256;
    /// One interrupt specifier: three cells.
    const PER_INTERRUPT: usize = 12;
    let small_nodes = tree.memory.len() + tree.reserved.len() + tree.cpus.len();
    // At most two clock nodes per device.
    let clock_nodes = 2 * tree.devices.len();
    let devices: usize = tree
        .devices
        .iter()
        .map(|device| PER_DEVICE + PER_INTERRUPT * device.interrupts.len())
        .sum();
    FIXED
        + tree.partition.len()
        + tree.bootargs.len()
        + PER_SMALL_NODE * (small_nodes + clock_nodes)
        + devices
}

/// Everything [`build`] derives and checks before it writes a byte.
struct Plan<'a> {
    cpus: CpuPlan<'a>,
    /// The CPU mask every PPI specifier carries.
    ppi_cpu_mask: u32,
    timer_interrupts: [u32; 12],
    clocks: FixedClocks,
    devices: Vec<DeviceNode<'a>>,
    /// The console's index in `devices`, for `/chosen/stdout-path` and
    /// `/aliases/serial0`.
    stdout: Option<usize>,
}

impl<'a> Plan<'a> {
    fn new(tree: &GuestTree<'a>) -> Result<Self, TreeBuildError<'a>> {
        if tree.memory.is_empty() {
            return Err(TreeBuildError::NoMemory);
        }
        let cpus = CpuPlan::new(tree.cpus, &tree.gic)?;
        let ppi_cpu_mask = cpus.ppi_cpu_mask(&tree.gic);
        let timer_interrupts = timer_specifiers(&tree.timer, ppi_cpu_mask)?;
        check_device_names_and_addresses(tree.devices)?;
        let mut clocks = FixedClocks::default();
        let devices = tree
            .devices
            .iter()
            .map(|device| DeviceNode::new(device, ppi_cpu_mask, &mut clocks))
            .collect::<Result<Vec<_>, _>>()?;
        let stdout = match tree.stdout {
            None => None,
            Some(name) => Some(stdout_index(name, &devices)?),
        };
        Ok(Plan {
            cpus,
            ppi_cpu_mask,
            timer_interrupts,
            clocks,
            devices,
            stdout,
        })
    }

    /// The console's node.
    fn stdout(&self) -> Option<&DeviceNode<'a>> {
        self.stdout.map(|index| &self.devices[index])
    }
}

/// The `/cpus` node's shape.
struct CpuPlan<'a> {
    /// The vCPUs' MPIDRs, their affinities checked distinct.
    mpidrs: &'a [u64],
    /// `#address-cells`: 2 when some vCPU has a non-zero Aff3.
    address_cells: u32,
}

impl<'a> CpuPlan<'a> {
    fn new<'e>(mpidrs: &'a [u64], gic: &GuestGic) -> Result<Self, TreeBuildError<'e>> {
        if mpidrs.is_empty() {
            return Err(TreeBuildError::NoCpus);
        }
        if matches!(gic, GuestGic::V2 { .. }) && mpidrs.len() > GICV2_MAX_CPUS {
            return Err(TreeBuildError::TooManyCpusForGicV2 { cpus: mpidrs.len() });
        }
        let plan = CpuPlan {
            mpidrs,
            address_cells: 1,
        };
        for (index, affinity) in plan.affinities().enumerate() {
            if plan
                .affinities()
                .take(index)
                .any(|earlier| earlier == affinity)
            {
                return Err(TreeBuildError::DuplicateCpu { affinity });
            }
        }
        let needs_two_cells = plan
            .affinities()
            .any(|affinity| affinity > u64::from(u32::MAX));
        let address_cells = if needs_two_cells { 2 } else { 1 };
        Ok(CpuPlan {
            address_cells,
            ..plan
        })
    }

    /// Each vCPU's `reg`: the affinity fields of its MPIDR.
    fn affinities(&self) -> impl Iterator<Item = u64> + '_ {
        self.mpidrs.iter().map(|mpidr| mpidr & MPIDR_AFFINITY_MASK)
    }

    /// The CPU mask a PPI specifier carries: one bit per vCPU for a GICv2, none for a
    /// GICv3 (`interrupt-controller/arm,gic.yaml`; the v3 binding has no such field).
    fn ppi_cpu_mask(&self, gic: &GuestGic) -> u32 {
        match gic {
            GuestGic::V2 { .. } => (1u32 << self.mpidrs.len()) - 1,
            GuestGic::V3 { .. } => 0,
        }
    }
}

/// A PPI's specifier (`<GIC_PPI number flags>`), its flags holding `ppi_cpu_mask`
/// above the trigger type; `None` if `intid` is no PPI.
fn ppi_specifier(intid: IntId, trigger: u32, ppi_cpu_mask: u32) -> Option<[u32; 3]> {
    let IntId(id) = intid;
    if !(FIRST_PPI..FIRST_SPI).contains(&id) {
        return None;
    }
    let flags = (ppi_cpu_mask << GICV2_PPI_CPU_MASK_SHIFT) | trigger;
    Some([GIC_PPI, id - FIRST_PPI, flags])
}

/// An SPI's specifier (`<GIC_SPI number flags>`); `None` if `intid` is no SPI.
fn spi_specifier(intid: IntId, trigger: u32) -> Option<[u32; 3]> {
    let IntId(id) = intid;
    if !(FIRST_SPI..FIRST_SPECIAL_INTID).contains(&id) {
        return None;
    }
    Some([GIC_SPI, id - FIRST_SPI, trigger])
}

/// The timer node's `interrupts`: four level-low PPIs.
fn timer_specifiers<'a>(
    timer: &TimerInterrupts,
    ppi_cpu_mask: u32,
) -> Result<[u32; 12], TreeBuildError<'a>> {
    let mut cells = [0; 12];
    let timers = timer.in_binding_order();
    for (specifier_cells, (name, intid)) in cells.chunks_exact_mut(3).zip(timers) {
        let specifier = ppi_specifier(intid, IRQ_TYPE_LEVEL_LOW, ppi_cpu_mask)
            .ok_or(TreeBuildError::TimerNotPpi { timer: name, intid })?;
        specifier_cells.copy_from_slice(&specifier);
    }
    Ok(cells)
}

/// Two devices may share neither a name nor a start address.
fn check_device_names_and_addresses<'a>(
    devices: &[GuestDevice<'a>],
) -> Result<(), TreeBuildError<'a>> {
    for (index, first) in devices.iter().enumerate() {
        for second in &devices[index + 1..] {
            if first.name == second.name {
                return Err(TreeBuildError::DuplicateDeviceName { name: first.name });
            }
            if first.reg.start == second.reg.start {
                return Err(TreeBuildError::SameAddress {
                    first: first.name,
                    second: second.name,
                    address: first.reg.start,
                });
            }
        }
    }
    Ok(())
}

/// Where the device named `name` is in `devices`.
fn stdout_index<'a>(
    name: &'a str,
    devices: &[DeviceNode<'a>],
) -> Result<usize, TreeBuildError<'a>> {
    devices
        .iter()
        .position(|node| node.device.name == name)
        .ok_or(TreeBuildError::UnknownStdout { name })
}

/// The fixed-rate clocks the devices need, one node per frequency.
#[derive(Default)]
struct FixedClocks {
    frequencies: Vec<u32>,
}

impl FixedClocks {
    /// The phandle of the clock running at `hz`, added if no device used it yet.
    fn phandle(&mut self, hz: u32) -> u32 {
        let index = match self.frequencies.iter().position(|&known| known == hz) {
            Some(index) => index,
            None => {
                self.frequencies.push(hz);
                self.frequencies.len() - 1
            }
        };
        FIRST_CLOCK_PHANDLE + index as u32
    }

    /// Each clock's frequency and phandle.
    fn iter(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        (FIRST_CLOCK_PHANDLE..)
            .zip(self.frequencies.iter().copied())
            .map(|(phandle, hz)| (hz, phandle))
    }
}

/// How a device node names its input clocks.
enum ClockWiring {
    /// The binding takes no clock.
    None,
    /// `clocks` (and `clock-names` when `names` is not empty) pointing at fixed
    /// clocks.
    Inputs {
        /// The clocks' phandles; the first `count` are used.
        phandles: [u32; 2],
        count: usize,
        names: &'static [&'static str],
    },
    /// `clock-frequency`.
    Frequency(u32),
}

impl ClockWiring {
    /// One input clock, without `clock-names`.
    fn one(phandle: u32, names: &'static [&'static str]) -> ClockWiring {
        ClockWiring::Inputs {
            phandles: [phandle, 0],
            count: 1,
            names,
        }
    }
}

/// One device node, derived and checked.
struct DeviceNode<'a> {
    device: &'a GuestDevice<'a>,
    /// The node name without its unit address, the device's exact start.
    generic_name: Cow<'static, str>,
    compatible: &'a [&'a str],
    clocks: ClockWiring,
}

impl<'a> DeviceNode<'a> {
    fn new(
        device: &'a GuestDevice<'a>,
        ppi_cpu_mask: u32,
        clocks: &mut FixedClocks,
    ) -> Result<Self, TreeBuildError<'a>> {
        if device.kind.is_interrupt_controller() {
            return Err(TreeBuildError::InterruptControllerDevice {
                device: device.name,
                kind: device.kind,
            });
        }
        let compatible = compatible_list(device)?;
        let generic_name = generic_node_name(device, compatible);
        check_device_interrupts(device, ppi_cpu_mask)?;
        let clocks = clock_wiring(device, compatible, clocks)?;
        Ok(DeviceNode {
            device,
            generic_name,
            compatible,
            clocks,
        })
    }
}

/// The device's own `compatible` list, or its kind's default.
fn compatible_list<'a>(device: &GuestDevice<'a>) -> Result<&'a [&'a str], TreeBuildError<'a>> {
    if !device.compatible.is_empty() {
        return Ok(device.compatible);
    }
    match device.kind {
        // serial/pl011.yaml, arm/primecell.yaml.
        DeviceKind::Pl011 => Ok(&["arm,pl011", "arm,primecell"]),
        // virtio/mmio.yaml.
        DeviceKind::VirtioMmio => Ok(&["virtio,mmio"]),
        // serial/brcm,bcm2835-aux-uart.yaml.
        DeviceKind::MiniUart => Ok(&["brcm,bcm2835-aux-uart"]),
        // serial/8250.yaml.
        DeviceKind::Uart16550 => Ok(&["ns16550a"]),
        _ => Err(TreeBuildError::NoCompatible {
            device: device.name,
            kind: device.kind,
        }),
    }
}

/// The node name without its unit address: the generic name the Devicetree
/// Specification (v0.4, 2.2.2) recommends for the device's class, or else the
/// device's own name cut to the node-name character set.
fn generic_node_name(device: &GuestDevice<'_>, compatible: &[&str]) -> Cow<'static, str> {
    if compatible.contains(&"arm,pl031") {
        return Cow::Borrowed("rtc");
    }
    let generic = match device.kind {
        DeviceKind::Pl011 | DeviceKind::MiniUart | DeviceKind::Uart16550 => "serial",
        DeviceKind::VirtioMmio => "virtio_mmio",
        DeviceKind::Timer => "timer",
        DeviceKind::Mailbox => "mailbox",
        _ => return Cow::Owned(sanitized_node_name(device.name)),
    };
    Cow::Borrowed(generic)
}

/// `name` in the node-name character set (Devicetree Specification v0.4, table 2.1:
/// letters, digits, `,._+-`), lower case, starting with a letter, at most 31
/// characters.
fn sanitized_node_name(name: &str) -> String {
    let is_allowed = |c: char| c.is_ascii_alphanumeric() || ",._+-".contains(c);
    let mut node_name: String = name
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .map(|c| if is_allowed(c) { c } else { '-' })
        .collect();
    if node_name.is_empty() {
        node_name.push_str("device");
    }
    if !node_name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        node_name.insert_str(0, "device-");
    }
    node_name.truncate(MAX_NODE_NAME_LEN);
    node_name
}

/// A device interrupt's specifier: a level-high PPI or SPI; `None` if `intid` is
/// neither.
fn device_specifier(intid: IntId, ppi_cpu_mask: u32) -> Option<[u32; 3]> {
    ppi_specifier(intid, IRQ_TYPE_LEVEL_HIGH, ppi_cpu_mask)
        .or_else(|| spi_specifier(intid, IRQ_TYPE_LEVEL_HIGH))
}

/// Every interrupt of the device has a specifier.
fn check_device_interrupts<'a>(
    device: &GuestDevice<'a>,
    ppi_cpu_mask: u32,
) -> Result<(), TreeBuildError<'a>> {
    let bad = device
        .interrupts
        .iter()
        .find(|&&intid| device_specifier(intid, ppi_cpu_mask).is_none());
    match bad {
        Some(&intid) => Err(TreeBuildError::BadInterrupt {
            device: device.name,
            intid,
        }),
        None => Ok(()),
    }
}

/// The device's `interrupts` cells: its specifiers one after the other (each one
/// checked by [`check_device_interrupts`]).
fn device_interrupt_cells(
    device: &GuestDevice<'_>,
    ppi_cpu_mask: u32,
) -> impl Iterator<Item = u32> {
    device
        .interrupts
        .iter()
        .filter_map(move |&intid| device_specifier(intid, ppi_cpu_mask))
        .flatten()
}

/// The clocks the device's binding requires:
///
/// - a PL011 (`serial/pl011.yaml`): `clocks = <&uartclk>, <&apb_pclk>` with
///   `clock-names = "uartclk", "apb_pclk"`;
/// - any other PrimeCell (`arm/primecell.yaml`, e.g. `rtc/arm,pl031.yaml`):
///   `clocks = <&apb_pclk>`, `clock-names = "apb_pclk"`;
/// - the mini UART (`serial/brcm,bcm2835-aux-uart.yaml`): `clocks`, one entry;
/// - a 16550 (`serial/8250.yaml`): `clock-frequency`.
fn clock_wiring<'a>(
    device: &GuestDevice<'a>,
    compatible: &[&str],
    clocks: &mut FixedClocks,
) -> Result<ClockWiring, TreeBuildError<'a>> {
    if compatible.contains(&"arm,primecell") {
        return Ok(primecell_clocks(device, compatible, clocks));
    }
    let missing_clock = |binding| TreeBuildError::MissingClock {
        device: device.name,
        binding,
    };
    match device.kind {
        DeviceKind::MiniUart => {
            let core_clock = device
                .clock_hz
                .ok_or(missing_clock("serial/brcm,bcm2835-aux-uart.yaml"))?;
            Ok(ClockWiring::one(clocks.phandle(core_clock), &[]))
        }
        DeviceKind::Uart16550 => {
            let hz = device.clock_hz.ok_or(missing_clock("serial/8250.yaml"))?;
            Ok(ClockWiring::Frequency(hz))
        }
        _ => Ok(ClockWiring::None),
    }
}

/// A PrimeCell's clocks. The APB clock runs at [`DEFAULT_APB_PCLK_HZ`]; a PL011's
/// UARTCLK, or another PrimeCell's APB clock, at [`GuestDevice::clock_hz`] when
/// given.
fn primecell_clocks(
    device: &GuestDevice<'_>,
    compatible: &[&str],
    clocks: &mut FixedClocks,
) -> ClockWiring {
    let functional_clock_hz = device.clock_hz.unwrap_or(DEFAULT_APB_PCLK_HZ);
    if compatible.contains(&"arm,pl011") {
        let uartclk = clocks.phandle(functional_clock_hz);
        let apb_pclk = clocks.phandle(DEFAULT_APB_PCLK_HZ);
        return ClockWiring::Inputs {
            phandles: [uartclk, apb_pclk],
            count: 2,
            names: &["uartclk", "apb_pclk"],
        };
    }
    let apb_pclk = clocks.phandle(functional_clock_hz);
    ClockWiring::one(apb_pclk, &["apb_pclk"])
}

type WriteResult = Result<(), fdt_writer::Error>;

/// The root's properties (Devicetree Specification v0.4, 3.2): 64-bit addresses and
/// sizes, the GIC as every node's interrupt parent.
fn create_root_properties(fdt: &mut FdtWriter, partition: &str) -> WriteResult {
    fdt.property_u32(names::ADDRESS_CELLS, 2)?;
    fdt.property_u32(names::SIZE_CELLS, 2)?;
    fdt.property_string(names::COMPATIBLE, "transom,partition")?;
    fdt.property_string_concat(names::MODEL, &["transom partition ", partition])?;
    fdt.property_u32(names::INTERRUPT_PARENT, GIC_PHANDLE)
}

/// `/chosen` (Devicetree Specification v0.4, 3.6; `linux,initrd-*` as
/// `Documentation/arch/arm64/booting.rst` reads them).
fn create_chosen_node(
    fdt: &mut FdtWriter,
    tree: &GuestTree<'_>,
    stdout: Option<&DeviceNode<'_>>,
) -> WriteResult {
    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string(names::BOOTARGS, tree.bootargs)?;
    if let Some(node) = stdout {
        fdt.property_path_at(
            names::STDOUT_PATH,
            &node.generic_name,
            node.device.reg.start,
        )?;
    }
    if let Some(initrd) = tree.initrd {
        fdt.property_u64(names::INITRD_START, initrd.start)?;
        fdt.property_u64(names::INITRD_END, initrd.end)?;
    }
    fdt.end_node(chosen)?;
    // Linux numbers a UART by its `serialN` alias (`of_alias_get_id`), so with
    // several PL011s the console is ttyAMA0 whatever its address.
    if let Some(node) = stdout {
        let aliases = fdt.begin_node("aliases")?;
        fdt.property_path_at(names::SERIAL0, &node.generic_name, node.device.reg.start)?;
        fdt.end_node(aliases)?;
    }
    Ok(())
}

/// One `memory@<start>` node per RAM piece (Devicetree Specification v0.4, 3.4).
fn create_memory_nodes(fdt: &mut FdtWriter, memory: &[PhysRange]) -> WriteResult {
    for piece in memory {
        let node = fdt.begin_node_at("memory", piece.start)?;
        fdt.property_string(names::DEVICE_TYPE, "memory")?;
        fdt.property_array_u64(names::REG, &[piece.start, piece.size()])?;
        fdt.end_node(node)?;
    }
    Ok(())
}

/// `/reserved-memory` with a `no-map` child per range
/// (`reserved-memory/reserved-memory.yaml`); nothing when there is none.
fn create_reserved_memory_node(fdt: &mut FdtWriter, reserved: &[PhysRange]) -> WriteResult {
    if reserved.is_empty() {
        return Ok(());
    }
    let parent = fdt.begin_node("reserved-memory")?;
    fdt.property_u32(names::ADDRESS_CELLS, 2)?;
    fdt.property_u32(names::SIZE_CELLS, 2)?;
    fdt.property_null(names::RANGES)?;
    for range in reserved {
        let child = fdt.begin_node_at("reserved", range.start)?;
        fdt.property_array_u64(names::REG, &[range.start, range.size()])?;
        fdt.property_null(names::NO_MAP)?;
        fdt.end_node(child)?;
    }
    fdt.end_node(parent)
}

/// `/cpus` and a `cpu@<affinity>` per vCPU, started through PSCI (`arm/cpus.yaml`).
fn create_cpus_node(fdt: &mut FdtWriter, cpus: &CpuPlan<'_>) -> WriteResult {
    let parent = fdt.begin_node("cpus")?;
    fdt.property_u32(names::ADDRESS_CELLS, cpus.address_cells)?;
    fdt.property_u32(names::SIZE_CELLS, 0)?;
    for affinity in cpus.affinities() {
        let cpu = fdt.begin_node_at("cpu", affinity)?;
        fdt.property_string(names::DEVICE_TYPE, "cpu")?;
        fdt.property_string(names::COMPATIBLE, "arm,armv8")?;
        if cpus.address_cells == 2 {
            fdt.property_u64(names::REG, affinity)?;
        } else {
            let affinity = u32::try_from(affinity).expect("one cell holds every affinity");
            fdt.property_u32(names::REG, affinity)?;
        }
        fdt.property_string(names::ENABLE_METHOD, "psci")?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(parent)
}

/// `/psci`: PSCI 1.0 through `HVC`, served by Transom (`arm/psci.yaml`).
fn create_psci_node(fdt: &mut FdtWriter) -> WriteResult {
    let psci = fdt.begin_node("psci")?;
    fdt.property_string_list(names::COMPATIBLE, &["arm,psci-1.0", "arm,psci-0.2"])?;
    fdt.property_string(names::METHOD, "hvc")?;
    fdt.end_node(psci)
}

/// The virtual GIC (`interrupt-controller/arm,gic-v3.yaml` or
/// `interrupt-controller/arm,gic.yaml`), three-cell specifiers.
fn create_gic_node(fdt: &mut FdtWriter, gic: &GuestGic) -> WriteResult {
    let (distributor, second_frame) = match *gic {
        GuestGic::V2 {
            distributor,
            cpu_interface,
        } => (distributor, cpu_interface),
        GuestGic::V3 {
            distributor,
            redistributors,
        } => (distributor, redistributors),
    };
    let node = fdt.begin_node_at("intc", distributor.start)?;
    match gic {
        GuestGic::V2 { .. } => fdt.property_string(names::COMPATIBLE, "arm,cortex-a15-gic")?,
        GuestGic::V3 { .. } => {
            fdt.property_string(names::COMPATIBLE, "arm,gic-v3")?;
            fdt.property_u32(names::REDISTRIBUTOR_REGIONS, 1)?;
        }
    }
    fdt.property_array_u64(
        names::REG,
        &[
            distributor.start,
            distributor.size(),
            second_frame.start,
            second_frame.size(),
        ],
    )?;
    fdt.property_null(names::INTERRUPT_CONTROLLER)?;
    fdt.property_u32(names::INTERRUPT_CELLS, 3)?;
    // No child nodes (no ITS, no v2m frame), and no `interrupt-map` parent needs a
    // unit address: 0 cells, as dtc's `interrupt_provider` check asks.
    fdt.property_u32(names::ADDRESS_CELLS, 0)?;
    fdt.property_phandle(GIC_PHANDLE)?;
    fdt.end_node(node)
}

/// `/timer` (`timer/arm,arch_timer.yaml`).
fn create_timer_node(fdt: &mut FdtWriter, interrupts: &[u32]) -> WriteResult {
    let timer = fdt.begin_node("timer")?;
    fdt.property_string(names::COMPATIBLE, "arm,armv8-timer")?;
    fdt.property_array_u32(names::INTERRUPTS, interrupts)?;
    fdt.property_null(names::ALWAYS_ON)?;
    fdt.end_node(timer)
}

/// One `clock-<hz>` node per frequency (`clock/fixed-clock.yaml`).
fn create_clock_nodes(fdt: &mut FdtWriter, clocks: &FixedClocks) -> WriteResult {
    for (hz, phandle) in clocks.iter() {
        let clock = fdt.begin_node_numbered("clock", hz.into())?;
        fdt.property_string(names::COMPATIBLE, "fixed-clock")?;
        fdt.property_u32(names::CLOCK_CELLS, 0)?;
        fdt.property_u32(names::CLOCK_FREQUENCY, hz)?;
        fdt.property_phandle(phandle)?;
        fdt.end_node(clock)?;
    }
    Ok(())
}

/// A device at its exact address, with the clocks its binding requires.
fn create_device_node(
    fdt: &mut FdtWriter,
    node: &DeviceNode<'_>,
    ppi_cpu_mask: u32,
) -> WriteResult {
    let reg = node.device.reg;
    let device = fdt.begin_node_at(&node.generic_name, reg.start)?;
    fdt.property_string_list(names::COMPATIBLE, node.compatible)?;
    fdt.property_array_u64(names::REG, &[reg.start, reg.size()])?;
    if !node.device.interrupts.is_empty() {
        let cells = device_interrupt_cells(node.device, ppi_cpu_mask);
        fdt.property_cells(names::INTERRUPTS, cells)?;
    }
    match &node.clocks {
        ClockWiring::None => {}
        ClockWiring::Inputs {
            phandles,
            count,
            names,
        } => {
            fdt.property_array_u32(names::CLOCKS, &phandles[..*count])?;
            if !names.is_empty() {
                fdt.property_string_list(names::CLOCK_NAMES, names)?;
            }
        }
        ClockWiring::Frequency(hz) => fdt.property_u32(names::CLOCK_FREQUENCY, *hz)?,
    }
    fdt.end_node(device)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use crate::firmware_tree::FirmwareTree;
    use fdt::Fdt;
    use fdt::nodes::Node;
    use fdt::parsing::Panic;
    use fdt::parsing::unaligned::UnalignedParser;
    use std::string::ToString;

    type ParsedNode<'a> = Node<'a, (UnalignedParser<'a>, Panic)>;

    /// QEMU `virt`'s PL011, raising SPI 8.
    const PL011: GuestDevice<'static> = GuestDevice {
        name: "uart0",
        kind: DeviceKind::Pl011,
        compatible: &[],
        reg: PhysRange::new(0x0904_0000, 0x1000),
        interrupts: &[IntId::spi(8)],
        clock_hz: None,
    };

    /// One of QEMU `virt`'s 0x200-byte virtio-mmio transports: it shares its page
    /// with seven others, so its exact address is not page aligned.
    const VIRTIO: GuestDevice<'static> = GuestDevice {
        name: "virtio31",
        kind: DeviceKind::VirtioMmio,
        compatible: &[],
        reg: PhysRange::new(0x0a00_3e00, 0x200),
        interrupts: &[IntId::spi(47)],
        clock_hz: None,
    };

    const TWO_DEVICES: [GuestDevice<'static>; 2] = [PL011, VIRTIO];
    const RAM: [PhysRange; 1] = [PhysRange::new(0x4000_0000, 0x1000_0000)];
    /// Two vCPUs as `MPIDR_EL1` reads (bit 31 is RES1).
    const TWO_CPUS: [u64; 2] = [0x8000_0000, 0x8000_0001];

    const GICV3: GuestGic = GuestGic::V3 {
        distributor: PhysRange::new(0x0800_0000, 0x1_0000),
        redistributors: PhysRange::new(0x080a_0000, 0x4_0000),
    };

    fn v3_tree() -> GuestTree<'static> {
        GuestTree {
            partition: "linux",
            memory: &RAM,
            reserved: &[],
            cpus: &TWO_CPUS,
            gic: GICV3,
            timer: TimerInterrupts::BSA,
            bootargs: "console=ttyAMA0 earlycon",
            stdout: Some("uart0"),
            initrd: None,
            devices: &TWO_DEVICES,
        }
    }

    fn parse(blob: &[u8]) -> Fdt<'_, (UnalignedParser<'_>, Panic)> {
        Fdt::new_unaligned(blob).expect("the blob parses")
    }

    fn node<'a>(fdt: &Fdt<'a, (UnalignedParser<'a>, Panic)>, path: &str) -> ParsedNode<'a> {
        fdt.find_node(path)
            .unwrap_or_else(|| panic!("no node {path}"))
    }

    fn bytes<'a>(node: &ParsedNode<'a>, name: &str) -> &'a [u8] {
        node.raw_property(name)
            .unwrap_or_else(|| panic!("no property {name}"))
            .value
    }

    fn has(node: &ParsedNode<'_>, name: &str) -> bool {
        node.raw_property(name).is_some()
    }

    fn cells(node: &ParsedNode<'_>, name: &str) -> Vec<u32> {
        let value = bytes(node, name);
        assert_eq!(value.len() % 4, 0, "{name} is not a list of cells");
        value
            .chunks(4)
            .map(|cell| u32::from_be_bytes(cell.try_into().expect("4 bytes")))
            .collect()
    }

    /// A property of 64-bit values (2-cell addresses and sizes).
    fn pairs(node: &ParsedNode<'_>, name: &str) -> Vec<u64> {
        cells(node, name)
            .chunks(2)
            .map(|pair| u64::from(pair[0]) << 32 | u64::from(pair[1]))
            .collect()
    }

    fn strings<'a>(node: &ParsedNode<'a>, name: &str) -> Vec<&'a str> {
        let value = bytes(node, name);
        let text = core::str::from_utf8(value).expect("UTF-8");
        let text = text.strip_suffix('\0').expect("NUL-terminated");
        text.split('\0').collect()
    }

    fn string<'a>(node: &ParsedNode<'a>, name: &str) -> &'a str {
        let list = strings(node, name);
        assert_eq!(list.len(), 1, "{name} holds one string");
        list[0]
    }

    fn child_names(node: &ParsedNode<'_>) -> Vec<std::string::String> {
        node.children()
            .iter()
            .map(|child| {
                let name = child.name();
                match name.unit_address {
                    Some(address) => std::format!("{}@{address}", name.name),
                    None => name.name.to_string(),
                }
            })
            .collect()
    }

    /// The root, `/cpus`, `/psci`, the GICv3 and `/timer` of a two-device tree:
    /// Devicetree Specification v0.4 3.2 (root), `arm/cpus.yaml`, `arm/psci.yaml`,
    /// `interrupt-controller/arm,gic-v3.yaml`, `timer/arm,arch_timer.yaml` (four PPIs:
    /// secure, non-secure, virtual, hypervisor).
    #[test]
    fn v3_tree_root_cpus_psci_gic_and_timer_follow_their_bindings() {
        let blob = build(&v3_tree()).expect("builds");
        let fdt = parse(&blob);
        let root = node(&fdt, "/");
        assert_eq!(
            child_names(&root),
            [
                "chosen",
                "aliases",
                "memory@40000000",
                "cpus",
                "psci",
                "intc@8000000",
                "timer",
                "clock-24000000",
                "serial@9040000",
                "virtio_mmio@a003e00",
            ]
        );
        assert_eq!(cells(&root, "#address-cells"), [2]);
        assert_eq!(cells(&root, "#size-cells"), [2]);
        assert_eq!(string(&root, "compatible"), "transom,partition");
        assert_eq!(string(&root, "model"), "transom partition linux");
        assert_eq!(fdt.root().model(), "transom partition linux");

        let cpus = node(&fdt, "/cpus");
        assert_eq!(cells(&cpus, "#address-cells"), [1]);
        assert_eq!(cells(&cpus, "#size-cells"), [0]);
        assert_eq!(child_names(&cpus), ["cpu@0", "cpu@1"]);
        for (path, affinity) in [("/cpus/cpu@0", 0), ("/cpus/cpu@1", 1)] {
            let cpu = node(&fdt, path);
            assert_eq!(string(&cpu, "device_type"), "cpu");
            assert_eq!(string(&cpu, "compatible"), "arm,armv8");
            // MPIDR_EL1 bit 31 (RES1) is not part of the affinity `reg` holds.
            assert_eq!(cells(&cpu, "reg"), [affinity]);
            assert_eq!(string(&cpu, "enable-method"), "psci");
        }

        let psci = node(&fdt, "/psci");
        assert_eq!(
            strings(&psci, "compatible"),
            ["arm,psci-1.0", "arm,psci-0.2"]
        );
        assert_eq!(string(&psci, "method"), "hvc");

        let gic = node(&fdt, "/intc@8000000");
        assert_eq!(string(&gic, "compatible"), "arm,gic-v3");
        assert_eq!(
            pairs(&gic, "reg"),
            [0x0800_0000, 0x1_0000, 0x080a_0000, 0x4_0000]
        );
        assert_eq!(cells(&gic, "#redistributor-regions"), [1]);
        assert_eq!(bytes(&gic, "interrupt-controller"), b"");
        assert_eq!(cells(&gic, "#interrupt-cells"), [3]);
        assert_eq!(cells(&gic, "#address-cells"), [0]);
        assert_eq!(cells(&gic, "phandle"), [GIC_PHANDLE]);
        assert_eq!(cells(&root, "interrupt-parent"), cells(&gic, "phandle"));

        let timer = node(&fdt, "/timer");
        assert_eq!(string(&timer, "compatible"), "arm,armv8-timer");
        // <GIC_PPI 13 IRQ_TYPE_LEVEL_LOW>, <.. 14 ..>, <.. 11 ..>, <.. 10 ..>: no CPU
        // mask with a GICv3.
        assert_eq!(
            cells(&timer, "interrupts"),
            [1, 13, 8, 1, 14, 8, 1, 11, 8, 1, 10, 8]
        );
        assert_eq!(bytes(&timer, "always-on"), b"");
    }

    /// The devices of the two-device tree at their exact addresses: the PL011
    /// (`serial/pl011.yaml`: `clocks` and `clock-names = "uartclk", "apb_pclk"`, a
    /// PrimeCell per `arm/primecell.yaml`, its clock a `clock/fixed-clock.yaml` node)
    /// and the virtio-mmio transport (`virtio/mmio.yaml`: no clocks). Interrupt
    /// specifiers per `interrupt-controller/arm,gic-v3.yaml`: `<GIC_SPI n
    /// IRQ_TYPE_LEVEL_HIGH>`.
    #[test]
    fn v3_tree_devices_sit_at_their_exact_addresses() {
        let blob = build(&v3_tree()).expect("builds");
        let fdt = parse(&blob);

        let uart = node(&fdt, "/serial@9040000");
        assert_eq!(strings(&uart, "compatible"), ["arm,pl011", "arm,primecell"]);
        assert_eq!(pairs(&uart, "reg"), [0x0904_0000, 0x1000]);
        assert_eq!(cells(&uart, "interrupts"), [0, 8, 4]);
        let clock = node(&fdt, "/clock-24000000");
        let clock_phandle = cells(&clock, "phandle")[0];
        assert_eq!(
            cells(&uart, "clocks"),
            [clock_phandle, clock_phandle],
            "uartclk and apb_pclk share the one 24 MHz clock"
        );
        assert_eq!(strings(&uart, "clock-names"), ["uartclk", "apb_pclk"]);
        assert_eq!(string(&clock, "compatible"), "fixed-clock");
        assert_eq!(cells(&clock, "#clock-cells"), [0]);
        assert_eq!(cells(&clock, "clock-frequency"), [DEFAULT_APB_PCLK_HZ]);

        let virtio = node(&fdt, "/virtio_mmio@a003e00");
        assert_eq!(string(&virtio, "compatible"), "virtio,mmio");
        // The exact window, not the page 0x0a00_3000..0x0a00_4000 stage 2 maps.
        assert_eq!(pairs(&virtio, "reg"), [0x0a00_3e00, 0x200]);
        let reg = virtio.reg().expect("reg").iter::<u64, u64>().next();
        let reg = reg.expect("one entry").expect("two-cell entry");
        assert_eq!((reg.address, reg.len), (0x0a00_3e00, 0x200));
        assert_eq!(cells(&virtio, "interrupts"), [0, 47, 4]);
        assert!(!has(&virtio, "clocks"));
        assert!(!has(&virtio, "clock-names"));

        let chosen = node(&fdt, "/chosen");
        assert_eq!(string(&chosen, "bootargs"), "console=ttyAMA0 earlycon");
        assert_eq!(string(&chosen, "stdout-path"), "/serial@9040000");
        assert_eq!(
            string(&node(&fdt, "/aliases"), "serial0"),
            "/serial@9040000"
        );
        assert!(!has(&chosen, "linux,initrd-start"));
        assert!(!has(&chosen, "linux,initrd-end"));
        assert!(fdt.find_node("/reserved-memory").is_none());
    }

    /// A Raspberry Pi 4-like GICv2 guest (`interrupt-controller/arm,gic.yaml`):
    /// `arm,cortex-a15-gic` with GICD and GICC in `reg`, and PPI flags carrying the
    /// CPU mask in bits 15:8, as the BCM2711 tree writes its timer:
    /// `<GIC_PPI 13 (GIC_CPU_MASK_SIMPLE(4) | IRQ_TYPE_LEVEL_LOW)>` = `<1 13 0xf08>`.
    /// The mini UART follows `serial/brcm,bcm2835-aux-uart.yaml` (one `clocks`
    /// entry, no `clock-names`).
    #[test]
    fn v2_tree_carries_the_cpu_mask_and_the_cpu_interface() {
        let mini_uart = GuestDevice {
            name: "uart1",
            kind: DeviceKind::MiniUart,
            compatible: &[],
            reg: PhysRange::new(0xfe21_5040, 0x40),
            interrupts: &[IntId::spi(93)],
            clock_hz: Some(500_000_000),
        };
        let watchdog = GuestDevice {
            name: "Watchdog 0",
            kind: DeviceKind::Other,
            compatible: &["vendor,per-cpu-watchdog"],
            reg: PhysRange::new(0xfe10_0000, 0x114),
            interrupts: &[IntId::ppi(3)],
            clock_hz: None,
        };
        let devices = [mini_uart, watchdog];
        let tree = GuestTree {
            cpus: &[0x8000_0000, 0x8000_0001, 0x8000_0002, 0x8000_0003],
            gic: GuestGic::V2 {
                distributor: PhysRange::new(0xff84_1000, 0x1000),
                cpu_interface: PhysRange::new(0xff84_2000, 0x2000),
            },
            stdout: Some("uart1"),
            devices: &devices,
            ..v3_tree()
        };
        let blob = build(&tree).expect("builds");
        let fdt = parse(&blob);

        let gic = node(&fdt, "/intc@ff841000");
        assert_eq!(string(&gic, "compatible"), "arm,cortex-a15-gic");
        assert_eq!(
            pairs(&gic, "reg"),
            [0xff84_1000, 0x1000, 0xff84_2000, 0x2000]
        );
        assert!(!has(&gic, "#redistributor-regions"));
        assert_eq!(bytes(&gic, "interrupt-controller"), b"");
        assert_eq!(cells(&gic, "#interrupt-cells"), [3]);

        let timer = node(&fdt, "/timer");
        assert_eq!(
            cells(&timer, "interrupts"),
            [1, 13, 0xf08, 1, 14, 0xf08, 1, 11, 0xf08, 1, 10, 0xf08]
        );

        let uart = node(&fdt, "/serial@fe215040");
        assert_eq!(string(&uart, "compatible"), "brcm,bcm2835-aux-uart");
        assert_eq!(pairs(&uart, "reg"), [0xfe21_5040, 0x40]);
        assert_eq!(cells(&uart, "interrupts"), [0, 93, 4]);
        let core_clock = node(&fdt, "/clock-500000000");
        assert_eq!(cells(&core_clock, "clock-frequency"), [500_000_000]);
        assert_eq!(cells(&uart, "clocks"), cells(&core_clock, "phandle"));
        assert!(!has(&uart, "clock-names"));
        let chosen = node(&fdt, "/chosen");
        assert_eq!(string(&chosen, "stdout-path"), "/serial@fe215040");

        // A device PPI carries the CPU mask too, above IRQ_TYPE_LEVEL_HIGH.
        let watchdog = node(&fdt, "/watchdog-0@fe100000");
        assert_eq!(cells(&watchdog, "interrupts"), [1, 3, 0xf04]);
        assert_eq!(pairs(&watchdog, "reg"), [0xfe10_0000, 0x114]);
        assert!(!has(&watchdog, "clocks"));
    }

    /// RAM in two pieces around a hole, a reserved range inside the first
    /// (Devicetree Specification v0.4 3.4 `memory`;
    /// `reserved-memory/reserved-memory.yaml`: `#address-cells`, `#size-cells`,
    /// `ranges` and a `no-map` child), an initrd in `/chosen` as 64-bit
    /// `linux,initrd-start`/`-end` (`Documentation/arch/arm64/booting.rst`). The
    /// hypervisor's own reader of firmware trees reads the same values back.
    #[test]
    fn memory_pieces_reserved_ranges_and_initrd() {
        let memory = [
            PhysRange::new(0x4000_0000, 0x0800_0000),
            PhysRange::new(0x4900_0000, 0x0700_0000),
        ];
        let reserved = [PhysRange::new(0x4000_0000, 0x1_0000)];
        let initrd = PhysRange::new(0x4800_0000, 0x12_3456);
        let tree = GuestTree {
            memory: &memory,
            reserved: &reserved,
            initrd: Some(initrd),
            ..v3_tree()
        };
        let blob = build(&tree).expect("builds");
        let fdt = parse(&blob);

        for (path, piece) in [
            ("/memory@40000000", memory[0]),
            ("/memory@49000000", memory[1]),
        ] {
            let node = node(&fdt, path);
            assert_eq!(string(&node, "device_type"), "memory");
            assert_eq!(pairs(&node, "reg"), [piece.start, piece.size()]);
        }
        let parent = node(&fdt, "/reserved-memory");
        assert_eq!(cells(&parent, "#address-cells"), [2]);
        assert_eq!(cells(&parent, "#size-cells"), [2]);
        assert_eq!(bytes(&parent, "ranges"), b"");
        assert_eq!(child_names(&parent), ["reserved@40000000"]);
        let child = node(&fdt, "/reserved-memory/reserved@40000000");
        assert_eq!(pairs(&child, "reg"), [0x4000_0000, 0x1_0000]);
        assert_eq!(bytes(&child, "no-map"), b"");

        let chosen = node(&fdt, "/chosen");
        assert_eq!(bytes(&chosen, "linux,initrd-start").len(), 8);
        assert_eq!(pairs(&chosen, "linux,initrd-start"), [0x4800_0000]);
        assert_eq!(pairs(&chosen, "linux,initrd-end"), [0x4812_3456]);

        let read_back = FirmwareTree::parse(0, Some(&blob)).expect("parses");
        assert_eq!(read_back.memory().expect("memory").as_slice(), memory);
        assert_eq!(
            read_back.reserved_memory().expect("reserved").as_slice(),
            reserved
        );
        assert_eq!(read_back.initrd(), Ok(Some(initrd)));
        assert_eq!(read_back.bootargs(), Ok("console=ttyAMA0 earlycon"));
        assert_eq!(read_back.psci_method(), Ok(Some("hvc")));
        let cpus = read_back.cpus().expect("cpus");
        assert_eq!(cpus.iter().map(|cpu| cpu.mpidr).collect::<Vec<_>>(), [0, 1]);
        assert!(cpus.iter().all(|cpu| cpu.psci));
    }

    /// `arm/cpus.yaml`: with a non-zero Aff3 (`MPIDR_EL1[39:32]`) `/cpus` takes two
    /// address cells, and `reg` holds Aff3 in the first cell and Aff2..Aff0 in the
    /// second.
    #[test]
    fn an_aff3_cpu_takes_two_address_cells() {
        let tree = GuestTree {
            cpus: &[0x8000_0000, 0x1_8000_0102],
            ..v3_tree()
        };
        let blob = build(&tree).expect("builds");
        let fdt = parse(&blob);
        let cpus = node(&fdt, "/cpus");
        assert_eq!(cells(&cpus, "#address-cells"), [2]);
        assert_eq!(child_names(&cpus), ["cpu@0", "cpu@100000102"]);
        assert_eq!(cells(&node(&fdt, "/cpus/cpu@0"), "reg"), [0, 0]);
        assert_eq!(cells(&node(&fdt, "/cpus/cpu@100000102"), "reg"), [1, 0x102]);
    }

    /// Node names and clocks by kind: a PL031 is an `rtc` with one `apb_pclk`
    /// (`rtc/arm,pl031.yaml`), a PL011 with its own UARTCLK gets two clocks that
    /// the other PL011 at the same frequency shares (`serial/pl011.yaml`), a 16550
    /// gets `clock-frequency` (`serial/8250.yaml`), other devices are named after
    /// themselves (Devicetree Specification v0.4, 2.2.1 character set).
    #[test]
    fn node_names_and_clocks_follow_the_kind() {
        let uart_48mhz = GuestDevice {
            clock_hz: Some(48_000_000),
            ..PL011
        };
        let devices = [
            GuestDevice {
                name: "rtc",
                kind: DeviceKind::Other,
                compatible: &["arm,pl031", "arm,primecell"],
                reg: PhysRange::new(0x0901_0000, 0x1000),
                interrupts: &[IntId::spi(2)],
                clock_hz: None,
            },
            uart_48mhz,
            GuestDevice {
                name: "uart3",
                reg: PhysRange::new(0xfe20_1600, 0x200),
                ..uart_48mhz
            },
            GuestDevice {
                name: "uart16550",
                kind: DeviceKind::Uart16550,
                compatible: &[],
                reg: PhysRange::new(0x0900_0100, 0x100),
                interrupts: &[],
                clock_hz: Some(1_843_200),
            },
            GuestDevice {
                name: "2nd mailbox",
                kind: DeviceKind::Mailbox,
                compatible: &["brcm,bcm2835-mbox"],
                reg: PhysRange::new(0xfe00_b880, 0x40),
                interrupts: &[],
                clock_hz: None,
            },
            GuestDevice {
                name: "2nd frame/buffer",
                kind: DeviceKind::Other,
                compatible: &["simple-framebuffer"],
                reg: PhysRange::new(0x3e00_0000, 0x10_0000),
                interrupts: &[],
                clock_hz: None,
            },
        ];
        let tree = GuestTree {
            devices: &devices,
            ..v3_tree()
        };
        let blob = build(&tree).expect("builds");
        let fdt = parse(&blob);
        let root = node(&fdt, "/");
        let names = child_names(&root);
        assert_eq!(
            names[7..],
            [
                "clock-24000000",
                "clock-48000000",
                "rtc@9010000",
                "serial@9040000",
                "serial@fe201600",
                "serial@9000100",
                "mailbox@fe00b880",
                "device-2nd-frame-buffer@3e000000",
            ]
        );
        let slow = cells(&node(&fdt, "/clock-24000000"), "phandle")[0];
        let fast = cells(&node(&fdt, "/clock-48000000"), "phandle")[0];

        let rtc = node(&fdt, "/rtc@9010000");
        assert_eq!(cells(&rtc, "clocks"), [slow]);
        assert_eq!(strings(&rtc, "clock-names"), ["apb_pclk"]);
        for path in ["/serial@9040000", "/serial@fe201600"] {
            let uart = node(&fdt, path);
            assert_eq!(cells(&uart, "clocks"), [fast, slow]);
            assert_eq!(strings(&uart, "clock-names"), ["uartclk", "apb_pclk"]);
        }
        let uart16550 = node(&fdt, "/serial@9000100");
        assert_eq!(string(&uart16550, "compatible"), "ns16550a");
        assert_eq!(cells(&uart16550, "clock-frequency"), [1_843_200]);
        assert!(!has(&uart16550, "clocks"));
        assert!(!has(&uart16550, "interrupts"));
        let mailbox = node(&fdt, "/mailbox@fe00b880");
        assert_eq!(string(&mailbox, "compatible"), "brcm,bcm2835-mbox");
        assert_eq!(pairs(&mailbox, "reg"), [0xfe00_b880, 0x40]);
    }

    #[test]
    fn sanitized_names_are_valid_node_names() {
        assert_eq!(sanitized_node_name("gpio"), "gpio");
        assert_eq!(sanitized_node_name("Frame Buffer"), "frame-buffer");
        assert_eq!(sanitized_node_name("a@b/c"), "a-b-c");
        assert_eq!(sanitized_node_name("0x10 thing"), "device-0x10-thing");
        assert_eq!(sanitized_node_name(""), "device");
        assert_eq!(
            sanitized_node_name("émoji"),
            "-moji".replace('-', "device--")
        );
        let long = sanitized_node_name("a-very-long-device-name-past-the-limit");
        assert_eq!(long.len(), MAX_NODE_NAME_LEN);
    }

    /// Every error, found before anything is written, with its message.
    #[test]
    fn every_error_names_what_is_wrong() {
        let check = |tree: GuestTree<'_>, expected: TreeBuildError<'_>, message: &str| {
            let error = build(&tree).expect_err("the tree is refused");
            assert_eq!(error, expected);
            assert_eq!(error.to_string(), message);
        };
        check(
            GuestTree {
                memory: &[],
                ..v3_tree()
            },
            TreeBuildError::NoMemory,
            "the partition has no RAM: its device tree needs a `memory` node",
        );
        check(
            GuestTree {
                cpus: &[],
                ..v3_tree()
            },
            TreeBuildError::NoCpus,
            "the partition has no vCPU: its `/cpus` node needs a `cpu` child",
        );
        check(
            GuestTree {
                cpus: &[0x8000_0001, 0x1],
                ..v3_tree()
            },
            TreeBuildError::DuplicateCpu { affinity: 1 },
            "two vCPUs have the MPIDR affinity 0x1; `cpu` nodes need distinct `reg` values \
             (arm/cpus.yaml)",
        );
        check(
            GuestTree {
                cpus: &[0, 1, 2, 3, 4, 5, 6, 7, 8],
                gic: GuestGic::V2 {
                    distributor: PhysRange::new(0x0800_0000, 0x1_0000),
                    cpu_interface: PhysRange::new(0x0801_0000, 0x2000),
                },
                ..v3_tree()
            },
            TreeBuildError::TooManyCpusForGicV2 { cpus: 9 },
            "9 vCPUs with a GICv2: its PPI CPU mask names at most 8 \
             (interrupt-controller/arm,gic.yaml)",
        );
        check(
            GuestTree {
                timer: TimerInterrupts {
                    virtual_timer: IntId::spi(11),
                    ..TimerInterrupts::BSA
                },
                ..v3_tree()
            },
            TreeBuildError::TimerNotPpi {
                timer: "virtual",
                intid: IntId(43),
            },
            "the virtual timer's INTID 43 is not a PPI (INTID 16..32; timer/arm,arch_timer.yaml)",
        );
        for intid in [IntId(5), IntId(1020), IntId(4096)] {
            let device = GuestDevice {
                interrupts: &[intid],
                ..PL011
            };
            check(
                GuestTree {
                    devices: &[device],
                    ..v3_tree()
                },
                TreeBuildError::BadInterrupt {
                    device: "uart0",
                    intid,
                },
                &std::format!(
                    "device `uart0`: INTID {} is neither a PPI (INTID 16..32) nor an SPI \
                     (INTID 32..1020)",
                    intid.0
                ),
            );
        }
        let mailbox = GuestDevice {
            name: "mbox",
            kind: DeviceKind::Mailbox,
            ..VIRTIO
        };
        check(
            GuestTree {
                devices: &[mailbox],
                stdout: None,
                ..v3_tree()
            },
            TreeBuildError::NoCompatible {
                device: "mbox",
                kind: DeviceKind::Mailbox,
            },
            "device `mbox` (mailbox) has no `compatible` list and its kind has no default",
        );
        let distributor = GuestDevice {
            name: "gicd",
            kind: DeviceKind::GicDistributor,
            compatible: &["arm,gic-400"],
            ..VIRTIO
        };
        check(
            GuestTree {
                devices: &[distributor],
                stdout: None,
                ..v3_tree()
            },
            TreeBuildError::InterruptControllerDevice {
                device: "gicd",
                kind: DeviceKind::GicDistributor,
            },
            "device `gicd` is a GICD frame: a guest's interrupt controller is its virtual GIC, \
             not a device",
        );
        let mini_uart = GuestDevice {
            name: "uart1",
            kind: DeviceKind::MiniUart,
            clock_hz: None,
            ..PL011
        };
        let uart16550 = GuestDevice {
            name: "uart1",
            kind: DeviceKind::Uart16550,
            clock_hz: None,
            ..PL011
        };
        for (device, binding) in [
            (mini_uart, "serial/brcm,bcm2835-aux-uart.yaml"),
            (uart16550, "serial/8250.yaml"),
        ] {
            check(
                GuestTree {
                    devices: &[device],
                    stdout: None,
                    ..v3_tree()
                },
                TreeBuildError::MissingClock {
                    device: "uart1",
                    binding,
                },
                &std::format!(
                    "device `uart1` needs `clock_hz`: {binding} requires its input clock"
                ),
            );
        }
        let twin = GuestDevice {
            name: "virtio30",
            ..VIRTIO
        };
        check(
            GuestTree {
                devices: &[PL011, VIRTIO, twin],
                ..v3_tree()
            },
            TreeBuildError::SameAddress {
                first: "virtio31",
                second: "virtio30",
                address: 0x0a00_3e00,
            },
            "devices `virtio31` and `virtio30` both start at 0xa003e00",
        );
        let namesake = GuestDevice {
            reg: PhysRange::new(0x0a00_3c00, 0x200),
            ..VIRTIO
        };
        check(
            GuestTree {
                devices: &[PL011, VIRTIO, namesake],
                ..v3_tree()
            },
            TreeBuildError::DuplicateDeviceName { name: "virtio31" },
            "two devices are named `virtio31`",
        );
        check(
            GuestTree {
                stdout: Some("uart9"),
                ..v3_tree()
            },
            TreeBuildError::UnknownStdout { name: "uart9" },
            "`stdout` names `uart9`, which is not one of the partition's devices",
        );
        check(
            GuestTree {
                bootargs: "console=ttyAMA0\0root=/dev/vda",
                ..v3_tree()
            },
            TreeBuildError::Writer(fdt_writer::Error::NulInString),
            "could not write the device tree: a string holds a NUL byte",
        );
    }

    #[test]
    fn a_tree_without_stdout_or_devices_builds() {
        let tree = GuestTree {
            stdout: None,
            devices: &[],
            bootargs: "",
            ..v3_tree()
        };
        let blob = build(&tree).expect("builds");
        let fdt = parse(&blob);
        let chosen = node(&fdt, "/chosen");
        assert!(!has(&chosen, "stdout-path"));
        assert_eq!(bytes(&chosen, "bootargs"), b"\0");
        assert!(fdt.find_node("/clock-24000000").is_none());
    }
}
