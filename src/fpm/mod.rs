//! Finding php-fpm's master and workers, and relaunching them: through the init system's `service`
//! command, or directly from the binary and config. A master is verified, never taken from its title
//! (#13): it must run as root (or as us), from the trusted php-fpm binary, with the expected config
//! (compared by device and inode, so a linked config path is the same config). Workers are its
//! children from that binary; orphans of a dead master are recognised by binary, pool name and pool
//! user. Every signal goes through a pidfd to the process that was judged.

mod alive;
mod answers;
mod conf;
mod procs;
mod relaunch;
mod service;
pub mod sockets;
mod trust;

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rustix::process::Signal;

pub use alive::{
    Opener, Verified, known, master_running, masterless, no_master, opener, opener_not_running,
    stopped,
};
pub use answers::answers_itself;
pub use conf::{PoolConf, read as read_config, root_config, setting_of as config_setting};
pub use procs::{Proc, Sent, snapshot};
pub use relaunch::{Levers, Plan, Relaunch, Step, relaunch, relaunch_cgi};
pub use service::{detect_service, service_command, service_exists, service_kind, take_notes};
pub use trust::{binary as trusted_binary, gid_of, root_file};

use service::{conventional_config, master_config, service_binary};

use crate::poll::poll_until;
use crate::secure_file::{self, Links};
use crate::spawn;

/// A pid file holds a number and a newline; anything longer is not a pid file.
const MAX_PID_FILE: usize = 32;

/// How often a wait for processes to go reads the process table again.
const EVERY: Duration = Duration::from_millis(50);

/// The pid in a pid file: a regular file, not followed through a link, opened without blocking and
/// read up to a few bytes (the pool user owns /run/php on Debian and may put anything there).
fn read_pid(path: &Path) -> Option<u32> {
    secure_file::read_text(path, Links::Refuse, MAX_PID_FILE)
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How this php-fpm is stopped and started.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Via {
    Service(String),
    Direct {
        bin: PathBuf,
        config: PathBuf,
        pid_file: Option<PathBuf>,
    },
}

/// A config file and its identity: a master showing another path to the same file is the same.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ConfigFile {
    path: PathBuf,
    /// Device and inode.
    id: Option<(u64, u64)>,
}

impl ConfigFile {
    fn new(path: PathBuf) -> ConfigFile {
        let id = file_id(&path);
        ConfigFile { path, id }
    }
}

fn file_id(path: &Path) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// A pool of the config, as its orphaned workers would show: title and user.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PoolId {
    title: String,
    uid: Option<u32>,
    /// Its `listen` setting, whose socket a worker of it holds.
    listen: Option<String>,
}

/// A pool's name and its workers, each with whether it is idle (blocked in accept(2)).
pub type PoolWorkers = (String, Vec<(u32, bool)>);

/// The php-fpm this run keeps: how to control it and how to recognise its processes.
#[derive(Debug, Clone)]
pub struct Instance {
    via: Via,
    /// The config its master must run.
    config: Option<ConfigFile>,
    pid_file: Option<PathBuf>,
    /// The trusted binary, canonical: only processes of it are ever taken for this php-fpm.
    binary: Option<PathBuf>,
    /// The user its master runs as: root, or the user running php-relaunch.
    owner: u32,
    /// Its pools, to recognise workers orphaned by a dead master.
    pools: Vec<PoolId>,
}

/// What became of the stuck workers a status page named.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StuckKill {
    /// Killed: verified workers of the verified master.
    pub killed: Vec<u32>,
    /// Left alone: not a worker of the master (or no master), or no longer the same process.
    pub refused: Vec<u32>,
}

/// What names one php-fpm instance among the runs that may act on it, for its lock: the pools
/// file's pool (its replicas are restarted together), else the master's config (the one master a
/// service or `--fpm-config` runs), else the service.
pub fn instance_key(control: &Control, pool: Option<&str>) -> String {
    match (pool, control) {
        (Some(pool), _) => pool_key(pool),
        (None, Control::Direct { config, .. }) => config_key(config),
        (None, Control::Service(Some(name))) => match conventional_config(name) {
            Some(config) => config_key(&config),
            None => format!("service:{name}"),
        },
        (None, Control::Service(None)) => "service:detected".to_owned(),
    }
}

