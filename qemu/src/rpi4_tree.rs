//! The device tree `cargo xtask` hands QEMU `raspi4b` with `-dtb`.
//!
//! A subset of the Pi 4 firmware's tree (`bcm2711-rpi-4-b.dts` as the firmware
//! patches it at boot), with the nodes the hypervisor reads: RAM as a 2 GiB Pi 4
//! reports it (QEMU replaces it with what it models), the spin-table CPUs, every
//! device the board table lists and the GIC-400. QEMU adds
//! `/chosen/bootargs` from `-append`. Generated rather than taken from Debian's
//! kernel package so that booting the hypervisor needs no download.

use vm_fdt::{FdtReserveEntry, FdtWriter};

/// The first RAM bank: below the VideoCore carve-out (2 GiB Pi 4, default `gpu_mem`).
pub const RAM_LOW: (u64, u64) = (0x0, 0x3b40_0000);
/// The second RAM bank of a 2 GiB Pi 4.
pub const RAM_HIGH: (u64, u64) = (0x4000_0000, 0x4000_0000);
/// The firmware's spin table: CPU n polls `0xd8 + 8 * n` (the armstub's layout,
/// which QEMU's `raspi` boot code reproduces).
pub const SPIN_TABLE_BASE: u64 = 0xd8;
/// The page the firmware reserves for its stub and spin table (`/memreserve/`).
pub const FIRMWARE_PAGE: (u64, u64) = (0x0, 0x1000);
/// CPUs of the BCM2711.
pub const CPUS: u32 = 4;

/// A device node under `/soc`: VPU bus address and size, as `bcm2711.dtsi` and
/// `bcm283x.dtsi` give them.
struct SocDevice {
    name: &'static str,
    compatible: &'static [&'static str],
    bus_address: u32,
    size: u32,
}

const fn soc(
    name: &'static str,
    compatible: &'static [&'static str],
    bus_address: u32,
    size: u32,
) -> SocDevice {
    SocDevice {
        name,
        compatible,
        bus_address,
        size,
    }
}

const PL011: &[&str] = &["arm,pl011", "arm,primecell"];
const SPI: &[&str] = &["brcm,bcm2835-spi"];
const I2C: &[&str] = &["brcm,bcm2835-i2c"];
const AUX_SPI: &[&str] = &["brcm,bcm2835-aux-spi"];

/// The memory-mapped devices of the Pi 4 tree that the board table lists.
const SOC_DEVICES: &[SocDevice] = &[
    soc(
        "timer@7e003000",
        &["brcm,bcm2835-system-timer"],
        0x7e00_3000,
        0x1000,
    ),
    soc(
        "mailbox@7e00b880",
        &["brcm,bcm2835-mbox"],
        0x7e00_b880,
        0x40,
    ),
    soc(
        "watchdog@7e100000",
        &["brcm,bcm2835-pm"],
        0x7e10_0000,
        0x114,
    ),
    soc("gpio@7e200000", &["brcm,bcm2711-gpio"], 0x7e20_0000, 0xf4),
    soc("serial@7e201000", PL011, 0x7e20_1000, 0x200),
    soc("serial@7e201400", PL011, 0x7e20_1400, 0x200),
    soc("serial@7e201600", PL011, 0x7e20_1600, 0x200),
    soc("serial@7e201800", PL011, 0x7e20_1800, 0x200),
    soc("serial@7e201a00", PL011, 0x7e20_1a00, 0x200),
    soc("spi@7e204000", SPI, 0x7e20_4000, 0x200),
    soc("spi@7e204600", SPI, 0x7e20_4600, 0x200),
    soc("spi@7e204800", SPI, 0x7e20_4800, 0x200),
    soc("spi@7e204a00", SPI, 0x7e20_4a00, 0x200),
    soc("spi@7e204c00", SPI, 0x7e20_4c00, 0x200),
    soc("i2c@7e205000", I2C, 0x7e20_5000, 0x200),
    soc("i2c@7e205600", I2C, 0x7e20_5600, 0x200),
    soc("i2c@7e205800", I2C, 0x7e20_5800, 0x200),
    soc("i2c@7e205a00", I2C, 0x7e20_5a00, 0x200),
    soc("i2c@7e205c00", I2C, 0x7e20_5c00, 0x200),
    soc("aux@7e215000", &["brcm,bcm2835-aux"], 0x7e21_5000, 0x8),
    soc(
        "serial@7e215040",
        &["brcm,bcm2835-aux-uart"],
        0x7e21_5040,
        0x40,
    ),
    soc("spi@7e215080", AUX_SPI, 0x7e21_5080, 0x40),
    soc("spi@7e2150c0", AUX_SPI, 0x7e21_50c0, 0x40),
    soc("mmc@7e340000", &["brcm,bcm2711-emmc2"], 0x7e34_0000, 0x100),
    soc(
        "local_intc@40000000",
        &["brcm,bcm2836-l1-intc"],
        0x4000_0000,
        0x100,
    ),
];

