//! Each rule of `validate`, at run time: a valid sample board passes, and one change
//! per rule gives that rule's violation and message. (`tests/compile-fail` in the
//! workspace checks the same messages at compile time.)

// The same valid sample board the compile-fail tests change (tests/compile-fail).
include!("../../../tests/compile-fail/shared/sample.rs");

/// Leaks `value` so that a test can build a `&'static` table at run time.
fn leak<T>(value: Vec<T>) -> &'static [T] {
    Vec::leak(value)
}

fn with_devices(devices: Vec<Region>) -> Board {
    Board {
        devices: leak(devices),
        ..SAMPLE
    }
}

fn with_partitions(partitions: Vec<Partition>) -> Board {
    Board {
        partitions: leak(partitions),
        ..SAMPLE
    }
}

fn partition(
    name: &'static str,
    cpus: Vec<usize>,
    ram: PhysRange,
    grants: Vec<Grant>,
) -> Partition {
    Partition {
        name,
        cpus: leak(cpus),
        ram: leak(vec![ram]),
        grants: leak(grants),
    }
}

/// The violation and message of `board`, which must be invalid.
fn error_of(board: &Board) -> (Violation, String) {
    let error = validate(board).expect_err("the table breaks a rule");
    (error.violation, error.to_string())
}

fn assert_message(board: &Board, expected: &str) -> Violation {
    let (violation, message) = error_of(board);
    assert!(
        message.contains(expected),
        "message\n  {message}\ndoes not contain\n  {expected}"
    );
    assert!(message.starts_with("board `sample`: rule "), "{message}");
    violation
}

#[test]
fn the_sample_board_is_valid() {
    assert_eq!(validate(&SAMPLE), Ok(()));
}

#[test]
fn rule_1_zero_size_and_overflow() {
    let mut devices = DEVICES.to_vec();
    devices.push(Region::new("empty", 0x0b00_0000, 0, DeviceKind::Other));
    let violation = assert_message(
        &with_devices(devices),
        "rule 1 (region size): device `empty` 0xb000000..0xb000000 has no bytes",
    );
    assert!(matches!(violation, Violation::ZeroSize { .. }));

    let mut devices = DEVICES.to_vec();
    devices.push(Region::new(
        "wraps",
        u64::MAX - 0xfff,
        0x2000,
        DeviceKind::Other,
    ));
    let violation = assert_message(
        &with_devices(devices),
        "device `wraps` at 0xfffffffffffff000 of size 0x2000 ends past the 52-bit physical address space (0x10000000000000)",
    );
    assert!(matches!(violation, Violation::OutOfRange { .. }));
}

#[test]
fn rule_2_overlapping_devices() {
    let mut devices = DEVICES.to_vec();
    devices.push(Region::new("clash", 0x0a00_0100, 0x200, DeviceKind::Other));
    let violation = assert_message(
        &with_devices(devices),
        "rule 2 (devices overlap): device `virtio-a` 0xa000000..0xa000200 and device `clash` 0xa000100..0xa000300 share bytes",
    );
    assert!(matches!(violation, Violation::DevicesOverlap { .. }));
}

#[test]
fn rule_3_device_in_ram_or_hypervisor_memory() {
    let mut devices = DEVICES.to_vec();
    devices.push(Region::new(
        "in-ram",
        0x4800_0000,
        0x1000,
        DeviceKind::Other,
    ));
    assert_message(
        &with_devices(devices),
        "rule 3 (device in memory): device `in-ram` 0x48000000..0x48001000 overlaps RAM bank 0x40000000..0x80000000",
    );
    let board = Board {
        ram: leak(vec![PhysRange::new(0x4400_0000, 960 * MIB)]),
        hypervisor: Hypervisor {
            memory: PhysRange::new(0x0900_0000, 0x10_0000),
            ..SAMPLE.hypervisor
        },
        ..SAMPLE
    };
    assert_message(
        &board,
        "device `uart0` 0x9000000..0x9001000 overlaps hypervisor memory 0x9000000..0x9100000",
    );
}

