//! One check as a pipeline: probe → verdict → decision (`policy`) → the steps to take → the control
//! that takes them (through [`Host`]) → a typed [`Report`]. Nothing here touches the machine but
//! through the host, so every path is tested with a scripted one.

use std::time::{Duration, Instant};

use chrono::{DateTime, Local};

mod mail;

pub use mail::{Outgoing, deliver};

use super::host::Host;
use crate::config::Config;
use crate::fpm::{self, Levers, Plan, Step};
use crate::load::Load;
use crate::metrics::Seen;
use crate::ondemand::Dormancy;
use crate::policy::{self, Course, Decision, Done, Hold};
use crate::probe::Answer;
use crate::report::{Action, Report, RunState, Trigger};
use crate::state::{State, unix_seconds};
use mail::{Alert, tell};

/// Runs one check, booking it in `state`. `None` when the heartbeat is healthy and there is nothing
/// to tell (the hot path: no log line, no time zone read); a run the hook started always tells, since
/// nginx did serve the 502s it answers. `past_hot_path` is called once a check turns out to need more
/// than that, before anything that may hang.
pub fn check(
    config: &Config,
    state: &mut State,
    host: &mut impl Host,
    trigger: Trigger,
    past_hot_path: impl FnOnce(),
) -> (Seen, Option<Report>, Option<Outgoing>) {
    let time = host.now();
    let now = unix_seconds(time);
    // An on-demand pool with no php-fpm running is judged by its socket: a request would start it.
    let dormancy = match config.on_demand {
        Some(_) => host.dormancy(),
        None => Dormancy::Awake,
    };
    let mut note = None;
    let mut fpm_said = None;
    let (answer, latency, decision) = match &dormancy {
        Dormancy::Awake => {
            // Only a trusted run moves the status counters' baseline: hook runs every few seconds
            // would otherwise shrink the window their growth is judged over (#18).
            let baseline = state.status;
            let verdict = host.probe(state);
            if !trigger.is_trusted() {
                state.status = baseline;
            }
            let decision = policy::decide(
                &verdict.answer,
                &config.relaunch_on,
                config.probe.target.is_fastcgi(),
            );
            let decision = blame(config, host, &verdict.answer, decision, &mut note);
            fpm_said = verdict.stderr;
            (Some(verdict.answer), verdict.latency, decision)
        }
        Dormancy::Asleep => (None, Duration::ZERO, Decision::Healthy),
        Dormancy::Lost(_) => (None, Duration::ZERO, Decision::SocketLost),
    };
    let said = match (&answer, &dormancy) {
        (Some(answer), _) => answer.to_string(),
        (None, Dormancy::Asleep) => "idle".to_owned(),
        (None, _) => "socket-lost".to_owned(),
    };
    let seen = Seen {
        up: decision == Decision::Healthy,
        verdict: said.clone(),
        latency,
    };
    let course = policy::assess(
        state,
        &config.limits,
        decision,
        &said,
        || host.paused(),
        now,
        trigger.is_trusted(),
    );
    let asleep = dormancy == Dormancy::Asleep;
    if course.is_none() && trigger == Trigger::Cron && !(asleep && config.dry_run) {
        return (seen, None, None);
    }
    past_hot_path();
    let mut report = Report::new(
        DateTime::<Local>::from(time).fixed_offset(),
        config.probe.target.to_string(),
        answer,
        latency,
    );
    report.trigger = trigger;
    if let Dormancy::Lost(why) = dormancy {
        report.error = Some(why);
    }
    if let Some(note) = note {
        report.error = Some(note);
    }
    let Some(course) = course else {
        report.state = if asleep {
            RunState::Idle
        } else {
            RunState::Healthy
        };
        keep_outside_words(&mut report, fpm_said);
        return (seen, Some(report), None);
    };
    let alert = Alert::of(&course, state);
    follow(
        config,
        course,
        state,
        host,
        &mut report,
        now,
        trigger.is_trusted(),
    );
    keep_outside_words(&mut report, fpm_said);
    let outgoing = (report.alert && !config.dry_run)
        .then(|| tell(config, state, host, &report, alert, now))
        .flatten();
    (seen, Some(report), outgoing)
}

/// A timeout through the web server is php-fpm's only if php-fpm does not answer itself on its own
/// sockets (#18): when it does, the web server is the one hung, and `note` says what was asked.
/// Likewise a listener not believed (another user's, on the way from the web server to php-fpm)
/// calls for no restart while php-fpm answers on its own sockets: a restart cannot help a php-fpm
/// that is healthy behind it, and the other user would spend the budget at will.
fn blame(
    config: &Config,
    host: &mut impl Host,
    answer: &Answer,
    decision: Decision,
    note: &mut Option<String>,
) -> Decision {
    if decision != Decision::Relaunch || config.probe.target.is_fastcgi() || config.pool.is_some() {
        return decision;
    }
    match answer {
        // A page of the web server outside PHP that answers says the web server is not hung: a
        // script stuck behind a lock is php-fpm's (#18).
        Answer::Timeout if host.web_server_hangs() => {
            if let Some(asked) = host.fpm_answers() {
                *note = Some(format!(
                    "the heartbeat timed out, and so did a page of the web server outside PHP, \
                     while php-fpm answers on its own sockets ({asked}): the web server is hung, \
                     not php-fpm; php-fpm left alone"
                ));
                return Decision::WebServerHung;
            }
        }
        Answer::Untrusted(_) => {
            if let Some(asked) = host.fpm_answers() {
                *note = Some(format!(
                    "php-fpm answers on its own sockets ({asked}): a restart cannot help; \
                     php-fpm left alone"
                ));
                return Decision::Unhealthy;
            }
        }
        _ => {}
    }
    decision
}