/// The configuration a service's master runs, by its convention (`phpX.Y-fpm` →
/// `/etc/php/X.Y/fpm/php-fpm.conf`).
pub fn service_config(service: &str) -> Option<PathBuf> {
    conventional_config(service)
}

/// The instance key of the master that runs `config` (canonical, as `--fpm-config` is kept).
pub fn config_key(config: &Path) -> String {
    format!("fpm:{}", config.display())
}

/// The instance key of a pools file's pool.
pub fn pool_key(pool: &str) -> String {
    format!("pool:{pool}")
}

/// The unix socket a pool config listens on (`listen = /path`); `None` for a TCP address.
pub fn listen_socket(config: &Path) -> Option<PathBuf> {
    config_setting(config, "listen")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
}

/// Whether an executable is a php-fpm binary by its name (`php-fpm`, `php-fpm8.2`).
pub fn is_php_fpm(exe: &Path) -> bool {
    exe.file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|name| name.starts_with("php-fpm"))
}

/// The running master of `config` (or of the config a pid file's master shows), whichever trusted
/// php-fpm binary runs it, as an instance controlled directly; `None` when none runs. Only a
/// process of our user from a trusted binary named php-fpm… is looked at, so no title of another
/// user's process counts.
pub fn running(
    config: Option<&Path>,
    pid_file: Option<&Path>,
    procs: &[Proc],
) -> Result<Option<(Instance, PathBuf)>> {
    let named = pid_file.and_then(read_pid);
    for p in procs.iter().filter(|p| {
        !p.gone
            && p.uid == Some(trust::me())
            && pid_file.is_none_or(|_| Some(p.pid) == named)
            && master_config(&p.cmd).is_some()
    }) {
        let Some(exe) = p.exe.as_deref().filter(|exe| is_php_fpm(exe)) else {
            continue;
        };
        let Ok(bin) = trust::binary(exe) else {
            continue;
        };
        let config = match config {
            Some(config) => config.to_owned(),
            None => PathBuf::from(master_config(&p.cmd).unwrap_or_default()),
        };
        let instance = Instance::resolve(
            &Control::Direct {
                bin,
                config: config.clone(),
            },
            pid_file,
            procs,
        )?;
        if instance.master(procs).is_some() {
            return Ok(Some((instance, config)));
        }
    }
    Ok(None)
}

impl Instance {
    /// Works out which php-fpm to keep from the configuration and the running processes. The binary
    /// comes from `--fpm-bin` or the service's convention, never from a process, and must be trusted.
    pub fn resolve(control: &Control, pid_file: Option<&Path>, procs: &[Proc]) -> Result<Instance> {
        let (via, config, binary) = match control {
            Control::Direct { bin, config } => {
                let trusted = trust::binary(bin)
                    .with_context(|| format!("refusing php-fpm binary '{}'", bin.display()))?;
                (
                    Via::Direct {
                        bin: trusted.clone(),
                        config: config.clone(),
                        pid_file: pid_file.map(Path::to_owned),
                    },
                    Some(config.clone()),
                    Some(trusted),
                )
            }
            Control::Service(name) => {
                let name = match name {
                    Some(name) => name.clone(),
                    None => detect_service(procs)?,
                };
                let config = conventional_config(&name);
                let binary = service_binary(&name);
                (Via::Service(name), config, binary)
            }
        };
        let read = config.as_deref().map(conf::read).unwrap_or_default();
        let owner = trust::me();
        // A host's pools mostly share a few users: /etc/passwd is read once per user, not per pool.
        let mut uids: HashMap<&str, Option<u32>> = HashMap::new();
        let pools = read
            .pools
            .iter()
            .map(|pool| PoolId {
                title: format!("php-fpm: pool {}", pool.name),
                uid: match &pool.user {
                    Some(user) => *uids.entry(user).or_insert_with(|| trust::uid_of(user)),
                    // Without `user`, the pool runs as the master's user.
                    None => Some(owner),
                },
                listen: sockets::pool_listen(pool),
            })
            .collect();
        Ok(Instance {
            via,
            pid_file: pid_file.map(Path::to_owned).or(read.pid_file),
            config: config.map(ConfigFile::new),
            binary,
            owner,
            pools,
        })
    }

    /// The trusted php-fpm binary of this instance, when known.
    pub fn binary(&self) -> Option<&Path> {
        self.binary.as_deref()
    }

