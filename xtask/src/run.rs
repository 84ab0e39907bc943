//! Booting an image under QEMU: stream its console through the defmt decoder, enforce
//! a timeout, and turn QEMU's exit status into the run's verdict. A guest's console
//! on the machine's second UART, captured to a file, is shown line by line next to
//! the decoded log. Every decoded event and every line of the second UART keeps the
//! time it reached the host, from QEMU's start (boot-time benchmarks).

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

/// A line of output and when it reached the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimedLine {
    /// From QEMU's start to the read that completed the line.
    pub at: Duration,
    /// The line, without its line ending.
    pub text: String,
}

/// Everything a run produced.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// How it ended.
    pub ending: Ending,
    /// Every event the console stream held.
    pub events: Vec<LogEvent>,
    /// When each of `events` reached the host, from QEMU's start.
    pub event_arrivals: Vec<Duration>,
    /// The raw console bytes.
    pub raw: Vec<u8>,
    /// What the machine's second UART printed, when the run captured it
    /// ([`RunConfig::second_serial`]).
    pub second_serial: Vec<u8>,
    /// When each line of [`Outcome::second_serial_lines`] reached the host, from
    /// QEMU's start (to within [`FOLLOW_INTERVAL`]: the capture file is polled).
    pub second_serial_arrivals: Vec<Duration>,
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

    /// The second UART's lines with the time each reached the host.
    pub fn second_serial_timed(&self) -> Vec<TimedLine> {
        self.second_serial_lines()
            .into_iter()
            .zip(&self.second_serial_arrivals)
            .map(|(text, &at)| TimedLine { at, text })
            .collect()
    }

    /// The decoded messages with the time each reached the host.
    pub fn messages_timed(&self) -> Vec<TimedLine> {
        self.events
            .iter()
            .zip(&self.event_arrivals)
            .filter_map(|(event, &at)| match event {
                LogEvent::Line(line) => Some(TimedLine {
                    at,
                    text: line.message.clone(),
                }),
                LogEvent::Undecodable { .. } => None,
            })
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

/// What the reader threads pass to the run loop, with when they read it.
enum Stream {
    /// Bytes of the hypervisor's console.
    Console(Instant, Vec<u8>),
    /// The console reached its end: QEMU is gone.
    ConsoleClosed,
    /// Bytes of the second UART.
    SecondSerial(Instant, Vec<u8>),
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
    let spawned = Instant::now();
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
            let chunk = Stream::Console(Instant::now(), buffer[..count].to_vec());
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
    let mut event_arrivals = Vec::new();
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
            Ok(Stream::Console(read_at, chunk)) => {
                if watch.echo == Echo::Raw {
                    print_hex(raw.len(), &chunk);
                }
                raw.extend_from_slice(&chunk);
                for event in decoder.feed(&chunk) {
                    if watch.echo == Echo::Decoded {
                        println!("{}", event.render(colour));
                    }
                    events.push(event);
                    event_arrivals.push(read_at - spawned);
                }
            }
            Ok(Stream::SecondSerial(read_at, chunk)) => serial.feed(&chunk, read_at - spawned),
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
        if let Stream::SecondSerial(read_at, chunk) = stream {
            serial.feed(&chunk, read_at - spawned);
        }
    }
    let ended = spawned.elapsed();
    let (second_serial, second_serial_arrivals) = serial.finish(ended);
    let stderr_text = stderr_reader.join().unwrap_or_default();
    if let Some(event) = decoder.finish() {
        if watch.echo == Echo::Decoded {
            println!("{}", event.render(colour));
        }
        events.push(event);
        event_arrivals.push(ended);
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
        event_arrivals,
        raw,
        second_serial,
        second_serial_arrivals,
    })
}

/// How often the second UART's file is read for new bytes: also how late a line
/// of it may be stamped.
pub const FOLLOW_INTERVAL: Duration = Duration::from_millis(10);

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
                    let chunk = Stream::SecondSerial(Instant::now(), buffer[..count].to_vec());
                    if sender.send(chunk).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Output read in chunks, cut into lines, each stamped with when the read that
/// completed it happened.
#[derive(Clone, Debug, Default)]
pub struct Lines {
    bytes: Vec<u8>,
    /// Where the line not yet complete starts in `bytes`.
    pending: usize,
    arrivals: Vec<Duration>,
}

