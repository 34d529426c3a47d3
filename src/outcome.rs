//! What one run concluded, and the exit-code table that cron lines and scripts rely on.

use std::process::ExitCode;

/// The exit code for bad arguments, bad configuration, or a run that could not do its job.
pub const EXIT_USAGE: u8 = 2;

/// What a run concluded. Only `main` turns it into a process status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Another run holds the lock: left quietly. Exit 5.
    Busy,
    /// The heartbeat answered 200–399; nothing was done. Exit 0.
    Healthy,
    /// php-fpm was relaunched and the heartbeat is healthy again. Exit 3.
    Recovered,
    /// The web server is unreachable or the heartbeat answered an unexpected status:
    /// logged and alerted, php-fpm left alone. Exit 4.
    Alerted,
    /// The heartbeat still fails after the relaunch and its escalation (or, with
    /// `--dry-run`, a relaunch would be needed). Exit 1.
    StillDown,
}

impl Outcome {
    /// The process exit code of this outcome, as documented in `--help` and README.
    pub fn exit_code(self) -> ExitCode {
        ExitCode::from(self.code())
    }

    /// The numeric exit code.
    pub fn code(self) -> u8 {
        match self {
            Outcome::Healthy => 0,
            Outcome::StillDown => 1,
            Outcome::Recovered => 3,
            Outcome::Alerted => 4,
            Outcome::Busy => 5,
        }
    }
}

/// The exit code for usage and configuration errors.
pub fn usage_error() -> ExitCode {
    ExitCode::from(EXIT_USAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_documented() {
        let codes = [
            Outcome::Healthy.code(),
            Outcome::StillDown.code(),
            EXIT_USAGE,
            Outcome::Recovered.code(),
            Outcome::Alerted.code(),
            Outcome::Busy.code(),
        ];
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn worst_outcome_wins_when_repeating() {
        // `--every` reports the most serious outcome of the minute.
        let seen = [Outcome::Recovered, Outcome::Healthy, Outcome::Alerted];
        assert_eq!(seen.iter().max(), Some(&Outcome::Alerted));
        assert!(Outcome::StillDown > Outcome::Alerted);
    }
}
