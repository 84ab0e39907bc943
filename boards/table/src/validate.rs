//! The rules a board table must keep, checked by one `const fn` so that a bad table
//! fails `cargo build` (through [`check_board!`](crate::check_board)) and a table
//! built at run time gets the same errors.
//!
//! Each rule has its own [`Violation`] with the names and addresses a board author
//! needs to fix it; [`BoardError::message`] writes it as text.

use core::fmt;

use crate::board::{Board, GrantMode, Mapping, Partition};
use crate::range::{Granule, PHYS_ADDRESS_LIMIT, PhysRange};
use crate::region::{DeviceKind, IntId, MemoryAttributes};
use crate::text::{Message, same_str};

/// What kind of table entry an error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ItemKind {
    /// A device region.
    Device,
    /// A declared-unused range.
    Unused,
    /// A reserved range.
    Reserved,
    /// A RAM bank of the board.
    RamBank,
    /// RAM of a partition (the name is the partition's).
    PartitionRam,
    /// The hypervisor's memory reservation.
    HypervisorMemory,
    /// A partition.
    Partition,
}

impl ItemKind {
    const fn label(self) -> &'static str {
        match self {
            ItemKind::Device => "device",
            ItemKind::Unused => "unused range",
            ItemKind::Reserved => "reserved range",
            ItemKind::RamBank => "RAM bank",
            ItemKind::PartitionRam => "RAM of partition",
            ItemKind::HypervisorMemory => "hypervisor memory",
            ItemKind::Partition => "partition",
        }
    }

    const fn is_named(self) -> bool {
        !matches!(self, ItemKind::RamBank | ItemKind::HypervisorMemory)
    }
}

/// A table entry named in an error: its kind, name and exact bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Item {
    /// What it is.
    pub kind: ItemKind,
    /// Its name (empty for RAM banks and the hypervisor's memory).
    pub name: &'static str,
    /// Its first byte.
    pub base: u64,
    /// Its size; with `base` it may wrap, for the error that says so.
    pub size: u64,
}

impl Item {
    const fn new(kind: ItemKind, name: &'static str, range: PhysRange) -> Item {
        Item {
            kind,
            name,
            base: range.start,
            size: range.end - range.start,
        }
    }

    const fn range(&self) -> PhysRange {
        PhysRange::new(self.base, self.size)
    }
}

