//! Running a helper program (the `service` command, php-fpm, sendmail) with a deadline: arguments only,
//! never a shell; a fixed PATH, because cron's is `/usr/bin:/bin`. Output comes through a pipe that
//! this thread reads while it waits, keeping only its end: nothing is written to /tmp, so a full /tmp
//! cannot block a relaunch (#13). A daemon that inherits the pipe cannot keep us reading: once the
//! helper has exited, only what is already there is read.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::io::{self, PipeReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use rustix::event::{PollFd, PollFlags, Timespec, poll};

use crate::poll::poll_until;

/// The PATH helpers run with.
const SAFE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How much of a helper's output is kept for messages.
const OUTPUT_TAIL: usize = 300;

/// How much raw output is kept while reading (the tail is cut from it).
const OUTPUT_KEPT: usize = 16 * 1024;

/// How often the helper's exit is looked for while its output is quiet.
const TICK: Duration = Duration::from_millis(20);

/// The process group of the helper running now (0: none), for [`kill_running_helper`].
static RUNNING: AtomicI32 = AtomicI32::new(0);

/// A helper that ran to its end.
#[derive(Debug)]
pub struct Finished {
    /// How it ended.
    pub status: ExitStatus,
    /// The tail of its stdout and stderr, trimmed.
    pub output: String,
}

/// Runs `program args…` and waits at most `deadline`. With `input`, the program reads it on stdin.
/// On the deadline the program's whole process group is killed and an error returned.
pub fn run(
    program: &Path,
    args: &[&OsStr],
    input: Option<&[u8]>,
    deadline: Duration,
) -> Result<Finished> {
    let shown = shown(program, args);
    let (mut reader, writer) = io::pipe().context("creating a pipe for helper output")?;
    let mut command = Command::new(program);
    command
        .args(args)
        .env("PATH", SAFE_PATH)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(writer.try_clone()?)
        .stderr(writer)
        // Its own process group, so a hung init script can be ended with everything it started.
        .process_group(0);
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot run `{shown}`"))?;
    // Our copies of the pipe's writing end go with the Command: the helper's exit can end the reading.
    drop(command);
    let group = rustix::process::Pid::from_child(&child);
    RUNNING.store(group.as_raw_nonzero().get(), Ordering::SeqCst);
    if let (Some(bytes), Some(mut stdin)) = (input, child.stdin.take()) {
        // A thread of its own, so a helper that does not read cannot stall the deadline; it ends
        // when the helper reads all or exits (EPIPE).
        let bytes = bytes.to_vec();
        thread::spawn(move || stdin.write_all(&bytes));
    }
    let mut output = Vec::new();
    // Waiting for the helper's output is the pause between asks, so what it says is read as it
    // comes and a chatty helper never fills the pipe.
    let exited = poll_until(Instant::now() + deadline, Duration::ZERO, || {
        match child.try_wait() {
            Ok(Some(status)) => Ok(Ok(status)),
            Err(err) => Ok(Err(err)),
            Ok(None) => {
                read_ready(&mut reader, &mut output, TICK);
                Err(())
            }
        }
    });
    let Ok(status) = exited else {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        let _ = child.kill();
        let _ = child.wait();
        RUNNING.store(0, Ordering::SeqCst);
        bail!(
            "`{shown}` did not finish within {}s and was killed",
            deadline.as_secs_f64()
        );
    };
    RUNNING.store(0, Ordering::SeqCst);
    let status = status?;
    // What the helper wrote before it exited; a daemon that kept the pipe may write on, unread.
    for _ in 0..64 {
        if !read_ready(&mut reader, &mut output, Duration::ZERO) {
            break;
        }
    }
    Ok(Finished {
        status,
        output: tail(&String::from_utf8_lossy(&output)),
    })
}

/// Waits up to `wait` for output and reads what is there, keeping the last [`OUTPUT_KEPT`] bytes.
/// Whether anything was read.
fn read_ready(reader: &mut PipeReader, kept: &mut Vec<u8>, wait: Duration) -> bool {
    let timeout = Timespec::try_from(wait).unwrap_or(Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    });
    let mut fds = [PollFd::new(&*reader, PollFlags::IN)];
    if !matches!(poll(&mut fds, Some(&timeout)), Ok(n) if n > 0) {
        return false;
    }
    let mut buffer = [0; 4096];
    match reader.read(&mut buffer) {
        Ok(n) if n > 0 => {
            kept.extend_from_slice(&buffer[..n]);
            let excess = kept.len().saturating_sub(OUTPUT_KEPT);
            kept.drain(..excess);
            true
        }
        // End of file (every writer gone) or an error: nothing more to read.
        _ => false,
    }
}

/// Kills the process group of the helper running now, if any: the run's deadline has passed.
pub fn kill_running_helper() {
    let group = RUNNING.swap(0, Ordering::SeqCst);
    if let Some(group) = rustix::process::Pid::from_raw(group) {
        let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
    }
}

