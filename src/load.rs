//! How busy php-fpm's workers are, to tell a saturated pool (alive, every worker busy) from a dead
//! one: from php-fpm's status page (`?json&full`, which also says how long each worker has been in its
//! request), or, without one, from what /proc shows of the master's workers.

use std::time::Duration;

use serde::Deserialize;

use crate::fpm::{Instance, Proc};
use crate::probe::{self, Target};

/// The pool's workers at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Load {
    /// Workers in a request.
    pub busy: usize,
    /// Workers in all.
    pub total: usize,
    /// Busy workers past `--stuck-after` in their request, with how long they have been in it.
    pub stuck: Vec<(u32, Duration)>,
    /// Where this came from: "status page" or "/proc".
    pub source: &'static str,
    /// The status page as read, for the evidence.
    pub raw: Option<String>,
    /// The pool this is, when known (the status page's `pool`, or the pool /proc was asked about).
    pub pool: Option<String>,
}

impl Load {
    /// Every worker busy.
    pub fn saturated(&self) -> bool {
        self.total > 0 && self.busy >= self.total
    }

    /// "all 5 workers busy (from the status page)".
    pub fn describe(&self) -> String {
        format!(
            "{} of {} workers busy (from {})",
            self.busy, self.total, self.source
        )
    }
}

#[derive(Deserialize)]
struct Full {
    #[serde(default)]
    pool: Option<String>,
    #[serde(rename = "total processes")]
    total: usize,
    #[serde(rename = "active processes")]
    active: usize,
    #[serde(default)]
    processes: Vec<Worker>,
}

#[derive(Deserialize)]
struct Worker {
    pid: u32,
    state: String,
    /// Microseconds.
    #[serde(rename = "request duration")]
    request_duration: u64,
}

/// Reads the status page at `status` (asking for `?json&full`). `None` when it does not answer, as
/// when the master is hung.
pub fn from_status(
    status: &Target,
    timeout: Duration,
    stuck_after: Option<Duration>,
) -> Option<Load> {
    let full = with_query(status, "json&full");
    let verdict = probe::probe(&full, timeout, None);
    if !verdict.answer.is_healthy() {
        return None;
    }
    let raw = String::from_utf8_lossy(&verdict.body).into_owned();
    parse_full(&raw, stuck_after)
}

/// Judges a `?json&full` page.
pub fn parse_full(raw: &str, stuck_after: Option<Duration>) -> Option<Load> {
    let full: Full = serde_json::from_str(raw).ok()?;
    let stuck = match stuck_after {
        Some(limit) => full
            .processes
            .iter()
            .filter(|w| w.state != "Idle")
            .map(|w| (w.pid, Duration::from_micros(w.request_duration)))
            .filter(|(_, took)| *took > limit)
            .collect(),
        None => Vec::new(),
    };
    Some(Load {
        busy: full.active,
        total: full.total,
        stuck,
        source: "status page",
        raw: Some(raw.to_owned()),
        pool: full.pool,
    })
}

/// The status page's word, unless /proc contradicts it (#13): a page that says every worker is busy
/// while /proc shows the verified master's workers idle in accept(2) is not believed (the page may
/// come from anyone who can bind the status socket or port). Its stuck workers are still only
/// claims, checked before any kill.
pub fn believed(page: Load, seen: Option<Load>) -> Load {
    match seen {
        // Either way: a page cannot make a pool /proc shows full look free either (#19: a busy
        // pool is never restarted, whatever answers at its status path).
        Some(seen) if page.saturated() != seen.saturated() => Load {
            source: "/proc, contradicting the status page",
            stuck: page.stuck,
            raw: page.raw,
            ..seen
        },
        _ => page,
    }
}

