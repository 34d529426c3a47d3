//! The command line: one clap command tree. Without a subcommand it is the classic script's
//! `php-relaunch URL TIMEOUT [EMAILS] [PHP_CGI] [OPTIONS]`; `check`, `reset` and `pools` are
//! subcommands. Parsing is pure: values are typed here (see `values`), and the checks that need the
//! file system come after, in `config`.

mod args;
#[cfg(feature = "generate")]
pub mod generate;
pub mod values;
mod watch;

pub use args::{
    By, CheckArgs, DoctorArgs, HookArgs, IdleStopArgs, PoolsArgs, PoolsCommand, ProbeArgs,
    ReportArgs, ResetArgs, RunArgs,
};
#[cfg(feature = "generate")]
pub use args::{GenerateArgs, Generated};
pub use watch::WatchArgs;

use args::CHECK_TIMEOUT;

use std::ffi::OsString;

use clap::error::ErrorKind;
use clap::{ArgMatches, Args, FromArgMatches, Parser, Subcommand};

use crate::exit::Exit;

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
  --relaunch-on codes, timeout  php-fpm is dead or hung: relaunch it
  refused, DNS failure         http: the web server is down: log and alert, php-fpm untouched
                               fcgi, unix: php-fpm is down: relaunch it
  any other status             log and alert, no relaunch
  --expect or a threshold fails  log and alert, no relaunch
";

const LOG_LINE: &str = "\
Log line (one per run that found a problem or did something, and one per hook run):
  TIMESTAMP url=URL verdict=V latency=S action=A old_pid=P new_pid=P took=S state=S mail=M
  trigger=cron|hook events=N [ignored=N] [error=\"...\"] [mail_error=\"...\"]
  verdict: status code, timeout, refused, dns, error, unhealthy, untrusted-listener
  state: healthy, down, web-server-down, web-server-hung, unexpected-status, unhealthy,
    failing, paused, cooldown, saturated, config-error, recovered, idle, socket-lost
  mail: sent, failed (mail_error= says why; tried again on the incident's next run), none
  events: the 502/504 events a hook run answers; ignored: other datagrams since the last line";

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
    /// `hook …`.
    Hook(Box<HookArgs>),
    /// `idle-stop …`.
    IdleStop(IdleStopArgs),
    /// `report …`.
    Report(ReportArgs),
    /// `doctor …`.
    Doctor(DoctorArgs),
    /// `watch …`: every pool of one file in one run (#21).
    Watch(WatchArgs),
    /// `generate man|completions DIR` (hidden; only in a build with the `generate` feature).
    #[cfg(feature = "generate")]
    Generate(GenerateArgs),
}

/// The commands, each with what `--help` says of it in its list.
const COMMANDS: [(&str, &str); 8] = [
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
    (
        "hook",
        "Relaunch on the first 502 nginx serves: read its 502/504 log lines from a socket (or Apache's \
         from stdin) and answer them with runs, same arguments as the classic run",
    ),
    (
        "idle-stop",
        "Stop an on-demand (socket-activated) pool's php-fpm once it has been idle for --idle-for; \
         its socket starts it again on the next request",
    ),
    (
        "report",
        "The history of failures and relaunches from the log (and nginx's access logs), per hour or \
         day: a table, --json, or an --svg chart",
    ),
    (
        "doctor",
        "Find the php-fpm pools on this host and say how to watch each: ready-to-paste lines, and \
         what to set first; changes nothing",
    ),
    (
        "watch",
        "Many pools in one run: every target of one file (listed, or discovered from php-fpm's \
         configurations) probed at once, each pool judged on its own, each master relaunched at most \
         once; one log line per pool with a problem, one mail per run",
    ),
];

// Written out rather than derived so that each command's arguments are built only when that command
// is parsed (`Command::defer`): the cron line, which names none, does not pay for building them.
impl Subcommand for Command {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        let defer: [fn(clap::Command) -> clap::Command; 8] = [
            CheckArgs::augment_args,
            ResetArgs::augment_args,
            PoolsArgs::augment_args,
            hook_args,
            IdleStopArgs::augment_args,
            ReportArgs::augment_args,
            DoctorArgs::augment_args,
            WatchArgs::augment_args,
        ];
        let cmd = COMMANDS
            .iter()
            .zip(defer)
            .fold(cmd, |cmd, (&(name, about), args)| {
                cmd.subcommand(clap::Command::new(name).about(about).defer(args))
            });
        #[cfg(feature = "generate")]
        let cmd = cmd.subcommand(
            clap::Command::new("generate")
                .about("Write the man pages or the shell completions into DIR (for packaging)")
                .hide(true)
                .defer(GenerateArgs::augment_args),
        );
        cmd
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        (cfg!(feature = "generate") && name == "generate")
            || COMMANDS.iter().any(|(command, _)| *command == name)
    }
}