/// A broken rule. The number in each variant's doc is the rule's number in
/// `boards/README.md`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Violation {
    /// Rule 1: a region of no bytes.
    ZeroSize {
        /// The region.
        item: Item,
    },
    /// Rule 1: `base + size` wraps or passes the 52-bit physical address space.
    OutOfRange {
        /// The region.
        item: Item,
    },
    /// Rule 2: two device regions share bytes.
    DevicesOverlap {
        /// The earlier region in the table.
        first: Item,
        /// The later one.
        second: Item,
    },
    /// Rule 3: a device region overlaps RAM or the hypervisor's memory.
    DeviceOverlapsMemory {
        /// The device.
        device: Item,
        /// The RAM bank or the hypervisor's memory.
        memory: Item,
    },
    /// Rule 4: RAM (a bank, a partition's, the hypervisor's) not on granule boundaries.
    RamMisaligned {
        /// The RAM.
        ram: Item,
        /// The board's granule.
        granule: Granule,
    },
    /// Rule 4: partition or hypervisor RAM not inside one RAM bank.
    RamOutsideBanks {
        /// The RAM.
        ram: Item,
    },
    /// Rule 4: two RAM banks or two pieces of partition RAM overlap.
    RamOverlap {
        /// The earlier one.
        first: Item,
        /// The later one.
        second: Item,
    },
    /// Rule 5: partition RAM overlaps a reserved range or the hypervisor's memory.
    RamOverlapsReserved {
        /// The partition's RAM.
        ram: Item,
        /// The reserved range.
        reserved: Item,
    },
    /// Rule 6: a device granted twice.
    DeviceGrantedTwice {
        /// The device.
        device: Item,
        /// The partition with the first grant.
        first: &'static str,
        /// The partition with the second.
        second: &'static str,
    },
    /// Rule 7: the hypervisor's console granted to a guest.
    ConsoleGranted {
        /// The console.
        console: Item,
        /// The partition.
        partition: &'static str,
    },
    /// Rule 7: the console lies in a page a guest would map directly.
    ConsoleInDirectSpan {
        /// The console.
        console: Item,
        /// The partition.
        partition: &'static str,
        /// The grant whose span holds the console.
        device: Item,
        /// That span.
        span: PhysRange,
        /// The board's granule.
        granule: Granule,
    },
    /// Rule 8: a grant forced direct whose span holds bytes the partition was not
    /// given.
    DirectSpanNotClean {
        /// The partition.
        partition: &'static str,
        /// The granted device.
        device: Item,
        /// Its rounded span.
        span: PhysRange,
        /// The board's granule.
        granule: Granule,
        /// The first byte of the span that is not the partition's.
        foreign_address: u64,
        /// The device that byte belongs to, if the table names one.
        foreign_device: Option<Item>,
    },
    /// Rule 9: an interrupt-controller region with weaker attributes than
    /// Device-nGnRnE.
    InterruptControllerAttributes {
        /// The region.
        device: Item,
        /// The attributes it was given.
        attributes: MemoryAttributes,
    },
    /// Rule 10: a GICV or GICH frame not on granule boundaries.
    GicVirtualizationMisaligned {
        /// The frame.
        device: Item,
        /// The board's granule.
        granule: Granule,
    },
    /// Rule 11: a CPU in two partitions.
    CpuInTwoPartitions {
        /// The CPU's logical index.
        cpu: usize,
        /// The first partition.
        first: &'static str,
        /// The second.
        second: &'static str,
    },
    /// Rule 11: a CPU index at or past the board's CPU count.
    CpuOutOfRange {
        /// The CPU's logical index.
        cpu: usize,
        /// The partition.
        partition: &'static str,
        /// The board's CPU count.
        max_cpus: usize,
    },
    /// Rule 12: one interrupt reaching two partitions through their grants.
    InterruptInTwoPartitions {
        /// The interrupt.
        interrupt: IntId,
        /// The first partition and the device that brings it the interrupt.
        first: &'static str,
        /// That device.
        first_device: &'static str,
        /// The second partition.
        second: &'static str,
        /// Its device.
        second_device: &'static str,
    },
    /// Rule 13: a trapped grant of a region that allows no access width.
    TrappedWithoutWidths {
        /// The partition.
        partition: &'static str,
        /// The device.
        device: Item,
    },
    /// Rule 14: two entries with one name.
    DuplicateName {
        /// The first entry.
        first: Item,
        /// The second.
        second: Item,
    },
    /// Rule 14: a partition without CPUs.
    PartitionWithoutCpus {
        /// The partition.
        partition: &'static str,
    },
    /// Rule 14: a partition without RAM.
    PartitionWithoutRam {
        /// The partition.
        partition: &'static str,
    },
    /// Rule 15: a grant or the console names no device region.
    UnknownDevice {
        /// The partition whose grant names it; `None` for the console.
        partition: Option<&'static str>,
        /// The name.
        name: &'static str,
    },
    /// Rule 15: the console is not a UART.
    ConsoleNotUart {
        /// The region.
        console: Item,
    },
    /// Rule 16: an interrupt-controller frame granted to a guest.
    InterruptControllerGranted {
        /// The frame.
        device: Item,
        /// The partition.
        partition: &'static str,
    },
    /// Rule 17: a declared-unused range overlaps a device, RAM or a reserved range.
    UnusedOverlaps {
        /// The unused range.
        unused: Item,
        /// What it overlaps.
        other: Item,
    },
    /// Rule 18: the image's load address outside the hypervisor's memory, or the heap
    /// larger than it.
    HypervisorDoesNotFit {
        /// The hypervisor's memory.
        memory: Item,
        /// The load address.
        load_address: u64,
        /// The heap size.
        heap_size: u64,
    },
}

/// A board table that breaks a rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BoardError {
    /// The board's name.
    pub board: &'static str,
    /// The rule and the entries that break it.
    pub violation: Violation,
}

impl BoardError {
    /// The error as text, the same at compile time and at run time.
    pub const fn message(&self) -> Message {
        let mut message = Message::new();
        message.text("board ").name(self.board).text(": ");
        write_violation(&mut message, &self.violation);
        message
    }
}

impl fmt::Display for BoardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message().as_str())
    }
}

impl core::error::Error for BoardError {}

const fn write_item(message: &mut Message, item: &Item) {
    message.text(item.kind.label());
    if item.kind.is_named() {
        message.text(" ").name(item.name);
    }
    if matches!(item.kind, ItemKind::Partition) {
        return;
    }
    message.text(" ");
    message.hex(item.base).text("..");
    match item.base.checked_add(item.size) {
        Some(end) => message.hex(end),
        None => message.text("(wraps)"),
    };
}

const fn write_rule(message: &mut Message, number: u64, title: &str) {
    message
        .text("rule ")
        .decimal(number)
        .text(" (")
        .text(title)
        .text("): ");
}

