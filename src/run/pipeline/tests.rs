//! Every decision path of a run, against a scripted host: no root, no servers, no sleeping.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Result, bail};

use super::{check, deliver};
use crate::alert::Alert;
use crate::cli::{self, Invocation};
use crate::config::Config;
use crate::exit::Exit;
use crate::fpm::{Plan, Relaunch, Step, StuckKill};
use crate::journal;
use crate::load::Load;
use crate::ondemand::Dormancy;
use crate::pools::{Balancer, Pool, Replica, Standing};
use crate::probe::status::Counters;
use crate::probe::{Answer, Verdict};
use crate::report::{Report, Trigger};
use crate::run::host::{Found, FoundReplicas, Host};
use crate::state::{Incident, State};

const NOW: i64 = 1_800_000_000;

/// A machine that answers as the test says and writes down what was asked of it.
#[allow(clippy::struct_excessive_bools)] // a scripted host: each bool is one switch a test flips
struct Fake {
    /// The first probe's answer.
    answer: Answer,
    /// What each verification finds, in turn (then: still failing).
    verifications: VecDeque<bool>,
    paused: bool,
    /// What `inspect` finds; `None` for an error.
    found: Option<Found>,
    /// Steps that fail when taken.
    failing_steps: Vec<Step>,
    config_ok: bool,
    stuck_killed: Vec<u32>,
    mail_fails: bool,
    /// `--pool`: the replicas failing their ping, and how relaunching each goes (`None`: an error).
    replicas: Vec<(&'static str, Option<Relaunch>)>,
    /// `--on-demand`: what the socket says.
    dormancy: Dormancy,
    /// After a timeout: whether the web server hangs on a page outside PHP too.
    web_hangs: bool,
    /// After a timeout: the sockets php-fpm answered on itself, if it does.
    fpm_answers: Option<String>,
    /// The status page's counters each probe reads (and, as the real probe does, books in the state).
    counters: Option<Counters>,
    /// The clock, unix seconds.
    at: i64,
    /// Everything done, in order.
    did: Vec<String>,
    sent: Vec<Alert>,
}

impl Fake {
    fn answering(answer: Answer) -> Fake {
        Fake {
            answer,
            verifications: VecDeque::new(),
            paused: false,
            found: Some(found(Some(100), Plan::Restart, None)),
            failing_steps: Vec::new(),
            config_ok: true,
            stuck_killed: Vec::new(),
            mail_fails: false,
            replicas: Vec::new(),
            dormancy: Dormancy::Awake,
            counters: None,
            web_hangs: false,
            fpm_answers: None,
            at: NOW,
            did: Vec::new(),
            sent: Vec::new(),
        }
    }

    fn verifying(mut self, answers: &[bool]) -> Fake {
        self.verifications = answers.iter().copied().collect();
        self
    }

    fn finding(mut self, found: Option<Found>) -> Fake {
        self.found = found;
        self
    }

    fn subjects(&self) -> Vec<&str> {
        self.sent.iter().map(|a| a.subject.as_str()).collect()
    }
}

fn found(master: Option<u32>, plan: Plan, load: Option<Load>) -> Found {
    Found {
        master,
        processes: Vec::new(),
        plan,
        load,
    }
}

fn load(busy: usize, total: usize, stuck: &[(u32, u64)]) -> Load {
    Load {
        busy,
        total,
        stuck: stuck
            .iter()
            .map(|&(pid, secs)| (pid, Duration::from_secs(secs)))
            .collect(),
        source: "status page",
        raw: None,
        pool: None,
    }
}

impl Host for Fake {
    fn now(&self) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(self.at.unsigned_abs())
    }

    fn dormancy(&mut self) -> Dormancy {
        self.did.push("dormancy".into());
        self.dormancy.clone()
    }

    fn probe(&mut self, state: &mut State) -> Verdict {
        self.did.push("probe".into());
        if let Some(counters) = self.counters {
            state.status = Some(counters);
        }
        Verdict {
            answer: self.answer.clone(),
            latency: Duration::from_millis(3),
            body: Vec::new(),
            stderr: None,
            listener: None,
        }
    }

    /// Written down only when it hangs, so the other paths read as before.
    fn web_server_hangs(&mut self) -> bool {
        if self.web_hangs {
            self.did.push("web server hangs".into());
        }
        self.web_hangs
    }

    /// Written down only when php-fpm answers, so the other paths read as before.
    fn fpm_answers(&mut self) -> Option<String> {
        if self.fpm_answers.is_some() {
            self.did.push("php-fpm answers".into());
        }
        self.fpm_answers.clone()
    }

    fn verify(&mut self) -> (bool, Answer) {
        self.did.push("verify".into());
        let healthy = self.verifications.pop_front().unwrap_or(false);
        let answer = if healthy {
            Answer::Status(200)
        } else {
            self.answer.clone()
        };
        (healthy, answer)
    }

    fn paused(&self) -> bool {
        self.paused
    }

    fn inspect(&mut self) -> Result<Found> {
        self.did.push("inspect".into());
        match &self.found {
            Some(found) => Ok(found.clone()),
            None => bail!("no php-fpm service found: name it with --service"),
        }
    }

