//! The command line: clap definitions and turning argv into a validated `Config`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Result, anyhow};
use clap::error::ErrorKind;
use clap::{Args, Parser};

use crate::config::{Config, ProbeConfig};

const AFTER_HELP: &str = "\
Targets (URL):
  http://HOST[:PORT]/PATH            the heartbeat page through the web server
  fcgi://HOST:PORT[/PATH[?QUERY]]    php-fpm itself over TCP
  unix:///SOCKET[;/PATH[?QUERY]]     php-fpm itself over a unix socket
  Without PATH a FastCGI probe is a GET_VALUES management record (answered by a free worker);
  with one it is a GET request whose SCRIPT_NAME and SCRIPT_FILENAME are PATH: php-fpm's
  ping.path (`;/ping` expects `pong`), its pm.status_path (`;/status?json`, for thresholds) or an
  absolute script file. Over FastCGI a refused connection or missing socket means php-fpm is down.

Health check for containers: php-relaunch check TARGET [TIMEOUT]  (see `php-relaunch check --help`)
Restore a spent restart budget: php-relaunch reset URL [--state PATH]
Redundant pool replicas: php-relaunch pools list|status|start|stop|restart|deploy (see `pools --help`)

Classification of the heartbeat answer:
  200-399                      healthy: exit 0, print nothing, change nothing
  --relaunch-on codes, timeout php-fpm is dead or hung: relaunch it
  refused, DNS failure         http: the web server is down: log and alert, php-fpm untouched
                               fcgi, unix: php-fpm is down: relaunch it
  any other status             log and alert, no relaunch
  --expect or a threshold fails  log and alert, no relaunch

Exit codes:
  0  healthy
  1  failing and not brought back: still down after the relaunch, or the relaunch was held back
     (--failures, pause file, restart budget, cooldown, config test), or --dry-run would relaunch
  2  usage or configuration error; nothing was probed or restarted
  3  relaunched, and the heartbeat is healthy again
  4  web server unreachable, unexpected status, unhealthy reply or saturated pool: alerted only
  5  another run holds the lock

