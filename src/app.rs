//! One run: lock, probe, decide, act, log, alert. Builds the real pieces and reports what happened.

use std::thread;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use chrono::{DateTime, Local, Timelike};

use crate::alert;
use crate::cli::{Invocation, Stop};
use crate::config::{Config, ProbeConfig};
use crate::deadline::Watchdog;
use crate::evidence;
use crate::exit::Exit;
use crate::fpm::{self, Instance, Plan, Proc};
use crate::health;
use crate::journal::{Entry, Journal};
use crate::load::{self, Load};
use crate::lock;
use crate::policy::{self, Decision, Step};
use crate::pools;
use crate::probe::{self, Answer};
use crate::spawn;
use crate::state::State;

/// How often the heartbeat is asked again while waiting for a relaunched php-fpm.
const VERIFY_INTERVAL: Duration = Duration::from_millis(200);

/// Does what the command line asked for and says how it went. Errors are printed here, on one
/// line, and are exit 2 (a health `check` says "unhealthy" and exits 1: Docker reserves 2).
pub fn run(invocation: Invocation) -> Exit {
    let check = matches!(invocation, Invocation::Check(_));
    let result = match invocation {
        Invocation::Run(args) => Config::from_run(*args).and_then(|config| watch(&config)),
        Invocation::Check(args) => ProbeConfig::new(args.target, args.timeout, args.probe)
            .map(|config| check_command(&config)),
        Invocation::Reset(args) => {
            let path = args
                .state
                .unwrap_or_else(|| crate::state::default_path(&args.url));
            reset(&path).map(|message| {
                println!("{message}");
                Exit::Healthy
            })
        }
        Invocation::Pools(args) => pools::command(&args),
    };
    result.unwrap_or_else(|err| {
        stop(Stop::Mistake {
            check,
            message: format!("{err:#}"),
        })
    })
}

/// Ends a command that could not start: help was printed, or a mistake is told in one line.
pub fn stop(stop: Stop) -> Exit {
    match stop {
        Stop::Printed => Exit::Healthy,
        Stop::Mistake {
            check: true,
            message,
        } => {
            println!("unhealthy: bad arguments: {message}");
            Exit::Failing
        }
        Stop::Mistake {
            check: false,
            message,
        } => {
            eprintln!("php-relaunch: {message}");
            Exit::Usage
        }
    }
}

