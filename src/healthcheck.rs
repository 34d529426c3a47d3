//! php-relaunch called as `php-fpm-healthcheck` (#22): a drop-in for renatomefi/php-fpm-healthcheck,
//! the container probe most php-fpm images run. Same options (as its `getopt` call reads them), same
//! environment, output and exit codes, so `HEALTHCHECK` lines and Kubernetes probes work unchanged;
//! but with a hard deadline always, no cgi-fcgi, and a failure wherever the original said healthy
//! without knowing (a missing metric, a 403, an empty or foreign page). docs/healthcheck.md has the
//! whole interface and every difference.
//!
//! This path is hand-parsed: no clap, no config, no lock, no log; it reads the environment once,
//! asks php-fpm once, and prints what the original printed.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::deadline::Watchdog;
use crate::escape;
use crate::probe::fastcgi::{self, Address};
use crate::probe::{Script, exchange, split_host_port, status};
use crate::stdout::{errln, outln};

/// The program name (argv[0]'s file name) that selects this interface.
pub const NAME: &str = "php-fpm-healthcheck";

/// The deadline without `--timeout`, in seconds.
const DEFAULT_TIMEOUT: u64 = 5;
/// The longest `--timeout`, in seconds.
const MAX_TIMEOUT: u64 = 86_400;

/// Exit codes: the original's, cgi-fcgi's for a failed connection, and coreutils timeout's.
mod code {
    pub const HEALTHY: u8 = 0;
    /// A metric over its threshold, or missing from the page.
    pub const METRIC: u8 = 1;
    /// No socket file at the path (cgi-fcgi's ENOENT).
    pub const NO_SOCKET: u8 = 2;
    /// Bad option or value.
    pub const USAGE: u8 = 3;
    /// Connected, but the page is not what was asked for.
    pub const PAGE: u8 = 8;
    /// Any other failure to talk to php-fpm (permission denied, reset, unknown host).
    pub const CONNECT: u8 = 9;
    /// Connection refused (cgi-fcgi's ECONNREFUSED).
    pub const REFUSED: u8 = 111;
    /// No answer within the deadline (what `timeout` returns in the original's PR #55).
    pub const TIMEOUT: u8 = 124;
}

/// The long options, in the order of the original's `getopt --longoptions` (plus `timeout` from its
/// PR #55 and `ping`): this order is the order of getopt's "possibilities" list. `true`: takes a value.
const LONG: [(&str, bool); 13] = [
    ("verbose", false),
    ("timeout", true),
    ("ping", false),
    ("accepted-conn", true),
    ("listen-queue", true),
    ("max-listen-queue", true),
    ("listen-queue-len", true),
    ("idle-processes", true),
    ("active-processes", true),
    ("total-processes", true),
    ("max-active-processes", true),
    ("max-children-reached", true),
    ("slow-requests", true),
];

/// Whether argv[0] names this interface (a link or a copy of the binary under that name).
pub fn called_as(args: &[OsString]) -> bool {
    args.first()
        .and_then(|arg0| Path::new(arg0).file_name())
        .is_some_and(|name| name == NAME)
}

/// The environment variables it reads; empty counts as unset, as `${VAR:-default}` does.
struct Env {
    connect: String,
    status_path: String,
    ping_path: String,
    ping_response: String,
    posixly_correct: bool,
}

