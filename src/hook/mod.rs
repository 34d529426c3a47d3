//! `php-relaunch hook`: nginx's conditional access log (or Apache's piped log) reports each 502/504
//! it serves, and the first one starts an ordinary run at once. The event only triggers; the
//! heartbeat probe decides, within the same limits, lock and log as a cron run. Events that arrive
//! during a run, or in the recovery window after it, are counted into the next run's line; the next
//! run starts on an event that arrives after that window.

mod event;
mod source;

use std::path::PathBuf;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::config::Config;
use crate::exit::Exit;
use crate::policy;
use crate::run;
use source::{Source, Tally};

/// How the hook listens.
#[derive(Debug, Clone)]
pub struct Listen {
    /// `--listen PATH`; `None` for the socket systemd passes (or `--stdin`).
    pub path: Option<PathBuf>,
    /// `--socket-group`.
    pub group: String,
    /// `--idle-exit`, under socket activation.
    pub idle_exit: Duration,
    /// `--stdin`.
    pub stdin: bool,
}

/// Listens for events and answers them with runs, until stopped (SIGTERM/SIGINT), idle for
/// `--idle-exit` under socket activation, or at the end of standard input.
pub fn serve(config: &Config, listen: &Listen) -> Result<Exit> {
    ensure!(
        config.every.is_none(),
        "--every does not go with hook: its events start its runs"
    );
    let source = Source::open(listen.path.as_deref(), &listen.group, listen.stdin)?;
    let tally = Tally::new();
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("hook: handling SIGTERM")?;
    let stopper = Arc::clone(&tally);
    thread::Builder::new()
        .name("hook-signals".into())
        .spawn(move || {
            if signals.forever().next().is_some() {
                stopper.stop();
            }
        })
        .context("hook: starting the signal thread")?;
    source.read_into(Arc::clone(&tally))?;
    let idle_exit = source.is_activated().then_some(listen.idle_exit);
    let answered = answer(config, &tally, idle_exit);
    source.remove();
    let counts = *tally.lock();
    if counts.events > 0 {
        eprintln!(
            "php-relaunch: hook: {} events came within the recovery window after the last run and started none",
            counts.events
        );
    }
    if counts.ignored > 0 {
        eprintln!(
            "php-relaunch: hook: {} datagrams or lines were not 502/504 events and were ignored",
            counts.ignored
        );
    }
    answered.map(|()| Exit::Healthy)
}

/// The loop: wait for an event past the hold, run, hold for the recovery window.
fn answer(config: &Config, tally: &Tally, idle_exit: Option<Duration>) -> Result<()> {
    // The shortest recovery window policy keeps after a relaunch: at most one run per window.
    let window = policy::cooldown(None);
    let mut hold_until = Instant::now();
    loop {
        let mut counts = tally.lock();
        loop {
            let due = counts.last_event.is_some_and(|at| at >= hold_until) && counts.events > 0;
            if counts.stop || due || counts.closed {
                break;
            }
            let timeout = match idle_exit {
                Some(idle) => {
                    let left = (counts.last_heard + idle).saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(());
                    }
                    Some(left)
                }
                None => None,
            };
            counts = tally.wait(counts, timeout);
        }
        let due = counts.last_event.is_some_and(|at| at >= hold_until) && counts.events > 0;
        if counts.stop || !due {
            return Ok(());
        }
        let (events, ignored) = (counts.events, counts.ignored);
        drop(counts);
        if run::answer(config, events, ignored)?.is_some() {
            let mut counts = tally.lock();
            counts.events -= events;
            counts.ignored -= ignored;
            hold_until = Instant::now() + window;
        }
    }
}
