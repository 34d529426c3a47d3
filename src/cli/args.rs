//! The arguments of each command, typed: the classic run's, `check`'s, `reset`'s and `pools`'s.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use lettre::Address;

use super::values::{self, Named, Recipients, StatusCodes};
use crate::alert::Transport;
use crate::probe::Target;

// The classic run: `URL TIMEOUT [EMAILS] [PHP_CGI] [OPTIONS]` (no doc comment: it would become the
// `about` of `hook`, which flattens it).
#[derive(Args, Debug, Clone)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "each is an on/off flag of the command line"
)]
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

    /// The lock that keeps runs for the same php-fpm from overlapping; created 0600, never followed
    /// through a symlink [default: one per php-fpm master, under /run/php-relaunch/]
    #[arg(long = "lock", value_name = "PATH")]
    pub lock: Option<PathBuf>,

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

    /// The target is an on-demand pool's unix socket (started by systemd, stopped by idle-stop):
    /// while no php-fpm runs, check the socket is held and listening instead of connecting, which
    /// would start it
    #[arg(long = "on-demand")]
    pub on_demand: bool,

    /// Rewrite this node_exporter textfile on every run (php_relaunch_* metrics, labelled with the
    /// target), e.g. /var/lib/prometheus/node-exporter/php-relaunch.prom
    #[arg(long = "metrics-file", value_name = "PATH")]
    pub metrics_file: Option<PathBuf>,

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
pub(super) const CHECK_TIMEOUT: &str = "5";

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
    /// [default: the pool's own, under /run/php-relaunch/, as `--pool NAME` runs take it]
    #[arg(long = "lock", value_name = "PATH", global = true)]
    pub lock: Option<PathBuf>,

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

// `hook [--listen PATH] [--socket-group GROUP] [--idle-exit DURATION] [--hold DURATION] [--stdin]
// [run options] URL
// TIMEOUT [EMAILS] [PHP_CGI]` (no doc comment: it would replace the `about` in COMMANDS).
#[derive(Args, Debug)]
pub struct HookArgs {
    /// Bind this datagram socket for nginx's lines (0660, owner root, group --socket-group) instead of
    /// taking the one systemd passes; removed on SIGTERM/SIGINT
    #[arg(long = "listen", value_name = "PATH", conflicts_with = "stdin")]
    pub listen: Option<PathBuf>,

    /// With --listen: the group that may send to the socket, the one nginx's workers run as
    #[arg(
        long = "socket-group",
        value_name = "GROUP",
        default_value = "www-data",
        requires = "listen"
    )]
    pub socket_group: String,

    /// Under socket activation: exit after this long without a datagram, so systemd re-arms the socket
    #[arg(
        long = "idle-exit",
        value_name = "DURATION",
        default_value = "60s",
        value_parser = Named(values::duration)
    )]
    pub idle_exit: Duration,

    /// After each run, events for this long start no new run (they are counted into the next run's
    /// line): the quiet window, so that a storm of 502s makes one run, not one per request. With 0, an
    /// event that came during a run starts the next one as soon as it ends
    #[arg(
        long = "hold",
        value_name = "DURATION",
        default_value = "10s",
        value_parser = Named(values::duration_or_zero)
    )]
    pub hold: Duration,

    /// Read events from standard input, one per line (Apache's piped log); exit at its end
    #[arg(long = "stdin")]
    pub stdin: bool,

    /// Answer each event with one run of this watch file (every target in it) instead of URL's
    #[arg(long = "watch", value_name = "PATH", conflicts_with_all = ["url", "timeout"])]
    pub watch: Option<PathBuf>,

    #[command(flatten)]
    pub run: RunArgs,
}

// `idle-stop --idle-for DURATION (--fpm-config CONF | --pid-file PATH) [--status TARGET] [--state PATH]
// [--log PATH]` (no doc comment: it would replace the `about` in COMMANDS).
#[derive(Args, Debug)]
#[command(group = clap::ArgGroup::new("pool").required(true).args(["fpm_config", "pid_file"]))]
pub struct IdleStopArgs {
    /// Stop the pool once it has been idle this long without a break, e.g. 10m
    #[arg(long = "idle-for", value_name = "DURATION", value_parser = Named(values::duration))]
    pub idle_for: Duration,

    /// The pool's php-fpm configuration, as its master runs it
    #[arg(long = "fpm-config", value_name = "CONF")]
    pub fpm_config: Option<PathBuf>,