/// Builds the tree as a flattened device tree blob.
pub fn build() -> Result<Vec<u8>, vm_fdt::Error> {
    let reserved = [FdtReserveEntry::new(FIRMWARE_PAGE.0, FIRMWARE_PAGE.1)?];
    let mut fdt = FdtWriter::new_with_mem_reserv(&reserved)?;
    let root = fdt.begin_node("")?;
    fdt.property_string_list(
        "compatible",
        vec!["raspberrypi,4-model-b".into(), "brcm,bcm2711".into()],
    )?;
    fdt.property_string("model", "Raspberry Pi 4 Model B")?;
    fdt.property_u32("#address-cells", 2)?;
    fdt.property_u32("#size-cells", 1)?;

    let aliases = fdt.begin_node("aliases")?;
    fdt.property_string("serial0", "/soc/serial@7e201000")?;
    fdt.property_string("serial1", "/soc/serial@7e215040")?;
    fdt.end_node(aliases)?;

    let chosen = fdt.begin_node("chosen")?;
    fdt.property_string("stdout-path", "serial0:115200n8")?;
    fdt.end_node(chosen)?;

    let memory = fdt.begin_node("memory@0")?;
    fdt.property_string("device_type", "memory")?;
    fdt.property_array_u32("reg", &[&reg(RAM_LOW)[..], &reg(RAM_HIGH)[..]].concat())?;
    fdt.end_node(memory)?;

    create_cpus_node(&mut fdt)?;
    create_soc_node(&mut fdt)?;
    fdt.end_node(root)?;
    fdt.finish()
}

/// A `reg` entry in the root's 2 address cells and 1 size cell.
fn reg((address, size): (u64, u64)) -> [u32; 3] {
    [(address >> 32) as u32, address as u32, size as u32]
}

fn create_cpus_node(fdt: &mut FdtWriter) -> Result<(), vm_fdt::Error> {
    let cpus = fdt.begin_node("cpus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 0)?;
    for index in 0..CPUS {
        let cpu = fdt.begin_node(&format!("cpu@{index}"))?;
        fdt.property_string("device_type", "cpu")?;
        fdt.property_string("compatible", "arm,cortex-a72")?;
        fdt.property_u32("reg", index)?;
        fdt.property_string("enable-method", "spin-table")?;
        fdt.property_u64("cpu-release-addr", SPIN_TABLE_BASE + 8 * u64::from(index))?;
        fdt.end_node(cpu)?;
    }
    fdt.end_node(cpus)
}

fn create_soc_node(fdt: &mut FdtWriter) -> Result<(), vm_fdt::Error> {
    let soc = fdt.begin_node("soc")?;
    fdt.property_string("compatible", "simple-bus")?;
    fdt.property_u32("#address-cells", 1)?;
    fdt.property_u32("#size-cells", 1)?;
    // VPU bus addresses -> ARM physical addresses in low-peripheral mode
    // (BCM2711 ARM Peripherals, 1.2.4 "Legacy master addresses").
    fdt.property_array_u32(
        "ranges",
        &[
            0x7e00_0000,
            0x0,
            0xfe00_0000,
            0x0180_0000, //
            0x7c00_0000,
            0x0,
            0xfc00_0000,
            0x0200_0000, //
            0x4000_0000,
            0x0,
            0xff80_0000,
            0x0080_0000,
        ],
    )?;

    for node in SOC_DEVICES {
        let device = fdt.begin_node(node.name)?;
        fdt.property_string_list(
            "compatible",
            node.compatible
                .iter()
                .map(|name| name.to_string())
                .collect(),
        )?;
        fdt.property_array_u32("reg", &[node.bus_address, node.size])?;
        fdt.end_node(device)?;
    }

    let gic = fdt.begin_node("interrupt-controller@40041000")?;
    fdt.property_string("compatible", "arm,gic-400")?;
    fdt.property_null("interrupt-controller")?;
    fdt.property_u32("#interrupt-cells", 3)?;
    fdt.property_array_u32(
        "reg",
        &[
            0x4004_1000,
            0x1000, // GICD
            0x4004_2000,
            0x2000, // GICC
            0x4004_4000,
            0x2000, // GICH
            0x4004_6000,
            0x2000, // GICV
        ],
    )?;
    fdt.end_node(gic)?;
    fdt.end_node(soc)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads big-endian u32 at `offset` of the blob.
    fn be32(blob: &[u8], offset: usize) -> u32 {
        u32::from_be_bytes(blob[offset..offset + 4].try_into().expect("4 bytes"))
    }

    #[test]
    fn blob_has_a_valid_header() {
        let blob = build().expect("tree builds");
        // Devicetree Specification v0.4, 5.2: magic 0xd00dfeed, totalsize, version 17.
        assert_eq!(be32(&blob, 0), 0xd00d_feed);
        assert_eq!(be32(&blob, 4) as usize, blob.len());
        assert_eq!(be32(&blob, 20), 17);
    }

    #[test]
    fn firmware_page_is_reserved() {
        let blob = build().expect("tree builds");
        // The memory reservation block (spec 5.3) starts at off_mem_rsvmap.
        let rsvmap = be32(&blob, 16) as usize;
        let address = u64::from_be_bytes(blob[rsvmap..rsvmap + 8].try_into().expect("8"));
        let size = u64::from_be_bytes(blob[rsvmap + 8..rsvmap + 16].try_into().expect("8"));
        assert_eq!((address, size), FIRMWARE_PAGE);
    }

    #[test]
    fn spin_table_addresses_follow_the_armstub_layout() {
        let blob = build().expect("tree builds");
        for index in 0..u64::from(CPUS) {
            let release = SPIN_TABLE_BASE + 8 * index;
            let needle = release.to_be_bytes();
            assert!(
                blob.windows(8).any(|window| window == needle),
                "cpu-release-addr {release:#x} of CPU {index} is in the tree"
            );
        }
    }
}
