//! The process table, and signals that reach only the process that was judged (#13): each signal goes
//! through a pidfd opened first, and is sent only if /proc, read after that, still shows the same
//! user, parent and executable as the snapshot the decision was made on. A pid reused in between is
//! never hit; a process that has gone is skipped.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow};
use rustix::process::{Pid, Signal};
use sysinfo::{ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

use crate::escape::printable;

/// One process, as seen at a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: Option<u32>,
    /// Real user id.
    pub uid: Option<u32>,
    /// Scheduler state as sysinfo names it ("Sleeping", "Stopped", …).
    pub state: String,
    /// SIGSTOPped (or traced): ignores everything but SIGKILL and SIGCONT.
    pub stopped: bool,
    /// Exited (zombie or dead): as good as gone.
    pub gone: bool,
    /// User and system CPU time.
    pub cpu: Duration,
    /// Resident memory in bytes.
    pub rss: u64,
    /// Command line, as the process shows it (php-fpm rewrites its own; so can anybody).
    pub cmd: String,
    /// The executable (without the ` (deleted)` Linux adds once the file was replaced).
    pub exe: Option<PathBuf>,
}

impl fmt::Display for Proc {
    /// One line of a process table; the command line's control characters are escaped, so a title
    /// cannot forge lines in a mail or an evidence file.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>7} {:>7} {:>5} {:<10} {:>9.2}s {:>7} KiB  {}",
            self.pid,
            self.ppid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            self.uid.map_or_else(|| "-".to_owned(), |u| u.to_string()),
            self.state,
            self.cpu.as_secs_f64(),
            self.rss / 1024,
            printable(&self.cmd, &[])
        )
    }
}

/// All processes of the host, with what identifies php-fpm and what an alert shows.
pub fn snapshot() -> Result<Vec<Proc>> {
    let mut system = System::new().map_err(|e| anyhow!("cannot read the process table: {e}"))?;
    system.refresh_processes_specifics(
        ProcessesToUpdate::All,
        true,
        ProcessRefreshKind::nothing()
            .without_tasks()
            .with_cmd(UpdateKind::Always)
            .with_exe(UpdateKind::Always)
            .with_user(UpdateKind::Always)
            .with_memory()
            .with_cpu(),
    );
    Ok(system
        .processes()
        .values()
        .map(|p| {
            let status = p.status();
            Proc {
                pid: p.pid().as_u32(),
                ppid: p.parent().map(sysinfo::Pid::as_u32),
                uid: p.user_id().map(|uid| **uid),
                state: status.to_string(),
                stopped: matches!(status, ProcessStatus::Stop | ProcessStatus::Tracing),
                gone: matches!(status, ProcessStatus::Zombie | ProcessStatus::Dead),
                cpu: Duration::from_millis(p.accumulated_cpu_time()),
                rss: p.memory(),
                cmd: p
                    .cmd()
                    .iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" ")
                    .trim()
                    .to_owned(),
                exe: p.exe().map(Path::to_owned),
            }
        })
        .collect())
}

/// A process's scheduler state (`R`, `S`, `T`, `Z` …) from `/proc/PID/stat`: the field after the last
/// `)`, since the name before it is the process's to choose. `None` when it is gone.
pub fn state(pid: u32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.get(stat.rfind(')')? + 2..)?.chars().next()
}

/// One process read from /proc alone, without a scan of the process table: what verifies a master
/// named by its pid file. Its `uid` is set only when the real and effective uids agree (a set-uid
/// program run by another user is not that uid's process); time and memory are not read.
pub fn process(pid: u32) -> Option<Proc> {
    let who = identity(pid)?;
    let state = state(pid)?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmd = cmdline
        .split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(String::from_utf8_lossy)
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned();
    Some(Proc {
        pid,
        ppid: Some(who.ppid),
        uid: (who.uid == who.euid).then_some(who.uid),
        state: state.to_string(),
        stopped: matches!(state, 'T' | 't'),
        gone: matches!(state, 'Z' | 'X'),
        cpu: Duration::ZERO,
        rss: 0,
        cmd,
        exe: who.exe,
    })
}

/// What /proc says now of the facts a signal decision rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Identity {
    uid: u32,
    euid: u32,
    ppid: u32,
    exe: Option<PathBuf>,
}

/// Reads a process's identity from /proc (bounded reads of files the kernel writes).
fn identity(pid: u32) -> Option<Identity> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The name in parentheses may hold anything, spaces and ')' included: parse after the last ')'.
    let ppid = stat
        .get(stat.rfind(')')? + 2..)?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut uids = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .map(str::parse::<u32>);
    let (uid, euid) = (uids.next()?.ok()?, uids.next()?.ok()?);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .ok()
        .map(without_deleted);
    Some(Identity {
        uid,
        euid,
        ppid,
        exe,
    })
}

/// `/usr/sbin/php-fpm8.2 (deleted)` → `/usr/sbin/php-fpm8.2`: a master still running the binary that
/// a package upgrade replaced is still that binary's master.
fn without_deleted(exe: PathBuf) -> PathBuf {
    match exe.to_str().and_then(|e| e.strip_suffix(" (deleted)")) {
        Some(path) => PathBuf::from(path),
        None => exe,
    }
}