/// Like [`run`], but a non-zero exit is an error carrying the program's output.
pub fn run_ok(
    program: &Path,
    args: &[&OsStr],
    input: Option<&[u8]>,
    deadline: Duration,
) -> Result<Finished> {
    let finished = run(program, args, input, deadline)?;
    if !finished.status.success() {
        let mut msg = format!("`{}` {}", shown(program, args), describe(finished.status));
        if !finished.output.is_empty() {
            let _ = write!(msg, ": {}", finished.output);
        }
        bail!(msg);
    }
    Ok(finished)
}

/// The first of `candidates` that exists.
pub fn first_existing(candidates: &[&str]) -> Option<PathBuf> {
    candidates.iter().map(PathBuf::from).find(|p| p.exists())
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with {code}"),
        (None, Some(signal)) => format!("was killed by signal {signal}"),
        _ => "failed".to_owned(),
    }
}

fn shown(program: &Path, args: &[&OsStr]) -> String {
    let mut shown = program.display().to_string();
    for arg in args {
        shown.push(' ');
        shown.push_str(&arg.to_string_lossy());
    }
    shown
}

/// The last lines of a helper's output, on one line. Timestamps that begin its lines (php-fpm's
/// `[23-Nov-2026 19:19:59] `) are dropped: our log line has its own, and without them the same
/// failure reads the same twice, so a repeated error is recognised as one.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().map(without_timestamp).collect();
    let joined = lines
        .join(" ")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    let start = joined.len().saturating_sub(OUTPUT_TAIL);
    let start = (start..joined.len())
        .find(|&i| joined.is_char_boundary(i))
        .unwrap_or(joined.len());
    joined[start..].to_owned()
}

/// A line without its leading `[date time] `.
fn without_timestamp(line: &str) -> &str {
    let Some(rest) = line.strip_prefix('[') else {
        return line;
    };
    let Some((stamp, after)) = rest.split_once("] ") else {
        return line;
    };
    let looks_like_time = stamp.contains(':')
        && stamp.bytes().any(|b| b.is_ascii_digit())
        && stamp
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b" -:.".contains(&b));
    if looks_like_time { after } else { line }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, deadline: Duration) -> Result<Finished> {
        run(
            Path::new("/bin/sh"),
            &[OsStr::new("-c"), OsStr::new(script)],
            None,
            deadline,
        )
    }

    #[test]
    fn leading_timestamps_are_dropped() {
        let out = "[23-Nov-2026 19:19:59] ERROR: unable to parse\n[23-Nov-2026 19:20:00] ERROR: FPM initialization failed\n";
        assert_eq!(
            tail(out),
            "ERROR: unable to parse ERROR: FPM initialization failed"
        );
        // Only timestamps: other brackets stay.
        assert_eq!(tail("[pool www] ERROR: x\n"), "[pool www] ERROR: x");
    }

    #[test]
    fn output_and_status_are_kept() {
        let done = sh("echo out; echo err >&2; exit 3", Duration::from_secs(5)).unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert_eq!(done.output, "out err");
    }

    #[test]
    fn a_helper_past_its_deadline_is_killed_with_its_children() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("survived");
        let script = format!("(sleep 1; touch {}) & sleep 30", marker.display());
        let err = sh(&script, Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not finish within 0.2s"), "{err}");
        thread::sleep(Duration::from_millis(1300));
        assert!(!marker.exists(), "the helper's child outlived the deadline");
    }

    #[test]
    fn a_daemon_holding_the_output_does_not_block() {
        // The child leaves a grandchild holding stdout, as an init script's daemon does.
        let done = sh("sleep 3 & echo started", Duration::from_secs(2)).unwrap();
        assert_eq!(done.output, "started");
    }

    #[test]
    fn run_ok_reports_the_output_of_a_failure() {
        let err = run_ok(
            Path::new("/bin/sh"),
            &[OsStr::new("-c"), OsStr::new("echo no such pool; exit 1")],
            None,
            Duration::from_secs(5),
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "`/bin/sh -c echo no such pool; exit 1` exited with 1: no such pool"
        );
    }

    #[test]
    fn long_output_keeps_its_end() {
        let done = sh(
            "i=0; while [ $i -lt 3000 ]; do echo line $i; i=$((i+1)); done; echo last",
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(done.output.ends_with("line 2999 last"), "{}", done.output);
    }

    /// A sendmail that never reads the mail is killed at its bound all the same (#19): feeding it
    /// does not stall the wait.
    #[test]
    fn a_helper_that_never_reads_its_input_is_killed_at_the_deadline() {
        let input = vec![b'x'; 1 << 20];
        let err = run_ok(
            Path::new("/bin/sleep"),
            &[OsStr::new("30")],
            Some(&input),
            Duration::from_millis(200),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("did not finish within 0.2s"), "{err}");
    }

    #[test]
    fn input_is_fed_on_stdin() {
        let done = run(
            Path::new("/bin/cat"),
            &[],
            Some(b"hello"),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(done.output, "hello");
    }
}
