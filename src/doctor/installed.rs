//! The php-relaunch lines already installed, and whether their targets answer (#18, #19). Lines are
//! read only from root's own files (root's crontab, /etc/crontab, /etc/cron.d, /etc/systemd/system),
//! and only files that root owns and no one else can write: a URL someone else wrote is never
//! fetched by root. A target is probed only where a connection wakes nothing: an HTTP target or a
//! socket held by something other than a running php-fpm (a socket-activated pool asleep, or not
//! php-fpm at all) is named, not probed.

use std::fs::{self, File};
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::fpm::{self, sockets};
use crate::probe::fastcgi::Address;
use crate::probe::{self, Target};
use crate::secure_file::{self, Links};

/// How long a ping of an installed line's target may take.
const PING: Duration = Duration::from_secs(2);

/// Root's own crontab (Debian's and FreeBSD's spool) and the system crontab. Other users'
/// crontabs are never read: their lines are theirs to run, not root's to fetch.
const FILES: [&str; 3] = [
    "/var/spool/cron/crontabs/root",
    "/var/cron/tabs/root",
    "/etc/crontab",
];

/// Directories of root's cron lines and local units.
const DIRS: [&str; 2] = ["/etc/cron.d", "/etc/systemd/system"];

/// The most of one file read.
const MAX_FILE: u64 = 1 << 20;

/// The most of /proc/net/tcp{,6} read.
const MAX_TABLE: u64 = 64 << 20;

/// What the installed lines say: lines whose target fails (problems), and what was not read or not
/// probed, and why (notes).
#[derive(Debug, Default)]
pub struct Installed {
    pub problems: Vec<String>,
    pub notes: Vec<String>,
}

