//! Where events come from: the datagram socket systemd passes (`LISTEN_FDS`), one bound with
//! `--listen`, or standard input (`--stdin`, Apache's piped logs). A reader thread counts what
//! arrives into a [`Tally`], so that a run going on never makes nginx's datagrams queue up or
//! Apache's pipe fill, and nothing that arrives is kept but a count.

use std::fs;
use std::io::{self, BufRead, ErrorKind, Read};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use super::event::{self, MAX_EVENT};
use crate::fpm;
use crate::secure_file::{self, Existing};
use crate::stdout::errln;

/// What the reader has counted since the last run took its events.
#[derive(Debug, Clone, Copy)]
pub struct Counts {
    /// 502/504 events not yet answered by a run.
    pub events: u64,
    /// Datagrams or lines that were not events.
    pub ignored: u64,
    /// When anything last arrived (for `--idle-exit`).
    pub last_heard: Instant,
    /// The input ended (end of standard input) or failed.
    pub closed: bool,
    /// SIGTERM or SIGINT.
    pub stop: bool,
}

/// The counts, shared between the reader, the signal thread and the loop that runs checks.
#[derive(Debug)]
pub struct Tally {
    counts: Mutex<Counts>,
    changed: Condvar,
}

impl Tally {
    pub fn new() -> Arc<Tally> {
        Arc::new(Tally {
            counts: Mutex::new(Counts {
                events: 0,
                ignored: 0,
                last_heard: Instant::now(),
                closed: false,
                stop: false,
            }),
            changed: Condvar::new(),
        })
    }

    /// The counts, locked. A reader that panicked cannot have left them half-written: they are
    /// plain numbers, so a poisoned lock is taken as it is.
    pub fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits for a change, at most `timeout` (for ever without one).
    pub fn wait<'a>(
        &self,
        counts: MutexGuard<'a, Counts>,
        timeout: Option<Duration>,
    ) -> MutexGuard<'a, Counts> {
        match timeout {
            Some(timeout) => self
                .changed
                .wait_timeout(counts, timeout)
                .map_or_else(|poisoned| poisoned.into_inner().0, |(counts, _)| counts),
            None => self
                .changed
                .wait(counts)
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        }
    }

    fn update(&self, change: impl FnOnce(&mut Counts)) {
        change(&mut self.lock());
        self.changed.notify_all();
    }

    /// Counts one datagram or line.
    pub(super) fn heard(&self, bytes: &[u8]) {
        let event = event::parse(bytes);
        self.update(|c| {
            let now = Instant::now();
            c.last_heard = now;
            if event.is_some() {
                c.events += 1;
            } else {
                c.ignored += 1;
            }
        });
    }

    /// The input is over.
    pub(super) fn close(&self) {
        self.update(|c| c.closed = true);
    }

    /// SIGTERM or SIGINT came.
    pub fn stop(&self) {
        self.update(|c| c.stop = true);
    }
}

/// Where the events come from.
#[derive(Debug)]
pub enum Source {
    /// The socket systemd passed (socket activation).
    Activated(UnixDatagram),
    /// A socket bound with `--listen`; its file is removed when the hook ends.
    Listening(UnixDatagram, PathBuf),
    /// Standard input, one event per line.
    Stdin,
}

impl Source {
    /// The source the arguments name: `--stdin`, `--listen PATH` (bound here, 0660, owner root, group
    /// `group`), or the socket systemd passed. Errors are one line (exit 2).
    pub fn open(listen: Option<&Path>, group: &str, stdin: bool) -> Result<Source> {
        if stdin {
            return Ok(Source::Stdin);
        }
        if let Some(path) = listen {
            return listening(path, group).map(|socket| Source::Listening(socket, path.to_owned()));
        }
        activated().map(Source::Activated)
    }

    /// Whether `--idle-exit` applies: only a socket systemd passed, which it re-arms.
    pub fn is_activated(&self) -> bool {
        matches!(self, Source::Activated(_))
    }

    /// Starts the reader thread counting into `tally`.
    pub fn read_into(&self, tally: Arc<Tally>) -> Result<()> {
        let socket = match self {
            Source::Activated(socket) | Source::Listening(socket, _) => Some(socket.try_clone()?),
            Source::Stdin => None,
        };
        thread::Builder::new()
            .name("hook-reader".into())
            .spawn(move || {
                match socket {
                    Some(socket) => read_datagrams(&socket, &tally),
                    None => read_lines(&mut io::stdin().lock(), &tally),
                }
                tally.close();
            })
            .context("starting the hook's reader")?;
        Ok(())
    }

