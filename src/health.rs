//! One probe judged completely: the answer, `--expect`, and php-fpm's status page against the
//! thresholds, with the cumulative counters compared to the previous check's. Shared by a run and by
//! `check`.

use crate::config::ProbeConfig;
use crate::probe::status::{self, Counters};
use crate::probe::{self, Answer, Verdict};
use crate::state;

/// Probes once and judges the reply; the strings are warnings about the state file, for stderr.
pub fn check(config: &ProbeConfig) -> (Verdict, Vec<String>) {
    let mut verdict = probe::probe(&config.target, config.timeout, config.expect.as_deref());
    let mut warnings = Vec::new();
    if verdict.answer.is_healthy()
        && config.thresholds.any()
        && let Some(reason) = judge_status(config, &verdict.body, &mut warnings)
    {
        verdict.answer = Answer::Unhealthy(reason);
    }
    (verdict, warnings)
}

/// Why the status page is unhealthy, if it is.
fn judge_status(config: &ProbeConfig, body: &[u8], warnings: &mut Vec<String>) -> Option<String> {
    let now = match status::parse(body) {
        Ok(now) => now,
        Err(reason) => return Some(reason),
    };
    let before = if config.thresholds.cumulative() {
        remember(config, Counters::from(&now), warnings)
    } else {
        None
    };
    let reasons = status::judge(&config.thresholds, &now, before.as_ref());
    (!reasons.is_empty()).then(|| reasons.join(", "))
}

/// Stores `now` in the state file and returns what it held before. Trouble with the file is a warning:
/// the gauges are still judged, only the counters' growth is not.
fn remember(config: &ProbeConfig, now: Counters, warnings: &mut Vec<String>) -> Option<Counters> {
    let mut state = match state::load(&config.state) {
        Ok((state, warning)) => {
            warnings.extend(warning);
            state
        }
        Err(err) => {
            warnings.push(format!("{err:#}; counters not compared"));
            return None;
        }
    };
    let before = state.status.replace(now);
    state.target = config.target.to_string();
    if let Err(err) = state::save(&config.state, &state) {
        warnings.push(format!("{err:#}"));
    }
    before
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
    }
}

/// `php-relaunch check`: the one line for stdout, and whether the target is healthy.
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
        format!("unhealthy: {}: {what}", config.target)
    };
    (line, healthy)
}
