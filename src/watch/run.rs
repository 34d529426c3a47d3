//! One `watch` run (#21): every target probed at once (`probe`), then per php-fpm master, under that
//! master's lock: each pool judged on its own through the classic run's pipeline, the master
//! relaunched at most once, its budget and cooldown its own.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Local};

use super::host::WatchHost;
use super::probe::{
    Probed, ask_again, at_once, believer_of, checked, decision, probe_again, probe_all,
};
use crate::config::watch::{Target, WatchConfig};
use crate::health::{self, Saving};
use crate::lock;
use crate::metrics::Seen;
use crate::policy::{self, Decision};
use crate::probe::Verdict;
use crate::report::{Action, Report, RunState, Trigger};
use crate::run::pipeline;
use crate::state::{self, PendingMail, State};
use crate::stdout::errln;

/// A master's targets (by index), with what their probes found.
type Members = Vec<(usize, Probed)>;

/// What a run did about one target.
pub struct Done {
    /// Its index among the run's targets.
    pub index: usize,
    /// What the probe saw, for the metrics.
    pub seen: Seen,
    /// The line to log, if any.
    pub report: Option<Report>,
    /// Its memory, to be saved.
    pub state: State,
    before: Saving,
    /// Whether its alert is due in the run's mail.
    pub alert: bool,
    /// Its alert, as it stands in its state until the run's mail is booked (see
    /// `mail::send`).
    pub pending: Option<PendingMail>,
}

/// What a run did about one master.
pub enum Master {
    /// Its lock was busy: skipped.
    Busy,
    /// Acted on.
    Done(Vec<Done>),
}

/// The run over `targets`: probes, then each master acted on under its own lock.
pub fn act(config: &WatchConfig, targets: &[Target], trigger: Trigger) -> Vec<(PathBuf, Master)> {
    let probed = probe_all(targets);
    let mut groups: BTreeMap<PathBuf, Members> = BTreeMap::new();
    for (index, probed) in probed.into_iter().enumerate() {
        groups
            .entry(targets[index].config.lock.clone())
            .or_default()
            .push((index, probed));
    }
    // Masters are acted on at once too: a relaunch of one never waits for another's.
    let mut masters: Vec<(PathBuf, Members, Option<Master>)> = groups
        .into_iter()
        .map(|(lock, members)| (lock, members, None))
        .collect();
    at_once(&mut masters, |(lock_path, members, done)| {
        let members = std::mem::take(members);
        *done = Some(master_run(config, targets, lock_path, members, trigger));
    });
    masters
        .into_iter()
        .filter_map(|(lock, _, done)| Some((lock, done?)))
        .collect()
}

/// One master: under its lock, each of its pools through the pipeline; at most one relaunch.
fn master_run(
    config: &WatchConfig,
    targets: &[Target],
    lock_path: &Path,
    mut members: Members,
    trigger: Trigger,
) -> Master {
    let wait = match trigger {
        // An event is not dropped for a run that holds the master now (as the classic hook's
        // run waits): waited for, within half the run's time, so the action still fits in it.
        Trigger::Hook { .. } => targets[members[0].0].config.run_timeout / 2,
        Trigger::Cron => Duration::ZERO,
    };
    let Some((mut lock, waited)) = take_lock(config, lock_path, wait) else {
        return Master::Busy;
    };
    lock.say_holder(&lock::holder("watch"));
    if waited {
        probe_again(targets, &mut members);
    }
    let first = &targets[members[0].0];
    let key = first.master.clone();
    let budget_path = config
        .state_dir
        .join(format!("master_{}.json", state::file_stem(&key)));
    let (mut budget, budget_before) = health::load_state(&budget_path);
    budget.target = key.clone();
    let now = state::unix_seconds(SystemTime::now());
    if policy::discard_future(&mut budget, now) {
        errln!(
            "php-relaunch: state file '{}' held times after now (the clock was set back?): discarded them",
            budget_path.display()
        );
    }
    // The pools calling for a relaunch first: the first of them acts for the master.
    members.sort_by_key(|(index, probed)| decision(&targets[*index], probed) != Decision::Relaunch);
    let all_healthy = members
        .iter()
        .all(|(index, probed)| decision(&targets[*index], probed) == Decision::Healthy);
    let mut done = Vec::new();
    let mut relaunched: Option<(usize, Report)> = None;
    let mut members: std::collections::VecDeque<(usize, Probed)> = members.into();
    while let Some((index, probed)) = members.pop_front() {
        let leader = relaunched.as_ref().map(|(_, report)| report);
        let one = pool_run(
            &targets[index],
            index,
            probed,
            &mut budget,
            leader,
            &key,
            trigger,
        );
        if relaunched.is_none()
            && let Some(report) = &one.report
            && matches!(&report.action, Action::Relaunch(steps) if !steps.is_empty())
        {
            relaunched = Some((done.len(), report.clone()));
            // Its other failing pools are asked again now, at once, while their workers start.
            ask_again(targets, members.make_contiguous());
        }
        done.push(one);
    }
    if let Some((leader, _)) = relaunched {
        name_affected(&mut done, leader, targets);
    }
    settle(
        &mut budget,
        &first.config.limits,
        all_healthy,
        trigger,
        &key,
    );
    if !config.dry_run {
        health::save_state(&budget_path, &budget, &budget_before);
        for target in &mut done {
            if config.metrics_file.is_some() {
                crate::metrics::count(
                    &mut target.state.totals,
                    &target.seen,
                    target.report.as_ref(),
                    now,
                );
            }
            health::save_state(
                &targets[target.index].config.probe.state,
                &target.state,
                &target.before,
            );
        }
    }
    drop(lock);
    Master::Done(done)
}