    fn kill_stuck(&mut self, pids: &[u32]) -> Result<StuckKill> {
        self.did.push(format!("kill-stuck {pids:?}"));
        Ok(StuckKill {
            killed: self.stuck_killed.clone(),
            refused: pids
                .iter()
                .filter(|p| !self.stuck_killed.contains(p))
                .copied()
                .collect(),
        })
    }

    fn test_config(&mut self) -> Result<()> {
        self.did.push("test-config".into());
        if self.config_ok {
            Ok(())
        } else {
            bail!("ERROR: [pool www] unknown entry 'pm.max_chlidren'")
        }
    }

    fn take(&mut self, step: Step) -> Result<()> {
        self.did.push(step.as_str().into());
        if self.failing_steps.contains(&step) {
            bail!("`service php8.2-fpm {}` failed", step.as_str());
        }
        Ok(())
    }

    fn relaunch_cgi(&mut self, done: &mut Relaunch) {
        self.did.push("cgi".into());
        done.step(Step::CgiStart, Ok(()));
    }

    fn master_pid(&mut self) -> Option<u32> {
        Some(200)
    }

    fn failing_replicas(&mut self) -> FoundReplicas {
        self.did.push("ping replicas".into());
        FoundReplicas {
            failing: self.replicas.iter().map(|(n, _)| (*n).to_owned()).collect(),
            processes: Vec::new(),
        }
    }

    fn relaunch_replica(&mut self, name: &str) -> Result<Relaunch> {
        self.did.push(format!("relaunch {name}"));
        match self.replicas.iter().find(|(n, _)| *n == name) {
            Some((_, Some(done))) => Ok(done.clone()),
            _ => bail!("cannot read {name}'s config"),
        }
    }

    fn evidence(&mut self, _report: &Report, _status_page: Option<&str>) -> String {
        self.did.push("evidence".into());
        "Evidence file: /var/lib/php-relaunch/evidence/x.txt".into()
    }

    fn hostname(&self) -> String {
        "web1".into()
    }

    fn send(&mut self, alert: &Alert) -> Result<()> {
        self.did.push("mail".into());
        if self.mail_fails {
            bail!("connection refused");
        }
        self.sent.push(alert.clone());
        Ok(())
    }
}

/// The configuration of `php-relaunch URL 2 ops@example.com EXTRA…`.
fn config(extra: &[&str]) -> Config {
    let url = "http://127.0.0.1:8889/php-heartbeat.php";
    configured(&[&[url, "2", "ops@example.com"], extra].concat())
}

/// The configuration of `php-relaunch ARGS…`.
fn configured(args: &[&str]) -> Config {
    let args: Vec<OsString> = std::iter::once("php-relaunch")
        .chain(args.iter().copied())
        .map(OsString::from)
        .collect();
    let Ok(Invocation::Run(run)) = cli::parse(&args) else {
        panic!("{args:?} must parse");
    };
    Config::from_run(*run).unwrap()
}

/// One run: its report (`None` when quiet), booked in `state`, its alert sent and its outcome
/// booked as the run does it once it let go of the lock.
fn run(config: &Config, state: &mut State, host: &mut Fake) -> Option<Report> {
    let (_, mut report, outgoing) = check(config, state, host, Trigger::Cron, || {});
    if let (Some(report), Some(outgoing)) = (report.as_mut(), outgoing) {
        let sent = deliver(host, report, &outgoing.alert);
        crate::policy::mail_outcome(state, &outgoing.pending, sent);
    }
    report
}

