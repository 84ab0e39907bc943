//! The EL2 stage-1 translation tables: an identity map of the hypervisor's memory.
//!
//! Built from a [`MemoryPlan`] with the MMU off, before any atomic read-modify-write
//! may run, so the tables come from a fixed pool in the image (`.boot_tables`) rather
//! than the heap (which needs a lock).
//!
//! | what                         | attributes                          |
//! |------------------------------|-------------------------------------|
//! | image `.text`                | Normal WB, read-only, executable    |
//! | image `.rodata`              | Normal WB, read-only, execute-never |
//! | data, `.bss`, stacks, heap   | Normal WB, read-write, execute-never|
//! | the rest of RAM              | Normal WB, read-write, execute-never|
//! | board device ranges          | Device-nGnRE, execute-never         |
//!
//! The VA space is 39 bits (`T0SZ` = 25), 4 KiB granule, starting at level 1:
//! enough for every RAM bank and peripheral of the boards Transom supports.
//!
//! The mapper is Transom's own rather than `aarch64-paging`'s: the boot maps a few
//! hundred pages (the image's sections, device ranges that are not 2 MiB-aligned,
//! such as the head of `virt`'s redistributor region), and that crate's general
//! `map_range` cost about 135 instructions per entry, 69,000 of the boot's budget
//! of 50,000 to the first guest instruction. This one fills a run of entries in a
//! table with one store each. It needs nothing the crate offers beyond that: the
//! tables are built once, with the MMU off (no break-before-make), and never change.

use core::arch::asm;
use core::sync::atomic::{AtomicBool, Ordering};

use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable, SCTLR_EL2, TCR_EL2};
use transom_boards::PhysRange;

use super::cpu;
use super::entry::SCTLR_EL2_RES1;
use super::memory::ImageLayout;

/// Pages the boot tables may use. Every board's map fits in a handful: one root
/// table, one level-2 table per GiB touched, one level-3 table per 2 MiB that is not
/// block-mapped (the image's edges, small device ranges).
const POOL_PAGES: usize = 32;
const VA_BITS: u64 = 39;
/// The root table's level: with 39 VA bits and a 4 KiB granule, level 1
/// (Arm ARM D8.2.6, table D8-12).
const ROOT_LEVEL: u32 = 1;
/// The last level, whose entries are pages.
const PAGE_LEVEL: u32 = 3;
const PAGE_SHIFT: u32 = 12;
/// Entries per table (4 KiB of 8-byte descriptors).
const ENTRIES: usize = 512;
const INDEX_BITS: u32 = 9;

/// Descriptor bits of the VMSAv8-64 stage-1 formats (Arm ARM D8.3.1, D8.3.2).
mod bits {
    /// Bit 0: the descriptor is valid.
    pub const VALID: u64 = 1 << 0;
    /// Bit 1: a table (levels 0-2) or a page (level 3) rather than a block.
    pub const TABLE_OR_PAGE: u64 = 1 << 1;
    /// Bits 4:2, `AttrIndx`: which `MAIR_EL2` attribute.
    pub const fn attribute_index(index: u8) -> u64 {
        (index as u64) << 2
    }
    /// `AP[1]`, RES1 in a regime with one privilege level such as EL2 (D8.4.1.2.1).
    pub const AP1_RES1: u64 = 1 << 6;
    /// `AP[2]`: read-only.
    pub const READ_ONLY: u64 = 1 << 7;
    /// Bits 9:8, `SH` = 0b11: inner shareable.
    pub const INNER_SHAREABLE: u64 = 0b11 << 8;
    /// Bit 10, `AF`: accessed (no access-flag fault on first use).
    pub const ACCESSED: u64 = 1 << 10;
    /// Bit 54, `XN` in the EL2 regime: execute-never.
    pub const EXECUTE_NEVER: u64 = 1 << 54;
    /// Bits 47:12: the output address of a page or table descriptor, and of a
    /// block once its low bits are clear.
    pub const OUTPUT_ADDRESS: u64 = 0x0000_ffff_ffff_f000;
    /// Bits 63:50 and 11:2: a block's or page's attributes.
    pub const ATTRIBUTES: u64 = !OUTPUT_ADDRESS & !(VALID | TABLE_OR_PAGE);
}

