//! php-fpm's status page against thresholds, as container health checks do: `?json` for a run's checks,
//! the plain text for the php-fpm-healthcheck drop-in (#22).
//! The cumulative counters (max children reached, slow requests) are judged by how much they grew since
//! the previous check, which the state file remembers; a restarted pool (new start time, or a counter
//! that went down) starts counting afresh.

use serde::{Deserialize, Serialize};

/// Limits on the status page; each is "unhealthy when the value exceeds N".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Thresholds {
    /// Requests waiting in the listen queue.
    pub listen_queue: Option<u64>,
    /// Workers busy in a request.
    pub active_processes: Option<u64>,
    /// Times the pool hit pm.max_children since the previous check.
    pub max_children_reached: Option<u64>,
    /// Requests over request_slowlog_timeout since the previous check.
    pub slow_requests: Option<u64>,
}

impl Thresholds {
    /// Whether any threshold is set, so the reply must be a status page.
    pub fn any(&self) -> bool {
        self.listen_queue.is_some() || self.active_processes.is_some() || self.cumulative()
    }

    /// Whether a threshold on a cumulative counter is set, so the state file is needed.
    pub fn cumulative(&self) -> bool {
        self.max_children_reached.is_some() || self.slow_requests.is_some()
    }
}

/// The fields of `?json` that the thresholds read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct PoolStatus {
    /// When the pool (re)started, unix seconds.
    #[serde(rename = "start time")]
    pub start_time: u64,
    /// Requests waiting now.
    #[serde(rename = "listen queue")]
    pub listen_queue: u64,
    /// Workers busy now.
    #[serde(rename = "active processes")]
    pub active_processes: u64,
    /// Workers in all.
    #[serde(rename = "total processes")]
    pub total_processes: u64,
    /// Cumulative since start.
    #[serde(rename = "max children reached")]
    pub max_children_reached: u64,
    /// Cumulative since start.
    #[serde(rename = "slow requests")]
    pub slow_requests: u64,
}

/// The counters remembered between checks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// The pool's start time when they were read.
    pub start_time: u64,
    /// `max children reached` then.
    pub max_children_reached: u64,
    /// `slow requests` then.
    pub slow_requests: u64,
}

impl From<&PoolStatus> for Counters {
    fn from(status: &PoolStatus) -> Counters {
        Counters {
            start_time: status.start_time,
            max_children_reached: status.max_children_reached,
            slow_requests: status.slow_requests,
        }
    }
}

/// Parses a `?json` status page.
pub fn parse(body: &[u8]) -> Result<PoolStatus, String> {
    serde_json::from_slice(body).map_err(|err| {
        format!("the status page is not php-fpm's JSON (add ?json to the path): {err}")
    })
}

/// The value of `name` on php-fpm's plain-text status page (`pm.status_path` without `?json`): the
/// first line `NAME: VALUE`, the value trimmed. `listen queue` does not match `listen queue len`.
pub fn text_value<'a>(page: &'a str, name: &str) -> Option<&'a str> {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .map(str::trim)
}

/// Whether `page` is php-fpm's plain-text status page: it names the pool and its process manager.
pub fn is_text_page(page: &str) -> bool {
    text_value(page, "pool").is_some() && text_value(page, "process manager").is_some()
}