/// The log line's fields that a test compares: verdict, action, old and new pid, state, mail.
fn fields(report: &Report) -> String {
    let line = journal::line(report);
    line.split_whitespace()
        .filter(|f| {
            [
                "verdict=", "action=", "old_pid=", "new_pid=", "state=", "mail=",
            ]
            .iter()
            .any(|k| f.starts_with(k))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn healthy_is_quiet_and_touches_nothing() {
    let config = config(&[]);
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Status(200));
    assert_eq!(run(&config, &mut state, &mut host), None);
    assert_eq!(host.did, ["probe"]);
    assert_eq!(
        state,
        State {
            successes: 1,
            ..State::default()
        }
    );
}

/// A relaunch: what the host answers and finds, what was done, the log line's fields, the exit.
struct Case {
    what: &'static str,
    answer: Answer,
    found: Found,
    failing: &'static [Step],
    verifications: &'static [bool],
    did: &'static [&'static str],
    fields: &'static str,
    exit: Exit,
}

fn relaunch_cases() -> [Case; 4] {
    use Step::Restart;
    [
        Case {
            what: "502 and no master: start",
            answer: Answer::Status(502),
            found: found(None, Plan::Start, None),
            failing: &[],
            verifications: &[true],
            did: &["probe", "inspect", "evidence", "start", "verify", "mail"],
            fields: "verdict=502 action=start old_pid=- new_pid=200 state=healthy mail=sent",
            exit: Exit::Recovered,
        },
        Case {
            what: "timeout: restart, which does not help, then kill and start",
            answer: Answer::Timeout,
            found: found(Some(100), Plan::Restart, None),
            failing: &[],
            verifications: &[false, true],
            did: &[
                "probe",
                "inspect",
                "test-config",
                "evidence",
                "restart",
                "verify",
                "kill",
                "start",
                "verify",
                "mail",
            ],
            fields: "verdict=timeout action=restart+kill+start old_pid=100 new_pid=200 state=healthy mail=sent",
            exit: Exit::Recovered,
        },
        Case {
            what: "a stopped master: kill and start at once",
            answer: Answer::Timeout,
            found: found(Some(100), Plan::KillStart, None),
            failing: &[],
            verifications: &[true],
            did: &[
                "probe", "inspect", "evidence", "kill", "start", "verify", "mail",
            ],
            fields: "verdict=timeout action=kill+start old_pid=100 new_pid=200 state=healthy mail=sent",
            exit: Exit::Recovered,
        },
        Case {
            what: "nothing helps: still down",
            answer: Answer::Status(502),
            found: found(Some(100), Plan::Restart, None),
            failing: &[Restart],
            verifications: &[],
            did: &[
                "probe",
                "inspect",
                "test-config",
                "evidence",
                "restart",
                "kill",
                "start",
                "verify",
                "mail",
            ],
            fields: "verdict=502 action=restart+kill+start old_pid=100 new_pid=200 state=down mail=sent",
            exit: Exit::Failing,
        },
    ]
}

#[test]
fn relaunch_paths() {
    for case in relaunch_cases() {
        let config = config(&[]);
        let mut state = State::default();
        let mut host = Fake::answering(case.answer)
            .finding(Some(case.found))
            .verifying(case.verifications);
        host.failing_steps = case.failing.to_vec();
        let report = run(&config, &mut state, &mut host).expect(case.what);
        assert_eq!(host.did, case.did, "{}", case.what);
        assert_eq!(fields(&report), case.fields, "{}", case.what);
        assert_eq!(report.exit(), case.exit, "{}", case.what);
        assert_eq!(state.relaunches, [NOW], "{}: booked", case.what);
        assert_eq!(host.sent.len(), 1, "{}: one alert", case.what);
        if case.exit == Exit::Recovered {
            assert_eq!(state.incident, None, "{}: the relaunch ended it", case.what);
            assert_eq!(state.failures, 0);
        } else {
            let error = report.error.as_deref().unwrap_or_default();
            assert!(
                error.contains("restart: `service php8.2-fpm restart` failed")
                    && error.ends_with("heartbeat still answers 502"),
                "{error}"
            );
            assert!(state.incident.as_ref().is_some_and(|i| i.alerted));
        }
    }
}

#[test]
fn an_answer_a_relaunch_cannot_fix_is_alerted_once_per_incident() {
    let config = config(&[]);
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Refused("connection refused".into()));
    let first = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        fields(&first),
        "verdict=refused action=none old_pid=- new_pid=- state=web-server-down mail=sent"
    );
    assert_eq!(first.exit(), Exit::Alerted);
    assert_eq!(first.error.as_deref(), Some("connection refused"));
    let second = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(second.mail.to_string(), "none");
    assert_eq!(host.did.iter().filter(|d| *d == "mail").count(), 1);
    assert!(
        !host.did.iter().any(|d| d == "inspect"),
        "php-fpm left alone"
    );
    assert_eq!(
        host.subjects(),
        ["php-relaunch on web1: web server unreachable (refused)"]
    );
}

#[test]
fn below_the_failure_threshold_nothing_is_done() {
    let config = config(&["--failures", "3"]);
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Status(502)).verifying(&[true]);
    for n in 1..=2 {
        let report = run(&config, &mut state, &mut host).unwrap();
        assert_eq!(report.state.to_string(), "failing");
        assert_eq!(
            report.error,
            Some(format!("failure {n} of 3 before a relaunch"))
        );
        assert_eq!(report.exit(), Exit::Failing);
    }
    assert_eq!(host.did, ["probe", "probe"]);
    let third = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        third.exit(),
        Exit::Recovered,
        "the third failure relaunches"
    );
}

#[test]
fn a_pause_file_changes_nothing() {
    let config = config(&[]);
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Status(502));
    host.paused = true;
    let report = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        fields(&report),
        "verdict=502 action=none old_pid=- new_pid=- state=paused mail=none"
    );
    assert_eq!(
        report.error.as_deref(),
        Some("pause file '/etc/php-relaunch/pause' exists: changing nothing")
    );
    assert_eq!(report.exit(), Exit::Failing);
    assert_eq!(host.did, ["probe"]);
}