const fn write_violation(message: &mut Message, violation: &Violation) {
    match violation {
        Violation::ZeroSize { item } => {
            write_rule(message, 1, "region size");
            write_item(message, item);
            message.text(" has no bytes");
        }
        Violation::OutOfRange { item } => {
            write_rule(message, 1, "region size");
            message.text(item.kind.label()).text(" ");
            if item.kind.is_named() {
                message.name(item.name).text(" ");
            }
            message
                .text("at ")
                .hex(item.base)
                .text(" of size ")
                .hex(item.size)
                .text(" ends past the 52-bit physical address space (")
                .hex(PHYS_ADDRESS_LIMIT)
                .text(")");
        }
        Violation::DevicesOverlap { first, second } => {
            write_rule(message, 2, "devices overlap");
            write_item(message, first);
            message.text(" and ");
            write_item(message, second);
            message.text(" share bytes");
        }
        Violation::DeviceOverlapsMemory { device, memory } => {
            write_rule(message, 3, "device in memory");
            write_item(message, device);
            message.text(" overlaps ");
            write_item(message, memory);
        }
        Violation::RamMisaligned { ram, granule } => {
            write_rule(message, 4, "RAM layout");
            write_item(message, ram);
            message
                .text(" is not aligned to the board's ")
                .text(granule.label())
                .text(" granule (")
                .hex(granule.size())
                .text(")");
        }
        Violation::RamOutsideBanks { ram } => {
            write_rule(message, 4, "RAM layout");
            write_item(message, ram);
            message.text(" does not lie inside one of the board's RAM banks");
        }
        Violation::RamOverlap { first, second } => {
            write_rule(message, 4, "RAM layout");
            write_item(message, first);
            message.text(" overlaps ");
            write_item(message, second);
        }
        Violation::RamOverlapsReserved { ram, reserved } => {
            write_rule(message, 5, "RAM in a reserved range");
            write_item(message, ram);
            message.text(" overlaps ");
            write_item(message, reserved);
        }
        Violation::DeviceGrantedTwice {
            device,
            first,
            second,
        } => {
            write_rule(message, 6, "device granted twice");
            write_item(message, device);
            message
                .text(" is granted to partition ")
                .name(first)
                .text(" and to partition ")
                .name(second);
        }
        Violation::ConsoleGranted { console, partition } => {
            write_rule(message, 7, "hypervisor console");
            message
                .text("partition ")
                .name(partition)
                .text(" is granted ");
            write_item(message, console);
            message.text(", the hypervisor's console");
        }
        Violation::ConsoleInDirectSpan {
            console,
            partition,
            device,
            span,
            granule,
        } => {
            write_rule(message, 7, "hypervisor console");
            message.text("partition ").name(partition).text(" maps ");
            write_item(message, device);
            message
                .text(" directly, but its ")
                .text(granule.label())
                .text(" span ")
                .range(span.start, span.end)
                .text(" holds the hypervisor's console, ");
            write_item(message, console);
        }
        Violation::DirectSpanNotClean {
            partition,
            device,
            span,
            granule,
            foreign_address,
            foreign_device,
        } => {
            write_rule(message, 8, "direct grant not clean");
            message.text("partition ").name(partition).text(" grants ");
            write_item(message, device);
            message
                .text(" directly, but its ")
                .text(granule.label())
                .text(" span ")
                .range(span.start, span.end)
                .text(" holds ");
            match foreign_device {
                Some(foreign) => {
                    write_item(message, foreign);
                    message.text(", which the partition was not given");
                }
                None => {
                    message
                        .text("bytes from ")
                        .hex(*foreign_address)
                        .text(" that no region of the partition or declared-unused range covers");
                }
            }
            message.text("; grant it with Grant::auto to trap it");
        }
        Violation::InterruptControllerAttributes { device, attributes } => {
            write_rule(message, 9, "interrupt controller attributes");
            write_item(message, device);
            message
                .text(" is mapped ")
                .text(attributes.label())
                .text("; interrupt-controller frames must be Device-nGnRnE");
        }
        Violation::GicVirtualizationMisaligned { device, granule } => {
            write_rule(message, 10, "GIC virtualization frames");
            write_item(message, device);
            message
                .text(" must map directly, but is not aligned to the board's ")
                .text(granule.label())
                .text(" granule (")
                .hex(granule.size())
                .text(")");
        }
        Violation::CpuInTwoPartitions { cpu, first, second } => {
            write_rule(message, 11, "CPUs");
            message
                .text("CPU ")
                .decimal(*cpu as u64)
                .text(" is in partition ")
                .name(first)
                .text(" and in partition ")
                .name(second);
        }
        Violation::CpuOutOfRange {
            cpu,
            partition,
            max_cpus,
        } => {
            write_rule(message, 11, "CPUs");
            message
                .text("partition ")
                .name(partition)
                .text(" has CPU ")
                .decimal(*cpu as u64)
                .text(", but the board has ")
                .decimal(*max_cpus as u64)
                .text(" CPUs (0..")
                .decimal(*max_cpus as u64)
                .text(")");
        }
        Violation::InterruptInTwoPartitions {
            interrupt,
            first,
            first_device,
            second,
            second_device,
        } => {
            write_rule(message, 12, "interrupts");
            message
                .text("INTID ")
                .decimal(interrupt.0 as u64)
                .text(" reaches partition ")
                .name(first)
                .text(" through ")
                .name(first_device)
                .text(" and partition ")
                .name(second)
                .text(" through ")
                .name(second_device);
        }
        Violation::TrappedWithoutWidths { partition, device } => {
            write_rule(message, 13, "trapped access widths");
            message.text("partition ").name(partition).text(" traps ");
            write_item(message, device);
            message.text(", which allows no access width: every access would fault");
        }
        Violation::DuplicateName { first, second } => {
            write_rule(message, 14, "names and partitions");
            message
                .text("the name ")
                .name(first.name)
                .text(" is used twice: by ");
            write_item(message, first);
            message.text(" and by ");
            write_item(message, second);
        }
        Violation::PartitionWithoutCpus { partition } => {
            write_rule(message, 14, "names and partitions");
            message
                .text("partition ")
                .name(partition)
                .text(" has no CPU");
        }
        Violation::PartitionWithoutRam { partition } => {
            write_rule(message, 14, "names and partitions");
            message
                .text("partition ")
                .name(partition)
                .text(" has no RAM");
        }
        Violation::UnknownDevice { partition, name } => {
            write_rule(message, 15, "device names");
            match partition {
                Some(partition) => message.text("partition ").name(partition),
                None => message.text("the console"),
            };
            message
                .text(" names device ")
                .name(name)
                .text(", which the board's device table does not have");
        }
        Violation::ConsoleNotUart { console } => {
            write_rule(message, 15, "device names");
            message.text("the console is ");
            write_item(message, console);
            message.text(", which is not a UART");
        }
        Violation::InterruptControllerGranted { device, partition } => {
            write_rule(message, 16, "interrupt controller");
            message
                .text("partition ")
                .name(partition)
                .text(" is granted ");
            write_item(message, device);
            message.text("; guests get a virtual GIC, the hypervisor keeps the real one");
        }
        Violation::UnusedOverlaps { unused, other } => {
            write_rule(message, 17, "unused ranges");
            write_item(message, unused);
            message.text(" overlaps ");
            write_item(message, other);
        }
        Violation::HypervisorDoesNotFit {
            memory,
            load_address,
            heap_size,
        } => {
            write_rule(message, 18, "hypervisor memory");
            message
                .text("the image at ")
                .hex(*load_address)
                .text(" with a heap of ")
                .hex(*heap_size)
                .text(" bytes does not fit in ");
            write_item(message, memory);
        }
    }
}