    /// Or: the pid file of its master
    #[arg(long = "pid-file", value_name = "PATH")]
    pub pid_file: Option<PathBuf>,

    /// The pool's status page: idle also needs it to count no request but its own [default: idle
    /// when every worker waits in accept(2), as /proc shows]
    #[arg(long = "status", value_name = "TARGET", value_parser = Named(values::status_page))]
    pub status: Option<Target>,

    /// How long requests in flight may take after QUIT before TERM
    #[arg(
        long = "grace",
        value_name = "DURATION",
        default_value = "30s",
        value_parser = Named(values::duration)
    )]
    pub grace: Duration,

    /// Where the time the pool turned idle is kept between runs [default: /var/lib/php-relaunch/…]
    #[arg(long = "state", value_name = "PATH")]
    pub state: Option<PathBuf>,

    /// The log, one line per stop
    #[arg(
        long = "log",
        value_name = "PATH",
        default_value = "/var/log/php-relaunch.log"
    )]
    pub log: PathBuf,

    /// The lock shared with the watching runs [default: the master's own, under /run/php-relaunch/,
    /// as runs with the same --fpm-config take it]
    #[arg(long = "lock", value_name = "PATH")]
    pub lock: Option<PathBuf>,
}

// `report [--log PATH] [--access-log PATH]... [--since DURATION] [--until TIME] [--by hour|day]
// [--svg FILE] [--json]` (no doc comment: it would replace the `about` in COMMANDS).
#[derive(Args, Debug)]
pub struct ReportArgs {
    /// php-relaunch's log; its rotated copies (.1, .2.gz …) are read too
    #[arg(
        long = "log",
        value_name = "PATH",
        default_value = "/var/log/php-relaunch.log"
    )]
    pub log: PathBuf,

    /// An nginx access log in the `combined` format (and its rotated copies), for the 502/504
    /// visitors got; may be given more than once
    #[arg(long = "access-log", value_name = "PATH")]
    pub access_log: Vec<PathBuf>,

    /// How far back from --until, e.g. 24h, 7d, 30d
    #[arg(
        long = "since",
        value_name = "DURATION",
        default_value = "7d",
        value_parser = Named(values::duration)
    )]
    pub since: Duration,

    /// The end of the report, e.g. 2026-11-30 or 2026-11-30T12:00 (local time) [default: now]
    #[arg(long = "until", value_name = "TIME")]
    pub until: Option<String>,

    /// One bucket per hour or per day
    #[arg(long = "by", value_name = "hour|day", default_value = "day")]
    pub by: By,

    /// Also write an SVG chart of the same series here
    #[arg(long = "svg", value_name = "FILE")]
    pub svg: Option<PathBuf>,

    /// Print JSON for scripts instead of the table (schema in the README)
    #[arg(long = "json")]
    pub json: bool,
}

/// A report's bucket.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum By {
    Hour,
    Day,
}

// `generate man|completions DIR` (hidden; only in a build with the `generate` feature).
#[cfg(feature = "generate")]
#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// What to write
    #[arg(value_name = "WHAT")]
    pub what: Generated,

    /// Where to write it
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// What `generate` writes.
#[cfg(feature = "generate")]
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generated {
    Man,
    Completions,
}

// `doctor [--fpm-config CONF]... [--json]` (no doc comment: it would replace the `about` in COMMANDS).
#[derive(Args, Debug)]
#[command(after_help = "\
doctor reads and changes nothing. It reads php-relaunch lines only from root's own files (root's \
crontab, /etc/crontab, /etc/cron.d, /etc/systemd/system), and only those owned by root and writable \
by no one else; other users' crontabs are never read. It probes an installed line's FastCGI target \
only when a connection wakes nothing: nothing listens, or a running php-fpm master holds the socket. \
HTTP targets, other hosts and sockets held by anything else (a socket-activated pool asleep) are \
named, not probed. Everything printed is escaped.")]
pub struct DoctorArgs {
    /// Also look at this php-fpm configuration (beside Debian's /etc/php/*/fpm/php-fpm.conf and
    /// FreeBSD's /usr/local/etc/php-fpm.conf); may be given more than once
    #[arg(long = "fpm-config", value_name = "CONF")]
    pub fpm_config: Vec<PathBuf>,

    /// Print JSON for configuration management
    #[arg(long = "json")]
    pub json: bool,

    /// Print a ready watch file (/etc/php-relaunch/watch.toml) for the pools found, for `watch`
    #[arg(long = "watch-config", conflicts_with = "json")]
    pub watch_config: bool,
}
