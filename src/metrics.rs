//! `--metrics-file`: a node_exporter textfile about one target, rewritten atomically on every run
//! (a temporary file in the same directory, 0644 so node_exporter's user can read it, renamed over
//! the old one), in Prometheus' text format with HELP and TYPE and no timestamps. The counters live
//! in the state file, so they survive between runs.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;

use crate::policy::{self, Limits};
use crate::report::{Action, Report, RunState};
use crate::secure_file;
use crate::state::{State, Totals};

/// What one check saw, for the metrics: whether the target was healthy, the verdict, the latency.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The probe (or, for a sleeping on-demand pool, its socket) was healthy.
    pub up: bool,
    /// The verdict's log token (`200`, `502`, `timeout`, `socket-lost` …).
    pub verdict: String,
    /// How long the answer took.
    pub latency: Duration,
}

/// Books one check in the totals.
pub fn count(totals: &mut Totals, seen: &Seen, report: Option<&Report>, now: i64) {
    if seen.up {
        totals.last_healthy = Some(now);
    } else {
        *totals.failures.entry(seen.verdict.clone()).or_default() += 1;
    }
    if let Some(report) = report
        && relaunched(&report.action)
    {
        let result = if report.state == RunState::Relaunched {
            "healthy"
        } else {
            "down"
        };
        *totals.relaunches.entry(result.to_owned()).or_default() += 1;
    }
}

/// Whether an action relaunched php-fpm (a replica's included; a dry run's, kill-stuck's not).
fn relaunched(action: &Action) -> bool {
    match action {
        Action::Relaunch(steps) => !steps.is_empty(),
        Action::Replicas(replicas) => !replicas.is_empty(),
        _ => false,
    }
}

/// The textfile for `target` after a check at `now`.
pub fn render(target: &str, seen: &Seen, state: &State, limits: &Limits, now: i64) -> String {
    let label = format!("target=\"{}\"", escape(target));
    let mut text = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(String, String)]| {
        let _ = writeln!(text, "# HELP {name} {help}");
        let _ = writeln!(text, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(text, "{name}{{{labels}}} {value}");
        }
    };
    let one = |value: String| [(label.clone(), value)];
    metric(
        "php_relaunch_up",
        "gauge",
        "Whether the last check found the target healthy (1) or not (0).",
        &one(u8::from(seen.up).to_string()),
    );
    metric(
        "php_relaunch_last_check_timestamp_seconds",
        "gauge",
        "When the last check ran, in unix seconds.",
        &one(now.to_string()),
    );
    if let Some(at) = state.totals.last_healthy {
        metric(
            "php_relaunch_last_healthy_timestamp_seconds",
            "gauge",
            "When a check last found the target healthy, in unix seconds.",
            &one(at.to_string()),
        );
    }
    metric(
        "php_relaunch_heartbeat_latency_seconds",
        "gauge",
        "How long the last check's answer took.",
        &one(format!("{:.6}", seen.latency.as_secs_f64())),
    );
    let failures: Vec<(String, String)> = state
        .totals
        .failures
        .iter()
        .map(|(verdict, n)| {
            (
                format!("{label},verdict=\"{}\"", escape(verdict)),
                n.to_string(),
            )
        })
        .collect();
    metric(
        "php_relaunch_failures_total",
        "counter",
        "Checks that found the target failing, by verdict.",
        &failures,
    );
    let relaunches: Vec<(String, String)> = ["healthy", "down"]
        .iter()
        .map(|result| {
            let n = state.totals.relaunches.get(*result).copied().unwrap_or(0);
            (format!("{label},result=\"{result}\""), n.to_string())
        })
        .collect();
    metric(
        "php_relaunch_relaunches_total",
        "counter",
        "Relaunches of php-fpm, by whether the heartbeat came back (healthy) or not (down).",
        &relaunches,
    );
    metric(
        "php_relaunch_restart_budget_remaining",
        "gauge",
        "Relaunches still allowed within the restart budget's window.",
        &one(policy::budget_remaining(state, limits, now).to_string()),
    );
    metric(
        "php_relaunch_gave_up",
        "gauge",
        "Whether the restart budget is spent and relaunching has stopped (1) or not (0).",
        &one(u8::from(state.gave_up).to_string()),
    );
    text
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Replaces the file at `path` with `text`, 0644 so node_exporter's user can read it, through the one
/// primitive for root's files: a symlink at `path` is refused and left as it is.
pub fn write(path: &Path, text: &str) -> Result<()> {
    secure_file::replace(path, "--metrics-file", text.as_bytes(), 0o644)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            failures: 1,
            max_restarts: 5,
            within: Duration::from_hours(1),
            recover_after: 3,
        }
    }

    #[test]
    fn the_textfile_has_every_metric_with_help_and_type_and_no_timestamps() {
        let mut state = State::default();
        let seen = Seen {
            up: false,
            verdict: "502".into(),
            latency: Duration::from_millis(3),
        };
        count(&mut state.totals, &seen, None, 1000);
        state.relaunches = vec![990];
        let text = render("http://x/\"hb\"", &seen, &state, &limits(), 1000);
        for line in [
            r#"php_relaunch_up{target="http://x/\"hb\""} 0"#,
            r#"php_relaunch_last_check_timestamp_seconds{target="http://x/\"hb\""} 1000"#,
            r#"php_relaunch_heartbeat_latency_seconds{target="http://x/\"hb\""} 0.003000"#,
            r#"php_relaunch_failures_total{target="http://x/\"hb\"",verdict="502"} 1"#,
            r#"php_relaunch_relaunches_total{target="http://x/\"hb\"",result="healthy"} 0"#,
            r#"php_relaunch_restart_budget_remaining{target="http://x/\"hb\""} 4"#,
            r#"php_relaunch_gave_up{target="http://x/\"hb\""} 0"#,
            "# TYPE php_relaunch_failures_total counter",
            "# HELP php_relaunch_up ",
        ] {
            assert!(text.contains(line), "{line}\n{text}");
        }
        assert!(!text.contains("last_healthy"), "never healthy yet");
        for sample in text.lines().filter(|l| !l.starts_with('#')) {
            assert_eq!(
                sample
                    .rsplit('}')
                    .next()
                    .unwrap()
                    .split_whitespace()
                    .count(),
                1,
                "{sample}"
            );
        }
    }
}
