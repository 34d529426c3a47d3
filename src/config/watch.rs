//! `watch`'s checked configuration, built from its command line and its TOML file (#21): defaults at
//! the top, `[[target]]` tables and/or a `[discover]` table. Every target becomes the classic run's
//! arguments and goes through the same parser and the same checks (`Config::from_run`), so the file
//! and the command line cannot disagree; a mistake is one line naming the file and the line.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Result, anyhow};
use lettre::Address;
use toml::de::{DeTable, DeValue};

mod keys;
mod memo;

pub use memo::Memo;

use keys::{
    DISCOVER_KEYS, RUN_KEYS, Setting, Settings, TARGET_KEYS, Value, check_key, header_lines,
    in_file_terms, line_of, table_span, top_of, value_of, words,
};

use super::{Config, Terms};
use crate::alert::Transport;
use crate::cli::{self, WatchArgs};
use crate::fpm::Control;
use crate::probe::Target as ProbeTarget;
use crate::probe::fastcgi::Address as Listen;
use crate::secure_file::{self, Links};

/// The keys that judge the probe's reply as php-fpm's status page.
const THRESHOLDS: [&str; 4] = [
    "listen_queue",
    "active_processes",
    "max_children_reached",
    "slow_requests",
];

/// The most of a watch file that is read.
const MAX_FILE: usize = 1 << 20;

/// The default of `log`.
const LOG: &str = "/var/log/php-relaunch.log";

/// The default of `state_dir`.
pub const STATE_DIR: &str = "/var/lib/php-relaunch/watch";

/// A watch run's configuration, checked.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The file it came from.
    pub file: PathBuf,
    /// Decide and print only.
    pub dry_run: bool,
    /// Repeat the run at this interval until the minute is over.
    pub every: Option<Duration>,
    /// The log, one line per target with a problem.
    pub log: PathBuf,
    /// Each target's state and each master's budget.
    pub state_dir: PathBuf,
    /// The node_exporter textfile, one series per target.
    pub metrics_file: Option<PathBuf>,
    /// How the mail leaves.
    pub transport: Transport,
    /// Its sender; `None` for php-relaunch@HOSTNAME.
    pub from: Option<Address>,
    /// The `[[target]]` tables.
    pub targets: Vec<Target>,
    /// The `[discover]` table.
    pub discover: Option<Discover>,
}

/// One target, as a classic run's configuration plus what groups it.
#[derive(Debug, Clone)]
pub struct Target {
    /// The classic run's configuration of this target.
    pub config: Config,
    /// The php-fpm pool it is, when known: its saturation is judged from its own workers.
    pub pool: Option<String>,
    /// Why it is watched without relaunching, if it is.
    pub alert_only: Option<String>,
    /// The instance key of its master, which names its lock, its budget and its group: its
    /// control's, or for a discovered configuration without one, that configuration's.
    pub master: String,
    /// A discovered configuration watched alert-only: its answers are believed only from its own
    /// master's sockets.
    pub watched: Option<PathBuf>,
}

/// `[discover]`: the configurations whose pools are watched, and the settings their targets get.
#[derive(Debug, Clone)]
pub struct Discover {
    /// Patterns of php-fpm configuration files (`*` within a path component).
    pub fpm_configs: Vec<String>,
    /// The php-fpm binary that controls masters no service controls.
    pub fpm_bin: Option<PathBuf>,
    /// The defaults, overridden by `[discover]`'s own target keys.
    settings: Settings,
    /// What the run's settings make of every target.
    run: RunSettings,
}

/// What every target's classic configuration takes from the run.
#[derive(Debug, Clone)]
struct RunSettings {
    log: PathBuf,
    state_dir: PathBuf,
    dry_run: bool,
}

/// How a discovered pool's master is controlled.
#[derive(Debug, Clone)]
pub enum DiscoveredControl {
    /// Its service.
    Service(String),
    /// `[discover]`'s `fpm_bin` with this configuration.
    Direct(PathBuf),
    /// Neither is known: watched alert-only, as a master of its own (keyed by its configuration,
    /// never the `service:detected` of a classic run, nor another such configuration's).
    AlertOnly {
        /// The configuration, canonical.
        config: PathBuf,
        /// Why it is not relaunched.
        why: String,
    },
}

