//! `php-relaunch report`: the history of failures and relaunches from php-relaunch's own log (and,
//! when given, nginx's access logs), per hour or per day: for a person (a table with sparklines), for
//! scripts (`--json`), and as an SVG chart (`--svg`).

mod lines;
mod render;

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, TimeZone, Timelike};
use serde::Serialize;

use crate::cli::{By, ReportArgs};
use crate::escape;
use crate::exit::Exit;
use crate::stdout;
use crate::stdout::errln;
use lines::{Line, parse, parse_access};

/// What happened in one bucket (or in all of them).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    /// Checks that found the heartbeat failing, by verdict (`502`, `timeout`, `refused` …).
    pub failures: BTreeMap<String, u64>,
    /// Relaunches (a start, restart or kill step; a pool's replicas included).
    pub relaunches: u64,
    /// Relaunches after which the heartbeat was healthy.
    pub helped: u64,
    /// Relaunches after which it was still down.
    pub not_helped: u64,
    /// Runs that found the restart budget spent and gave up.
    pub gave_up: u64,
    /// Runs the hook started.
    pub hook_runs: u64,
    /// Runs cron (or a person) started.
    pub cron_runs: u64,
    /// 502 responses visitors got (access logs).
    pub visitor_502: u64,
    /// 504 responses visitors got (access logs).
    pub visitor_504: u64,
}

impl Counts {
    fn add(&mut self, other: &Counts) {
        for (verdict, n) in &other.failures {
            *self.failures.entry(verdict.clone()).or_default() += n;
        }
        self.relaunches += other.relaunches;
        self.helped += other.helped;
        self.not_helped += other.not_helped;
        self.gave_up += other.gave_up;
        self.hook_runs += other.hook_runs;
        self.cron_runs += other.cron_runs;
        self.visitor_502 += other.visitor_502;
        self.visitor_504 += other.visitor_504;
    }

    /// All failures, whatever the verdict.
    pub fn failed(&self) -> u64 {
        self.failures.values().sum()
    }

    /// The 502s and 504s the chart shows: visitors' when access logs were read, else the checks'.
    pub fn bad_gateways(&self, visitors: bool) -> u64 {
        if visitors {
            self.visitor_502 + self.visitor_504
        } else {
            ["502", "504"]
                .iter()
                .map(|v| self.failures.get(*v).copied().unwrap_or(0))
                .sum()
        }
    }
}

/// Downtime per incident: from its first failing line to the line that ends it healthy or recovered.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Incidents {
    pub count: usize,
    pub median_seconds: f64,
    pub longest_seconds: f64,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub since: DateTime<Local>,
    pub until: DateTime<Local>,
    pub by: &'static str,
    /// The files read, oldest first.
    pub files: Vec<PathBuf>,
    /// Lines that could not be read.
    pub skipped: u64,
    /// Files not read to their end, and why (a gzip bomb, a file too slow to read).
    pub cut: Vec<Cut>,
    /// Files owned by a user other than root (or the one running the report): nginx's logs belong
    /// to the pool user on Debian, who can add or change lines in them, so their counts are claims.
    pub owned_by_others: Vec<PathBuf>,
    /// Every bucket from `since` to `until`, empty ones included (`logged` says whether any line
    /// fell in it).
    pub buckets: Vec<Bucket>,
    pub totals: Counts,
    /// Totals per target, when the log holds more than one (`watch`, #21).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, Counts>,
    pub incidents: Incidents,
    /// Whether access logs were read.
    pub visitors: bool,
}

/// A file not read to its end.
#[derive(Debug, Clone, Serialize)]
pub struct Cut {
    pub file: PathBuf,
    pub why: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    pub start: DateTime<Local>,
    pub logged: bool,
    #[serde(flatten)]
    pub counts: Counts,
}

pub fn command(args: &ReportArgs) -> Result<Exit> {
    let until = match &args.until {
        Some(text) => until(text)?,
        None => Local::now(),
    };
    let since = until - chrono::Duration::from_std(args.since).context("--since is too long")?;
    let own = lines::with_rotations(&args.log);
    if own.is_empty() {
        errln!(
            "php-relaunch: no log at '{}' (nor rotated copies of it)",
            args.log.display()
        );
        return Ok(Exit::Failing);
    }
    let history = read(args, &own, since, until)?;
    if let Some(svg) = &args.svg {
        crate::secure_file::replace(svg, "--svg", render::svg(&history).as_bytes(), 0o644)?;
    }
    // Verdicts and file names come from logs others may write: escaped once, here (#18).
    let text = if args.json {
        escape::json(&serde_json::to_string_pretty(&history)?) + "\n"
    } else {
        escape::printable(&render::text(&history), &['\n'])
    };
    stdout::print(&text)?;
    Ok(Exit::Healthy)
}

