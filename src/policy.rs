//! Pure decisions: what an answer of the heartbeat calls for. No I/O.

use std::time::Duration;

use crate::probe::Answer;
use crate::state::{Incident, PendingMail, State};

/// What to do about one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 200–399: nothing.
    Healthy,
    /// php-fpm is dead or hung (a `--relaunch-on` status, or no complete answer in time): relaunch it.
    Relaunch,
    /// The web server itself is not answering (refused, DNS, broken connection): alert, leave php-fpm alone.
    WebServerDown,
    /// The heartbeat timed out through the web server, but php-fpm answers on its own sockets: the
    /// web server is hung. Alert, leave php-fpm alone (#18).
    WebServerHung,
    /// Any other status: alert only; a restart would hide an application error.
    UnexpectedStatus,
    /// php-fpm answered, but wrongly (`--expect`, a status threshold, a broken FastCGI reply): alert only.
    Unhealthy,
    /// `--on-demand`: no php-fpm runs and its socket is gone, stale or not listening. Alert only:
    /// its activator (the `.socket` unit) must be restarted; starting php-fpm by hand would not bring
    /// the socket back.
    SocketLost,
}

/// Classifies `answer` given the statuses that call for a relaunch. `fastcgi` says the probe went
/// straight to php-fpm, so nothing listening means php-fpm is down, not the web server.
pub fn decide(answer: &Answer, relaunch_on: &[u16], fastcgi: bool) -> Decision {
    match answer {
        Answer::Status(code) if relaunch_on.contains(code) => Decision::Relaunch,
        answer if answer.is_healthy() => Decision::Healthy,
        Answer::Status(_) => Decision::UnexpectedStatus,
        // Another user's listener answering where php-fpm should (#18): php-fpm is not serving.
        Answer::Timeout | Answer::Untrusted(_) => Decision::Relaunch,
        Answer::Refused(_) if fastcgi => Decision::Relaunch,
        Answer::Unhealthy(_) => Decision::Unhealthy,
        Answer::Dns(_) | Answer::Failed(_) if fastcgi => Decision::Unhealthy,
        Answer::Refused(_) | Answer::Dns(_) | Answer::Failed(_) => Decision::WebServerDown,
    }
}

/// Limits that keep relaunches from making things worse (#5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Consecutive failed runs before a relaunch (`--failures`).
    pub failures: u32,
    /// Relaunches allowed within `within` (`--max-restarts`).
    pub max_restarts: u32,
    /// The budget's window (`--within`).
    pub within: Duration,
    /// Consecutive healthy runs that restore a spent budget (`--recover-after`).
    pub recover_after: u32,
}

/// Why a run whose answer calls for a relaunch may not relaunch yet, given what earlier runs did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Not yet: this is failure `failures` of the `needed` in a row.
    Wait {
        /// Consecutive failures so far, this one included.
        failures: u32,
        /// How many make a relaunch.
        needed: u32,
    },
    /// The budget is spent: no relaunch. `first` when this run is the one that found it spent, and
    /// so sends the giving-up alert.
    GiveUp {
        /// Whether the giving-up alert is still to be sent.
        first: bool,
    },
    /// The previous relaunch's recovery window is still open for `left`.
    Cooldown {
        /// Time left in the window.
        left: Duration,
    },
}

/// The recovery window after a relaunch: twice what the relaunch took, at least 10 s.
pub fn cooldown(last_took: Option<Duration>) -> Duration {
    last_took
        .map_or(Duration::ZERO, |took| took * 2)
        .max(Duration::from_secs(10))
}

/// What holds a relaunch back now (`now` in unix seconds), if anything. `state.failures` counts this run.
pub fn hold(state: &State, limits: &Limits, now: i64) -> Option<Hold> {
    if state.failures < limits.failures {
        return Some(Hold::Wait {
            failures: state.failures,
            needed: limits.failures,
        });
    }
    if state.gave_up || budget_remaining(state, limits, now) == 0 {
        return Some(Hold::GiveUp {
            first: !state.gave_up,
        });
    }
    if let Some(&last) = state.relaunches.last() {
        let since = Duration::from_secs(u64::try_from(now.saturating_sub(last)).unwrap_or(0));
        let window = cooldown(state.last_took_ms.map(Duration::from_millis));
        if since < window {
            return Some(Hold::Cooldown {
                left: window.saturating_sub(since),
            });
        }
    }
    None
}