/// From /proc: a worker blocked in accept(2) on the listen socket is idle. Judged for `pool` alone,
/// from its own workers (#19); with the pool unknown (a heartbeat through a web server in front of a
/// master of several pools), the busiest pool is the one judged, so a pool saturated anywhere is
/// never taken for a dead one.
pub fn from_proc(instance: &Instance, procs: &[Proc], pool: Option<&str>) -> Option<Load> {
    let pools = instance.pools_idle(procs)?;
    let judged = pools
        .into_iter()
        .filter(|(name, _)| pool.is_none_or(|wanted| wanted == name))
        .map(|(name, workers)| {
            let busy = workers.iter().filter(|(_, idle)| !idle).count();
            (name, busy, workers.len())
        })
        // Saturated first, then the busiest by share (busy × other's total against other's busy × total).
        .max_by(|a, b| {
            let saturated = |(_, busy, total): &(String, usize, usize)| *total > 0 && busy >= total;
            saturated(a)
                .cmp(&saturated(b))
                .then((a.1 * b.2).cmp(&(b.1 * a.2)))
        })?;
    let (name, busy, total) = judged;
    Some(Load {
        busy,
        total,
        stuck: Vec::new(),
        source: "/proc",
        raw: None,
        pool: Some(name),
    })
}

/// The same target with another query string.
fn with_query(target: &Target, query: &str) -> Target {
    match target {
        Target::Http(url) => {
            let base = url.split('?').next().unwrap_or(url);
            Target::Http(format!("{base}?{query}"))
        }
        Target::FastCgi {
            text,
            address,
            script,
        } => Target::FastCgi {
            text: text.clone(),
            address: address.clone(),
            script: script.clone().map(|mut s| {
                s.query = query.to_owned();
                s
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// php-fpm 8.2's `?json&full`, shortened to the fields read.
    const FULL: &str = r#"{"pool":"www","active processes":2,"idle processes":1,"total processes":3,
        "processes":[
          {"pid":11,"state":"Running","request duration":400000000,"request uri":"/slow.php"},
          {"pid":12,"state":"Running","request duration":2000000,"request uri":"/index.php"},
          {"pid":13,"state":"Idle","request duration":900000000,"request uri":"/old.php"}]}"#;

    #[test]
    fn stuck_workers_are_the_busy_ones_past_the_limit() {
        let load = parse_full(FULL, Some(Duration::from_mins(5))).unwrap();
        assert_eq!(load.stuck, [(11, Duration::from_secs(400))]);
        assert_eq!((load.busy, load.total), (2, 3));
        assert!(!load.saturated());
        assert_eq!(load.describe(), "2 of 3 workers busy (from status page)");
        assert!(parse_full(FULL, None).unwrap().stuck.is_empty());
        assert!(parse_full("pool: www", None).is_none());
    }

    #[test]
    fn saturated_means_every_worker_busy() {
        let load = |busy, total| Load {
            busy,
            total,
            stuck: vec![],
            source: "/proc",
            raw: None,
            pool: None,
        };
        assert!(load(5, 5).saturated());
        assert!(!load(4, 5).saturated());
        assert!(!load(0, 0).saturated());
    }

    #[test]
    fn a_saturated_page_that_proc_contradicts_is_not_believed() {
        let page = Load {
            busy: 5,
            total: 5,
            stuck: vec![(11, Duration::from_secs(400))],
            source: "status page",
            raw: Some("{}".into()),
            pool: None,
        };
        let seen = |busy| Load {
            busy,
            total: 2,
            stuck: vec![],
            source: "/proc",
            raw: None,
            pool: None,
        };
        let judged = believed(page.clone(), Some(seen(0)));
        assert_eq!((judged.busy, judged.total), (0, 2));
        assert!(!judged.saturated());
        assert_eq!(judged.stuck, page.stuck, "claims kept, to be checked");
        assert_eq!(believed(page.clone(), Some(seen(2))), page);
        assert_eq!(believed(page.clone(), None), page);
        // Nor does a page that says a pool /proc shows full is free.
        let free = Load {
            busy: 1,
            ..page.clone()
        };
        let judged = believed(free, Some(seen(2)));
        assert_eq!((judged.busy, judged.total), (2, 2));
        assert!(judged.saturated());
    }

    #[test]
    fn the_full_page_is_asked_for() {
        let status = Target::Http("http://127.0.0.1/status?json".into());
        assert_eq!(
            with_query(&status, "json&full"),
            Target::Http("http://127.0.0.1/status?json&full".into())
        );
    }
}