/// Judges `now` against `limits`; `before` is the previous check's counters, if any. Returns the
/// reasons for being unhealthy, empty when healthy.
pub fn judge(limits: &Thresholds, now: &PoolStatus, before: Option<&Counters>) -> Vec<String> {
    let mut reasons = Vec::new();
    let mut over = |name: &str, value: u64, limit: Option<u64>| {
        if let Some(limit) = limit.filter(|&limit| value > limit) {
            reasons.push(format!("{name} {value} > {limit}"));
        }
    };
    over("listen queue", now.listen_queue, limits.listen_queue);
    over(
        "active processes",
        now.active_processes,
        limits.active_processes,
    );
    // Without an earlier reading there is no growth to judge yet; this one becomes the baseline.
    if let Some(before) = before {
        let restarted = before.start_time != now.start_time
            || now.max_children_reached < before.max_children_reached
            || now.slow_requests < before.slow_requests;
        let grown = |now: u64, then: u64| if restarted { now } else { now - then };
        over(
            "max children reached (new)",
            grown(now.max_children_reached, before.max_children_reached),
            limits.max_children_reached,
        );
        over(
            "slow requests (new)",
            grown(now.slow_requests, before.slow_requests),
            limits.slow_requests,
        );
    }
    reasons
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What php-fpm 8.2 answers on `/status?json` (one line, here wrapped).
    const STATUS: &str = r#"{"pool":"www","process manager":"static","start time":1763900000,
        "start since":42,"accepted conn":17,"listen queue":3,"max listen queue":5,"listen queue len":0,
        "idle processes":0,"active processes":2,"total processes":2,"max active processes":2,
        "max children reached":4,"slow requests":1}"#;

    fn status() -> PoolStatus {
        parse(STATUS.as_bytes()).unwrap()
    }

    #[test]
    fn parses_php_fpm_json() {
        let s = status();
        assert_eq!(
            (s.listen_queue, s.active_processes, s.total_processes),
            (3, 2, 2)
        );
        assert_eq!(
            (s.max_children_reached, s.slow_requests, s.start_time),
            (4, 1, 1_763_900_000)
        );
        assert!(
            parse(b"pool: www\nlisten queue: 0\n")
                .unwrap_err()
                .contains("add ?json")
        );
    }

    /// What php-fpm 8.2 answers on `/status` (plain text).
    const TEXT: &str = "pool:                 www\nprocess manager:      static\n\
        start time:           03/Dec/2026:11:00:00 +0000\naccepted conn:        17\n\
        listen queue:         3\nmax listen queue:     5\nlisten queue len:     4096\n";

    #[test]
    fn reads_the_plain_text_page() {
        assert!(is_text_page(TEXT));
        assert_eq!(text_value(TEXT, "accepted conn"), Some("17"));
        assert_eq!(text_value(TEXT, "listen queue"), Some("3"));
        assert_eq!(text_value(TEXT, "listen queue len"), Some("4096"));
        assert_eq!(
            text_value(TEXT, "start time"),
            Some("03/Dec/2026:11:00:00 +0000")
        );
        assert_eq!(text_value(TEXT, "slow requests"), None);
        assert!(!is_text_page("File not found."));
        assert!(!is_text_page(STATUS));
    }

    #[test]
    fn gauges_against_limits() {
        let limits = Thresholds {
            listen_queue: Some(2),
            active_processes: Some(2),
            ..Thresholds::default()
        };
        assert_eq!(judge(&limits, &status(), None), ["listen queue 3 > 2"]);
        let relaxed = Thresholds {
            listen_queue: Some(3),
            ..limits
        };
        assert!(judge(&relaxed, &status(), None).is_empty());
    }

    #[test]
    fn counters_are_judged_by_their_growth() {
        let limits = Thresholds {
            max_children_reached: Some(1),
            slow_requests: Some(0),
            ..Thresholds::default()
        };
        let now = status();
        // First reading: a baseline, nothing to judge.
        assert!(judge(&limits, &now, None).is_empty());
        // Grew by 1 and 0 since: within limits.
        let before = Counters {
            start_time: now.start_time,
            max_children_reached: 3,
            slow_requests: 1,
        };
        assert!(judge(&limits, &now, Some(&before)).is_empty());
        // Grew by 3 and 1.
        let before = Counters {
            start_time: now.start_time,
            max_children_reached: 1,
            slow_requests: 0,
        };
        assert_eq!(
            judge(&limits, &now, Some(&before)),
            [
                "max children reached (new) 3 > 1",
                "slow requests (new) 1 > 0"
            ]
        );
    }

    #[test]
    fn a_restarted_pool_counts_from_zero() {
        let limits = Thresholds {
            max_children_reached: Some(3),
            ..Thresholds::default()
        };
        let now = status(); // 4 since its start
        // A counter that went down means a restart: 4 new, not 4 - 10.
        let before = Counters {
            start_time: now.start_time,
            max_children_reached: 10,
            slow_requests: 0,
        };
        assert_eq!(
            judge(&limits, &now, Some(&before)),
            ["max children reached (new) 4 > 3"]
        );
        // So does a new start time, even when the counter happens to be higher.
        let before = Counters {
            start_time: 1,
            max_children_reached: 2,
            slow_requests: 0,
        };
        assert_eq!(
            judge(&limits, &now, Some(&before)),
            ["max children reached (new) 4 > 3"]
        );
    }
}