/// What stays in the line whatever the run did next: whose listener answered (#18), and php-fpm's
/// own words on the request, "Primary script unknown" (#19; the renderers escape them).
fn keep_outside_words(report: &mut Report, fpm_said: Option<String>) {
    if let Some(Answer::Untrusted(why)) = &report.answer
        && !report
            .error
            .as_deref()
            .is_some_and(|e| e.contains(why.as_str()))
    {
        report.error = Some(match report.error.take() {
            Some(then) => format!("{why}; {then}"),
            None => why.clone(),
        });
    }
    if let Some(said) = fpm_said {
        report.note(format!("php-fpm said: {said}"));
    }
}

/// Does what `course` says, filling in the report; policy books what the control did.
fn follow(
    config: &Config,
    course: Course,
    state: &mut State,
    host: &mut impl Host,
    report: &mut Report,
    now: i64,
    trusted: bool,
) {
    match course {
        Course::Recovered(incident) => {
            report.state = RunState::Recovered;
            report.error = Some(format!(
                "failing since {} ({})",
                local(incident.since),
                incident.verdict
            ));
            // A healed incident's relaunch already said it is healthy again, unless that mail
            // failed: then this is the one that tells.
            report.alert = incident.alerted != incident.healed;
        }
        Course::BudgetRestored => {
            report.state = RunState::Healthy;
            report.action = Action::BudgetRestored;
        }
        Course::AlertOnly { decision, alert } => {
            report.state = match decision {
                Decision::WebServerDown => RunState::WebServerDown,
                Decision::WebServerHung => RunState::WebServerHung,
                Decision::UnexpectedStatus => RunState::UnexpectedStatus,
                Decision::SocketLost => RunState::SocketLost,
                _ => RunState::Unhealthy,
            };
            report.alert = alert;
        }
        Course::Paused => {
            report.state = RunState::Paused;
            report.error = Some(format!(
                "pause file '{}' exists: changing nothing",
                config.pause_file.display()
            ));
        }
        Course::Held(Hold::Wait { failures, needed }) => {
            report.state = RunState::Failing;
            report.error = Some(format!("failure {failures} of {needed} before a relaunch"));
        }
        Course::Held(Hold::GiveUp { first }) => {
            let limits = &config.limits;
            report.error = Some(format!(
                "restart budget spent ({} relaunches within {}s): not relaunching until {} healthy runs or `php-relaunch reset`",
                limits.max_restarts,
                limits.within.as_secs(),
                limits.recover_after
            ));
            // Its alert goes out once: now, or (saying so again) on the next held run if it could
            // not be sent (#19).
            if first || state.give_up_unmailed {
                report.action = Action::GaveUp;
                report.alert = true;
            }
        }
        Course::Held(Hold::Cooldown { left }) => {
            report.state = RunState::Cooldown;
            report.error = Some(format!(
                "the previous relaunch's recovery window is open for {}s more",
                left.as_secs()
            ));
        }
        Course::Relaunch { alert } => {
            report.alert = alert;
            let done = if config.pool.is_some() {
                relaunch_pool(config, host, report)
            } else {
                relaunch(config, host, report)
            };
            policy::book(state, &config.limits, now, done, trusted);
        }
    }
}