/// `--until`: RFC 3339, or local `YYYY-MM-DD[THH:MM[:SS]]`.
fn until(text: &str) -> Result<DateTime<Local>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Local));
    }
    let naive = ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(text, format).ok())
        .or_else(|| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .ok()
                .and_then(|d| d.and_hms_opt(0, 0, 0))
        });
    match naive.and_then(|n| Local.from_local_datetime(&n).earliest()) {
        Some(time) => Ok(time),
        None => bail!("--until takes a time such as 2026-11-30 or 2026-11-30T12:00, got '{text}'"),
    }
}

/// The start of the bucket `time` falls in.
fn bucket_of(time: DateTime<Local>, by: By) -> DateTime<Local> {
    let hour = time
        .with_minute(0)
        .and_then(|t| t.with_second(0))
        .and_then(|t| t.with_nanosecond(0))
        .unwrap_or(time);
    match by {
        By::Hour => hour,
        By::Day => hour.with_hour(0).unwrap_or(hour),
    }
}

/// What the lines add up to, as they are read.
struct Tally {
    by: By,
    since: DateTime<Local>,
    until: DateTime<Local>,
    buckets: BTreeMap<DateTime<Local>, Counts>,
    skipped: u64,
    /// The incident open per target: since when.
    open: BTreeMap<String, DateTime<Local>>,
    downtimes: Vec<f64>,
    /// What each target's lines add up to (`watch` logs many, #21).
    targets: BTreeMap<String, Counts>,
    /// The relaunches of a master counted so far (master, new pid): `watch` logs one line for each
    /// pool that came back with its master, and the master was relaunched once (#21).
    relaunched: HashSet<(String, String)>,
}

impl Tally {
    /// The bucket of `time`, when it is within the report.
    fn bucket(&mut self, time: DateTime<Local>) -> Option<&mut Counts> {
        (time >= self.since && time < self.until)
            .then(|| self.buckets.entry(bucket_of(time, self.by)).or_default())
    }

    fn own(&mut self, line: Option<&str>) {
        let entry = match line.map(parse) {
            Some(Line::Run(entry)) => entry,
            Some(Line::Pools) => return,
            Some(Line::Unreadable) if line.is_some_and(|l| l.trim().is_empty()) => return,
            None | Some(Line::Unreadable) => {
                self.skipped += 1;
                return;
            }
        };
        let time = entry.time.with_timezone(&Local);
        let failing =
            entry.verdict != "-" && !matches!(entry.verdict.parse::<u16>(), Ok(200..=399));
        if self.bucket(time).is_none() {
            return;
        }
        let mut counts = Counts::default();
        if failing {
            *counts.failures.entry(entry.verdict.to_owned()).or_default() += 1;
        }
        if is_relaunch(entry.action) {
            counts.relaunches += 1;
            if entry.state == "healthy" {
                counts.helped += 1;
            } else {
                counts.not_helped += 1;
            }
        }
        // A pool relaunched with its master counts for the pool; the master's relaunch, once.
        let again = is_relaunch(entry.action)
            && entry.new_pid != "-"
            && entry.master.is_some_and(|master| {
                !self
                    .relaunched
                    .insert((master.to_owned(), entry.new_pid.to_owned()))
            });
        if entry.action == "gave-up" {
            counts.gave_up += 1;
        }
        if entry.trigger == "hook" {
            counts.hook_runs += 1;
        } else {
            counts.cron_runs += 1;
        }
        let target = match entry.pool {
            Some(pool) => format!("{} (pool {pool})", entry.url),
            None => entry.url.to_owned(),
        };
        self.targets.entry(target).or_default().add(&counts);
        if again {
            counts.relaunches = 0;
            counts.helped = 0;
            counts.not_helped = 0;
        }
        if let Some(bucket) = self.bucket(time) {
            bucket.add(&counts);
        }
        let ends = matches!(entry.state, "healthy" | "recovered" | "idle");
        match (self.open.get(entry.url), ends) {
            (Some(&start), true) => {
                self.downtimes.push((time - start).as_seconds_f64());
                self.open.remove(entry.url);
            }
            (None, true) if failing => self.downtimes.push(0.0),
            (None, false) if failing => {
                self.open.insert(entry.url.to_owned(), time);
            }
            _ => {}
        }
    }

    fn access(&mut self, line: Option<&str>) {
        let Some((time, status)) = line.and_then(parse_access) else {
            self.skipped += 1;
            return;
        };
        if !matches!(status, 502 | 504) {
            return;
        }
        if let Some(counts) = self.bucket(time.with_timezone(&Local)) {
            if status == 502 {
                counts.visitor_502 += 1;
            } else {
                counts.visitor_504 += 1;
            }
        }
    }