impl Discover {
    /// The target of a discovered pool at `url`, judged from its own status page `status` when it
    /// has one. Never from the top's `status`: that would be one page for every pool. Without a
    /// page of its own, `stuck_after` is dropped for it (only a status page tells how long a worker
    /// has been in its request); its saturation is judged from /proc.
    ///
    /// `memo` is the run's: what the pools before this one had parsed and checked.
    pub fn target(
        &self,
        memo: &mut Memo,
        url: &str,
        pool: &str,
        control: &DiscoveredControl,
        on_demand: bool,
        status: Option<&str>,
    ) -> Result<Target> {
        let (settings, alert_only, own) = self.settings_of(control, on_demand, status);
        let mut config = memo
            .classic(url, &settings, &self.run)
            .map_err(|(_, err)| anyhow!("discovered pool '{pool}' ({url}): {err:#}"))?;
        config.fpm_pool = Some(pool.to_owned());
        let master = match own {
            Some(key) => {
                config.lock = crate::lock::instance_path(&key);
                key
            }
            None => crate::fpm::instance_key(&config.control, None),
        };
        let watched = match control {
            DiscoveredControl::AlertOnly { config, .. } => Some(config.clone()),
            _ => None,
        };
        Ok(Target {
            config,
            pool: Some(pool.to_owned()),
            alert_only,
            master,
            watched,
        })
    }

    /// A discovered pool's settings, why it is watched alert-only, if it is, and then the instance
    /// key of its own (its configuration's) it is grouped and locked by.
    fn settings_of(
        &self,
        control: &DiscoveredControl,
        on_demand: bool,
        status: Option<&str>,
    ) -> (Settings, Option<String>, Option<String>) {
        let mut settings = self.settings.clone();
        // The top's thresholds are the listed targets' (whose url is a status page).
        for threshold in THRESHOLDS {
            settings.remove(threshold);
        }
        if let Some(page) = status {
            set(&mut settings, "status", page);
        } else {
            settings.remove("status");
            settings.remove("stuck_after");
        }
        let mut alert_only = None;
        let mut own = None;
        match control {
            DiscoveredControl::Service(name) => set(&mut settings, "service", name),
            DiscoveredControl::Direct(config) => {
                if let Some(bin) = &self.fpm_bin {
                    set(&mut settings, "fpm_bin", &bin.display().to_string());
                }
                set(&mut settings, "fpm_config", &config.display().to_string());
            }
            DiscoveredControl::AlertOnly { config, why } => {
                alert_only = Some(why.clone());
                own = Some(crate::fpm::config_key(config));
            }
        }
        if on_demand {
            settings.insert(
                "on_demand".into(),
                Setting {
                    value: Value::Flag(true),
                    line: 0,
                },
            );
        }
        (settings, alert_only, own)
    }
}

fn set(settings: &mut Settings, key: &str, value: &str) {
    settings.insert(
        key.to_owned(),
        Setting {
            value: Value::Text(value.to_owned()),
            line: 0,
        },
    );
}

/// Reads and checks the watch file `args` names. Nothing is probed.
pub fn load(args: WatchArgs) -> Result<WatchConfig> {
    let file = args.config;
    // It decides what root runs and where root writes: only a file root controls (#18).
    // Read where it was checked, not through the links again.
    let canonical = crate::fpm::root_file(&file)
        .map_err(|err| anyhow!("watch file '{}': {err:#}", file.display()))?;
    let text = secure_file::read_text(&canonical, Links::Refuse, MAX_FILE)
        .map_err(|err| anyhow!("watch file '{}': {err}", file.display()))?;
    parse(
        &file,
        &text,
        args.dry_run,
        args.every,
        Overrides {
            log: args.log,
            state_dir: args.state_dir,
            metrics_file: args.metrics_file,
            smtp: args.smtp,
            from: args.from,
        },
    )
}

/// What the command line says over the file's top.
#[derive(Debug, Default)]
pub struct Overrides {
    /// `--log`.
    pub log: Option<PathBuf>,
    /// `--state-dir`.
    pub state_dir: Option<PathBuf>,
    /// `--metrics-file`.
    pub metrics_file: Option<PathBuf>,
    /// `--smtp`.
    pub smtp: Option<Transport>,
    /// `--from`.
    pub from: Option<Address>,
}

