//! The command line: one clap command tree. Without a subcommand it is the classic script's
//! `php-relaunch URL TIMEOUT [EMAILS] [PHP_CGI] [OPTIONS]`; `check`, `reset` and `pools` are
//! subcommands. Parsing is pure: values are typed here (see `values`), and the checks that need the
//! file system come after, in `config`.

pub mod values;

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{ArgMatches, Args, FromArgMatches, Parser, Subcommand};
use lettre::Address;

use crate::alert::Transport;
use crate::exit::Exit;
use crate::probe::Target;
use values::{Named, Recipients, StatusCodes};

const TARGETS: &str = "\
Targets (URL):
  http://HOST[:PORT]/PATH            the heartbeat page through the web server
  fcgi://HOST:PORT[/PATH[?QUERY]]    php-fpm itself over TCP
  unix:///SOCKET[;/PATH[?QUERY]]     php-fpm itself over a unix socket
  Without PATH a FastCGI probe is a GET_VALUES management record (answered by a free worker);
  with one it is a GET request whose SCRIPT_NAME and SCRIPT_FILENAME are PATH: php-fpm's
  ping.path (`;/ping` expects `pong`), its pm.status_path (`;/status?json`, for thresholds) or an
  absolute script file. Over FastCGI a refused connection or missing socket means php-fpm is down.

Classification of the heartbeat answer:
  200-399                      healthy: exit 0, print nothing, change nothing
  --relaunch-on codes, timeout php-fpm is dead or hung: relaunch it
  refused, DNS failure         http: the web server is down: log and alert, php-fpm untouched
                               fcgi, unix: php-fpm is down: relaunch it
  any other status             log and alert, no relaunch
  --expect or a threshold fails  log and alert, no relaunch
";

const LOG_LINE: &str = "\
Log line (one per run that found a problem or did something):
  TIMESTAMP url=URL verdict=V latency=S action=A old_pid=P new_pid=P took=S state=S mail=M [error=\"...\"]";

/// The long help's epilogue: targets, classification, the exit-code table, the log line.
fn after_help() -> String {
    format!("{TARGETS}\nExit codes:\n{}\n{LOG_LINE}", Exit::table())
}

/// Watchdog for php-fpm: request a heartbeat page once and relaunch php-fpm when it answers 502/504 or times out.
///
/// Drop-in replacement for the php-relaunch cron script: same arguments, run from root's crontab or mcron.
/// A run takes a lock, requests URL once with a hard deadline, and on a relaunch verdict restarts php-fpm
/// (escalating to SIGKILL of exactly that master and its workers when the restart does not help), appends
/// one line to the log, and mails the addresses given.
#[derive(Parser, Debug)]
#[command(
    name = "php-relaunch",
    version,
    after_long_help = after_help(),
    allow_negative_numbers = true,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    #[command(flatten)]
    pub run: RunArgs,
}

/// The commands beside the classic run.
#[derive(Debug)]
pub enum Command {
    /// `check TARGET [TIMEOUT]`.
    Check(CheckArgs),
    /// `reset URL`.
    Reset(ResetArgs),
    /// `pools …`.
    Pools(PoolsArgs),
}

/// The commands, each with what `--help` says of it in its list.
const COMMANDS: [(&str, &str); 3] = [
    (
        "check",
        "Health check for Docker HEALTHCHECK and Kubernetes exec probes: probe once, no lock, no \
         restart, no log; exit 0 healthy, 1 unhealthy (also for bad arguments: Docker reserves 2)",
    ),
    (
        "reset",
        "Restore a spent restart budget, so relaunching resumes",
    ),
    (
        "pools",
        "Redundant pool replicas: status, start, stop, rolling restarts and deploys",
    ),
];

