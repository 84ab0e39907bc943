//! Booting an image under QEMU: stream its console through the defmt decoder, enforce
//! a timeout, and turn QEMU's exit status into the run's verdict. A guest's console
//! on the machine's second UART, captured to a file, is shown line by line next to
//! the decoded log.

use std::fs::File;
use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use transom_qemu::{Machine, RunConfig};
use transom_vmm_core::verdict::Verdict;

use crate::log_decode::{LogDecoder, LogEvent, LogLine, stdout_is_terminal};

/// How the console stream is shown while the run goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Echo {
    /// Print nothing (tests).
    Quiet,
    /// Print decoded lines.
    Decoded,
    /// Print the raw bytes as a hex dump, undecoded.
    Raw,
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The hypervisor ended the run with a verdict.
    Verdict(Verdict),
    /// QEMU exited with a status that is not a verdict (a QEMU error, a signal).
    QemuFailed {
        /// Exit status, if it exited.
        code: Option<i32>,
        /// What QEMU printed on stderr.
        stderr: String,
    },
    /// The run exceeded its timeout and was killed.
    TimedOut(Duration),
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// Every event the console stream held.
    pub events: Vec<LogEvent>,
    /// The raw console bytes.
    pub raw: Vec<u8>,
    /// What the machine's second UART printed, when the run captured it
    /// ([`RunConfig::second_serial`]).
    pub second_serial: Vec<u8>,
}

impl Outcome {
    /// The decoded lines.
    pub fn lines(&self) -> impl Iterator<Item = &LogLine> {
        self.events.iter().filter_map(|event| match event {
            LogEvent::Line(line) => Some(line),
            LogEvent::Undecodable { .. } => None,
        })
    }

    /// Whether some decoded message contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.lines().any(|line| line.message.contains(needle))
    }

    /// The transcript as text, for test failure messages.
    pub fn transcript(&self) -> String {
        self.events
            .iter()
            .map(|event| event.render(false))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The second UART's output as lines, carriage returns dropped.
    pub fn second_serial_lines(&self) -> Vec<String> {
        String::from_utf8_lossy(&self.second_serial)
            .lines()
            .map(|line| line.trim_end_matches('\r').to_string())
            .collect()
    }

    /// The process exit code `cargo xtask qemu` reports for this run.
    pub fn exit_code(&self) -> i32 {
        match &self.ending {
            Ending::Verdict(verdict) => i32::from(verdict.exit_code()),
            Ending::QemuFailed { code, .. } => code.unwrap_or(1).max(1),
            Ending::TimedOut(_) => 124,
        }
    }
}

/// How a run is watched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Watch {
    /// Kill the run after this long.
    pub timeout: Option<Duration>,
    /// How the console is shown.
    pub echo: Echo,
    /// The prefix of the second UART's lines, `[label] ` (the partition that owns
    /// it), when the run captures it.
    pub second_serial_label: String,
}

/// Boots `machine` with `run`, decoding against `elf`, for at most `timeout`.
pub fn run(
    machine: &Machine,
    run: &RunConfig,
    elf: &[u8],
    timeout: Option<Duration>,
    echo: Echo,
) -> Result<Outcome> {
    let watch = Watch {
        timeout,
        echo,
        second_serial_label: "serial1".to_string(),
    };
    run_watched(machine, run, elf, &watch)
}

/// What the reader threads pass to the run loop.
enum Stream {
    /// Bytes of the hypervisor's console.
    Console(Vec<u8>),
    /// The console reached its end: QEMU is gone.
    ConsoleClosed,
    /// Bytes of the second UART.
    SecondSerial(Vec<u8>),
}

