//! The boot sequence of the boot CPU, as a list of steps.

use transom_boards::{BoardError, Granule, PhysRange, SecondaryBoot};
use transom_vmm_core::bootargs::{self, BootOptions, ExitMethod, SelfTest};
use transom_vmm_core::esr::Esr;
use transom_vmm_core::verdict::Verdict;

use crate::arch::memory::{self, ImageLayout};
use crate::arch::mmu::{self, MemoryPlan, MmuRegisters};
use crate::arch::vectors::{TrapFrame, VectorKind};
use crate::board_table::{self, DeviceWindows, Grants};
use crate::log::ConsoleCell;
use crate::{Board, arch, exit, guest_load, heap, smp, stage2, stage2_probe, vcpu};
use transom_vmm_core::firmware_tree::{FirmwareTree, Ranges, TreeError};

/// An address no board maps: just below the top of the 39-bit EL2 VA space.
const UNMAPPED_PROBE_ADDRESS: u64 = 0x7f_0000_0000;

/// What the steps before the MMU found, kept for the log once there is one.
struct EarlyBoot {
    tree: Result<FirmwareTree<'static>, TreeError>,
    options: BootOptions<'static>,
    /// The board table as this boot uses it: with `transom.granule` applied.
    board: transom_boards::Board,
    /// Why the table cannot be used with the granule `transom.granule` asked for.
    board_error: Option<BoardError>,
    /// The grants of the board as EL2 maps it (`board`, unless `board_error`).
    grants: Grants,
    ram: Ranges,
    firmware_ram: Ranges,
    devices: DeviceWindows,
    devices_overflowed: bool,
    heap: PhysRange,
    heap_in_ram: bool,
    image: ImageLayout,
}

/// The boot CPU's Rust entry: called by the assembly with the MMU off.
pub fn primary_main<B: Board>(device_tree: usize, console: &'static ConsoleCell<B::Console>) -> ! {
    const {
        assert!(
            board_table::grant_count(&B::DESC) <= board_table::MAX_GRANTS,
            "the board table has more grants than the kernel resolves at boot"
        );
        assert!(
            B::DESC.partitions.len() <= arch::MAX_CPUS,
            "the board table has more partitions than CPUs the kernel runs"
        );
    }
    let early = prepare_memory::<B>(device_tree);
    let (mmu, table_pages) = enable_mmu(&early);
    console.install(B::console());

    log_banner::<B>();
    let tree = match &early.tree {
        Ok(tree) => tree,
        Err(error) => panic!(
            "the firmware's device tree (x0 = {:#x}) is unusable: {:?}",
            device_tree, error
        ),
    };
    let options = early.options;
    let board = early.board;
    log_memory(&early, table_pages);
    if !early.heap_in_ram {
        panic!(
            "the heap {} does not lie in RAM the firmware reports; the board's heap_size is too large",
            early.heap
        );
    }
    check_hypervisor_memory::<B>(&early);
    heap::init(board.hypervisor.heap_size);
    log_firmware(tree, &options);
    check_granule_option(&B::DESC, &early);
    board_table::log_partitions(&board);
    if board_table::cross_check(&board, tree, &early.firmware_ram) != Verdict::Pass {
        exit::end_run(Verdict::BoardMismatch);
    }
    let bundle = match guest_load::bundle(&board, tree) {
        Ok(bundle) => bundle,
        Err(verdict) => exit::end_run(verdict),
    };
    // A partition the bundle has no guest for is not started, and gets no tables.
    // Without a bundle nothing starts, and every partition's stage 2 is built and
    // logged: the boot shows what each partition would be given. The stage-2
    // self-test probes every partition.
    let wanted = |partition: &transom_boards::Partition| {
        options.selftest == Some(SelfTest::Stage2)
            || bundle
                .as_ref()
                .is_none_or(|bundle| bundle.guest(partition.name).is_some())
    };
    // Owned here for good: `primary_main` never returns, and the vCPUs of each
    // partition run on these tables.
    let partitions = match stage2::build_partition_spaces(&board, &early.grants, tree, wanted) {
        Ok(partitions) => partitions,
        Err(verdict) => exit::end_run(verdict),
    };

    init_gic(&board, tree);
    let online = start_cpus(tree, board.secondary_boot, &mmu);
    if options.selftest == Some(SelfTest::Stage2) {
        let verdict = stage2_probe::run(&partitions, board.hypervisor.memory);
        exit::end_run(if online == Verdict::Pass {
            verdict
        } else {
            online
        });
    }
    run_selftest(options.selftest);
    let (partitions, guests) = match guest_load::load(
        &board,
        tree,
        bundle.as_ref(),
        partitions,
        options.width_probe,
    ) {
        Ok(loaded) => loaded,
        Err(verdict) => exit::end_run(verdict),
    };
    if guests.is_empty() || online != Verdict::Pass {
        exit::end_run(online);
    }
    exit::end_run(vcpu::launch(partitions, &guests))
}