// Written out rather than derived so that each command's arguments are built only when that command
// is parsed (`Command::defer`): the cron line, which names none, does not pay for building them.
impl Subcommand for Command {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        let defer: [fn(clap::Command) -> clap::Command; 3] = [
            CheckArgs::augment_args,
            ResetArgs::augment_args,
            PoolsArgs::augment_args,
        ];
        COMMANDS
            .iter()
            .zip(defer)
            .fold(cmd, |cmd, (&(name, about), args)| {
                cmd.subcommand(clap::Command::new(name).about(about).defer(args))
            })
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        COMMANDS.iter().any(|(command, _)| *command == name)
    }
}

impl FromArgMatches for Command {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Command, clap::Error> {
        match matches.subcommand() {
            Some(("check", args)) => CheckArgs::from_arg_matches(args).map(Command::Check),
            Some(("reset", args)) => ResetArgs::from_arg_matches(args).map(Command::Reset),
            Some(("pools", args)) => PoolsArgs::from_arg_matches(args).map(Command::Pools),
            Some((name, _)) => Err(clap::Error::raw(
                ErrorKind::InvalidSubcommand,
                format!("no command '{name}'"),
            )),
            None => Err(clap::Error::raw(
                ErrorKind::MissingSubcommand,
                "a command is needed",
            )),
        }
    }

    fn update_from_arg_matches(&mut self, matches: &ArgMatches) -> Result<(), clap::Error> {
        *self = Command::from_arg_matches(matches)?;
        Ok(())
    }
}

/// The classic run: `URL TIMEOUT [EMAILS] [PHP_CGI] [OPTIONS]`.
#[derive(Args, Debug)]
pub struct RunArgs {
    /// The heartbeat page, e.g. http://127.0.0.1:8889/php-heartbeat.php, or php-fpm itself:
    /// fcgi://HOST:PORT[/PATH[?QUERY]] or unix:///SOCKET[;/PATH[?QUERY]]
    #[arg(value_name = "URL", required = true, value_parser = Named(values::target))]
    pub url: Option<Target>,

    /// Hard deadline in seconds for the whole request (connect, headers and body); fractions allowed
    #[arg(value_name = "TIMEOUT", required = true, value_parser = Named(values::seconds))]
    pub timeout: Option<Duration>,

    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Comma-separated addresses to alert; '' for none
    #[arg(value_name = "EMAILS", default_value = "", value_parser = Named(values::recipients))]
    pub emails: Recipients,