const MAIR_DEVICE_NGNRE: u8 = 0;
const MAIR_NORMAL_WB: u8 = 1;
/// `MAIR_EL2` (Arm ARM D24.2.111): attribute 0 `Device-nGnRE` (0b0000_0100),
/// attribute 1 Normal inner and outer write-back non-transient, read- and
/// write-allocate (0b1111_1111).
const MAIR: u64 = (0x04 << (8 * MAIR_DEVICE_NGNRE as u64)) | (0xff << (8 * MAIR_NORMAL_WB as u64));

/// Normal write-back memory, inner shareable.
const NORMAL: u64 =
    bits::attribute_index(MAIR_NORMAL_WB) | bits::INNER_SHAREABLE | bits::ACCESSED | bits::AP1_RES1;
const DEVICE: u64 = bits::attribute_index(MAIR_DEVICE_NGNRE)
    | bits::ACCESSED
    | bits::AP1_RES1
    | bits::EXECUTE_NEVER;
const TEXT: u64 = NORMAL | bits::READ_ONLY;
const READ_ONLY: u64 = NORMAL | bits::READ_ONLY | bits::EXECUTE_NEVER;
const READ_WRITE: u64 = NORMAL | bits::EXECUTE_NEVER;

/// Everything the hypervisor maps at EL2.
pub struct MemoryPlan<'a> {
    /// The running image.
    pub image: ImageLayout,
    /// The heap.
    pub heap: PhysRange,
    /// RAM the firmware reports and the board allows.
    pub ram: &'a [PhysRange],
    /// Device ranges of the board.
    pub devices: &'a [PhysRange],
    /// The firmware's device tree blob, mapped read-only if it lies outside `ram`.
    pub device_tree: Option<PhysRange>,
}

/// Why the EL2 tables could not be built.
#[derive(Debug)]
pub enum MmuError {
    /// The range lies beyond the 39-bit VA space.
    Unmappable(PhysRange),
    /// The pool ran out of table pages.
    PoolExhausted,
}

/// The system register values that turn the MMU on with the boot tables.
#[derive(Clone, Copy, Debug)]
pub struct MmuRegisters {
    /// `MAIR_EL2`.
    pub mair: u64,
    /// `TCR_EL2`.
    pub tcr: u64,
    /// `TTBR0_EL2`.
    pub ttbr0: u64,
    /// `SCTLR_EL2`.
    pub sctlr: u64,
}

#[repr(C, align(4096))]
struct PoolPage([u64; ENTRIES]);

/// The table pool, handed out one page at a time, once. It is outside `.bss`, so
/// the boot does not zero (and invalidate) 32 pages to use a handful: each page is
/// zeroed when it is handed out.
#[unsafe(link_section = ".boot_tables")]
static mut POOL: [PoolPage; POOL_PAGES] = [const { PoolPage([0; ENTRIES]) }; POOL_PAGES];
static POOL_CLAIMED: AtomicBool = AtomicBool::new(false);

/// The pool's pages, handed out in order. Pages are never returned: boot tables
/// only grow.
struct BootPool {
    pages: &'static mut [PoolPage; POOL_PAGES],
    next: usize,
}

impl BootPool {
    /// Claims the pool. Runs with the MMU off, on the boot CPU alone, so a load and a
    /// store (no exclusive access, which needs the MMU on) guard against a second claim.
    fn claim() -> BootPool {
        assert!(
            !POOL_CLAIMED.load(Ordering::Relaxed),
            "the boot table pool is claimed once"
        );
        POOL_CLAIMED.store(true, Ordering::Relaxed);
        // SAFETY: the flag above lets this run once, so this is the only reference
        // to POOL ever made.
        let pages = unsafe { (&raw mut POOL).as_mut() }.expect("a static is not at 0");
        BootPool { pages, next: 0 }
    }