/// Sets up the machine's GIC (distributor, then this CPU), if it has one the
/// hypervisor can virtualize: a GICv3, or a GICv2 with its virtualization
/// extensions (GICH and GICV). The other CPUs set up their own part as they come
/// online. Without one, guests get no interrupts.
fn init_gic(board: &transom_boards::Board, tree: &FirmwareTree<'_>) {
    use transom_boards::DeviceKind;
    let frame = |kind: DeviceKind| crate::board_table::present_frame(board, tree, kind);
    let Some(distributor) = frame(DeviceKind::GicDistributor) else {
        defmt::info!("no GIC distributor: guests get no interrupts");
        return;
    };
    if let Some(redistributors) = frame(DeviceKind::GicRedistributor) {
        arch::gic::init(distributor, redistributors);
        if arch::gic::init_cpu(0, arch::cpu::mpidr()) {
            defmt::info!(
                "GICv3: distributor {=u64:#x}, redistributors {=u64:#x}",
                distributor.start,
                redistributors.start
            );
        } else {
            defmt::warn!("GICv3: no redistributor has the boot CPU's affinity");
        }
        return;
    }
    let (Some(cpu_interface), Some(hypervisor_interface), Some(_)) = (
        frame(DeviceKind::GicCpuInterface),
        frame(DeviceKind::GicHypervisor),
        frame(DeviceKind::GicVirtualCpu),
    ) else {
        defmt::info!("a GIC without virtualization extensions: guests get no interrupts");
        return;
    };
    arch::gic::init_v2(distributor, cpu_interface, hypervisor_interface);
    arch::gic::init_cpu(0, arch::cpu::mpidr());
    defmt::info!(
        "GICv2: distributor {=u64:#x}, CPU interface {=u64:#x}, virtual interface control {=u64:#x}",
        distributor.start,
        cpu_interface.start,
        hypervisor_interface.start
    );
}

/// The board table with `granule` (from `transom.granule`) instead of its own, and
/// whether the table's rules hold for it: the compile-time check covered only the
/// table's own granule.
fn with_granule(
    board: transom_boards::Board,
    granule: Option<Granule>,
) -> (transom_boards::Board, Option<BoardError>) {
    match granule {
        Some(granule) if granule != board.granule => {
            let board = transom_boards::Board { granule, ..board };
            (board, transom_boards::validate(&board).err())
        }
        _ => (board, None),
    }
}

/// Logs the granule `transom.granule` chose; ends the run if the table's rules do
/// not hold for it.
fn check_granule_option(table: &transom_boards::Board, early: &EarlyBoot) {
    if early.board.granule == table.granule {
        return;
    }
    defmt::info!(
        "stage-2 granule {} from transom.granule (the board table says {})",
        early.board.granule,
        table.granule
    );
    if let Some(error) = early.board_error {
        defmt::error!(
            "transom.granule: the board table cannot be used with the {} granule: {}",
            early.board.granule,
            defmt::Display2Format(&error)
        );
        exit::end_run(Verdict::BoardMismatch);
    }
}