    /// 1 when php-cgi runs as a fallback beside php-fpm: a relaunch also kills the php-cgi processes and starts
    /// their service
    #[arg(
        value_name = "PHP_CGI",
        default_value = "0",
        action = clap::ArgAction::Set,
        value_parser = Named(values::flag)
    )]
    pub php_cgi: bool,

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
    #[arg(long = "service", value_name = "NAME", value_parser = Named(values::service_name))]
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
    #[arg(long = "smtp", value_name = "URL", value_parser = Named(values::smtp))]
    pub smtp: Option<Transport>,

    /// The sender address of alerts [default: php-relaunch@HOSTNAME]
    #[arg(long = "from", value_name = "ADDRESS", value_parser = Named(values::address))]
    pub from: Option<Address>,

    /// Probe, decide and print the log line of what would be done; change nothing, send nothing
    #[arg(long = "dry-run")]
    pub dry_run: bool,

    /// The HTTP statuses that mean php-fpm is broken (the old script used 500,502,503,504)
    #[arg(
        long = "relaunch-on",
        value_name = "CODES",
        default_value = "502,504",
        value_parser = Named(values::status_codes)
    )]
    pub relaunch_on: StatusCodes,

    /// Repeat the check every SECONDS while the next check can end within the current minute [default:
    /// check once]
    #[arg(long = "every", value_name = "SECONDS", value_parser = Named(values::every))]
    pub every: Option<Duration>,

    /// Deadline in seconds for each step of a relaunch: the service command, and the wait for a healthy
    /// heartbeat after it
    #[arg(
        long = "restart-timeout",
        value_name = "SECONDS",
        default_value = "10",
        value_parser = Named(values::seconds)
    )]
    pub restart_timeout: Duration,

    /// Overall deadline in seconds of one check, relaunch and alert included: if anything hangs past
    /// it, the run logs that and ends, so the lock is free for the next run [default: 2 × TIMEOUT
    /// + 10 × --restart-timeout + 30]
    #[arg(long = "run-timeout", value_name = "SECONDS", value_parser = Named(values::seconds))]
    pub run_timeout: Option<Duration>,

    /// With PHP_CGI=1: the php-cgi service to start after its processes were killed [default: the first of
    /// php-cgi, php-fastcgi, spawn-fcgi that exists]
    #[arg(long = "cgi-service", value_name = "NAME", value_parser = Named(values::service_name))]
    pub cgi_service: Option<String>,

    /// Relaunch only after N consecutive failed runs; failures before that are logged
    #[arg(
        long = "failures",
        value_name = "N",
        default_value = "1",
        value_parser = Named(values::at_least_one)
    )]
    pub failures: u32,

    /// Restart budget: at most N relaunches within --within; then stop relaunching, alert once, keep
    /// probing and logging
    #[arg(long = "max-restarts", value_name = "N", default_value_t = 5)]
    pub max_restarts: u32,

    /// The restart budget's window, e.g. 90s, 10m, 1h
    #[arg(
        long = "within",
        value_name = "DURATION",
        default_value = "1h",
        value_parser = Named(values::duration)
    )]
    pub within: Duration,

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
    #[arg(long = "status", value_name = "TARGET", value_parser = Named(values::status_page))]
    pub status: Option<Target>,

    /// Relaunch a pool whose workers are all busy (this drops their requests) [default: alert only]
    #[arg(long = "relaunch-saturated")]
    pub relaunch_saturated: bool,

    /// Kill just the workers stuck this long in one request (needs --status), before any relaunch, e.g. 5m
    #[arg(
        long = "stuck-after",
        value_name = "DURATION",
        value_parser = Named(values::duration)
    )]
    pub stuck_after: Option<Duration>,

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

// Judging the reply, for a run and for `check` alike (no doc comment: it would become the `about`
// of the commands that flatten it).
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

// `check TARGET [TIMEOUT]` (its `about` is in COMMANDS: a doc comment here would replace it).
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// http://HOST[:PORT]/PATH, fcgi://HOST:PORT[/PATH[?QUERY]] or unix:///SOCKET[;/PATH[?QUERY]]
    #[arg(value_name = "TARGET", value_parser = Named(values::target))]
    pub target: Target,

    /// Hard deadline in seconds over connect, write and read; fractions allowed
    #[arg(value_name = "TIMEOUT", default_value = CHECK_TIMEOUT, value_parser = Named(values::seconds))]
    pub timeout: Duration,

    #[command(flatten)]
    pub probe: ProbeArgs,
}

/// `check`'s default deadline in seconds.
const CHECK_TIMEOUT: &str = "5";

// `reset URL [--state PATH]`.
#[derive(Args, Debug)]
pub struct ResetArgs {
    /// The URL (or FastCGI target) whose state to reset, as given to the watching runs
    #[arg(value_name = "URL")]
    pub url: String,

    /// The state file, if the watching runs were given one with --state
    #[arg(long = "state", value_name = "PATH")]
    pub state: Option<PathBuf>,
}

