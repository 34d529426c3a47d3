//! `php-relaunch idle-stop`: for cron, stops an on-demand pool's master gracefully once the pool has
//! been idle without a break for `--idle-for`, so its memory is freed until the next request starts
//! it again through its socket. Refuses to stop a pool nothing would start again.

use std::path::Path;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use chrono::{DateTime, Local};

use crate::cli::IdleStopArgs;
use crate::exit::Exit;
use crate::fpm::{self, Instance, Proc, sockets};
use crate::health;
use crate::journal::Journal;
use crate::load;
use crate::lock;
use crate::policy;
use crate::report::{Action, Report, RunState};
use crate::state;
use crate::stdout::errln;

/// How long a status page may take.
const STATUS_TIMEOUT: Duration = Duration::from_secs(2);

pub fn command(args: &IdleStopArgs) -> Result<Exit> {
    let lock_path = args.lock.clone().unwrap_or_else(|| {
        let key = match &args.fpm_config {
            Some(config) => {
                fpm::config_key(&config.canonicalize().unwrap_or_else(|_| config.clone()))
            }
            None => format!(
                "pid-file:{}",
                args.pid_file.as_deref().unwrap_or(Path::new("-")).display()
            ),
        };
        lock::instance_path(&key)
    });
    let mut lock = match lock::try_acquire(&lock_path)? {
        Ok(lock) => lock,
        Err(holder) => {
            errln!("php-relaunch: {}", lock::busy_message(&lock_path, &holder));
            return Ok(Exit::Busy);
        }
    };
    lock.say_holder(&lock::holder("idle-stop"));
    // The log is opened before anything is done: exit 2 promises that nothing was (#19).
    let mut journal = Journal::open(&args.log)?;
    let named = args
        .fpm_config
        .as_deref()
        .or(args.pid_file.as_deref())
        .unwrap_or(Path::new("-"));
    let state_path = args
        .state
        .clone()
        .unwrap_or_else(|| state::default_path(&format!("idle-stop:{}", named.display())));
    let (mut state, before) = health::load_state(&state_path);
    let procs = fpm::snapshot()?;
    let found = fpm::running(args.fpm_config.as_deref(), args.pid_file.as_deref(), &procs)?;
    let Some((instance, config)) = found else {
        // Asleep already: nothing to do, and the next idle time counts from when it runs.
        policy::asleep(&mut state);
        health::save_state(&state_path, &state, &before);
        return Ok(Exit::Healthy);
    };
    let socket = fpm::listen_socket(&config).with_context(|| {
        format!(
            "'{}' has no unix socket in `listen`: idle-stop is for socket-activated pools",
            config.display()
        )
    })?;
    if !activated(&instance, &procs, &socket) {
        errln!(
            "php-relaunch: refusing to stop the php-fpm of '{}': no other process holds its socket {}, \
             so nothing would start it again (it is not socket-activated)",
            config.display(),
            socket.display()
        );
        return Ok(Exit::Failing);
    }
    let now = SystemTime::now();
    let idle = idle(&instance, &procs, args);
    if !policy::idle_long_enough(&mut state, idle, state::unix_seconds(now), args.idle_for) {
        health::save_state(&state_path, &state, &before);
        return Ok(Exit::Healthy);
    }
    let started = Instant::now();
    let old_pid = instance.master(&procs).map(|p| p.pid);
    let stopped = instance.stop_gracefully(args.grace);
    policy::asleep(&mut state);
    health::save_state(&state_path, &state, &before);

    let mut report = Report::new(
        DateTime::<Local>::from(now).fixed_offset(),
        format!("unix://{}", socket.display()),
        None,
        Duration::ZERO,
    );
    report.action = Action::IdleStop;
    report.old_pid = old_pid;
    report.took = Some(started.elapsed());
    let exit = match &stopped {
        Ok(_) => {
            report.state = RunState::Idle;
            Exit::Healthy
        }
        Err(err) => {
            report.state = RunState::Down;
            report.note(format!("stopping: {err:#}"));
            Exit::Failing
        }
    };
    if let Ok(Some(signal)) = stopped
        && signal != "QUIT"
    {
        report.note(format!(
            "requests outlived the grace time: ended by {signal}"
        ));
    }
    // The pool is stopped whatever becomes of its line: a full disk does not turn that into exit 2.
    if let Err(err) = journal.append(&report) {
        errln!("php-relaunch: {err:#}");
    }
    Ok(exit)
}

/// Whether a process of root's (or ours) outside the pool's own family, and not a php-fpm, holds its
/// listening socket: the activator (systemd's `.socket` unit) that starts php-fpm again on the next
/// request. The pool user's processes never count (#18): a program PHP starts inherits the socket.
fn activated(instance: &Instance, procs: &[Proc], socket: &Path) -> bool {
    let listening = sockets::listening(socket);
    // The socket bound at the path must be the pool's own, which its master holds: the owner of the
    // socket directory can put another activated socket there (#21).
    if !instance
        .master(procs)
        .is_some_and(|master| sockets::holds(master.pid, &listening))
    {
        return false;
    }
    let family: Vec<u32> = instance.family(procs).iter().map(|p| p.pid).collect();
    sockets::holders(&listening)
        .iter()
        .filter(|pid| !family.contains(pid))
        .any(|pid| {
            procs
                .iter()
                .find(|p| p.pid == *pid)
                .is_none_or(|p| p.exe.as_deref().is_none_or(|exe| !fpm::is_php_fpm(exe)))
        })
}

/// Idle: no worker is left (`pm = ondemand` ended them), or every worker waits in accept(2) and, with
/// `--status`, the status page counts no request but its own. With no worker the status page is not
/// asked: asking would start one.
fn idle(instance: &Instance, procs: &[Proc], args: &IdleStopArgs) -> bool {
    match instance.workers_idle(procs) {
        None => false,
        Some(workers) if workers.is_empty() => true,
        Some(workers) => {
            workers.iter().all(|(_, idle)| *idle)
                && args.status.as_ref().is_none_or(|status| {
                    load::from_status(status, STATUS_TIMEOUT, None)
                        .is_some_and(|page| page.busy <= 1)
                })
        }
    }
}
