//! The commands: builds each one's configuration from the parsed command line (the checks that
//! need the file system happen here, before anything is locked, probed or restarted), runs it, and
//! turns mistakes into one line and an exit code.

use anyhow::Result;

#[cfg(feature = "generate")]
use crate::cli::{self, Generated};
use crate::cli::{Command, Invocation, Stop};
use crate::config::watch as watch_config;
use crate::config::{Config, ProbeConfig};
use crate::doctor;
use crate::escape;
use crate::exit::Exit;
use crate::health;
use crate::history;
use crate::hook;
use crate::ondemand;
use crate::policy;
use crate::pools;
use crate::run;
use crate::state::{self, State};
use crate::stdout::{errln, outln};
use crate::watch;

/// Does what the command line asked for and says how it went. Errors are printed here, on one
/// line, and are exit 2 (a health `check` says "unhealthy" and exits 1: Docker reserves 2).
pub fn run(invocation: Invocation) -> Exit {
    let (check, result) = match invocation {
        Invocation::Run(args) => (
            false,
            Config::from_run(*args).and_then(|config| run::watch(&config)),
        ),
        Invocation::Command(command) => {
            (matches!(*command, Command::Check(_)), command_run(*command))
        }
    };
    result.unwrap_or_else(|err| {
        stop(Stop::Mistake {
            check,
            message: format!("{err:#}"),
        })
    })
}

/// One of the commands.
fn command_run(command: Command) -> Result<Exit> {
    match command {
        Command::Check(args) => {
            let mut probe = args.probe;
            // `check` takes no lock, so it never writes the state a cron run owns: its counters
            // live in a file of their own (#19).
            probe
                .state
                .get_or_insert_with(|| check_state_path(&args.target.to_string()));
            ProbeConfig::new(args.target, args.timeout, probe).map(|config| check_command(&config))
        }
        Command::Reset(args) => {
            let path = args.state.unwrap_or_else(|| state::default_path(&args.url));
            reset(&path).map(|message| {
                outln!("{message}");
                Exit::Healthy
            })
        }
        Command::Pools(args) => pools::command(&args),
        Command::IdleStop(args) => ondemand::idle_stop::command(&args),
        Command::Report(args) => history::command(&args),
        Command::Doctor(args) if args.watch_config => doctor::watch_config(&args.fpm_config),
        Command::Doctor(args) => doctor::command(&args),
        Command::Watch(args) => watch_config::load(args).and_then(|config| watch::command(&config)),
        #[cfg(feature = "generate")]
        Command::Generate(args) => match args.what {
            Generated::Man => cli::generate::man(&args.dir),
            Generated::Completions => cli::generate::completions(&args.dir),
        }
        .map(|()| Exit::Healthy),
        Command::Hook(args) => {
            let listen = hook::Listen {
                path: args.listen,
                group: args.socket_group,
                idle_exit: args.idle_exit,
                hold: args.hold,
                stdin: args.stdin,
            };
            match args.watch {
                // One event starts one run of the whole watch file (#21).
                Some(file) => {
                    let watch_args = crate::cli::WatchArgs {
                        config: file,
                        dry_run: args.run.dry_run,
                        log: Some(args.run.log),
                        metrics_file: args.run.metrics_file,
                        smtp: args.run.smtp,
                        from: args.run.from,
                        ..crate::cli::WatchArgs::default()
                    };
                    watch_config::load(watch_args)
                        .and_then(|config| hook::serve_watch(&config, &listen))
                }
                None => Config::from_run(args.run).and_then(|config| hook::serve(&config, &listen)),
            }
        }
    }
}

/// Ends a command that could not start: help was printed, or a mistake is told in one line, escaped
/// (it may quote a value from a file others wrote, #18).
pub fn stop(stop: Stop) -> Exit {
    match stop {
        Stop::Printed => Exit::Healthy,
        Stop::Mistake {
            check: true,
            message,
        } => {
            outln!("unhealthy: bad arguments: {}", escape::field(&message));
            Exit::Failing
        }
        Stop::Mistake {
            check: false,
            message,
        } => {
            errln!("php-relaunch: {}", escape::field(&message));
            Exit::Usage
        }
    }
}

/// The default file of `check`'s counters for `target`: never the watching runs' state file.
fn check_state_path(target: &str) -> std::path::PathBuf {
    state::default_path(&format!("check:{target}"))
}

/// `php-relaunch check`: probe once, say why on stdout; exit 0 healthy, 1 not.
fn check_command(config: &ProbeConfig) -> Exit {
    // The state file is read only when a counter's growth is judged: the hot path stays I/O-free.
    let verdict = if config.thresholds.cumulative() {
        let (mut state, before) = health::load_state(&config.state);
        state.target = config.target.to_string();
        let verdict = health::check(config, &mut state);
        health::save_state(&config.state, &state, &before);
        verdict
    } else {
        health::check(config, &mut State::default())
    };
    let (line, healthy) = health::report(config, &verdict);
    outln!("{line}");
    if healthy {
        Exit::Healthy
    } else {
        Exit::Failing
    }
}

/// `php-relaunch reset`: forget the relaunches that spent the budget, so relaunching resumes. A
/// state file that cannot be read as one is replaced by a fresh state: that is what a reset is for
/// (#19).
fn reset(path: &std::path::Path) -> Result<String> {
    let (mut state, warning) = state::load(path)?;
    let was_spent = policy::reset(&mut state);
    state::save(path, &state)?;
    Ok(match warning {
        Some(warning) => format!(
            "{}; replaced it with a fresh state",
            warning.trim_end_matches("; starting afresh")
        ),
        None if was_spent => format!("restart budget restored ({})", path.display()),
        None => format!(
            "restart budget was not spent; relaunch history cleared ({})",
            path.display()
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_never_shares_a_watching_runs_state_file() {
        for target in [
            "unix:///run/php/php8.2-fpm.sock;/status?json",
            "fcgi://127.0.0.1:9000/status",
        ] {
            let check = check_state_path(target);
            assert_ne!(check, state::default_path(target));
            let name = check.file_name().unwrap().to_str().unwrap();
            assert!(name.starts_with("check_"), "{name}");
        }
    }
}