/// Reads the firmware's tree and decides what to map, with the MMU off.
fn prepare_memory<B: Board>(device_tree: usize) -> EarlyBoot {
    let tree = FirmwareTree::parse(device_tree, memory::device_tree_blob(device_tree));
    let image = memory::image_layout();
    let heap = memory::heap_range(B::DESC.hypervisor.heap_size);
    let mut ram = Ranges::new();
    let mut firmware_ram = Ranges::new();
    let mut options = BootOptions::default();
    if let Ok(tree) = &tree {
        options = bootargs::parse(tree.bootargs().unwrap_or_default());
        exit::set_method(choose_exit_method(&options, tree));
        if let Ok(reported) = tree.memory() {
            ram = usable_ram(B::DESC.ram, &reported);
            firmware_ram = reported;
        }
    }
    let heap_in_ram = ram
        .iter()
        .any(|bank| bank.start <= image.text.start && heap.end <= bank.end);
    let (board, board_error) = with_granule(B::DESC, options.granule);
    // With a table that breaks its rules at this granule, EL2 maps the pages the
    // table's own granule needs, enough to log why the boot stops.
    let mapped_board = if board_error.is_some() {
        B::DESC
    } else {
        board
    };
    // The table's own granule: resolved at compile time.
    let grants = if mapped_board.granule == B::DESC.granule {
        const { Grants::resolve(&B::DESC) }
    } else {
        Grants::resolve(&mapped_board)
    };
    let (devices, devices_overflowed) = board_table::el2_device_windows(&mapped_board, &grants);
    EarlyBoot {
        tree,
        options,
        board,
        board_error,
        grants,
        ram,
        firmware_ram,
        devices,
        devices_overflowed,
        heap,
        heap_in_ram,
        image,
    }
}

/// The RAM the hypervisor may use: each board bank cut to what the firmware reports.
/// Pieces beyond the list's capacity are left out, never half-recorded; the heap
/// check that follows fails if they held the image.
fn usable_ram(board_ram: &[PhysRange], firmware_ram: &Ranges) -> Ranges {
    let mut usable = Ranges::new();
    for bank in board_ram {
        for reported in firmware_ram {
            let Some(piece) = bank.intersection(reported) else {
                continue;
            };
            if usable.push(piece).is_err() {
                return usable;
            }
        }
    }
    usable
}

fn choose_exit_method(options: &BootOptions<'_>, tree: &FirmwareTree<'_>) -> ExitMethod {
    if let Some(method) = options.exit {
        return method;
    }
    match tree.psci_method() {
        Ok(Some("smc")) => ExitMethod::Psci,
        _ => ExitMethod::Park,
    }
}

/// Panics unless the image and heap lie in the table's hypervisor memory (which no
/// guest RAM overlaps) and EL2 could map every device page it needs.
fn check_hypervisor_memory<B: Board>(early: &EarlyBoot) {
    let reserved = B::DESC.hypervisor.memory;
    let image = early.image.whole();
    if !reserved.covers(&image) || !reserved.covers(&early.heap) {
        panic!(
            "the image {} and heap {} do not fit in the board's hypervisor memory {}",
            image, early.heap, reserved
        );
    }
    if early.devices_overflowed {
        panic!(
            "the board needs more than {} EL2 device windows",
            board_table::MAX_EL2_DEVICE_WINDOWS
        );
    }
}

/// Builds and turns on the EL2 tables; returns the registers (for the secondaries)
/// and the table pages used.
fn enable_mmu(early: &EarlyBoot) -> (MmuRegisters, usize) {
    let devices = &early.devices;
    // Without a usable tree only the image and heap are mapped: enough to log why.
    let ram: &[PhysRange] = if early.heap_in_ram { &early.ram } else { &[] };
    let plan = MemoryPlan {
        image: early.image,
        heap: early.heap,
        ram,
        devices,
        device_tree: early.tree.as_ref().ok().map(|tree| tree.blob),
    };
    let tables = match mmu::build(&plan) {
        Ok(tables) => tables,
        Err(error) => panic!("cannot build the EL2 tables: {:?}", error),
    };
    let pages = tables.pages_used();
    (mmu::enable(tables, &early.image), pages)
}

fn log_banner<B: Board>() {
    defmt::info!(
        "Transom {=str} on board {=str}, running at EL{=u8} on CPU MPIDR {=u64:#x}",
        env!("CARGO_PKG_VERSION"),
        B::DESC.name,
        arch::cpu::current_el(),
        arch::cpu::mpidr()
    );
}

fn log_memory(early: &EarlyBoot, table_pages: usize) {
    for bank in &early.ram {
        defmt::info!(
            "RAM: {=u64:#x}..{=u64:#x} ({=u64} MiB)",
            bank.start,
            bank.end,
            bank.size() / (1024 * 1024)
        );
    }
    let image = early.image.whole();
    defmt::info!(
        "image: {=u64:#x}..{=u64:#x} ({=u64} KiB), heap: {=u64:#x}..{=u64:#x} ({=u64} KiB), EL2 stage-1 tables: {=usize} pages; MMU and caches on",
        image.start,
        image.end,
        image.size() / 1024,
        early.heap.start,
        early.heap.end,
        early.heap.size() / 1024,
        table_pages
    );
}

