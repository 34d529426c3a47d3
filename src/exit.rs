//! The one exit-code type of every command (a run, `check`, `pools`, `reset`), and the table that
//! `--help` prints and the README shows (a test holds the README to it). Cron lines and scripts rely
//! on these numbers.

use std::fmt::Write as _;
use std::process::ExitCode;

/// How a command ended. Only `main` turns it into a process status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Exit {
    /// Another run holds the lock: left quietly.
    Busy,
    /// Healthy; nothing needed doing, or all that was asked went well.
    Healthy,
    /// php-fpm was relaunched and the heartbeat is healthy again.
    Recovered,
    /// Logged and alerted only: php-fpm was left alone.
    Alerted,
    /// Failing and not brought back (or a `pools` step failed, or `check` found it unhealthy).
    Failing,
    /// Bad arguments or configuration: nothing was probed or restarted.
    Usage,
}

impl Exit {
    /// Every exit, in the order of their codes.
    pub const ALL: [Exit; 6] = [
        Exit::Healthy,
        Exit::Failing,
        Exit::Usage,
        Exit::Recovered,
        Exit::Alerted,
        Exit::Busy,
    ];

    /// The numeric exit code.
    pub fn code(self) -> u8 {
        match self {
            Exit::Healthy => 0,
            Exit::Failing => 1,
            Exit::Usage => 2,
            Exit::Recovered => 3,
            Exit::Alerted => 4,
            Exit::Busy => 5,
        }
    }

    /// What the code means, as `--help` and the README say it.
    pub fn meaning(self) -> &'static str {
        match self {
            Exit::Healthy => "healthy; `pools` and `reset`: done",
            Exit::Failing => {
                "failing and not brought back: still down after the relaunch, or the relaunch was held back \
                 (--failures, pause file, restart budget, cooldown, config test), or --dry-run would relaunch; \
                 `check`: unhealthy or bad arguments; `pools`: a replica failed or a stop was refused"
            }
            Exit::Usage => {
                "usage or configuration error (bad arguments, unsafe log or lock path, bad pools file); \
                 nothing was probed or restarted"
            }
            Exit::Recovered => "relaunched, and the heartbeat is healthy again",
            Exit::Alerted => {
                "web server unreachable, unexpected status, unhealthy reply or saturated pool: logged and alerted only"
            }
            Exit::Busy => "another run holds the lock",
        }
    }

    /// The table for `--help`.
    pub fn table() -> String {
        Exit::ALL.iter().fold(String::new(), |mut table, exit| {
            let _ = writeln!(table, "  {}  {}", exit.code(), exit.meaning());
            table
        })
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_in_order() {
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        assert_eq!(codes, [0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn the_readme_table_is_this_table() {
        let readme = include_str!("../README.md");
        for exit in Exit::ALL {
            let row = format!("| {} | {} |", exit.code(), exit.meaning());
            assert!(readme.contains(&row), "README lacks the row\n{row}");
        }
    }

    #[test]
    fn worst_outcome_wins_when_repeating() {
        // `--every` reports the most serious outcome of the minute.
        let seen = [Exit::Recovered, Exit::Healthy, Exit::Alerted];
        assert_eq!(seen.iter().max(), Some(&Exit::Alerted));
        assert!(Exit::Failing > Exit::Alerted);
    }
}