#[test]
fn a_spent_budget_gives_up_with_one_alert_and_healthy_runs_restore_it() {
    let config = config(&["--max-restarts", "1", "--recover-after", "2"]);
    let mut state = State {
        relaunches: vec![NOW - 600],
        ..State::default()
    };
    let mut host = Fake::answering(Answer::Status(502));
    let first = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        fields(&first),
        "verdict=502 action=gave-up old_pid=- new_pid=- state=down mail=sent"
    );
    assert!(
        first
            .error
            .unwrap()
            .starts_with("restart budget spent (1 relaunches within 3600s)")
    );
    let second = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        fields(&second),
        "verdict=502 action=none old_pid=- new_pid=- state=down mail=none"
    );
    assert_eq!(
        host.subjects(),
        ["php-relaunch on web1: giving up: restart budget spent (502)"]
    );
    assert!(!host.did.iter().any(|d| d == "inspect"), "no relaunch");
    assert!(state.gave_up);

    host.answer = Answer::Status(200);
    let recovered = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(recovered.state.to_string(), "recovered");
    assert!(state.gave_up, "one healthy run is not enough");
    let restored = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        fields(&restored),
        "verdict=200 action=budget-restored old_pid=- new_pid=- state=healthy mail=none"
    );
    assert_eq!(restored.exit(), Exit::Healthy);
    assert!(!state.gave_up && state.relaunches.is_empty());
}

#[test]
fn the_recovery_window_after_a_relaunch_holds_the_next_one_back() {
    let config = config(&[]);
    let mut state = State {
        relaunches: vec![NOW - 5],
        last_took_ms: Some(4000),
        ..State::default()
    };
    let mut host = Fake::answering(Answer::Timeout);
    let report = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(report.state.to_string(), "cooldown");
    assert_eq!(
        report.error.as_deref(),
        Some("the previous relaunch's recovery window is open for 5s more")
    );
    assert_eq!(host.did, ["probe"]);
}

#[test]
fn a_saturated_pool_is_alerted_unless_relaunching_it_is_allowed() {
    let saturated = || Some(found(Some(100), Plan::Restart, Some(load(5, 5, &[]))));
    let mut host = Fake::answering(Answer::Timeout).finding(saturated());
    let report = run(&config(&[]), &mut State::default(), &mut host).unwrap();
    assert_eq!(report.state.to_string(), "saturated");
    assert_eq!(report.exit(), Exit::Alerted);
    assert!(
        report
            .error
            .unwrap()
            .contains("not relaunched, which would drop their requests")
    );
    assert_eq!(host.did, ["probe", "inspect", "mail"]);

    let mut host = Fake::answering(Answer::Timeout)
        .finding(saturated())
        .verifying(&[true]);
    let report = run(
        &config(&["--relaunch-saturated"]),
        &mut State::default(),
        &mut host,
    )
    .unwrap();
    assert_eq!(report.action.to_string(), "restart");
    assert_eq!(report.exit(), Exit::Recovered);
}

#[test]
fn a_dry_run_says_a_saturated_pool_would_be_alerted_not_relaunched() {
    let saturated = || Some(found(Some(100), Plan::Restart, Some(load(5, 5, &[]))));
    let mut host = Fake::answering(Answer::Timeout).finding(saturated());
    let report = run(&config(&["--dry-run"]), &mut State::default(), &mut host).unwrap();
    assert_eq!(
        fields(&report),
        "verdict=timeout action=none old_pid=100 new_pid=- state=saturated mail=none"
    );
    assert_eq!(report.exit(), Exit::Alerted);
    assert_eq!(host.did, ["probe", "inspect"]);
}

#[test]
fn stuck_workers_are_killed_and_that_is_enough() {
    let config = config(&[]);
    let mut state = State::default();
    let stuck = load(2, 5, &[(41, 400), (42, 300)]);
    let mut host = Fake::answering(Answer::Timeout)
        .finding(Some(found(Some(100), Plan::Restart, Some(stuck))))
        .verifying(&[true]);
    host.stuck_killed = vec![41];
    let report = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        fields(&report),
        "verdict=timeout action=kill-stuck old_pid=200 new_pid=200 state=healthy mail=sent"
    );
    assert_eq!(
        report.error.as_deref(),
        Some(
            "killed workers stuck in one request: 41 (400s); not killed, not workers of the verified master: 42"
        )
    );
    assert_eq!(report.exit(), Exit::Recovered);
    assert_eq!(
        host.did,
        ["probe", "inspect", "kill-stuck [41, 42]", "verify", "mail"]
    );
    assert!(state.relaunches.is_empty(), "not a relaunch");
    assert_eq!((state.failures, state.incident.clone()), (0, None));
    assert_eq!(
        host.subjects(),
        ["php-relaunch on web1: stuck php-fpm workers killed (timeout)"]
    );
}

#[test]
fn a_failing_config_test_leaves_the_master_running() {
    let mut host = Fake::answering(Answer::Status(502));
    host.config_ok = false;
    let report = run(&config(&[]), &mut State::default(), &mut host).unwrap();
    assert_eq!(report.state.to_string(), "config-error");
    assert_eq!(report.exit(), Exit::Failing);
    assert_eq!(
        report.error.as_deref(),
        Some(
            "config test failed, php-fpm left running: ERROR: [pool www] unknown entry 'pm.max_chlidren'"
        )
    );
    assert_eq!(host.did, ["probe", "inspect", "test-config", "mail"]);
    assert_eq!(
        host.subjects(),
        ["php-relaunch on web1: php-fpm config test failed, not relaunched (502)"]
    );
}

