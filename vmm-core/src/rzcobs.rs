//! rzCOBS, the framing of defmt's log stream, encoded into a buffer a slice at a
//! time.
//!
//! defmt's host decoder (`defmt-decoder`, `encoding-rzcobs`) cuts the stream at zero
//! bytes and decodes each frame. The format, as defmt's `encoding/rzcobs.rs` states
//! it (each frame is encoded back to front by the decoder, hence "reverse"):
//!
//! ```text
//! 00000000  end of frame
//! 0xxxxxxx  for each bit x from LSB to MSB: 0 = one byte from the stream, 1 = a zero
//! 1nnnnnnn  n + 7 bytes from the stream, then a zero
//! 11111111  134 bytes from the stream
//! ```
//!
//! defmt's own `Encoder` hands its output to a callback one byte at a time, and
//! keeps its state in memory across the calls; the hypervisor's boot log (about
//! 2,500 raw bytes) cost some 45 instructions per byte that way. This encoder
//! keeps its state in locals for a whole slice and appends to a buffer that the
//! caller has made room in, about a quarter of that. The output is the same byte
//! for byte (tested against defmt's table of examples below).

/// A bound on the bytes [`FrameEncoder::write`] appends for `len` input bytes. A
/// non-zero byte adds at most one and a group byte follows at most every seven, so
/// `len + len / 7 + 1` would do; dividing by 4 instead is a shift, and the bound is
/// checked on every write.
pub const fn max_encoded_len(len: usize) -> usize {
    len + len / 4 + 1
}

/// The most bytes [`FrameEncoder::end_frame`] appends: the open group, the
/// terminator.
pub const END_FRAME_LEN: usize = 2;

/// The encoder's state between slices of one frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FrameEncoder {
    /// Bytes of the open group (up to 7 in a zero-map group, then up to 134).
    run: u8,
    /// The zero map of a group shorter than 7: bit i set if its byte i was zero.
    zeros: u8,
}

impl FrameEncoder {
    /// An encoder at the start of a frame.
    pub const fn new() -> Self {
        FrameEncoder { run: 0, zeros: 0 }
    }

    /// Encodes `data`, appending to `out` at `*len`. `out` must have
    /// [`max_encoded_len`]`(data.len())` bytes free after `*len`; panics otherwise.
    #[inline(always)]
    pub fn write(&mut self, data: &[u8], out: &mut [u8], len: &mut usize) {
        let out = &mut out[*len..];
        assert!(out.len() >= max_encoded_len(data.len()));
        let mut n = 0;
        let mut run = self.run;
        let mut zeros = self.zeros;
        let mut rest = data;
        while let Some(&byte) = rest.first() {
            // A zero-map group from its start, the shape of most of a defmt frame
            // (integers, with their zero high bytes), goes seven bytes at a time.
            if run == 0
                && let Some((group, after)) = rest.split_first_chunk::<7>()
                && let Some(to) = out.get_mut(n..n + 8)
            {
                let mut map = 0u8;
                let mut kept = 0;
                for (bit, &byte) in group.iter().enumerate() {
                    // Stored either way; kept (the cursor moves on) if not zero.
                    to[kept & 7] = byte;
                    kept += usize::from(byte != 0);
                    map |= u8::from(byte == 0) << bit;
                }
                n += kept;
                if map == 0 {
                    // Seven non-zero bytes: the start of a long group.
                    run = 7;
                } else {
                    out[n] = map;
                    n += 1;
                }
                rest = after;
                continue;
            }
            if run >= 7 {
                // Inside a long group (strings): copy up to the first zero, the end
                // of `data` or the group's 134th byte, in one tight loop.
                let room = usize::from(134 - run);
                let span = &rest[..rest.len().min(room)];
                let Some(to) = out.get_mut(n..n + span.len()) else {
                    unreachable!("`out` has room for every byte of `data` and more");
                };
                let mut copied = 0;
                for (to, &from) in to.iter_mut().zip(span) {
                    if from == 0 {
                        break;
                    }
                    *to = from;
                    copied += 1;
                }
                n += copied;
                run += copied as u8;
                rest = &rest[copied..];
                if run == 134 {
                    out[n] = 0xff;
                    n += 1;
                    run = 0;
                    zeros = 0;
                } else if let Some((_zero, after)) = rest.split_first() {
                    // The zero that ends the group.
                    out[n] = (run - 7) | 0x80;
                    n += 1;
                    run = 0;
                    zeros = 0;
                    rest = after;
                }
                continue;
            }
            // A zero-map group that began in an earlier slice, or the last bytes.
            rest = &rest[1..];
            if byte == 0 {
                zeros |= 1 << run;
            } else {
                out[n] = byte;
                n += 1;
            }
            run += 1;
            if run == 7 && zeros != 0 {
                out[n] = zeros;
                n += 1;
                run = 0;
                zeros = 0;
            }
        }
        self.run = run;
        self.zeros = zeros;
        *len += n;
    }