Log line (one per run that found a problem or did something):
  TIMESTAMP url=URL verdict=V latency=S action=A old_pid=P new_pid=P took=S state=S mail=M [error=\"...\"]";

/// Watchdog for php-fpm: request a heartbeat page once and relaunch php-fpm when it answers 502/504 or times out.
///
/// Drop-in replacement for the php-relaunch cron script: same arguments, run from root's crontab or mcron.
/// A run takes a lock, requests URL once with a hard deadline, and on a relaunch verdict restarts php-fpm
/// (escalating to SIGKILL of exactly that master and its workers when the restart does not help), appends
/// one line to the log, and mails the addresses given.
#[derive(Parser, Debug)]
#[command(name = "php-relaunch", version, after_long_help = AFTER_HELP, allow_negative_numbers = true)]
pub struct Cli {
    /// The heartbeat page, e.g. http://127.0.0.1:8889/php-heartbeat.php, or php-fpm itself:
    /// fcgi://HOST:PORT[/PATH[?QUERY]] or unix:///SOCKET[;/PATH[?QUERY]]
    #[arg(value_name = "URL")]
    pub url: String,

    /// Hard deadline in seconds for the whole request (connect, headers and body); fractions allowed
    #[arg(value_name = "TIMEOUT")]
    pub timeout: String,

    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Comma-separated addresses to alert; '' for none
    #[arg(value_name = "EMAILS", default_value = "")]
    pub emails: String,

    /// 1 when php-cgi runs as a fallback beside php-fpm: a relaunch also kills the php-cgi processes and starts
    /// their service
    #[arg(value_name = "PHP_CGI", default_value = "0")]
    pub php_cgi: String,

    /// The log file, appended to; created 0640, never followed through a symlink
    #[arg(
        long = "log",
        value_name = "PATH",
        default_value = "/var/log/php-relaunch.log"
    )]
    pub log: PathBuf,

    /// The lock that keeps runs from overlapping; created 0600, never followed through a symlink
    #[arg(
        long = "lock",
        value_name = "PATH",
        default_value = "/run/php-relaunch.lock"
    )]
    pub lock: PathBuf,

    /// The php-fpm service to relaunch through `service` [default: detected from the running master and the
    /// init scripts present, e.g. php8.2-fpm]
    #[arg(long = "service", value_name = "NAME")]
    pub service: Option<String>,

    /// Control php-fpm directly instead of through the init system: the php-fpm binary
    #[arg(
        long = "fpm-bin",
        value_name = "PATH",
        requires = "fpm_config",
        conflicts_with = "service"
    )]
    pub fpm_bin: Option<PathBuf>,

    /// With --fpm-bin: the php-fpm configuration file the master runs with
    #[arg(long = "fpm-config", value_name = "CONF", requires = "fpm_bin")]
    pub fpm_config: Option<PathBuf>,

    /// The master's pid file [default: the `pid` setting of the php-fpm configuration]; with --fpm-bin,
    /// php-fpm is started with `--pid PATH`
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,

    /// Send mail through this SMTP server, e.g. smtp://127.0.0.1:25 [default: /usr/sbin/sendmail]
    #[arg(long = "smtp", value_name = "URL")]
    pub smtp: Option<String>,

    /// The sender address of alerts [default: php-relaunch@HOSTNAME]
    #[arg(long = "from", value_name = "ADDRESS")]
    pub from: Option<String>,

    /// Probe, decide and print the log line of what would be done; change nothing, send nothing
    #[arg(long = "dry-run")]
    pub dry_run: bool,

    /// The HTTP statuses that mean php-fpm is broken (the old script used 500,502,503,504)
    #[arg(long = "relaunch-on", value_name = "CODES", default_value = "502,504")]
    pub relaunch_on: String,

    /// Repeat the check every SECONDS while the next check can end within the current minute [default:
    /// check once]
    #[arg(long = "every", value_name = "SECONDS")]
    pub every: Option<String>,

    /// Deadline in seconds for each step of a relaunch: the service command, and the wait for a healthy
    /// heartbeat after it
    #[arg(long = "restart-timeout", value_name = "SECONDS", default_value = "10")]
    pub restart_timeout: String,

    /// Overall deadline in seconds of one check, relaunch and alert included: if anything hangs past
    /// it, the run logs that and ends, so the lock is free for the next run [default: 2 × TIMEOUT
    /// + 10 × --restart-timeout + 30]
    #[arg(long = "run-timeout", value_name = "SECONDS")]
    pub run_timeout: Option<String>,

    /// With PHP_CGI=1: the php-cgi service to start after its processes were killed [default: the first of
    /// php-cgi, php-fastcgi, spawn-fcgi that exists]
    #[arg(long = "cgi-service", value_name = "NAME")]
    pub cgi_service: Option<String>,

    /// Relaunch only after N consecutive failed runs; failures before that are logged
    #[arg(long = "failures", value_name = "N", default_value_t = 1)]
    pub failures: u32,

    /// Restart budget: at most N relaunches within --within; then stop relaunching, alert once, keep
    /// probing and logging
    #[arg(long = "max-restarts", value_name = "N", default_value_t = 5)]
    pub max_restarts: u32,

    /// The restart budget's window, e.g. 90s, 10m, 1h
    #[arg(long = "within", value_name = "DURATION", default_value = "1h")]
    pub within: String,

    /// Consecutive healthy runs that restore a spent budget (or run `php-relaunch reset URL`)
    #[arg(long = "recover-after", value_name = "K", default_value_t = 3)]
    pub recover_after: u32,

    /// While this file exists, probe and log but change nothing (deploys, maintenance)
    #[arg(
        long = "pause-file",
        value_name = "PATH",
        default_value = "/etc/php-relaunch/pause"
    )]
    pub pause_file: PathBuf,

    /// php-fpm's status page, served apart from the pool (pm.status_listen), to tell a saturated pool
    /// from a dead one, e.g. 'unix:///run/php/php8.2-fpm-status.sock;/status' [default: what /proc shows]
    #[arg(long = "status", value_name = "TARGET")]
    pub status: Option<String>,

    /// Relaunch a pool whose workers are all busy (this drops their requests) [default: alert only]
    #[arg(long = "relaunch-saturated")]
    pub relaunch_saturated: bool,

    /// Kill just the workers stuck this long in one request (needs --status), before any relaunch, e.g. 5m
    #[arg(long = "stuck-after", value_name = "DURATION")]
    pub stuck_after: Option<String>,

    /// Where the evidence of each relaunch is kept, newest 50 [default: evidence/ beside the state file]
    #[arg(long = "evidence-dir", value_name = "DIR")]
    pub evidence_dir: Option<PathBuf>,

    /// The heartbeat belongs to this pool of replicas (see `pools`): a relaunch restarts, one at a
    /// time, just the replicas that fail their own ping, instead of a service restart
    #[arg(long = "pool", value_name = "NAME", conflicts_with_all = ["service", "fpm_bin"])]
    pub pool: Option<String>,

    /// With --pool: the pools file
    #[arg(
        long = "config",
        value_name = "PATH",
        default_value = "/etc/php-relaunch/pools.toml"
    )]
    pub pools_config: PathBuf,
}

