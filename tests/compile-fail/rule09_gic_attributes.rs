// Rule 9: the distributor relaxed to Device-GRE.
include!("shared/sample.rs");

const BOARD: Board = Board {
    devices: &[
        Region::new("uart0", 0x0900_0000, 0x1000, DeviceKind::Pl011),
        Region::new("gicd", 0x0800_0000, 0x1_0000, DeviceKind::GicDistributor)
            .with_attributes(MemoryAttributes::DeviceGRE),
    ],
    partitions: &[],
    ..SAMPLE
};
check_board!(BOARD);

fn main() {}
