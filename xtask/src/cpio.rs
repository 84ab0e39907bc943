//! A writer for cpio archives in the `newc` format, the one Linux unpacks as an
//! initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry is a 110-byte ASCII header (the magic `070701`, then thirteen 8-digit
//! hexadecimal fields), the path name with its NUL, padding to a multiple of four
//! bytes, the data, and padding again; the archive ends with an entry named
//! `TRAILER!!!` (cpio(5), "New ASCII Format").

use anyhow::{Result, ensure};

/// The magic of a `newc` header (no checksums).
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// The name of the entry that ends an archive.
pub const TRAILER: &str = "TRAILER!!!";
/// The size of a `newc` header: the magic and thirteen 8-digit fields.
pub const HEADER_SIZE: usize = NEWC_MAGIC.len() + 13 * 8;

/// File type bits of `mode` (`<sys/stat.h>`).
const S_IFDIR: u32 = 0o040_000;
const S_IFCHR: u32 = 0o020_000;
const S_IFREG: u32 = 0o100_000;
const S_IFLNK: u32 = 0o120_000;

/// Headers, names and data are each padded to this.
const ALIGNMENT: usize = 4;

/// An archive being written; [`finish`](Archive::finish) adds the trailer.
#[derive(Debug)]
pub struct Archive {
    bytes: Vec<u8>,
    next_inode: u32,
}

/// One entry's header fields, in the order the header holds them.
struct Header {
    mode: u32,
    nlink: u32,
    file_size: u32,
    rdev_major: u32,
    rdev_minor: u32,
}

impl Default for Archive {
    fn default() -> Self {
        Archive::new()
    }
}

impl Archive {
    /// An empty archive.
    pub fn new() -> Archive {
        Archive {
            bytes: Vec::new(),
            next_inode: 1,
        }
    }

    /// A directory `path` with permissions `permissions` (e.g. `0o755`).
    pub fn directory(&mut self, path: &str, permissions: u32) -> Result<()> {
        let header = Header {
            mode: S_IFDIR | permissions,
            nlink: 2,
            file_size: 0,
            rdev_major: 0,
            rdev_minor: 0,
        };
        self.entry(path, &header, &[])
    }

    /// A regular file `path` holding `data`.
    pub fn file(&mut self, path: &str, permissions: u32, data: &[u8]) -> Result<()> {
        let Ok(file_size) = u32::try_from(data.len()) else {
            anyhow::bail!("{path}: {} bytes; newc holds at most 4 GiB", data.len());
        };
        let header = Header {
            mode: S_IFREG | permissions,
            nlink: 1,
            file_size,
            rdev_major: 0,
            rdev_minor: 0,
        };
        self.entry(path, &header, data)
    }

    /// A symbolic link `path` to `target` (the target is the entry's data).
    pub fn symlink(&mut self, path: &str, target: &str) -> Result<()> {
        let header = Header {
            mode: S_IFLNK | 0o777,
            nlink: 1,
            file_size: u32::try_from(target.len())?,
            rdev_major: 0,
            rdev_minor: 0,
        };
        self.entry(path, &header, target.as_bytes())
    }

    /// A character device node `path` with device number `major`:`minor`.
    pub fn char_device(
        &mut self,
        path: &str,
        permissions: u32,
        major: u32,
        minor: u32,
    ) -> Result<()> {
        let header = Header {
            mode: S_IFCHR | permissions,
            nlink: 1,
            file_size: 0,
            rdev_major: major,
            rdev_minor: minor,
        };
        self.entry(path, &header, &[])
    }

    /// The archive's bytes, trailer included.
    pub fn finish(mut self) -> Vec<u8> {
        let trailer = Header {
            mode: 0,
            nlink: 1,
            file_size: 0,
            rdev_major: 0,
            rdev_minor: 0,
        };
        self.write_entry(0, TRAILER, &trailer, &[]);
        self.bytes
    }

    fn entry(&mut self, path: &str, header: &Header, data: &[u8]) -> Result<()> {
        let name = path.trim_start_matches('/');
        ensure!(
            !name.is_empty() && !name.contains('\0'),
            "cpio: bad path name {path:?}"
        );
        ensure!(
            name != TRAILER,
            "cpio: {TRAILER} is the end-of-archive marker"
        );
        let inode = self.next_inode;
        self.next_inode += 1;
        self.write_entry(inode, name, header, data);
        Ok(())
    }

