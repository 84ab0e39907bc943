//! The EL2 stage-1 translation tables: an identity map of the hypervisor's memory.
//!
//! Built with `aarch64-paging` (its `El2` regime) from a [`MemoryPlan`]. The tables
//! are built with the MMU off, before any atomic read-modify-write may run, so they
//! come from a fixed pool in the image (`.boot_tables`) rather than the heap (which
//! needs a lock).
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

use core::arch::asm;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};

use aarch64_cpu::registers::{ID_AA64MMFR0_EL1, Readable, SCTLR_EL2, TCR_EL2};
use aarch64_paging::descriptor::{El23Attributes, PhysicalAddress};
use aarch64_paging::mair::{Mair, MairAttribute, NormalMemory};
use aarch64_paging::paging::{Constraints, El2, MemoryRegion, PageTable, Translation};
use aarch64_paging::{MapError, Mapping};
use transom_boards::PhysRange;

use super::cpu;
use super::entry::SCTLR_EL2_RES1;
use super::memory::ImageLayout;

/// Pages the boot tables may use. Every board's map fits in a handful: one root
/// table, one level-2 table per GiB touched, one level-3 table per 2 MiB that is not
/// block-mapped (the image's edges, small device ranges).
const POOL_PAGES: usize = 32;
const VA_BITS: u64 = 39;
const ROOT_LEVEL: usize = 1;

const MAIR_DEVICE_NGNRE: u8 = 0;
const MAIR_NORMAL_WB: u8 = 1;
const MAIR: Mair = Mair::EMPTY
    .with_attribute(MAIR_DEVICE_NGNRE, MairAttribute::DEVICE_NGNRE)
    .with_attribute(
        MAIR_NORMAL_WB,
        MairAttribute::normal(
            NormalMemory::WriteBackNonTransientReadWriteAllocate,
            NormalMemory::WriteBackNonTransientReadWriteAllocate,
        ),
    );

/// Normal write-back memory, inner shareable. `USER_RES1` is `AP[1]`, RES1 in the
/// EL2 regime (Arm ARM D8.4.1.2.1).
const NORMAL: El23Attributes = El23Attributes::VALID
    .union(El23Attributes::ATTRIBUTE_INDEX_1)
    .union(El23Attributes::INNER_SHAREABLE)
    .union(El23Attributes::ACCESSED)
    .union(El23Attributes::USER_RES1);
const DEVICE: El23Attributes = El23Attributes::VALID
    .union(El23Attributes::ATTRIBUTE_INDEX_0)
    .union(El23Attributes::ACCESSED)
    .union(El23Attributes::USER_RES1)
    .union(El23Attributes::XN);
const TEXT: El23Attributes = NORMAL.union(El23Attributes::READ_ONLY);
const READ_ONLY: El23Attributes = NORMAL
    .union(El23Attributes::READ_ONLY)
    .union(El23Attributes::XN);
const READ_WRITE: El23Attributes = NORMAL.union(El23Attributes::XN);

const _: () = assert!(MAIR_NORMAL_WB == 1 && MAIR_DEVICE_NGNRE == 0);

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
    /// `aarch64-paging` refused a range.
    Map {
        /// The range.
        range: PhysRange,
        /// What it said.
        error: MapError,
    },
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
struct PoolPage([u64; 512]);

/// The table pool, handed out one page at a time, once. It is outside `.bss`, so
/// the boot does not zero (and invalidate) 32 pages to use a handful: each page is
/// zeroed when it is handed out.
#[unsafe(link_section = ".boot_tables")]
static mut POOL: [PoolPage; POOL_PAGES] = [const { PoolPage([0; 512]) }; POOL_PAGES];
static POOL_CLAIMED: AtomicBool = AtomicBool::new(false);

/// Hands out pool pages. Pages are never returned: boot tables only grow.
struct BootPool {
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
        BootPool { next: 0 }
    }

    /// The first `pages` pages of the pool.
    fn range(pages: usize) -> PhysRange {
        let start = (&raw const POOL) as u64;
        PhysRange::new(start, (pages * size_of::<PoolPage>()) as u64)
    }
}