/// Judging the reply, for a run and for `check` alike.
#[derive(Args, Debug, Clone, Default)]
pub struct ProbeArgs {
    /// The reply body must contain TEXT [default: pong for a FastCGI `/ping` path]
    #[arg(long = "expect", value_name = "TEXT")]
    pub expect: Option<String>,

    /// Status page: unhealthy when more than N requests wait in the listen queue
    #[arg(long = "listen-queue", value_name = "N")]
    pub listen_queue: Option<u64>,

    /// Status page: unhealthy when more than N workers are busy
    #[arg(long = "active-processes", value_name = "N")]
    pub active_processes: Option<u64>,

    /// Status page: unhealthy when the pool hit pm.max_children more than N times since the previous check
    #[arg(long = "max-children-reached", value_name = "N")]
    pub max_children_reached: Option<u64>,

    /// Status page: unhealthy when more than N slow requests were logged since the previous check
    #[arg(long = "slow-requests", value_name = "N")]
    pub slow_requests: Option<u64>,

    /// The memory between runs: failures, relaunches, the open incident, status counters [default:
    /// /var/lib/php-relaunch/<URL in safe characters>.json]
    #[arg(long = "state", value_name = "PATH")]
    pub state: Option<PathBuf>,
}

/// Health check for Docker HEALTHCHECK and Kubernetes exec probes: probe once, no lock, no restart, no
/// log; exit 0 healthy, 1 unhealthy (also for bad arguments: Docker reserves 2), one line on stdout.
#[derive(Parser, Debug)]
#[command(name = "php-relaunch check", version)]
pub struct CheckCli {
    /// http://HOST[:PORT]/PATH, fcgi://HOST:PORT[/PATH[?QUERY]] or unix:///SOCKET[;/PATH[?QUERY]]
    #[arg(value_name = "TARGET")]
    pub target: String,

    /// Hard deadline in seconds over connect, write and read; fractions allowed
    #[arg(value_name = "TIMEOUT", default_value = CHECK_TIMEOUT)]
    pub timeout: String,

    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// `check`'s default deadline in seconds.
const CHECK_TIMEOUT: &str = "5";

/// Restores a spent restart budget: `php-relaunch reset URL`.
#[derive(Parser, Debug)]
#[command(name = "php-relaunch reset", version)]
pub struct ResetCli {
    /// The URL (or FastCGI target) whose state to reset, as given to the watching runs
    #[arg(value_name = "URL")]
    pub url: String,

    /// The state file, if the watching runs were given one with --state
    #[arg(long = "state", value_name = "PATH")]
    pub state: Option<PathBuf>,
}

/// Redundant pool replicas: status, start, stop, rolling restarts and deploys (`php-relaunch pools`).
#[derive(Parser, Debug)]
#[command(name = "php-relaunch pools", version)]
pub struct PoolsCli {
    /// The pools file
    #[arg(
        long = "config",
        value_name = "PATH",
        default_value = "/etc/php-relaunch/pools.toml",
        global = true
    )]
    pub config: PathBuf,

    /// Machine-readable output (list, status)
    #[arg(long = "json", global = true)]
    pub json: bool,

    /// Where each step of start, stop, restart and deploy is logged
    #[arg(
        long = "log",
        value_name = "PATH",
        default_value = "/var/log/php-relaunch.log",
        global = true
    )]
    pub log: PathBuf,

    /// The lock shared with the watching runs, so a cron run never relaunches in the middle
    #[arg(
        long = "lock",
        value_name = "PATH",
        default_value = "/run/php-relaunch.lock",
        global = true
    )]
    pub lock: PathBuf,

    #[command(subcommand)]
    pub command: PoolsCommand,
}

