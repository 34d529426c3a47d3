//! Finding php-fpm's master and workers, and relaunching them: through the init system's `service`
//! command, or directly from the binary and config. Processes are identified by pid file, parent pid,
//! command line and executable, never by name, so other php-fpm versions on the host are untouched.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fmt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use rustix::process::{Pid, Signal};
use sysinfo::{ProcessRefreshKind, ProcessStatus, ProcessesToUpdate, System, UpdateKind};

use crate::config::Control;
use crate::spawn;

/// One process, as seen at a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    /// Process id.
    pub pid: u32,
    /// Parent process id.
    pub ppid: Option<u32>,
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
    /// Command line, as the process shows it (php-fpm rewrites its own).
    pub cmd: String,
    /// The executable.
    pub exe: Option<PathBuf>,
}

impl fmt::Display for Proc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:>7} {:>7} {:<10} {:>9.2}s {:>7} KiB  {}",
            self.pid,
            self.ppid.map_or_else(|| "-".to_owned(), |p| p.to_string()),
            self.state,
            self.cpu.as_secs_f64(),
            self.rss / 1024,
            self.cmd
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

/// The config path in a master's title `php-fpm: master process (CONF)`.
pub fn master_config(cmd: &str) -> Option<&str> {
    cmd.trim()
        .strip_prefix("php-fpm: master process (")?
        .strip_suffix(')')
}

fn is_worker(cmd: &str) -> bool {
    cmd.starts_with("php-fpm: pool ")
}

/// The service that runs a master with this config: Debian's `/etc/php/X.Y/fpm/php-fpm.conf` is
/// `phpX.Y-fpm`; elsewhere (FreeBSD, RHEL) the service is `php-fpm`.
pub fn service_of_config(config: &str) -> String {
    config
        .strip_prefix("/etc/php/")
        .and_then(|rest| rest.strip_suffix("/fpm/php-fpm.conf"))
        .filter(|version| is_version(version))
        .map_or_else(
            || "php-fpm".to_owned(),
            |version| format!("php{version}-fpm"),
        )
}