#[test]
fn the_end_of_an_alerted_incident_is_mailed_once() {
    let config = config(&[]);
    let since = NOW - 120;
    let mut state = State {
        incident: Some(Incident {
            since,
            verdict: "unhealthy".into(),
            alerted: true,
            healed: false,
        }),
        ..State::default()
    };
    let mut host = Fake::answering(Answer::Status(200));
    let report = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(report.state.to_string(), "recovered");
    assert_eq!(report.exit(), Exit::Healthy);
    assert!(report.error.unwrap().starts_with("failing since "));
    assert_eq!(run(&config, &mut state, &mut host), None, "said once");
    assert_eq!(
        host.subjects(),
        ["php-relaunch on web1: heartbeat healthy again"]
    );

    // An incident nobody was told of ends without a mail.
    state.incident = Some(Incident {
        since,
        verdict: "502".into(),
        alerted: false,
        healed: false,
    });
    let report = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(report.mail.to_string(), "none");
    assert_eq!(host.sent.len(), 1);
}

#[test]
fn a_dry_run_decides_and_changes_nothing() {
    let mut host = Fake::answering(Answer::Status(502));
    let report = run(&config(&["--dry-run"]), &mut State::default(), &mut host).unwrap();
    assert_eq!(
        fields(&report),
        "verdict=502 action=would-restart old_pid=100 new_pid=- state=down mail=none"
    );
    assert_eq!(report.exit(), Exit::Failing);
    assert_eq!(host.did, ["probe", "inspect"]);
}

#[test]
fn a_php_fpm_that_cannot_be_found_is_reported_not_guessed() {
    let mut host = Fake::answering(Answer::Status(502)).finding(None);
    let report = run(&config(&[]), &mut State::default(), &mut host).unwrap();
    assert_eq!(report.state.to_string(), "down");
    assert_eq!(
        report.error.as_deref(),
        Some("no php-fpm service found: name it with --service")
    );
    assert_eq!(host.did, ["probe", "inspect", "mail"]);
}

#[test]
fn a_mail_that_cannot_be_sent_is_said_in_the_line() {
    let mut host = Fake::answering(Answer::Status(502)).verifying(&[true]);
    host.mail_fails = true;
    let report = run(&config(&[]), &mut State::default(), &mut host).unwrap();
    assert_eq!(report.mail.to_string(), "failed");
    assert_eq!(report.mail_error.as_deref(), Some("connection refused"));
    // php-fpm is healthy again: the line's error= does not say otherwise (#19).
    assert_eq!(report.state.to_string(), "healthy");
    assert_eq!(report.error, None);
    assert!(journal::line(&report).contains(" mail_error=\"connection refused\""));
}

/// #19: a failed mail used to be booked as sent, so the incident was never told. Now it is due
/// again on the next run of the incident, and booked once it goes; the giving-up alert too.
#[test]
fn a_failed_mail_is_tried_again_on_the_next_run_of_the_incident() {
    let config = config(&["--max-restarts", "3", "--within", "1h"]);
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Status(502));
    host.mail_fails = true;
    let first = run(&config, &mut state, &mut host).unwrap();
    assert!(first.action.to_string().starts_with("restart"), "{first:?}");
    assert_eq!(first.mail.to_string(), "failed");
    host.mail_fails = false;
    host.at += 600;
    let second = run(&config, &mut state, &mut host).unwrap();
    assert!(
        second.action.to_string().starts_with("restart"),
        "{second:?}"
    );
    assert_eq!(
        second.mail.to_string(),
        "sent",
        "the incident's mail, at last"
    );
    // Booked now: the next run of the incident says nothing more.
    host.at += 600;
    let third = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(third.mail.to_string(), "none");
    assert_eq!(host.sent.len(), 1);

    // The giving-up alert alone fails: tried again on the next held run, then never more.
    let mut state = State {
        relaunches: vec![NOW - 60],
        ..State::default()
    };
    let mut host = Fake::answering(Answer::Status(502));
    host.mail_fails = true;
    let config = configured(&[
        "http://127.0.0.1:8889/php-heartbeat.php",
        "2",
        "ops@example.com",
        "--max-restarts",
        "1",
        "--within",
        "1h",
    ]);
    let gave_up = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        (
            gave_up.action.to_string().as_str(),
            gave_up.mail.to_string().as_str()
        ),
        ("gave-up", "failed")
    );
    host.mail_fails = false;
    let again = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(again.mail.to_string(), "sent");
    assert!(
        host.sent[0].subject.contains("giving up"),
        "{:?}",
        host.sent[0].subject
    );
    let after = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(after.mail.to_string(), "none");
    assert_eq!(host.sent.len(), 1);
}

#[test]
fn php_cgi_is_relaunched_after_php_fpm() {
    let mut host = Fake::answering(Answer::Status(502)).verifying(&[true]);
    let report = run(&config(&["1"]), &mut State::default(), &mut host).unwrap();
    assert_eq!(report.action.to_string(), "restart+cgi-start");
}

