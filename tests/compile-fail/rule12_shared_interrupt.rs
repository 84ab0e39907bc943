// Rule 12: two devices on one interrupt line, granted to two partitions (the Pi's
// UARTs all raise SPI 121).
include!("shared/sample.rs");

const BOARD: Board = Board {
    devices: &[
        Region::new("uart0", 0x0900_0000, 0x1000, DeviceKind::Pl011),
        Region::new("uart2", 0xfe20_1400, 0x200, DeviceKind::Pl011)
            .with_interrupts(&[IntId::spi(121)]),
        Region::new("uart3", 0xfe20_1600, 0x200, DeviceKind::Pl011)
            .with_interrupts(&[IntId::spi(121)]),
    ],
    partitions: &[
        Partition {
            name: "a",
            cpus: &[1],
            ram: &[PhysRange::new(0x5000_0000, 256 * MIB)],
            grants: &[Grant::auto("uart2")],
        },
        Partition {
            name: "b",
            cpus: &[2],
            ram: &[PhysRange::new(0x6000_0000, 256 * MIB)],
            grants: &[Grant::auto("uart3")],
        },
    ],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
