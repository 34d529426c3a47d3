//! Reading the logs a report is made of: php-relaunch's own lines and nginx's `combined` access log,
//! each with its rotated siblings (`.1`, `.2.gz` …), oldest first, one line at a time, each line
//! bounded, so memory does not grow with the log.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use chrono::{DateTime, FixedOffset};
use flate2::read::MultiGzDecoder;

/// The longest line read; a longer one is skipped.
const MAX_LINE: usize = 64 * 1024;

/// How many rotated siblings are looked for.
const MAX_ROTATIONS: usize = 100;

/// `path` and its rotated siblings that exist, oldest first: `P.N.gz` … `P.2.gz`, `P.1`, `P`.
pub fn with_rotations(path: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for n in (1..=MAX_ROTATIONS).rev() {
        for candidate in [
            format!("{}.{n}.gz", path.display()),
            format!("{}.{n}", path.display()),
        ] {
            let candidate = PathBuf::from(candidate);
            if candidate.is_file() {
                found.push(candidate);
            }
        }
    }
    if path.is_file() {
        found.push(path.to_owned());
    }
    found
}

/// Calls `each` with every line of `path` (gunzipped when it ends in `.gz`); a line too long to be
/// one of ours is passed as `None`.
pub fn each_line(path: &Path, mut each: impl FnMut(Option<&str>)) -> io::Result<()> {
    let file = File::open(path)?;
    let reader: Box<dyn Read> = if path.extension().is_some_and(|e| e == "gz") {
        Box::new(MultiGzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut line = Vec::with_capacity(512);
    loop {
        line.clear();
        let limit = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
        if reader.by_ref().take(limit).read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.len() > MAX_LINE && !line.ends_with(b"\n") {
            each(None);
            // The rest of the long line, dropped.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let n = reader.by_ref().take(limit).read_until(b'\n', &mut rest)?;
                if n == 0 || rest.ends_with(b"\n") {
                    break;
                }
            }
            continue;
        }
        each(Some(String::from_utf8_lossy(&line).trim_end()));
    }
}

/// One of php-relaunch's log lines, as far as a report needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub time: DateTime<FixedOffset>,
    pub url: &'a str,
    pub verdict: &'a str,
    pub action: &'a str,
    pub state: &'a str,
    /// `hook`, or `cron` (also for lines from before `trigger=` existed).
    pub trigger: &'a str,
}

/// What a line of php-relaunch's log is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line<'a> {
    /// A run's line.
    Run(Entry<'a>),
    /// A `pools` step: not a run.
    Pools,
    /// Not one of ours.
    Unreadable,
}

/// Reads a line: the timestamp, then `key=value` fields in any order, `error="…"` last (its text is
/// never taken for fields).
pub fn parse(line: &str) -> Line<'_> {
    let Some((stamp, rest)) = line.split_once(' ') else {
        return Line::Unreadable;
    };
    let Ok(time) = DateTime::parse_from_rfc3339(stamp) else {
        return Line::Unreadable;
    };
    if rest.starts_with("pools: ") {
        return Line::Pools;
    }
    let fields = match rest.find(" error=\"") {
        Some(at) => &rest[..at],
        None => rest.strip_prefix("error=\"").map_or(rest, |_| ""),
    };
    let mut entry = Entry {
        time,
        url: "",
        verdict: "",
        action: "",
        state: "",
        trigger: "cron",
    };
    for field in fields.split(' ') {
        let Some((key, value)) = field.split_once('=') else {
            continue;
        };
        match key {
            "url" => entry.url = value,
            "verdict" => entry.verdict = value,
            "action" => entry.action = value,
            "state" => entry.state = value,
            "trigger" => entry.trigger = value,
            _ => {}
        }
    }
    if [entry.url, entry.verdict, entry.action, entry.state].contains(&"") {
        return Line::Unreadable;
    }
    Line::Run(entry)
}

/// An access log line in nginx's `combined` format: its time and status, when it reads as one.
pub fn parse_access(line: &str) -> Option<(DateTime<FixedOffset>, u16)> {
    let open = line.find('[')?;
    let close = open + line[open..].find(']')?;
    let time = DateTime::parse_from_str(&line[open + 1..close], "%d/%b/%Y:%H:%M:%S %z").ok()?;
    let after = &line[close + 1..];
    let request_start = after.find('"')?;
    let request_end = request_start + 1 + after[request_start + 1..].find('"')?;
    let status = after[request_end + 1..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some((time, status))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_of_every_age() {
        let new = "2026-11-23T17:47:43+00:00 url=http://h/hb.php verdict=timeout latency=2.015s action=kill+start \
                   old_pid=1 new_pid=2 took=0.108s state=healthy mail=sent trigger=hook events=3 error=\"x state=down y\"";
        let Line::Run(entry) = parse(new) else {
            panic!()
        };
        assert_eq!(
            (entry.verdict, entry.action, entry.state, entry.trigger),
            ("timeout", "kill+start", "healthy", "hook")
        );
        let old = "2026-11-23T17:47:43+01:00 url=u verdict=502 latency=0.001s action=start old_pid=- new_pid=9 took=0.1s state=down mail=none error=\"trigger=hook\"";
        let Line::Run(entry) = parse(old) else {
            panic!()
        };
        assert_eq!(
            (entry.trigger, entry.state),
            ("cron", "down"),
            "error text is not fields"
        );
        let shuffled = "2026-11-23T17:47:43+00:00 state=healthy action=none verdict=200 url=u";
        assert!(matches!(parse(shuffled), Line::Run(_)));
        assert_eq!(
            parse("2026-11-23T17:47:43+00:00 pools: www/1: drained"),
            Line::Pools
        );
        for bad in [
            "",
            "garbage",
            "2026-13-45T00:00:00Z url=u",
            "2026-11-23T17:47:43+00:00 url=u verdict=502",
        ] {
            assert_eq!(parse(bad), Line::Unreadable, "{bad}");
        }
    }

    #[test]
    fn combined_access_lines() {
        let line = r#"127.0.0.1 - - [29/Nov/2026:22:34:36 +0100] "GET /x?a=\x221\x22 HTTP/1.1" 502 166 "-" "curl/7.88.1""#;
        let (time, status) = parse_access(line).unwrap();
        assert_eq!(status, 502);
        assert_eq!(time.to_rfc3339(), "2026-11-29T22:34:36+01:00");
        assert_eq!(parse_access("nonsense"), None);
    }
}