/// Runs the checks the configuration asks for; with `--every`, repeats them until the minute is over
/// and reports the most serious outcome.
fn watch(config: &Config) -> Result<Exit> {
    let Some(_lock) = lock::try_acquire(&config.lock)? else {
        return Ok(Exit::Busy);
    };
    // Opened up front so a bad log path is refused before anything is done; a dry run writes nothing.
    let mut journal = if config.dry_run {
        None
    } else {
        Some(Journal::open(&config.log)?)
    };
    let copy = journal.as_ref().map(Journal::try_clone).transpose()?;
    let watchdog = Watchdog::new(expiry(config, copy));
    // Only --every needs the wall clock's minute (and the time zone file that Local reads).
    let minute_over = config.every.map(|_| Instant::now() + until_next_minute());
    let mut worst = Exit::Healthy;
    loop {
        let started = Instant::now();
        let outcome = check(config, journal.as_mut(), &watchdog);
        watchdog.disarm();
        worst = worst.max(outcome);
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

/// What happens when a check outlives `--run-timeout`: the helper running now is killed with its
/// process group, one log line says so, and the process ends with exit 1. Ending the process is the
/// point: the kernel frees the lock, whatever the hung thread holds. This is the one exit below
/// `main`, on purpose: the thread that would unwind normally is the one that hangs.
fn expiry(config: &Config, journal: Option<Journal>) -> impl FnOnce() + Send + 'static {
    let url = config.probe.target.to_string();
    let limit = config.run_timeout;
    move || {
        spawn::kill_running_helper();
        let error = format!(
            "run-timeout: the check did not finish within {}s (--run-timeout) and was ended",
            limit.as_secs_f64()
        );
        let entry = Entry {
            time: Local::now().fixed_offset(),
            url,
            verdict: "-".to_owned(),
            latency: Duration::ZERO,
            action: "none".to_owned(),
            old_pid: None,
            new_pid: None,
            took: Some(limit),
            state: "down",
            mail: "none",
            error: Some(error.clone()),
        };
        match journal {
            Some(mut journal) => {
                if let Err(err) = journal.append(&entry) {
                    eprintln!("php-relaunch: {err:#}");
                }
            }
            None => print!("{}", entry.line()),
        }
        eprintln!("php-relaunch: {error}");
        std::process::exit(i32::from(Exit::Failing.code()));
    }
}

/// `php-relaunch check`: probe once, say why on stdout; exit 0 healthy, 1 not.
fn check_command(config: &ProbeConfig) -> Exit {
    // The state file is read only when a counter's growth is judged: the hot path stays I/O-free.
    let verdict = if config.thresholds.cumulative() {
        let (mut state, before) = health::load_state(&config.state);
        state.target = config.target.to_string();
        let verdict = health::check(config, &mut state);
        health::save_state(&config.state, &state, &before);
        verdict
    } else {
        health::check(config, &mut State::default())
    };
    let (line, healthy) = health::report(config, &verdict);
    println!("{line}");
    if healthy {
        Exit::Healthy
    } else {
        Exit::Failing
    }
}

/// `php-relaunch reset`: forget the relaunches that spent the budget, so relaunching resumes.
fn reset(path: &std::path::Path) -> Result<String> {
    let (mut state, warning) = crate::state::load(path)?;
    if let Some(warning) = warning {
        anyhow::bail!(warning);
    }
    let was_spent = state.gave_up;
    state.gave_up = false;
    state.relaunches.clear();
    state.failures = 0;
    crate::state::save(path, &state)?;
    Ok(if was_spent {
        format!("restart budget restored ({})", path.display())
    } else {
        format!(
            "restart budget was not spent; relaunch history cleared ({})",
            path.display()
        )
    })
}

fn until_next_minute() -> Duration {
    let now = Local::now();
    let into_minute = Duration::new(u64::from(now.second()), now.nanosecond() % 1_000_000_000);
    Duration::from_mins(1).saturating_sub(into_minute)
}

/// One check: probe once, and act on what came back, remembering between runs what policy needs.
fn check(config: &Config, journal: Option<&mut Journal>, watchdog: &Watchdog) -> Exit {
    let started = Instant::now();
    let time = SystemTime::now();
    let now = unix_seconds(time);
    let (mut state, before) = health::load_state(&config.probe.state);
    state.target = config.probe.target.to_string();
    if policy::discard_future(&mut state, now) {
        // Saved without them, so this is said once.
        eprintln!(
            "php-relaunch: state file '{}' held times after now (the clock was set back?): discarded them",
            config.probe.state.display()
        );
    }
    let verdict = health::check(&config.probe, &mut state);
    let fastcgi = config.probe.target.is_fastcgi();
    let decision = policy::decide(&verdict.answer, &config.relaunch_on, fastcgi);
    let recovery =
        (decision == Decision::Healthy).then(|| policy::record_healthy(&mut state, &config.limits));
    if let Some(recovery) = &recovery
        && recovery.ended.is_none()
        && !recovery.budget_restored
    {
        // The hot path: nothing to report, so no log line is made (nor the local time zone read).
        if !config.dry_run {
            health::save_state(&config.probe.state, &state, &before);
        }
        return Exit::Healthy;
    }
    // Past the hot path, whatever comes may hang: the run's deadline counts from the check's start.
    watchdog.arm(started + config.run_timeout);
    let mut entry = Entry {
        time: DateTime::<Local>::from(time).fixed_offset(),
        url: state.target.clone(),
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
    let mut report = Report::default();
    let outcome = match recovery {
        Some(recovery) => {
            if let Some(incident) = recovery.ended {
                entry.state = "recovered";
                entry.error = Some(format!(
                    "failing since {} ({})",
                    local(incident.since),
                    incident.verdict
                ));
                report.mail = incident.alerted;
            } else {
                entry.action = "budget-restored".to_owned();
                entry.state = "healthy";
            }
            Exit::Healthy
        }
        None => act(config, decision, now, &mut state, &mut entry, &mut report),
    };
    if config.dry_run {
        print!("{}", entry.line());
        return outcome;
    }
    if report.mail {
        if !config.recipients.is_empty() {
            mail(config, &mut entry, &report);
        }
        if let Some(incident) = state.incident.as_mut() {
            incident.alerted = true;
        }
    }
    // The state is saved whatever becomes of the log line: a full log disk must not reset the limits
    // (the next run would relaunch and mail anew).
    if let Some(journal) = journal
        && let Err(err) = journal.append(&entry)
    {
        eprintln!("php-relaunch: {err:#}");
    }
    health::save_state(&config.probe.state, &state, &before);
    outcome
}

/// What a failing run gathered for its alert.
#[derive(Debug, Default)]
struct Report {
    /// Whether an alert goes out for this run.
    mail: bool,
    /// The php-fpm processes as they were before anything was done.
    processes: Vec<Proc>,
    /// The evidence text.
    evidence: Option<String>,
}

/// Acts on a failing answer: alerts for what a relaunch cannot fix; otherwise relaunches within the
/// limits (threshold, pause, budget, cooldown).
fn act(
    config: &Config,
    decision: Decision,
    now: i64,
    state: &mut State,
    entry: &mut Entry,
    report: &mut Report,
) -> Exit {
    let alert_only = match decision {
        Decision::WebServerDown => Some("web-server-down"),
        Decision::UnexpectedStatus => Some("unexpected-status"),
        Decision::Unhealthy => Some("unhealthy"),
        Decision::Healthy | Decision::Relaunch => None,
    };
    if let Some(alert) = alert_only {
        entry.state = alert;
        report.mail = policy::record_failure(state, &entry.verdict, now);
        return Exit::Alerted;
    }
    state.failures += 1;
    state.successes = 0;
    if config.pause_file.exists() {
        entry.state = "paused";
        entry.error = Some(format!(
            "pause file '{}' exists: changing nothing",
            config.pause_file.display()
        ));
        return Exit::Failing;
    }
    match policy::relaunch_step(state, &config.limits, now) {
        Step::Wait { failures, needed } => {
            entry.state = "failing";
            entry.error = Some(format!("failure {failures} of {needed} before a relaunch"));
            return Exit::Failing;
        }
        Step::GiveUp { first } => {
            let limits = &config.limits;
            entry.state = "down";
            entry.error = Some(format!(
                "restart budget spent ({} relaunches within {}s): not relaunching until {} healthy runs or `php-relaunch reset`",
                limits.max_restarts,
                limits.within.as_secs(),
                limits.recover_after
            ));
            policy::record_failure(state, &entry.verdict, now);
            if first {
                state.gave_up = true;
                entry.action = "gave-up".to_owned();
                report.mail = true;
            }
            return Exit::Failing;
        }
        Step::Cooldown { left } => {
            entry.state = "cooldown";
            entry.error = Some(format!(
                "the previous relaunch's recovery window is open for {}s more",
                left.as_secs()
            ));
            return Exit::Failing;
        }
        Step::Relaunch => {}
    }
    report.mail = policy::record_failure(state, &entry.verdict, now);
    let started = Instant::now();
    let outcome = relaunch(config, entry, report);
    if entry.action != "none" && !entry.action.starts_with("would-") && entry.action != "kill-stuck"
    {
        policy::record_relaunch(state, &config.limits, now, started.elapsed());
    }
    if outcome == Exit::Recovered {
        // Its alert says it is healthy again: the incident ends here, no "recovered" mail follows.
        state.failures = 0;
        state.incident = None;
    }
    outcome
}

/// Relaunches php-fpm, filling in the entry and the report. Before touching a running master it
/// tells saturated from dead, kills stuck workers, and tests the config.
fn relaunch(config: &Config, entry: &mut Entry, report: &mut Report) -> Exit {
    if let Some(pool) = &config.pool {
        return relaunch_pool(config, pool, entry, report);
    }
    let started = Instant::now();
    let resolved = fpm::snapshot().and_then(|procs| {
        let instance = Instance::resolve(&config.control, config.pid_file.as_deref(), &procs)?;
        Ok((procs, instance))
    });
    let (procs, instance) = match resolved {
        Ok(found) => found,
        Err(err) => {
            entry.error = Some(format!("{err:#}"));
            return Exit::Failing;
        }
    };
    entry.old_pid = instance.master(&procs).map(|p| p.pid);
    report.processes = instance.family(&procs).into_iter().cloned().collect();
    let plan = instance.plan(&procs);
    if config.dry_run {
        entry.action = format!("would-{}", plan.steps());
        return Exit::Failing;
    }
    // What the answer said gives way to what relieving and relaunching report, if they report anything.
    let detail = entry.error.take();

    let mut load = None;
    if plan == Plan::Restart {
        // A status page is a claim (its socket may be the pool user's); /proc is the fact.
        let seen = load::from_proc(&instance, &procs);
        load = match &config.status {
            Some(status) => load::from_status(status, config.probe.timeout, config.stuck_after)
                .map(|page| load::believed(page, seen)),
            None => seen,
        };
        if let Some(outcome) = relieve(config, &instance, load.as_ref(), entry) {
            entry.took = Some(started.elapsed());
            return outcome;
        }
        if let Err(err) = instance.test_config(config.restart_timeout) {
            entry.state = "config-error";
            entry.note(format!("config test failed, php-fpm left running: {err:#}"));
            return Exit::Failing;
        }
    }
    let found = evidence::gather(
        load.as_ref().and_then(|l| l.raw.as_deref()),
        &instance.log_files(),
    );
    report.evidence = Some(evidence::record(
        &config.evidence_dir,
        entry,
        &report.processes,
        &found,
    ));

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
        entry.note(done.errors.join("; "));
    }
    if entry.error.is_none() {
        entry.error = detail;
    }
    if done.healthy {
        Exit::Recovered
    } else {
        Exit::Failing
    }
}

/// The heartbeat belongs to a pool of replicas: relaunch, one at a time, just the replicas that fail
/// their own ping; the others keep serving throughout.
fn relaunch_pool(
    config: &Config,
    pool: &pools::Pool,
    entry: &mut Entry,
    report: &mut Report,
) -> Exit {
    let started = Instant::now();
    let failing: Vec<&pools::Replica> = pool
        .replicas
        .iter()
        .filter(|r| !pools::answers(r))
        .collect();
    if config.dry_run {
        let names: Vec<&str> = failing.iter().map(|r| r.name.as_str()).collect();
        entry.action = format!("would-relaunch:{}", names.join(","));
        return Exit::Failing;
    }
    let mut logs = Vec::new();
    for replica in &failing {
        if let Ok((processes, files)) = pools::evidence_of(replica) {
            report.processes.extend(processes);
            logs.extend(files);
        }
    }
    let found = evidence::gather(None, &logs);
    report.evidence = Some(evidence::record(
        &config.evidence_dir,
        entry,
        &report.processes,
        &found,
    ));
    let mut steps = Vec::new();
    let mut errors = Vec::new();
    for replica in failing {
        match pools::relaunch_replica(replica, config.restart_timeout) {
            Ok(done) => {
                steps.push(format!("{}:{}", replica.name, done.steps.join("+")));
                errors.extend(
                    done.errors
                        .into_iter()
                        .map(|e| format!("{}: {e}", replica.name)),
                );
            }
            Err(err) => errors.push(format!("{}: {err:#}", replica.name)),
        }
    }
    let (healthy, answer) = verify(config);
    entry.took = Some(started.elapsed());
    entry.action = if steps.is_empty() {
        "none".to_owned()
    } else {
        steps.join(",")
    };
    entry.state = if healthy { "healthy" } else { "down" };
    if !healthy {
        errors.push(format!("heartbeat still answers {answer}"));
    }
    if !errors.is_empty() {
        entry.error = Some(errors.join("; "));
    }
    if healthy {
        Exit::Recovered
    } else {
        Exit::Failing
    }
}

/// A running pool that is busy rather than dead: kill just its stuck workers, or leave a saturated
/// pool alone unless `--relaunch-saturated`. `Some` when that settles the run.
fn relieve(
    config: &Config,
    instance: &Instance,
    load: Option<&Load>,
    entry: &mut Entry,
) -> Option<Exit> {
    let load = load?;
    if !load.stuck.is_empty() {
        let pids: Vec<u32> = load.stuck.iter().map(|(pid, _)| *pid).collect();
        let took = |pid: u32| {
            load.stuck
                .iter()
                .find(|(p, _)| *p == pid)
                .map_or(0, |(_, took)| took.as_secs())
        };
        let mut said = Vec::new();
        match instance.kill_stuck(&pids) {
            Ok(done) => {
                if !done.killed.is_empty() {
                    entry.action = "kill-stuck".to_owned();
                    let killed: Vec<String> = done
                        .killed
                        .iter()
                        .map(|&pid| format!("{pid} ({}s)", took(pid)))
                        .collect();
                    said.push(format!(
                        "killed workers stuck in one request: {}",
                        killed.join(", ")
                    ));
                }
                if !done.refused.is_empty() {
                    let refused: Vec<String> = done.refused.iter().map(u32::to_string).collect();
                    said.push(format!(
                        "not killed, not workers of the verified master: {}",
                        refused.join(", ")
                    ));
                }
            }
            Err(err) => said.push(format!("killing stuck workers: {err:#}")),
        }
        // Every kill, and every pid refused, stays in the log line whatever the run does next.
        entry.note(said.join("; "));
        if entry.action == "kill-stuck" {
            if verify(config).0 {
                entry.state = "healthy";
                entry.old_pid = instance
                    .master(&fpm::snapshot().unwrap_or_default())
                    .map(|p| p.pid);
                entry.new_pid = entry.old_pid;
                return Some(Exit::Recovered);
            }
            entry.action = "none".to_owned();
        }
    }
    if load.saturated() && !config.relaunch_saturated {
        entry.state = "saturated";
        entry.note(format!(
            "{}: not relaunched, which would drop their requests (--relaunch-saturated to allow)",
            load.describe()
        ));
        return Some(Exit::Alerted);
    }
    None
}

fn unix_seconds(time: SystemTime) -> i64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn local(unix: i64) -> String {
    DateTime::from_timestamp(unix, 0).map_or_else(
        || unix.to_string(),
        |t| {
            t.with_timezone(&Local)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
        },
    )
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
fn mail(config: &Config, entry: &mut Entry, report: &Report) {
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    let alert = alert::compose(&host, entry, &report.processes, report.evidence.as_deref());
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
            entry.note(err);
        }
    }
}