/// Checks every rule; the first violation found is the error.
#[expect(
    clippy::result_large_err,
    reason = "the error carries the names and addresses its message needs; it is made \
              once, at compile time or at boot, and this no_std crate cannot box it"
)]
pub const fn validate(board: &Board) -> Result<(), BoardError> {
    match find_violation(board) {
        None => Ok(()),
        Some(violation) => Err(BoardError {
            board: board.name,
            violation,
        }),
    }
}

/// `?` is not available in `const fn`s: return the violation if there is one.
macro_rules! check {
    ($check:expr) => {
        if let Some(violation) = $check {
            return Some(violation);
        }
    };
}

const fn find_violation(board: &Board) -> Option<Violation> {
    check!(check_sizes(board));
    check!(check_names(board));
    check!(check_device_overlaps(board));
    check!(check_devices_against_memory(board));
    check!(check_unused(board));
    check!(check_ram_banks(board));
    check!(check_hypervisor_memory(board));
    check!(check_interrupt_controller(board));
    check!(check_console(board));
    check!(check_partition_cpus(board));
    check!(check_partition_ram(board));
    check!(check_grants(board));
    check!(check_interrupts(board));
    check!(check_mappings(board));
    None
}

/// Every entry with a range, in one order, for the checks that treat them alike.
const fn item_count(board: &Board) -> usize {
    let mut count = board.devices.len() + board.unused.len() + board.reserved.len();
    count += board.ram.len() + 1;
    let mut index = 0;
    while index < board.partitions.len() {
        count += board.partitions[index].ram.len();
        index += 1;
    }
    count
}