/// One pool of the master, through the classic pipeline with the master's budget; `leader` is the
/// report of the pool whose failure relaunched the master earlier in this run, if one did.
fn pool_run(
    target: &Target,
    index: usize,
    probed: Probed,
    budget: &mut State,
    leader: Option<&Report>,
    key: &str,
    trigger: Trigger,
) -> Done {
    let relaunch = decision(target, &probed) == Decision::Relaunch;
    let Probed {
        mut state,
        before,
        dormancy,
        mut verdict,
        fresh,
    } = probed;
    // The budget and cooldown are the master's: what is restarted (#21).
    if relaunch {
        state.relaunches.clone_from(&budget.relaunches);
        state.last_took_ms = budget.last_took_ms;
        state.gave_up = budget.gave_up;
    } else {
        state.gave_up = false;
    }
    if relaunch && let Some(leader) = leader {
        // Its master was relaunched this run for a sibling: asked again, not relaunched again.
        let fresh = fresh.unwrap_or_else(|| {
            let believer = believer_of(target);
            checked(&target.config, &mut state, &believer)
        });
        if fresh.answer.is_healthy() {
            let seen = seen_of(verdict.as_ref());
            let report = sibling(target, leader, verdict.take(), &fresh, key);
            state.failures = 0;
            state.incident = None;
            return Done {
                index,
                seen,
                report: Some(report),
                state,
                before,
                // Named in the run's mail with the pool that relaunched their master.
                alert: true,
                pending: None,
            };
        }
        verdict = Some(fresh);
    }
    let first_seen = seen_of(verdict.as_ref());
    if policy::expire_mails(&mut state, state::unix_seconds(SystemTime::now())) > 0 {
        errln!(
            "php-relaunch: {}: an alert handed over by an earlier run was never booked (that run \
             was ended): counted as failed, to be sent again",
            target.config.probe.target
        );
    }
    let mut host = WatchHost::new(&target.config, verdict, dormancy, target.alert_only.clone());
    let (seen, mut report, outgoing) =
        pipeline::check(&target.config, &mut state, &mut host, trigger, || {});
    // The alert is collected for the run's one mail, sent after every master's lock is let go, and
    // stays pending in the state until its outcome is booked (`mail::send`), as a classic run's.
    let mut pending = None;
    if let (Some(report), Some(outgoing)) = (report.as_mut(), outgoing) {
        pipeline::deliver(&mut host, report, &outgoing.alert);
        pending = Some(outgoing.pending);
    }
    let seen = if first_seen.verdict.is_empty() {
        seen
    } else {
        first_seen
    };
    if relaunch {
        budget.relaunches.clone_from(&state.relaunches);
        budget.last_took_ms = state.last_took_ms;
        budget.gave_up = state.gave_up;
    }
    let report = report.map(|mut report| {
        report.master = Some(key.to_owned());
        report.pool.clone_from(&target.pool);
        if let Some(why) = &target.alert_only
            && !report
                .error
                .as_deref()
                .is_some_and(|e| e.contains(why.as_str()))
            && report.state != RunState::Healthy
        {
            report.note(format!("alert only: {why}"));
        }
        report
    });
    Done {
        index,
        seen,
        alert: !host.alerts.is_empty(),
        report,
        state,
        before,
        pending,
    }
}