/// Relaunches still allowed within the budget's window at `now` (0 once it is spent).
pub fn budget_remaining(state: &State, limits: &Limits, now: i64) -> u32 {
    if state.gave_up {
        return 0;
    }
    let window = i64::try_from(limits.within.as_secs()).unwrap_or(i64::MAX);
    let recent = state
        .relaunches
        .iter()
        .filter(|&&at| now.saturating_sub(at) < window)
        .count();
    limits
        .max_restarts
        .saturating_sub(u32::try_from(recent).unwrap_or(u32::MAX))
}

/// Books a relaunch at `now` that took `took`; relaunches older than the budget's window are dropped.
pub fn record_relaunch(state: &mut State, limits: &Limits, now: i64, took: Duration) {
    let window = i64::try_from(limits.within.as_secs()).unwrap_or(i64::MAX);
    state
        .relaunches
        .retain(|&at| now.saturating_sub(at) < window);
    state.relaunches.push(now);
    state.last_took_ms = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
}

/// What a healthy run changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Recovery {
    /// The incident that just ended, if any.
    pub ended: Option<Incident>,
    /// Whether this run restored a spent budget.
    pub budget_restored: bool,
}

/// Books a healthy run: failures reset, successes counted (only as far as restoring the budget
/// needs, so a long healthy streak writes nothing), a spent budget restored after `recover_after`.
pub fn record_healthy(state: &mut State, limits: &Limits) -> Recovery {
    state.failures = 0;
    state.successes = (state.successes + 1).min(limits.recover_after.max(1));
    let mut recovery = Recovery {
        ended: state.incident.take(),
        budget_restored: false,
    };
    if state.gave_up && state.successes >= limits.recover_after {
        state.gave_up = false;
        state.give_up_unmailed = false;
        state.relaunches.clear();
        recovery.budget_restored = true;
    }
    recovery
}

/// Drops what the state says happened after `now`: the clock was stepped back (#13), and a relaunch
/// "in the future" would keep the cooldown open and the budget spent for as long. An incident that
/// began in the future begins now. Returns whether anything was discarded.
pub fn discard_future(state: &mut State, now: i64) -> bool {
    let before = state.relaunches.len();
    state.relaunches.retain(|&at| at <= now);
    let mut discarded = state.relaunches.len() != before;
    if let Some(incident) = state.incident.as_mut().filter(|i| i.since > now) {
        incident.since = now;
        discarded = true;
    }
    discarded
}

/// Books a failing run: an incident opens if none is open. Returns whether its alert is still due
/// (one alert per incident, not per run).
pub fn record_failure(state: &mut State, verdict: &str, now: i64) -> bool {
    state.successes = 0;
    let incident = state.incident.get_or_insert_with(|| Incident {
        since: now,
        verdict: verdict.to_owned(),
        alerted: false,
        healed: false,
    });
    incident.healed = false;
    !incident.alerted
}

/// What a run is to do about its answer, once policy has booked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Course {
    /// Healthy again: the incident is over. Its end is alerted when its start was.
    Recovered(Incident),
    /// Healthy for long enough: the spent budget is restored.
    BudgetRestored,
    /// Alert only, php-fpm left alone: the web server is down, or a relaunch would hide the problem.
    AlertOnly {
        /// Which problem.
        decision: Decision,
        /// Whether this incident's alert is still due.
        alert: bool,
    },
    /// A relaunch is called for, and the pause file exists.
    Paused,
    /// A relaunch is called for, and held back (a spent budget's first hold sends its alert).
    Held(Hold),
    /// Relaunch now.
    Relaunch {
        /// Whether this incident's alert is still due.
        alert: bool,
    },
}

