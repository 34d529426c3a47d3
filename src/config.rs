//! The validated configuration of a run, built from the command line. Every check that can reject
//! input happens here, before anything is probed, locked or restarted.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use lettre::Address;

use crate::alert::Transport;
use crate::cli::{Cli, ProbeArgs};
use crate::fpm::{self, Control};
use crate::policy::Limits;
use crate::pools::{self, Pool};
use crate::probe::status::Thresholds;
use crate::probe::{Target, split_host_port, valid_host};
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
}

impl Config {
    /// Validates the command line. Errors name the argument and the offending value.
    pub fn from_cli(cli: Cli) -> Result<Config> {
        let probe = ProbeConfig::new(&cli.url, &cli.timeout, cli.probe)?;
        let recipients = recipients(&cli.emails)?;
        let php_cgi = match cli.php_cgi.as_str() {
            "0" => false,
            "1" => true,
            other => bail!("PHP_CGI must be 0 or 1, got '{other}'"),
        };
        let control = match (cli.fpm_bin, cli.fpm_config) {
            (Some(bin), Some(config)) => direct_control(&bin, &config)?,
            _ => Control::Service(cli.service.map(service_name).transpose()?),
        };
        let transport = match cli.smtp {
            Some(url) => smtp_url(&url)?,
            None => Transport::Sendmail,
        };
        let from = cli.from.map(|from| address("--from", &from)).transpose()?;
        let every = cli
            .every
            .map(|every| seconds("--every", &every))
            .transpose()?;
        if let Some(every) = every {
            ensure!(
                every < Duration::from_mins(1),
                "--every must be under 60 seconds (it repeats within one cron minute), got '{}'",
                every.as_secs_f64()
            );
        }
        let cgi_service = cli.cgi_service.map(service_name).transpose()?;
        let restart_timeout = seconds("--restart-timeout", &cli.restart_timeout)?;
        let run_timeout = run_timeout(cli.run_timeout.as_deref(), probe.timeout, restart_timeout)?;
        ensure!(cli.failures >= 1, "--failures must be at least 1, got '0'");
        let limits = Limits {
            failures: cli.failures,
            max_restarts: cli.max_restarts,
            within: duration("--within", &cli.within)?,
            recover_after: cli.recover_after,
        };
        let status = cli
            .status
            .as_deref()
            .map(|text| {
                let status = text.parse::<Target>()?;
                ensure!(
                    !matches!(status, Target::FastCgi { script: None, .. }),
                    "--status '{text}' needs the status path, e.g. '{text};/status'"
                );
                Ok(status)
            })
            .transpose()?;
        let stuck_after = cli
            .stuck_after
            .map(|text| duration("--stuck-after", &text))
            .transpose()?;
        ensure!(
            stuck_after.is_none() || status.is_some(),
            "--stuck-after needs --status: only php-fpm's status page tells how long a worker has been in its request"
        );
        let evidence_dir = cli.evidence_dir.unwrap_or_else(|| {
            probe
                .state
                .parent()
                .unwrap_or(Path::new(state::DIR))
                .join("evidence")
        });
        let pool = cli
            .pool
            .map(|name| pool_named(&name, &cli.pools_config))
            .transpose()?;
        Ok(Config {
            probe,
            recipients,
            php_cgi,
            log: cli.log,
            lock: cli.lock,
            control,
            pid_file: cli.pid_file,
            transport,
            from,
            dry_run: cli.dry_run,
            relaunch_on: status_codes(&cli.relaunch_on)?,
            every,
            restart_timeout,
            run_timeout,
            cgi_service,
            limits,
            pause_file: cli.pause_file,
            status,
            relaunch_saturated: cli.relaunch_saturated,
            stuck_after,
            evidence_dir,
            pool,
        })
    }
}