    /// Closes the frame: the open group, then the zero terminator. `out` must have
    /// [`END_FRAME_LEN`] bytes free after `*len`; panics otherwise.
    pub fn end_frame(&mut self, out: &mut [u8], len: &mut usize) {
        let out = &mut out[*len..];
        let mut n = 0;
        match self.run {
            0 => {}
            // A zero-map group cut short: its missing bytes read as zeros, which the
            // decoder drops at the end of the frame.
            run @ 1..=6 => {
                out[n] = (self.zeros | (0xff << run)) & 0x7f;
                n += 1;
            }
            run => {
                out[n] = (run - 7) | 0x80;
                n += 1;
            }
        }
        out[n] = 0;
        *len += n + 1;
        *self = FrameEncoder::new();
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use std::vec::Vec;

    fn encode(data: &[u8], pieces: usize) -> Vec<u8> {
        let mut out = std::vec![0; max_encoded_len(data.len()) + END_FRAME_LEN];
        let mut len = 0;
        let mut encoder = FrameEncoder::new();
        let step = data.len().div_ceil(pieces.max(1)).max(1);
        for chunk in data.chunks(step) {
            encoder.write(chunk, &mut out, &mut len);
        }
        encoder.end_frame(&mut out, &mut len);
        out.truncate(len);
        out
    }

    /// The format's decoder, written from the table in the module doc: read the
    /// frame from its end, expand each group, drop the trailing zeros a short
    /// group leaves.
    fn decode(frame: &[u8]) -> Vec<u8> {
        let (&terminator, body) = frame.split_last().expect("a terminator");
        assert_eq!(terminator, 0);
        assert!(!body.contains(&0), "no zero inside a frame");
        let mut reversed = Vec::new();
        let mut index = body.len();
        while index > 0 {
            index -= 1;
            let group = body[index];
            if group == 0xff {
                for _ in 0..134 {
                    index -= 1;
                    reversed.push(body[index]);
                }
            } else if group & 0x80 != 0 {
                reversed.push(0);
                for _ in 0..(group & 0x7f) + 7 {
                    index -= 1;
                    reversed.push(body[index]);
                }
            } else {
                for bit in (0..7).rev() {
                    if group & (1 << bit) != 0 {
                        reversed.push(0);
                    } else {
                        index -= 1;
                        reversed.push(body[index]);
                    }
                }
            }
        }
        reversed.reverse();
        // A frame's content never ends in the zeros an unfinished group implies
        // for the decoder; the tests' inputs end in a non-zero byte or are
        // compared with trailing zeros trimmed.
        while reversed.last() == Some(&0) {
            reversed.pop();
        }
        reversed
    }

    /// defmt's own examples (`defmt/src/encoding/rzcobs.rs`, test `it_works`,
    /// the short ones): the output must be byte for byte what the host decoder
    /// was written against.
    #[test]
    fn matches_defmts_examples() {
        let cases: &[(&[u8], &[u8])] = &[
            (&[], &[0x00]),
            (&[0x00], &[0x7f, 0x00]),
            (&[0x00, 0x00], &[0x7f, 0x00]),
            (&[0x00; 7], &[0x7f, 0x00]),
            (&[0x00; 8], &[0x7f, 0x7f, 0x00]),
            (&[0x01], &[0x01, 0x7e, 0x00]),
            (&[0x01, 0x00], &[0x01, 0x7e, 0x00]),
            (&[0x00, 0x01], &[0x01, 0x7d, 0x00]),
            (&[0x01, 0x02], &[0x01, 0x02, 0x7c, 0x00]),
            (
                &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x00],
                &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x40, 0x00],
            ),
            (
                &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77],
                &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x80, 0x00],
            ),
            (
                &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x00],
                &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x80, 0x00],
            ),
            (
                &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88],
                &[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x81, 0x00],
            ),
            (
                &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff],
                &[0x7f, 0xff, 0x3f, 0x00],
            ),
            (
                &[0, 0, 0, 0, 0, 0x44, 0, 0, 0, 0, 0, 0, 0, 0xff],
                &[0x44, 0x5f, 0xff, 0x3f, 0x00],
            ),
        ];
        for &(input, expected) in cases {
            for pieces in 1..=input.len().max(1) {
                assert_eq!(
                    encode(input, pieces),
                    expected,
                    "{input:x?} in {pieces} pieces"
                );
            }
        }
    }

    #[test]
    fn long_runs_split_at_134_bytes() {
        let data: Vec<u8> = (0..300u32).map(|i| (i % 255 + 1) as u8).collect();
        let frame = encode(&data, 5);
        // 7 bytes open the run; at 134 an 0xff group closes it.
        assert_eq!(frame[134], 0xff);
        assert_eq!(decode(&frame), data);
    }

    #[test]
    fn round_trips_mixed_data_in_any_slicing() {
        // A deterministic mix of zero runs and non-zero bytes, like defmt frames
        // (little-endian u64 arguments with high zero bytes).
        let mut data = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..2000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let byte = (state >> 24) as u8;
            data.push(if state.is_multiple_of(3) { 0 } else { byte });
        }
        data.push(1);
        for pieces in [1, 3, 17, 250, 2001] {
            let frame = encode(&data, pieces);
            assert!(frame.len() <= max_encoded_len(data.len()) + END_FRAME_LEN);
            assert_eq!(decode(&frame), data, "{pieces} pieces");
        }
    }

    /// Strings between zeros, as `{=str}` arguments with their little-endian length
    /// words make them: runs of every length from 0 to 300 end in a long group
    /// (7 or more bytes), a 134-byte split, or a zero-map group.
    #[test]
    fn round_trips_runs_of_every_length() {
        let mut data = Vec::new();
        for run in 0..300usize {
            data.extend((0..run).map(|i| (i % 251 + 1) as u8));
            data.extend_from_slice(&[0, 0, 0]);
            data.truncate(data.len() - run % 3);
        }
        // Not a zero last: the decoder drops a frame's trailing zeros.
        data.push(1);
        for pieces in [1, 2, 7, 64, 1000] {
            let frame = encode(&data, pieces);
            assert!(frame.len() <= max_encoded_len(data.len()) + END_FRAME_LEN);
            assert_eq!(decode(&frame), data, "{pieces} pieces");
        }
    }

    /// The encoder the module doc describes, one byte at a time with no fast path,
    /// as defmt's own `Encoder` works.
    fn encode_bytewise(data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        let (mut run, mut zeros) = (0u8, 0u8);
        for &byte in data {
            if run < 7 {
                if byte == 0 {
                    zeros |= 1 << run;
                } else {
                    out.push(byte);
                }
                run += 1;
                if run == 7 && zeros != 0 {
                    out.push(zeros);
                    (run, zeros) = (0, 0);
                }
            } else if byte == 0 {
                out.push((run - 7) | 0x80);
                (run, zeros) = (0, 0);
            } else {
                out.push(byte);
                run += 1;
                if run == 134 {
                    out.push(0xff);
                    (run, zeros) = (0, 0);
                }
            }
        }
        match run {
            0 => {}
            1..=6 => out.push((zeros | (0xff << run)) & 0x7f),
            _ => out.push((run - 7) | 0x80),
        }
        out.push(0);
        out
    }

    /// Byte for byte what the byte-at-a-time encoder writes, for defmt-like
    /// frames cut into slices anywhere.
    #[test]
    fn matches_a_byte_at_a_time_encoder() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..3000 {
            let len = (next() % 200) as usize;
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    let value = next();
                    match value % 4 {
                        0 | 1 => 0,
                        2 => (value >> 8) as u8,
                        _ => (value >> 8) as u8 | 1,
                    }
                })
                .collect();
            let pieces = (next() % 9) as usize + 1;
            assert_eq!(
                encode(&data, pieces),
                encode_bytewise(&data),
                "{data:x?} in {pieces} pieces"
            );
        }
    }

    #[test]
    #[should_panic]
    fn refuses_a_buffer_without_room() {
        let mut out = [0u8; 4];
        let mut len = 0;
        FrameEncoder::new().write(&[1, 2, 3, 4, 5], &mut out, &mut len);
    }
}