    /// The pages handed out so far.
    fn used(&self) -> PhysRange {
        let start = self.pages.as_ptr() as u64;
        PhysRange::new(start, (self.next * size_of::<PoolPage>()) as u64)
    }

    /// A table page not handed out before, as it was left (the caller fills every
    /// entry); its index in the pool.
    fn allocate(&mut self) -> Result<&mut [u64; ENTRIES], MmuError> {
        let page = self
            .pages
            .get_mut(self.next)
            .ok_or(MmuError::PoolExhausted)?;
        self.next += 1;
        Ok(&mut page.0)
    }

    fn address(&self, index: usize) -> u64 {
        self.pages[index].0.as_ptr() as u64
    }

    /// The pool index of the table at `address`, which this pool handed out.
    fn index_of(&self, address: u64) -> usize {
        ((address - self.pages.as_ptr() as u64) >> PAGE_SHIFT) as usize
    }
}

/// The EL2 tables, built and ready to be turned on.
pub struct El2Tables {
    pool: BootPool,
    root: usize,
    registers: MmuRegisters,
}

impl El2Tables {
    /// The register values that activate these tables.
    pub fn registers(&self) -> MmuRegisters {
        self.registers
    }

    /// Pages of the pool in use.
    pub fn pages_used(&self) -> usize {
        self.pool.next
    }

    /// Identity-maps the pages `range` touches with `attributes`, over whatever was
    /// mapped there.
    fn map(&mut self, range: PhysRange, attributes: u64) -> Result<(), MmuError> {
        let page_mask = (1 << PAGE_SHIFT) - 1;
        if range.end > 1 << VA_BITS || range.start > range.end {
            return Err(MmuError::Unmappable(range));
        }
        let start = range.start & !page_mask;
        let end = (range.end + page_mask) & !page_mask;
        self.map_in(self.root, ROOT_LEVEL, start, end, attributes)
    }

    /// Maps `start..end` (page-aligned, inside the span of `table` at `level`).
    /// Each level has its own copy of the walk, so its entry size and leaf type
    /// are constants: the boot makes some 30 of these calls.
    fn map_in(
        &mut self,
        table: usize,
        level: u32,
        start: u64,
        end: u64,
        attributes: u64,
    ) -> Result<(), MmuError> {
        const _: () = assert!(ROOT_LEVEL == 1 && PAGE_LEVEL == 3);
        match level {
            1 => self.map_at::<1>(table, start, end, attributes),
            2 => self.map_at::<2>(table, start, end, attributes),
            _ => self.map_at::<PAGE_LEVEL>(table, start, end, attributes),
        }
    }

    /// [`El2Tables::map_in`] at `LEVEL`.
    fn map_at<const LEVEL: u32>(
        &mut self,
        table: usize,
        start: u64,
        end: u64,
        attributes: u64,
    ) -> Result<(), MmuError> {
        let level = LEVEL;
        let shift = entry_shift(level);
        let entry_size = 1u64 << shift;
        let mut address = start;
        while address < end {
            let index = (address >> shift) as usize % ENTRIES;
            let entry_end = (address | (entry_size - 1)) + 1;
            if address & (entry_size - 1) == 0 && entry_end <= end {
                // A run of whole entries, up to the end of the range or of this
                // table's span: one store each.
                let table_end = (address | ((entry_size << INDEX_BITS) - 1)) + 1;
                let run_end = (end & !(entry_size - 1)).min(table_end);
                let count = ((run_end - address) >> shift) as usize;
                let entries = &mut self.pool.pages[table].0[index..index + count];
                let first = address | attributes | leaf_type(level) | bits::VALID;
                fill_leaves(entries, first, entry_size);
                address = run_end;
                continue;
            }
            // Never at the page level: `start` and `end` are page-aligned, so there
            // every entry is whole.
            let next = self.next_table(table, index, level)?;
            let piece_end = entry_end.min(end);
            self.map_in(next, level + 1, address, piece_end, attributes)?;
            address = piece_end;
        }
        Ok(())
    }

