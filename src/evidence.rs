//! Evidence of a relaunch, captured before it: php-fpm's status page, its processes, the tails of its
//! error log and slowlog. One file per event in a directory (0700, files 0600, never through a
//! symlink), the newest 50 kept; the same text goes into the alert.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::OFlags;

use crate::fpm::Proc;
use crate::journal::Entry;

/// How many evidence files are kept.
pub const KEEP: usize = 50;

/// How much of each log's end is kept.
const TAIL_BYTES: u64 = 4096;

/// The evidence text: status page and log tails (the process table is in the alert already).
pub fn gather(status_page: Option<&str>, logs: &[PathBuf]) -> String {
    let mut text = String::new();
    if let Some(page) = status_page {
        let _ = writeln!(text, "php-fpm status page (?json&full):\n{}\n", page.trim());
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

/// The end of a log: its last 4 KiB, from the first whole line.
fn tail(path: &Path) -> Option<String> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(OFlags::NOFOLLOW.bits().cast_signed())
        .open(path)
        .ok()?;
    let len = file.metadata().ok()?.len();
    if len == 0 {
        return None;
    }
    let start = len.saturating_sub(TAIL_BYTES);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut bytes = Vec::new();
    file.take(TAIL_BYTES).read_to_end(&mut bytes).ok()?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Some(match (start, text.find('\n')) {
        (0, _) | (_, None) => text,
        (_, Some(newline)) => text[newline + 1..].to_owned(),
    })
}

/// Keeps the evidence of the event `entry` describes: its log line (as it stands before the
/// relaunch), the processes, and what `gather` found. Returns the text for the alert, which says
/// where the file is (or why it could not be written).
pub fn record(dir: &Path, entry: &Entry, processes: &[Proc], found: &str) -> String {
    let mut text = entry.line();
    for p in processes {
        let _ = writeln!(text, "{p}");
    }
    let _ = write!(text, "\n{found}");
    let stamp = entry.time.format("%Y%m%dT%H%M%S").to_string();
    match save(dir, &stamp, &entry.verdict, &text) {
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
    let mut file: File = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(OFlags::NOFOLLOW.bits().cast_signed())
        .open(&path)
        .with_context(|| format!("creating evidence file '{}'", path.display()))?;
    file.write_all(text.as_bytes())?;
    prune(dir, KEEP)?;
    Ok(path)
}

/// Keeps the `keep` newest evidence files (their names begin with a sortable timestamp).
fn prune(dir: &Path, keep: usize) -> Result<()> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let excess = files.len().saturating_sub(keep);
    for old in &files[..excess] {
        fs::remove_file(old).with_context(|| format!("pruning '{}'", old.display()))?;
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
