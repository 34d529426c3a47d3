//! The keys of a watch file and what they become: each target's settings as the classic run's
//! command line (`--max-restarts` is `max_restarts`), and its mistakes told in the file's terms,
//! with the line of the key they are about.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

use std::path::PathBuf;

use lettre::Address;

use super::{LOG, Overrides, RunSettings, STATE_DIR};
use crate::alert::Transport;
use crate::cli::values;

/// A target's deadline when neither it nor the defaults give `timeout` (as `check`'s).
pub(super) const TIMEOUT: &str = "5";

/// The keys of a target and of the defaults: the classic run's long options, `-` → `_`.
pub(super) const TARGET_KEYS: [&str; 26] = [
    "timeout",
    "emails",
    "php_cgi",
    "expect",
    "listen_queue",
    "active_processes",
    "max_children_reached",
    "slow_requests",
    "service",
    "fpm_bin",
    "fpm_config",
    "pid_file",
    "relaunch_on",
    "restart_timeout",
    "run_timeout",
    "cgi_service",
    "failures",
    "max_restarts",
    "within",
    "recover_after",
    "pause_file",
    "status",
    "relaunch_saturated",
    "stuck_after",
    "evidence_dir",
    "on_demand",
];

/// Keys of the top of the file only: how the whole run behaves (the command line wins).
pub(super) const RUN_KEYS: [&str; 5] = ["log", "state_dir", "metrics_file", "smtp", "from"];

/// Keys of `[discover]` beside the target keys it may override.
pub(super) const DISCOVER_KEYS: [&str; 2] = ["fpm_configs", "fpm_bin"];

/// On/off keys: `true` gives the flag.
pub(super) const FLAGS: [&str; 2] = ["on_demand", "relaunch_saturated"];

/// A value as the file gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Value {
    Text(String),
    List(Vec<String>),
    Flag(bool),
}

/// One `key = value` and the line it is on.
#[derive(Debug, Clone)]
pub(super) struct Setting {
    pub(super) value: Value,
    pub(super) line: usize,
}

pub(super) type Settings = BTreeMap<String, Setting>;

/// The command line a target's settings make.
pub(super) fn words(url: &str, settings: &Settings, run: &RunSettings) -> Vec<OsString> {
    let text = |key: &str| {
        settings.get(key).map(|s| match &s.value {
            Value::Text(t) => t.clone(),
            Value::List(l) => l.join(","),
            Value::Flag(f) => if *f { "1" } else { "0" }.to_owned(),
        })
    };
    let mut words: Vec<String> = vec![
        url.to_owned(),
        text("timeout").unwrap_or_else(|| TIMEOUT.to_owned()),
        text("emails").unwrap_or_default(),
        text("php_cgi").unwrap_or_else(|| "0".to_owned()),
    ];
    for (key, setting) in settings {
        if ["timeout", "emails", "php_cgi"].contains(&key.as_str()) {
            continue;
        }
        let option = format!("--{}", key.replace('_', "-"));
        match &setting.value {
            Value::Flag(true) => words.push(option),
            Value::Flag(false) => {}
            Value::Text(t) => words.extend([option, t.clone()]),
            Value::List(l) => words.extend([option, l.join(",")]),
        }
    }
    let state = state_path(url, run);
    words.extend([
        "--log".to_owned(),
        run.log.display().to_string(),
        "--state".to_owned(),
        state.display().to_string(),
    ]);
    if run.dry_run {
        words.push("--dry-run".to_owned());
    }
    words.into_iter().map(OsString::from).collect()
}

/// A target's state file: `state_dir/<url in safe characters>-<hash>.json`.
pub(super) fn state_path(url: &str, run: &RunSettings) -> PathBuf {
    run.state_dir
        .join(format!("{}.json", crate::state::file_stem(url)))
}

/// A message about `--max-restarts` as the file says it, `max_restarts`, with the line of the key
/// it is about.
pub(super) fn in_file_terms(message: &str, settings: &Settings) -> (Option<usize>, String) {
    let mut text = message.replace(" (see --help)", "");
    let mut line = None;
    for (key, setting) in settings {
        let option = format!("--{}", key.replace('_', "-"));
        let quoted = match &setting.value {
            Value::Text(value) => Some(format!("'{value}'")),
            _ => None,
        };
        if text.contains(&option) || quoted.is_some_and(|q| text.contains(&q)) {
            text = text.replace(&option, key);
            line = line.or(Some(setting.line).filter(|l| *l > 0));
        }
    }
    for (positional, key) in [
        ("TIMEOUT", "timeout"),
        ("EMAILS", "emails"),
        ("PHP_CGI", "php_cgi"),
        ("URL", "url"),
    ] {
        if text.contains(positional) {
            text = text.replace(positional, key);
            line = line.or(settings.get(key).map(|s| s.line).filter(|l| *l > 0));
        }
    }
    (line, text)
}