    /// The table entry `index` of `table` points at, made if the entry is invalid,
    /// and split into pages (or 2 MiB blocks) if it is a block, so that a
    /// narrower mapping can replace part of it.
    fn next_table(&mut self, table: usize, index: usize, level: u32) -> Result<usize, MmuError> {
        let entry = self.pool.pages[table].0[index];
        if entry & bits::VALID != 0 && entry & bits::TABLE_OR_PAGE != 0 {
            return Ok(self.pool.index_of(entry & bits::OUTPUT_ADDRESS));
        }
        let next = self.pool.next;
        let entries = self.pool.allocate()?;
        if entry & bits::VALID == 0 {
            // Every entry invalid.
            entries.fill(0);
        } else {
            split(entry, level + 1, entries);
        }
        self.pool.pages[table].0[index] =
            self.pool.address(next) | bits::TABLE_OR_PAGE | bits::VALID;
        Ok(next)
    }
}

/// log2 of the bytes an entry of a table at `level` maps.
const fn entry_shift(level: u32) -> u32 {
    PAGE_SHIFT + INDEX_BITS * (PAGE_LEVEL - level)
}

/// The type bits of a leaf at `level`: level 1 and 2 leaves are blocks, level 3
/// leaves are pages (Arm ARM D8.2.6: 1 GiB and 2 MiB blocks with a 4 KiB granule;
/// D8.3.1: bit 1 set for a page, clear for a block).
const fn leaf_type(level: u32) -> u64 {
    if level == PAGE_LEVEL {
        bits::TABLE_OR_PAGE
    } else {
        0
    }
}

/// Fills `entries`, a table at `level`, to map what `block` mapped, with its
/// attributes.
fn split(block: u64, level: u32, entries: &mut [u64; ENTRIES]) {
    let first = (block & bits::OUTPUT_ADDRESS)
        | (block & bits::ATTRIBUTES)
        | leaf_type(level)
        | bits::VALID;
    fill_leaves(entries, first, 1 << entry_shift(level));
}

/// Fills `entries` with leaves mapping consecutive blocks or pages of `step` bytes,
/// the first described by `first`. Four entries per iteration, each descriptor one
/// addition from the one four before: a split fills 512 entries, and indexing each
/// from the start cost about five instructions an entry.
#[inline(always)]
fn fill_leaves(entries: &mut [u64], first: u64, step: u64) {
    let mut descriptors = [first, first + step, first + 2 * step, first + 3 * step];
    let mut quads = entries.chunks_exact_mut(4);
    for quad in &mut quads {
        quad.copy_from_slice(&descriptors);
        for descriptor in &mut descriptors {
            *descriptor += 4 * step;
        }
    }
    for (entry, descriptor) in quads.into_remainder().iter_mut().zip(descriptors) {
        *entry = descriptor;
    }
}

/// Builds the identity map of `plan`. Later, narrower mappings override earlier,
/// wider ones (the image's pages over the RAM block that holds it).
pub fn build(plan: &MemoryPlan<'_>) -> Result<El2Tables, MmuError> {
    let mut pool = BootPool::claim();
    let root = pool.next;
    pool.allocate()?.fill(0);
    let ttbr0 = pool.address(root);
    let mut tables = El2Tables {
        pool,
        root,
        registers: MmuRegisters {
            mair: MAIR,
            tcr: tcr_value(),
            ttbr0,
            sctlr: SCTLR_EL2_RES1
                | (SCTLR_EL2::M::Enable
                    + SCTLR_EL2::C::Cacheable
                    + SCTLR_EL2::I::Cacheable
                    + SCTLR_EL2::SA::Enable)
                    .value,
        },
    };
    for &ram in plan.ram {
        tables.map(ram, READ_WRITE)?;
    }
    if let Some(blob) = plan.device_tree {
        let inside_ram = plan
            .ram
            .iter()
            .any(|ram| ram.start <= blob.start && blob.end <= ram.end);
        if !inside_ram {
            tables.map(blob, READ_ONLY)?;
        }
    }
    for &device in plan.devices {
        tables.map(device, DEVICE)?;
    }
    // RAM is already read-write: mapping the heap or the data again inside it
    // would only split its blocks into pages with the same attributes.
    for range in [plan.heap, plan.image.data] {
        if !plan.ram.iter().any(|ram| ram.covers(&range)) {
            tables.map(range, READ_WRITE)?;
        }
    }
    tables.map(plan.image.rodata, READ_ONLY)?;
    tables.map(plan.image.text, TEXT)?;
    Ok(tables)
}

