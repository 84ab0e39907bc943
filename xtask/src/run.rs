//! Booting an image under QEMU: stream its console through the defmt decoder, enforce
//! a timeout, and turn QEMU's exit status into the run's verdict.

use std::io::{Read, Write};
use std::process::{Command, Stdio};
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

    /// The process exit code `cargo xtask qemu` reports for this run.
    pub fn exit_code(&self) -> i32 {
        match &self.ending {
            Ending::Verdict(verdict) => i32::from(verdict.exit_code()),
            Ending::QemuFailed { code, .. } => code.unwrap_or(1).max(1),
            Ending::TimedOut(_) => 124,
        }
    }
}

/// Boots `machine` with `run`, decoding against `elf`, for at most `timeout`.
pub fn run(
    machine: &Machine,
    run: &RunConfig,
    elf: &[u8],
    timeout: Option<Duration>,
    echo: Echo,
) -> Result<Outcome> {
    let mut decoder = LogDecoder::from_elf(elf)?;
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
    let (sender, receiver) = mpsc::channel::<Vec<u8>>();
    let reader = thread::spawn(move || {
        let mut buffer = [0u8; 4096];
        while let Ok(count) = stdout.read(&mut buffer) {
            if count == 0 || sender.send(buffer[..count].to_vec()).is_err() {
                break;
            }
        }
    });
    let stderr_reader = thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });

    let started = Instant::now();
    let colour = stdout_is_terminal();
    let mut events = Vec::new();
    let mut raw = Vec::new();
    let mut timed_out = false;
    loop {
        let wait = match timeout {
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
            Ok(chunk) => {
                if echo == Echo::Raw {
                    print_hex(raw.len(), &chunk);
                }
                raw.extend_from_slice(&chunk);
                for event in decoder.feed(&chunk) {
                    if echo == Echo::Decoded {
                        println!("{}", event.render(colour));
                    }
                    events.push(event);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if timed_out {
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for QEMU")?;
    let _ = reader.join();
    let stderr_text = stderr_reader.join().unwrap_or_default();
    if let Some(event) = decoder.finish() {
        if echo == Echo::Decoded {
            println!("{}", event.render(colour));
        }
        events.push(event);
    }

    let ending = if timed_out {
        Ending::TimedOut(timeout.unwrap_or_default())
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
    })
}

fn print_hex(offset: usize, bytes: &[u8]) {
    let mut stdout = std::io::stdout().lock();
    for (row, chunk) in bytes.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|byte| format!("{byte:02x}")).collect();
        let _ = writeln!(stdout, "{:08x}: {}", offset + row * 16, hex.join(" "));
    }
}