/// Relaunches php-fpm. Before touching a running master it tells saturated from dead, kills stuck
/// workers, and tests the config.
fn relaunch(config: &Config, host: &mut impl Host, report: &mut Report) -> Done {
    let started = Instant::now();
    let found = match host.inspect() {
        Ok(found) => found,
        Err(err) => {
            report.error = Some(format!("{err:#}"));
            return Done::Nothing;
        }
    };
    report.old_pid = found.master;
    report.processes = found.processes;
    if config.dry_run {
        // What a run would find before relaunching: a full pool is alerted, not relaunched.
        if found.plan == Plan::Restart
            && let Some(load) = &found.load
            && load.stuck.is_empty()
            && load.saturated()
            && !config.relaunch_saturated
        {
            report.state = RunState::Saturated;
            report.note(not_relaunched(config, load));
            return Done::Nothing;
        }
        report.action = Action::Would(found.plan);
        return Done::Nothing;
    }
    // What the answer said gives way to what relieving and relaunching report, if they report anything.
    let detail = report.error.take();
    if found.plan == Plan::Restart {
        if let Some(load) = &found.load
            && let Some(done) = relieve(config, host, load, report)
        {
            report.took = Some(started.elapsed());
            return done;
        }
        if let Err(err) = host.test_config() {
            report.state = RunState::ConfigError;
            report.note(format!("config test failed, php-fpm left running: {err:#}"));
            return Done::Nothing;
        }
    }
    let status_page = found.load.as_ref().and_then(|l| l.raw.as_deref());
    report.evidence = Some(host.evidence(report, status_page));

    let mut levers = HostLevers { host, last: None };
    let mut done = fpm::relaunch(found.plan, &mut levers);
    let last = levers.last;
    if config.php_cgi {
        host.relaunch_cgi(&mut done);
    }
    if let (false, Some(answer)) = (done.healthy, last) {
        done.errors
            .push(format!("heartbeat still answers {answer}"));
    }
    let took = started.elapsed();
    report.took = Some(took);
    report.new_pid = host.master_pid();
    report.state = if done.healthy {
        RunState::Relaunched
    } else {
        RunState::Down
    };
    if !done.errors.is_empty() {
        report.note(done.errors.join("; "));
    }
    for note in fpm::take_notes() {
        report.note(note);
    }
    if report.error.is_none() {
        report.error = detail;
    }
    report.action = Action::Relaunch(done.steps);
    Done::Relaunched {
        took,
        healthy: done.healthy,
    }
}

/// The host's control of php-fpm, with the heartbeat as the check, remembering its last answer.
struct HostLevers<'a, H> {
    host: &'a mut H,
    last: Option<Answer>,
}

impl<H: Host> Levers for HostLevers<'_, H> {
    fn take(&mut self, step: Step) -> anyhow::Result<()> {
        self.host.take(step)
    }

    fn healthy(&mut self) -> bool {
        let (healthy, answer) = self.host.verify();
        self.last = Some(answer);
        healthy
    }
}

/// A running pool that is busy rather than dead: kill just its stuck workers, or leave a saturated
/// pool alone unless `--relaunch-saturated`. `Some` when that settles the run.
fn relieve(
    config: &Config,
    host: &mut impl Host,
    load: &Load,
    report: &mut Report,
) -> Option<Done> {
    if !load.stuck.is_empty() {
        let pids: Vec<u32> = load.stuck.iter().map(|(pid, _)| *pid).collect();
        let took = |pid: u32| {
            load.stuck
                .iter()
                .find(|(p, _)| *p == pid)
                .map_or(0, |(_, took)| took.as_secs())
        };
        let mut said = Vec::new();
        let mut killed_any = false;
        match host.kill_stuck(&pids) {
            Ok(done) => {
                if !done.killed.is_empty() {
                    killed_any = true;
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
        if !said.is_empty() {
            report.note(said.join("; "));
        }
        if killed_any && host.verify().0 {
            report.action = Action::KillStuck;
            report.state = RunState::Relaunched;
            report.old_pid = host.master_pid();
            report.new_pid = report.old_pid;
            return Some(Done::Healthy);
        }
    }
    if load.saturated() && !config.relaunch_saturated {
        report.state = RunState::Saturated;
        report.note(not_relaunched(config, load));
        return Some(Done::Nothing);
    }
    None
}

/// Why a full pool is not relaunched, in the terms its settings were given in.
fn not_relaunched(config: &Config, load: &Load) -> String {
    format!(
        "{}: not relaunched, which would drop their requests ({} to allow)",
        load.describe(),
        config.terms.flag("relaunch-saturated")
    )
}

/// The heartbeat belongs to a pool of replicas: relaunch, one at a time, just the replicas that fail
/// their own ping; the others keep serving throughout.
fn relaunch_pool(config: &Config, host: &mut impl Host, report: &mut Report) -> Done {
    let started = Instant::now();
    let found = host.failing_replicas();
    if config.dry_run {
        report.action = Action::WouldReplicas(found.failing);
        return Done::Nothing;
    }
    report.processes = found.processes;
    report.evidence = Some(host.evidence(report, None));
    let mut relaunched = Vec::new();
    let mut errors = Vec::new();
    for name in found.failing {
        match host.relaunch_replica(&name) {
            Ok(done) => {
                errors.extend(done.errors.iter().map(|e| format!("{name}: {e}")));
                relaunched.push((name, done.steps));
            }
            Err(err) => errors.push(format!("{name}: {err:#}")),
        }
    }
    let (healthy, answer) = host.verify();
    let took = started.elapsed();
    report.took = Some(took);
    report.state = if healthy {
        RunState::Relaunched
    } else {
        errors.push(format!("heartbeat still answers {answer}"));
        RunState::Down
    };
    if !errors.is_empty() {
        report.error = Some(errors.join("; "));
    }
    let any = !relaunched.is_empty();
    report.action = Action::Replicas(relaunched);
    match (any, healthy) {
        (true, _) => Done::Relaunched { took, healthy },
        (false, true) => Done::Healthy,
        (false, false) => Done::Nothing,
    }
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

#[cfg(test)]
mod tests;