/// Boots `machine` with `run`, decoding against `elf`, as `watch` says.
pub fn run_watched(
    machine: &Machine,
    run: &RunConfig,
    elf: &[u8],
    watch: &Watch,
) -> Result<Outcome> {
    let mut decoder = LogDecoder::from_elf(elf)?;
    if let Some(path) = &run.second_serial {
        // Empty before QEMU starts, so nothing of an earlier run is shown.
        File::create(path).with_context(|| format!("creating {}", path.display()))?;
    }
    let binary = machine.qemu_binary();
    let mut child = Command::new(binary)
        .args(machine.arguments(run))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {binary}"))?;

    let mut stdout = child.stdout.take().expect("stdout is piped");
    let mut stderr = child.stderr.take().expect("stderr is piped");
    let (sender, receiver) = mpsc::channel::<Stream>();
    let console_sender = sender.clone();
    let reader = thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(count) = stdout.read(&mut buffer) {
            if count == 0 {
                break;
            }
            let chunk = Stream::Console(buffer[..count].to_vec());
            if console_sender.send(chunk).is_err() {
                return;
            }
        }
        let _ = console_sender.send(Stream::ConsoleClosed);
    });
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let qemu_done = Arc::new(AtomicBool::new(false));
    let tail = run
        .second_serial
        .clone()
        .map(|path| follow(path, sender, Arc::clone(&qemu_done)));

    let started = Instant::now();
    let colour = stdout_is_terminal();
    let mut events = Vec::new();
    let mut raw = Vec::new();
    let mut serial = SerialLines::new(&watch.second_serial_label, watch.echo != Echo::Quiet);
    let mut timed_out = false;
    loop {
        let wait = match watch.timeout {
            Some(limit) => match limit.checked_sub(started.elapsed()) {
                Some(left) => left,
                None => {
                    timed_out = true;
                    break;
                }
            },
            None => Duration::from_secs(3600),
        };
        match receiver.recv_timeout(wait) {
            Ok(Stream::Console(chunk)) => {
                if watch.echo == Echo::Raw {
                    print_hex(raw.len(), &chunk);
                }
                raw.extend_from_slice(&chunk);
                for event in decoder.feed(&chunk) {
                    if watch.echo == Echo::Decoded {
                        println!("{}", event.render(colour));
                    }
                    events.push(event);
                }
            }
            Ok(Stream::SecondSerial(chunk)) => serial.feed(&chunk),
            Ok(Stream::ConsoleClosed) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
        }
    }
    if timed_out {
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for QEMU")?;
    let _ = reader.join();
    // The second UART's last bytes: the follower reads to the end once more, then
    // stops.
    qemu_done.store(true, Ordering::Release);
    if let Some(tail) = tail {
        let _ = tail.join();
    }
    for stream in receiver.try_iter() {
        if let Stream::SecondSerial(chunk) = stream {
            serial.feed(&chunk);
        }
    }
    let second_serial = serial.finish();
    let stderr_text = stderr_reader.join().unwrap_or_default();
    if let Some(event) = decoder.finish() {
        if watch.echo == Echo::Decoded {
            println!("{}", event.render(colour));
        }
        events.push(event);
    }

    let ending = if timed_out {
        Ending::TimedOut(watch.timeout.unwrap_or_default())
    } else {
        match status.code().and_then(Verdict::from_exit_code) {
            Some(verdict) => Ending::Verdict(verdict),
            None => Ending::QemuFailed {
                code: status.code(),
                stderr: stderr_text,
            },
        }
    };
    Ok(Outcome {
        ending,
        events,
        raw,
        second_serial,
    })
}

/// How often the second UART's file is read for new bytes.
const FOLLOW_INTERVAL: Duration = Duration::from_millis(50);

/// Reads what QEMU appends to `path`, as `tail -f` does, until `done` is set and
/// the file's end is reached.
fn follow(
    path: std::path::PathBuf,
    sender: mpsc::Sender<Stream>,
    done: Arc<AtomicBool>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let Ok(mut file) = File::open(&path) else {
            return;
        };
        let mut buffer = [0u8; 4096];
        loop {
            // Read `done` before reading the file, so the last read comes after
            // QEMU's last write.
            let finished = done.load(Ordering::Acquire);
            match file.read(&mut buffer) {
                Ok(0) | Err(_) => {
                    if finished {
                        return;
                    }
                    thread::sleep(FOLLOW_INTERVAL);
                }
                Ok(count) => {
                    let chunk = Stream::SecondSerial(buffer[..count].to_vec());
                    if sender.send(chunk).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// The second UART's bytes, printed a line at a time as `[label] line`.
struct SerialLines {
    prefix: String,
    echo: bool,
    bytes: Vec<u8>,
    /// Where the line not yet printed starts in `bytes`.
    pending: usize,
}

impl SerialLines {
    fn new(label: &str, echo: bool) -> SerialLines {
        SerialLines {
            prefix: format!("[{label}] "),
            echo,
            bytes: Vec::new(),
            pending: 0,
        }
    }

    fn feed(&mut self, chunk: &[u8]) {
        self.bytes.extend_from_slice(chunk);
        while let Some(end) = self.bytes[self.pending..].iter().position(|&b| b == b'\n') {
            let line_end = self.pending + end;
            self.print(self.pending, line_end);
            self.pending = line_end + 1;
        }
    }

    fn print(&self, start: usize, end: usize) {
        if self.echo {
            let line = String::from_utf8_lossy(&self.bytes[start..end]);
            println!("{}{}", self.prefix, line.trim_end_matches('\r'));
        }
    }

    /// Prints an unfinished last line and returns every byte.
    fn finish(self) -> Vec<u8> {
        if self.pending < self.bytes.len() {
            self.print(self.pending, self.bytes.len());
        }
        self.bytes
    }
}

fn print_hex(offset: usize, bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|byte| format!("{byte:02x}")).collect();
        let _ = writeln!(stdout, "{:08x}: {}", offset + row * 16, hex.join(" "));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_serial_lines_survive_chunking() {
        let mut lines = SerialLines::new("linux-a", false);
        for chunk in [
            &b"[    0.0000"[..],
            b"00] Booting Linux\r\nsecond",
            b" line\r\n",
            b"partial",
        ] {
            lines.feed(chunk);
        }
        assert_eq!(
            &lines.bytes[lines.pending..],
            b"partial",
            "waits for its newline"
        );
        let outcome = Outcome {
            ending: Ending::TimedOut(Duration::from_secs(1)),
            events: Vec::new(),
            raw: Vec::new(),
            second_serial: lines.finish(),
        };
        assert_eq!(
            outcome.second_serial_lines(),
            ["[    0.000000] Booting Linux", "second line", "partial"]
        );
    }
}
