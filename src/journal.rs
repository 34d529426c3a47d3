//! The log: one line per run that found a problem or did something, appended with a single write.
//!
//! Shape (stable; `report` and people's greps parse it):
//! `TIMESTAMP url=URL verdict=V latency=S action=A old_pid=P new_pid=P took=S state=S mail=M
//! trigger=cron|hook events=N [ignored=N] [error="…"] [mail_error="…"]`
//!
//! The whole line is escaped once here (#18): whatever a field carries from outside (a target from a
//! pools file, a reply, a server's error), no control or bidi character reaches the file raw.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result, ensure};
use chrono::SecondsFormat;

use crate::escape;
use crate::report::Report;
use crate::secure_file::{self, Mode};

/// Longest `error=` text kept, so a line stays a line.
const MAX_ERROR: usize = escape::MAX_FIELD;

/// The log line of `report`, newline included.
pub fn line(report: &Report) -> String {
    let mut line = format!(
        "{} url={} verdict={} latency={:.3}s action={} old_pid={} new_pid={} took={} state={} mail={} {}",
        report.time.to_rfc3339_opts(SecondsFormat::Secs, false),
        report.target,
        report.verdict(),
        report.latency.as_secs_f64(),
        report.action,
        pid(report.old_pid),
        pid(report.new_pid),
        report
            .took
            .map_or_else(|| "-".to_owned(), |t| format!("{:.3}s", t.as_secs_f64())),
        report.state,
        report.mail,
        report.trigger,
    );
    // `watch` (#21): which master and pool, after the fields a classic run writes.
    for (key, value) in [("master", &report.master), ("pool", &report.pool)] {
        if let Some(value) = value {
            let _ = write!(line, " {key}={}", value.replace(' ', "_"));
        }
    }
    if let Some(error) = &report.error {
        let _ = write!(line, " error=\"{}\"", one_line(error));
    }
    if let Some(error) = &report.mail_error {
        let _ = write!(line, " mail_error=\"{}\"", one_line(error));
    }
    let mut line = escape::printable(&line, &[]);
    line.push('\n');
    line
}

fn pid(pid: Option<u32>) -> String {
    pid.map_or_else(|| "-".to_owned(), |p| p.to_string())
}

/// Quotes become apostrophes and control (and bidi) characters spaces, so the field can be parsed;
/// long text is cut.
fn one_line(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| match c {
            '"' => '\'',
            c if escape::is_unsafe(c) => ' ',
            c => c,
        })
        .take(MAX_ERROR)
        .collect();
    if text.chars().count() > MAX_ERROR {
        out.push('…');
    }
    out
}

/// The open log.
#[derive(Debug)]
pub struct Journal {
    file: File,
}

impl Journal {
    /// Opens (creating 0640) the log at `path`, refusing symlinks and files of other users.
    pub fn open(path: &Path) -> Result<Journal> {
        Ok(Journal {
            file: secure_file::open(path, "log", Mode::Append)?,
        })
    }

    /// A second handle on the same open log, for the run's deadline to write with.
    pub fn try_clone(&self) -> Result<Journal> {
        Ok(Journal {
            file: self
                .file
                .try_clone()
                .context("duplicating the log's handle")?,
        })
    }

    /// Appends the line of `report` with one write(2) on the O_APPEND file, so concurrent writers
    /// never interleave.
    pub fn append(&mut self, report: &Report) -> Result<()> {
        self.write_line(&line(report))
    }

    /// Appends a step of a `pools` command: `TIMESTAMP pools: TEXT`, in one write.
    pub fn append_step(&mut self, text: &str) -> Result<()> {
        let now = chrono::Local::now().to_rfc3339_opts(SecondsFormat::Secs, false);
        self.write_line(&format!("{now} pools: {}\n", one_line(text)))
    }

    fn write_line(&mut self, line: &str) -> Result<()> {
        let written = self
            .file
            .write(line.as_bytes())
            .context("writing the log")?;
        ensure!(
            written == line.len(),
            "short write to the log ({written} of {} bytes)",
            line.len()
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fpm::Step;
    use crate::probe::Answer;
    use crate::report::{Action, Mail, RunState};
    use chrono::DateTime;
    use std::time::Duration;

    fn report() -> Report {
        let mut report = Report::new(
            DateTime::parse_from_rfc3339("2026-11-23T03:04:05+01:00").unwrap(),
            "http://127.0.0.1:8889/php-heartbeat.php".into(),
            Some(Answer::Status(502)),
            Duration::from_millis(4),
        );
        report.action = Action::Relaunch(vec![Step::Restart]);
        report.old_pid = Some(100);
        report.new_pid = Some(200);
        report.took = Some(Duration::from_millis(1850));
        report.state = RunState::Relaunched;
        report.mail = Mail::Sent;
        report
    }

    #[test]
    fn line_shape_is_stable() {
        assert_eq!(
            line(&report()),
            "2026-11-23T03:04:05+01:00 url=http://127.0.0.1:8889/php-heartbeat.php verdict=502 \
             latency=0.004s action=restart old_pid=100 new_pid=200 took=1.850s state=healthy mail=sent \
             trigger=cron events=0\n"
        );
    }

    #[test]
    fn missing_facts_are_dashes_and_errors_stay_on_one_line() {
        let mut e = report();
        e.old_pid = None;
        e.new_pid = None;
        e.took = None;
        e.error = Some("smtp said \"no\"\nand hung up".into());
        let line = line(&e);
        assert!(line.contains(" old_pid=- new_pid=- took=- "), "{line}");
        assert!(
            line.ends_with(" error=\"smtp said 'no' and hung up\"\n"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn long_errors_are_cut() {
        let mut e = report();
        e.error = Some("x".repeat(5000));
        assert!(line(&e).len() < 1500);
    }

    #[test]
    fn append_adds_lines_and_never_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "older line\n").unwrap();
        let mut journal = Journal::open(&path).unwrap();
        journal.append(&report()).unwrap();
        journal.append(&report()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("older line\n"));
        assert_eq!(text.lines().count(), 3);
    }
}
