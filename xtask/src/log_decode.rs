//! Decoding the hypervisor's defmt stream on the host, against the image's ELF.
//!
//! defmt's rzCOBS frames are terminated by a zero byte, so the stream is cut into
//! frames here and each frame is decoded on its own: a frame that does not decode is
//! reported with its byte offset in the stream and its bytes, and the next frame
//! decodes as if nothing happened.

use std::fmt::Write as _;
use std::io::IsTerminal;

use anyhow::{Context, Result, anyhow};
use defmt_decoder::{DecodeError, Locations, Table};

/// The delimiter of rzCOBS frames.
const FRAME_DELIMITER: u8 = 0;

/// One decoded log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// `TRACE`..`ERROR`, or `PRINTLN` for level-less frames.
    pub level: String,
    /// The target's timestamp as formatted by defmt (seconds with microseconds).
    pub timestamp: String,
    /// The Rust module that logged.
    pub module: String,
    /// The message.
    pub message: String,
}

/// What the stream held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogEvent {
    /// A frame that decoded.
    Line(LogLine),
    /// A frame that did not.
    Undecodable {
        /// Offset of the frame's first byte in the stream.
        offset: usize,
        /// The frame's bytes, delimiter excluded.
        bytes: Vec<u8>,
    },
}

impl LogEvent {
    /// Formats the event for a terminal (with ANSI colour) or a log file.
    pub fn render(&self, colour: bool) -> String {
        match self {
            LogEvent::Line(line) => render_line(line, colour),
            LogEvent::Undecodable { offset, bytes } => render_undecodable(*offset, bytes),
        }
    }
}

fn render_line(line: &LogLine, colour: bool) -> String {
    let level = format!("{:<5}", line.level);
    let level = if colour {
        let code = match line.level.as_str() {
            "ERROR" => "31",
            "WARN" => "33",
            "INFO" => "32",
            "DEBUG" => "34",
            _ => "2",
        };
        format!("\x1b[{code}m{level}\x1b[0m")
    } else {
        level
    };
    format!(
        "{level} {:>12} {}: {}",
        line.timestamp, line.module, line.message
    )
}

fn render_undecodable(offset: usize, bytes: &[u8]) -> String {
    const SHOWN: usize = 32;
    let mut text = format!(
        "undecodable defmt frame at stream byte {offset} ({} bytes):",
        bytes.len()
    );
    for byte in bytes.iter().take(SHOWN) {
        let _ = write!(text, " {byte:02x}");
    }
    if bytes.len() > SHOWN {
        text.push_str(" ...");
    }
    let printable: String = bytes
        .iter()
        .take(SHOWN)
        .map(|&byte| {
            if byte.is_ascii_graphic() || byte == b' ' {
                byte as char
            } else {
                '.'
            }
        })
        .collect();
    let _ = write!(text, " |{printable}|");
    text
}

/// Whether to colour output going to stdout.
pub fn stdout_is_terminal() -> bool {
    std::io::stdout().is_terminal()
}

/// A decoder for one image's defmt stream.
pub struct LogDecoder {
    table: Table,
    locations: Locations,
    pending: Vec<u8>,
    pending_offset: usize,
    consumed: usize,
}

impl LogDecoder {
    /// Reads the defmt table and locations from the image's ELF.
    pub fn from_elf(elf: &[u8]) -> Result<LogDecoder> {
        let table = Table::parse(elf)
            .context("reading the defmt table")?
            .ok_or_else(|| anyhow!("the ELF has no .defmt section: not a defmt image"))?;
        let locations = table
            .get_locations(elf)
            .context("reading defmt locations")?;
        Ok(LogDecoder {
            table,
            locations,
            pending: Vec::new(),
            pending_offset: 0,
            consumed: 0,
        })
    }

    /// Feeds bytes from the stream and returns the events of every frame they complete.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<LogEvent> {
        let mut events = Vec::new();
        for &byte in bytes {
            self.consumed += 1;
            if byte != FRAME_DELIMITER {
                self.pending.push(byte);
                continue;
            }
            let frame = std::mem::take(&mut self.pending);
            let offset = self.pending_offset;
            self.pending_offset = self.consumed;
            if frame.is_empty() {
                continue;
            }
            events.push(self.decode_frame(offset, frame));
        }
        events
    }

    /// Reports bytes left without a delimiter when the stream ended.
    pub fn finish(&mut self) -> Option<LogEvent> {
        if self.pending.is_empty() {
            return None;
        }
        let bytes = std::mem::take(&mut self.pending);
        Some(LogEvent::Undecodable {
            offset: self.pending_offset,
            bytes,
        })
    }

    fn decode_frame(&self, offset: usize, frame: Vec<u8>) -> LogEvent {
        let mut decoder = self.table.new_stream_decoder();
        decoder.received(&frame);
        decoder.received(&[FRAME_DELIMITER]);
        match decoder.decode() {
            Ok(decoded) => {
                let module = self
                    .locations
                    .get(&decoded.index())
                    .map(|location| location.module.clone())
                    .unwrap_or_else(|| String::from("?"));
                LogEvent::Line(LogLine {
                    level: decoded
                        .level()
                        .map(|level| level.as_str().to_uppercase())
                        .unwrap_or_else(|| String::from("PRINTLN")),
                    timestamp: decoded
                        .display_timestamp()
                        .map(|timestamp| timestamp.to_string())
                        .unwrap_or_default(),
                    module,
                    message: decoded.display_message().to_string(),
                })
            }
            Err(DecodeError::UnexpectedEof | DecodeError::Malformed) => LogEvent::Undecodable {
                offset,
                bytes: frame,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn undecodable_frames_show_offset_bytes_and_text() {
        let text = render_undecodable(7, b"hi\x01");
        assert_eq!(
            text,
            "undecodable defmt frame at stream byte 7 (3 bytes): 68 69 01 |hi.|"
        );
    }

    #[test]
    fn long_frames_are_cut_in_the_report() {
        let text = render_undecodable(0, &[0xaa; 40]);
        assert!(text.contains("(40 bytes)"));
        assert!(text.contains(" ..."));
        assert_eq!(text.matches("aa").count(), 32);
    }

    #[test]
    fn lines_render_level_timestamp_module_message() {
        let line = LogLine {
            level: "INFO".into(),
            timestamp: "0.001234".into(),
            module: "transom_kernel::boot".into(),
            message: "running at EL2".into(),
        };
        assert_eq!(
            render_line(&line, false),
            "INFO      0.001234 transom_kernel::boot: running at EL2"
        );
        assert!(render_line(&line, true).starts_with("\x1b[32mINFO "));
    }
}
