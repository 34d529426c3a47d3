//! The validated configuration of a run, built from the command line. Every check that can reject
//! input happens here, before anything is probed, locked or restarted.

pub mod watch;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use lettre::Address;

use crate::alert::Transport;
use crate::cli::{ProbeArgs, RunArgs};
use crate::fpm::{self, Control};
use crate::lock;
use crate::policy::Limits;
use crate::pools::{self, Pool};
use crate::probe::status::Thresholds;
use crate::probe::{Target, fastcgi};
use crate::state;

/// What to probe and how to judge the answer: shared by a run and by `check`.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The heartbeat page, or php-fpm itself over FastCGI.
    pub target: Target,
    /// The hard deadline of one probe.
    pub timeout: Duration,
    /// Text the reply body must contain.
    pub expect: Option<String>,
    /// Limits on php-fpm's status page.
    pub thresholds: Thresholds,
    /// Where the status counters are remembered between checks.
    pub state: PathBuf,
}

/// Everything a run needs to know, checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// What to probe and how to judge it.
    pub probe: ProbeConfig,
    /// Who gets alerts; empty for nobody.
    pub recipients: Vec<Address>,
    /// Whether a relaunch also restarts php-cgi.
    pub php_cgi: bool,
    /// The append-only log.
    pub log: PathBuf,
    /// The single-run lock.
    pub lock: PathBuf,
    /// How php-fpm is controlled.
    pub control: Control,
    /// The master's pid file, when given explicitly.
    pub pid_file: Option<PathBuf>,
    /// How alerts leave this host.
    pub transport: Transport,
    /// The sender of alerts; `None` for php-relaunch@HOSTNAME.
    pub from: Option<Address>,
    /// Decide and report only.
    pub dry_run: bool,
    /// The HTTP statuses that call for a relaunch.
    pub relaunch_on: Vec<u16>,
    /// Repeat the check at this interval until the minute is over.
    pub every: Option<Duration>,
    /// Deadline of each relaunch step.
    pub restart_timeout: Duration,
    /// Deadline of one whole check, the backstop for anything that hangs.
    pub run_timeout: Duration,
    /// The php-cgi service to start after a php-cgi kill, when given.
    pub cgi_service: Option<String>,
    /// Thresholds, budget and cooldown.
    pub limits: Limits,
    /// While this exists, change nothing.
    pub pause_file: PathBuf,
    /// The status page that tells saturated from dead, if given.
    pub status: Option<Target>,
    /// Whether a saturated pool may be relaunched.
    pub relaunch_saturated: bool,
    /// Kill workers stuck this long in one request.
    pub stuck_after: Option<Duration>,
    /// Where evidence files go.
    pub evidence_dir: PathBuf,
    /// The pool of replicas the heartbeat belongs to, checked at start-up.
    pub pool: Option<Pool>,
    /// `--on-demand`: the socket of the on-demand pool the target is, watched without waking it.
    pub on_demand: Option<PathBuf>,
    /// `--metrics-file`: the node_exporter textfile rewritten on every run.
    pub metrics_file: Option<PathBuf>,
    /// `watch`: the php-fpm pool the target is, when known, so that its saturation is judged from
    /// its own workers only (#21).
    pub fpm_pool: Option<String>,
    /// How a run's lines name a setting: as an option, or as a key of `watch`'s file.
    pub terms: Terms,
}

/// Where a run's settings came from, so that its lines name them as the user wrote them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Terms {
    /// The command line: `--relaunch-saturated`.
    #[default]
    Options,
    /// `watch`'s file: `relaunch_saturated = true`.
    WatchFile,
}

impl Terms {
    /// How to turn on the flag whose option is `--NAME`.
    pub fn flag(self, option: &str) -> String {
        match self {
            Terms::Options => format!("--{option}"),
            Terms::WatchFile => format!("{} = true", option.replace('-', "_")),
        }
    }
}

impl Config {
    /// Checks the parsed command line against the system: services exist, `--fpm-bin` is a binary
    /// only root could have put there, the pools file names the pool. Errors name the argument.
    pub fn from_run(run: RunArgs) -> Result<Config> {
        Config::from_run_checked(run, &mut SystemChecks::default())
    }