    /// Whether `p` is a master of this php-fpm: our user, our binary, our config.
    fn is_master(&self, p: &Proc) -> bool {
        let Some(binary) = &self.binary else {
            return false;
        };
        let Some(title_config) = master_config(&p.cmd) else {
            return false;
        };
        !p.gone
            && p.uid == Some(self.owner)
            && p.exe.as_ref() == Some(binary)
            && self.config.as_ref().is_none_or(|config| {
                Path::new(title_config) == config.path
                    || (config.id.is_some() && file_id(Path::new(title_config)) == config.id)
            })
    }

    /// The running master, if any: the pid file's process when it is a verified master (the pid file
    /// is a hint, never the proof), else any verified master.
    pub fn master<'a>(&self, procs: &'a [Proc]) -> Option<&'a Proc> {
        let by_pid_file = self
            .pid_file
            .as_deref()
            .and_then(read_pid)
            .and_then(|pid| procs.iter().find(|p| p.pid == pid))
            .filter(|p| self.is_master(p));
        by_pid_file.or_else(|| procs.iter().find(|p| self.is_master(p)))
    }

    /// The master's workers: its children, running our binary.
    fn workers<'a>(&self, procs: &'a [Proc], master: u32) -> Vec<&'a Proc> {
        procs
            .iter()
            .filter(|p| !p.gone && p.ppid == Some(master) && p.exe == self.binary)
            .collect()
    }

    /// A worker of ours whose master is gone: our binary, one of our pools' titles and users, no
    /// live process of our binary as its parent (which would make it another master's worker), and
    /// holding that pool's listening socket, as root's master bound it (#18: a title, a user and a
    /// binary are what the pool user can show too, with a php-fpm of its own).
    fn is_orphan(&self, p: &Proc, procs: &[Proc]) -> bool {
        let ours = |q: &Proc| !q.gone && self.binary.is_some() && q.exe == self.binary;
        ours(p)
            && !procs.iter().any(|q| Some(q.pid) == p.ppid && ours(q))
            && self.pools.iter().any(|pool| {
                p.cmd == pool.title
                    && pool.uid.is_some()
                    && p.uid == pool.uid
                    && pool.listen.as_deref().is_some_and(|listen| {
                        let inodes: Vec<u64> = sockets::pool_listeners(listen)
                            .into_iter()
                            .filter(crate::listener::Listener::trusted)
                            .map(|l| l.inode)
                            .collect();
                        sockets::holds(p.pid, &inodes)
                    })
            })
    }

    /// The master and its workers; or, while no verified master lives, this php-fpm's orphaned
    /// workers. An "orphan" beside a live master is never ours (#18): a new master could not have
    /// bound the pool's socket while one held it, and the pool user can make one (a php-fpm of our
    /// binary exec'd from PHP inherits the listening socket; its own master killed, it looks orphaned).
    pub fn family<'a>(&self, procs: &'a [Proc]) -> Vec<&'a Proc> {
        match self.master(procs) {
            // The master first: once it is gone it can fork no more workers.
            Some(master) => std::iter::once(master)
                .chain(self.workers(procs, master.pid))
                .collect(),
            None => procs.iter().filter(|p| self.is_orphan(p, procs)).collect(),
        }
    }

    /// What a relaunch would do first, given the processes now. Only the master decides (#18): a
    /// stopped master ignores QUIT and TERM, so it is killed; a stopped worker (the pool user can
    /// SIGSTOP its own workers) is continued before the restart, whose escalation ends it if the
    /// restart does not complete. With no master, orphans holding the socket are killed first, or a
    /// new master would fail with EADDRINUSE.
    pub fn plan(&self, procs: &[Proc]) -> Plan {
        match self.master(procs) {
            Some(master) if master.stopped => Plan::KillStart,
            Some(_) => Plan::Restart,
            None if self.family(procs).is_empty() => Plan::Start,
            None => Plan::KillStart,
        }
    }

    /// SIGCONTs the stopped processes of the verified family, so that a restart's QUIT or TERM
    /// reaches them. One that exited or changed since the snapshot is skipped.
    fn continue_stopped(&self, procs: &[Proc]) {
        for p in self.family(procs).into_iter().filter(|p| p.stopped) {
            let _ = procs::signal(p, Signal::CONT);
        }
    }

    /// `php-fpm -t` with this instance's trusted binary and config: `Err` carries php-fpm's own words.
    /// Unknown binary or config: nothing to test with, so `Ok`.
    pub fn test_config(&self, deadline: Duration) -> Result<()> {
        let (Some(bin), Some(config)) = (&self.binary, &self.config) else {
            return Ok(());
        };
        let args = [
            OsStr::new("-t"),
            OsStr::new("--fpm-config"),
            config.path.as_os_str(),
        ];
        spawn::run_ok(bin, &args, None, deadline).map(drop)
    }

    /// The log files this php-fpm writes: the global `error_log` and the pools' `slowlog`, from its
    /// config and the files it includes.
    pub fn log_files(&self) -> Vec<PathBuf> {
        self.config
            .as_ref()
            .map(|config| conf::read(&config.path).logs)
            .unwrap_or_default()
    }

    /// The master's workers and whether each is idle (blocked in accept(2) on the listen socket), as
    /// /proc shows them; `None` where /proc cannot tell.
    pub fn workers_idle(&self, procs: &[Proc]) -> Option<Vec<(u32, bool)>> {
        let master = self.master(procs)?.pid;
        self.workers(procs, master)
            .into_iter()
            .map(|p| in_accept(p.pid).map(|idle| (p.pid, idle)))
            .collect()
    }

    /// Each pool's workers of the master and whether each is idle, pool by pool: a worker is a pool's
    /// only by its title `php-fpm: pool NAME`, so another pool's (`NAME_status` of
    /// `pm.status_listen` included) never hides this one's saturation (#19). `None` where /proc
    /// cannot tell.
    pub fn pools_idle(&self, procs: &[Proc]) -> Option<Vec<PoolWorkers>> {
        let master = self.master(procs)?.pid;
        let workers = self.workers(procs, master);
        self.pools
            .iter()
            .map(|pool| {
                let name = pool.title.trim_start_matches("php-fpm: pool ").to_owned();
                let idle = workers
                    .iter()
                    .filter(|p| p.cmd.trim() == pool.title)
                    .map(|p| in_accept(p.pid).map(|idle| (p.pid, idle)))
                    .collect::<Option<Vec<_>>>()?;
                Some((name, idle))
            })
            .collect()
    }

    /// The name of this config's only pool, when it has exactly one.
    pub fn only_pool(&self) -> Option<String> {
        match self.pools.as_slice() {
            [pool] => Some(pool.title.trim_start_matches("php-fpm: pool ").to_owned()),
            _ => None,
        }
    }

    /// The pool of this config that listens at the unix socket `path` or on TCP `port`.
    pub fn pool_listening_at(&self, path: Option<&Path>, port: Option<u16>) -> Option<String> {
        self.pools.iter().find_map(|pool| {
            let listen = pool.listen.as_deref()?.trim();
            let at = match (path, port) {
                (Some(path), _) => Path::new(listen) == path,
                (None, Some(port)) => {
                    listen
                        .rsplit(':')
                        .next()
                        .and_then(|p| p.parse::<u16>().ok())
                        == Some(port)
                }
                (None, None) => false,
            };
            at.then(|| pool.title.trim_start_matches("php-fpm: pool ").to_owned())
        })
    }

    /// SIGKILLs those of `pids` that are workers of the verified master in a fresh snapshot (a
    /// status page is only a claim), and of `pool` when it is known (#21: stuck workers of one pool
    /// are killed without touching the others, whatever pool a page names); php-fpm's master starts
    /// new ones in their place.
    pub fn kill_stuck(&self, pids: &[u32], pool: Option<&str>) -> Result<StuckKill> {
        let procs = snapshot()?;
        let title = pool.map(|name| format!("php-fpm: pool {name}"));
        let workers: Vec<&Proc> = match self.master(&procs) {
            Some(master) => self
                .workers(&procs, master.pid)
                .into_iter()
                .filter(|w| title.as_ref().is_none_or(|t| w.cmd == *t))
                .collect(),
            None => Vec::new(),
        };
        let mut done = StuckKill::default();
        for &pid in pids {
            let sent = match workers.iter().find(|w| w.pid == pid) {
                Some(worker) => procs::signal(worker, Signal::KILL)?,
                None => Sent::Changed,
            };
            match sent {
                Sent::Delivered => done.killed.push(pid),
                Sent::Changed => done.refused.push(pid),
                Sent::Gone => {}
            }
        }
        Ok(done)
    }

    /// Stops the master gracefully: QUIT, and if it has not exited within `grace`, TERM, and if that
    /// does not end it within 5 s, SIGKILL of its whole family. Returns the signal that did it, or
    /// `None` when no master was running.
    pub fn stop_gracefully(&self, grace: Duration) -> Result<Option<&'static str>> {
        let procs = snapshot()?;
        let Some(master) = self.master(&procs) else {
            return Ok(None);
        };
        if procs::signal(master, Signal::QUIT)? == Sent::Delivered {
            if self.wait_gone(grace).is_ok() {
                return Ok(Some("QUIT"));
            }
            let _ = procs::signal(master, Signal::TERM);
            if self.wait_gone(Duration::from_secs(5)).is_ok() {
                return Ok(Some("TERM"));
            }
        }
        self.kill_family(Duration::from_secs(5))?;
        Ok(Some("KILL"))
    }

    /// Starts the master (the init script's `start`, or the binary with its config) within `deadline`.
    pub fn start(&self, deadline: Duration) -> Result<()> {
        self.clear_held_sockets();
        match &self.via {
            Via::Service(name) => service_command(name, "start", deadline),
            Via::Direct {
                bin,
                config,
                pid_file,
            } => {
                let mut args = vec![
                    OsStr::new("--daemonize"),
                    OsStr::new("--fpm-config"),
                    config.as_os_str(),
                ];
                // An explicit --pid-file is where the master must write its pid, whatever the config says.
                if let Some(pid_file) = pid_file {
                    args.extend([OsStr::new("--pid"), pid_file.as_os_str()]);
                }
                spawn::run_ok(bin, &args, None, deadline).map(drop)
            }
        }
    }

    /// Before a start: a pool's unix socket that a root-made listener still answers on while no
    /// process of root's (php-fpm, or systemd holding it for activation) holds it is a socket a
    /// program PHP started inherited from a dead master's worker (php-fpm's workers keep it without
    /// close-on-exec). php-fpm would refuse to start over it ("another FPM instance seems to already
    /// listen"), so the path is unlinked and php-fpm binds a fresh one (#18); the program keeps a
    /// socket nobody can reach. A socket activated by systemd, or a TCP port, is left alone.
    fn clear_held_sockets(&self) {
        for pool in &self.pools {
            let Some(path) = pool.listen.as_deref().map(str::trim).map(Path::new) else {
                continue;
            };
            if !path.is_absolute() || !sockets::is_socket_file(path) {
                continue;
            }
            let inodes = sockets::listening(path);
            if !inodes.is_empty() && sockets::holders(&inodes).is_empty() {
                // unlink(2) never follows a link: whatever stands at the path, only it goes.
                let _ = std::fs::remove_file(path);
            }
        }
    }

    fn restart(&self, deadline: Duration) -> Result<()> {
        // Best effort: a process table that cannot be read fails the restart below, not here.
        if let Ok(procs) = snapshot() {
            self.continue_stopped(&procs);
        }
        match &self.via {
            Via::Service(name) => service_command(name, "restart", deadline),
            Via::Direct { .. } => {
                // TERM, not QUIT: this php-fpm is failing, and QUIT would wait for hung requests.
                let procs = snapshot()?;
                if let Some(master) = self.master(&procs) {
                    procs::signal(master, Signal::TERM)?;
                }
                self.wait_gone(deadline)?;
                self.start(deadline)
            }
        }
    }

    /// Takes one step of a relaunch on this php-fpm, each bounded by `deadline`.
    pub fn take(&self, step: Step, deadline: Duration) -> Result<()> {
        match step {
            Step::Start => self.start(deadline),
            Step::Restart => self.restart(deadline),
            Step::Kill => self.kill_family(deadline),
            Step::CgiKill | Step::CgiStart => bail!("{} is not a step of php-fpm", step.as_str()),
        }
    }

    /// Polls until no process of the family is left.
    fn wait_gone(&self, deadline: Duration) -> Result<()> {
        poll_until(Instant::now() + deadline, EVERY, || {
            let procs = snapshot()?;
            let left: Vec<u32> = self.family(&procs).iter().map(|p| p.pid).collect();
            ensure!(
                left.is_empty(),
                "php-fpm processes {left:?} still run after {}s",
                deadline.as_secs_f64()
            );
            Ok(())
        })
    }

    /// SIGKILLs the master and every worker of the family until none is left.
    fn kill_family(&self, deadline: Duration) -> Result<()> {
        poll_until(Instant::now() + deadline, EVERY, || {
            let procs = snapshot()?;
            let family = self.family(&procs);
            for p in &family {
                // One that exited or changed since the snapshot is skipped; the next round tells.
                let _ = procs::signal(p, Signal::KILL);
            }
            let left: Vec<u32> = family.iter().map(|p| p.pid).collect();
            ensure!(
                left.is_empty(),
                "php-fpm processes {left:?} survived SIGKILL for {}s",
                deadline.as_secs_f64()
            );
            Ok(())
        })
    }
}