/// The `index`th entry of [`item_count`]'s list.
const fn item_at(board: &Board, mut index: usize) -> Item {
    if index < board.devices.len() {
        let device = &board.devices[index];
        return Item {
            kind: ItemKind::Device,
            name: device.name,
            base: device.base,
            size: device.size,
        };
    }
    index -= board.devices.len();
    if index < board.unused.len() {
        let unused = &board.unused[index];
        return Item::new(ItemKind::Unused, unused.name, unused.range);
    }
    index -= board.unused.len();
    if index < board.reserved.len() {
        let reserved = &board.reserved[index];
        return Item::new(ItemKind::Reserved, reserved.name, reserved.range);
    }
    index -= board.reserved.len();
    if index < board.ram.len() {
        return Item::new(ItemKind::RamBank, "", board.ram[index]);
    }
    index -= board.ram.len();
    if index == 0 {
        return hypervisor_item(board);
    }
    index -= 1;
    let mut partition = 0;
    loop {
        let ram = board.partitions[partition].ram;
        if index < ram.len() {
            return Item::new(
                ItemKind::PartitionRam,
                board.partitions[partition].name,
                ram[index],
            );
        }
        index -= ram.len();
        partition += 1;
    }
}

const fn hypervisor_item(board: &Board) -> Item {
    Item::new(ItemKind::HypervisorMemory, "", board.hypervisor.memory)
}

const fn device_item(board: &Board, index: usize) -> Item {
    item_at(board, index)
}

const fn named_device_item(board: &Board, name: &str) -> Option<Item> {
    let mut index = 0;
    while index < board.devices.len() {
        if same_str(board.devices[index].name, name) {
            return Some(device_item(board, index));
        }
        index += 1;
    }
    None
}

/// Rule 1.
const fn check_sizes(board: &Board) -> Option<Violation> {
    let mut index = 0;
    while index < item_count(board) {
        let item = item_at(board, index);
        if item.size == 0 {
            return Some(Violation::ZeroSize { item });
        }
        match item.base.checked_add(item.size) {
            Some(end) if end <= PHYS_ADDRESS_LIMIT => {}
            _ => return Some(Violation::OutOfRange { item }),
        }
        index += 1;
    }
    None
}

/// Rule 14, names: devices, unused and reserved ranges and partitions share one
/// namespace.
const fn check_names(board: &Board) -> Option<Violation> {
    let named = board.devices.len() + board.unused.len() + board.reserved.len();
    let count = named + board.partitions.len();
    let mut first = 0;
    while first < count {
        let mut second = first + 1;
        while second < count {
            let a = named_item(board, first, named);
            let b = named_item(board, second, named);
            if same_str(a.name, b.name) {
                return Some(Violation::DuplicateName {
                    first: a,
                    second: b,
                });
            }
            second += 1;
        }
        first += 1;
    }
    None
}

const fn named_item(board: &Board, index: usize, named: usize) -> Item {
    if index < named {
        return item_at(board, index);
    }
    let partition = &board.partitions[index - named];
    Item {
        kind: ItemKind::Partition,
        name: partition.name,
        base: 0,
        size: 0,
    }
}

/// Rule 2.
const fn check_device_overlaps(board: &Board) -> Option<Violation> {
    let mut first = 0;
    while first < board.devices.len() {
        let mut second = first + 1;
        while second < board.devices.len() {
            let a = device_item(board, first);
            let b = device_item(board, second);
            if a.range().overlaps(&b.range()) {
                return Some(Violation::DevicesOverlap {
                    first: a,
                    second: b,
                });
            }
            second += 1;
        }
        first += 1;
    }
    None
}

/// Rule 3.
const fn check_devices_against_memory(board: &Board) -> Option<Violation> {
    let mut index = 0;
    while index < board.devices.len() {
        let device = device_item(board, index);
        let mut bank = 0;
        while bank < board.ram.len() {
            if device.range().overlaps(&board.ram[bank]) {
                return Some(Violation::DeviceOverlapsMemory {
                    device,
                    memory: Item::new(ItemKind::RamBank, "", board.ram[bank]),
                });
            }
            bank += 1;
        }
        if device.range().overlaps(&board.hypervisor.memory) {
            return Some(Violation::DeviceOverlapsMemory {
                device,
                memory: hypervisor_item(board),
            });
        }
        index += 1;
    }
    None
}