    /// [`Config::from_run`], with the answers of its checks against the system kept in `checks`:
    /// `watch` builds many targets in one run with the same fpm_bin, configuration and services.
    pub fn from_run_checked(run: RunArgs, checks: &mut SystemChecks) -> Result<Config> {
        let (Some(url), Some(timeout)) = (run.url, run.timeout) else {
            bail!("the URL and TIMEOUT arguments are required (see --help)");
        };
        let probe = ProbeConfig::new(url, timeout, run.probe)?;
        let on_demand = if run.on_demand {
            match &probe.target {
                Target::FastCgi {
                    address: fastcgi::Address::Unix(socket),
                    ..
                } => Some(socket.clone()),
                _ => bail!(
                    "--on-demand watches a pool by its unix socket: give a unix:// target, e.g. \
                     'unix:///run/php-fpm-ondemand/www.sock;/ping'"
                ),
            }
        } else {
            None
        };
        ensure!(
            run.stuck_after.is_none() || run.status.is_some(),
            "--stuck-after needs --status: only php-fpm's status page tells how long a worker has been in its request"
        );
        let control = match (run.fpm_bin, run.fpm_config) {
            (Some(bin), Some(config)) => checks.direct_control(bin, config)?,
            _ => Control::Service(
                run.service
                    .map(|name| checks.existing_service(name))
                    .transpose()?,
            ),
        };
        let cgi_service = run
            .cgi_service
            .map(|name| checks.existing_service(name))
            .transpose()?;
        let evidence_dir = run.evidence_dir.unwrap_or_else(|| {
            probe
                .state
                .parent()
                .unwrap_or(Path::new(state::DIR))
                .join("evidence")
        });
        let pool = run
            .pool
            .map(|name| pool_named(&name, &run.pools_config))
            .transpose()?;
        // By default, room for every step's own deadline: the probe and the status page, the config
        // test, restart, verify, kill, start, verify and php-cgi's steps, and sending the mail.
        let run_timeout = run
            .run_timeout
            .unwrap_or(probe.timeout * 2 + run.restart_timeout * 10 + Duration::from_secs(30));
        Ok(Config {
            probe,
            recipients: run.emails.0,
            php_cgi: run.php_cgi,
            log: run.log,
            lock: run.lock.unwrap_or_else(|| {
                lock::instance_path(&fpm::instance_key(
                    &control,
                    pool.as_ref().map(|p| p.name.as_str()),
                ))
            }),
            control,
            pid_file: run.pid_file,
            transport: run.smtp.unwrap_or(Transport::Sendmail),
            from: run.from,
            dry_run: run.dry_run,
            relaunch_on: run.relaunch_on.0,
            every: run.every,
            restart_timeout: run.restart_timeout,
            run_timeout,
            cgi_service,
            limits: Limits {
                failures: run.failures,
                max_restarts: run.max_restarts,
                within: run.within,
                recover_after: run.recover_after,
            },
            pause_file: run.pause_file,
            status: run.status,
            relaunch_saturated: run.relaunch_saturated,
            stuck_after: run.stuck_after,
            evidence_dir,
            pool,
            on_demand,
            metrics_file: run.metrics_file,
            fpm_pool: None,
            terms: Terms::Options,
        })
    }
}

impl ProbeConfig {
    /// Checks a target, its timeout and the options that judge its answer against each other.
    pub fn new(target: Target, timeout: Duration, args: ProbeArgs) -> Result<ProbeConfig> {
        let thresholds = Thresholds {
            listen_queue: args.listen_queue,
            active_processes: args.active_processes,
            max_children_reached: args.max_children_reached,
            slow_requests: args.slow_requests,
        };
        if thresholds.any() {
            ensure!(
                !matches!(target, Target::FastCgi { script: None, .. }),
                "status thresholds need php-fpm's status page: add its path, e.g. '{target};/status?json'"
            );
        }
        // php-fpm's ping answers `pong` unless ping.response says otherwise.
        let expect = args.expect.or_else(|| match &target {
            Target::FastCgi {
                script: Some(script),
                ..
            } if script.path == "/ping" => Some("pong".to_owned()),
            _ => None,
        });
        if expect.is_some() {
            ensure!(
                !matches!(target, Target::FastCgi { script: None, .. }),
                "--expect needs a reply body, and GET_VALUES has none: add a path such as ';/ping'"
            );
        }
        let state = args
            .state
            .unwrap_or_else(|| state::default_path(&target.to_string()));
        Ok(ProbeConfig {
            target,
            timeout,
            expect,
            thresholds,
            state,
        })
    }
}

