//! php-relaunch: keeps php-fpm answering. See README.md for the whole story.

mod alert;
mod app;
mod cli;
mod config;
mod fpm;
mod journal;
mod lock;
mod outcome;
mod policy;
mod probe;
mod secure_file;
mod spawn;

use std::process::ExitCode;

fn main() -> ExitCode {
    let config = match cli::parse(std::env::args_os()) {
        Ok(cli::Parsed::Run(config)) => config,
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