impl Lines {
    /// Adds `chunk`, read `at` after QEMU's start; returns the lines it completed,
    /// without their line endings.
    pub fn feed(&mut self, chunk: &[u8], at: Duration) -> Vec<String> {
        self.bytes.extend_from_slice(chunk);
        let mut completed = Vec::new();
        while let Some(end) = self.bytes[self.pending..].iter().position(|&b| b == b'\n') {
            let line_end = self.pending + end;
            completed.push(self.text(self.pending, line_end));
            self.arrivals.push(at);
            self.pending = line_end + 1;
        }
        completed
    }

    /// Ends the output `at` after QEMU's start: an unfinished last line counts as
    /// a line, and is returned.
    pub fn finish(&mut self, at: Duration) -> Option<String> {
        if self.pending == self.bytes.len() {
            return None;
        }
        let last = self.text(self.pending, self.bytes.len());
        self.arrivals.push(at);
        self.pending = self.bytes.len();
        Some(last)
    }

    /// Every byte read.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The complete lines with their times (after [`Lines::finish`], every line).
    pub fn timed(&self) -> Vec<TimedLine> {
        let text = String::from_utf8_lossy(&self.bytes[..self.pending]);
        text.lines()
            .zip(&self.arrivals)
            .map(|(line, &at)| TimedLine {
                at,
                text: line.trim_end_matches('\r').to_string(),
            })
            .collect()
    }

    /// The bytes read and when each line was completed.
    pub fn into_parts(self) -> (Vec<u8>, Vec<Duration>) {
        (self.bytes, self.arrivals)
    }

    fn text(&self, start: usize, end: usize) -> String {
        let line = String::from_utf8_lossy(&self.bytes[start..end]);
        line.trim_end_matches('\r').to_string()
    }
}

/// The second UART's bytes, printed a line at a time as `[label] line`.
struct SerialLines {
    prefix: String,
    echo: bool,
    lines: Lines,
}

impl SerialLines {
    fn new(label: &str, echo: bool) -> SerialLines {
        SerialLines {
            prefix: format!("[{label}] "),
            echo,
            lines: Lines::default(),
        }
    }

    fn feed(&mut self, chunk: &[u8], at: Duration) {
        for line in self.lines.feed(chunk, at) {
            self.print(&line);
        }
    }

    fn print(&self, line: &str) {
        if self.echo {
            println!("{}{line}", self.prefix);
        }
    }

    /// Prints an unfinished last line, `at` the end of the run, and returns every
    /// byte and when each line arrived.
    fn finish(mut self, at: Duration) -> (Vec<u8>, Vec<Duration>) {
        if let Some(last) = self.lines.finish(at) {
            self.print(&last);
        }
        self.lines.into_parts()
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
        for (ms, chunk) in [
            (1, &b"[    0.0000"[..]),
            (2, b"00] Booting Linux\r\nsecond"),
            (3, b" line\r\n"),
            (4, b"partial"),
        ] {
            lines.feed(chunk, Duration::from_millis(ms));
        }
        let inner = &lines.lines;
        assert_eq!(
            &inner.bytes[inner.pending..],
            b"partial",
            "waits for its newline"
        );
        let (second_serial, second_serial_arrivals) = lines.finish(Duration::from_millis(9));
        let outcome = Outcome {
            ending: Ending::TimedOut(Duration::from_secs(1)),
            events: Vec::new(),
            event_arrivals: Vec::new(),
            raw: Vec::new(),
            second_serial,
            second_serial_arrivals,
        };
        assert_eq!(
            outcome.second_serial_lines(),
            ["[    0.000000] Booting Linux", "second line", "partial"]
        );
        // Each line is stamped with the read that completed it.
        let times: Vec<u64> = outcome
            .second_serial_timed()
            .iter()
            .map(|line| line.at.as_millis() as u64)
            .collect();
        assert_eq!(times, [2, 3, 9]);
    }

    #[test]
    fn lines_keep_empty_lines_and_their_times() {
        let mut lines = Lines::default();
        assert_eq!(lines.feed(b"a\n\nb", Duration::from_millis(5)), ["a", ""]);
        assert_eq!(lines.finish(Duration::from_millis(7)).as_deref(), Some("b"));
        assert_eq!(lines.finish(Duration::from_millis(8)), None);
        let timed = lines.timed();
        assert_eq!(
            timed,
            [
                TimedLine {
                    at: Duration::from_millis(5),
                    text: "a".into()
                },
                TimedLine {
                    at: Duration::from_millis(5),
                    text: String::new()
                },
                TimedLine {
                    at: Duration::from_millis(7),
                    text: "b".into()
                },
            ]
        );
    }
}