fn log_firmware(tree: &FirmwareTree<'_>, options: &BootOptions<'_>) {
    let (blob, bootargs) = (tree.blob, tree.bootargs().unwrap_or_default());
    match tree.initrd() {
        Ok(Some(initrd)) => defmt::info!(
            "firmware device tree: {=u64:#x}..{=u64:#x}, bootargs: \"{=str}\", initrd: {=u64:#x}..{=u64:#x} ({=u64} bytes)",
            blob.start,
            blob.end,
            bootargs,
            initrd.start,
            initrd.end,
            initrd.size()
        ),
        Ok(None) => defmt::info!(
            "firmware device tree: {=u64:#x}..{=u64:#x}, bootargs: \"{=str}\", initrd: none",
            blob.start,
            blob.end,
            bootargs
        ),
        Err(error) => {
            defmt::info!(
                "firmware device tree: {=u64:#x}..{=u64:#x}, bootargs: \"{=str}\"",
                blob.start,
                blob.end,
                bootargs
            );
            defmt::warn!(
                "initrd: unreadable /chosen: {}",
                defmt::Debug2Format(&error)
            );
        }
    }
    if let Some(unknown) = options.first_unknown {
        defmt::warn!("ignoring unknown hypervisor option `{=str}`", unknown);
    }
    defmt::debug!("heap free: {=usize} bytes", heap::free());
}

fn start_cpus(tree: &FirmwareTree<'_>, method: SecondaryBoot, mmu: &MmuRegisters) -> Verdict {
    let cpus = match tree.cpus() {
        Ok(cpus) => cpus,
        Err(error) => panic!("no CPUs in the firmware's device tree: {:?}", error),
    };
    let online = smp::start_secondaries(&cpus, method, mmu);
    let expected = cpus.len().min(arch::MAX_CPUS);
    if online == expected {
        defmt::info!("CPUs online: {=usize}/{=usize}", online, cpus.len());
        Verdict::Pass
    } else {
        defmt::error!("CPUs online: {=usize}/{=usize}", online, cpus.len());
        Verdict::TestFailure
    }
}

fn run_selftest(selftest: Option<SelfTest>) {
    match selftest {
        None | Some(SelfTest::Stage2) => {}
        Some(SelfTest::Log) => {
            // Some 20 raw bytes a line: the 4 KiB of held frames fill about three
            // times, and the long line is sent in pieces while frames are held.
            const LINES: u32 = 600;
            let long = "0123456789".repeat(30);
            for line in 0..LINES {
                defmt::info!("self-test: log line {=u32} of {=u32}", line, LINES);
                if line == LINES / 2 {
                    defmt::info!("self-test: a long line: {=str}", long.as_str());
                }
            }
            exit::end_run(Verdict::Pass);
        }
        Some(SelfTest::Panic) => panic!("deliberate panic (transom.selftest=panic)"),
        Some(SelfTest::Exception) => {
            defmt::info!(
                "self-test: reading unmapped address {=u64:#x}",
                UNMAPPED_PROBE_ADDRESS
            );
            let value = arch::cpu::probe_read(UNMAPPED_PROBE_ADDRESS);
            defmt::error!(
                "self-test: the read of {=u64:#x} returned {=u64:#x} instead of faulting",
                UNMAPPED_PROBE_ADDRESS,
                value
            );
            exit::end_run(Verdict::TestFailure);
        }
    }
}

/// Entry of a secondary CPU once its MMU is on.
pub fn secondary_main(index: usize) -> ! {
    smp::secondary_main(index)
}

/// Every exception the kernel does not handle (yet) ends here: log it decoded, end
/// the run with the unexpected-exception verdict.
pub fn unexpected_exception(kind: VectorKind, frame: &TrapFrame) -> ! {
    let esr = Esr(frame.esr);
    defmt::error!(
        "unexpected {=str} on CPU {=usize}",
        kind.name(),
        arch::cpu::cpu_index()
    );
    defmt::error!(
        "ESR_EL2 {=u64:#010x}: {}",
        frame.esr,
        defmt::Display2Format(&esr)
    );
    defmt::error!(
        "ELR_EL2 {=u64:#x}  FAR_EL2 {=u64:#x}  SPSR_EL2 {=u64:#x}",
        frame.elr,
        frame.far,
        frame.spsr
    );
    exit::end_run(Verdict::UnexpectedException)
}
