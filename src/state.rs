//! The small memory between runs, one JSON file per target: written atomically (a temporary file in
//! the same directory, fsynced, renamed over the old one), never read through a symlink. A missing file
//! is a fresh start; a corrupt one is reported and treated as fresh, never a reason to stop watching.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use serde::{Deserialize, Serialize};

use crate::probe::status::Counters;
use crate::secure_file::{self, Links};

/// `time` in unix seconds, as the state keeps times (0 before 1970, which no clock here reads).
pub fn unix_seconds(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Where state files live by default.
pub const DIR: &str = "/var/lib/php-relaunch";

/// What is remembered about one target.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The target this state is about, for people reading the file.
    #[serde(default)]
    pub target: String,
    /// php-fpm's status counters at the previous check.
    #[serde(default)]
    pub status: Option<Counters>,
    /// Consecutive runs whose answer called for a relaunch.
    #[serde(default)]
    pub failures: u32,
    /// Consecutive healthy runs, counted up to what restoring the budget needs.
    #[serde(default)]
    pub successes: u32,
    /// When the recent relaunches happened, unix seconds, oldest first.
    #[serde(default)]
    pub relaunches: Vec<i64>,
    /// How long the last relaunch took, milliseconds.
    #[serde(default)]
    pub last_took_ms: Option<u64>,
    /// The restart budget is spent and the giving-up alert was sent.
    #[serde(default)]
    pub gave_up: bool,
    /// The giving-up alert was due and could not be sent: the next held run tries again (#19).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub give_up_unmailed: bool,
    /// The problem going on now, if any: one alert per incident, and a "recovered" one at its end.
    #[serde(default)]
    pub incident: Option<Incident>,
    /// `--metrics-file`: the counters behind the textfile.
    #[serde(default, skip_serializing_if = "Totals::is_empty")]
    pub totals: Totals,
    /// `idle-stop`: since when the pool has been idle without a break, unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<i64>,
    /// Alerts handed over by runs that let go of the lock to send them and have not booked their
    /// outcome yet (#19): not sent again meanwhile, counted as failed once their run is over.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mails_pending: Vec<PendingMail>,
}

/// An alert a run is sending without the lock; booked by that run once it knows the outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingMail {
    /// When it was handed over, unix seconds.
    pub at: i64,
    /// Until when its run may still book the outcome (its `--run-timeout`), unix seconds; past it,
    /// the run is over (ended by its deadline at the latest) and the mail counts as failed.
    pub until: i64,
    /// The start of the incident it tells of, if any: another alert of that incident waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incident: Option<i64>,
    /// It is the giving-up alert.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub giving_up: bool,
    /// The incident a relaunch ended, reopened (healed, untold) if the mail fails, so the next
    /// healthy run tells its end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reopen: Option<Incident>,
}

/// `--metrics-file`: the counters behind the textfile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    /// Failed checks by verdict.
    #[serde(default)]
    pub failures: BTreeMap<String, u64>,
    /// Relaunches by result: `healthy` (the heartbeat came back) or `down`.
    #[serde(default)]
    pub relaunches: BTreeMap<String, u64>,
    /// When a check last found the target healthy, unix seconds.
    #[serde(default)]
    pub last_healthy: Option<i64>,
}

impl Totals {
    pub fn is_empty(&self) -> bool {
        self == &Totals::default()
    }
}

/// A problem from its first failing run to the next healthy one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// When it began, unix seconds.
    pub since: i64,
    /// The verdict that began it.
    pub verdict: String,
    /// Whether its alert went out (so no other goes out for it).
    pub alerted: bool,
    /// Whether a relaunch an untrusted trigger started brought the heartbeat back: the incident stays
    /// open until a trusted run sees it healthy (so a cycle of hook relaunches is one incident and
    /// one mail, #18), and its end needs no mail of its own (the relaunch's said healthy again).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub healed: bool,
}

/// How many characters of a target a state file name keeps.
const NAME_CHARS: usize = 120;

/// The default state file of a target: `/var/lib/php-relaunch/<target in safe characters>-<hash>.json`.
/// The readable part is lossy (`/a_b`, `/a/b` and `/a?b` all read `a_b`) and cut at 120 characters,
/// so the name always ends in a hash of the whole target: two targets never share a file (#19).
pub fn default_path(target: &str) -> PathBuf {
    Path::new(DIR).join(format!("{}.json", file_stem(target)))
}

/// A file name for `key` (a target, a lock's instance): its safe characters, cut at 120, then a hash
/// of the whole key, so two keys never share a name.
pub fn file_stem(key: &str) -> String {
    let mut name = String::new();
    for c in key.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
            c
        } else {
            '_'
        };
        if !(c == '_' && name.ends_with('_')) {
            name.push(c);
        }
    }
    let short: String = name.trim_matches('_').chars().take(NAME_CHARS).collect();
    format!("{short}-{:016x}", fnv1a(key.as_bytes()))
}