/// Rule 17: an unused range is harmless only if it is nothing else.
const fn check_unused(board: &Board) -> Option<Violation> {
    let first_unused = board.devices.len();
    let mut index = 0;
    while index < board.unused.len() {
        let unused = item_at(board, first_unused + index);
        let mut other = 0;
        while other < item_count(board) {
            let item = item_at(board, other);
            let is_itself = other == first_unused + index;
            let is_unused = matches!(item.kind, ItemKind::Unused);
            if !is_itself && !is_unused && unused.range().overlaps(&item.range()) {
                return Some(Violation::UnusedOverlaps {
                    unused,
                    other: item,
                });
            }
            other += 1;
        }
        index += 1;
    }
    None
}

/// Rule 4, for the board's banks.
const fn check_ram_banks(board: &Board) -> Option<Violation> {
    let mut index = 0;
    while index < board.ram.len() {
        let bank = Item::new(ItemKind::RamBank, "", board.ram[index]);
        if !board.ram[index].is_aligned(board.granule) {
            return Some(Violation::RamMisaligned {
                ram: bank,
                granule: board.granule,
            });
        }
        let mut other = index + 1;
        while other < board.ram.len() {
            if board.ram[index].overlaps(&board.ram[other]) {
                return Some(Violation::RamOverlap {
                    first: bank,
                    second: Item::new(ItemKind::RamBank, "", board.ram[other]),
                });
            }
            other += 1;
        }
        index += 1;
    }
    None
}

const fn in_one_bank(board: &Board, range: &PhysRange) -> bool {
    let mut index = 0;
    while index < board.ram.len() {
        if board.ram[index].covers(range) {
            return true;
        }
        index += 1;
    }
    false
}

/// Rules 4 and 18 for the hypervisor's own memory.
const fn check_hypervisor_memory(board: &Board) -> Option<Violation> {
    let memory = board.hypervisor.memory;
    let item = hypervisor_item(board);
    if !memory.is_aligned(board.granule) {
        return Some(Violation::RamMisaligned {
            ram: item,
            granule: board.granule,
        });
    }
    if !in_one_bank(board, &memory) {
        return Some(Violation::RamOutsideBanks { ram: item });
    }
    let heap_size = board.hypervisor.heap_size as u64;
    let fits = memory.contains(board.load_address) && heap_size < memory.end - board.load_address;
    if !fits {
        return Some(Violation::HypervisorDoesNotFit {
            memory: item,
            load_address: board.load_address,
            heap_size,
        });
    }
    None
}

/// Rules 9 and 10.
const fn check_interrupt_controller(board: &Board) -> Option<Violation> {
    let mut index = 0;
    while index < board.devices.len() {
        let region = &board.devices[index];
        let device = device_item(board, index);
        let strict_frame = matches!(
            region.kind,
            DeviceKind::GicDistributor | DeviceKind::GicRedistributor | DeviceKind::GicCpuInterface
        );
        if strict_frame && !matches!(region.attributes, MemoryAttributes::DeviceNGnRnE) {
            return Some(Violation::InterruptControllerAttributes {
                device,
                attributes: region.attributes,
            });
        }
        let virtualization_frame = matches!(
            region.kind,
            DeviceKind::GicHypervisor | DeviceKind::GicVirtualCpu
        );
        if virtualization_frame && !region.range().is_aligned(board.granule) {
            return Some(Violation::GicVirtualizationMisaligned {
                device,
                granule: board.granule,
            });
        }
        index += 1;
    }
    None
}

/// Rule 15 for the console.
const fn check_console(board: &Board) -> Option<Violation> {
    let name = board.hypervisor.console.device;
    let Some(region) = board.device(name) else {
        return Some(Violation::UnknownDevice {
            partition: None,
            name,
        });
    };
    if !region.kind.is_uart() {
        return Some(Violation::ConsoleNotUart {
            console: Item::new(ItemKind::Device, region.name, region.range()),
        });
    }
    None
}

/// Rules 11 and 14 for CPUs.
const fn check_partition_cpus(board: &Board) -> Option<Violation> {
    let mut index = 0;
    while index < board.partitions.len() {
        let partition = &board.partitions[index];
        if partition.cpus.is_empty() {
            return Some(Violation::PartitionWithoutCpus {
                partition: partition.name,
            });
        }
        if partition.ram.is_empty() {
            return Some(Violation::PartitionWithoutRam {
                partition: partition.name,
            });
        }
        let mut cpu = 0;
        while cpu < partition.cpus.len() {
            let logical = partition.cpus[cpu];
            if logical >= board.max_cpus {
                return Some(Violation::CpuOutOfRange {
                    cpu: logical,
                    partition: partition.name,
                    max_cpus: board.max_cpus,
                });
            }
            if let Some(other) = earlier_owner_of_cpu(board, index, cpu, logical) {
                return Some(Violation::CpuInTwoPartitions {
                    cpu: logical,
                    first: other,
                    second: partition.name,
                });
            }
            cpu += 1;
        }
        index += 1;
    }
    None
}

