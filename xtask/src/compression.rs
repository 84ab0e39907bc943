//! Recognising and undoing the compressions kernels and modules ship with, and gzip
//! for the initramfs.
//!
//! gzip goes through `flate2` (its default, pure-Rust `miniz_oxide` backend) and xz
//! through `lzma-rs` (pure Rust too), so xtask needs no C compression library;
//! zstd, which no Debian arm64 kernel uses, is reported with the command that
//! undoes it.

use std::io::{Read, Write};

use anyhow::{Context, Result, bail};
use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;

/// RFC 1952 2.3.1: ID1 ID2.
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
/// The xz file format 2.1.1.1: the stream header magic.
const XZ_MAGIC: &[u8] = &[0xfd, b'7', b'z', b'X', b'Z', 0x00];
/// RFC 8878 3.1.1: the zstd frame magic, 0xFD2FB528 little-endian.
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// How a file is compressed, from its first bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Not compressed (or in a format not recognised here).
    Plain,
    /// gzip.
    Gzip,
    /// xz.
    Xz,
    /// zstd.
    Zstd,
}

impl Format {
    /// The format `bytes` start with.
    pub fn detect(bytes: &[u8]) -> Format {
        if is_gzip(bytes) {
            Format::Gzip
        } else if bytes.starts_with(XZ_MAGIC) {
            Format::Xz
        } else if bytes.starts_with(ZSTD_MAGIC) {
            Format::Zstd
        } else {
            Format::Plain
        }
    }
}

/// Whether `bytes` start with the gzip magic.
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(GZIP_MAGIC)
}

/// `bytes` decompressed, or as they are when they are not compressed; `what` names
/// them in errors.
pub fn decompress(bytes: Vec<u8>, what: &str) -> Result<Vec<u8>> {
    match Format::detect(&bytes) {
        Format::Plain => Ok(bytes),
        Format::Gzip => gunzip(&bytes).with_context(|| format!("gunzip {what}")),
        Format::Xz => unxz(&bytes).with_context(|| format!("unxz {what}")),
        Format::Zstd => bail!(
            "{what} is zstd-compressed, which xtask does not decompress; run `zstd -d` on \
             it and pass the result"
        ),
    }
}

/// gzip data decompressed (every member, as `gzip -d` does).
pub fn gunzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    MultiGzDecoder::new(bytes).read_to_end(&mut out)?;
    Ok(out)
}

/// xz data decompressed.
pub fn unxz(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    lzma_rs::xz_decompress(&mut &bytes[..], &mut out)
        .map_err(|error| anyhow::anyhow!("{error:?}"))?;
    Ok(out)
}

/// `bytes` gzip-compressed at the default level.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder
        .write_all(bytes)
        .and_then(|()| encoder.finish())
        .expect("writing to a Vec cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_told_by_their_magic() {
        assert_eq!(Format::detect(&gzip(b"x")), Format::Gzip);
        assert!(is_gzip(&[0x1f, 0x8b, 0x08]));
        assert!(!is_gzip(&[0x1f]));
        assert!(!is_gzip(b"MZ\0\0"));
        assert_eq!(Format::detect(b"\xfd7zXZ\0\0\x01"), Format::Xz);
        assert_eq!(Format::detect(&[0x28, 0xb5, 0x2f, 0xfd, 0]), Format::Zstd);
        assert_eq!(Format::detect(b"\x7fELF"), Format::Plain);
        assert_eq!(Format::detect(b""), Format::Plain);
    }

    #[test]
    fn gzip_round_trips() {
        let data: Vec<u8> = (0..10_000u32).map(|n| (n % 251) as u8).collect();
        let packed = gzip(&data);
        assert!(packed.len() < data.len());
        assert_eq!(decompress(packed, "data").expect("gunzip"), data);
        assert_eq!(decompress(data.clone(), "data").expect("as is"), data);
    }

    #[test]
    fn xz_decompresses() {
        let mut packed = Vec::new();
        lzma_rs::xz_compress(&mut &b"virtio_blk"[..], &mut packed).expect("compress");
        assert_eq!(Format::detect(&packed), Format::Xz);
        assert_eq!(
            decompress(packed, "virtio_blk.ko.xz").expect("unxz"),
            b"virtio_blk"
        );
    }

    #[test]
    fn zstd_and_corrupt_data_are_reported() {
        let error = decompress(vec![0x28, 0xb5, 0x2f, 0xfd, 0], "m.ko.zst").expect_err("zstd");
        assert!(error.to_string().starts_with("m.ko.zst is zstd-compressed"));
        let error = decompress(vec![0x1f, 0x8b, 0, 0], "Image.gz").expect_err("corrupt");
        assert_eq!(error.to_string(), "gunzip Image.gz");
    }
}
