//! The hypervisor's own options on the firmware command line (`/chosen/bootargs`).
//!
//! Options are whitespace-separated `transom.KEY=VALUE` words; other words are left
//! for others (a guest's command line comes from the guest bundle, not from here).
//!
//! | word                          | meaning                                      |
//! |-------------------------------|----------------------------------------------|
//! | `transom.exit=semihosting`    | end the run with semihosting `SYS_EXIT` (QEMU)|
//! | `transom.exit=psci`           | end the run with PSCI `SYSTEM_OFF`            |
//! | `transom.exit=park`           | end the run by parking every CPU              |
//! | `transom.selftest=panic`      | panic after boot (tests the panic verdict)   |
//! | `transom.selftest=exception`  | read an unmapped address after boot          |
//! | `transom.selftest=stage2`     | run an EL1 probe in each partition's stage 2 |
//! | `transom.granule=4k` (`16k`, `64k`) | translate stage 2 with this granule instead of the board table's (the table is checked again for it) |
//! | `transom.width-probe`         | give each partition the test-only width probe (`crate::width_probe`) |

use transom_boards::Granule;

/// How the hypervisor ends a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitMethod {
    /// Semihosting `SYS_EXIT`: the host (QEMU) exits with the verdict's code.
    Semihosting,
    /// PSCI `SYSTEM_OFF`.
    Psci,
    /// Log the verdict and park every CPU.
    Park,
}

/// A deliberate failure to provoke after boot, to test the failure paths end to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SelfTest {
    /// `panic!` on the boot CPU.
    Panic,
    /// A load from an address the EL2 tables do not map.
    Exception,
    /// A minimal EL1 program run through each partition's stage 2: its RAM, its
    /// direct windows, a trapped window and the hypervisor's memory.
    Stage2,
    /// Numbered log lines, more than the boot log holds before the launch, and
    /// one line longer than a frame's buffer, then the pass verdict: every line
    /// must reach the host, in order.
    Log,
}

/// The parsed options.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct BootOptions<'a> {
    /// `transom.exit`, if given.
    pub exit: Option<ExitMethod>,
    /// `transom.selftest`, if given.
    pub selftest: Option<SelfTest>,
    /// `transom.granule`, if given: the stage-2 granule to use instead of the
    /// board table's.
    pub granule: Option<Granule>,
    /// `transom.width-probe`: each partition gets the width probe.
    pub width_probe: bool,
    /// The first `transom.*` word that was not understood.
    pub first_unknown: Option<&'a str>,
}

/// What every hypervisor option starts with; [`parse`] skips every other word.
pub const PREFIX: &str = "transom.";

/// Parses the hypervisor's words of a command line. Later words win; an unknown
/// `transom.*` word is recorded (the kernel warns about it) and otherwise ignored.
pub fn parse(command_line: &str) -> BootOptions<'_> {
    let mut options = BootOptions::default();
    for word in command_line.split_ascii_whitespace() {
        let Some(option) = word.strip_prefix(PREFIX) else {
            continue;
        };
        let known = match option.split_once('=') {
            Some(("exit", value)) => parse_exit(value).map(|exit| options.exit = Some(exit)),
            Some(("selftest", value)) => {
                parse_selftest(value).map(|test| options.selftest = Some(test))
            }
            Some(("granule", value)) => {
                parse_granule(value).map(|granule| options.granule = Some(granule))
            }
            None if option == "width-probe" => {
                options.width_probe = true;
                Some(())
            }
            _ => None,
        };
        if known.is_none() && options.first_unknown.is_none() {
            options.first_unknown = Some(word);
        }
    }
    options
}

fn parse_exit(value: &str) -> Option<ExitMethod> {
    match value {
        "semihosting" => Some(ExitMethod::Semihosting),
        "psci" => Some(ExitMethod::Psci),
        "park" => Some(ExitMethod::Park),
        _ => None,
    }
}

fn parse_selftest(value: &str) -> Option<SelfTest> {
    match value {
        "panic" => Some(SelfTest::Panic),
        "exception" => Some(SelfTest::Exception),
        "stage2" => Some(SelfTest::Stage2),
        "log" => Some(SelfTest::Log),
        _ => None,
    }
}

fn parse_granule(value: &str) -> Option<Granule> {
    match value {
        "4k" => Some(Granule::Size4KiB),
        "16k" => Some(Granule::Size16KiB),
        "64k" => Some(Granule::Size64KiB),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_command_line_has_no_options() {
        assert_eq!(parse(""), BootOptions::default());
    }

    #[test]
    fn hypervisor_words_are_picked_out_of_a_linux_style_line() {
        let options =
            parse("console=ttyAMA0 transom.exit=semihosting quiet transom.selftest=panic");
        assert_eq!(options.exit, Some(ExitMethod::Semihosting));
        assert_eq!(options.selftest, Some(SelfTest::Panic));
        assert_eq!(options.first_unknown, None);
    }

    #[test]
    fn granule_and_stage2_selftest() {
        let options = parse("transom.granule=64k transom.selftest=stage2");
        assert_eq!(options.granule, Some(Granule::Size64KiB));
        assert_eq!(options.selftest, Some(SelfTest::Stage2));
        assert_eq!(parse("transom.selftest=log").selftest, Some(SelfTest::Log));
        assert_eq!(
            parse("transom.granule=16k").granule,
            Some(Granule::Size16KiB)
        );
        assert_eq!(parse("transom.granule=4k").granule, Some(Granule::Size4KiB));
        let odd = parse("transom.granule=8k");
        assert_eq!(odd.granule, None);
        assert_eq!(odd.first_unknown, Some("transom.granule=8k"));
    }

    #[test]
    fn the_width_probe_is_off_unless_asked_for() {
        assert!(!parse("transom.exit=psci").width_probe);
        let options = parse("console=ttyAMA0 transom.width-probe");
        assert!(options.width_probe);
        assert_eq!(options.first_unknown, None);
        // It takes no value.
        let valued = parse("transom.width-probe=on");
        assert!(!valued.width_probe);
        assert_eq!(valued.first_unknown, Some("transom.width-probe=on"));
    }

    #[test]
    fn later_words_win() {
        let options = parse("transom.exit=park transom.exit=psci");
        assert_eq!(options.exit, Some(ExitMethod::Psci));
    }

    #[test]
    fn unknown_keys_and_values_are_reported() {
        assert_eq!(
            parse("transom.exit=reboot").first_unknown,
            Some("transom.exit=reboot")
        );
        assert_eq!(
            parse("transom.verbose").first_unknown,
            Some("transom.verbose")
        );
        let options = parse("transom.colour=blue transom.selftest=exception");
        assert_eq!(options.first_unknown, Some("transom.colour=blue"));
        assert_eq!(options.selftest, Some(SelfTest::Exception));
    }

    #[test]
    fn words_of_others_are_ignored() {
        let options = parse("exit=semihosting notransom.exit=park");
        assert_eq!(options, BootOptions::default());
    }
}