#[test]
fn rule_4_ram_alignment_containment_and_overlap() {
    let board = Board {
        ram: leak(vec![PhysRange::new(0x4000_0000, 1024 * MIB + 0x800)]),
        ..SAMPLE
    };
    assert_message(
        &board,
        "rule 4 (RAM layout): RAM bank 0x40000000..0x80000800 is not aligned to the board's 4 KiB granule (0x1000)",
    );
    let misaligned = partition("c", vec![3], PhysRange::new(0x7000_0800, MIB), vec![]);
    let mut partitions = PARTITIONS.to_vec();
    partitions.push(misaligned);
    assert_message(
        &with_partitions(partitions),
        "RAM of partition `c` 0x70000800..0x70100800 is not aligned to the board's 4 KiB granule",
    );
    let outside = partition("c", vec![3], PhysRange::new(0x9000_0000, MIB), vec![]);
    let mut partitions = PARTITIONS.to_vec();
    partitions.push(outside);
    assert_message(
        &with_partitions(partitions),
        "RAM of partition `c` 0x90000000..0x90100000 does not lie inside one of the board's RAM banks",
    );
    let overlapping = partition("c", vec![3], PhysRange::new(0x6800_0000, MIB), vec![]);
    let mut partitions = PARTITIONS.to_vec();
    partitions.push(overlapping);
    let violation = assert_message(
        &with_partitions(partitions),
        "RAM of partition `b` 0x60000000..0x70000000 overlaps RAM of partition `c` 0x68000000..0x68100000",
    );
    assert!(matches!(violation, Violation::RamOverlap { .. }));
}

#[test]
fn rule_5_partition_ram_in_a_reserved_range() {
    let greedy = partition("c", vec![3], PhysRange::new(0x4400_0000, 2 * MIB), vec![]);
    let mut partitions = PARTITIONS.to_vec();
    partitions.push(greedy);
    assert_message(
        &with_partitions(partitions),
        "rule 5 (RAM in a reserved range): RAM of partition `c` 0x44000000..0x44200000 overlaps reserved range `firmware` 0x44000000..0x44100000",
    );
    let on_hypervisor = partition("c", vec![3], PhysRange::new(0x4000_0000, MIB), vec![]);
    let mut partitions = PARTITIONS.to_vec();
    partitions.push(on_hypervisor);
    assert_message(
        &with_partitions(partitions),
        "RAM of partition `c` 0x40000000..0x40100000 overlaps hypervisor memory 0x40000000..0x44000000",
    );
}

#[test]
fn rule_6_device_granted_twice() {
    let thief = partition(
        "c",
        vec![3],
        PhysRange::new(0x7000_0000, MIB),
        vec![Grant::auto("virtio-a")],
    );
    let mut partitions = PARTITIONS.to_vec();
    partitions.push(thief);
    assert_message(
        &with_partitions(partitions),
        "rule 6 (device granted twice): device `virtio-a` 0xa000000..0xa000200 is granted to partition `a` and to partition `c`",
    );
}

#[test]
fn rule_7_console_granted_or_in_a_direct_span() {
    let nosy = partition(
        "c",
        vec![3],
        PhysRange::new(0x7000_0000, MIB),
        vec![Grant::auto("uart0")],
    );
    let mut partitions = PARTITIONS.to_vec();
    partitions.push(nosy);
    assert_message(
        &with_partitions(partitions),
        "rule 7 (hypervisor console): partition `c` is granted device `uart0` 0x9000000..0x9001000, the hypervisor's console",
    );

    let mut devices = DEVICES.to_vec();
    devices.push(Region::new(
        "beside-console",
        0x0900_0800,
        0x800,
        DeviceKind::Other,
    ));
    devices[2].size = 0x800;
    let neighbour = partition(
        "c",
        vec![3],
        PhysRange::new(0x7000_0000, MIB),
        vec![Grant::direct("beside-console")],
    );
    let mut partitions = PARTITIONS.to_vec();
    partitions.push(neighbour);
    let board = Board {
        devices: leak(devices),
        partitions: leak(partitions),
        ..SAMPLE
    };
    let violation = assert_message(
        &board,
        "partition `c` maps device `beside-console` 0x9000800..0x9001000 directly, but its 4 KiB span 0x9000000..0x9001000 holds the hypervisor's console, device `uart0` 0x9000000..0x9000800",
    );
    assert!(matches!(violation, Violation::ConsoleInDirectSpan { .. }));
}

#[test]
fn rule_8_forced_direct_span_not_clean() {
    let mut partitions = PARTITIONS.to_vec();
    partitions[1].grants = leak(vec![Grant::direct("virtio-b")]);
    let violation = assert_message(
        &with_partitions(partitions),
        "rule 8 (direct grant not clean): partition `b` grants device `virtio-b` 0xa000200..0xa000400 directly, but its 4 KiB span 0xa000000..0xa001000 holds device `virtio-a` 0xa000000..0xa000200, which the partition was not given",
    );
    assert!(matches!(
        violation,
        Violation::DirectSpanNotClean {
            foreign_address: 0x0a00_0000,
            ..
        }
    ));
    // Bytes no region describes are not clean either.
    let lonely = with_devices(
        DEVICES
            .iter()
            .copied()
            .filter(|region| region.name != "virtio-a")
            .collect(),
    );
    let board = Board {
        partitions: leak(vec![partition(
            "b",
            vec![2],
            PhysRange::new(0x6000_0000, MIB),
            vec![Grant::direct("virtio-b")],
        )]),
        ..lonely
    };
    let (_, message) = error_of(&board);
    assert!(
        message.contains("holds bytes from 0xa000000 that no region of the partition or declared-unused range covers"),
        "{message}"
    );
}

