//! Evidence of a relaunch, captured before it: php-fpm's status page, its processes, the tails of its
//! error log and slowlog. One file per event in a directory (0700, files 0600, never through a
//! symlink), the newest 50 kept; the same text goes into the alert.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};

use crate::escape::printable;
use crate::journal;
use crate::report::Report;
use crate::secure_file::{self, Links};

/// How many evidence files are kept.
pub const KEEP: usize = 50;

/// How much of each log's end is kept.
const TAIL_BYTES: u64 = 4096;

/// The evidence text: status page and log tails (the process table is in the alert already).
pub fn gather(status_page: Option<&str>, logs: &[PathBuf]) -> String {
    let mut text = String::new();
    if let Some(page) = status_page {
        let _ = writeln!(
            text,
            "php-fpm status page (?json&full):\n{}\n",
            printable(page.trim(), &['\n', '\t'])
        );
    }
    for log in logs {
        if let Some(tail) = tail(log) {
            let _ = writeln!(
                text,
                "Last lines of {}:\n{}\n",
                log.display(),
                tail.trim_end()
            );
        }
    }
    text
}

/// The end of a log: its last 4 KiB, from the first whole line, control characters but newlines and
/// tabs escaped. The log lies where the pool user writes: a link, FIFO or device there gives nothing.
fn tail(path: &Path) -> Option<String> {
    let (bytes, cut) = secure_file::tail(path, Links::Refuse, TAIL_BYTES)?;
    let text = String::from_utf8_lossy(&bytes);
    let text = match (cut, text.find('\n')) {
        (true, Some(newline)) => &text[newline + 1..],
        _ => &text[..],
    };
    Some(printable(text, &['\n', '\t']))
}

/// Keeps the evidence of the run `report` describes: its log line (as it stands before the
/// relaunch), the processes, and what `gather` found. Returns the text for the alert, which says
/// where the file is (or why it could not be written).
pub fn record(dir: &Path, report: &Report, found: &str) -> String {
    let mut text = journal::line(report);
    for p in &report.processes {
        let _ = writeln!(text, "{p}");
    }
    let _ = write!(text, "\n{found}");
    let stamp = report.time.format("%Y%m%dT%H%M%S").to_string();
    match save(dir, &stamp, &report.verdict(), &text) {
        Ok(path) => format!("Evidence file: {}\n\n{found}", path.display()),
        Err(err) => format!("Evidence file not written: {err:#}\n\n{found}"),
    }
}

/// Writes `text` to a new file in `dir` named after `stamp` and `verdict`, then prunes the oldest.
pub fn save(dir: &Path, stamp: &str, verdict: &str, text: &str) -> Result<PathBuf> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating evidence directory '{}'", dir.display()))?;
    let path = dir.join(format!("{stamp}-{verdict}.txt"));
    // Never replaces an earlier file of the same second and verdict.
    secure_file::place(&path, "evidence file")?.write(text.as_bytes(), 0o600, true)?;
    prune(dir, KEEP, &path)?;
    Ok(path)
}

/// Whether a file name is one `save` makes: `YYYYMMDDTHHMMSS-VERDICT.txt`.
fn is_evidence_name(name: &str) -> bool {
    let Some(stem) = name.strip_suffix(".txt") else {
        return false;
    };
    let Some((stamp, verdict)) = stem.split_once('-') else {
        return false;
    };
    let stamp = stamp.as_bytes();
    stamp.len() == 15
        && stamp[8] == b'T'
        && stamp[..8].iter().chain(&stamp[9..]).all(u8::is_ascii_digit)
        && !verdict.is_empty()
        && verdict
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// Keeps the `keep` newest evidence files by modification time. Only regular files with the evidence
/// name pattern are touched, and never `just_written`.
fn prune(dir: &Path, keep: usize, just_written: &Path) -> Result<()> {
    let mut files: Vec<(SystemTime, PathBuf)> = fs::read_dir(dir)?
        .flatten()
        .filter(|e| e.file_name().to_str().is_some_and(is_evidence_name))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.file_type()
                .is_file()
                .then(|| Some((meta.modified().ok()?, e.path())))?
        })
        .collect();
    // Newest first; equal times by name, so the order is the same every time.
    files.sort_by(|a, b| b.cmp(a));
    for (_, old) in files.iter().skip(keep) {
        if old != just_written {
            fs::remove_file(old).with_context(|| format!("pruning '{}'", old.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tails_start_at_a_whole_line() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("php-fpm.log");
        let lines: Vec<String> = (0..1000).map(|i| format!("line {i}")).collect();
        let lines = lines.join("\n") + "\n";
        fs::write(&log, &lines).unwrap();
        let tail = tail(&log).unwrap();
        assert!(tail.starts_with("line "), "{tail:.20}");
        assert!(tail.ends_with("line 999\n"));
        assert!(tail.len() <= 4096);
        let text = gather(
            Some("{\"pool\":\"www\"}"),
            &[log, dir.path().join("missing.log")],
        );
        assert!(text.starts_with("php-fpm status page (?json&full):\n{\"pool\":\"www\"}\n"));
        assert!(!text.contains("missing.log"));
    }

    #[test]
    fn tails_of_fifos_links_and_devices_are_nothing_and_controls_are_escaped() {
        let dir = tempfile::tempdir().unwrap();
        let (fifo, zero) = crate::secure_file::tests::traps(dir.path());
        assert_eq!(tail(&fifo), None);
        assert_eq!(tail(&zero), None);
        let log = dir.path().join("error.log");
        fs::write(&log, "one\tline\nFrom: x\u{1b}[2J\n").unwrap();
        assert_eq!(tail(&log).unwrap(), "one\tline\nFrom: x\\u{1b}[2J\n");
    }

    #[test]
    fn pruning_touches_evidence_only_and_never_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let evidence = dir.path().join("evidence");
        fs::create_dir(&evidence).unwrap();
        fs::write(evidence.join("notes.txt"), "mine").unwrap();
        fs::write(evidence.join("99999999T999999-x.txt.bak"), "mine").unwrap();
        // Names that sort after anything this year, but are older by time.
        let old = evidence.join("29991231T235959-502.txt");
        fs::write(&old, "old").unwrap();
        let file = fs::File::options().write(true).open(&old).unwrap();
        file.set_modified(SystemTime::UNIX_EPOCH).unwrap();
        let mut written = Vec::new();
        for i in 0..KEEP {
            written.push(save(&evidence, &format!("20261123T{i:06}"), "timeout", "facts").unwrap());
        }
        assert!(!old.exists(), "the oldest by time went first");
        assert!(evidence.join("notes.txt").exists());
        assert!(evidence.join("99999999T999999-x.txt.bak").exists());
        assert!(written.iter().all(|p| p.exists()));
        assert!(is_evidence_name("20261123T000001-timeout.txt"));
        assert!(!is_evidence_name("notes.txt"));
        assert!(!is_evidence_name("2026112T000001-timeout.txt"));
    }

    #[test]
    fn files_are_private_and_pruned_to_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let evidence = dir.path().join("evidence");
        for i in 0..KEEP + 5 {
            save(&evidence, &format!("20261123T{i:06}"), "timeout", "facts").unwrap();
        }
        let mut names: Vec<String> = fs::read_dir(&evidence)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names.len(), KEEP);
        assert_eq!(
            names[0], "20261123T000005-timeout.txt",
            "the oldest went first"
        );
        let mode = fs::metadata(evidence.join(&names[0]))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0);
    }
}