impl Env {
    fn from_process() -> Env {
        let var = |name: &str, default: &str| {
            std::env::var(name)
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        Env {
            connect: var("FCGI_CONNECT", "localhost:9000"),
            status_path: var("FCGI_STATUS_PATH", "/status"),
            ping_path: var("FCGI_PING_PATH", "/ping"),
            ping_response: var("FCGI_PING_RESPONSE", "pong"),
            posixly_correct: std::env::var_os("POSIXLY_CORRECT").is_some(),
        }
    }
}

/// Runs the check with the process's arguments and environment; returns the exit code.
pub fn main(args: &[OsString]) -> u8 {
    let args: Vec<String> = args
        .iter()
        .skip(1)
        .map(|arg| arg.to_string_lossy().into_owned())
        .collect();
    let env = Env::from_process();
    let plan = match parse(&args, env.posixly_correct) {
        Ok(given) => plan(&given),
        Err(errors) => {
            for error in errors {
                errln!("{NAME}: {error}");
            }
            errln!("Invalid options, terminating.");
            return code::USAGE;
        }
    };
    match plan {
        Ok(plan) => check(&plan, &env),
        Err(message) => {
            errln!("{message}");
            code::USAGE
        }
    }
}

/// One option as getopt hands it to the script: long options by their full name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Given {
    Verbose,
    Ping,
    /// `--NAME` and its value, as given.
    Value(&'static str, String),
}

/// GNU getopt's reading of the arguments (`-o v --long verbose,timeout:,ping,METRIC:,…`): options
/// anywhere among positional arguments (which are ignored) unless POSIXLY_CORRECT is set, `--` ends
/// them, unambiguous abbreviations of long options, `--NAME=VALUE` and `--NAME VALUE`, clusters of
/// `-v`. Every problem is reported, as getopt does, without the `PROGRAM: ` prefix.
fn parse(args: &[String], posixly_correct: bool) -> Result<Vec<Given>, Vec<String>> {
    let mut given = Vec::new();
    let mut errors = Vec::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if arg == "--" {
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, value) = match long.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (long, None),
            };
            let (name, takes_value) = match lookup(name) {
                Ok(found) => found,
                Err(possible) if possible.is_empty() => {
                    errors.push(format!("unrecognized option '{arg}'"));
                    continue;
                }
                Err(possible) => {
                    let list: Vec<String> = possible.iter().map(|n| format!("'--{n}'")).collect();
                    errors.push(format!(
                        "option '{arg}' is ambiguous; possibilities: {}",
                        list.join(" ")
                    ));
                    continue;
                }
            };
            match (takes_value, value) {
                (false, None) if name == "verbose" => given.push(Given::Verbose),
                (false, None) => given.push(Given::Ping),
                (false, Some(_)) => {
                    errors.push(format!("option '--{name}' doesn't allow an argument"));
                }
                (true, Some(value)) => given.push(Given::Value(name, value.to_owned())),
                // getopt takes the next argument as the value, whatever it looks like.
                (true, None) => match rest.next() {
                    Some(value) => given.push(Given::Value(name, value.clone())),
                    None => errors.push(format!("option '--{name}' requires an argument")),
                },
            }
        } else if let Some(shorts) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
            for short in shorts.chars() {
                if short == 'v' {
                    given.push(Given::Verbose);
                } else {
                    errors.push(format!("invalid option -- '{short}'"));
                }
            }
        } else if posixly_correct {
            break;
        }
    }
    if errors.is_empty() {
        Ok(given)
    } else {
        Err(errors)
    }
}

/// The long option `name` stands for: an exact name, or the only one it abbreviates. Otherwise the
/// names it could stand for (none: unrecognized).
fn lookup(name: &str) -> Result<(&'static str, bool), Vec<&'static str>> {
    if let Some(&found) = LONG.iter().find(|(long, _)| *long == name) {
        return Ok(found);
    }
    let matching: Vec<_> = LONG
        .iter()
        .filter(|(long, _)| long.starts_with(name))
        .collect();
    match matching[..] {
        [&found] => Ok(found),
        _ => Err(matching.iter().map(|(long, _)| *long).collect()),
    }
}

/// What to check, from the options.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Plan {
    verbose: bool,
    ping: bool,
    timeout: u64,
    /// The status page's name of each metric (`accepted conn`), its limit, and the limit as given.
    metrics: Vec<(String, i64, String)>,
}