#[test]
fn rule_9_interrupt_controller_attributes() {
    let mut devices = DEVICES.to_vec();
    devices[0] = devices[0].with_attributes(MemoryAttributes::DeviceGRE);
    assert_message(
        &with_devices(devices),
        "rule 9 (interrupt controller attributes): device `gicd` 0x8000000..0x8010000 is mapped Device-GRE; interrupt-controller frames must be Device-nGnRnE",
    );
}

#[test]
fn rule_10_gic_virtualization_frames_aligned() {
    let board = Board {
        granule: Granule::Size64KiB,
        hypervisor: Hypervisor {
            memory: PhysRange::new(0x4000_0000, 64 * MIB),
            ..SAMPLE.hypervisor
        },
        ..SAMPLE
    };
    let mut devices = DEVICES.to_vec();
    devices[1] = Region::new("gicv", 0x0804_6000, 0x2000, DeviceKind::GicVirtualCpu);
    let board = Board {
        devices: leak(devices),
        partitions: &[],
        ..board
    };
    assert_message(
        &board,
        "rule 10 (GIC virtualization frames): device `gicv` 0x8046000..0x8048000 must map directly, but is not aligned to the board's 64 KiB granule (0x10000)",
    );
}

#[test]
fn rule_11_cpus() {
    let mut partitions = PARTITIONS.to_vec();
    partitions[1].cpus = &[2, 1];
    assert_message(
        &with_partitions(partitions),
        "rule 11 (CPUs): CPU 1 is in partition `a` and in partition `b`",
    );
    let mut partitions = PARTITIONS.to_vec();
    partitions[1].cpus = &[4];
    assert_message(
        &with_partitions(partitions),
        "rule 11 (CPUs): partition `b` has CPU 4, but the board has 4 CPUs (0..4)",
    );
}

#[test]
fn rule_12_interrupt_in_two_partitions() {
    let mut devices = DEVICES.to_vec();
    devices[5] = devices[5].with_interrupts(&[IntId::spi(16)]);
    let board = with_devices(devices);
    let violation = assert_message(
        &board,
        "rule 12 (interrupts): INTID 48 reaches partition `a` through `virtio-a` and partition `b` through `virtio-b`",
    );
    assert!(matches!(
        violation,
        Violation::InterruptInTwoPartitions {
            interrupt: IntId(48),
            ..
        }
    ));
}

#[test]
fn rule_13_trapped_grant_without_widths() {
    let mut devices = DEVICES.to_vec();
    devices[4] = devices[4].with_widths(AccessWidths::NONE);
    assert_message(
        &with_devices(devices),
        "rule 13 (trapped access widths): partition `a` traps device `virtio-a` 0xa000000..0xa000200, which allows no access width",
    );
    // A direct grant of such a region is fine: nothing is trapped.
    let mut devices = DEVICES.to_vec();
    devices[3] = devices[3].with_widths(AccessWidths::NONE);
    assert_eq!(validate(&with_devices(devices)), Ok(()));
}

#[test]
fn rule_14_names_and_empty_partitions() {
    let mut devices = DEVICES.to_vec();
    devices.push(Region::new("uart1", 0x0b00_0000, 0x1000, DeviceKind::Pl011));
    assert_message(
        &with_devices(devices),
        "rule 14 (names and partitions): the name `uart1` is used twice: by device `uart1` 0x9010000..0x9011000 and by device `uart1` 0xb000000..0xb001000",
    );
    let mut partitions = PARTITIONS.to_vec();
    partitions[1].name = "firmware";
    assert_message(
        &with_partitions(partitions),
        "the name `firmware` is used twice: by reserved range `firmware` 0x44000000..0x44100000 and by partition `firmware`",
    );
    let mut partitions = PARTITIONS.to_vec();
    partitions[1].cpus = &[];
    assert_message(&with_partitions(partitions), "partition `b` has no CPU");
    let mut partitions = PARTITIONS.to_vec();
    partitions[1].ram = &[];
    assert_message(&with_partitions(partitions), "partition `b` has no RAM");
}

