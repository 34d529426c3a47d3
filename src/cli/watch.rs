//! `watch`'s arguments: the one-run-for-many-pools command (#21). What each target is and how it is
//! judged lives in the file; the command line says only where it is and how this run behaves.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use lettre::Address;

use super::values::{self, Named};
use crate::alert::Transport;

/// The default watch file.
pub const WATCH_FILE: &str = "/etc/php-relaunch/watch.toml";

// `watch [--config PATH] [--dry-run] [--every SECONDS] [--log PATH] [--state-dir DIR]
// [--metrics-file PATH] [--smtp URL] [--from ADDRESS]` (no doc comment: it would replace the
// `about` in COMMANDS).
#[derive(Args, Debug, Clone, Default)]
pub struct WatchArgs {
    /// The watch file: defaults at the top, then [[target]] tables and/or a [discover] table
    #[arg(long = "config", value_name = "PATH", default_value = WATCH_FILE)]
    pub config: PathBuf,

    /// Probe every target, decide and print the log line of what would be done; change nothing,
    /// send nothing
    #[arg(long = "dry-run")]
    pub dry_run: bool,

    /// Repeat the run every SECONDS while the next can end within the current minute [default: once]
    #[arg(long = "every", value_name = "SECONDS", value_parser = Named(values::every))]
    pub every: Option<Duration>,

    /// The log file [default: the file's `log`, else /var/log/php-relaunch.log]
    #[arg(long = "log", value_name = "PATH")]
    pub log: Option<PathBuf>,

    /// Where each target's state and each master's budget are kept [default: the file's
    /// `state_dir`, else /var/lib/php-relaunch/watch]
    #[arg(long = "state-dir", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Rewrite this node_exporter textfile on every run, one series per target [default: the
    /// file's `metrics_file`, else none]
    #[arg(long = "metrics-file", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

    /// Send mail through this SMTP server, e.g. smtp://127.0.0.1:25 [default: the file's `smtp`,
    /// else /usr/sbin/sendmail]
    #[arg(long = "smtp", value_name = "URL", value_parser = Named(values::smtp))]
    pub smtp: Option<Transport>,

    /// The sender address of alerts [default: the file's `from`, else php-relaunch@HOSTNAME]
    #[arg(long = "from", value_name = "ADDRESS", value_parser = Named(values::address))]
    pub from: Option<Address>,
}