/// A value of the file as text, a list of texts, or a flag.
pub(super) fn value_of(key: &str, value: &DeValue<'_>) -> Result<Value, String> {
    let scalar = |v: &DeValue<'_>| match v {
        DeValue::String(s) => Some(s.to_string()),
        DeValue::Integer(i) => Some(i.as_str().to_owned()),
        DeValue::Float(f) => Some(f.as_str().to_owned()),
        _ => None,
    };
    if FLAGS.contains(&key) {
        return match value {
            DeValue::Boolean(b) => Ok(Value::Flag(*b)),
            _ => Err(format!("`{key}` takes true or false")),
        };
    }
    match value {
        DeValue::Boolean(b) => Ok(Value::Flag(*b)),
        DeValue::Array(items) => items
            .iter()
            .map(|item| {
                scalar(item.get_ref()).ok_or_else(|| format!("`{key}` takes a list of strings"))
            })
            .collect::<Result<_, _>>()
            .map(Value::List),
        other => scalar(other)
            .map(Value::Text)
            .ok_or_else(|| format!("`{key}` takes a string or a number")),
    }
}

/// Refuses a key the file does not know, saying why for the classic options it does not take.
pub(super) fn check_key(key: &str, known: &[&str]) -> Result<(), String> {
    if known.contains(&key) {
        return Ok(());
    }
    let why = match key {
        "lock" => "locks are per master, under /run/php-relaunch/",
        "state" => "each target's state is kept under state_dir",
        "every" | "dry_run" => "it is an option of the command line",
        "pool" | "config" => "pools of replicas are watched by classic runs",
        "url" => "`url` belongs in a [[target]] table",
        _ if RUN_KEYS.contains(&key) => "it belongs at the top of the file",
        _ => "see docs/watch.md for the keys",
    };
    Err(format!("unknown key `{key}` ({why})"))
}

/// The 1-based line of a byte offset.
pub(super) fn line_of(text: &str, span: &Range<usize>) -> usize {
    text.get(..span.start)
        .map_or(1, |before| before.matches('\n').count() + 1)
}

/// The lines of the `[[target]]` headers, in order.
pub(super) fn header_lines(text: &str) -> Vec<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| {
            l.trim_start()
                .strip_prefix("[[")
                .is_some_and(|rest| rest.trim_start().starts_with("target"))
        })
        .map(|(i, _)| i + 1)
        .collect()
}

/// Where a `[[target]]` table begins: its first key (the header is the line before), else the array.
pub(super) fn table_span(table: &DeTable<'_>, array: &Range<usize>) -> Range<usize> {
    table
        .keys()
        .map(toml::Spanned::span)
        .min_by_key(|s| s.start)
        .unwrap_or_else(|| array.clone())
}

/// The run's own settings: the command line's, else the top of the file's, else the defaults.
pub(super) struct Top {
    pub(super) log: PathBuf,
    pub(super) state_dir: PathBuf,
    pub(super) metrics_file: Option<PathBuf>,
    pub(super) transport: Transport,
    pub(super) from: Option<Address>,
}

pub(super) fn top_of(
    run: &BTreeMap<String, (usize, Value)>,
    over: Overrides,
) -> Result<Top, (usize, String)> {
    let text_of = |key: &str| -> Result<Option<(usize, String)>, (usize, String)> {
        match run.get(key) {
            Some((line, Value::Text(text))) => Ok(Some((*line, text.clone()))),
            Some((line, _)) => Err((*line, format!("`{key}` takes one string"))),
            None => Ok(None),
        }
    };
    let path = |key: &str| text_of(key).map(|t| t.map(|(_, t)| PathBuf::from(t)));
    let transport = match (over.smtp, text_of("smtp")?) {
        (Some(smtp), _) => smtp,
        (None, Some((line, text))) => {
            values::smtp("smtp", &text).map_err(|e| (line, format!("{e:#}")))?
        }
        (None, None) => Transport::Sendmail,
    };
    let from = match (over.from, text_of("from")?) {
        (Some(from), _) => Some(from),
        (None, Some((line, text))) => {
            Some(values::address("from", &text).map_err(|e| (line, format!("{e:#}")))?)
        }
        (None, None) => None,
    };
    Ok(Top {
        log: over.log.or(path("log")?).unwrap_or_else(|| LOG.into()),
        state_dir: over
            .state_dir
            .or(path("state_dir")?)
            .unwrap_or_else(|| STATE_DIR.into()),
        metrics_file: over.metrics_file.or(path("metrics_file")?),
        transport,
        from,
    })
}