/// Checks the values in the order given, as the original does; the first bad one is the message.
fn plan(given: &[Given]) -> Result<Plan, String> {
    let mut plan = Plan {
        verbose: false,
        ping: false,
        timeout: DEFAULT_TIMEOUT,
        metrics: Vec::new(),
    };
    let mut first_metric = None;
    for option in given {
        match option {
            Given::Verbose => plan.verbose = true,
            Given::Ping => plan.ping = true,
            Given::Value(name, value) => {
                let Some(number) = integer(value) else {
                    return Err(format!(
                        "'--{name}' option value must be an integer, '{value}' given"
                    ));
                };
                if *name == "timeout" {
                    plan.timeout = u64::try_from(number)
                        .ok()
                        .filter(|n| (1..=MAX_TIMEOUT).contains(n))
                        .ok_or_else(|| {
                            format!(
                                "'--timeout' option value must be a number of seconds from 1 to {MAX_TIMEOUT}, '{value}' given"
                            )
                        })?;
                } else {
                    first_metric.get_or_insert(*name);
                    plan.metrics
                        .push((name.replace('-', " "), number, value.clone()));
                }
            }
        }
    }
    if let (true, Some(metric)) = (plan.ping, first_metric) {
        return Err(format!(
            "'--ping' checks the ping page, which has no metrics: drop '--{metric}' or '--ping'"
        ));
    }
    Ok(plan)
}

/// An integer as `test N -eq N` in dash takes it: decimal, optional sign, blanks around, 64 bits.
fn integer(text: &str) -> Option<i64> {
    text.trim_matches(|c: char| c.is_ascii_whitespace() || c == '\x0b')
        .parse()
        .ok()
}

/// `FCGI_CONNECT` as cgi-fcgi reads it: `HOST:PORT` (an empty host is localhost; `[v6]:PORT` too),
/// anything else a socket path, relative to the current directory or absolute.
fn address(connect: &str) -> Address {
    let (host, port) = split_host_port(connect);
    match port.and_then(|port| port.parse::<u16>().ok()) {
        Some(port) if port > 0 => Address::Tcp {
            host: if host.is_empty() { "localhost" } else { host }.to_owned(),
            port,
        },
        _ => Address::Unix(PathBuf::from(connect)),
    }
}

/// Asks php-fpm and judges the answer; prints what the original printed; returns the exit code.
fn check(plan: &Plan, env: &Env) -> u8 {
    let (path, page) = if plan.ping {
        (env.ping_path.as_str(), "ping")
    } else {
        (env.status_path.as_str(), "status")
    };
    let via = format!("{}{path}", env.connect);
    if plan.verbose {
        outln!("Trying to connect to php-fpm via: {via}");
    }
    let timeout = Duration::from_secs(plan.timeout);
    let deadline = Instant::now() + timeout;
    // The client keeps to the deadline within a millisecond; this backstop covers what it cannot
    // bound (a host name lookup that hangs).
    let seconds = plan.timeout;
    let via_message = escape::field(&via);
    let backstop = Watchdog::new(move || {
        errln!("{NAME}: php-fpm did not answer via {via_message} within {seconds} s");
        std::process::exit(i32::from(code::TIMEOUT));
    });
    backstop.arm(deadline + Duration::from_millis(200));
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let script = Script {
        path: path.to_owned(),
        query: query.to_owned(),
    };
    let answer = exchange(&address(&env.connect), Some(&script), deadline);
    backstop.disarm();
    let (status, body) = match answer {
        Ok(crate::probe::Exchanged {
            distrust: Some(distrust),
            ..
        }) => {
            // Another user's listener where php-fpm should be (#18): its answer is not php-fpm's.
            errln!("{NAME}: {}", escape::field(&distrust));
            return code::CONNECT;
        }
        Ok(crate::probe::Exchanged {
            status,
            body,
            listener,
            ..
        }) => {
            // A program a worker started, answering on the socket it inherited after php-fpm died
            // or stopped, is not php-fpm (#21).
            if let (Some(pid), Address::Unix(path)) = (listener, address(&env.connect))
                && let Some(why) = crate::fpm::opener_not_running(pid, &path)
            {
                errln!("{NAME}: {}", escape::field(&why));
                return code::CONNECT;
            }
            (status, body)
        }
        Err(err) => return failed(&err, page, &env.connect, &via, seconds),
    };
    let text = String::from_utf8_lossy(&body);
    // `$(cgi-fcgi …)` drops the trailing newlines.
    let text = text.trim_end_matches(['\n', '\r']);
    if plan.verbose {
        outln!("php-fpm {page} output:");
        outln!("{}", escape::printable(text, &['\n', '\t']));
    }
    let unreachable = |reason: String| {
        errln!("php-fpm {page} page non reachable");
        errln!("{NAME}: {reason}");
        code::PAGE
    };
    if status != 200 {
        return unreachable(format!("php-fpm answered {status}: {}", first_line(text)));
    }
    if plan.ping {
        let said = text.trim();
        if said != env.ping_response {
            return unreachable(format!(
                "the page says '{}', not '{}'",
                first_line(said),
                escape::field(&env.ping_response)
            ));
        }
        return code::HEALTHY;
    }
    if text.trim().is_empty() {
        return unreachable("the page is empty".to_owned());
    }
    if !status::is_text_page(text) {
        return unreachable(format!("not a php-fpm status page: {}", first_line(text)));
    }
    metrics(plan, text)
}

