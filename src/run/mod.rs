//! A watching run (the classic command line): the lock, the log, the run's deadline, and `--every`
//! around the pipeline of one check; then the report rendered as the log line (or, in a dry run,
//! printed), the memory between runs saved, and the exit code.

pub(crate) mod host;
pub(crate) mod pipeline;
pub(crate) mod system;

use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use chrono::{Local, Timelike};

use crate::config::Config;
use crate::deadline::Watchdog;
use crate::exit::Exit;
use crate::health;
use crate::journal::{self, Journal};
use crate::lock::{self, Lock};
use crate::metrics;
use crate::policy;
use crate::report::{Report, Trigger};
use crate::spawn;
use crate::state;
use crate::stdout::{errln, out};
use pipeline::Outgoing;
use system::System;

/// How long before the run's deadline waiting for the lock to book a mail's outcome stops, so the
/// deadline never ends a run whose line is still to be written.
const BOOKING_MARGIN: Duration = Duration::from_secs(1);

/// Runs the checks the configuration asks for; with `--every`, repeats them until the minute is over
/// and reports the most serious outcome.
pub fn watch(config: &Config) -> Result<Exit> {
    let mut lock = match lock::try_acquire(&config.lock)? {
        Ok(lock) => Some(lock),
        Err(holder) => {
            errln!(
                "php-relaunch: {}",
                lock::busy_message(&config.lock, &holder)
            );
            return Ok(Exit::Busy);
        }
    };
    let (mut journal, watchdog) = open(config, Trigger::Cron)?;
    // Only --every needs the wall clock's minute (and the time zone file that Local reads).
    let minute_over = config.every.map(|_| Instant::now() + until_next_minute());
    let mut worst = Exit::Healthy;
    loop {
        let started = Instant::now();
        // A check another run is making of this php-fpm right now (a hook's) stands for this one.
        if let Some(mut held) = lock.take() {
            held.say_holder(&lock::holder("cron"));
            let exit;
            (exit, lock) = check(config, journal.as_mut(), &watchdog, Trigger::Cron, held);
            watchdog.disarm();
            worst = worst.max(exit);
        }
        let (Some(every), Some(minute_over)) = (config.every, minute_over) else {
            break;
        };
        let next = started + every;
        // The last check must end within the minute, so the next cron run finds the lock free.
        if next + config.probe.timeout >= minute_over {
            break;
        }
        // The lock is let go while the loop sleeps: other runs for this php-fpm (the hook's, a
        // `pools` command) are not kept waiting for a check that is not being made (#19).
        drop(lock.take());
        thread::sleep(next.saturating_duration_since(Instant::now()));
        lock = lock::try_acquire(&config.lock)?.ok();
    }
    Ok(worst)
}

/// One run the hook started to answer `events` (and to tell of `ignored` datagrams): the same lock,
/// limits and log as a cron run, and always a log line. A cron run holding the lock is waited for
/// (it ends within its own `--run-timeout`); `None` when it did not end by then.
pub fn answer(config: &Config, events: u64, ignored: u64) -> Result<Option<Exit>> {
    let Some(lock) = lock::acquire_within(&config.lock, Instant::now() + config.run_timeout) else {
        errln!(
            "php-relaunch: hook: another run held the lock '{}' for {}s: {events} events wait for the next",
            config.lock.display(),
            config.run_timeout.as_secs()
        );
        return Ok(None);
    };
    let mut lock = lock?;
    lock.say_holder(&lock::holder("hook"));
    let trigger = Trigger::Hook { events, ignored };
    let (mut journal, watchdog) = open(config, trigger)?;
    let (exit, held) = check(config, journal.as_mut(), &watchdog, trigger, lock);
    watchdog.disarm();
    // The lock goes last: a run that finds it free finds this run's log and deadline closed.
    drop(journal);
    drop(watchdog);
    drop(held);
    Ok(Some(exit))
}

/// The log (opened up front so a bad log path is refused before anything is done; a dry run writes
/// nothing) and the run's deadline, which writes to a handle of its own, closed with the run: the
/// hook makes many runs in one process (#18).
fn open(config: &Config, trigger: Trigger) -> Result<(Option<Journal>, Watchdog)> {
    let journal = if config.dry_run {
        None
    } else {
        Some(Journal::open(&config.log)?)
    };
    let copy = journal.as_ref().map(Journal::try_clone).transpose()?;
    Ok((journal, Watchdog::new(expiry(config, copy, trigger))))
}

