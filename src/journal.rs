//! The log: one line per run that found a problem or did something, appended with a single write.
//!
//! Shape (stable; `report` and people's greps parse it):
//! `TIMESTAMP url=URL verdict=V latency=S action=A old_pid=P new_pid=P took=S state=S mail=M [error="…"]`

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, FixedOffset, SecondsFormat};

use crate::secure_file::{self, Mode};

/// Longest `error=` text kept, so a line stays a line.
const MAX_ERROR: usize = 1000;

/// The facts of one run, as they go into the log and the mail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// When the check started.
    pub time: DateTime<FixedOffset>,
    /// The heartbeat URL.
    pub url: String,
    /// The first answer: status code, `timeout`, `refused`, `dns` or `error`.
    pub verdict: String,
    /// How long the first answer took.
    pub latency: Duration,
    /// What was done: `none`, or the steps joined by `+` (`restart`, `kill+start` …); `would-…` in a dry run.
    pub action: String,
    /// The master before the relaunch.
    pub old_pid: Option<u32>,
    /// The master after the relaunch.
    pub new_pid: Option<u32>,
    /// How long the relaunch took, verification included.
    pub took: Option<Duration>,
    /// `healthy`, `down`, `web-server-down` or `unexpected-status`.
    pub state: &'static str,
    /// `sent`, `failed` or `none`.
    pub mail: &'static str,
    /// What went wrong on the way, if anything.
    pub error: Option<String>,
}

impl Entry {
    /// Adds `text` to what the line says went wrong, after what it says already.
    pub fn note(&mut self, text: String) {
        self.error = Some(match self.error.take() {
            Some(earlier) => format!("{earlier}; {text}"),
            None => text,
        });
    }

    /// The log line, newline included.
    pub fn line(&self) -> String {
        let mut line = format!(
            "{} url={} verdict={} latency={:.3}s action={} old_pid={} new_pid={} took={} state={} mail={}",
            self.time.to_rfc3339_opts(SecondsFormat::Secs, false),
            self.url,
            self.verdict,
            self.latency.as_secs_f64(),
            self.action,
            pid(self.old_pid),
            pid(self.new_pid),
            self.took
                .map_or_else(|| "-".to_owned(), |t| format!("{:.3}s", t.as_secs_f64())),
            self.state,
            self.mail,
        );
        if let Some(error) = &self.error {
            let _ = write!(line, " error=\"{}\"", one_line(error));
        }
        line.push('\n');
        line
    }
}

fn pid(pid: Option<u32>) -> String {
    pid.map_or_else(|| "-".to_owned(), |p| p.to_string())
}

/// Quotes become apostrophes and control characters spaces, so the field can be parsed; long text is cut.
fn one_line(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| match c {
            '"' => '\'',
            c if c.is_control() => ' ',
            c => c,
        })
        .take(MAX_ERROR)
        .collect();
    if text.chars().count() > MAX_ERROR {
        out.push('…');
    }
    out
}

/// Text as it may be printed where others' words must not become lines or terminal commands (#13):
/// control characters escaped (`\n`, `\t`, `\u{1b}` …), except those in `keep`.
pub fn printable(text: &str, keep: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && !keep.contains(&c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
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

    /// Appends `entry` with one write(2) on the O_APPEND file, so concurrent writers never interleave.
    pub fn append(&mut self, entry: &Entry) -> Result<()> {
        self.write_line(&entry.line())
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

    fn entry() -> Entry {
        Entry {
            time: DateTime::parse_from_rfc3339("2026-11-23T03:04:05+01:00").unwrap(),
            url: "http://127.0.0.1:8889/php-heartbeat.php".into(),
            verdict: "502".into(),
            latency: Duration::from_millis(4),
            action: "restart".into(),
            old_pid: Some(100),
            new_pid: Some(200),
            took: Some(Duration::from_millis(1850)),
            state: "healthy",
            mail: "sent",
            error: None,
        }
    }

    #[test]
    fn line_shape_is_stable() {
        assert_eq!(
            entry().line(),
            "2026-11-23T03:04:05+01:00 url=http://127.0.0.1:8889/php-heartbeat.php verdict=502 \
             latency=0.004s action=restart old_pid=100 new_pid=200 took=1.850s state=healthy mail=sent\n"
        );
    }

    #[test]
    fn missing_facts_are_dashes_and_errors_stay_on_one_line() {
        let mut e = entry();
        e.old_pid = None;
        e.new_pid = None;
        e.took = None;
        e.error = Some("smtp said \"no\"\nand hung up".into());
        let line = e.line();
        assert!(line.contains(" old_pid=- new_pid=- took=- "), "{line}");
        assert!(
            line.ends_with(" error=\"smtp said 'no' and hung up\"\n"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
    }

    #[test]
    fn printable_escapes_controls_but_those_kept() {
        assert_eq!(printable("a\nb\u{1b}[1m\t", &[]), r"a\nb\u{1b}[1m\t");
        assert_eq!(printable("a\nb\r", &['\n']), "a\nb\\r");
    }

    #[test]
    fn long_errors_are_cut() {
        let mut e = entry();
        e.error = Some("x".repeat(5000));
        assert!(e.line().len() < 1500);
    }

    #[test]
    fn append_adds_lines_and_never_truncates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log");
        std::fs::write(&path, "older line\n").unwrap();
        let mut journal = Journal::open(&path).unwrap();
        journal.append(&entry()).unwrap();
        journal.append(&entry()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("older line\n"));
        assert_eq!(text.lines().count(), 3);
    }
}