    fn write_entry(&mut self, inode: u32, name: &str, header: &Header, data: &[u8]) {
        let name_size = u32::try_from(name.len() + 1).expect("names are short");
        // Field order of cpio(5): ino, mode, uid, gid, nlink, mtime, filesize,
        // devmajor, devminor, rdevmajor, rdevminor, namesize, check. Owner root, mtime
        // 0 so that the archive is reproducible.
        let fields = [
            inode,
            header.mode,
            0,
            0,
            header.nlink,
            0,
            header.file_size,
            0,
            0,
            header.rdev_major,
            header.rdev_minor,
            name_size,
            0,
        ];
        self.bytes.extend_from_slice(NEWC_MAGIC);
        for field in fields {
            self.bytes
                .extend_from_slice(format!("{field:08x}").as_bytes());
        }
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(0);
        self.pad();
        self.bytes.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        let padded = self.bytes.len().next_multiple_of(ALIGNMENT);
        self.bytes.resize(padded, 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One parsed header: the thirteen fields, the name, the data.
    struct Entry {
        fields: [u32; 13],
        name: String,
        data: Vec<u8>,
    }

    /// Reads entries back per cpio(5), checking the alignment rules on the way.
    fn parse(mut bytes: &[u8]) -> Vec<Entry> {
        let mut entries = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(offset % 4, 0, "every header starts 4-byte aligned");
            assert_eq!(&bytes[..6], b"070701", "magic at {offset}");
            let mut fields = [0u32; 13];
            for (index, field) in fields.iter_mut().enumerate() {
                let text =
                    std::str::from_utf8(&bytes[6 + index * 8..14 + index * 8]).expect("ASCII");
                assert!(
                    text.bytes()
                        .all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)),
                    "8 hex digits: {text:?}"
                );
                *field = u32::from_str_radix(text, 16).expect("hex");
            }
            let name_size = fields[11] as usize;
            let file_size = fields[6] as usize;
            let name = &bytes[HEADER_SIZE..HEADER_SIZE + name_size];
            assert_eq!(name.last(), Some(&0), "the name size counts its NUL");
            let name = String::from_utf8(name[..name_size - 1].to_vec()).expect("UTF-8");
            let data_start = (HEADER_SIZE + name_size).next_multiple_of(4);
            assert!(
                bytes[HEADER_SIZE + name_size..data_start]
                    .iter()
                    .all(|&byte| byte == 0)
            );
            let data = bytes[data_start..data_start + file_size].to_vec();
            let next = (data_start + file_size).next_multiple_of(4);
            let trailer = name == TRAILER;
            entries.push(Entry { fields, name, data });
            if trailer {
                assert_eq!(next, bytes.len(), "nothing after the trailer's padding");
                return entries;
            }
            bytes = &bytes[next..];
            offset += next;
        }
    }

    #[test]
    fn headers_follow_the_newc_layout() {
        let mut archive = Archive::new();
        archive.directory("/dev", 0o755).expect("dir");
        archive
            .char_device("dev/console", 0o600, 5, 1)
            .expect("node");
        archive.file("init", 0o755, b"#!/bin/sh\n").expect("file");
        archive.symlink("bin/sh", "busybox").expect("link");
        let bytes = archive.finish();
        // The first header, field by field.
        assert_eq!(
            &bytes[..HEADER_SIZE],
            b"070701\
              00000001\
              000041ed\
              00000000\
              00000000\
              00000002\
              00000000\
              00000000\
              00000000\
              00000000\
              00000000\
              00000000\
              00000004\
              00000000"
        );
        // "dev" and its NUL: 110 + 4 = 114, padded to 116.
        assert_eq!(&bytes[HEADER_SIZE..HEADER_SIZE + 6], b"dev\0\0\0");

        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|entry| entry.name.as_str()).collect();
        assert_eq!(names, ["dev", "dev/console", "init", "bin/sh", TRAILER]);
        let console = &entries[1];
        assert_eq!(console.fields[1], 0o020_600, "a character device");
        assert_eq!((console.fields[9], console.fields[10]), (5, 1));
        let init = &entries[2];
        assert_eq!(init.fields[1], 0o100_755);
        assert_eq!(init.fields[6], 10, "filesize");
        assert_eq!(init.data, b"#!/bin/sh\n");
        let link = &entries[3];
        assert_eq!(link.fields[1], 0o120_777);
        assert_eq!(link.data, b"busybox");
        let trailer = &entries[4];
        assert_eq!(trailer.fields[11], 11, "TRAILER!!! and its NUL");
        assert_eq!(trailer.fields[4], 1, "nlink");
        assert_eq!(trailer.fields[6], 0);
        let inodes: Vec<u32> = entries[..4].iter().map(|entry| entry.fields[0]).collect();
        assert_eq!(inodes, [1, 2, 3, 4], "distinct inodes");
    }

    #[test]
    fn every_name_length_pads_to_four() {
        for length in 1..=9 {
            let name = "n".repeat(length);
            let mut archive = Archive::new();
            archive.file(&name, 0o644, b"abcde").expect("file");
            let entries = parse(&archive.finish());
            assert_eq!(entries[0].name, name);
            assert_eq!(entries[0].data, b"abcde");
        }
    }

    #[test]
    fn bad_names_are_refused() {
        let mut archive = Archive::new();
        assert!(archive.file("/", 0o644, b"").is_err());
        assert!(archive.file("a\0b", 0o644, b"").is_err());
        assert!(archive.file(TRAILER, 0o644, b"").is_err());
        let empty = Archive::new().finish();
        assert_eq!(parse(&empty).len(), 1, "only the trailer");
    }
}
