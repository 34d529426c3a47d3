//! Reading the logs a report is made of: php-relaunch's own lines and nginx's `combined` access log,
//! each with its rotated siblings (`.1`, `.2.gz` …), oldest first, one line at a time, each line
//! bounded, so memory does not grow with the log. The pool user owns nginx's logs on Debian, so every
//! file is read as one others may have planted (#18): never through a link, never blocking, regular
//! files only, no further than its size when opened, a `.gz` unpacked to at most 64 times its size
//! (plus 16 MiB), and none for longer than [`MAX_TIME`].

use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset};
use flate2::read::MultiGzDecoder;

use crate::secure_file::{self, Links};

/// The longest line read; a longer one is skipped.
const MAX_LINE: usize = 64 * 1024;

/// How many rotated siblings are looked for.
const MAX_ROTATIONS: usize = 100;

/// How many times its own size a `.gz` may unpack to (real access logs: about 10 to 20 times; a
/// gzip bomb: about 1,000), and how much more on top.
const GZ_RATIO: u64 = 64;
const GZ_EXTRA: u64 = 16 << 20;

/// The longest one file is read.
pub const MAX_TIME: Duration = Duration::from_secs(30);

/// `path` and its rotated siblings that exist, oldest first: `P.N.gz` … `P.2.gz`, `P.1`, `P`. A
/// link is no rotated copy and is not listed.
pub fn with_rotations(path: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for n in (1..=MAX_ROTATIONS).rev() {
        for candidate in [
            format!("{}.{n}.gz", path.display()),
            format!("{}.{n}", path.display()),
        ] {
            let candidate = PathBuf::from(candidate);
            if candidate.symlink_metadata().is_ok_and(|m| m.is_file()) {
                found.push(candidate);
            }
        }
    }
    if path.is_file() {
        found.push(path.to_owned());
    }
    found
}

/// How a file was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRead {
    /// Its owner's uid.
    pub owner: u32,
    /// Why it was not read to its end, if it was not.
    pub cut: Option<String>,
}

/// A reader that gives at most `limit` bytes, and notes whether there was more.
struct Bounded<R> {
    inner: R,
    left: u64,
    hit: bool,
}

impl<R: io::Read> io::Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            // One byte more tells a file that ends here from one that goes on.
            let mut probe = [0u8; 1];
            self.hit = self.inner.read(&mut probe)? > 0;
            return Ok(0);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Calls `each` with every line of `path` (gunzipped when it ends in `.gz`); a line too long to be
/// one of ours is passed as `None`. Reading stops at the bounds above; the line cut by a bound is
/// dropped, and [`FileRead::cut`] says why.
pub fn each_line(path: &Path, mut each: impl FnMut(Option<&str>)) -> io::Result<FileRead> {
    let file = secure_file::open_regular(path, Links::Refuse)?;
    let meta = file.metadata()?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let limit = if gz {
        meta.len().saturating_mul(GZ_RATIO).saturating_add(GZ_EXTRA)
    } else {
        meta.len()
    };
    let inner: Box<dyn io::Read> = if gz {
        Box::new(MultiGzDecoder::new(file))
    } else {
        // No further than its size now: a writer appending all the while cannot keep us reading.
        Box::new(file)
    };
    let mut reader = BufReader::with_capacity(
        64 * 1024,
        Bounded {
            inner,
            left: limit,
            hit: false,
        },
    );
    let deadline = Instant::now() + MAX_TIME;
    let mut line = Vec::with_capacity(512);
    let cut = loop {
        if Instant::now() >= deadline {
            break Some(format!(
                "not read past {}s (a file this slow to read is not a log)",
                MAX_TIME.as_secs()
            ));
        }
        line.clear();
        let long = u64::try_from(MAX_LINE + 1).unwrap_or(u64::MAX);
        if reader.by_ref().take(long).read_until(b'\n', &mut line)? == 0 {
            break None;
        }
        if line.len() > MAX_LINE && !line.ends_with(b"\n") {
            each(None);
            // The rest of the long line, dropped.
            let mut rest = Vec::new();
            loop {
                rest.clear();
                let n = reader.by_ref().take(long).read_until(b'\n', &mut rest)?;
                if n == 0 || rest.ends_with(b"\n") {
                    break;
                }
            }
            continue;
        }
        if !line.ends_with(b"\n") && gz && reader.get_ref().left == 0 {
            // Cut by the bound: not a line.
            continue;
        }
        each(Some(String::from_utf8_lossy(&line).trim_end()));
    };
    let cut = cut.or_else(|| {
        (gz && reader.get_ref().hit).then(|| {
            format!(
                "unpacked no further than {} MiB, {GZ_RATIO} times its size and more (a gzip bomb?)",
                limit >> 20
            )
        })
    });
    Ok(FileRead {
        owner: meta.uid(),
        cut,
    })
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
    /// The php-fpm master a `watch` line is about (#21), and its relaunched pid.
    pub master: Option<&'a str>,
    pub new_pid: &'a str,
    /// The pool a `watch` line is about.
    pub pool: Option<&'a str>,
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
        master: None,
        new_pid: "-",
        pool: None,
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
            "master" => entry.master = Some(value),
            "new_pid" => entry.new_pid = value,
            "pool" => entry.pool = Some(value),
            _ => {}
        }
    }
    if [entry.url, entry.verdict, entry.action, entry.state].contains(&"") {
        return Line::Unreadable;
    }
    Line::Run(entry)
}

/// An access log line in nginx's `combined` format (`$remote_addr - $remote_user [$time_local]
/// "$request" $status …`): its time and status, when it reads as one. The user name comes before the
/// time and is the client's to choose, so the fields are found by their shape, not by the first `[`:
/// nginx escapes `"` in every variable (`\x22`), so the first `"` opens the request, and the time is
/// the fixed-width field just before it.
pub fn parse_access(line: &str) -> Option<(DateTime<FixedOffset>, u16)> {
    /// `[29/Nov/2026:22:34:36 +0100] ` is 29 bytes; the time is the 26 inside the brackets.
    const TIME: usize = 26;
    let request_start = line.find('"')?;
    let before = line[..request_start].strip_suffix("] ")?;
    let time_start = before.len().checked_sub(TIME)?;
    if !before.is_char_boundary(time_start) || !before[..time_start].ends_with('[') {
        return None;
    }
    let time = DateTime::parse_from_str(&before[time_start..], "%d/%b/%Y:%H:%M:%S %z").ok()?;
    let request_end = request_start + 1 + line[request_start + 1..].find('"')?;
    let status = line[request_end + 1..]
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
        // A user name that starts with `[`, or looks like a time of its own, moves nothing.
        for user in ["[evil", "[01/Jan/2020:00:00:00 +0000]", "a] \\x22x"] {
            let line = format!(
                r#"127.0.0.1 - {user} [29/Nov/2026:22:34:36 +0100] "GET / HTTP/1.1" 502 166 "-" "curl""#
            );
            let (time, status) = parse_access(&line).unwrap();
            assert_eq!(
                (time.to_rfc3339().as_str(), status),
                ("2026-11-29T22:34:36+01:00", 502)
            );
        }
    }
}