/// FNV-1a, 64 bits: stable across releases and platforms (std's hasher promises neither), and all a
/// file name needs.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The largest state file read: a few hundred bytes is usual, and a larger one is not ours.
const MAX_STATE: usize = 1 << 20;

/// Loads the state; `Ok((state, Some(warning)))` when the file was unusable and a fresh state is used.
/// The file is read as one others might have replaced: never through a link, never blocking (a FIFO
/// is refused at once, before the run's deadline is armed), regular files only, at most 1 MiB.
pub fn load(path: &Path) -> Result<(State, Option<String>)> {
    let text = match secure_file::read_text(path, Links::Refuse, MAX_STATE) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok((State::default(), None)),
        Err(_)
            if path
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            return Err(anyhow!(
                "refusing state file '{}': it is a symbolic link",
                path.display()
            ));
        }
        Err(err) => {
            return Err(anyhow!(
                "cannot read state file '{}': {err}",
                path.display()
            ));
        }
    };
    match serde_json::from_str(&text) {
        Ok(state) => Ok((state, None)),
        Err(err) => Ok((
            State::default(),
            Some(format!(
                "state file '{}' is corrupt ({err}); starting afresh",
                path.display()
            )),
        )),
    }
}

/// Replaces the state file atomically, 0600, through the one primitive for root's files: a crash
/// leaves either the old file or the new one, whole.
pub fn save(path: &Path, state: &State) -> Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).with_context(|| format!("creating '{}'", dir.display()))?;
    let mut json = serde_json::to_vec_pretty(state)?;
    json.push(b'\n');
    secure_file::replace(path, "state file", &json, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> Counters {
        Counters {
            start_time: 1,
            max_children_reached: 2,
            slow_requests: 3,
        }
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        let state = State {
            target: "unix:///x.sock;/status?json".into(),
            status: Some(counters()),
            failures: 2,
            relaunches: vec![1_700_000_000],
            incident: Some(Incident {
                since: 1_700_000_000,
                verdict: "502".into(),
                alerted: true,
                healed: false,
            }),
            ..State::default()
        };
        save(&path, &state).unwrap();
        assert_eq!(load(&path).unwrap(), (state, None));
        // Nothing but the state file is left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn missing_is_fresh_and_corrupt_is_fresh_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert_eq!(load(&path).unwrap(), (State::default(), None));
        fs::write(&path, "{\"status\": {\"start_time\": ").unwrap();
        let (state, warning) = load(&path).unwrap();
        assert_eq!(state, State::default());
        assert!(warning.unwrap().contains("is corrupt"));
    }

    #[test]
    fn a_partial_temporary_file_leaves_the_old_state_valid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let state = State {
            target: "t".into(),
            status: Some(counters()),
            ..State::default()
        };
        save(&path, &state).unwrap();
        // What a crash in the middle of a save leaves: a half-written temporary file beside it.
        fs::write(dir.path().join(".state-crashed"), "{\"targ").unwrap();
        assert_eq!(load(&path).unwrap().0, state);
    }

    #[test]
    fn symlinks_are_refused_and_left_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("precious");
        fs::write(&target, "keep").unwrap();
        let link = dir.path().join("state.json");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = load(&link).unwrap_err().to_string();
        assert!(err.contains("is a symbolic link"), "{err}");
        let err = save(&link, &State::default()).unwrap_err().to_string();
        assert!(err.contains("is a symlink"), "{err}");
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
    }

    #[test]
    fn default_paths_are_readable_and_safe() {
        let path = default_path("unix:///run/php/php8.2-fpm.sock;/status?json");
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(path.parent(), Some(Path::new(DIR)));
        assert!(
            name.starts_with("unix_run_php_php8.2-fpm.sock_status_json-"),
            "{name}"
        );
        assert_eq!(path.extension(), Some("json".as_ref()));
        assert_eq!(
            path,
            default_path("unix:///run/php/php8.2-fpm.sock;/status?json"),
            "stable"
        );
    }

    #[test]
    fn targets_alike_in_safe_characters_get_names_of_their_own() {
        let names: std::collections::HashSet<PathBuf> = [
            "http://127.0.0.1/a_b",
            "http://127.0.0.1/a/b",
            "http://127.0.0.1/a?b",
            "http://127.0.0.1/a__b",
            "http://127.0.0.1/a_b/",
        ]
        .into_iter()
        .map(default_path)
        .collect();
        assert_eq!(names.len(), 5, "{names:#?}");
    }

    #[test]
    fn long_targets_alike_at_first_get_names_of_their_own() {
        let base = format!("http://127.0.0.1/{}", "a".repeat(200));
        let (one, two) = (
            default_path(&format!("{base}/1")),
            default_path(&format!("{base}/2")),
        );
        assert_ne!(one, two);
        let name = one.file_name().unwrap().to_str().unwrap();
        assert!(name.len() <= NAME_CHARS + 22, "{name}");
        assert_eq!(one, default_path(&format!("{base}/1")), "stable");
    }
}