/// Books a run's answer in `state` and says what the run is to do; `None` when it is healthy and
/// there is nothing to tell (no log line). The one place where a run's decisions are made and the
/// memory between runs changes (with [`book`] and [`alert_sent`] after the control acted). `paused`
/// is asked only when a relaunch is called for. An untrusted run (one a hook datagram started, which
/// anyone in the socket's group can send) may relaunch within the limits, but its healthy answer
/// changes nothing: it restores no budget, counts toward no `--recover-after`, and ends no incident
/// (so a failure toggled on and off between datagrams is one incident and one mail).
pub fn assess(
    state: &mut State,
    limits: &Limits,
    decision: Decision,
    verdict: &str,
    paused: impl FnOnce() -> bool,
    now: i64,
    trusted: bool,
) -> Option<Course> {
    let course = match decision {
        Decision::Healthy if !trusted => return None,
        Decision::Healthy => {
            let recovery = record_healthy(state, limits);
            match recovery.ended {
                Some(incident) => Course::Recovered(incident),
                None if recovery.budget_restored => Course::BudgetRestored,
                None => return None,
            }
        }
        Decision::WebServerDown
        | Decision::WebServerHung
        | Decision::UnexpectedStatus
        | Decision::Unhealthy
        | Decision::SocketLost => Course::AlertOnly {
            decision,
            alert: record_failure(state, verdict, now),
        },
        Decision::Relaunch => {
            state.failures = state.failures.saturating_add(1);
            state.successes = 0;
            if paused() {
                return Some(Course::Paused);
            }
            match hold(state, limits, now) {
                Some(give_up @ Hold::GiveUp { .. }) => {
                    record_failure(state, verdict, now);
                    state.gave_up = true;
                    Course::Held(give_up)
                }
                Some(held) => Course::Held(held),
                None => Course::Relaunch {
                    alert: record_failure(state, verdict, now),
                },
            }
        }
    };
    Some(course)
}

/// What the control did about a relaunch, as policy books it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Done {
    /// Nothing that counts against the budget (a dry run, a saturated pool, a failed config test,
    /// a php-fpm that could not even be found).
    Nothing,
    /// The heartbeat is healthy again without a relaunch (stuck workers were killed, or no replica
    /// of the pool needed one).
    Healthy,
    /// A relaunch that took `took`; `healthy` when the heartbeat came back.
    Relaunched {
        /// How long it took, verification included.
        took: Duration,
        /// Whether the heartbeat came back.
        healthy: bool,
    },
}

/// Books what the control did at `now`. A trusted run that brought the heartbeat back ends its
/// incident there: its alert says it is healthy again, so no "recovered" alert follows. An untrusted
/// one (a hook run) only marks it healed: anyone in the hook socket's group can start such runs, and
/// ending the incident would let each relaunch mail anew (#18); the next cron run ends it quietly.
pub fn book(state: &mut State, limits: &Limits, now: i64, done: Done, trusted: bool) {
    let healthy = match done {
        Done::Nothing => false,
        Done::Healthy => true,
        Done::Relaunched { took, healthy } => {
            record_relaunch(state, limits, now, took);
            healthy
        }
    };
    if healthy {
        state.failures = 0;
        match state.incident.as_mut() {
            Some(incident) if !trusted => incident.healed = true,
            _ => state.incident = None,
        }
    }
}

/// `idle-stop`: books whether the pool is idle now; whether it has been idle, without a break, for
/// `idle_for` (so it is to be stopped). Any busy moment starts the count again.
pub fn idle_long_enough(state: &mut State, idle: bool, now: i64, idle_for: Duration) -> bool {
    if !idle {
        state.idle_since = None;
        return false;
    }
    let since = *state.idle_since.get_or_insert(now);
    let idle_for = i64::try_from(idle_for.as_secs()).unwrap_or(i64::MAX);
    now.saturating_sub(since) >= idle_for
}

/// `idle-stop`: the pool was stopped, or nothing runs: its next idle time counts from when it runs.
pub fn asleep(state: &mut State) {
    state.idle_since = None;
}

/// `php-relaunch reset`: forgets the relaunches that spent the budget, so relaunching resumes.
/// Returns whether the budget was spent.
pub fn reset(state: &mut State) -> bool {
    let was_spent = state.gave_up;
    state.gave_up = false;
    state.give_up_unmailed = false;
    state.relaunches.clear();
    state.failures = 0;
    was_spent
}