#[test]
fn rules_beyond_the_fourteen() {
    let mut partitions = PARTITIONS.to_vec();
    partitions[1].grants = leak(vec![Grant::auto("virtio-z")]);
    assert_message(
        &with_partitions(partitions),
        "rule 15 (device names): partition `b` names device `virtio-z`, which the board's device table does not have",
    );
    let board = Board {
        hypervisor: Hypervisor {
            console: Console {
                device: "virtio-b",
                ..SAMPLE.hypervisor.console
            },
            ..SAMPLE.hypervisor
        },
        partitions: &[],
        ..SAMPLE
    };
    assert_message(
        &board,
        "rule 15 (device names): the console is device `virtio-b` 0xa000200..0xa000400, which is not a UART",
    );
    let mut partitions = PARTITIONS.to_vec();
    partitions[1].grants = leak(vec![Grant::auto("gicd")]);
    assert_message(
        &with_partitions(partitions),
        "rule 16 (interrupt controller): partition `b` is granted device `gicd` 0x8000000..0x8010000",
    );
    let board = Board {
        unused: leak(vec![Unused {
            name: "pad",
            range: PhysRange::new(0x0a00_0100, 0x1000),
        }]),
        ..SAMPLE
    };
    assert_message(
        &board,
        "rule 17 (unused ranges): unused range `pad` 0xa000100..0xa001100 overlaps device `virtio-a` 0xa000000..0xa000200",
    );
    let board = Board {
        load_address: 0x3000_0000,
        ..SAMPLE
    };
    assert_message(
        &board,
        "rule 18 (hypervisor memory): the image at 0x30000000 with a heap of 0x1000000 bytes does not fit in hypervisor memory 0x40000000..0x44000000",
    );
}

#[test]
fn grants_are_direct_only_over_clean_spans() {
    let a = &SAMPLE.partitions[0];
    let b = &SAMPLE.partitions[1];
    // virtio-a and virtio-b share the page 0x0a00_0000 and go to different partitions.
    assert_eq!(SAMPLE.mapping(a, &a.grants[0]), Mapping::Trapped);
    assert_eq!(SAMPLE.mapping(b, &b.grants[0]), Mapping::Trapped);
    // uart1 fills its page.
    assert_eq!(SAMPLE.mapping(a, &a.grants[1]), Mapping::Direct);
    // Both transports to one partition: the rest of the page, 0x0a00_0400.., is
    // described by nothing, so the span is still not clean.
    let both = partition(
        "a",
        vec![1],
        PhysRange::new(0x5000_0000, MIB),
        vec![Grant::auto("virtio-a"), Grant::trapped("virtio-b")],
    );
    let board = with_partitions(vec![both]);
    assert_eq!(validate(&board), Ok(()));
    let both = &board.partitions[0];
    assert_eq!(board.mapping(both, &both.grants[0]), Mapping::Trapped);
    // Declared unused, the rest of the page keeps the span clean: virtio-a maps
    // directly, virtio-b stays trapped because its grant asks for it.
    let padded = Board {
        unused: leak(vec![Unused {
            name: "virtio-pad",
            range: PhysRange::new(0x0a00_0400, 0xc00),
        }]),
        ..board
    };
    assert_eq!(validate(&padded), Ok(()));
    assert_eq!(padded.mapping(both, &both.grants[0]), Mapping::Direct);
    assert_eq!(padded.mapping(both, &both.grants[1]), Mapping::Trapped);
    // Declared-unused bytes keep a span clean.
    let unused = Board {
        devices: leak(DEVICES[..5].to_vec()),
        unused: leak(vec![Unused {
            name: "pad",
            range: PhysRange::new(0x0a00_0200, 0xe00),
        }]),
        partitions: leak(vec![partition(
            "a",
            vec![1],
            PhysRange::new(0x5000_0000, MIB),
            vec![Grant::direct("virtio-a")],
        )]),
        ..SAMPLE
    };
    assert_eq!(validate(&unused), Ok(()));
}

/// A 16 KiB region alone in a 64 KiB-aligned window (a sub-page BAR on a 64K-page
/// host): direct with 4 KiB and 16 KiB pages, trapped with 64 KiB pages, where its
/// page also holds 48 KiB the partition was not given.
#[test]
fn a_16k_region_is_trapped_under_64k_pages() {
    let mut devices = DEVICES.to_vec();
    devices.push(Region::new("bar", 0x1000_0000, 0x4000, DeviceKind::Other));
    devices.push(Region::new(
        "next-bar",
        0x1000_4000,
        0x4000,
        DeviceKind::Other,
    ));
    let owner = partition(
        "owner",
        vec![1],
        PhysRange::new(0x5000_0000, MIB),
        vec![Grant::auto("bar")],
    );
    let board = Board {
        devices: leak(devices),
        partitions: leak(vec![owner]),
        ..SAMPLE
    };
    let expected = [
        (Granule::Size4KiB, Mapping::Direct),
        (Granule::Size16KiB, Mapping::Direct),
        (Granule::Size64KiB, Mapping::Trapped),
    ];
    for (granule, mapping) in expected {
        let board = Board { granule, ..board };
        assert_eq!(validate(&board), Ok(()), "{granule}");
        let owner = &board.partitions[0];
        assert_eq!(board.mapping(owner, &owner.grants[0]), mapping, "{granule}");
    }
}