// `pools [--config PATH] [--json] COMMAND`.
#[derive(Args, Debug)]
pub struct PoolsArgs {
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

// What to do with the pools (no doc comment: it would become `pools`'s `about`).
#[derive(Subcommand, Debug)]
pub enum PoolsCommand {
    /// The pools and their replicas
    List,
    /// Per replica: master pid, ping answer and latency, balancer state, current release
    Status(Chosen),
    /// Start replicas that are not running
    Start(Chosen),
    /// Drain and stop replicas gracefully; never the last one serving
    Stop(Chosen),
    /// Rolling restart, replica by replica: config test, drain, graceful stop, start, ping
    Restart(Chosen),
    /// Point the pool's release link at DIR atomically, then restart it replica by replica
    Deploy {
        /// The pool
        pool: String,
        /// The new release directory
        dir: PathBuf,
    },
}

/// `[POOL [REPLICA]]`: all pools, one pool, or one replica of it.
#[derive(Args, Debug, Clone)]
pub struct Chosen {
    /// A pool name
    pub pool: Option<String>,
    /// A replica number, from 1
    pub replica: Option<usize>,
}

/// What the command line asks for, parsed.
#[derive(Debug)]
pub enum Invocation {
    /// The classic run.
    Run(Box<RunArgs>),
    /// `check`.
    Check(CheckArgs),
    /// `reset`.
    Reset(ResetArgs),
    /// `pools …`.
    Pools(PoolsArgs),
}

/// Why parsing ended the process instead.
#[derive(Debug, PartialEq, Eq)]
pub enum Stop {
    /// Help or version was printed.
    Printed,
    /// A mistake, in one line; `check` reports it as unhealthy rather than as a usage error.
    Mistake {
        /// Whether it was `check`'s arguments.
        check: bool,
        /// What is wrong.
        message: String,
    },
}

/// Parses argv into a typed invocation. Touches nothing but the arguments.
pub fn parse(args: &[OsString]) -> Result<Invocation, Stop> {
    let check = args.get(1).is_some_and(|a| a == "check");
    if check && let Some(fast) = parse_check_fast(&args[2..]) {
        return fast;
    }
    match Cli::try_parse_from(args) {
        Ok(Cli {
            command: Some(command),
            ..
        }) => Ok(match command {
            Command::Check(args) => Invocation::Check(args),
            Command::Reset(args) => Invocation::Reset(args),
            Command::Pools(args) => Invocation::Pools(args),
        }),
        Ok(Cli { command: None, run }) => Ok(Invocation::Run(Box::new(run))),
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            // Printing help only fails when stdout is closed; there is nothing left to tell then.
            let _ = err.print();
            Err(Stop::Printed)
        }
        Err(err) => Err(Stop::Mistake {
            check,
            message: mistake(&err),
        }),
    }
}

/// clap's error as one line. A value that does not parse is named by its own message; a mistake of
/// form (a missing argument, an unknown option) points to `--help`.
fn mistake(err: &clap::Error) -> String {
    let said = first_paragraph(&err.to_string());
    if err.kind() == ErrorKind::ValueValidation {
        said
    } else {
        format!("{said} (see --help)")
    }
}