    /// Every bucket from `since` to `until`, the empty ones too.
    fn all_buckets(&mut self) -> Vec<Bucket> {
        let step = match self.by {
            By::Hour => Duration::from_hours(1),
            By::Day => Duration::from_hours(24),
        };
        let mut all = Vec::new();
        let mut start = bucket_of(self.since, self.by);
        while start < self.until {
            let counts = self.buckets.remove(&start);
            all.push(Bucket {
                start,
                logged: counts.is_some(),
                counts: counts.unwrap_or_default(),
            });
            start = match self.by {
                By::Hour => start + step,
                // By the calendar, so that a change of daylight saving time still lands on midnight.
                By::Day => bucket_of(start + step + Duration::from_hours(2), By::Day),
            };
        }
        all
    }
}

/// Counts `own` (the log and its rotated copies, oldest first) and the access logs.
fn read(
    args: &ReportArgs,
    own: &[PathBuf],
    since: DateTime<Local>,
    until: DateTime<Local>,
) -> Result<History> {
    let mut tally = Tally {
        by: args.by,
        since,
        until,
        buckets: BTreeMap::new(),
        skipped: 0,
        open: BTreeMap::new(),
        downtimes: Vec::new(),
        targets: BTreeMap::new(),
        relaunched: HashSet::new(),
    };
    let mut files = own.to_vec();
    let mut cut = Vec::new();
    let mut owned_by_others = Vec::new();
    let me = rustix::process::geteuid().as_raw();
    let mut note = |path: &PathBuf, read: lines::FileRead| {
        if let Some(why) = read.cut {
            cut.push(Cut {
                file: path.clone(),
                why,
            });
        }
        if read.owner != 0 && read.owner != me {
            owned_by_others.push(path.clone());
        }
    };
    for path in own {
        let read = lines::each_line(path, |line| tally.own(line))
            .with_context(|| format!("reading '{}'", path.display()))?;
        note(path, read);
    }
    for log in &args.access_log {
        let rotated = lines::with_rotations(log);
        if rotated.is_empty() {
            bail!("no access log at '{}'", log.display());
        }
        for path in rotated {
            let read = lines::each_line(&path, |line| tally.access(line))
                .with_context(|| format!("reading '{}'", path.display()))?;
            note(&path, read);
            files.push(path);
        }
    }
    let mut totals = Counts::default();
    for counts in tally.buckets.values() {
        totals.add(counts);
    }
    let mut downtimes = std::mem::take(&mut tally.downtimes);
    downtimes.sort_by(f64::total_cmp);
    Ok(History {
        since,
        until,
        by: match args.by {
            By::Hour => "hour",
            By::Day => "day",
        },
        files,
        skipped: tally.skipped,
        cut,
        owned_by_others,
        buckets: tally.all_buckets(),
        totals,
        // Per target only when the log holds more than one (a `watch` log): one is the totals.
        targets: if tally.targets.len() > 1 {
            std::mem::take(&mut tally.targets)
        } else {
            BTreeMap::new()
        },
        incidents: Incidents {
            count: downtimes.len(),
            median_seconds: median(&downtimes),
            longest_seconds: downtimes.last().copied().unwrap_or(0.0),
        },
        visitors: !args.access_log.is_empty(),
    })
}

/// Whether an action relaunched: a start, restart or kill step, a pool's replicas included
/// (`www/1:restart,www/2:kill+start`); not kill-stuck, gave-up, budget-restored or a dry run's.
fn is_relaunch(action: &str) -> bool {
    action
        .split([',', '+'])
        .map(|step| step.rsplit(':').next().unwrap_or(step))
        .any(|step| matches!(step, "start" | "restart" | "kill"))
}

fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2],
        n => f64::midpoint(sorted[n / 2 - 1], sorted[n / 2]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relaunch_actions() {
        for yes in [
            "start",
            "restart",
            "kill+start",
            "restart+kill+start+cgi-kill",
            "www/1:restart,www/2:kill+start",
        ] {
            assert!(is_relaunch(yes), "{yes}");
        }
        for no in [
            "none",
            "kill-stuck",
            "gave-up",
            "budget-restored",
            "would-restart",
            "idle-stop",
            "would-relaunch:www/1",
        ] {
            assert!(!is_relaunch(no), "{no}");
        }
    }

    #[test]
    fn medians() {
        assert!((median(&[1.0, 3.0, 10.0]) - 3.0).abs() < f64::EPSILON);
        assert!((median(&[1.0, 3.0]) - 2.0).abs() < f64::EPSILON);
        assert!(median(&[]).abs() < f64::EPSILON);
    }
}
