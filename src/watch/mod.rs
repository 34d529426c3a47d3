//! `php-relaunch watch` (#21): many pools in one run. The targets of one file (listed, and those
//! `[discover]` finds anew every run) are probed at once; each pool is judged on its own and each
//! master acted on at most once, under its own lock (`run`). What the run did is then rendered
//! once: a log line per target with something to say, one mail per set of recipients, one metrics
//! file with a series per target; the exit code is the most serious outcome.

pub mod discover;
mod host;
mod mail;
mod metrics;
mod probe;
mod run;

use std::thread;
use std::time::{Duration, Instant};

use anyhow::Result;
use chrono::{Local, Timelike};

use crate::config::watch::{Target, WatchConfig};
use crate::deadline::Watchdog;
use crate::exit::Exit;
use crate::journal::{self, Journal};
use crate::report::{Action, Report, RunState, Trigger};
use crate::spawn;
use crate::stdout::{errln, outln};
use run::{Done, Master};

/// Runs the file once, or with `--every` until the minute is over; the most serious outcome.
pub fn command(config: &WatchConfig) -> Result<Exit> {
    let watchdog = watchdog(config)?;
    let minute_over = config.every.map(|_| Instant::now() + until_next_minute());
    // Busy (5) only when every run found every master busy: it ranks below every other outcome.
    let mut worst: Option<Exit> = None;
    loop {
        let started = Instant::now();
        let (exit, longest) = run(config, Trigger::Cron, &watchdog)?;
        worst = Some(worst.map_or(exit, |worst| worst.max(exit)));
        let (Some(every), Some(minute_over)) = (config.every, minute_over) else {
            break;
        };
        let next = started + every;
        // The last run must end within the minute, so the next cron run is not turned away: the
        // longest probe deadline of this run's targets, those discovered included, must fit. Locks
        // are per master and held only while it is acted on: none is held while this sleeps.
        if next + longest >= minute_over {
            break;
        }
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(worst.unwrap_or(Exit::Healthy))
}

/// The backstop of every run of this process (one thread for the process, however many runs the
/// hook starts, #18): a run that outlives the longest `run_timeout` of its targets is logged, its
/// helper killed, and the process ended, which frees every lock it holds. Every probe, relaunch step
/// and mail has its own deadline; this is for whatever was missed.
pub fn watchdog(config: &WatchConfig) -> Result<Watchdog> {
    let mut journal = if config.dry_run {
        None
    } else {
        Some(Journal::open(&config.log)?)
    };
    let file = config.file.display().to_string();
    Ok(Watchdog::new(move || {
        spawn::kill_running_helper();
        let error =
            "run-timeout: the watch run did not finish within the longest run_timeout of its \
                     targets and was ended"
                .to_owned();
        let report = Report::ended(
            Local::now().fixed_offset(),
            format!("watch:{file}"),
            Duration::ZERO,
            error.clone(),
        );
        match journal.as_mut() {
            Some(journal) => {
                let _ = journal.append(&report);
            }
            None => outln!("{}", journal::line(&report).trim_end()),
        }
        errln!("php-relaunch: {error}");
        std::process::exit(i32::from(Exit::Failing.code()));
    }))
}

/// One run over every target, within `watchdog`'s deadline.
pub fn once(config: &WatchConfig, trigger: Trigger, watchdog: &Watchdog) -> Result<Exit> {
    Ok(run(config, trigger, watchdog)?.0)
}

/// One run, and the longest probe deadline of its targets.
fn run(config: &WatchConfig, trigger: Trigger, watchdog: &Watchdog) -> Result<(Exit, Duration)> {
    let targets = targets(config);
    let limit = targets
        .iter()
        .map(|t| t.config.run_timeout)
        .max()
        .unwrap_or(Duration::from_mins(2));
    watchdog.arm(Instant::now() + limit);
    let exit = run_targets(config, &targets, trigger);
    watchdog.disarm();
    let longest = targets
        .iter()
        .map(|t| t.config.probe.timeout)
        .max()
        .unwrap_or(Duration::ZERO);
    Ok((exit?, longest))
}

/// What `once` does within its deadline.
fn run_targets(config: &WatchConfig, targets: &[Target], trigger: Trigger) -> Result<Exit> {
    if targets.is_empty() {
        errln!(
            "php-relaunch: {}: no target to watch (nothing listed, no pool discovered)",
            config.file.display()
        );
        return Ok(Exit::Failing);
    }
    // Opened up front: a bad log path is refused before anything is done.
    let mut journal = if config.dry_run {
        None
    } else {
        Some(Journal::open(&config.log)?)
    };
    let masters = run::act(config, targets, trigger);
    let mut done: Vec<Done> = Vec::new();
    let mut busy = 0;
    let total = masters.len();
    for (_, master) in masters {
        match master {
            Master::Busy => busy += 1,
            Master::Done(list) => done.extend(list),
        }
    }
    // A master another run holds is skipped (said on stderr); only when every one was is the run
    // "busy" (5), as a classic run turned away is.
    let mut worst = if busy > 0 && busy == total {
        Exit::Busy
    } else {
        Exit::Healthy
    };
    done.sort_by_key(|d| d.index);
    keep_telling(&mut done, trigger);
    mail::send(config, targets, &mut done);
    for d in &done {
        let Some(report) = &d.report else {
            continue;
        };
        worst = worst.max(report.exit());
        match journal.as_mut() {
            None => outln!("{}", journal::line(report).trim_end()),
            Some(journal) => {
                if let Err(err) = journal.append(report) {
                    errln!("php-relaunch: {err:#}");
                }
            }
        }
    }
    if let Some(path) = config.metrics_file.as_ref().filter(|_| !config.dry_run) {
        let text = metrics::render(targets, &done);
        if let Err(err) = crate::metrics::write(path, &text) {
            errln!("php-relaunch: {err:#}");
        }
    }
    Ok(worst)
}

/// The listed targets, and those `[discover]` finds now (a listed target wins over a found one).
fn targets(config: &WatchConfig) -> Vec<Target> {
    let mut targets = config.targets.clone();
    if let Some(found) = &config.discover {
        let (more, notes) = discover::targets(found);
        for note in notes {
            errln!("php-relaunch: discover: {note}");
        }
        for target in more {
            let url = target.config.probe.target.to_string();
            if !targets
                .iter()
                .any(|t| t.config.probe.target.to_string() == url)
            {
                targets.push(target);
            }
        }
    }
    targets
}

/// A run the hook started tells of its events, but 200 healthy pools are not 200 lines: healthy
/// targets keep quiet unless no target had anything else to say (then the first one speaks).
fn keep_telling(done: &mut [Done], trigger: Trigger) {
    if trigger == Trigger::Cron {
        return;
    }
    let quiet = |d: &Done| {
        !d.alert
            && d.report.as_ref().is_some_and(|r| {
                matches!(r.state, RunState::Healthy | RunState::Idle) && r.action == Action::None
            })
    };
    let any_loud = done.iter().any(|d| d.report.is_some() && !quiet(d));
    let mut first = !any_loud;
    for d in done.iter_mut() {
        if quiet(d) {
            if first {
                first = false;
            } else {
                d.report = None;
            }
        }
    }
}

fn until_next_minute() -> Duration {
    let now = Local::now();
    let into_minute = Duration::new(u64::from(now.second()), now.nanosecond() % 1_000_000_000);
    Duration::from_mins(1).saturating_sub(into_minute)
}