/// The partition that lists `logical` before entry `cpu` of partition `index`.
const fn earlier_owner_of_cpu(
    board: &Board,
    index: usize,
    cpu: usize,
    logical: usize,
) -> Option<&'static str> {
    let mut other = 0;
    while other <= index {
        let partition = &board.partitions[other];
        let limit = if other == index {
            cpu
        } else {
            partition.cpus.len()
        };
        let mut entry = 0;
        while entry < limit {
            if partition.cpus[entry] == logical {
                return Some(partition.name);
            }
            entry += 1;
        }
        other += 1;
    }
    None
}

/// Rules 4 and 5 for partition RAM.
const fn check_partition_ram(board: &Board) -> Option<Violation> {
    let first_partition_ram = item_count(board) - partition_ram_count(board);
    let mut index = first_partition_ram;
    while index < item_count(board) {
        let ram = item_at(board, index);
        if !ram.range().is_aligned(board.granule) {
            return Some(Violation::RamMisaligned {
                ram,
                granule: board.granule,
            });
        }
        if !in_one_bank(board, &ram.range()) {
            return Some(Violation::RamOutsideBanks { ram });
        }
        let mut other = first_partition_ram;
        while other < index {
            let earlier = item_at(board, other);
            if earlier.range().overlaps(&ram.range()) {
                return Some(Violation::RamOverlap {
                    first: earlier,
                    second: ram,
                });
            }
            other += 1;
        }
        if ram.range().overlaps(&board.hypervisor.memory) {
            return Some(Violation::RamOverlapsReserved {
                ram,
                reserved: hypervisor_item(board),
            });
        }
        let mut reserved = 0;
        while reserved < board.reserved.len() {
            let range = board.reserved[reserved].range;
            if ram.range().overlaps(&range) {
                return Some(Violation::RamOverlapsReserved {
                    ram,
                    reserved: Item::new(ItemKind::Reserved, board.reserved[reserved].name, range),
                });
            }
            reserved += 1;
        }
        index += 1;
    }
    None
}

const fn partition_ram_count(board: &Board) -> usize {
    let mut count = 0;
    let mut index = 0;
    while index < board.partitions.len() {
        count += board.partitions[index].ram.len();
        index += 1;
    }
    count
}

/// Rules 15, 16, 6 and 7 (granted console), grant by grant.
const fn check_grants(board: &Board) -> Option<Violation> {
    let console = board.hypervisor.console.device;
    let mut index = 0;
    while index < board.partitions.len() {
        let partition = &board.partitions[index];
        let mut grant = 0;
        while grant < partition.grants.len() {
            let name = partition.grants[grant].device;
            let Some(device) = named_device_item(board, name) else {
                return Some(Violation::UnknownDevice {
                    partition: Some(partition.name),
                    name,
                });
            };
            if same_str(name, console) {
                return Some(Violation::ConsoleGranted {
                    console: device,
                    partition: partition.name,
                });
            }
            let Some(region) = board.device(name) else {
                return Some(Violation::UnknownDevice {
                    partition: Some(partition.name),
                    name,
                });
            };
            if region.kind.is_interrupt_controller() {
                return Some(Violation::InterruptControllerGranted {
                    device,
                    partition: partition.name,
                });
            }
            if let Some(first) = earlier_grant_of(board, index, grant, name) {
                return Some(Violation::DeviceGrantedTwice {
                    device,
                    first,
                    second: partition.name,
                });
            }
            grant += 1;
        }
        index += 1;
    }
    None
}

/// The partition that grants `name` before grant `grant` of partition `index`.
const fn earlier_grant_of(
    board: &Board,
    index: usize,
    grant: usize,
    name: &str,
) -> Option<&'static str> {
    let mut other = 0;
    while other <= index {
        let partition = &board.partitions[other];
        let limit = if other == index {
            grant
        } else {
            partition.grants.len()
        };
        let mut entry = 0;
        while entry < limit {
            if same_str(partition.grants[entry].device, name) {
                return Some(partition.name);
            }
            entry += 1;
        }
        other += 1;
    }
    None
}