    /// Removes the socket file `--listen` made.
    pub fn remove(&self) {
        if let Source::Listening(_, path) = self
            && let Err(err) = fs::remove_file(path)
            && err.kind() != ErrorKind::NotFound
        {
            errln!("php-relaunch: removing '{}': {err}", path.display());
        }
    }
}

/// Counts datagrams until the socket fails. One longer than [`MAX_EVENT`] arrives cut to
/// `MAX_EVENT + 1` bytes, and so is ignored.
fn read_datagrams(socket: &UnixDatagram, tally: &Tally) {
    let mut buffer = vec![0; MAX_EVENT + 1];
    loop {
        match socket.recv(&mut buffer) {
            Ok(n) => tally.heard(&buffer[..n]),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => {
                errln!("php-relaunch: hook: reading the socket: {err}");
                return;
            }
        }
    }
}

/// Counts lines until the input ends. A line longer than [`MAX_EVENT`] is ignored without being
/// kept: what is beyond the limit is read and dropped up to its newline.
fn read_lines(input: &mut impl BufRead, tally: &Tally) {
    let mut line = Vec::with_capacity(256);
    loop {
        line.clear();
        let limit = u64::try_from(MAX_EVENT + 1).unwrap_or(u64::MAX);
        match input.by_ref().take(limit).read_until(b'\n', &mut line) {
            Ok(0) => return,
            Ok(_) if line.len() > MAX_EVENT && !line.ends_with(b"\n") => {
                tally.heard(&line);
                if !skip_line(input) {
                    return;
                }
            }
            Ok(_) => tally.heard(&line),
            Err(err) if err.kind() == ErrorKind::Interrupted => {}
            Err(err) => {
                errln!("php-relaunch: hook: reading standard input: {err}");
                return;
            }
        }
    }
}

/// Reads and drops up to the next newline; whether input goes on after it.
fn skip_line(input: &mut impl BufRead) -> bool {
    loop {
        let (done, used) = match input.fill_buf() {
            Ok([]) | Err(_) => return false,
            Ok(buffer) => match buffer.iter().position(|&b| b == b'\n') {
                Some(at) => (true, at + 1),
                None => (false, buffer.len()),
            },
        };
        input.consume(used);
        if done {
            return true;
        }
    }
}

/// The datagram socket systemd passed: `LISTEN_PID` must be this process (socket activation sets
/// it; a stray `LISTEN_FDS` in the environment is not taken), and fd 3 a unix datagram socket.
fn activated() -> Result<UnixDatagram> {
    let ours = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|pid| pid.parse::<u32>().ok())
        == Some(std::process::id());
    ensure!(
        ours && std::env::var_os("LISTEN_FDS").is_some(),
        "hook: no socket to read: run it under systemd's php-relaunch-hook.socket (or \
         systemd-socket-activate --datagram), or give --listen PATH or --stdin"
    );
    listenfd::ListenFd::from_env()
        .take_unix_datagram(0)
        .context("hook: the socket passed (fd 3)")?
        .context("hook: no socket was passed in fd 3")
}

/// Binds `--listen PATH`: 0660, owner root (us), group `group`, its directory made (0755) if missing.
/// The directory must be one only root can change (or sticky, #18): there the socket is bound under a
/// temporary name, given to the group and renamed into place, so no link swapped in by others is ever
/// followed. A stale socket file is replaced; a live one (another hook answers on it) is refused, as
/// is anything that is not a socket.
fn listening(path: &Path, group: &str) -> Result<UnixDatagram> {
    let gid = fpm::gid_of(group).with_context(|| format!("--socket-group: no group '{group}'"))?;
    if let Some(parent) = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty() && !p.exists())
    {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .with_context(|| format!("--listen: creating '{}'", parent.display()))?;
    }
    let place = secure_file::place(path, "--listen")?;
    match place.existing()? {
        Existing::Socket => ensure!(
            UnixDatagram::unbound()?.connect(path).is_err(),
            "--listen '{}' is held by a running php-relaunch hook: stop it first",
            path.display()
        ),
        Existing::Nothing => {}
        Existing::File | Existing::Other(_) => bail!(
            "--listen '{}' exists and is not a socket: not replacing it",
            path.display()
        ),
    }
    place.bind_datagram(gid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_counted_and_long_ones_ignored_without_being_kept() {
        let long = "x".repeat(3 * MAX_EVENT);
        let input = format!(
            "status=502 upstream=- uri=/\nstatus=200 uri=/\n{long}\nstatus=504 uri=/slow\nstatus=502"
        );
        let tally = Tally::new();
        read_lines(
            &mut io::BufReader::with_capacity(1024, input.as_bytes()),
            &tally,
        );
        let counts = *tally.lock();
        assert_eq!((counts.events, counts.ignored), (3, 2));
    }
}
