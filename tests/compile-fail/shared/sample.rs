// A valid board that each compile-fail test changes in one place (included, not a
// test of its own). Laid out like QEMU `virt`.

#[allow(unused_imports)]
use transom_boards::*;

#[allow(dead_code)]
const MIB: u64 = 1024 * 1024;

#[allow(dead_code)]
const DEVICES: &[Region] = &[
    Region::new("gicd", 0x0800_0000, 0x1_0000, DeviceKind::GicDistributor),
    Region::new("gicv", 0x0804_0000, 0x1_0000, DeviceKind::GicVirtualCpu),
    Region::new("uart0", 0x0900_0000, 0x1000, DeviceKind::Pl011).with_interrupts(&[IntId::spi(1)]),
    Region::new("uart1", 0x0901_0000, 0x1000, DeviceKind::Pl011).with_interrupts(&[IntId::spi(2)]),
    Region::new("virtio-a", 0x0a00_0000, 0x200, DeviceKind::VirtioMmio)
        .with_interrupts(&[IntId::spi(16)]),
    Region::new("virtio-b", 0x0a00_0200, 0x200, DeviceKind::VirtioMmio)
        .with_interrupts(&[IntId::spi(17)]),
];

#[allow(dead_code)]
const PARTITIONS: &[Partition] = &[
    Partition {
        name: "a",
        cpus: &[1],
        ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
        grants: &[Grant::auto("virtio-a"), Grant::direct("uart1")],
    },
    Partition {
        name: "b",
        cpus: &[2],
        ram: &[PhysRange::new(0x6000_0000, 256 * MIB)],
        grants: &[Grant::auto("virtio-b")],
    },
];

#[allow(dead_code)]
const SAMPLE: Board = Board {
    name: "sample",
    granule: Granule::Size4KiB,
    load_address: 0x4008_0000,
    max_cpus: 4,
    secondary_boot: SecondaryBoot::Psci,
    hypervisor: Hypervisor {
        console: Console {
            device: "uart0",
            uart: UartKind::Pl011 {
                clock_hz: 24_000_000,
            },
            baud: 115_200,
        },
        memory: PhysRange::new(0x4000_0000, 64 * MIB),
        heap_size: 16 * MIB as usize,
    },
    ram: &[PhysRange::new(0x4000_0000, 1024 * MIB)],
    reserved: &[Reserved {
        name: "firmware",
        range: PhysRange::new(0x4400_0000, MIB),
        reason: ReservedReason::Firmware,
    }],
    devices: DEVICES,
    unused: &[],
    partitions: PARTITIONS,
};