/// Rule 12: every interrupt of every granted device, against those of the other
/// partitions' grants.
const fn check_interrupts(board: &Board) -> Option<Violation> {
    let mut first = 0;
    while first < board.partitions.len() {
        let mut second = first + 1;
        while second < board.partitions.len() {
            check!(shared_interrupt(
                board,
                &board.partitions[first],
                &board.partitions[second]
            ));
            second += 1;
        }
        first += 1;
    }
    None
}

const fn shared_interrupt(board: &Board, a: &Partition, b: &Partition) -> Option<Violation> {
    let mut grant_a = 0;
    while grant_a < a.grants.len() {
        let region_a = board.device(a.grants[grant_a].device);
        let mut grant_b = 0;
        while grant_b < b.grants.len() {
            let region_b = board.device(b.grants[grant_b].device);
            if let (Some(region_a), Some(region_b)) = (region_a, region_b)
                && let Some(interrupt) = common_interrupt(
                    region_a.interrupts.as_slice(),
                    region_b.interrupts.as_slice(),
                )
            {
                return Some(Violation::InterruptInTwoPartitions {
                    interrupt,
                    first: a.name,
                    first_device: region_a.name,
                    second: b.name,
                    second_device: region_b.name,
                });
            }
            grant_b += 1;
        }
        grant_a += 1;
    }
    None
}

const fn common_interrupt(a: &[IntId], b: &[IntId]) -> Option<IntId> {
    let mut i = 0;
    while i < a.len() {
        let mut j = 0;
        while j < b.len() {
            if a[i].0 == b[j].0 {
                return Some(a[i]);
            }
            j += 1;
        }
        i += 1;
    }
    None
}

/// Rules 7 (console in a direct span), 8 and 13: what each grant's span holds.
const fn check_mappings(board: &Board) -> Option<Violation> {
    let console = board.console_region().range();
    let console_item = Item::new(ItemKind::Device, board.hypervisor.console.device, console);
    let mut index = 0;
    while index < board.partitions.len() {
        let partition = &board.partitions[index];
        let mut grant_index = 0;
        while grant_index < partition.grants.len() {
            let grant = &partition.grants[grant_index];
            let Some(region) = board.device(grant.device) else {
                panic!("check_grants has rejected unknown devices");
            };
            let device = Item::new(ItemKind::Device, region.name, region.range());
            let span = region.range().span(board.granule);
            let forced_direct = matches!(grant.mode, GrantMode::Direct);
            if forced_direct && span.overlaps(&console) {
                return Some(Violation::ConsoleInDirectSpan {
                    console: console_item,
                    partition: partition.name,
                    device,
                    span,
                    granule: board.granule,
                });
            }
            if forced_direct && let Some(foreign) = board.first_foreign_byte(partition, &span) {
                let foreign_device = match foreign.device {
                    Some(other) => Some(Item::new(ItemKind::Device, other.name, other.range())),
                    None => None,
                };
                return Some(Violation::DirectSpanNotClean {
                    partition: partition.name,
                    device,
                    span,
                    granule: board.granule,
                    foreign_address: foreign.address,
                    foreign_device,
                });
            }
            let trapped = matches!(board.mapping(partition, grant), Mapping::Trapped);
            if trapped && region.access.widths.is_empty() {
                return Some(Violation::TrappedWithoutWidths {
                    partition: partition.name,
                    device,
                });
            }
            grant_index += 1;
        }
        index += 1;
    }
    None
}

/// Fails compilation if `$board` (a `const` [`Board`]) breaks a rule, with the
/// rule's message.
///
/// ```compile_fail
/// use transom_boards::*;
/// const BAD: Board = Board {
///     name: "bad",
///     granule: Granule::Size4KiB,
///     load_address: 0x4008_0000,
///     max_cpus: 1,
///     secondary_boot: SecondaryBoot::Psci,
///     hypervisor: Hypervisor {
///         console: Console { device: "uart", uart: UartKind::Pl011 { clock_hz: 24_000_000 }, baud: 115_200 },
///         memory: PhysRange::new(0x4000_0000, 0x100_0000),
///         heap_size: 0x10_0000,
///     },
///     ram: &[PhysRange::new(0x4000_0000, 0x4000_0000)],
///     reserved: &[],
///     devices: &[Region::new("uart", 0x0900_0000, 0, DeviceKind::Pl011)],
///     unused: &[],
///     partitions: &[],
/// };
/// check_board!(BAD);
/// ```
#[macro_export]
macro_rules! check_board {
    ($board:expr) => {
        const _: () = {
            if let Err(error) = $crate::validate(&$board) {
                panic!("{}", error.message().as_str());
            }
        };
    };
}