impl ProbeConfig {
    /// Validates a target, its timeout and the options that judge its answer.
    pub fn new(target_text: &str, timeout: &str, args: ProbeArgs) -> Result<ProbeConfig> {
        let target = target_text.parse::<Target>()?;
        let timeout = seconds("TIMEOUT", timeout)?;
        let thresholds = Thresholds {
            listen_queue: args.listen_queue,
            active_processes: args.active_processes,
            max_children_reached: args.max_children_reached,
            slow_requests: args.slow_requests,
        };
        if thresholds.any() {
            ensure!(
                !matches!(target, Target::FastCgi { script: None, .. }),
                "status thresholds need php-fpm's status page: add its path, e.g. '{target_text};/status?json'"
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
            .unwrap_or_else(|| state::default_path(target_text));
        Ok(ProbeConfig {
            target,
            timeout,
            expect,
            thresholds,
            state,
        })
    }
}

/// The pool `--pool` names, from the pools file.
fn pool_named(name: &str, file: &Path) -> Result<Pool> {
    pools::load(file)?
        .into_iter()
        .find(|p| p.name == name)
        .with_context(|| format!("--pool: no pool named '{name}' in '{}'", file.display()))
}

/// `--run-timeout`, or by default room for every step's own deadline: the probe and the status page,
/// the config test, restart, verify, kill, start, verify and php-cgi's steps, and sending the mail.
fn run_timeout(text: Option<&str>, probe: Duration, restart: Duration) -> Result<Duration> {
    match text {
        Some(text) => seconds("--run-timeout", text),
        None => Ok(probe * 2 + restart * 10 + Duration::from_secs(30)),
    }
}

/// A duration as people write them: `90s`, `10m`, `1h`, `2d`, or plain seconds.
pub fn duration(name: &str, text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let scale = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => bail!("{name} takes a duration such as 90s, 10m or 1h, got '{text}'"),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0 && *v * scale <= 366.0 * 86_400.0)
        .with_context(|| format!("{name} takes a duration such as 90s, 10m or 1h, got '{text}'"))?;
    Ok(Duration::from_secs_f64(value * scale))
}

/// Positive seconds, fractions allowed, at most a day.
pub fn seconds(name: &str, text: &str) -> Result<Duration> {
    let value: f64 = text
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .with_context(|| format!("{name} must be a number of seconds, got '{text}'"))?;
    ensure!(
        value > 0.0,
        "{name} must be greater than 0 seconds, got '{text}'"
    );
    ensure!(
        value <= 86_400.0,
        "{name} must be at most 86400 seconds, got '{text}'"
    );
    Ok(Duration::from_secs_f64(value))
}

fn address(name: &str, text: &str) -> Result<Address> {
    Address::from_str(text.trim())
        .with_context(|| format!("{name}: '{text}' is not a valid e-mail address"))
}

/// Comma-separated addresses; empty items are ignored so `''` means nobody.
fn recipients(text: &str) -> Result<Vec<Address>> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| address("EMAILS", item))
        .collect()
}