#[test]
fn no_recipients_no_mail_but_the_incident_counts_as_told() {
    let args = [
        "php-relaunch",
        "http://127.0.0.1:8889/php-heartbeat.php",
        "2",
    ];
    let args: Vec<OsString> = args.iter().map(OsString::from).collect();
    let Ok(Invocation::Run(run_args)) = cli::parse(&args) else {
        panic!()
    };
    let config = Config::from_run(*run_args).unwrap();
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Status(503));
    let report = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(report.mail.to_string(), "none");
    assert!(host.sent.is_empty());
    assert!(state.incident.is_some_and(|i| i.alerted));
}

/// A balancer the pool tests never reach: replicas are the fake host's business.
#[derive(Debug)]
struct Untouched;

impl Balancer for Untouched {
    fn name(&self) -> &'static str {
        "untouched"
    }

    fn standing(&self, _replica: &Replica) -> Standing {
        unreachable!("a run never asks the balancer")
    }

    fn drain(
        &self,
        _replica: &Replica,
        _until: Instant,
        _say: &mut dyn FnMut(String),
    ) -> Result<()> {
        unreachable!("a run never drains")
    }

    fn restore(&self, _replica: &Replica, _say: &mut dyn FnMut(String)) -> Result<()> {
        unreachable!("a run never restores")
    }
}

/// `--pool www`.
fn pool_config(extra: &[&str]) -> Config {
    let mut config = config(extra);
    config.pool = Some(Pool {
        name: "www".into(),
        balancer: Arc::new(Untouched),
        release_link: None,
        drain_timeout: Duration::from_secs(30),
        replicas: Vec::new(),
    });
    config
}

fn relaunched(steps: &[Step], healthy: bool, errors: &[&str]) -> Relaunch {
    Relaunch {
        steps: steps.to_vec(),
        healthy,
        errors: errors.iter().map(|e| (*e).to_owned()).collect(),
    }
}

#[test]
fn a_pool_relaunches_just_its_failing_replicas() {
    let config = pool_config(&[]);
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Status(502)).verifying(&[true]);
    host.replicas = vec![
        ("www/1", Some(relaunched(&[Step::Restart], true, &[]))),
        ("www/3", None),
    ];
    let report = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        fields(&report),
        "verdict=502 action=www/1:restart old_pid=- new_pid=- state=healthy mail=sent"
    );
    assert_eq!(
        report.error.as_deref(),
        Some("www/3: cannot read www/3's config")
    );
    assert_eq!(report.exit(), Exit::Recovered);
    assert_eq!(
        host.did,
        [
            "probe",
            "ping replicas",
            "evidence",
            "relaunch www/1",
            "relaunch www/3",
            "verify",
            "mail"
        ]
    );
    assert_eq!(state.relaunches, [NOW]);
    assert_eq!(state.incident, None);
}

#[test]
fn a_pool_whose_replicas_all_answer_but_whose_heartbeat_fails_is_down_and_not_booked() {
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Status(502));
    let report = run(&pool_config(&[]), &mut state, &mut host).unwrap();
    assert_eq!(
        fields(&report),
        "verdict=502 action=none old_pid=- new_pid=- state=down mail=sent"
    );
    assert_eq!(report.error.as_deref(), Some("heartbeat still answers 502"));
    assert!(state.relaunches.is_empty());
}

#[test]
fn a_pool_in_a_dry_run_names_the_replicas_it_would_relaunch() {
    let mut host = Fake::answering(Answer::Timeout);
    host.replicas = vec![("www/1", None), ("www/2", None)];
    let report = run(
        &pool_config(&["--dry-run"]),
        &mut State::default(),
        &mut host,
    )
    .unwrap();
    assert_eq!(report.action.to_string(), "would-relaunch:www/1,www/2");
    assert_eq!(host.did, ["probe", "ping replicas"]);
    assert_eq!(report.exit(), Exit::Failing);
}

#[test]
fn a_hook_run_always_tells_even_when_healthy() {
    let mut host = Fake::answering(Answer::Status(200));
    let trigger = Trigger::Hook {
        events: 3,
        ignored: 1,
    };
    let (seen, report, _) = check(
        &config(&[]),
        &mut State::default(),
        &mut host,
        trigger,
        || {},
    );
    assert!(seen.up);
    let report = report.unwrap();
    assert_eq!(
        fields(&report),
        "verdict=200 action=none old_pid=- new_pid=- state=healthy mail=none"
    );
    assert!(
        journal::line(&report).ends_with(" trigger=hook events=3 ignored=1\n"),
        "{}",
        journal::line(&report)
    );
    assert_eq!(report.exit(), Exit::Healthy);
    assert_eq!(host.did, ["probe"]);
}