/// What became of a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Delivered to the process that was judged.
    Delivered,
    /// The process had already exited.
    Gone,
    /// The pid now names a process other than the one judged (reused, or changed user or parent):
    /// left alone.
    Changed,
}

/// Sends `signal` to `p` through a pidfd, if /proc still shows it as the snapshot did.
pub fn signal(p: &Proc, signal: Signal) -> Result<Sent> {
    let raw = i32::try_from(p.pid).map_err(|_| anyhow!("pid {} out of range", p.pid))?;
    let pid = Pid::from_raw(raw).ok_or_else(|| anyhow!("pid 0"))?;
    let pidfd = match open(pid) {
        Ok(fd) => fd,
        Err(rustix::io::Errno::SRCH) => return Ok(Sent::Gone),
        Err(err) => return Err(anyhow!("cannot open process {pid}: {err}")),
    };
    // Read after the pidfd is open: if this is still the process judged, the pidfd is that process.
    let Some(now) = identity(p.pid) else {
        return Ok(Sent::Gone);
    };
    let same = Some(now.uid) == p.uid
        && now.uid == now.euid
        && Some(now.ppid) == p.ppid
        && now.exe == p.exe;
    if !same {
        return Ok(Sent::Changed);
    }
    match send(&pidfd, pid, signal) {
        Ok(()) => Ok(Sent::Delivered),
        Err(rustix::io::Errno::SRCH) => Ok(Sent::Gone),
        Err(err) => Err(anyhow!("cannot signal php-fpm process {pid}: {err}")),
    }
}

#[cfg(target_os = "linux")]
fn open(pid: Pid) -> rustix::io::Result<rustix::fd::OwnedFd> {
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
}

#[cfg(target_os = "linux")]
fn send(pidfd: &rustix::fd::OwnedFd, _pid: Pid, signal: Signal) -> rustix::io::Result<()> {
    rustix::process::pidfd_send_signal(pidfd, signal)
}

/// Without pidfds (FreeBSD): the identity check just before kill(2) is what remains.
#[cfg(not(target_os = "linux"))]
fn open(_pid: Pid) -> rustix::io::Result<()> {
    Ok(())
}

#[cfg(not(target_os = "linux"))]
fn send(_: &(), pid: Pid, signal: Signal) -> rustix::io::Result<()> {
    rustix::process::kill_process(pid, signal)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn me_as_seen(child: &std::process::Child) -> Proc {
        snapshot()
            .unwrap()
            .into_iter()
            .find(|p| p.pid == child.id())
            .unwrap()
    }

    #[test]
    fn one_process_reads_as_the_table_shows_it() {
        let mut child = Command::new("/bin/sleep")
            .args(["30", "1"])
            .spawn()
            .unwrap();
        let seen = me_as_seen(&child);
        let read = process(child.id()).unwrap();
        assert_eq!(
            (read.ppid, read.uid, &read.cmd, &read.exe, read.stopped),
            (seen.ppid, seen.uid, &seen.cmd, &seen.exe, false)
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(process(child.id()).is_none());
    }

    #[test]
    fn signals_reach_the_process_judged_and_no_other() {
        let mut child = Command::new("/bin/sleep").arg("30").spawn().unwrap();
        let seen = me_as_seen(&child);
        assert_eq!(seen.exe.as_deref(), Some(Path::new("/usr/bin/sleep")));

        // The same pid, judged as another user's or another parent's: left alone. (Any uid but
        // ours: the tests run as root and as `nobody` alike.)
        let mut other = seen.clone();
        other.uid = seen.uid.map(|uid| uid ^ 1);
        assert_eq!(signal(&other, Signal::KILL).unwrap(), Sent::Changed);
        other = seen.clone();
        other.ppid = Some(1);
        assert_eq!(signal(&other, Signal::KILL).unwrap(), Sent::Changed);
        assert!(child.try_wait().unwrap().is_none(), "still running");

        assert_eq!(signal(&seen, Signal::KILL).unwrap(), Sent::Delivered);
        child.wait().unwrap();
        assert_eq!(signal(&seen, Signal::KILL).unwrap(), Sent::Gone);
    }

    #[test]
    fn command_lines_are_shown_escaped() {
        let p = Proc {
            pid: 7,
            ppid: Some(1),
            uid: Some(33),
            state: "Sleeping".into(),
            stopped: false,
            gone: false,
            cpu: Duration::ZERO,
            rss: 0,
            cmd: "php-fpm: pool www\nFrom: forged\u{1b}[2J".into(),
            exe: None,
        };
        let line = p.to_string();
        assert!(!line.contains('\n') && !line.contains('\u{1b}'), "{line}");
        assert!(
            line.ends_with(r"php-fpm: pool www\nFrom: forged\u{1b}[2J"),
            "{line}"
        );
    }

    #[test]
    fn replaced_binaries_are_still_themselves() {
        assert_eq!(
            without_deleted(PathBuf::from("/usr/sbin/php-fpm8.2 (deleted)")),
            PathBuf::from("/usr/sbin/php-fpm8.2")
        );
    }
}
