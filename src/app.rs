//! One run: lock, probe, decide, act, log, alert. Builds the real pieces and reports what happened.

use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use chrono::{DateTime, Local, Timelike};

use crate::alert;
use crate::config::{Config, ProbeConfig};
use crate::fpm::{self, Instance, Proc};
use crate::health;
use crate::journal::{Entry, Journal};
use crate::lock;
use crate::outcome::Outcome;
use crate::policy::{self, Decision};
use crate::probe::{self, Answer};
use std::process::ExitCode;

/// How often the heartbeat is asked again while waiting for a relaunched php-fpm.
const VERIFY_INTERVAL: Duration = Duration::from_millis(200);

/// Runs the checks the configuration asks for; with `--every`, repeats them until the minute is over
/// and reports the most serious outcome.
pub fn run(config: &Config) -> Result<Outcome> {
    let Some(_lock) = lock::try_acquire(&config.lock)? else {
        return Ok(Outcome::Busy);
    };
    // Opened up front so a bad log path is refused before anything is done; a dry run writes nothing.
    let mut journal = if config.dry_run {
        None
    } else {
        Some(Journal::open(&config.log)?)
    };
    // Only --every needs the wall clock's minute (and the time zone file that Local reads).
    let minute_over = config.every.map(|_| Instant::now() + until_next_minute());
    let mut worst = Outcome::Healthy;
    loop {
        let started = Instant::now();
        worst = worst.max(check(config, journal.as_mut())?);
        let (Some(every), Some(minute_over)) = (config.every, minute_over) else {
            break;
        };
        let next = started + every;
        // The last check must end within the minute, so the next cron run finds the lock free.
        if next + config.probe.timeout >= minute_over {
            break;
        }
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    Ok(worst)
}

/// `php-relaunch check`: probe once, say why on stdout; exit 0 healthy, 1 not.
pub fn check_command(config: &ProbeConfig) -> ExitCode {
    let (verdict, warnings) = health::check(config);
    for warning in warnings {
        eprintln!("php-relaunch: {warning}");
    }
    let (line, healthy) = health::report(config, &verdict);
    println!("{line}");
    if healthy {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn until_next_minute() -> Duration {
    let now = Local::now();
    let into_minute = Duration::new(u64::from(now.second()), now.nanosecond() % 1_000_000_000);
    Duration::from_mins(1).saturating_sub(into_minute)
}

/// One check: probe once, and act on what came back.
fn check(config: &Config, journal: Option<&mut Journal>) -> Result<Outcome> {
    let time = SystemTime::now();
    let (verdict, warnings) = health::check(&config.probe);
    for warning in warnings {
        eprintln!("php-relaunch: {warning}");
    }
    let fastcgi = config.probe.target.is_fastcgi();
    let decision = policy::decide(&verdict.answer, &config.relaunch_on, fastcgi);
    if decision == Decision::Healthy {
        return Ok(Outcome::Healthy);
    }
    let mut entry = Entry {
        time: DateTime::<Local>::from(time).fixed_offset(),
        url: config.probe.target.to_string(),
        verdict: verdict.answer.to_string(),
        latency: verdict.latency,
        action: "none".to_owned(),
        old_pid: None,
        new_pid: None,
        took: None,
        state: "down",
        mail: "none",
        error: verdict.answer.detail().map(str::to_owned),
    };
    let mut processes = Vec::new();
    let outcome = match decision {
        Decision::Healthy => Outcome::Healthy,
        Decision::WebServerDown => {
            entry.state = "web-server-down";
            Outcome::Alerted
        }
        Decision::UnexpectedStatus => {
            entry.state = "unexpected-status";
            Outcome::Alerted
        }
        Decision::Unhealthy => {
            entry.state = "unhealthy";
            Outcome::Alerted
        }
        Decision::Relaunch => relaunch(config, &mut entry, &mut processes),
    };
    if config.dry_run {
        print!("{}", entry.line());
        return Ok(outcome);
    }
    if !config.recipients.is_empty() {
        mail(config, &mut entry, &processes);
    }
    if let Some(journal) = journal {
        journal.append(&entry)?;
    }
    Ok(outcome)
}

/// Relaunches php-fpm, filling in the entry; `processes` receives the family as it was before.
fn relaunch(config: &Config, entry: &mut Entry, processes: &mut Vec<Proc>) -> Outcome {
    let started = Instant::now();
    let resolved = fpm::snapshot().and_then(|procs| {
        let instance = Instance::resolve(&config.control, config.pid_file.as_deref(), &procs)?;
        Ok((procs, instance))
    });
    let (procs, instance) = match resolved {
        Ok(found) => found,
        Err(err) => {
            entry.error = Some(format!("{err:#}"));
            return Outcome::StillDown;
        }
    };
    entry.old_pid = instance.master(&procs).map(|p| p.pid);
    processes.extend(instance.family(&procs).into_iter().cloned());
    if config.dry_run {
        entry.action = format!("would-{}", instance.plan(&procs).steps());
        return Outcome::StillDown;
    }

    let mut last = None;
    let mut heartbeat_back = || {
        let (healthy, answer) = verify(config);
        last = Some(answer);
        healthy
    };
    let mut done = fpm::relaunch(
        &instance,
        &procs,
        config.restart_timeout,
        &mut heartbeat_back,
    );
    if config.php_cgi {
        fpm::relaunch_cgi(
            config.cgi_service.as_deref(),
            config.restart_timeout,
            &mut done,
        );
    }
    if let (false, Some(answer)) = (done.healthy, last) {
        done.errors
            .push(format!("heartbeat still answers {answer}"));
    }
    entry.took = Some(started.elapsed());
    entry.action = done.steps.join("+");
    entry.new_pid = fpm::snapshot()
        .ok()
        .and_then(|procs| instance.master(&procs).map(|p| p.pid));
    entry.state = if done.healthy { "healthy" } else { "down" };
    if !done.errors.is_empty() {
        entry.error = Some(done.errors.join("; "));
    }
    if done.healthy {
        Outcome::Recovered
    } else {
        Outcome::StillDown
    }
}

/// Asks the heartbeat again until it is healthy or `--restart-timeout` has passed.
fn verify(config: &Config) -> (bool, Answer) {
    let until = Instant::now() + config.restart_timeout;
    let probe = &config.probe;
    loop {
        let answer = probe::probe(&probe.target, probe.timeout, probe.expect.as_deref()).answer;
        if answer.is_healthy() || Instant::now() >= until {
            return (answer.is_healthy(), answer);
        }
        thread::sleep(VERIFY_INTERVAL);
    }
}

/// Sends the alert; a failure is recorded in the entry and told on stderr, never fatal.
fn mail(config: &Config, entry: &mut Entry, processes: &[Proc]) {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let alert = alert::compose(&host, entry, processes);
    let sent = match &config.from {
        Some(from) => Ok(from.clone()),
        None => alert::default_sender(&host),
    }
    .and_then(|from| alert::send(&config.transport, &from, &config.recipients, &alert));
    match sent {
        Ok(()) => entry.mail = "sent",
        Err(err) => {
            let err = format!("mail: {err:#}");
            eprintln!("php-relaunch: {err}");
            entry.mail = "failed";
            entry.error = Some(match entry.error.take() {
                Some(earlier) => format!("{earlier}; {err}"),
                None => err,
            });
        }
    }
}
