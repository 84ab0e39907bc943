//! The verdict a run ends with, and the exit codes that carry it to the host.
//!
//! Under QEMU the kernel ends a run with semihosting `SYS_EXIT`
//! (`ADP_Stopped_ApplicationExit` with the code below as subcode), and QEMU exits with
//! that code. The codes stay clear of 1 and 2, which QEMU itself uses for its own
//! errors, so the host can tell "the hypervisor said so" from "QEMU failed".

use core::fmt;

/// How a run of the hypervisor ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Verdict {
    /// Every check of the run passed.
    Pass = 0,
    /// A self-check of the run failed (for example a CPU that did not come online).
    TestFailure = 10,
    /// The hypervisor panicked.
    Panic = 11,
    /// The hypervisor took an exception it does not handle.
    UnexpectedException = 12,
    /// The board table does not fit the machine it boots on: RAM the firmware's
    /// device tree does not have (the image was built for another machine or memory
    /// size), or a stage-2 granule the CPU lacks or the table's rules reject.
    BoardMismatch = 13,
    /// A guest was refused: a truncated or unknown bundle, a file that is not an
    /// arm64 `Image`, a guest that does not fit its partition.
    BadGuest = 14,
}

impl Verdict {
    /// Every verdict, in code order.
    pub const ALL: [Verdict; 6] = [
        Verdict::Pass,
        Verdict::TestFailure,
        Verdict::Panic,
        Verdict::UnexpectedException,
        Verdict::BoardMismatch,
        Verdict::BadGuest,
    ];

    /// The process exit code QEMU reports for this verdict.
    pub const fn exit_code(self) -> u8 {
        self as u8
    }

    /// The verdict an exit code stands for, if it is one of ours.
    pub fn from_exit_code(code: i32) -> Option<Verdict> {
        Verdict::ALL
            .into_iter()
            .find(|verdict| i32::from(verdict.exit_code()) == code)
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Verdict::Pass => "pass",
            Verdict::TestFailure => "test failure",
            Verdict::Panic => "panic",
            Verdict::UnexpectedException => "unexpected exception",
            Verdict::BoardMismatch => "board table does not match the machine",
            Verdict::BadGuest => "a guest was refused",
        };
        f.write_str(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_are_distinct() {
        for verdict in Verdict::ALL {
            let code = i32::from(verdict.exit_code());
            assert_eq!(Verdict::from_exit_code(code), Some(verdict));
        }
        let mut codes = Verdict::ALL.map(Verdict::exit_code);
        codes.sort_unstable();
        assert!(codes.windows(2).all(|pair| pair[0] != pair[1]));
    }

    #[test]
    fn qemu_own_error_codes_are_not_verdicts() {
        // QEMU exits 1 on a bad command line or a failed device set-up.
        assert_eq!(Verdict::from_exit_code(1), None);
        assert_eq!(Verdict::from_exit_code(2), None);
    }
}
