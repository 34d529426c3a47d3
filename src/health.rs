//! One probe judged completely: the answer, `--expect`, and php-fpm's status page against the
//! thresholds, with the cumulative counters compared to the previous check's. Shared by a run and by
//! `check`.

use crate::config::ProbeConfig;
use crate::escape;
use crate::probe::status::{self, Counters};
use crate::probe::{self, Answer, Verdict};
use crate::state::{self, State};
use crate::stdout::errln;

/// Probes once and judges the reply against `state`'s remembered counters (updated in place).
pub fn check(config: &ProbeConfig, state: &mut State) -> Verdict {
    let mut verdict = probe::probe(&config.target, config.timeout, config.expect.as_deref());
    // Over a unix socket, the socket's opener gone (no php-fpm holding the socket) or stopped: a
    // program a worker started answered on the socket it inherited (#21). `check`'s too.
    if verdict.answer.is_healthy()
        && let (
            Some(pid),
            probe::Target::FastCgi {
                address: probe::fastcgi::Address::Unix(path),
                ..
            },
        ) = (verdict.listener, &config.target)
        && let Some(reason) = crate::fpm::opener_not_running(pid, path)
    {
        verdict.answer = Answer::Untrusted(reason);
    }
    if verdict.answer.is_healthy()
        && config.thresholds.any()
        && let Some(reason) = judge_status(config, &verdict.body, state)
    {
        verdict.answer = Answer::Unhealthy(reason);
    }
    verdict
}

/// Why the status page is unhealthy, if it is.
fn judge_status(config: &ProbeConfig, body: &[u8], state: &mut State) -> Option<String> {
    let now = match status::parse(body) {
        Ok(now) => now,
        Err(reason) => return Some(reason),
    };
    let before = if config.thresholds.cumulative() {
        state.status.replace(Counters::from(&now))
    } else {
        None
    };
    let reasons = status::judge(&config.thresholds, &now, before.as_ref());
    (!reasons.is_empty()).then(|| reasons.join(", "))
}

/// When a loaded state is written back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saving {
    /// When it differs from what was read.
    IfChanged(Box<State>),
    /// Always: the file was corrupt, and its fresh replacement ends the warning.
    Always,
    /// Never: the file was refused (a symlink) or unreadable, and is left as it is.
    Never,
}

/// Loads the state file; trouble with it is a warning (on stderr) and a fresh state, never a reason
/// to stop watching.
pub fn load_state(path: &std::path::Path) -> (State, Saving) {
    match state::load(path) {
        Ok((state, None)) => (state.clone(), Saving::IfChanged(Box::new(state))),
        Ok((state, Some(warning))) => {
            errln!("php-relaunch: {warning}");
            (state, Saving::Always)
        }
        Err(err) => {
            errln!("php-relaunch: {err:#}; using a fresh state");
            (State::default(), Saving::Never)
        }
    }
}

/// Writes the state back as `saving` says; trouble is a warning on stderr.
pub fn save_state(path: &std::path::Path, state: &State, saving: &Saving) {
    let due = match saving {
        Saving::IfChanged(before) => **before != *state,
        Saving::Always => true,
        Saving::Never => false,
    };
    if due && let Err(err) = state::save(path, state) {
        errln!("php-relaunch: {err:#}");
    }
}

/// How an answer reads in a sentence: "answered 200", "no complete answer within 2s" …
pub fn describe(answer: &Answer, config: &ProbeConfig) -> String {
    match answer {
        Answer::Status(code) => format!("answered {code}"),
        Answer::Timeout => format!(
            "no complete answer within {}s",
            config.timeout.as_secs_f64()
        ),
        Answer::Refused(detail) => format!("refused: {detail}"),
        Answer::Dns(detail) => format!("cannot resolve: {detail}"),
        Answer::Failed(detail) | Answer::Unhealthy(detail) => detail.clone(),
        Answer::Untrusted(detail) => format!("untrusted-listener: {detail}"),
    }
}

/// `php-relaunch check`: the one line for stdout, and whether the target is healthy. The line is
/// escaped and bounded here (#18): a reply's words never reach the terminal raw.
pub fn report(config: &ProbeConfig, verdict: &Verdict) -> (String, bool) {
    let healthy = verdict.answer.is_healthy();
    let what = describe(&verdict.answer, config);
    let line = if healthy {
        format!(
            "healthy: {} {what} in {:.1} ms",
            config.target,
            verdict.latency.as_secs_f64() * 1000.0
        )
    } else {
        match &verdict.stderr {
            Some(said) => format!(
                "unhealthy: {}: {what} (php-fpm said: {said})",
                config.target
            ),
            None => format!("unhealthy: {}: {what}", config.target),
        }
    };
    (escape::field(&line), healthy)
}
