//! php-relaunch: keeps php-fpm answering. See README.md for the whole story.

mod alert;
mod app;
mod cli;
mod config;
mod deadline;
mod evidence;
mod fpm;
mod health;
mod journal;
mod load;
mod lock;
mod outcome;
mod policy;
mod poll;
mod pools;
mod probe;
mod secure_file;
mod spawn;
mod state;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::parse(std::env::args_os()) {
        Ok(parsed) => app::dispatch(parsed),
        Err(err) => {
            eprintln!("php-relaunch: {err:#}");
            outcome::usage_error()
        }
    }
}