/// The common health-check line, `check TARGET [TIMEOUT]` without options, skips building clap's
/// parser: a check is mostly process start, and clap was a fifth of what remained (README, Speed).
/// `None` for anything else, options and mistakes of form included, which clap then reads.
fn parse_check_fast(args: &[OsString]) -> Option<Result<Invocation, Stop>> {
    let positional: Vec<&str> = args
        .iter()
        .map(|a| a.to_str().filter(|a| !a.starts_with('-')))
        .collect::<Option<_>>()?;
    let [target, rest @ ..] = positional.as_slice() else {
        return None;
    };
    if rest.len() > 1 {
        return None;
    }
    let timeout = rest.first().copied().unwrap_or(CHECK_TIMEOUT);
    let parsed = values::target("TARGET", target).and_then(|target| {
        Ok(CheckArgs {
            target,
            timeout: values::seconds("TIMEOUT", timeout)?,
            probe: ProbeArgs::default(),
        })
    });
    Some(parsed.map(Invocation::Check).map_err(|err| Stop::Mistake {
        check: true,
        message: format!("{err:#}"),
    }))
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

    fn argv(args: &[&str]) -> Vec<OsString> {
        std::iter::once("php-relaunch")
            .chain(args.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn cli_is_valid() {
        Cli::command().debug_assert();
    }

    #[test]
    fn help_lists_the_commands_and_the_exit_codes() {
        let mut cli = Cli::command();
        let help = cli.render_long_help().to_string();
        for (name, about) in COMMANDS {
            assert!(
                help.contains(&format!("  {name}  {about}")),
                "{name}: {help}"
            );
            // The command's own help says the same of it (its arguments are built on demand).
            let sub = cli.find_subcommand_mut(name).unwrap();
            sub.build();
            assert_eq!(
                sub.get_about().map(ToString::to_string).as_deref(),
                Some(about)
            );
        }
        assert!(help.contains("5  another run holds the lock"), "{help}");
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
            let argv = argv(args);
            let fast = parse_check_fast(&argv[2..]).expect("the fast path takes it");
            let through_clap = match Cli::try_parse_from(&argv) {
                Ok(Cli {
                    command: Some(Command::Check(args)),
                    ..
                }) => Ok(Invocation::Check(args)),
                Ok(other) => panic!("{other:?}"),
                Err(err) => Err(Stop::Mistake {
                    check: true,
                    message: super::mistake(&err),
                }),
            };
            assert_eq!(format!("{fast:?}"), format!("{through_clap:?}"), "{args:?}");
        }
    }

    fn mistake_of(args: &[&str]) -> (bool, String) {
        match parse(&argv(args)) {
            Err(Stop::Mistake { check, message }) => (check, message),
            other => panic!("expected a mistake for {args:?}, got {other:?}"),
        }
    }

    #[test]
    fn check_mistakes_are_check_mistakes() {
        assert_eq!(
            mistake_of(&["check", "unix:///x.sock", "0"]),
            (
                true,
                "TIMEOUT must be greater than 0 seconds, got '0'".to_owned()
            )
        );
        let (check, message) = mistake_of(&["check"]);
        assert!(check && message.contains("<TARGET>"), "{message}");
    }

    #[test]
    fn mistakes_are_one_line_naming_the_problem() {
        let (check, missing) = mistake_of(&["http://127.0.0.1/"]);
        assert!(!check);
        assert!(!missing.contains('\n'), "{missing}");
        assert!(missing.contains("<TIMEOUT>"), "{missing}");

        let (_, unknown) = mistake_of(&["http://127.0.0.1/", "5", "--bogus"]);
        assert!(unknown.contains("--bogus"), "{unknown}");

        let (_, within) = mistake_of(&["http://127.0.0.1/", "5", "--within", "1x"]);
        assert_eq!(
            within,
            "--within takes a duration such as 90s, 10m or 1h, got '1x'"
        );
        let (_, timeout) = mistake_of(&["http://127.0.0.1/", "-1"]);
        assert!(
            timeout.starts_with("TIMEOUT must be greater than 0"),
            "{timeout}"
        );
    }

    #[test]
    fn the_classic_crontab_line_parses() {
        let Ok(Invocation::Run(run)) = parse(&argv(&[
            "http://127.0.0.1:8889/php-heartbeat.php",
            "5",
            "ops@example.com,me@example.com",
            "1",
        ])) else {
            panic!("the classic crontab line must parse");
        };
        assert_eq!(run.emails.0.len(), 2);
        assert!(run.php_cgi);
        assert_eq!(run.timeout, Some(Duration::from_secs(5)));
    }

    #[test]
    fn subcommands_are_commands_of_one_tree() {
        assert!(matches!(
            parse(&argv(&["pools", "status", "www", "2", "--json"])),
            Ok(Invocation::Pools(PoolsArgs {
                json: true,
                command: PoolsCommand::Status(Chosen {
                    replica: Some(2),
                    ..
                }),
                ..
            }))
        ));
        assert!(matches!(
            parse(&argv(&["reset", "http://127.0.0.1/hb.php"])),
            Ok(Invocation::Reset(_))
        ));
        assert!(matches!(
            parse(&argv(&["check", "unix:///x.sock", "--expect", "ok"])),
            Ok(Invocation::Check(_))
        ));
    }
}