fn is_version(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// `phpX.Y-fpm` → `X.Y`.
fn debian_version(service: &str) -> Option<&str> {
    service
        .strip_prefix("php")?
        .strip_suffix("-fpm")
        .filter(|v| is_version(v))
}

/// Where init scripts and units live.
const INIT_DIRS: [&str; 3] = ["/etc/init.d", "/usr/local/etc/rc.d", "/etc/rc.d"];
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// Whether an init script or systemd unit of this name exists.
pub fn service_exists(name: &str) -> bool {
    INIT_DIRS
        .iter()
        .any(|dir| Path::new(dir).join(name).is_file())
        || UNIT_DIRS
            .iter()
            .any(|dir| Path::new(dir).join(format!("{name}.service")).is_file())
}

/// The php-fpm services installed on this host.
fn installed_services() -> BTreeSet<String> {
    let looks_like_fpm =
        |name: &str| (name.starts_with("php") && name.ends_with("-fpm")) || name == "php_fpm";
    let mut found = BTreeSet::new();
    for dir in INIT_DIRS.iter().chain(&UNIT_DIRS) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let name = name.strip_suffix(".service").unwrap_or(&name);
            if looks_like_fpm(name) {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

/// Picks the php-fpm service: the one whose master runs, else the only one installed.
pub fn detect_service(procs: &[Proc]) -> Result<String> {
    let running: BTreeSet<String> = procs
        .iter()
        .filter(|p| !p.gone)
        .filter_map(|p| master_config(&p.cmd))
        .map(service_of_config)
        .filter(|name| service_exists(name))
        .collect();
    let candidates = if running.is_empty() {
        installed_services()
    } else {
        running
    };
    let mut names = candidates.into_iter();
    match (names.next(), names.next()) {
        (Some(only), None) => Ok(only),
        (None, _) => bail!(
            "no php-fpm service found: name it with --service, or use --fpm-bin and --fpm-config"
        ),
        (Some(first), Some(second)) => {
            let rest: Vec<String> = names.collect();
            let all = [vec![first, second], rest].concat().join(", ");
            bail!("several php-fpm services ({all}): choose one with --service")
        }
    }
}

/// The `pid` setting of a php-fpm config's [global] section, when absolute.
fn pid_file_of_config(config: &Path) -> Option<PathBuf> {
    let text = std::fs::read_to_string(config).ok()?;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') && !line.eq_ignore_ascii_case("[global]") {
            break;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if key.trim() == "pid" {
            let value = value
                .split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .trim_matches('"');
            return Some(PathBuf::from(value)).filter(|p| p.is_absolute());
        }
    }
    None
}

fn read_pid(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
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

/// The php-fpm this run keeps: how to control it and how to recognise its processes.
#[derive(Debug, Clone)]
pub struct Instance {
    via: Via,
    /// The config its master shows in its title.
    config: Option<PathBuf>,
    pid_file: Option<PathBuf>,
    /// Its executable, to recognise workers orphaned by a dead master.
    binary: Option<PathBuf>,
}

/// What a relaunch will do first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No master runs: start one.
    Start,
    /// A master runs: restart it through the service (or TERM and start it directly).
    Restart,
    /// A master or worker is stopped, so it would ignore QUIT and TERM and the init script would
    /// wait out its whole schedule: SIGKILL the family and start afresh.
    KillStart,
}

impl Plan {
    /// The log's name for the steps.
    pub fn steps(self) -> &'static str {
        match self {
            Plan::Start => "start",
            Plan::Restart => "restart",
            Plan::KillStart => "kill+start",
        }
    }
}

impl Instance {
    /// Works out which php-fpm to keep from the configuration and the running processes.
    pub fn resolve(control: &Control, pid_file: Option<&Path>, procs: &[Proc]) -> Result<Instance> {
        let (via, config, binary) = match control {
            Control::Direct { bin, config } => (
                Via::Direct {
                    bin: bin.clone(),
                    config: config.clone(),
                    pid_file: pid_file.map(Path::to_owned),
                },
                Some(config.clone()),
                Some(bin.canonicalize().unwrap_or_else(|_| bin.clone())),
            ),
            Control::Service(name) => {
                let name = match name {
                    Some(name) => name.clone(),
                    None => detect_service(procs)?,
                };
                let master = procs.iter().find(|p| {
                    !p.gone && master_config(&p.cmd).is_some_and(|c| service_of_config(c) == name)
                });
                let config = master
                    .and_then(|p| master_config(&p.cmd))
                    .map(PathBuf::from)
                    .or_else(|| conventional_config(&name));
                let binary = master
                    .and_then(|p| p.exe.clone())
                    .or_else(|| conventional_binary(&name));
                (Via::Service(name), config, binary)
            }
        };
        let pid_file = pid_file
            .map(Path::to_owned)
            .or_else(|| config.as_deref().and_then(pid_file_of_config));
        Ok(Instance {
            via,
            config,
            pid_file,
            binary,
        })
    }

    /// The running master, if any: the pid file's process when it is a master of our config,
    /// else any master of our config.
    pub fn master<'a>(&self, procs: &'a [Proc]) -> Option<&'a Proc> {
        let ours = |p: &Proc, via_pid_file: bool| {
            !p.gone
                && match (master_config(&p.cmd), &self.config) {
                    (Some(conf), Some(config)) => Path::new(conf) == config,
                    (Some(_), None) => via_pid_file,
                    (None, _) => false,
                }
        };
        let by_pid_file = self
            .pid_file
            .as_deref()
            .and_then(read_pid)
            .and_then(|pid| procs.iter().find(|p| p.pid == pid))
            .filter(|p| ours(p, true));
        by_pid_file.or_else(|| procs.iter().find(|p| ours(p, false)))
    }

    /// The master, its children, and pool workers of our binary whose master is gone.
    pub fn family<'a>(&self, procs: &'a [Proc]) -> Vec<&'a Proc> {
        let master = self.master(procs).map(|m| m.pid);
        let masters: BTreeSet<u32> = procs
            .iter()
            .filter(|p| !p.gone && master_config(&p.cmd).is_some())
            .map(|p| p.pid)
            .collect();
        let orphan = |p: &Proc| {
            is_worker(&p.cmd)
                && self.binary.is_some()
                && p.exe == self.binary
                && !p.ppid.is_some_and(|pp| masters.contains(&pp))
        };
        let mut family: Vec<&Proc> = procs
            .iter()
            .filter(|p| !p.gone)
            .filter(|p| {
                Some(p.pid) == master || (master.is_some() && p.ppid == master) || orphan(p)
            })
            .collect();
        // The master first: once it is gone it can fork no more workers.
        family.sort_by_key(|p| (Some(p.pid) != master, p.pid));
        family
    }

    /// What a relaunch would do first, given the processes now.
    pub fn plan(&self, procs: &[Proc]) -> Plan {
        let family = self.family(procs);
        if family.iter().any(|p| p.stopped) {
            Plan::KillStart
        } else if self.master(procs).is_none() {
            // Orphaned workers hold the listen socket; a new master would fail with EADDRINUSE.
            if family.is_empty() {
                Plan::Start
            } else {
                Plan::KillStart
            }
        } else {
            Plan::Restart
        }
    }

    /// `php-fpm -t` with this instance's binary and config: `Err` carries php-fpm's own words.
    /// Unknown binary or config: nothing to test with, so `Ok`.
    pub fn test_config(&self, deadline: Duration) -> Result<()> {
        let (Some(bin), Some(config)) = (&self.binary, &self.config) else {
            return Ok(());
        };
        let args = [
            OsStr::new("-t"),
            OsStr::new("--fpm-config"),
            config.as_os_str(),
        ];
        spawn::run_ok(bin, &args, None, deadline).map(drop)
    }

    /// The log files this php-fpm writes: the global `error_log` and the pools' `slowlog`, from its
    /// config and the files it includes.
    pub fn log_files(&self) -> Vec<PathBuf> {
        let Some(config) = &self.config else {
            return Vec::new();
        };
        let mut files = vec![config.clone()];
        if let Ok(text) = std::fs::read_to_string(config) {
            files.extend(
                text.lines()
                    .filter_map(|l| setting(l, "include"))
                    .flat_map(|pattern| expand(&pattern)),
            );
        }
        let mut logs = Vec::new();
        for file in files {
            let Ok(text) = std::fs::read_to_string(&file) else {
                continue;
            };
            for line in text.lines() {
                for key in ["error_log", "slowlog"] {
                    if let Some(path) = setting(line, key).map(PathBuf::from)
                        && path.is_absolute()
                        && !logs.contains(&path)
                    {
                        logs.push(path);
                    }
                }
            }
        }
        logs
    }

    /// The master's workers and whether each is idle (blocked in accept(2) on the listen socket), as
    /// /proc shows them; `None` where /proc cannot tell.
    pub fn workers_idle(&self, procs: &[Proc]) -> Option<Vec<(u32, bool)>> {
        let master = self.master(procs)?.pid;
        procs
            .iter()
            .filter(|p| !p.gone && p.ppid == Some(master))
            .map(|p| in_accept(p.pid).map(|idle| (p.pid, idle)))
            .collect()
    }

    /// Stops the master gracefully: QUIT, and if it has not exited within `grace`, TERM, and if that
    /// does not end it within 5 s, SIGKILL of its whole family. Returns the signal that did it, or
    /// `None` when no master was running.
    pub fn stop_gracefully(&self, grace: Duration) -> Result<Option<&'static str>> {
        let procs = snapshot()?;
        let Some(master) = self.master(&procs).map(|m| m.pid) else {
            return Ok(None);
        };
        signal(master, Signal::QUIT)?;
        if self.wait_gone(grace).is_ok() {
            return Ok(Some("QUIT"));
        }
        let _ = signal(master, Signal::TERM);
        if self.wait_gone(Duration::from_secs(5)).is_ok() {
            return Ok(Some("TERM"));
        }
        self.kill_family(Duration::from_secs(5))?;
        Ok(Some("KILL"))
    }

    /// Starts the master (the init script's `start`, or the binary with its config) within `deadline`.
    pub fn start(&self, deadline: Duration) -> Result<()> {
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

    fn restart(&self, deadline: Duration) -> Result<()> {
        match &self.via {
            Via::Service(name) => service_command(name, "restart", deadline),
            Via::Direct { .. } => {
                // TERM, not QUIT: this php-fpm is failing, and QUIT would wait for hung requests.
                let procs = snapshot()?;
                if let Some(master) = self.master(&procs) {
                    signal(master.pid, Signal::TERM)?;
                }
                self.wait_gone(deadline)?;
                self.start(deadline)
            }
        }
    }

    /// Polls until no process of the family is left.
    fn wait_gone(&self, deadline: Duration) -> Result<()> {
        let until = Instant::now() + deadline;
        loop {
            let procs = snapshot()?;
            let left: Vec<u32> = self.family(&procs).iter().map(|p| p.pid).collect();
            if left.is_empty() {
                return Ok(());
            }
            if Instant::now() >= until {
                bail!(
                    "php-fpm processes {left:?} still run after {}s",
                    deadline.as_secs_f64()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILLs the master and every worker of the family until none is left.
    fn kill_family(&self, deadline: Duration) -> Result<()> {
        let until = Instant::now() + deadline;
        loop {
            let procs = snapshot()?;
            let family = self.family(&procs);
            if family.is_empty() {
                return Ok(());
            }
            if Instant::now() >= until {
                let left: Vec<u32> = family.iter().map(|p| p.pid).collect();
                bail!(
                    "php-fpm processes {left:?} survived SIGKILL for {}s",
                    deadline.as_secs_f64()
                );
            }
            for p in family {
                // It may have exited since the snapshot; the next round tells.
                let _ = signal(p.pid, Signal::KILL);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

fn conventional_config(service: &str) -> Option<PathBuf> {
    match debian_version(service) {
        Some(version) => Some(PathBuf::from(format!(
            "/etc/php/{version}/fpm/php-fpm.conf"
        ))),
        None => spawn::first_existing(&["/usr/local/etc/php-fpm.conf", "/etc/php-fpm.conf"]),
    }
}

fn conventional_binary(service: &str) -> Option<PathBuf> {
    match debian_version(service) {
        Some(version) => Some(PathBuf::from(format!("/usr/sbin/php-fpm{version}"))),
        None => spawn::first_existing(&["/usr/local/sbin/php-fpm", "/usr/sbin/php-fpm"]),
    }
}

/// The first `key = value` setting of a php-fpm config file.
pub fn config_setting(config: &Path, key: &str) -> Option<String> {
    std::fs::read_to_string(config)
        .ok()?
        .lines()
        .find_map(|line| setting(line, key))
}

/// `key = value` in a php-fpm config line, comments and quotes removed.
fn setting(line: &str, key: &str) -> Option<String> {
    let (k, v) = line.split_once('=')?;
    (k.trim() == key).then(|| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .trim_matches('"')
            .to_owned()
    })
}

/// An `include` pattern: a path, or `DIR/*SUFFIX` as php-fpm's configs use.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
    let Some(suffix) = name.strip_prefix('*') else {
        return vec![path.to_owned()];
    };
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    found.sort();
    found
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

/// SIGKILLs the given workers (php-fpm's master starts new ones in their place).
pub fn kill_workers(pids: &[u32]) -> Result<()> {
    pids.iter().try_for_each(|&pid| signal(pid, Signal::KILL))
}

fn signal(pid: u32, signal: Signal) -> Result<()> {
    let raw = i32::try_from(pid).context("pid out of range")?;
    let pid = Pid::from_raw(raw).context("pid 0")?;
    rustix::process::kill_process(pid, signal)
        .with_context(|| format!("cannot signal php-fpm process {pid}"))
}

/// `service NAME ACTION`, or `systemctl ACTION NAME` where there is no `service`.
pub fn service_command(name: &str, action: &str, deadline: Duration) -> Result<()> {
    let (name, action) = (OsStr::new(name), OsStr::new(action));
    if let Some(service) =
        spawn::first_existing(&["/usr/sbin/service", "/sbin/service", "/usr/bin/service"])
    {
        spawn::run_ok(&service, &[name, action], None, deadline).map(drop)
    } else if let Some(systemctl) = spawn::first_existing(&["/usr/bin/systemctl", "/bin/systemctl"])
    {
        spawn::run_ok(&systemctl, &[action, name], None, deadline).map(drop)
    } else {
        bail!("neither service nor systemctl found")
    }
}

/// What a relaunch did.
#[derive(Debug, Clone, Default)]
pub struct Relaunch {
    /// The steps taken, in order: `start`, `restart`, `kill`, `cgi-kill`, `cgi-start`.
    pub steps: Vec<&'static str>,
    /// Whether the heartbeat was healthy at the end.
    pub healthy: bool,
    /// What failed on the way.
    pub errors: Vec<String>,
}

impl Relaunch {
    fn step(&mut self, name: &'static str, result: Result<()>) -> bool {
        self.steps.push(name);
        match result {
            Ok(()) => true,
            Err(err) => {
                let error = format!("{name}: {err:#}");
                // A second start that fails like the first says so briefly; the line stays readable.
                if self.errors.contains(&error) {
                    self.errors
                        .push(format!("{name}: failed the same way again"));
                } else {
                    self.errors.push(error);
                }
                false
            }
        }
    }
}

/// Relaunches `instance` and checks the result with `verify`; when that does not bring the heartbeat
/// back, escalates once: SIGKILL the whole family, start, verify again. `deadline` bounds each step.
pub fn relaunch(
    instance: &Instance,
    procs: &[Proc],
    deadline: Duration,
    verify: &mut dyn FnMut() -> bool,
) -> Relaunch {
    let mut done = Relaunch::default();
    let first = match instance.plan(procs) {
        Plan::Start => done.step("start", instance.start(deadline)),
        Plan::Restart => done.step("restart", instance.restart(deadline)),
        Plan::KillStart => {
            done.step("kill", instance.kill_family(deadline));
            done.step("start", instance.start(deadline))
        }
    };
    done.healthy = first && verify();
    if !done.healthy {
        done.step("kill", instance.kill_family(deadline));
        done.healthy = done.step("start", instance.start(deadline)) && verify();
    }
    done
}

/// Whether an executable is a php-cgi binary (`php-cgi`, `php-cgi8.2`, `php5-cgi`).
fn is_php_cgi(exe: &Path) -> bool {
    exe.file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|name| name.starts_with("php") && name.contains("-cgi"))
}

/// PHP_CGI=1: SIGKILL every process whose executable is a php-cgi binary, then start the php-cgi
/// service (`service` given, else the first of php-cgi, php-fastcgi, spawn-fcgi that exists).
pub fn relaunch_cgi(service: Option<&str>, deadline: Duration, done: &mut Relaunch) {
    let killed = snapshot().and_then(|procs| {
        let cgi: Vec<u32> = procs
            .iter()
            .filter(|p| !p.gone && p.exe.as_deref().is_some_and(is_php_cgi))
            .map(|p| p.pid)
            .collect();
        for &pid in &cgi {
            signal(pid, Signal::KILL)?;
        }
        Ok(cgi.len())
    });
    if !matches!(killed, Ok(0)) {
        done.step("cgi-kill", killed.map(drop));
    }
    let service = service.map(str::to_owned).or_else(|| {
        ["php-cgi", "php-fastcgi", "spawn-fcgi"]
            .into_iter()
            .find(|name| service_exists(name))
            .map(str::to_owned)
    });
    if let Some(service) = service {
        done.step("cgi-start", service_command(&service, "start", deadline));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proc(pid: u32, ppid: u32, cmd: &str, exe: &str) -> Proc {
        Proc {
            pid,
            ppid: Some(ppid),
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
        Instance {
            via: Via::Direct {
                bin: bin.into(),
                config: config.into(),
                pid_file: None,
            },
            config: Some(config.into()),
            pid_file: None,
            binary: Some(bin.into()),
        }
    }

    #[test]
    fn master_titles() {
        assert_eq!(
            master_config("php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)"),
            Some("/etc/php/8.2/fpm/php-fpm.conf")
        );
        assert_eq!(master_config("php-fpm: pool www"), None);
        assert_eq!(master_config("/usr/sbin/php-fpm8.2 --daemonize"), None);
    }

    #[test]
    fn services_from_configs() {
        assert_eq!(
            service_of_config("/etc/php/8.2/fpm/php-fpm.conf"),
            "php8.2-fpm"
        );
        assert_eq!(
            service_of_config("/etc/php/7.4/fpm/php-fpm.conf"),
            "php7.4-fpm"
        );
        assert_eq!(service_of_config("/usr/local/etc/php-fpm.conf"), "php-fpm");
        assert_eq!(service_of_config("/etc/php/x/fpm/php-fpm.conf"), "php-fpm");
        assert_eq!(debian_version("php8.2-fpm"), Some("8.2"));
        assert_eq!(debian_version("php-fpm"), None);
    }

    #[test]
    fn family_is_this_master_its_workers_and_its_orphans_only() {
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
            // A worker of our binary left behind by an earlier, dead master.
            proc(30, 1, "php-fpm: pool www", ours),
            proc(40, 1, "nginx: master process", "/usr/sbin/nginx"),
        ];
        let instance = direct("/srv/a/fpm.conf", ours);
        assert_eq!(instance.master(&procs).map(|p| p.pid), Some(10));
        let family: Vec<u32> = instance.family(&procs).iter().map(|p| p.pid).collect();
        assert_eq!(family, [10, 11, 12, 30]);
    }

    #[test]
    fn plans() {
        let bin = "/srv/a/php-fpm";
        let master = proc(10, 1, "php-fpm: master process (/srv/a/fpm.conf)", bin);
        let worker = proc(11, 10, "php-fpm: pool www", bin);
        let instance = direct("/srv/a/fpm.conf", bin);

        assert_eq!(instance.plan(&[]), Plan::Start);
        assert_eq!(
            instance.plan(&[master.clone(), worker.clone()]),
            Plan::Restart
        );

        let mut stopped = worker.clone();
        stopped.stopped = true;
        assert_eq!(instance.plan(&[master.clone(), stopped]), Plan::KillStart);

        let mut zombie = master;
        zombie.gone = true;
        let orphan = proc(11, 1, "php-fpm: pool www", bin);
        assert_eq!(instance.plan(&[zombie, orphan]), Plan::KillStart);
    }

    #[test]
    fn pid_file_from_the_global_section_only() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("php-fpm.conf");
        std::fs::write(
            &conf,
            "[global]\n; pid = /nope\npid = /run/x.pid ; comment\n[www]\npid = /bad\n",
        )
        .unwrap();
        assert_eq!(pid_file_of_config(&conf), Some(PathBuf::from("/run/x.pid")));
        std::fs::write(&conf, "[www]\npid = /bad\n").unwrap();
        assert_eq!(pid_file_of_config(&conf), None);
    }

    #[test]
    fn php_cgi_binaries() {
        for yes in [
            "/usr/bin/php-cgi",
            "/usr/bin/php-cgi8.2",
            "/usr/bin/php5-cgi",
        ] {
            assert!(is_php_cgi(Path::new(yes)), "{yes}");
        }
        for no in ["/usr/sbin/php-fpm8.2", "/usr/bin/php", "/usr/bin/cgi-fcgi"] {
            assert!(!is_php_cgi(Path::new(no)), "{no}");
        }
    }
}