/// Reads root's files for php-relaunch lines and probes the targets it may.
pub fn look() -> Installed {
    let mut files: Vec<PathBuf> = FILES.iter().map(PathBuf::from).collect();
    for dir in DIRS {
        let mut entries: Vec<PathBuf> = fs::read_dir(dir)
            .map(|d| d.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        entries.sort();
        files.extend(entries);
    }
    let mut found = Installed::default();
    for file in files {
        let text = match roots_own(&file) {
            Ok(Some(text)) => text,
            Ok(None) => continue,
            Err(why) => {
                found
                    .notes
                    .push(format!("{}: not read: {why}", file.display()));
                continue;
            }
        };
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            let Some(target) = target(line) else {
                continue;
            };
            if let Some(why) = wakes(&target) {
                found.notes.push(format!(
                    "{}: php-relaunch watches {target}: not probed: {why}",
                    file.display()
                ));
                continue;
            }
            let answer = probe::probe(&target, PING, None).answer;
            if !answer.is_healthy() {
                found.problems.push(format!(
                    "{}: php-relaunch watches {target}, which answers {answer}{}",
                    file.display(),
                    answer
                        .detail()
                        .map(|d| format!(" ({d})"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    found
}

/// The text of `path` if it is a regular file that root owns and only root can write, checked on
/// the descriptor opened without following a link. `None` for what is absent, a link, a directory
/// or not a regular file; an error (told as a note) for a file of someone else's or writable by
/// others.
fn roots_own(path: &Path) -> Result<Option<String>, String> {
    let Ok(file) = secure_file::open_regular(path, Links::Refuse) else {
        return Ok(None);
    };
    let meta = file.metadata().map_err(|err| err.to_string())?;
    if meta.uid() != 0 {
        return Err(format!("owned by uid {}, not root", meta.uid()));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!(
            "writable by others than root (mode {:o})",
            meta.mode() & 0o7777
        ));
    }
    read_bounded(file).map(Some)
}

fn read_bounded(file: File) -> Result<String, String> {
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(|err| err.to_string())?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(format!("larger than {} KiB", MAX_FILE / 1024));
    }
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The target of a php-relaunch line (a watching run's first argument), if the line is one.
pub fn target(line: &str) -> Option<Target> {
    let at = line.find("php-relaunch ")?;
    let word = line[at + "php-relaunch ".len()..]
        .split_whitespace()
        .next()?
        .trim_matches(['\'', '"']);
    word.parse().ok()
}

/// Why connecting to `target` could wake a pool (or reach one not on this host), if it could. A
/// socket nothing holds is refused and wakes nothing; one a root php-fpm holds is awake already.
fn wakes(target: &Target) -> Option<String> {
    let inodes = match target {
        Target::Http(_) => {
            return Some(
                "an HTTP request goes through the web server and could start a socket-activated \
                 pool (`php-relaunch check URL 2` asks it)"
                    .to_owned(),
            );
        }
        Target::FastCgi {
            address: Address::Unix(path),
            ..
        } => sockets::listening(path),
        Target::FastCgi {
            address: Address::Tcp { host, port },
            ..
        } => {
            if !is_loopback(host) {
                return Some("it is not on this host".to_owned());
            }
            tcp_listening(*port)
        }
    };
    let holders = sockets::holders(&inodes);
    if holders.is_empty() || holders.iter().any(|&pid| is_root_php_fpm(pid)) {
        return None;
    }
    let named: Vec<String> = holders
        .iter()
        .take(3)
        .map(|pid| {
            let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            format!("pid {pid} ({})", comm.trim_end())
        })
        .collect();
    Some(format!(
        "its pool is asleep (socket-activated) or not php-fpm's: the socket is held by {} and \
         by no php-fpm master, so a connection could start one",
        named.join(", ")
    ))
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A php-fpm master: root's process running a php-fpm binary.
fn is_root_php_fpm(pid: u32) -> bool {
    fs::metadata(format!("/proc/{pid}")).is_ok_and(|m| m.uid() == 0)
        && fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| fpm::is_php_fpm(&exe))
}

/// The inodes of the TCP sockets listening on `port` (any address), from /proc/net/tcp{,6}.
fn tcp_listening(port: u16) -> Vec<u64> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = secure_file::read_text(
            Path::new(table),
            Links::Follow,
            usize::try_from(MAX_TABLE).unwrap_or(usize::MAX),
        ) else {
            continue;
        };
        inodes.extend(
            text.lines()
                .skip(1)
                .filter_map(|line| listening_on(line, port)),
        );
    }
    inodes
}

/// The inode of a /proc/net/tcp line's socket if it listens on `port`:
/// `sl local_address rem_address st … uid timeout inode`, LISTEN being state 0A.
fn listening_on(line: &str, port: u16) -> Option<u64> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (_, local_port) = fields.get(1)?.rsplit_once(':')?;
    (u16::from_str_radix(local_port, 16).ok()? == port && *fields.get(3)? == "0A")
        .then(|| fields.get(9)?.parse().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn installed_lines_name_their_target() {
        let line =
            "* * * * * root /usr/sbin/php-relaunch 'unix:///run/php/x.sock;/ping' 2 '' >/dev/null";
        assert_eq!(
            target(line).map(|t| t.to_string()).as_deref(),
            Some("unix:///run/php/x.sock;/ping")
        );
        assert!(target("ExecStart=/usr/sbin/php-relaunch report --since 7d").is_none());
    }

    #[test]
    fn tcp_table_lines_give_listeners_of_the_port() {
        let listen = "   0: 0100007F:2328 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0";
        let connected = "   1: 0100007F:2328 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1";
        assert_eq!(listening_on(listen, 9000), Some(4242));
        assert_eq!(listening_on(listen, 9001), None);
        assert_eq!(listening_on(connected, 9000), None);
    }

    #[test]
    fn http_and_other_hosts_are_never_probed() {
        for target in [
            "http://127.0.0.1/php-heartbeat.php",
            "fcgi://192.0.2.1:9000/ping",
        ] {
            assert!(wakes(&target.parse().unwrap()).is_some(), "{target}");
        }
        assert!(is_loopback("127.0.0.1") && is_loopback("[::1]") && is_loopback("localhost"));
    }
}