/// The master's budget after a run: it comes back after --recover-after runs with every pool
/// healthy; a hook run never restores it (#18). Failures and incidents are the pools' own.
fn settle(
    budget: &mut State,
    limits: &policy::Limits,
    all_healthy: bool,
    trigger: Trigger,
    key: &str,
) {
    if all_healthy && trigger == Trigger::Cron {
        let recovery = policy::record_healthy(budget, limits);
        if recovery.budget_restored {
            errln!("php-relaunch: {key}: restart budget restored after healthy runs");
        }
    } else if !all_healthy {
        budget.successes = 0;
    }
    budget.incident = None;
    budget.failures = 0;
}

/// The master's lock, and whether it was waited for; `None` (said on stderr, and in a dry run's
/// output) when another run held it for all of `wait`: its pools are skipped this run.
fn take_lock(config: &WatchConfig, lock_path: &Path, wait: Duration) -> Option<(lock::Lock, bool)> {
    let holder = match lock::try_acquire(lock_path) {
        Ok(Ok(lock)) => return Some((lock, false)),
        Ok(Err(holder)) => holder,
        Err(err) => {
            errln!("php-relaunch: {err:#}: its pools are skipped this run");
            return None;
        }
    };
    if !wait.is_zero() {
        match lock::acquire_within(lock_path, Instant::now() + wait) {
            Some(Ok(lock)) => return Some((lock, true)),
            Some(Err(err)) => {
                errln!("php-relaunch: {err:#}: its pools are skipped this run");
                return None;
            }
            None => {}
        }
    }
    errln!(
        "php-relaunch: {}: its pools are skipped this run",
        lock::busy_message(lock_path, &holder)
    );
    if config.dry_run {
        crate::stdout::outln!("skipped: {} (lock busy)", lock_path.display());
    }
    None
}

/// The first answer as the metrics see it.
fn seen_of(verdict: Option<&Verdict>) -> Seen {
    match verdict {
        Some(v) => Seen {
            up: v.answer.is_healthy(),
            verdict: v.answer.to_string(),
            latency: v.latency,
        },
        None => Seen {
            up: true,
            verdict: String::new(),
            latency: Duration::ZERO,
        },
    }
}

/// The line of a pool that failed with its master and came back with the relaunch a sibling made.
fn sibling(
    target: &Target,
    leader: &Report,
    first: Option<Verdict>,
    fresh: &Verdict,
    key: &str,
) -> Report {
    let (answer, latency) = first.map_or((None, Duration::ZERO), |v| (Some(v.answer), v.latency));
    let mut report = Report::new(
        DateTime::<Local>::from(SystemTime::now()).fixed_offset(),
        target.config.probe.target.to_string(),
        answer,
        latency,
    );
    report.master = Some(key.to_owned());
    report.pool.clone_from(&target.pool);
    report.state = RunState::Relaunched;
    report.action = leader.action.clone();
    report.old_pid = leader.old_pid;
    report.new_pid = leader.new_pid;
    report.took = leader.took;
    report.note(format!(
        "relaunched with its master (for {}); answers {} now",
        leader.pool.as_deref().unwrap_or(&leader.target),
        fresh.answer
    ));
    report
}

/// The pools of a relaunched master that were healthy: named in the leader's line and mail.
fn name_affected(done: &mut [Done], leader: usize, targets: &[Target]) {
    let affected: Vec<String> = done
        .iter()
        .filter(|d| d.report.is_none() && d.seen.up)
        .map(|d| {
            let t = &targets[d.index];
            t.pool
                .clone()
                .unwrap_or_else(|| t.config.probe.target.to_string())
        })
        .collect();
    if !affected.is_empty()
        && let Some(report) = done[leader].report.as_mut()
    {
        report.note(format!(
            "affected: healthy pools restarted with their master: {}",
            affected.join(", ")
        ));
    }
}
