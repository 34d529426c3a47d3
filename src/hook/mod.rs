//! `php-relaunch hook`: nginx's conditional access log (or Apache's piped log) reports each 502/504
//! it serves, and the first one starts an ordinary run at once. The event only triggers; the
//! heartbeat probe decides, within the same limits, lock and log as a cron run. Events that arrive
//! during a run, or in the recovery window after it, are answered by one run when that window ends,
//! and counted on its line.

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
use crate::config::watch::WatchConfig;
use crate::exit::Exit;
use crate::report::Trigger;
use crate::run;
use crate::stdout::errln;
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
    /// `--hold`: after a run, events this long start no run.
    pub hold: Duration,
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
    serve_runs(listen, |events, ignored| {
        run::answer(config, events, ignored).map(|exit| exit.is_some())
    })
}

/// `hook --watch FILE`: each event starts one run of the whole watch file (#21).
pub fn serve_watch(config: &WatchConfig, listen: &Listen) -> Result<Exit> {
    // One deadline thread for the hook's whole life, however many runs it starts (#18).
    let watchdog = crate::watch::watchdog(config)?;
    serve_runs(listen, |events, ignored| {
        crate::watch::once(config, Trigger::Hook { events, ignored }, &watchdog).map(|_| true)
    })
}

/// Listens and answers events with `run`.
fn serve_runs(listen: &Listen, run: impl FnMut(u64, u64) -> Result<bool>) -> Result<Exit> {
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
    let answered = answer(&tally, idle_exit, listen.hold, run);
    source.remove();
    let counts = *tally.lock();
    if counts.events > 0 {
        errln!(
            "php-relaunch: hook: {} events came within the recovery window after the last run and started none",
            counts.events
        );
    }
    if counts.ignored > 0 {
        errln!(
            "php-relaunch: hook: {} datagrams or lines were not 502/504 events and were ignored",
            counts.ignored
        );
    }
    answered.map(|()| Exit::Healthy)
}