/// `TCR_EL2` (non-VHE format, Arm ARM D24.2.182): 39-bit VA, 4 KiB granule, table
/// walks inner-shareable write-back, output size as large as the CPU supports.
fn tcr_value() -> u64 {
    /// Bits 31 and 23 are RES1 in the non-VHE layout.
    const TCR_EL2_RES1: u64 = (1 << 31) | (1 << 23);
    const PS_48_BITS: u64 = 0b101;
    // Output sizes above 48 bits need FEAT_LPA2 descriptors, which the tables do not use.
    let pa_range = ID_AA64MMFR0_EL1
        .read(ID_AA64MMFR0_EL1::PARange)
        .min(PS_48_BITS);
    TCR_EL2_RES1
        | (TCR_EL2::T0SZ.val(64 - VA_BITS)
            + TCR_EL2::TG0::KiB_4
            + TCR_EL2::SH0::Inner
            + TCR_EL2::ORGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::IRGN0::WriteBack_ReadAlloc_WriteAlloc_Cacheable
            + TCR_EL2::PS.val(pa_range))
        .value
}

/// Turns on the MMU and caches of the boot CPU with `tables`, and keeps the tables
/// alive for good (the EL2 regime is never switched off).
///
/// Call once, with the MMU off, after `tables` maps everything the running code,
/// stack and data use (its `MemoryPlan` included the image).
pub fn enable(tables: El2Tables, image: &ImageLayout) -> MmuRegisters {
    let registers = tables.registers;
    // Drop any stale line the firmware may have left over memory the boot CPU wrote
    // with its data cache off and still reads: the statics, the live part of its
    // stack and the table pages in use. Nothing else holds data yet (the other
    // stacks and the heap are first written with the MMU on).
    cpu::invalidate_dcache_to_poc(image.statics.start, image.statics.size());
    let stack = PhysRange {
        start: cpu::stack_pointer(),
        end: super::entry::stack_top(0),
    };
    cpu::invalidate_dcache_to_poc(stack.start, stack.size());
    let pool = tables.pool.used();
    cpu::invalidate_dcache_to_poc(pool.start, pool.size());
    // SAFETY: the tables identity-map the image (code, data, stacks) and the heap
    // with the attributes their use needs, so every access after `msr sctlr_el2`
    // translates to the same address as before; they live in `POOL`, a static
    // claimed once, so they outlive every CPU that uses them.
    unsafe { activate(&registers) };
    registers
}

/// Writes the MMU registers and turns translation on.
///
/// # Safety
///
/// `registers.ttbr0` must point at tables that identity-map all code, data and stack
/// the caller uses, and those tables must never be freed.
unsafe fn activate(registers: &MmuRegisters) {
    // SAFETY: the caller guarantees the identity map covers all memory in use, so
    // execution continues at the same addresses once SCTLR_EL2.M is set.
    unsafe {
        asm!(
            "msr mair_el2, {mair}",
            "msr tcr_el2, {tcr}",
            "msr ttbr0_el2, {ttbr0}",
            "isb",
            "tlbi alle2",
            "ic iallu",
            "dsb nsh",
            "isb",
            "msr sctlr_el2, {sctlr}",
            "isb",
            mair = in(reg) registers.mair,
            tcr = in(reg) registers.tcr,
            ttbr0 = in(reg) registers.ttbr0,
            sctlr = in(reg) registers.sctlr,
            options(nostack),
        );
    }
}