/// What to do with the pools.
#[derive(clap::Subcommand, Debug)]
pub enum PoolsCommand {
    /// The pools and their replicas
    List,
    /// Per replica: master pid, ping answer and latency, balancer state, current release
    Status {
        /// A pool name
        pool: Option<String>,
        /// A replica number, from 1
        replica: Option<usize>,
    },
    /// Start replicas that are not running
    Start {
        /// A pool name
        pool: Option<String>,
        /// A replica number, from 1
        replica: Option<usize>,
    },
    /// Drain and stop replicas gracefully; never the last one serving
    Stop {
        /// A pool name
        pool: Option<String>,
        /// A replica number, from 1
        replica: Option<usize>,
    },
    /// Rolling restart, replica by replica: config test, drain, graceful stop, start, ping
    Restart {
        /// A pool name
        pool: Option<String>,
        /// A replica number, from 1
        replica: Option<usize>,
    },
    /// Point the pool's release link at DIR atomically, then restart it replica by replica
    Deploy {
        /// The pool
        pool: String,
        /// The new release directory
        dir: PathBuf,
    },
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Parsed {
    /// A `pools` command.
    Pools(Box<PoolsCli>),
    /// Restore the restart budget kept in this state file.
    Reset(PathBuf),
    /// Run with this configuration.
    Run(Box<Config>),
    /// `check` this target.
    Check(Box<ProbeConfig>),
    /// `check` with arguments that do not parse: report unhealthy with this reason.
    CheckUsage(String),
    /// Help or version was printed; exit with this code.
    Exit(ExitCode),
}

/// Parses argv. Errors are one line naming the problem; `main` prints them and exits 2.
pub fn parse<I, T>(args: I) -> Result<Parsed>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    if args.get(1).is_some_and(|a| a == "check") {
        return Ok(parse_check(&args[1..]));
    }
    if args.get(1).is_some_and(|a| a == "pools") {
        return match PoolsCli::try_parse_from(&args[1..]) {
            Ok(cli) => Ok(Parsed::Pools(Box::new(cli))),
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                ) =>
            {
                let _ = err.print();
                Ok(Parsed::Exit(ExitCode::SUCCESS))
            }
            Err(err) => Err(anyhow!(
                "{} (see --help)",
                first_paragraph(&err.to_string())
            )),
        };
    }
    if args.get(1).is_some_and(|a| a == "reset") {
        return match ResetCli::try_parse_from(&args[1..]) {
            Ok(cli) => Ok(Parsed::Reset(
                cli.state
                    .unwrap_or_else(|| crate::state::default_path(&cli.url)),
            )),
            Err(err)
                if matches!(
                    err.kind(),
                    ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
                ) =>
            {
                let _ = err.print();
                Ok(Parsed::Exit(ExitCode::SUCCESS))
            }
            Err(err) => Err(anyhow!(
                "{} (see --help)",
                first_paragraph(&err.to_string())
            )),
        };
    }
    match Cli::try_parse_from(args) {
        Ok(cli) => Ok(Parsed::Run(Box::new(Config::from_cli(cli)?))),
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            // Printing help only fails when stdout is closed; there is nothing left to tell then.
            let _ = err.print();
            Ok(Parsed::Exit(ExitCode::SUCCESS))
        }
        Err(err) => Err(anyhow!(
            "{} (see --help)",
            first_paragraph(&err.to_string())
        )),
    }
}

fn parse_check(args: &[OsString]) -> Parsed {
    // The common health-check line, `check TARGET [TIMEOUT]` without options, skips building clap's
    // parser: a check is mostly process start, and clap was a fifth of what remained (README, Speed).
    // Anything else, options and mistakes included, goes through clap.
    let positional: Option<Vec<&str>> = args[1..]
        .iter()
        .map(|a| a.to_str().filter(|a| !a.starts_with('-')))
        .collect();
    if let Some([target, rest @ ..]) = positional.as_deref()
        && rest.len() <= 1
    {
        let timeout = rest.first().copied().unwrap_or(CHECK_TIMEOUT);
        return match ProbeConfig::new(target, timeout, ProbeArgs::default()) {
            Ok(config) => Parsed::Check(Box::new(config)),
            Err(err) => Parsed::CheckUsage(format!("{err:#}")),
        };
    }
    match CheckCli::try_parse_from(args) {
        Ok(cli) => match ProbeConfig::new(&cli.target, &cli.timeout, cli.probe) {
            Ok(config) => Parsed::Check(Box::new(config)),
            Err(err) => Parsed::CheckUsage(format!("{err:#}")),
        },
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = err.print();
            Parsed::Exit(ExitCode::SUCCESS)
        }
        Err(err) => Parsed::CheckUsage(format!(
            "{} (see --help)",
            first_paragraph(&err.to_string())
        )),
    }
}