/// Checks each metric in the order given; the first one over its limit or missing ends the check.
fn metrics(plan: &Plan, page: &str) -> u8 {
    for (name, limit, given) in &plan.metrics {
        let Some(actual) = status::text_value(page, name) else {
            errln!("'{name}' is not on the status page");
            return code::METRIC;
        };
        let actual_text = escape::field(actual);
        if plan.verbose {
            outln!("'{name}' value '{actual_text}' and expected is less than '{given}'");
        }
        let Some(value) = integer(actual) else {
            errln!("'{name}' value '{actual_text}' on the status page is not a number");
            return code::METRIC;
        };
        if value > *limit {
            errln!("'{name}' value '{actual_text}' is greater than expected '{given}'");
            return code::METRIC;
        }
    }
    code::HEALTHY
}

/// The message and exit code of an exchange that got no answer.
fn failed(err: &fastcgi::Error, page: &str, connect: &str, via: &str, seconds: u64) -> u8 {
    let via = escape::field(via);
    match err {
        fastcgi::Error::Timeout => {
            errln!("{NAME}: php-fpm did not answer via {via} within {seconds} s");
            code::TIMEOUT
        }
        fastcgi::Error::Refused(detail) => {
            let connect = escape::field(connect);
            errln!("{NAME}: cannot connect to php-fpm via {connect}: {detail}");
            if detail == fastcgi::NO_SOCKET {
                code::NO_SOCKET
            } else {
                code::REFUSED
            }
        }
        fastcgi::Error::Dns(detail) | fastcgi::Error::Io(detail) => {
            errln!(
                "{NAME}: no answer from php-fpm via {via}: {}",
                escape::field(detail)
            );
            code::CONNECT
        }
        fastcgi::Error::Protocol(_) => {
            errln!("php-fpm {page} page non reachable");
            errln!("{NAME}: {}", escape::field(&err.to_string()));
            code::PAGE
        }
    }
}

