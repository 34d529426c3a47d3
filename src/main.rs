//! php-relaunch: keeps php-fpm answering. See README.md for the whole story.

mod alert;
mod app;
mod cli;
mod config;
mod deadline;
mod doctor;
mod escape;
mod evidence;
mod exit;
mod fpm;
mod health;
mod healthcheck;
mod history;
mod hook;
mod journal;
mod listener;
mod load;
mod lock;
mod metrics;
mod ondemand;
mod policy;
mod poll;
mod pools;
mod probe;
mod report;
mod run;
mod secure_file;
mod spawn;
mod state;
mod stdout;
mod watch;

use std::ffi::OsString;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().collect();
    // Called as php-fpm-healthcheck: the drop-in's own interface, without clap (#22).
    if healthcheck::called_as(&args) {
        return ExitCode::from(healthcheck::main(&args));
    }
    match cli::parse(&args) {
        Ok(invocation) => app::run(invocation),
        Err(stop) => app::stop(stop),
    }
    .into()
}