/// `502,504` → the codes; each must be an HTTP error status.
fn status_codes(text: &str) -> Result<Vec<u16>> {
    let codes = text
        .split(',')
        .map(|item| {
            let item = item.trim();
            match item.parse::<u16>() {
                Ok(code @ 400..=599) => Ok(code),
                _ => bail!("--relaunch-on takes HTTP statuses from 400 to 599, got '{item}'"),
            }
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(codes)
}

/// A service name as init systems spell them; never an option or a path.
fn service_name(name: String) -> Result<String> {
    ensure!(
        !name.is_empty()
            && !name.starts_with('-')
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"@._-".contains(&b)),
        "'{name}' is not a service name"
    );
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
    let config = config
        .canonicalize()
        .with_context(|| format!("--fpm-config '{}'", config.display()))?;
    ensure!(
        config.is_file(),
        "--fpm-config '{}' is not a file",
        config.display()
    );
    Ok(Control::Direct { bin, config })
}

/// `smtp://HOST[:PORT]`, port 25 by default.
fn smtp_url(text: &str) -> Result<Transport> {
    let Some(authority) = text.strip_prefix("smtp://") else {
        bail!("--smtp '{text}' must be smtp://HOST[:PORT] (plain SMTP, no TLS)");
    };
    let authority = authority.trim_end_matches('/');
    let (host, port) = split_host_port(authority);
    ensure!(valid_host(host), "--smtp '{text}' has a bad host '{host}'");
    let port = match port {
        None => 25,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => bail!("--smtp '{text}' has a bad port '{port}'"),
        },
    };
    Ok(Transport::Smtp {
        host: host.to_owned(),
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe_args() -> ProbeArgs {
        ProbeArgs {
            expect: None,
            listen_queue: None,
            active_processes: None,
            max_children_reached: None,
            slow_requests: None,
            state: None,
        }
    }

    #[test]
    fn ping_expects_pong_unless_told_otherwise() {
        let ping = ProbeConfig::new("unix:///x.sock;/ping", "1", probe_args()).unwrap();
        assert_eq!(ping.expect.as_deref(), Some("pong"));
        let custom = ProbeArgs {
            expect: Some("alive".into()),
            ..probe_args()
        };
        let ping = ProbeConfig::new("unix:///x.sock;/ping", "1", custom).unwrap();
        assert_eq!(ping.expect.as_deref(), Some("alive"));
        let script = ProbeConfig::new("unix:///x.sock;/hb.php", "1", probe_args()).unwrap();
        assert_eq!(script.expect, None);
    }

    #[test]
    fn thresholds_and_expect_need_a_reply_body() {
        let limits = ProbeArgs {
            listen_queue: Some(5),
            ..probe_args()
        };
        let err = ProbeConfig::new("unix:///x.sock", "1", limits)
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
        assert!(ProbeConfig::new("fcgi://127.0.0.1:9000", "1", expect).is_err());
    }

    #[test]
    fn durations() {
        for (text, secs) in [
            ("90s", 90),
            ("10m", 600),
            ("1h", 3600),
            ("2d", 172_800),
            ("45", 45),
        ] {
            assert_eq!(
                duration("--within", text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        assert_eq!(
            duration("--within", "1.5m").unwrap(),
            Duration::from_secs(90)
        );
        for bad in ["", "0s", "-1m", "10x", "m", "1h30m", "400d"] {
            let err = duration("--within", bad).unwrap_err().to_string();
            assert!(
                err.starts_with("--within takes a duration such as 90s"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(
            seconds("TIMEOUT", "0.5").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(seconds("TIMEOUT", "5").unwrap(), Duration::from_secs(5));
        for bad in ["0", "-1", "abc", "", "NaN", "inf", "1e9"] {
            assert!(seconds("TIMEOUT", bad).is_err(), "{bad}");
        }
        let err = seconds("TIMEOUT", "0").unwrap_err().to_string();
        assert_eq!(err, "TIMEOUT must be greater than 0 seconds, got '0'");
    }

    #[test]
    fn emails() {
        assert!(recipients("").unwrap().is_empty());
        assert_eq!(recipients("a@example.com, b@example.com").unwrap().len(), 2);
        let err = recipients("a@example.com,not-an-address")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "EMAILS: 'not-an-address' is not a valid e-mail address"
        );
    }

    #[test]
    fn relaunch_codes() {
        assert_eq!(status_codes("502,504").unwrap(), [502, 504]);
        assert_eq!(
            status_codes("500, 502,503,504").unwrap(),
            [500, 502, 503, 504]
        );
        for bad in ["200", "abc", "", "502,", "600"] {
            assert!(status_codes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn smtp_urls() {
        assert_eq!(
            smtp_url("smtp://127.0.0.1:2525").unwrap(),
            Transport::Smtp {
                host: "127.0.0.1".into(),
                port: 2525
            }
        );
        assert_eq!(
            smtp_url("smtp://mail.example.com").unwrap(),
            Transport::Smtp {
                host: "mail.example.com".into(),
                port: 25
            }
        );
        assert!(smtp_url("smtps://mail.example.com").is_err());
        assert!(smtp_url("smtp://mail.example.com:x").is_err());
    }

    #[test]
    fn service_names_are_never_options_or_paths() {
        for bad in ["-x", "../php", "php fpm", ""] {
            let err = service_name(bad.to_owned()).unwrap_err().to_string();
            assert!(err.contains("is not a service name"), "{bad}: {err}");
        }
    }
}