/// The answers of [`Config::from_run`]'s checks against the system, kept for one run of `watch`
/// (#21): its discovered pools share a few php-fpm binaries, configurations and services, which
/// are checked once each instead of once per pool. A failed check keeps its message.
#[derive(Debug, Default)]
pub struct SystemChecks {
    direct: HashMap<(PathBuf, PathBuf), Result<Control, String>>,
    services: HashMap<String, Result<String, String>>,
}

impl SystemChecks {
    /// `direct_control`, asked once per binary and configuration; the first answer is the
    /// check's own, a later failure its message.
    fn direct_control(&mut self, bin: PathBuf, config: PathBuf) -> Result<Control> {
        let key = (bin, config);
        if let Some(known) = self.direct.get(&key) {
            return known.clone().map_err(|err| anyhow::anyhow!(err));
        }
        let checked = direct_control(&key.0, &key.1);
        let kept = match &checked {
            Ok(control) => Ok(control.clone()),
            Err(err) => Err(format!("{err:#}")),
        };
        self.direct.insert(key, kept);
        checked
    }

    /// `existing_service`, asked once per name.
    fn existing_service(&mut self, name: String) -> Result<String> {
        if let Some(known) = self.services.get(&name) {
            return known.clone().map_err(|err| anyhow::anyhow!(err));
        }
        let checked = existing_service(name.clone());
        let kept = match &checked {
            Ok(name) => Ok(name.clone()),
            Err(err) => Err(format!("{err:#}")),
        };
        self.services.insert(name, kept);
        checked
    }
}

/// The pool `--pool` names, from the pools file.
fn pool_named(name: &str, file: &Path) -> Result<Pool> {
    pools::load(file)?
        .into_iter()
        .find(|p| p.name == name)
        .with_context(|| format!("--pool: no pool named '{name}' in '{}'", file.display()))
}

/// A service that has an init script or unit here.
fn existing_service(name: String) -> Result<String> {
    ensure!(
        fpm::service_exists(&name),
        "service '{name}' not found: no init script or unit of that name"
    );
    Ok(name)
}

fn direct_control(bin: &Path, config: &Path) -> Result<Control> {
    ensure!(
        bin.is_file(),
        "--fpm-bin '{}' is not an executable file",
        bin.display()
    );
    // Root runs it: only a binary that only root could have put there (#13).
    let bin = fpm::trusted_binary(bin).with_context(|| format!("--fpm-bin '{}'", bin.display()))?;
    // Root starts php-fpm with it: only a configuration only root could have written (#21).
    let config =
        fpm::root_config(config).with_context(|| format!("--fpm-config '{}'", config.display()))?;
    ensure!(
        config.is_file(),
        "--fpm-config '{}' is not a file",
        config.display()
    );
    Ok(Control::Direct { bin, config })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_args() -> ProbeArgs {
        ProbeArgs::default()
    }

    fn probe_config(target: &str, args: ProbeArgs) -> Result<ProbeConfig> {
        ProbeConfig::new(target.parse()?, Duration::from_secs(1), args)
    }

    #[test]
    fn ping_expects_pong_unless_told_otherwise() {
        let ping = probe_config("unix:///x.sock;/ping", probe_args()).unwrap();
        assert_eq!(ping.expect.as_deref(), Some("pong"));
        let custom = ProbeArgs {
            expect: Some("alive".into()),
            ..probe_args()
        };
        let ping = probe_config("unix:///x.sock;/ping", custom).unwrap();
        assert_eq!(ping.expect.as_deref(), Some("alive"));
        let script = probe_config("unix:///x.sock;/hb.php", probe_args()).unwrap();
        assert_eq!(script.expect, None);
    }

    #[test]
    fn thresholds_and_expect_need_a_reply_body() {
        let limits = ProbeArgs {
            listen_queue: Some(5),
            ..probe_args()
        };
        let err = probe_config("unix:///x.sock", limits)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("add its path, e.g. 'unix:///x.sock;/status?json'"),
            "{err}"
        );
        let expect = ProbeArgs {
            expect: Some("pong".into()),
            ..probe_args()
        };
        assert!(probe_config("fcgi://127.0.0.1:9000", expect).is_err());
    }
}