impl FromArgMatches for Command {
    fn from_arg_matches(matches: &ArgMatches) -> Result<Command, clap::Error> {
        match matches.subcommand() {
            Some(("check", args)) => CheckArgs::from_arg_matches(args).map(Command::Check),
            Some(("reset", args)) => ResetArgs::from_arg_matches(args).map(Command::Reset),
            Some(("pools", args)) => PoolsArgs::from_arg_matches(args).map(Command::Pools),
            Some(("report", args)) => ReportArgs::from_arg_matches(args).map(Command::Report),
            Some(("doctor", args)) => DoctorArgs::from_arg_matches(args).map(Command::Doctor),
            Some(("watch", args)) => WatchArgs::from_arg_matches(args).map(Command::Watch),
            #[cfg(feature = "generate")]
            Some(("generate", args)) => GenerateArgs::from_arg_matches(args).map(Command::Generate),
            Some(("idle-stop", args)) => {
                IdleStopArgs::from_arg_matches(args).map(Command::IdleStop)
            }
            Some(("hook", args)) => {
                HookArgs::from_arg_matches(args).map(|a| Command::Hook(Box::new(a)))
            }
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

/// What the command line asks for, parsed.
#[derive(Debug)]
pub enum Invocation {
    /// The classic run.
    Run(Box<RunArgs>),
    /// One of the commands.
    Command(Box<Command>),
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
        }) => Ok(Invocation::Command(Box::new(command))),
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

/// `hook`'s arguments: with `--watch FILE` the file names the targets, so URL and TIMEOUT are not
/// asked for (#21).
fn hook_args(cmd: clap::Command) -> clap::Command {
    // In place: `mut_arg` would move them to the end, and so change the positionals' order.
    HookArgs::augment_args(cmd).mut_args(|a| match a.get_id().as_str() {
        "url" | "timeout" => a.required(false).required_unless_present("watch"),
        _ => a,
    })
}

/// One target of a watch file, as the classic run's arguments (`argv[0]` is not given): the file
/// and the command line go through the same parsers, defaults and checks (#21). The error is
/// clap's, as one line.
pub fn parse_target(args: &[OsString]) -> Result<RunArgs, String> {
    let cmd = RunArgs::augment_args(clap::Command::new("target").no_binary_name(true))
        .allow_negative_numbers(true);
    cmd.try_get_matches_from(args)
        .and_then(|matches| RunArgs::from_arg_matches(&matches))
        .map_err(|err| first_paragraph(&err.to_string()))
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
    Some(
        parsed
            .map(|args| Invocation::Command(Box::new(Command::Check(args))))
            .map_err(|err| Stop::Mistake {
                check: true,
                message: format!("{err:#}"),
            }),
    )
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
    use super::args::Chosen;
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

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
            let listed = help.lines().any(|line| {
                let rest = line.trim_start().strip_prefix(name);
                rest.is_some_and(|rest| rest.trim_start() == about)
            });
            assert!(listed, "{name}: {help}");
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
                }) => Ok(Invocation::Command(Box::new(Command::Check(args)))),
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
                "TIMEOUT must be at least 0.001 seconds, got '0'".to_owned()
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
            timeout.starts_with("TIMEOUT must be at least 0.001 seconds"),
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
    fn hook_takes_the_classic_arguments_or_a_watch_file() {
        let hook = |args: &[&str]| match parse(&argv(args)) {
            Ok(Invocation::Command(command)) => match *command {
                Command::Hook(hook) => hook,
                other => panic!("{other:?}"),
            },
            other => panic!("{args:?}: {other:?}"),
        };
        let classic = hook(&[
            "hook",
            "--stdin",
            "http://127.0.0.1/hb.php",
            "2",
            "a@example.com",
        ]);
        assert_eq!(classic.run.emails.0.len(), 1);
        assert_eq!(classic.run.timeout, Some(Duration::from_secs(2)));
        let watch = hook(&["hook", "--stdin", "--watch", "/etc/php-relaunch/watch.toml"]);
        assert!(watch.watch.is_some() && watch.run.url.is_none());
        let (_, missing) = mistake_of(&["hook", "--stdin"]);
        assert!(missing.contains("<URL>"), "{missing}");
    }

    #[test]
    fn watch_takes_its_file_and_the_runs_own_options() {
        let Ok(Invocation::Command(command)) = parse(&argv(&[
            "watch",
            "--config",
            "/srv/w.toml",
            "--every",
            "10",
            "--dry-run",
        ])) else {
            panic!("watch parses");
        };
        let Command::Watch(watch) = *command else {
            panic!("watch");
        };
        assert_eq!(watch.config, std::path::Path::new("/srv/w.toml"));
        assert_eq!(watch.every, Some(Duration::from_secs(10)));
        assert!(watch.dry_run);
    }

    #[test]
    fn subcommands_are_commands_of_one_tree() {
        let command = |args: &[&str]| match parse(&argv(args)) {
            Ok(Invocation::Command(command)) => *command,
            other => panic!("{args:?}: {other:?}"),
        };
        assert!(matches!(
            command(&["pools", "status", "www", "2", "--json"]),
            Command::Pools(PoolsArgs {
                json: true,
                command: PoolsCommand::Status(Chosen {
                    replica: Some(2),
                    ..
                }),
                ..
            })
        ));
        assert!(matches!(
            command(&["reset", "http://127.0.0.1/hb.php"]),
            Command::Reset(_)
        ));
        assert!(matches!(
            command(&["check", "unix:///x.sock", "--expect", "ok"]),
            Command::Check(_)
        ));
    }
}