/// Checks the text of a watch file.
pub fn parse(
    file: &Path,
    text: &str,
    dry_run: bool,
    every: Option<Duration>,
    over: Overrides,
) -> Result<WatchConfig> {
    let at = |line: usize, what: String| anyhow!("{}:{line}: {what}", file.display());
    let doc = DeTable::parse(text).map_err(|err| {
        let line = err.span().map_or(1, |span| line_of(text, &span));
        at(line, err.message().trim().to_owned())
    })?;
    let mut defaults = Settings::new();
    let mut run = BTreeMap::new();
    let mut targets = Vec::new();
    let mut discover = None;
    for (key, value) in doc.get_ref() {
        let line = line_of(text, &key.span());
        let name = key.get_ref().as_ref();
        match (name, value.get_ref()) {
            ("target", DeValue::Array(tables)) => {
                let headers = header_lines(text);
                for (index, table) in tables.iter().enumerate() {
                    let DeValue::Table(table) = table.get_ref() else {
                        return Err(at(line, "`target` must be [[target]] tables".into()));
                    };
                    let start = match headers.get(index) {
                        Some(&header) if headers.len() == tables.len() => header,
                        _ => line_of(text, &table_span(table, &value.span())),
                    };
                    targets.push((start, table));
                }
            }
            ("discover", DeValue::Table(table)) => discover = Some((line, table)),
            ("target" | "discover", _) => {
                return Err(at(
                    line,
                    format!("`{name}` must be a table: [[target]] or [discover]"),
                ));
            }
            (key, _) if RUN_KEYS.contains(&key) => {
                run.insert(
                    key.to_owned(),
                    (
                        line,
                        value_of(key, value.get_ref()).map_err(|e| at(line, e))?,
                    ),
                );
            }
            (key, _) => {
                check_key(key, &TARGET_KEYS).map_err(|e| at(line, e))?;
                let value = value_of(key, value.get_ref()).map_err(|e| at(line, e))?;
                defaults.insert(key.to_owned(), Setting { value, line });
            }
        }
    }
    let top = top_of(&run, over).map_err(|(line, e)| at(line, e))?;
    let (log, state_dir) = (top.log.clone(), top.state_dir.clone());
    let run_settings = RunSettings {
        log: log.clone(),
        state_dir: state_dir.clone(),
        dry_run,
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut checked = Vec::new();
    for (line, table) in targets {
        let (url, target) =
            listed(line, table, &defaults, &run_settings, text).map_err(|(l, e)| at(l, e))?;
        if let Some(first) = seen.insert(url.clone(), line) {
            return Err(at(
                line,
                format!("duplicate target '{url}' (first at line {first})"),
            ));
        }
        checked.push(target);
    }
    let discover = match discover {
        Some((line, table)) => Some(
            discover_of(table, &defaults, run_settings, text)
                .map_err(|(l, e)| at(l.unwrap_or(line), e))?,
        ),
        None => None,
    };
    if checked.is_empty() && discover.is_none() {
        return Err(at(
            1,
            "nothing to watch: add [[target]] tables or a [discover] table".into(),
        ));
    }
    Ok(WatchConfig {
        file: file.to_owned(),
        dry_run,
        every,
        log,
        state_dir,
        metrics_file: top.metrics_file,
        transport: top.transport,
        from: top.from,
        targets: checked,
        discover,
    })
}

/// A `[[target]]` table beginning at `line`, checked: its url and its target.
fn listed(
    line: usize,
    table: &DeTable<'_>,
    defaults: &Settings,
    run: &RunSettings,
    text: &str,
) -> Result<(String, Target), (usize, String)> {
    let mut settings = defaults.clone();
    let mut url = None;
    let mut url_line = line;
    let mut alert_only = None;
    for (key, value) in table {
        let key_line = line_of(text, &key.span());
        let name = key.get_ref().as_ref();
        // Watched, logged and mailed, never relaunched: what `doctor --watch-config` writes for a
        // master whose control it cannot tell.
        if name == "alert_only" {
            match value.get_ref() {
                DeValue::Boolean(true) => {
                    alert_only = Some(format!("alert_only = true (line {key_line})"));
                }
                DeValue::Boolean(false) => {}
                _ => return Err((key_line, "`alert_only` takes true or false".into())),
            }
            continue;
        }
        if name == "url" {
            match value.get_ref() {
                DeValue::String(url_text) => {
                    url = Some(url_text.to_string());
                    url_line = key_line;
                }
                _ => return Err((key_line, "`url` takes one string".into())),
            }
            continue;
        }
        check_key(name, &TARGET_KEYS).map_err(|e| (key_line, e))?;
        let value = value_of(name, value.get_ref()).map_err(|e| (key_line, e))?;
        settings.insert(
            name.to_owned(),
            Setting {
                value,
                line: key_line,
            },
        );
    }
    let Some(url) = url else {
        return Err((line, "[[target]] without `url`".into()));
    };
    let mut config = classic(&url, &settings, run).map_err(|(key_line, err)| {
        let text = format!("{err:#}");
        let line = key_line.unwrap_or(if text.contains(&url) { url_line } else { line });
        (line, text)
    })?;
    let pool = pool_of(&config);
    config.fpm_pool.clone_from(&pool);
    let mut master = crate::fpm::instance_key(&config.control, None);
    if alert_only.is_some() && matches!(config.control, Control::Service(None)) {
        // No php-fpm named: a master of its own, not whatever service a classic run detects.
        master = format!("alert-only:{url}");
        config.lock = crate::lock::instance_path(&master);
    }
    Ok((
        url,
        Target {
            config,
            pool,
            alert_only,
            master,
            watched: None,
        },
    ))
}

/// `[discover]`, checked; its target keys are tried on a sample target so that a bad value is
/// told now, with its line, not when a pool is found.
fn discover_of(
    table: &DeTable<'_>,
    defaults: &Settings,
    run: RunSettings,
    text: &str,
) -> Result<Discover, (Option<usize>, String)> {
    let mut settings = defaults.clone();
    let mut fpm_configs = Vec::new();
    let mut fpm_bin = None;
    for (key, value) in table {
        let line = line_of(text, &key.span());
        let name = key.get_ref().as_ref();
        let value = value_of(name, value.get_ref()).map_err(|e| (Some(line), e))?;
        match (name, value) {
            ("fpm_configs", Value::List(list)) => fpm_configs = list,
            ("fpm_configs", Value::Text(one)) => fpm_configs = vec![one],
            ("fpm_bin", Value::Text(bin)) => fpm_bin = Some(PathBuf::from(bin)),
            ("fpm_configs" | "fpm_bin", _) => {
                return Err((Some(line), format!("`{name}` takes a string")));
            }
            // One page for every pool would judge them all by one pool's workers.
            ("status", _) => {
                return Err((
                    Some(line),
                    "`status` in [discover] would give every pool the same status page: each \
                     discovered pool with pm.status_path is judged from its own (over \
                     pm.status_listen when set); list a pool as a [[target]] to give it another"
                        .into(),
                ));
            }
            // They judge the probe's own reply: a discovered pool's is its ping, not a page.
            (name, _) if THRESHOLDS.contains(&name) => {
                return Err((
                    Some(line),
                    format!(
                        "`{name}` in [discover] would judge each pool's ping as a status page: \
                         list the pool as a [[target]] whose url is its status page to set it"
                    ),
                ));
            }
            (name, value) => {
                let keys: Vec<&str> = TARGET_KEYS
                    .iter()
                    .copied()
                    .filter(|k| !["service", "fpm_config", "fpm_bin"].contains(k))
                    .chain(DISCOVER_KEYS)
                    .collect();
                check_key(name, &keys).map_err(|e| (Some(line), e))?;
                settings.insert(name.to_owned(), Setting { value, line });
            }
        }
    }
    if fpm_configs.is_empty() {
        return Err((
            None,
            "[discover] needs `fpm_configs`, e.g. [\"/etc/php/*/fpm/php-fpm.conf\"]".into(),
        ));
    }
    // Root runs it: only a php-fpm binary only root could have put there (#13).
    let fpm_bin = fpm_bin
        .map(|bin| {
            let trusted = crate::fpm::trusted_binary(&bin)
                .map_err(|err| (None, format!("fpm_bin '{}': {err:#}", bin.display())))?;
            if !crate::fpm::is_php_fpm(&trusted) {
                return Err((
                    None,
                    format!("fpm_bin '{}' is not a php-fpm binary", bin.display()),
                ));
            }
            Ok(trusted)
        })
        .transpose()?;
    // A top-level `status` is the listed targets'; a discovered pool gets its own page, so the sample
    // has one (and `stuck_after` is checked as it will be used).
    let mut sample = settings.clone();
    set(
        &mut sample,
        "status",
        "unix:///run/php/sample-status.sock;/status",
    );
    classic("unix:///run/php/sample.sock;/ping", &sample, &run)
        .map_err(|(line, err)| (line, format!("{err:#}")))?;
    Ok(Discover {
        fpm_configs,
        fpm_bin,
        settings,
        run,
    })
}

/// The classic run's configuration of `url` with `settings`: built as its command line and checked
/// as one. An error says which key's line, when it names one.
fn classic(
    url: &str,
    settings: &Settings,
    run: &RunSettings,
) -> Result<Config, (Option<usize>, anyhow::Error)> {
    let words = words(url, settings, run);
    let args = cli::parse_target(&words).map_err(|err| {
        let (line, err) = in_file_terms(&err, settings);
        (line, anyhow!(err))
    })?;
    let mut config = Config::from_run(args).map_err(|err| {
        let (line, text) = in_file_terms(&format!("{err:#}"), settings);
        (line, anyhow!(text))
    })?;
    config.terms = Terms::WatchFile;
    Ok(config)
}

/// The php-fpm pool a target is: the pool of its master's configuration that listens where it
/// probes, when both are known.
fn pool_of(config: &Config) -> Option<String> {
    let fpm_config = match &config.control {
        Control::Direct { config, .. } => config.clone(),
        Control::Service(Some(name)) => crate::fpm::service_config(name)?,
        Control::Service(None) => return None,
    };
    let listen = match &config.probe.target {
        ProbeTarget::FastCgi {
            address: Listen::Unix(path),
            ..
        } => path.display().to_string(),
        ProbeTarget::FastCgi {
            address: Listen::Tcp { host, port },
            ..
        } => format!("{host}:{port}"),
        ProbeTarget::Http(_) => return None,
    };
    crate::fpm::read_config(&fpm_config)
        .pools
        .into_iter()
        .find(|pool| {
            pool.settings
                .get("listen")
                .is_some_and(|l| same_listen(l, &listen))
        })
        .map(|pool| pool.name)
}

/// Whether a pool's `listen` is the address a target connects to.
pub fn same_listen(listen: &str, address: &str) -> bool {
    if listen == address {
        return true;
    }
    let port = |a: &str| a.rsplit(':').next().map(str::to_owned);
    !listen.starts_with('/')
        && !address.starts_with('/')
        && (!listen.contains(':') && Some(listen.to_owned()) == port(address)
            || listen.starts_with("0.0.0.0:") && port(listen) == port(address))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_text(text: &str) -> Result<WatchConfig> {
        parse(
            Path::new("/etc/php-relaunch/watch.toml"),
            text,
            false,
            None,
            Overrides {
                log: Some("/tmp/watch-test.log".into()),
                ..Overrides::default()
            },
        )
    }

    fn error(text: &str) -> String {
        format!("{:#}", parse_text(text).unwrap_err())
    }

    #[test]
    fn defaults_apply_to_every_target_and_a_target_overrides_them() {
        let config = parse_text(
            "timeout = 1.5\nfailures = 2\nwithin = \"10m\"\nemails = [\"a@example.com\", \"b@example.com\"]\n\
             state_dir = \"/srv/state\"\n\n[[target]]\nurl = \"unix:///run/a.sock;/ping\"\n\n\
             [[target]]\nurl = \"fcgi://127.0.0.1:9001\"\nfailures = 3\nrelaunch_saturated = true\n",
        )
        .unwrap();
        let [a, b] = config.targets.as_slice() else {
            panic!("two targets");
        };
        assert_eq!(a.config.probe.timeout, Duration::from_millis(1500));
        assert_eq!(a.config.limits.failures, 2);
        assert_eq!(b.config.limits.failures, 3);
        assert_eq!(b.config.limits.within, Duration::from_mins(10));
        assert_eq!(a.config.recipients.len(), 2);
        assert!(b.config.relaunch_saturated && !a.config.relaunch_saturated);
        assert_eq!(a.config.probe.expect.as_deref(), Some("pong"));
        assert!(a.config.probe.state.starts_with("/srv/state"));
        assert_ne!(a.config.probe.state, b.config.probe.state);
        assert_eq!(a.config.log, Path::new("/tmp/watch-test.log"));
    }

    #[test]
    fn mistakes_name_the_line_in_the_files_terms() {
        for (text, says) in [
            (
                "[[target]]\nurl = \"unix:///a.sock\"\nlisten_queue = 5\n",
                ":2: status thresholds need",
            ),
            (
                "failures = 0\n[[target]]\nurl = \"unix:///a.sock\"\n",
                ":1: failures must be at least 1",
            ),
            (
                "[[target]]\nurl = \"unix:///a.sock\"\n\n[[target]]\nurl = \"unix:///a.sock\"\n",
                ":4: duplicate target 'unix:///a.sock' (first at line 1)",
            ),
            ("[[target]]\ntimeout = 2\n", ":1: [[target]] without `url`"),
            (
                "[[target]]\nurl = \"unix:///a.sock\"\nlock = \"/tmp/l\"\n",
                ":3: unknown key `lock`",
            ),
            (
                "[[target]]\nurl = \"unix:///a.sock\"\non_demand = \"yes\"\n",
                ":3: `on_demand` takes true or false",
            ),
            (
                "[[target]]\nurl = \"unix:///a.sock\"\nwithin = \"1x\"\n",
                ":3: within takes a duration",
            ),
            (
                "[[target]]\nurl = \"unix:///a.sock\"\ntimeout = 0\n",
                ":3: timeout must be at least 0.001 seconds",
            ),
            ("[[target]]\n\nurl = \"ftp://x\"\n", ":3: url 'ftp://x'"),
            ("timeout = 2\n", ":1: nothing to watch"),
            (
                "[discover]\nfpm_bin = \"/bin/sh\"\nfpm_configs = [\"/x\"]\n",
                "fpm_bin '/bin/sh'",
            ),
            (
                "[discover]\nfpm_configs = [\"/x\"]\nservice = \"php8.2-fpm\"\n",
                ":3: unknown key `service`",
            ),
            (
                "[discover]\nfpm_configs = [\"/x\"]\n\nstatus = \"unix:///s.sock;/status\"\n",
                ":4: `status` in [discover] would give every pool the same status page",
            ),
        ] {
            let said = error(text);
            assert!(said.starts_with("/etc/php-relaunch/watch.toml:"), "{said}");
            assert!(said.contains(says), "{text}\n{said}\nshould contain {says}");
            assert!(!said.contains("--"), "{said}: the file's terms");
        }
    }

    fn alert_only(config: &str) -> DiscoveredControl {
        DiscoveredControl::AlertOnly {
            config: config.into(),
            why: "no control".into(),
        }
    }

    #[test]
    fn alert_only_configurations_are_each_their_own_master() {
        let config = parse_text("timeout = 3\n[discover]\nfpm_configs = \"/x/*.conf\"\n").unwrap();
        let discover = config.discover.unwrap();
        let found = |conf: &str| {
            discover
                .target(
                    &mut Memo::default(),
                    "unix:///run/a.sock",
                    "www",
                    &alert_only(conf),
                    false,
                    None,
                )
                .unwrap()
        };
        let (a, b) = (found("/x/a.conf"), found("/x/b.conf"));
        assert_eq!(a.master, "fpm:/x/a.conf");
        assert_eq!(a.config.lock, crate::lock::instance_path("fpm:/x/a.conf"));
        assert_ne!(a.config.lock, b.config.lock);
        assert_ne!(
            a.config.lock,
            crate::lock::instance_path(&crate::fpm::instance_key(&Control::Service(None), None))
        );
    }

    #[test]
    fn listed_alert_only_targets_naming_no_php_fpm_are_each_their_own_master() {
        let config = parse_text(
            "[[target]]\nurl = \"unix:///run/a.sock\"\nalert_only = true\n\n\
             [[target]]\nurl = \"unix:///run/b.sock\"\nalert_only = true\n",
        )
        .unwrap();
        let [a, b] = config.targets.as_slice() else {
            panic!("two targets");
        };
        assert_eq!(a.master, "alert-only:unix:///run/a.sock");
        assert_ne!(a.config.lock, b.config.lock);
        assert_ne!(
            a.config.lock,
            crate::lock::instance_path(&crate::fpm::instance_key(&Control::Service(None), None))
        );
    }

    #[test]
    fn discovered_targets_go_through_the_same_checks() {
        let config = parse_text(
            "timeout = 3\n[discover]\nfpm_configs = \"/etc/php/*/fpm/php-fpm.conf\"\nfailures = 2\n",
        )
        .unwrap();
        let discover = config.discover.unwrap();
        let target = discover
            .target(
                &mut Memo::default(),
                "unix:///run/php/www.sock;/ping",
                "www",
                &alert_only("/x/php-fpm.conf"),
                true,
                None,
            )
            .unwrap();
        assert_eq!(target.config.limits.failures, 2);
        assert_eq!(target.config.probe.timeout, Duration::from_secs(3));
        assert_eq!(target.config.fpm_pool.as_deref(), Some("www"));
        assert!(target.config.on_demand.is_some());
        assert_eq!(target.alert_only.as_deref(), Some("no control"));
    }

    #[test]
    fn thresholds_stay_with_the_listed_targets() {
        let said = error("[discover]\nfpm_configs = \"/x\"\nslow_requests = 1\n");
        assert!(
            said.contains(":3: `slow_requests` in [discover] would judge each pool's ping"),
            "{said}"
        );
        // At the top they are the listed targets' (a status page url); a discovered pool's ping is
        // not judged by them.
        let config = parse_text(
            "listen_queue = 5\n[[target]]\nurl = \"unix:///run/php/a.sock;/status?json\"\n\
             [discover]\nfpm_configs = \"/x\"\n",
        )
        .unwrap();
        assert!(config.targets[0].config.probe.thresholds.any());
        let found = config
            .discover
            .unwrap()
            .target(
                &mut Memo::default(),
                "unix:///run/php/www.sock;/ping",
                "www",
                &alert_only("/x/php-fpm.conf"),
                false,
                None,
            )
            .unwrap();
        assert!(!found.config.probe.thresholds.any());
    }

    #[test]
    fn a_discovered_pool_is_judged_from_its_own_status_page_only() {
        let config = parse_text(
            "status = \"unix:///run/php/one.sock;/status\"\n[discover]\nfpm_configs = \"/x\"\n\
             stuck_after = \"5m\"\n",
        )
        .unwrap();
        let discover = config.discover.unwrap();
        let control = alert_only("/x/php-fpm.conf");
        let own = discover
            .target(
                &mut Memo::default(),
                "unix:///run/php/a.sock;/ping",
                "a",
                &control,
                false,
                Some("unix:///run/php/a-status.sock;/status"),
            )
            .unwrap();
        assert_eq!(
            own.config.status.map(|s| s.to_string()).as_deref(),
            Some("unix:///run/php/a-status.sock;/status")
        );
        assert_eq!(own.config.stuck_after, Some(Duration::from_mins(5)));
        let none = discover
            .target(
                &mut Memo::default(),
                "unix:///run/php/b.sock;/ping",
                "b",
                &control,
                false,
                None,
            )
            .unwrap();
        assert!(none.config.status.is_none(), "never the top's page");
        assert!(none.config.stuck_after.is_none(), "no page: /proc only");
    }

    #[test]
    fn listen_addresses_compare_as_php_fpm_writes_them() {
        assert!(same_listen("/run/php/a.sock", "/run/php/a.sock"));
        assert!(same_listen("9000", "127.0.0.1:9000"));
        assert!(same_listen("0.0.0.0:9000", "127.0.0.1:9000"));
        assert!(!same_listen("9001", "127.0.0.1:9000"));
        assert!(!same_listen("/run/php/a.sock", "/run/php/b.sock"));
    }
}