/// One check under `lock`: the pipeline over the real machine, with the state file read before and
/// saved after. The lock is let go before the alert is sent and taken again after (see [`send`]);
/// it is handed back when held, for the caller to let go last.
fn check(
    config: &Config,
    journal: Option<&mut Journal>,
    watchdog: &Watchdog,
    trigger: Trigger,
    lock: Lock,
) -> (Exit, Option<Lock>) {
    let started = Instant::now();
    let (mut state, before) = health::load_state(&config.probe.state);
    state.target = config.probe.target.to_string();
    let now = state::unix_seconds(SystemTime::now());
    if policy::expire_mails(&mut state, now) > 0 {
        errln!(
            "php-relaunch: an alert handed over by an earlier run was never booked (that run was \
             ended): counted as failed, to be sent again"
        );
    }
    if policy::discard_future(&mut state, now) {
        // Saved without them, so this is said once.
        errln!(
            "php-relaunch: state file '{}' held times after now (the clock was set back?): discarded them",
            config.probe.state.display()
        );
    }
    let mut system = System::new(config);
    // Past the hot path, whatever comes may hang: the run's deadline counts from the check's start.
    let arm = || watchdog.arm(started + config.run_timeout);
    let (seen, report, outgoing) = pipeline::check(config, &mut state, &mut system, trigger, arm);
    if let Some(path) = config.metrics_file.as_ref().filter(|_| !config.dry_run) {
        let now = state::unix_seconds(SystemTime::now());
        metrics::count(&mut state.totals, &seen, report.as_ref(), now);
        let text = metrics::render(&state.target, &seen, &state, &config.limits, now);
        if let Err(err) = metrics::write(path, &text) {
            errln!("php-relaunch: {err:#}");
        }
    }
    let Some(mut report) = report else {
        if !config.dry_run {
            health::save_state(&config.probe.state, &state, &before);
        }
        return (Exit::Healthy, Some(lock));
    };
    if config.dry_run {
        out!("{}", journal::line(&report));
        return (report.exit(), Some(lock));
    }
    // The state is saved whatever becomes of the log line: a full log disk must not reset the limits
    // (the next run would relaunch and mail anew).
    health::save_state(&config.probe.state, &state, &before);
    let held = match outgoing {
        Some(outgoing) => send(config, &mut system, &mut report, &outgoing, lock, started),
        None => Some(lock),
    };
    if let Some(journal) = journal
        && let Err(err) = journal.append(&report)
    {
        errln!("php-relaunch: {err:#}");
    }
    (report.exit(), held)
}

/// Sends the run's alert with the lock let go, so the next run's check never waits for a mail
/// server (#19): the state already says the mail is on its way, so a run meanwhile does not send it
/// again. The mail has its own bound ([`crate::alert`]), within the run's deadline, which still
/// ends the process if it passes. Then the lock is taken again (waiting at most until the run's
/// deadline) to book the outcome in the state as it is now; the run's line says it either way.
fn send(
    config: &Config,
    system: &mut System,
    report: &mut Report,
    outgoing: &Outgoing,
    lock: Lock,
    started: Instant,
) -> Option<Lock> {
    drop(lock);
    let sent = pipeline::deliver(system, report, &outgoing.alert);
    let deadline = (started + config.run_timeout).checked_sub(BOOKING_MARGIN);
    let relocked = deadline.and_then(|deadline| lock::acquire_within(&config.lock, deadline));
    let Some(Ok(mut lock)) = relocked else {
        errln!(
            "php-relaunch: could not take the lock '{}' again to book the alert's outcome: it counts \
             as failed once this run is over",
            config.lock.display()
        );
        return None;
    };
    lock.say_holder(&lock::holder("booking a mail"));
    let (mut state, before) = health::load_state(&config.probe.state);
    policy::mail_outcome(&mut state, &outgoing.pending, sent);
    health::save_state(&config.probe.state, &state, &before);
    Some(lock)
}

/// What happens when a check outlives `--run-timeout`: the helper running now is killed with its
/// process group, one log line says so, and the process ends with exit 1. Ending the process is the
/// point: the kernel frees the lock, whatever the hung thread holds. This is the one exit below
/// `main`, on purpose: the thread that would unwind normally is the one that hangs.
fn expiry(
    config: &Config,
    journal: Option<Journal>,
    trigger: Trigger,
) -> impl FnOnce() + Send + 'static {
    let target = config.probe.target.to_string();
    let limit = config.run_timeout;
    move || {
        spawn::kill_running_helper();
        let error = format!(
            "run-timeout: the check did not finish within {}s (--run-timeout) and was ended",
            limit.as_secs_f64()
        );
        let mut report = Report::ended(Local::now().fixed_offset(), target, limit, error.clone());
        report.trigger = trigger;
        match journal {
            Some(mut journal) => {
                if let Err(err) = journal.append(&report) {
                    errln!("php-relaunch: {err:#}");
                }
            }
            None => out!("{}", journal::line(&report)),
        }
        errln!("php-relaunch: {error}");
        std::process::exit(i32::from(report.exit().code()));
    }
}

fn until_next_minute() -> Duration {
    let now = Local::now();
    let into_minute = Duration::new(u64::from(now.second()), now.nanosecond() % 1_000_000_000);
    Duration::from_mins(1).saturating_sub(into_minute)
}