#[test]
fn an_on_demand_pool_that_sleeps_is_healthy_without_a_request() {
    let on_demand = ["--on-demand"];
    let target = "unix:///run/php-fpm-ondemand/www.sock;/ping";
    let config = configured(&[target, "2", "ops@example.com", on_demand[0]]);
    let mut host = Fake::answering(Answer::Status(502));
    host.dormancy = Dormancy::Asleep;
    assert_eq!(run(&config, &mut State::default(), &mut host), None);
    assert_eq!(host.did, ["dormancy"], "no probe: it would start php-fpm");

    let dry = configured(&[target, "2", "", "--on-demand", "--dry-run"]);
    let report = run(&dry, &mut State::default(), &mut host).unwrap();
    assert_eq!(
        fields(&report),
        "verdict=- action=none old_pid=- new_pid=- state=idle mail=none"
    );

    host.dormancy = Dormancy::Awake;
    host.did.clear();
    let report = run(&config, &mut State::default(), &mut host).unwrap();
    assert_eq!(
        host.did[..2],
        ["dormancy", "probe"],
        "awake: probed as usual"
    );
    assert_eq!(report.verdict(), "502");
}

#[test]
fn an_on_demand_pool_whose_socket_is_lost_is_alerted_once_never_started() {
    let config = configured(&[
        "unix:///run/php-fpm-ondemand/shop.sock;/ping",
        "2",
        "ops@example.com",
        "--on-demand",
    ]);
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Status(200));
    let why = "no php-fpm runs and its socket /run/php-fpm-ondemand/shop.sock is gone: \
               systemctl restart php-fpm-ondemand@shop.socket";
    host.dormancy = Dormancy::Lost(why.into());
    let report = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        fields(&report),
        "verdict=- action=none old_pid=- new_pid=- state=socket-lost mail=sent"
    );
    assert_eq!(report.error.as_deref(), Some(why));
    assert_eq!(report.exit(), Exit::Alerted);
    let again = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(again.mail.to_string(), "none", "one alert per incident");
    assert!(
        !host
            .did
            .iter()
            .any(|d| ["inspect", "start", "probe"].contains(&d.as_str()))
    );
}

#[test]
fn an_untrusted_listener_is_relaunched_for_and_named_whatever_the_run_did() {
    let config = config(&[]);
    let why = "the port that answered is held by uid 65534, not by root: not believed";
    // php-fpm dead, another user's listener on its port: a start that does not help.
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Untrusted(why.into()))
        .finding(Some(found(None, Plan::Start, None)))
        .verifying(&[false]);
    host.failing_steps = vec![Step::Start];
    let report = run(&config, &mut state, &mut host).unwrap();
    assert!(
        fields(&report).starts_with("verdict=untrusted-listener action=start"),
        "{}",
        fields(&report)
    );
    assert!(
        fields(&report).contains("state=down"),
        "{}",
        fields(&report)
    );
    assert!(
        report.error.as_deref().is_some_and(|e| e.starts_with(why)),
        "{:?}",
        report.error
    );
    // The next run, held back by the recovery window, still says whose listener answered.
    let report = run(&config, &mut state, &mut host).unwrap();
    let error = report.error.as_deref().unwrap_or_default();
    assert!(
        error.starts_with(why) && error.contains("recovery window"),
        "{error}"
    );
}

/// A run a hook datagram started: anyone in the socket's group can cause one (#18).
fn hook_run(config: &Config, state: &mut State, host: &mut Fake) -> Report {
    let trigger = Trigger::Hook {
        events: 1,
        ignored: 0,
    };
    let (_, report, outgoing) = check(config, state, host, trigger, || {});
    let mut report = report.expect("a hook run always tells");
    if let Some(outgoing) = outgoing {
        let sent = deliver(host, &mut report, &outgoing.alert);
        crate::policy::mail_outcome(state, &outgoing.pending, sent);
    }
    report
}

#[test]
fn healthy_hook_runs_change_no_policy() {
    let config = config(&["--recover-after", "3"]);
    let incident = Incident {
        since: NOW - 600,
        verdict: "502".into(),
        alerted: true,
        healed: false,
    };
    // (what the state was, what it must stay after four healthy hook runs)
    let cases = [
        (
            "a spent budget is not restored, nor counted toward --recover-after",
            State {
                relaunches: vec![NOW - 300; 5],
                gave_up: true,
                incident: Some(incident.clone()),
                ..State::default()
            },
        ),
        (
            "an open incident is not ended (so toggling a failure makes one incident, one mail)",
            State {
                failures: 0,
                incident: Some(incident.clone()),
                ..State::default()
            },
        ),
        (
            "the status counters' baseline is not moved",
            State {
                status: Some(Counters {
                    start_time: 1,
                    max_children_reached: 0,
                    slow_requests: 3,
                }),
                ..State::default()
            },
        ),
    ];
    for (what, before) in cases {
        let mut state = before.clone();
        let mut host = Fake::answering(Answer::Status(200));
        host.counters = Some(Counters {
            start_time: 1,
            max_children_reached: 0,
            slow_requests: 9,
        });
        for _ in 0..4 {
            let report = hook_run(&config, &mut state, &mut host);
            assert_eq!(
                fields(&report),
                "verdict=200 action=none old_pid=- new_pid=- state=healthy mail=none",
                "{what}"
            );
        }
        assert_eq!(state, before, "{what}");
        assert!(host.sent.is_empty(), "{what}");
        // A cron run does what the hook's may not.
        run(&config, &mut state, &mut host);
        assert_ne!(state, before, "{what}: cron changes it");
    }
}

