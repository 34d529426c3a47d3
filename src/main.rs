//! php-relaunch: keeps php-fpm answering. See README.md for the whole story.

mod alert;
mod app;
mod cli;
mod config;
mod evidence;
mod fpm;
mod health;
mod journal;
mod load;
mod lock;
mod outcome;
mod policy;
mod pools;
mod probe;
mod secure_file;
mod spawn;
mod state;

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match cli::parse(std::env::args_os()) {
        Ok(cli::Parsed::Run(config)) => config,
        Ok(cli::Parsed::Check(config)) => return app::check_command(&config),
        Ok(cli::Parsed::CheckUsage(reason)) => {
            // Docker reserves exit code 2; a health check that cannot run is unhealthy.
            println!("unhealthy: bad arguments: {reason}");
            return ExitCode::FAILURE;
        }
        Ok(cli::Parsed::Reset(state)) => {
            return match app::reset(&state) {
                Ok(message) => {
                    println!("{message}");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("php-relaunch: {err:#}");
                    outcome::usage_error()
                }
            };
        }
        Ok(cli::Parsed::Pools(cli)) => {
            return app::pools(&cli).unwrap_or_else(|err| {
                eprintln!("php-relaunch: {err:#}");
                outcome::usage_error()
            });
        }
        Ok(cli::Parsed::Exit(code)) => return code,
        Err(err) => {
            eprintln!("php-relaunch: {err:#}");
            return outcome::usage_error();
        }
    };
    match app::run(&config) {
        Ok(outcome) => outcome.exit_code(),
        Err(err) => {
            eprintln!("php-relaunch: {err:#}");
            outcome::usage_error()
        }
    }
}
