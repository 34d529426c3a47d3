//! Whether the php-fpm a healthy answer claims to come from runs (#18): an answer counts only while
//! a verified master of the instance runs. php-fpm's workers hold the pool's listening socket without
//! close-on-exec, so a program PHP starts with exec() keeps root's own socket and can answer on it
//! after php-fpm died: the socket's owner (root) and inode prove nothing then; a master does. This
//! runs on every healthy answer, so it reads the pid file's process from /proc alone; the whole
//! process table only when the pid file names no verified master (none configured, or stale).

use std::path::{Path, PathBuf};

use super::{Control, Instance, procs, read_pid, snapshot};

impl Instance {
    /// The unix socket files its pools listen on.
    pub fn pool_socket_paths(&self) -> Vec<PathBuf> {
        self.pools
            .iter()
            .filter_map(|pool| pool.listen.as_deref())
            .map(|listen| PathBuf::from(listen.trim()))
            .filter(|path| path.is_absolute())
            .collect()
    }

    /// The verified master of this php-fpm, if one runs.
    pub fn running_master(&self) -> Verified {
        if self.binary.is_none() {
            return Verified::Unknown;
        }
        let named = self
            .pid_file
            .as_deref()
            .and_then(read_pid)
            .and_then(procs::process);
        let master = match named.filter(|p| self.is_master(p)) {
            Some(named) => Some(named),
            None => snapshot()
                .ok()
                .and_then(|procs| self.master(&procs).cloned()),
        };
        match master {
            Some(p) if p.stopped => Verified::Stopped(p.pid),
            Some(p) => Verified::Runs(p.pid),
            None => Verified::None,
        }
    }
}

/// Who opened a listening socket that answered (`SO_PEERCRED`'s pid): a php-fpm master (root's, a
/// php-fpm binary only root could have put there), with the configuration its title names; another
/// php-fpm process; or something else (systemd holding an on-demand pool's socket, an activator).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Opener {
    /// A php-fpm master of ours, running this configuration.
    Master(PathBuf),
    /// One of our masters, stopped: what answers on its sockets is not php-fpm.
    Stopped,
    /// A php-fpm process that is not one of our masters.
    OtherFpm,
    /// Not php-fpm, or gone.
    Other,
}

/// Who process `pid` is, as the opener of a listening socket.
pub fn opener(pid: u32) -> Opener {
    let Some(p) = procs::process(pid) else {
        return Opener::Other;
    };
    let Some(exe) = p.exe.as_deref().filter(|exe| super::is_php_fpm(exe)) else {
        return Opener::Other;
    };
    let ours = p.uid == Some(super::trust::me()) && super::trust::binary(exe).is_ok();
    match super::master_config(&p.cmd) {
        Some(_) if ours && p.stopped => Opener::Stopped,
        Some(config) if ours => {
            let config = Path::new(config);
            Opener::Master(config.canonicalize().unwrap_or_else(|_| config.to_owned()))
        }
        _ => Opener::OtherFpm,
    }
}

/// The pid of a root php-fpm master (a trusted php-fpm binary) whose title names `config`, the
/// canonical path of a configuration nothing controls (`watch`'s alert-only pools), if one runs.
pub fn master_running(config: &Path) -> Option<u32> {
    let procs = snapshot().ok()?;
    procs
        .iter()
        .filter(|p| !p.gone && super::master_config(&p.cmd).is_some())
        .find(|p| opener(p.pid) == Opener::Master(config.to_owned()))
        .map(|p| p.pid)
}

/// Whether a verified master of a php-fpm runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// This one, by pid.
    Runs(u32),
    /// This one, SIGSTOPped (or traced): whatever answers on its sockets, a program its workers
    /// started holding one, say, is not php-fpm (#21).
    Stopped(u32),
    /// None runs.
    None,
    /// It cannot be told: no trusted binary to verify a master by.
    Unknown,
}

/// The php-fpm that `control` names (with its pid file), when it is known without scanning every
/// process: `None` for a service left to detect. Resolved once per answer judged, for both checks.
pub fn known(control: &Control, pid_file: Option<&Path>) -> Option<Instance> {
    if matches!(control, Control::Service(None)) {
        return None;
    }
    // No process table is needed to resolve a named instance (only a service to detect needs one).
    Instance::resolve(control, pid_file, &[]).ok()
}

/// Why a healthy answer is not php-fpm's: no verified master of `instance` runs, or it is stopped,
/// or another php-fpm opened the unix socket that answered (`listener`, `SO_PEERCRED`'s pid: a pool
/// user can put another master's socket at a path it owns). `None` when its running master opened
/// it (or systemd, an activator did), or it cannot be told (a service of unknown binary).
pub fn masterless(instance: &Instance, listener: Option<u32>) -> Option<String> {
    match instance.running_master() {
        Verified::Unknown => None,
        Verified::None => Some(no_master(instance)),
        Verified::Stopped(pid) => Some(stopped(pid)),
        Verified::Runs(master) => match listener {
            Some(pid) if pid != master && opener(pid) != Opener::Other => Some(format!(
                "the socket that answered was opened by pid {pid}, not by php-fpm's master (pid \
                 {master}): not believed"
            )),
            _ => None,
        },
    }
}

/// Why an answer on the sockets of a stopped master is not php-fpm's: its workers do not run either,
/// or do only what a stopped master can no longer replace; a program one of them started keeps the
/// listening socket it inherited and answers on it (#21).
pub fn stopped(master: u32) -> String {
    format!(
        "php-fpm's master (pid {master}) is stopped: what answers on its socket is not believed"
    )
}

/// What [`masterless`] says when no verified master of `instance` runs.
pub fn no_master(instance: &Instance) -> String {
    let which = match instance.config.as_ref() {
        Some(config) => format!(" of '{}'", config.path.display()),
        None => String::new(),
    };
    format!("the heartbeat answers, but no verified php-fpm master{which} runs: not believed")
}

/// Why the process that opened the unix listening socket that answered (`SO_PEERCRED`: who
/// called listen(2), php-fpm's master for its pools) cannot have answered for php-fpm: it is gone,
/// or stopped.
pub fn opener_not_running(pid: u32, path: &Path) -> Option<String> {
    match procs::state(pid) {
        // A master that re-executed itself with a new pid (a reload of a daemonizing php-fpm)
        // keeps the sockets its predecessor opened: php-fpm of root's (or ours) holding the
        // socket bound at the path is php-fpm.
        None | Some('Z' | 'X') if php_fpm_holds(path) => None,
        None | Some('Z' | 'X') => Some(format!(
            "the process that opened the socket that answered (pid {pid}) is gone: what answered \
             holds a socket it inherited, not php-fpm"
        )),
        Some('T' | 't') => Some(format!(
            "the process that opened the socket that answered (pid {pid}) is stopped: what \
             answered is not php-fpm"
        )),
        Some(_) => None,
    }
}

/// Whether a php-fpm process of root's (or ours) holds the listening socket bound at `path`.
fn php_fpm_holds(path: &Path) -> bool {
    super::sockets::holders(&super::sockets::listening(path))
        .into_iter()
        .any(|pid| {
            std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| super::is_php_fpm(&exe))
        })
}