/// Whether a process is blocked in accept(2)/accept4(2), from /proc/PID/syscall's first field.
fn in_accept(pid: u32) -> Option<bool> {
    #[cfg(target_arch = "x86_64")]
    const ACCEPT: [&str; 2] = ["43", "288"];
    #[cfg(target_arch = "aarch64")]
    const ACCEPT: [&str; 2] = ["202", "242"];
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    const ACCEPT: [&str; 0] = [];
    if ACCEPT.is_empty() {
        return None;
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    let number = text.split_whitespace().next()?;
    Some(ACCEPT.contains(&number))
}

/// How php-fpm is stopped and started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// Through the init system's `service` command; `None` means detect the service when needed.
    Service(Option<String>),
    /// Directly: start `bin --daemonize --fpm-config config`, signal the master by pid.
    Direct {
        /// The php-fpm binary.
        bin: PathBuf,
        /// Its configuration, as an absolute path (the master shows it in its command line).
        config: PathBuf,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROOT: u32 = 0;
    const WWW: u32 = 33;
    const NOBODY: u32 = 65534;

    /// A process as the snapshot shows it; masters run as root, workers as www-data.
    fn proc(pid: u32, ppid: u32, cmd: &str, exe: &str) -> Proc {
        let uid = if master_config(cmd).is_some() {
            ROOT
        } else {
            WWW
        };
        Proc {
            pid,
            ppid: Some(ppid),
            uid: Some(uid),
            state: "Sleeping".into(),
            stopped: false,
            gone: false,
            cpu: Duration::ZERO,
            rss: 0,
            cmd: cmd.into(),
            exe: Some(exe.into()),
        }
    }

    fn direct(config: &str, bin: &str) -> Instance {
        direct_listening(config, bin, None)
    }

    /// With the pool listening on `listen`.
    fn direct_listening(config: &str, bin: &str, listen: Option<String>) -> Instance {
        Instance {
            via: Via::Direct {
                bin: bin.into(),
                config: config.into(),
                pid_file: None,
            },
            config: Some(ConfigFile::new(config.into())),
            pid_file: None,
            binary: Some(bin.into()),
            owner: ROOT,
            pools: vec![PoolId {
                title: "php-fpm: pool www".into(),
                uid: Some(WWW),
                listen,
            }],
        }
    }

    /// A pool socket this test process holds (root's, or ours), as an orphaned worker holds its
    /// pool's; and this process's pid, to play that orphan.
    fn held_socket() -> (std::net::TcpListener, String, u32) {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let listen = socket.local_addr().unwrap().to_string();
        (socket, listen, std::process::id())
    }

    #[test]
    fn family_is_this_master_its_workers_and_its_orphans_only() {
        let (_socket, listen, me) = held_socket();
        let ours = "/srv/a/php-fpm";
        let theirs = "/usr/sbin/php-fpm7.4";
        let procs = vec![
            proc(10, 1, "php-fpm: master process (/srv/a/fpm.conf)", ours),
            proc(11, 10, "php-fpm: pool www", ours),
            proc(12, 10, "php-fpm: pool www", ours),
            // Another version's master and worker: never touched.
            proc(
                20,
                1,
                "php-fpm: master process (/etc/php/7.4/fpm/php-fpm.conf)",
                theirs,
            ),
            proc(21, 20, "php-fpm: pool www", theirs),
            // A worker of our binary left behind by an earlier, dead master, holding the pool's
            // socket; and one with the same title and user that does not hold it (#18).
            proc(me, 1, "php-fpm: pool www", ours),
            proc(31, 1, "php-fpm: pool www", ours),
            proc(40, 1, "nginx: master process", "/usr/sbin/nginx"),
        ];
        let instance = direct_listening("/srv/a/fpm.conf", ours, Some(listen));
        assert_eq!(instance.master(&procs).map(|p| p.pid), Some(10));
        let family: Vec<u32> = instance.family(&procs).iter().map(|p| p.pid).collect();
        // Beside a live master, an orphan is not ours (the pool user can make one, #18).
        assert_eq!(family, [10, 11, 12]);
        let masterless: Vec<Proc> = procs.into_iter().filter(|p| p.pid != 10).collect();
        let family: Vec<u32> = instance.family(&masterless).iter().map(|p| p.pid).collect();
        assert_eq!(family, [me], "its workers have a live parent of our binary");
    }

    #[test]
    fn plans() {
        let (_socket, listen, me) = held_socket();
        let bin = "/srv/a/php-fpm";
        let master = proc(10, 1, "php-fpm: master process (/srv/a/fpm.conf)", bin);
        let worker = proc(11, 10, "php-fpm: pool www", bin);
        let instance = direct_listening("/srv/a/fpm.conf", bin, Some(listen));

        assert_eq!(instance.plan(&[]), Plan::Start);
        assert_eq!(
            instance.plan(&[master.clone(), worker.clone()]),
            Plan::Restart
        );

        // A stopped worker (the pool user's to stop) leaves the restart graceful; a stopped master
        // would ignore it.
        let mut stopped = worker.clone();
        stopped.stopped = true;
        assert_eq!(
            instance.plan(&[master.clone(), stopped.clone()]),
            Plan::Restart
        );
        let mut frozen = master.clone();
        frozen.stopped = true;
        assert_eq!(instance.plan(&[frozen, worker.clone()]), Plan::KillStart);

        // An orphan, stopped, holding the pool's socket (an impostor of the pool user's, exec'd from
        // PHP with the socket inherited) beside a live master decides nothing (#18).
        let mut impostor = proc(me, 1, "php-fpm: pool www", bin);
        impostor.stopped = true;
        assert_eq!(
            instance.plan(&[master.clone(), worker.clone(), impostor.clone()]),
            Plan::Restart
        );
        let family: Vec<u32> = instance
            .family(&[master.clone(), worker.clone(), impostor])
            .iter()
            .map(|p| p.pid)
            .collect();
        assert_eq!(family, [10, 11], "never signalled with the family");

        let mut zombie = master;
        zombie.gone = true;
        let orphan = proc(me, 1, "php-fpm: pool www", bin);
        assert_eq!(instance.plan(&[zombie.clone(), orphan]), Plan::KillStart);
        // One in name only (not holding the pool's socket) is not ours: nothing to kill.
        let mut stopped = proc(12, 1, "php-fpm: pool www", bin);
        stopped.stopped = true;
        assert_eq!(instance.plan(&[zombie, stopped]), Plan::Start);
    }

    #[test]
    fn titles_prove_nothing() {
        let ours = "/srv/a/php-fpm";
        let title = "php-fpm: master process (/srv/a/fpm.conf)";
        let instance = direct("/srv/a/fpm.conf", ours);
        let mut by_nobody = proc(10, 1, title, ours);
        by_nobody.uid = Some(NOBODY);
        // A root process of another program with the title, and one of ours for another config.
        let other_exe = proc(11, 1, title, "/usr/bin/sleep");
        let other_config = proc(12, 1, "php-fpm: master process (/srv/b/fpm.conf)", ours);
        // Its "workers": a child of the fake, and a worker-titled process of another user.
        let child = proc(13, 10, "php-fpm: pool www", ours);
        let mut foreign = proc(14, 1, "php-fpm: pool www", ours);
        foreign.uid = Some(NOBODY);
        let procs = [by_nobody, other_exe, other_config, child.clone(), foreign];
        assert_eq!(instance.master(&procs), None);
        // The fake's child has a live parent of our binary: nobody's orphan. Nothing here is ours.
        assert!(instance.family(&procs).is_empty());
        assert_eq!(instance.plan(&procs), Plan::Start);
    }

    #[test]
    fn an_orphan_of_another_pool_or_with_a_live_master_is_not_ours() {
        let ours = "/srv/a/php-fpm";
        let instance = direct("/srv/a/fpm.conf", ours);
        let other_master = proc(20, 1, "php-fpm: master process (/srv/b/fpm.conf)", ours);
        let its_worker = proc(21, 20, "php-fpm: pool www", ours);
        let other_pool = proc(22, 1, "php-fpm: pool api", ours);
        let procs = [other_master, its_worker, other_pool];
        assert!(instance.family(&procs).is_empty());
    }
}