impl Translation<El23Attributes> for BootPool {
    fn allocate_table(&mut self) -> (NonNull<PageTable<El23Attributes>>, PhysicalAddress) {
        assert!(
            self.next < POOL_PAGES,
            "EL2 boot page-table pool exhausted ({POOL_PAGES} pages)"
        );
        // SAFETY: `next` < POOL_PAGES, so the page is inside POOL; `claim` makes this
        // the only `BootPool`, and `next` only grows, so each page is handed out once.
        let page = unsafe { (&raw mut POOL).cast::<PoolPage>().add(self.next) };
        self.next += 1;
        // SAFETY: `page` is a page of POOL handed out to no one else (above), aligned
        // for `PoolPage`; with the MMU off it is written straight to memory. A zero
        // page is an empty table: every entry invalid.
        unsafe { page.write_bytes(0, 1) };
        let table = NonNull::new(page.cast::<PageTable<El23Attributes>>())
            .expect("a static's address is not null");
        (table, PhysicalAddress(page as usize))
    }

    unsafe fn deallocate_table(&mut self, _page_table: NonNull<PageTable<El23Attributes>>) {
        // Boot tables are never freed; a page dropped by a block merge stays unused.
    }

    fn physical_to_virtual(&self, pa: PhysicalAddress) -> NonNull<PageTable<El23Attributes>> {
        NonNull::new(pa.0 as *mut PageTable<El23Attributes>).expect("tables are never at 0")
    }
}

/// The EL2 tables, built and ready to be turned on.
pub struct El2Tables {
    mapping: Mapping<BootPool, El2>,
    registers: MmuRegisters,
}

impl El2Tables {
    /// The register values that activate these tables.
    pub fn registers(&self) -> MmuRegisters {
        self.registers
    }

    /// Pages of the pool in use.
    pub fn pages_used(&self) -> usize {
        self.mapping.translation().next
    }
}

fn map(
    mapping: &mut Mapping<BootPool, El2>,
    range: PhysRange,
    attributes: El23Attributes,
) -> Result<(), MmuError> {
    let region = MemoryRegion::new(range.start as usize, range.end as usize);
    mapping
        .map_range(
            &region,
            PhysicalAddress(range.start as usize),
            attributes,
            Constraints::empty(),
        )
        .map_err(|error| MmuError::Map { range, error })
}

/// Builds the identity map of `plan`. Later, narrower mappings override earlier,
/// wider ones (the image's pages over the RAM block that holds it).
pub fn build(plan: &MemoryPlan<'_>) -> Result<El2Tables, MmuError> {
    let mut mapping = Mapping::new(BootPool::claim(), ROOT_LEVEL, El2);
    for &ram in plan.ram {
        map(&mut mapping, ram, READ_WRITE)?;
    }
    if let Some(blob) = plan.device_tree {
        let inside_ram = plan
            .ram
            .iter()
            .any(|ram| ram.start <= blob.start && blob.end <= ram.end);
        if !inside_ram {
            map(&mut mapping, blob, READ_ONLY)?;
        }
    }
    for &device in plan.devices {
        map(&mut mapping, device, DEVICE)?;
    }
    // RAM is already read-write: mapping the heap or the data again inside it
    // would only split its blocks into pages with the same attributes.
    for range in [plan.heap, plan.image.data] {
        if !plan.ram.iter().any(|ram| ram.covers(&range)) {
            map(&mut mapping, range, READ_WRITE)?;
        }
    }
    map(&mut mapping, plan.image.rodata, READ_ONLY)?;
    map(&mut mapping, plan.image.text, TEXT)?;

    let registers = MmuRegisters {
        mair: MAIR.0,
        tcr: tcr_value(),
        ttbr0: mapping.root_address().0 as u64,
        sctlr: SCTLR_EL2_RES1
            | (SCTLR_EL2::M::Enable
                + SCTLR_EL2::C::Cacheable
                + SCTLR_EL2::I::Cacheable
                + SCTLR_EL2::SA::Enable)
                .value,
    };
    Ok(El2Tables { mapping, registers })
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
    let pool = BootPool::range(tables.pages_used());
    cpu::invalidate_dcache_to_poc(pool.start, pool.size());
    // SAFETY: the tables identity-map the image (code, data, stacks) and the heap
    // with the attributes their use needs, so every access after `msr sctlr_el2`
    // translates to the same address as before; the tables are kept forever below.
    unsafe { activate(&registers) };
    // The tables must outlive every CPU using them: EL2 never turns its MMU off.
    core::mem::forget(tables);
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