/// The first line of what php-fpm said, safe to print and short.
fn first_line(text: &str) -> String {
    escape::field(&escape::cut(text.lines().next().unwrap_or_default(), 100))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| (*w).to_owned()).collect()
    }

    fn value(name: &'static str, v: &str) -> Given {
        Given::Value(name, v.to_owned())
    }

    /// Each case was run through util-linux 2.38 `getopt -o v --long verbose,timeout:,ping,… -n NAME`.
    #[test]
    fn reads_arguments_as_gnu_getopt() {
        let ok = |words: &[&str]| parse(&args(words), false).unwrap();
        assert_eq!(ok(&["--verb"]), [Given::Verbose]);
        assert_eq!(
            ok(&["--listen-queue=3", "--listen-queue-l", "4"]),
            [value("listen-queue", "3"), value("listen-queue-len", "4")]
        );
        assert_eq!(
            ok(&["a", "-vv", "b", "--acc", "5", "--", "--x"]),
            [Given::Verbose, Given::Verbose, value("accepted-conn", "5")]
        );
        assert_eq!(
            ok(&["--timeout", "--verbose"]),
            [value("timeout", "--verbose")]
        );
        assert_eq!(
            ok(&["--ti=", "-", "--p"]),
            [value("timeout", ""), Given::Ping]
        );
        assert_eq!(
            parse(&args(&["pos", "-v"]), true).unwrap(),
            [],
            "POSIXLY_CORRECT: options end at the first positional argument"
        );
        let errors = |words: &[&str]| parse(&args(words), false).unwrap_err();
        assert_eq!(
            errors(&["--ver", "--x", "-q", "--y=1", "--verb=1", "--slow-requests"]),
            [
                "unrecognized option '--x'",
                "invalid option -- 'q'",
                "unrecognized option '--y=1'",
                "option '--verbose' doesn't allow an argument",
                "option '--slow-requests' requires an argument",
            ]
        );
        assert_eq!(
            errors(&["--max=1", "--a=1"]),
            [
                "option '--max=1' is ambiguous; possibilities: '--max-listen-queue' '--max-active-processes' '--max-children-reached'",
                "option '--a=1' is ambiguous; possibilities: '--accepted-conn' '--active-processes'",
            ]
        );
        assert_eq!(
            errors(&["-verbose"]),
            ["e", "r", "b", "o", "s", "e"].map(|c| format!("invalid option -- '{c}'"))
        );
    }

    #[test]
    fn integers_as_dash_reads_them() {
        for (text, number) in [
            ("5", Some(5)),
            (" 5", Some(5)),
            ("5 ", Some(5)),
            ("\t7", Some(7)),
            ("+5", Some(5)),
            ("-5", Some(-5)),
            ("010", Some(10)),
            ("9223372036854775807", Some(i64::MAX)),
            ("99999999999999999999", None),
            ("0x10", None),
            ("1e3", None),
            ("", None),
            (" ", None),
            ("5x", None),
        ] {
            assert_eq!(integer(text), number, "{text:?}");
        }
    }

    #[test]
    fn values_are_checked_in_order() {
        let plan_of = |given: &[Given]| plan(given);
        assert_eq!(
            plan_of(&[value("timeout", "x"), value("slow-requests", "y")]).unwrap_err(),
            "'--timeout' option value must be an integer, 'x' given"
        );
        let plan = plan_of(&[
            value("slow-requests", " 3"),
            value("timeout", "2"),
            Given::Verbose,
        ])
        .unwrap();
        assert_eq!(
            (plan.verbose, plan.timeout, plan.metrics),
            (
                true,
                2,
                vec![("slow requests".to_owned(), 3, " 3".to_owned())]
            )
        );
        assert!(plan_of(&[value("timeout", "86401")]).is_err());
    }

    #[test]
    fn connect_as_cgi_fcgi_reads_it() {
        let tcp = |host: &str, port| Address::Tcp {
            host: host.into(),
            port,
        };
        assert_eq!(address("localhost:9000"), tcp("localhost", 9000));
        assert_eq!(address(":9001"), tcp("localhost", 9001));
        assert_eq!(address("[::1]:9000"), tcp("::1", 9000));
        assert_eq!(address("abc"), Address::Unix("abc".into()));
        assert_eq!(
            address("/run/php/php-fpm.sock"),
            Address::Unix("/run/php/php-fpm.sock".into())
        );
        assert_eq!(address("/run/a:b"), Address::Unix("/run/a:b".into()));
    }

    #[test]
    fn only_that_name_selects_it() {
        let called = |arg0: &str| called_as(&[OsString::from(arg0)]);
        assert!(called("php-fpm-healthcheck"));
        assert!(called("/usr/local/bin/php-fpm-healthcheck"));
        assert!(!called("/usr/sbin/php-relaunch"));
        assert!(!called("php-fpm-healthcheck.sh"));
        assert!(!called_as(&[]));
    }
}