#[test]
fn a_hook_run_relaunches_within_the_limits_and_gives_up_once() {
    let config = config(&["--max-restarts", "2", "--within", "1h"]);
    let mut state = State {
        relaunches: vec![NOW - 600, NOW - 300],
        ..State::default()
    };
    let mut host = Fake::answering(Answer::Status(502));
    let first = hook_run(&config, &mut state, &mut host);
    assert_eq!(first.action.to_string(), "gave-up");
    assert_eq!(first.mail.to_string(), "sent");
    let second = hook_run(&config, &mut state, &mut host);
    assert_eq!(second.action.to_string(), "none");
    assert_eq!(host.sent.len(), 1, "the giving-up mail, once");
    assert!(!host.did.iter().any(|d| d == "restart" || d == "start"));
}

#[test]
fn a_listener_not_believed_while_php_fpm_answers_itself_restarts_nothing() {
    let config = config(&[]);
    let why = "php-fpm pool 'www''s socket localhost:9000 is held by uid 65534, not by root: not believed";
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Untrusted(why.into()));
    host.fpm_answers = Some("fcgi://localhost:9000/ping".into());
    let report = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        fields(&report),
        "verdict=untrusted-listener action=none old_pid=- new_pid=- state=unhealthy mail=sent"
    );
    let error = report.error.as_deref().unwrap_or_default();
    assert!(error.starts_with(why), "{error}");
    assert!(error.contains("a restart cannot help"), "{error}");
    assert_eq!(host.did, ["probe", "php-fpm answers", "mail"]);
    // Every run the same: nothing restarted, the budget untouched.
    for _ in 0..5 {
        run(&config, &mut state, &mut host);
    }
    assert!(
        !host
            .did
            .iter()
            .any(|d| d == "restart" || d == "start" || d == "kill")
    );
}

#[test]
fn a_timeout_while_php_fpm_answers_itself_blames_the_web_server() {
    let config = config(&[]);
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Timeout);
    host.fpm_answers = Some("unix:///run/php/php8.2-fpm.sock;/ping".into());
    host.web_hangs = true;
    let report = run(&config, &mut state, &mut host).unwrap();
    assert_eq!(
        fields(&report),
        "verdict=timeout action=none old_pid=- new_pid=- state=web-server-hung mail=sent"
    );
    assert_eq!(report.exit(), Exit::Alerted);
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("php-fpm answers on its own sockets (unix:///run/php")),
        "{:?}",
        report.error
    );
    assert_eq!(
        host.did,
        ["probe", "web server hangs", "php-fpm answers", "mail"]
    );
    // Still hung at the next run: the same incident, no second mail.
    run(&config, &mut state, &mut host);
    assert_eq!(host.sent.len(), 1);

    // php-fpm does not answer itself (or cannot be asked), or the web server answers a page
    // outside PHP (a stuck script is php-fpm's): the timeout is php-fpm's, as before.
    for (web_hangs, fpm_answers) in [(true, None), (false, Some("unix:///x.sock".to_owned()))] {
        let mut host = Fake::answering(Answer::Timeout).verifying(&[true]);
        host.web_hangs = web_hangs;
        host.fpm_answers = fpm_answers;
        let report = run(&config, &mut State::default(), &mut host).unwrap();
        assert_eq!(report.state.to_string(), "healthy");
        assert!(host.did.contains(&"restart".to_owned()), "{:?}", host.did);
    }
}

/// #18: the pool user toggles php-fpm's socket between datagrams, so hook runs relaunch (each
/// heals), answer healthy, relaunch again, until the budget is spent. Each healed relaunch used to end
/// its incident, so each relaunch mailed anew; an untrusted run ends no incident, so the whole cycle
/// is one incident: its first mail and the giving-up, nothing more, until cron sees it healthy.
#[test]
fn a_hook_driven_cycle_mails_once_per_incident_and_the_giving_up() {
    let config = config(&["--max-restarts", "3", "--within", "1h"]);
    let mut state = State::default();
    let mut host = Fake::answering(Answer::Status(502)).verifying(&[true, true, true]);
    let mut relaunched = 0;
    for round in 0..5 {
        host.at = NOW + round * 300;
        host.answer = Answer::Status(502);
        let report = hook_run(&config, &mut state, &mut host);
        if report.action.to_string().starts_with("restart") {
            relaunched += 1;
        }
        host.answer = Answer::Status(200);
        hook_run(&config, &mut state, &mut host);
    }
    assert_eq!(relaunched, 3, "within the limits");
    let mails: Vec<&str> = host.sent.iter().map(|a| a.subject.as_str()).collect();
    assert_eq!(
        mails.len(),
        2,
        "the incident's first mail and its giving-up: {mails:#?}"
    );
    assert!(mails[1].contains("giving up"), "{mails:#?}");

    // Cron sees it healthy: the incident ends, and its end is told once.
    host.at += 60;
    let report = run(&config, &mut state, &mut host).expect("the end is told");
    assert_eq!(report.state.to_string(), "recovered");
    assert_eq!(host.sent.len(), 3);
    assert!(run(&config, &mut state, &mut host).is_none());
}