/// clap explains an error over several lines; cron mail and logs want one.
fn first_paragraph(text: &str) -> String {
    let text = text.strip_prefix("error: ").unwrap_or(text);
    let words: Vec<&str> = text
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_valid() {
        Cli::command().debug_assert();
        CheckCli::command().debug_assert();
        ResetCli::command().debug_assert();
        PoolsCli::command().debug_assert();
    }

    /// What clap alone makes of `check` arguments, to hold the fast path to.
    fn check_through_clap(args: &[&str]) -> String {
        let parsed = match CheckCli::try_parse_from(args) {
            Ok(cli) => match ProbeConfig::new(&cli.target, &cli.timeout, cli.probe) {
                Ok(config) => Parsed::Check(Box::new(config)),
                Err(err) => Parsed::CheckUsage(format!("{err:#}")),
            },
            Err(err) => Parsed::CheckUsage(err.to_string()),
        };
        format!("{parsed:?}")
    }

    #[test]
    fn the_check_fast_path_agrees_with_clap() {
        for args in [
            &["check", "unix:///run/php/php8.2-fpm.sock;/ping"][..],
            &["check", "unix:///run/php/php8.2-fpm.sock;/ping", "2"],
            &["check", "fcgi://127.0.0.1:9000", "0.5"],
            &["check", "http://127.0.0.1:8889/php-heartbeat.php", "3"],
            &["check", "unix:///x.sock", "0"],
            &["check", "ftp://x"],
        ] {
            let argv: Vec<OsString> = std::iter::once("php-relaunch")
                .chain(args.iter().copied())
                .map(OsString::from)
                .collect();
            assert_eq!(
                format!("{:?}", parse_check(&argv[1..])),
                check_through_clap(args),
                "{args:?}"
            );
        }
    }

    #[test]
    fn check_errors_are_usage_reports_not_errors() {
        let parsed = parse(["php-relaunch", "check", "unix:///x.sock", "0"]).unwrap();
        let Parsed::CheckUsage(reason) = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(reason, "TIMEOUT must be greater than 0 seconds, got '0'");
        let parsed = parse(["php-relaunch", "check"]).unwrap();
        let Parsed::CheckUsage(reason) = parsed else {
            panic!("{parsed:?}")
        };
        assert!(reason.contains("<TARGET>"), "{reason}");
    }

    fn error_of(args: &[&str]) -> String {
        let argv = std::iter::once("php-relaunch").chain(args.iter().copied());
        match parse(argv) {
            Err(err) => format!("{err:#}"),
            Ok(parsed) => panic!("expected an error for {args:?}, got {parsed:?}"),
        }
    }

    #[test]
    fn clap_errors_are_one_line_naming_the_problem() {
        let missing = error_of(&["http://127.0.0.1/"]);
        assert!(!missing.contains('\n'), "{missing}");
        assert!(missing.contains("<TIMEOUT>"), "{missing}");

        let unknown = error_of(&["http://127.0.0.1/", "5", "--bogus"]);
        assert!(!unknown.contains('\n'), "{unknown}");
        assert!(unknown.contains("--bogus"), "{unknown}");
    }

    #[test]
    fn negative_timeout_reaches_validation() {
        let err = error_of(&["http://127.0.0.1/", "-1"]);
        assert!(err.contains("TIMEOUT"), "{err}");
    }

    #[test]
    fn old_script_arguments_parse() {
        let argv = [
            "php-relaunch",
            "http://127.0.0.1:8889/php-heartbeat.php",
            "5",
            "ops@example.com,me@example.com",
            "1",
        ];
        let Ok(Parsed::Run(config)) = parse(argv) else {
            panic!("the classic crontab line must parse");
        };
        assert_eq!(config.recipients.len(), 2);
        assert!(config.php_cgi);
    }
}
