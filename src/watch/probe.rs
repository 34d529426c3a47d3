//! The concurrent probes of a `watch` run (#21): every target at once, at most [`CONCURRENCY`] at a
//! time, each within its own deadline, so N hung pools cost one timeout, not N; the pools of a
//! master asked again at once after its relaunch or after waiting for its lock. A healthy answer is
//! believed as a classic run believes it (#18), by one [`Believer`] per master.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::Config;
use crate::config::watch::Target;
use crate::health::{self, Saving};
use crate::ondemand::{self, Dormancy};
use crate::policy::{self, Decision};
use crate::probe::Verdict;
use crate::run::system::Believer;
use crate::state::State;

/// At most this many probes (and masters acted on) at once.
pub const CONCURRENCY: usize = 64;

/// The threads a run starts with.
const FIRST_WORKERS: usize = 4;

/// How often a run looks whether its threads are kept waiting (then it doubles them).
const RAMP: Duration = Duration::from_millis(1);

/// What the concurrent probes found of one target.
pub(super) struct Probed {
    /// Its memory, as read before the probe.
    pub state: State,
    pub before: Saving,
    pub dormancy: Dormancy,
    pub verdict: Option<Verdict>,
    /// After its master was relaunched for a sibling: its answer then.
    pub fresh: Option<Verdict>,
}

/// Probes every target at once, at most [`CONCURRENCY`] at a time, each within its own deadline:
/// N hung pools cost one timeout, not N. A sleeping on-demand pool is looked at, never connected to.
/// The answers of one master's pools are believed by one [`Believer`], resolved once.
pub(super) fn probe_all(targets: &[Target]) -> Vec<Probed> {
    let believers = believers(targets);
    let mut slots: Vec<(usize, Option<Probed>)> = (0..targets.len()).map(|i| (i, None)).collect();
    at_once(&mut slots, |(i, slot)| {
        *slot = Some(probe_one(&targets[*i], &believers[*i]));
    });
    slots
        .into_iter()
        .map(|(i, slot)| slot.unwrap_or_else(|| probe_one(&targets[i], &believers[i])))
        .collect()
}

/// Calls `each` on every item at once, on at most [`CONCURRENCY`] threads, each taking the next item
/// as it is done with one: N hung pools cost one timeout, not N. Threads are not free (a 200-pool
/// run spent a fifth of its time making and unmaking 64 of them, their stacks and signal stacks),
/// so the run starts with a few and doubles them every [`RAMP`] in which fewer items were done
/// than there are threads: healthy pools answer in a fraction of that, hung ones not at all.
pub(super) fn at_once<T: Send>(items: &mut [T], each: impl Fn(&mut T) + Sync) {
    let items: Vec<Mutex<&mut T>> = items.iter_mut().map(Mutex::new).collect();
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let work = || {
        while let Some(item) = items.get(next.fetch_add(1, Ordering::Relaxed)) {
            if let Ok(mut item) = item.lock() {
                each(&mut item);
            }
            done.fetch_add(1, Ordering::Relaxed);
        }
    };
    std::thread::scope(|scope| {
        let mut workers = items.len().clamp(1, FIRST_WORKERS);
        for _ in 0..workers {
            scope.spawn(work);
        }
        let mut before = 0;
        while next.load(Ordering::Relaxed) < items.len() && workers < CONCURRENCY {
            std::thread::sleep(RAMP);
            let now = done.load(Ordering::Relaxed);
            if now - before < workers {
                let more = workers.min(CONCURRENCY - workers);
                for _ in 0..more {
                    scope.spawn(work);
                }
                workers += more;
            }
            before = now;
        }
    });
}

/// Each target's [`Believer`]: one per master (and pid file), shared by its pools.
fn believers(targets: &[Target]) -> Vec<Arc<Believer>> {
    let mut by_master: BTreeMap<(&Path, Option<&Path>), Arc<Believer>> = BTreeMap::new();
    targets
        .iter()
        .map(|target| {
            let config = &target.config;
            by_master
                .entry((&config.lock, config.pid_file.as_deref()))
                .or_insert_with(|| Arc::new(believer_of(target)))
                .clone()
        })
        .collect()
}

/// What a target's answers are believed by: its php-fpm's master, or the master of the
/// configuration it is watched by.
pub(super) fn believer_of(target: &Target) -> Believer {
    Believer::new(&target.config, target.watched.as_deref())
}

/// The target's probe, its healthy answer believed as a classic run believes it (#18): from root's
/// listener, with a verified master of its php-fpm running.
pub(super) fn checked(config: &Config, state: &mut State, believer: &Believer) -> Verdict {
    let mut verdict = health::check(&config.probe, state);
    verdict.answer = believer.believe(config, verdict.clone());
    verdict
}

fn probe_one(target: &Target, believer: &Believer) -> Probed {
    let config = &target.config;
    let (mut state, before) = health::load_state(&config.probe.state);
    state.target = config.probe.target.to_string();
    let dormancy = config
        .on_demand
        .as_deref()
        .map_or(Dormancy::Awake, ondemand::dormancy);
    let verdict = (dormancy == Dormancy::Awake).then(|| checked(config, &mut state, believer));
    Probed {
        state,
        before,
        dormancy,
        verdict,
        fresh: None,
    }
}

/// The decision the answer calls for (as the pipeline will make it).
pub(super) fn decision(target: &Target, probed: &Probed) -> Decision {
    match (&probed.dormancy, &probed.verdict) {
        (Dormancy::Awake, Some(verdict)) => policy::decide(
            &verdict.answer,
            &target.config.relaunch_on,
            target.config.probe.target.is_fastcgi(),
        ),
        (Dormancy::Lost(_), _) => Decision::SocketLost,
        _ => Decision::Healthy,
    }
}

/// The pools of a just relaunched master that called for a relaunch too, asked again at once (at
/// most [`CONCURRENCY`] at a time), each within its own deadline, and believed only with the new
/// master verified.
pub(super) fn ask_again(targets: &[Target], members: &mut [(usize, Probed)]) {
    let mut due: Vec<&mut (usize, Probed)> = members
        .iter_mut()
        .filter(|(index, probed)| decision(&targets[*index], probed) == Decision::Relaunch)
        .collect();
    let Some((first, _)) = due.first() else {
        return;
    };
    let believer = believer_of(&targets[*first]);
    at_once(&mut due, |member| {
        let (index, probed) = &mut **member;
        probed.fresh = Some(checked(
            &targets[*index].config,
            &mut probed.state,
            &believer,
        ));
    });
}

/// A master's pools probed anew, their state read anew: after waiting for a lock another run held,
/// what that run did (a relaunch, its memory) is what this one judges.
pub(super) fn probe_again(targets: &[Target], members: &mut [(usize, Probed)]) {
    let Some((first, _)) = members.first() else {
        return;
    };
    let believer = believer_of(&targets[*first]);
    at_once(members, |(index, probed)| {
        *probed = probe_one(&targets[*index], &believer);
    });
}