/// Books that the open incident's alert went out (or was due with nobody to send it to).
pub fn alert_sent(state: &mut State) {
    if let Some(incident) = state.incident.as_mut() {
        incident.alerted = true;
    }
}

/// Whether an alert of `incident` (its start) is on its way already, handed over by a run that may
/// still book it: then no other is sent for it (#19).
pub fn mail_on_its_way(state: &State, incident: Option<i64>, now: i64) -> bool {
    state
        .mails_pending
        .iter()
        .any(|p| p.incident == incident && p.at <= now && now <= p.until)
}

/// Books the outcome of a mail handed over without the lock, into the state as it is now (other
/// runs may have changed it meanwhile): sent, its incident is told; failed, it is due again on the
/// incident's next run, the giving-up alert too, and an incident its relaunch ended is reopened
/// (healed, untold) unless another is open.
pub fn mail_outcome(state: &mut State, mail: &PendingMail, sent: bool) {
    let before = state.mails_pending.len();
    state.mails_pending.retain(|p| p != mail);
    let found = state.mails_pending.len() != before;
    if sent {
        if let Some(incident) = state
            .incident
            .as_mut()
            .filter(|i| Some(i.since) == mail.incident)
        {
            incident.alerted = true;
        }
        if mail.giving_up {
            state.give_up_unmailed = false;
        }
    } else if found {
        if state.incident.is_none() {
            state.incident.clone_from(&mail.reopen);
        }
        if mail.giving_up && state.gave_up {
            state.give_up_unmailed = true;
        }
    }
}