/// The loop: wait for an event, `run` (which says whether it ran: a cron run may hold the lock),
/// then hold for `window` (`--hold`; by default 10 s, the shortest recovery window policy keeps after
/// a relaunch: at most one run per window). Events that came during the run or the window are
/// answered by one run when the window ends; with no hold, as soon as the run ends.
fn answer(
    tally: &Tally,
    idle_exit: Option<Duration>,
    window: Duration,
    mut run: impl FnMut(u64, u64) -> Result<bool>,
) -> Result<()> {
    // Until then, events are held back (they came during the last run or the window after it);
    // none at first, so the event that started a socket-activated hook, already queued, counts.
    // Held events are answered when the window ends, by one run for all of them, so an event never
    // waits for a later visitor's (#19).
    let mut hold_until: Option<Instant> = None;
    loop {
        let mut counts = tally.lock();
        loop {
            let now = Instant::now();
            let held = hold_until
                .and_then(|h| h.checked_duration_since(now))
                .filter(|left| !left.is_zero());
            // At the end of the input, what is due now is still answered; what is held is not.
            if counts.stop || (counts.closed && (counts.events == 0 || held.is_some())) {
                return Ok(());
            }
            let timeout = match (counts.events, held, idle_exit) {
                (0, _, Some(idle)) => {
                    let left = (counts.last_heard + idle).saturating_duration_since(now);
                    if left.is_zero() {
                        return Ok(());
                    }
                    Some(left)
                }
                (0, _, None) => None,
                (_, Some(left), _) => Some(left),
                _ => break,
            };
            counts = tally.wait(counts, timeout);
        }
        let (events, ignored) = (counts.events, counts.ignored);
        // Taken under the lock: every event counted after this came after the run took its events.
        let taken_at = Instant::now();
        drop(counts);
        if run(events, ignored)? {
            let mut counts = tally.lock();
            counts.events -= events;
            counts.ignored -= ignored;
            // No hold: what came during the run is answered by the next one, at once.
            hold_until = Some(if window.is_zero() {
                taken_at
            } else {
                Instant::now() + window
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The loop over `tally` with a run that books its calls; stops after `runs` runs.
    fn serve_until(
        tally: &Arc<Tally>,
        idle: Option<Duration>,
        window: Duration,
    ) -> Vec<(u64, u64)> {
        let mut ran = Vec::new();
        answer(tally, idle, window, |events, ignored| {
            ran.push((events, ignored));
            Ok(true)
        })
        .unwrap();
        ran
    }

    #[test]
    fn an_event_queued_before_the_loop_starts_is_answered() {
        // Socket activation: the datagram that started the hook is read before the loop runs.
        let tally = Tally::new();
        tally.heard(b"status=502 uri=/");
        tally.heard(b"garbage");
        tally.close();
        let ran = serve_until(&tally, None, Duration::from_secs(10));
        assert_eq!(ran, [(1, 1)]);
    }

    #[test]
    fn events_within_the_window_start_no_run_and_are_carried() {
        let tally = Tally::new();
        tally.heard(b"status=502 uri=/");
        let feeder = Arc::clone(&tally);
        let mut calls = 0;
        answer(&tally, None, Duration::from_hours(1), |events, _| {
            calls += 1;
            assert_eq!(events, 1);
            // Arrive during the run, and after it within the window: no second run.
            feeder.heard(b"status=504 uri=/");
            feeder.heard(b"status=502 uri=/");
            feeder.close();
            Ok(true)
        })
        .unwrap();
        assert_eq!(calls, 1);
        assert_eq!(tally.lock().events, 2, "counted for the next line");
    }

    #[test]
    fn what_came_during_a_run_is_answered_after_the_window_and_a_later_event_gets_its_own() {
        let tally = Tally::new();
        tally.heard(b"status=502 uri=/");
        let feeder = Arc::clone(&tally);
        let mut ran = Vec::new();
        answer(&tally, None, Duration::from_millis(20), |events, _| {
            ran.push(events);
            if ran.len() == 1 {
                feeder.heard(b"status=502 uri=/");
                let later = Arc::clone(&feeder);
                thread::spawn(move || {
                    thread::sleep(Duration::from_millis(100));
                    later.heard(b"status=502 uri=/");
                    later.close();
                });
            }
            Ok(true)
        })
        .unwrap();
        assert_eq!(ran, [1, 1, 1]);
    }

    #[test]
    fn an_event_held_back_by_the_window_is_answered_when_it_ends() {
        // #19 item 12: a lone event inside the window, and nothing after it: it gets its run once
        // the window ends (one run for all that came), not when some later visitor's event comes.
        let tally = Tally::new();
        tally.heard(b"status=502 uri=/");
        let feeder = Arc::clone(&tally);
        let mut ran = Vec::new();
        answer(&tally, None, Duration::from_millis(50), |events, _| {
            ran.push(events);
            if ran.len() == 1 {
                feeder.heard(b"status=504 uri=/");
                feeder.heard(b"status=502 uri=/");
            } else {
                feeder.stop();
            }
            Ok(true)
        })
        .unwrap();
        assert_eq!(ran, [1, 2]);
    }

    #[test]
    fn without_a_hold_an_event_during_a_run_starts_the_next() {
        let tally = Tally::new();
        tally.heard(b"status=502 uri=/");
        let feeder = Arc::clone(&tally);
        let mut ran = Vec::new();
        answer(&tally, None, Duration::ZERO, |events, _| {
            ran.push(events);
            if ran.len() < 3 {
                feeder.heard(b"status=502 uri=/");
            } else {
                feeder.close();
            }
            Ok(true)
        })
        .unwrap();
        assert_eq!(ran, [1, 1, 1]);
    }

    #[test]
    fn a_stop_or_silence_ends_the_loop() {
        let tally = Tally::new();
        tally.stop();
        tally.heard(b"status=502 uri=/");
        assert!(
            serve_until(&tally, None, Duration::ZERO).is_empty(),
            "stopped first"
        );

        let quiet = Tally::new();
        let started = Instant::now();
        assert!(serve_until(&quiet, Some(Duration::from_millis(50)), Duration::ZERO).is_empty());
        assert!(started.elapsed() >= Duration::from_millis(50));
    }
}
