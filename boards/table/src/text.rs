//! Text in `const fn`s: comparing names and writing error messages with numbers.
//!
//! A `const` panic can only print a `&str`: it cannot format an integer. The
//! `const_panic` crate formats integers, but only into a panic; the kernel and the
//! tests also need the same message as text at run time (a table built at run time
//! goes through the same checks and reports through `Display`). So the message is
//! written once, by this small fixed-buffer writer, and both paths print its
//! `as_str()`.

/// Whether two strings are equal (`==` on `str` is not a `const fn`).
///
/// Compared from the last byte: a table's names share prefixes (`virtio-mmio-07`,
/// `virtio-mmio-31`), so unequal names of equal length differ near their end, and
/// the boot looks names up often enough for that to matter.
pub const fn same_str(a: &str, b: &str) -> bool {
    let a = a.as_bytes();
    let b = b.as_bytes();
    if a.len() != b.len() {
        return false;
    }
    let mut index = a.len();
    while index > 0 {
        index -= 1;
        if a[index] != b[index] {
            return false;
        }
    }
    true
}

/// How many bytes a message holds; longer ones end in `...`.
pub const MESSAGE_CAPACITY: usize = 640;

const ELLIPSIS: &[u8] = b"...";

/// A message built in a `const fn`.
#[derive(Clone, Copy)]
pub struct Message {
    bytes: [u8; MESSAGE_CAPACITY],
    len: usize,
    truncated: bool,
}

impl Message {
    /// An empty message.
    pub const fn new() -> Message {
        Message {
            bytes: [0; MESSAGE_CAPACITY],
            len: 0,
            truncated: false,
        }
    }

    /// Appends `text`.
    pub const fn text(&mut self, text: &str) -> &mut Message {
        let bytes = text.as_bytes();
        let mut index = 0;
        while index < bytes.len() {
            self.byte(bytes[index]);
            index += 1;
        }
        self
    }

    /// Appends `` `name` ``.
    pub const fn name(&mut self, name: &str) -> &mut Message {
        self.text("`").text(name).text("`")
    }

    /// Appends `value` in hexadecimal with a `0x` prefix.
    pub const fn hex(&mut self, value: u64) -> &mut Message {
        self.text("0x");
        let mut shift = 60;
        let mut leading = true;
        loop {
            let digit = ((value >> shift) & 0xf) as u8;
            if digit != 0 || !leading || shift == 0 {
                leading = false;
                self.byte(b"0123456789abcdef"[digit as usize]);
            }
            if shift == 0 {
                return self;
            }
            shift -= 4;
        }
    }

    /// Appends `value` in decimal.
    pub const fn decimal(&mut self, value: u64) -> &mut Message {
        let mut divisor = 1;
        while value / divisor >= 10 {
            divisor *= 10;
        }
        loop {
            self.byte(b'0' + (value / divisor % 10) as u8);
            if divisor == 1 {
                return self;
            }
            divisor /= 10;
        }
    }

    /// Appends `start..end` in hexadecimal.
    pub const fn range(&mut self, start: u64, end: u64) -> &mut Message {
        self.hex(start).text("..").hex(end)
    }

    const fn byte(&mut self, byte: u8) {
        if self.truncated {
            return;
        }
        if self.len + ELLIPSIS.len() < MESSAGE_CAPACITY {
            self.bytes[self.len] = byte;
            self.len += 1;
            return;
        }
        // Out of room. If `byte` continues a character, that character is cut:
        // drop the part already written (its continuation bytes and its lead byte).
        if is_continuation(byte) {
            while self.len > 0 && is_continuation(self.bytes[self.len - 1]) {
                self.len -= 1;
            }
            self.len = self.len.saturating_sub(1);
        }
        let mut index = 0;
        while index < ELLIPSIS.len() {
            self.bytes[self.len] = ELLIPSIS[index];
            self.len += 1;
            index += 1;
        }
        self.truncated = true;
    }

    /// The text so far.
    pub const fn as_str(&self) -> &str {
        match core::str::from_utf8(self.bytes.split_at(self.len).0) {
            Ok(text) => text,
            Err(_) => "(a board table name is not valid UTF-8)",
        }
    }
}

/// Whether `byte` is a UTF-8 continuation byte (`0b10xx_xxxx`).
const fn is_continuation(byte: u8) -> bool {
    byte & 0b1100_0000 == 0b1000_0000
}

impl Default for Message {
    fn default() -> Self {
        Message::new()
    }
}

impl core::fmt::Debug for Message {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        core::fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_written_like_format() {
        for value in [0, 1, 0xf, 0x10, 0xfe21_5040, u64::MAX, 1 << 52] {
            let mut message = Message::new();
            message.hex(value).text(" ").decimal(value);
            assert_eq!(message.as_str(), std::format!("{value:#x} {value}"));
        }
    }

    #[test]
    fn long_messages_end_in_an_ellipsis_on_a_character_boundary() {
        let mut message = Message::new();
        for _ in 0..MESSAGE_CAPACITY {
            message.text("é");
        }
        let text = message.as_str();
        assert!(text.ends_with("..."));
        assert!(text.len() <= MESSAGE_CAPACITY);
    }

    #[test]
    fn string_comparison() {
        assert!(same_str("uart0", "uart0"));
        assert!(!same_str("uart0", "uart2"));
        assert!(!same_str("uart", "uart0"));
    }
}