/// Mails whose run is over without booking them (ended by its deadline) count as failed, as do
/// mails handed over "in the future" (the clock was set back). Returns how many.
pub fn expire_mails(state: &mut State, now: i64) -> usize {
    let stale: Vec<PendingMail> = state
        .mails_pending
        .iter()
        .filter(|p| !(p.at <= now && now <= p.until))
        .cloned()
        .collect();
    for mail in &stale {
        mail_outcome(state, mail, false);
    }
    stale.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_the_future_are_discarded_and_relaunching_resumes() {
        let limits = Limits {
            failures: 1,
            max_restarts: 1,
            within: Duration::from_hours(1),
            recover_after: 2,
        };
        let now = 1_000_000;
        let mut state = State {
            failures: 1,
            relaunches: vec![now - 7200, now + 86_400],
            last_took_ms: Some(2000),
            incident: Some(Incident {
                since: now + 86_400,
                verdict: "502".into(),
                alerted: true,
                healed: false,
            }),
            ..State::default()
        };
        assert_eq!(
            hold(&state, &limits, now),
            Some(Hold::GiveUp { first: true }),
            "a relaunch 'tomorrow' spends the budget"
        );
        assert!(discard_future(&mut state, now));
        assert_eq!(state.relaunches, [now - 7200]);
        assert_eq!(state.incident.as_ref().unwrap().since, now);
        assert_eq!(hold(&state, &limits, now), None);
        assert!(!discard_future(&mut state, now), "said once");
    }

    #[test]
    fn classification_table() {
        let default = [502, 504];
        let old_script = [500, 502, 503, 504];
        let refused = || Answer::Refused("connection refused".into());
        let cases: &[(Answer, &[u16], Decision)] = &[
            (Answer::Status(200), &default, Decision::Healthy),
            (Answer::Status(204), &default, Decision::Healthy),
            (Answer::Status(301), &default, Decision::Healthy),
            (Answer::Status(399), &default, Decision::Healthy),
            (Answer::Status(502), &default, Decision::Relaunch),
            (Answer::Status(504), &default, Decision::Relaunch),
            (Answer::Timeout, &default, Decision::Relaunch),
            (Answer::Status(500), &default, Decision::UnexpectedStatus),
            (Answer::Status(503), &default, Decision::UnexpectedStatus),
            (Answer::Status(404), &default, Decision::UnexpectedStatus),
            (Answer::Status(101), &default, Decision::UnexpectedStatus),
            (Answer::Status(500), &old_script, Decision::Relaunch),
            (Answer::Status(503), &old_script, Decision::Relaunch),
            (refused(), &default, Decision::WebServerDown),
            (Answer::Dns("x".into()), &default, Decision::WebServerDown),
            (
                Answer::Failed("reset".into()),
                &default,
                Decision::WebServerDown,
            ),
            (
                Answer::Unhealthy("lacks pong".into()),
                &default,
                Decision::Unhealthy,
            ),
            (
                Answer::Untrusted("the port is held by uid 65534".into()),
                &default,
                Decision::Relaunch,
            ),
        ];
        for (answer, relaunch_on, want) in cases {
            assert_eq!(
                decide(answer, relaunch_on, false),
                *want,
                "http: {answer:?} with {relaunch_on:?}"
            );
        }
    }

    #[test]
    fn over_fastcgi_nothing_listening_means_php_fpm_is_down() {
        let cases = [
            (Answer::Status(200), Decision::Healthy),
            (Answer::Status(404), Decision::UnexpectedStatus),
            (Answer::Timeout, Decision::Relaunch),
            (Answer::Refused("no such socket".into()), Decision::Relaunch),
            (
                Answer::Refused("connection refused".into()),
                Decision::Relaunch,
            ),
            (
                Answer::Failed("bad FastCGI reply".into()),
                Decision::Unhealthy,
            ),
            (Answer::Dns("x".into()), Decision::Unhealthy),
            (
                Answer::Unhealthy("listen queue 3 > 2".into()),
                Decision::Unhealthy,
            ),
        ];
        for (answer, want) in cases {
            assert_eq!(
                decide(&answer, &[502, 504], true),
                want,
                "fastcgi: {answer:?}"
            );
        }
    }

    fn limits() -> Limits {
        Limits {
            failures: 2,
            max_restarts: 3,
            within: Duration::from_hours(1),
            recover_after: 3,
        }
    }

    fn state(failures: u32, relaunches: &[i64], took_ms: Option<u64>, gave_up: bool) -> State {
        State {
            failures,
            relaunches: relaunches.to_vec(),
            last_took_ms: took_ms,
            gave_up,
            ..State::default()
        }
    }

    #[test]
    fn relaunch_steps() {
        let now = 1_000_000;
        let cases = [
            // Below the failure threshold.
            (
                state(1, &[], None, false),
                Some(Hold::Wait {
                    failures: 1,
                    needed: 2,
                }),
            ),
            (state(2, &[], None, false), None),
            // Cooldown: at least 10 s, or twice the last relaunch.
            (
                state(2, &[now - 5], Some(1_000), false),
                Some(Hold::Cooldown {
                    left: Duration::from_secs(5),
                }),
            ),
            (state(2, &[now - 10], Some(1_000), false), None),
            (
                state(2, &[now - 20], Some(15_000), false),
                Some(Hold::Cooldown {
                    left: Duration::from_secs(10),
                }),
            ),
            (state(2, &[now - 30], Some(15_000), false), None),
            // Budget: 3 within the hour; older ones do not count.
            (
                state(2, &[now - 3000, now - 2000, now - 1000], None, false),
                Some(Hold::GiveUp { first: true }),
            ),
            (
                state(2, &[now - 4000, now - 2000, now - 1000], None, false),
                None,
            ),
            (
                state(5, &[now - 3000, now - 2000, now - 1000], None, true),
                Some(Hold::GiveUp { first: false }),
            ),
            // Once given up, it stays so until healthy runs restore the budget.
            (
                state(2, &[], None, true),
                Some(Hold::GiveUp { first: false }),
            ),
        ];
        for (state, want) in cases {
            assert_eq!(hold(&state, &limits(), now), want, "{state:?}");
        }
    }

    #[test]
    fn relaunches_are_booked_and_old_ones_forgotten() {
        let mut s = state(2, &[10, 3000], None, false);
        record_relaunch(&mut s, &limits(), 4000, Duration::from_millis(1500));
        assert_eq!(s.relaunches, [3000, 4000]);
        assert_eq!(s.last_took_ms, Some(1500));
    }

    #[test]
    fn healthy_runs_end_incidents_and_restore_the_budget() {
        let mut s = state(4, &[1, 2, 3], None, true);
        assert!(record_failure(&mut s, "502", 100));
        s.incident.as_mut().unwrap().alerted = true;
        assert!(
            !record_failure(&mut s, "timeout", 160),
            "one alert per incident"
        );
        assert_eq!(s.incident.as_ref().unwrap().verdict, "502");

        let first = record_healthy(&mut s, &limits());
        assert_eq!(first.ended.map(|i| i.since), Some(100));
        assert!(!first.budget_restored);
        assert_eq!(record_healthy(&mut s, &limits()), Recovery::default());
        let third = record_healthy(&mut s, &limits());
        assert!(third.budget_restored);
        assert!(!s.gave_up && s.relaunches.is_empty() && s.failures == 0);
        // A long healthy streak changes nothing more, so nothing is written.
        let before = s.clone();
        record_healthy(&mut s, &limits());
        assert_eq!(s, before);
    }

    #[test]
    fn cooldown_is_twice_the_relaunch_and_at_least_ten_seconds() {
        assert_eq!(cooldown(None), Duration::from_secs(10));
        assert_eq!(
            cooldown(Some(Duration::from_secs(2))),
            Duration::from_secs(10)
        );
        assert_eq!(
            cooldown(Some(Duration::from_secs(8))),
            Duration::from_secs(16)
        );
    }

    #[test]
    fn idle_time_counts_without_a_break() {
        let mut s = State::default();
        let idle_for = Duration::from_mins(1);
        assert!(!idle_long_enough(&mut s, true, 1000, idle_for), "just idle");
        assert!(!idle_long_enough(&mut s, true, 1059, idle_for));
        assert!(
            !idle_long_enough(&mut s, false, 1060, idle_for),
            "busy: the count starts again"
        );
        assert_eq!(s.idle_since, None);
        assert!(!idle_long_enough(&mut s, true, 1061, idle_for));
        assert!(idle_long_enough(&mut s, true, 1121, idle_for));
        asleep(&mut s);
        assert_eq!(s.idle_since, None);
    }

    fn pending(incident: i64) -> PendingMail {
        PendingMail {
            at: 1000,
            until: 1100,
            incident: Some(incident),
            giving_up: false,
            reopen: Some(Incident {
                since: incident,
                verdict: "502".into(),
                alerted: false,
                healed: true,
            }),
        }
    }

    /// #19: a mail on its way holds back another of its incident while its run may book it, and
    /// no other incident's.
    #[test]
    fn a_mail_on_its_way_holds_back_its_incidents_alert_while_its_run_lasts() {
        let mut s = State::default();
        s.mails_pending.push(pending(900));
        for (incident, now, held) in [
            (900, 1000, true),
            (900, 1100, true),
            (900, 1101, false),
            (900, 999, false),
            (950, 1050, false),
        ] {
            assert_eq!(
                mail_on_its_way(&s, Some(incident), now),
                held,
                "{incident} {now}"
            );
        }
    }

    /// #19: booked once. Sent, the incident is told; failed, an incident its relaunch ended is
    /// reopened healed and untold (the next healthy run tells it); a mail whose run is over counts
    /// as failed once, and its run's late booking changes nothing more.
    #[test]
    fn a_pending_mails_outcome_is_booked_once() {
        let mut s = State {
            incident: Some(Incident {
                since: 900,
                verdict: "502".into(),
                alerted: false,
                healed: false,
            }),
            ..State::default()
        };
        let mail = pending(900);
        s.mails_pending.push(mail.clone());
        mail_outcome(&mut s, &mail, true);
        assert!(s.incident.as_ref().unwrap().alerted);
        assert!(s.mails_pending.is_empty());

        let mut s = State::default();
        s.mails_pending.push(mail.clone());
        assert_eq!(expire_mails(&mut s, 1050), 0);
        assert_eq!(expire_mails(&mut s, 1101), 1);
        assert_eq!(s.incident, mail.reopen);
        s.incident = None;
        mail_outcome(&mut s, &mail, false);
        assert_eq!(s.incident, None, "counted as failed once");
    }
}
