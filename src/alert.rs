//! The alert mail: one message to all recipients, through the local sendmail or an SMTP server.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::transport::smtp::client::SmtpConnection;
use lettre::transport::smtp::extension::ClientId;
use lettre::{Address, Message};

use crate::escape;
use crate::journal;
use crate::probe::resolve::resolve;
use crate::report::{Action, Report, RunState};
use crate::spawn;

/// How long handing a mail over may take, so a dead or hung mail server never holds a run for long:
/// past it the mail is given up (`mail=failed mail_error=…`) and tried again on the next run (#19).
const SEND_DEADLINE: Duration = Duration::from_secs(5);

/// How alert mail is sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transport {
    /// The local `sendmail` program.
    Sendmail,
    /// Plain SMTP (no TLS) to this server.
    Smtp {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
    },
}

/// A composed alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// The subject line.
    pub subject: String,
    /// The plain-text body.
    pub body: String,
}

/// The subject names the host and what happened; the body carries the log line's facts, the php-fpm
/// processes as they were before the relaunch, and the evidence. Escaped here, once (#18): the
/// subject is one bounded line, the body keeps its own line breaks and tabs and nothing else raw, and
/// the error (a reply's or a server's words) stays on its line.
pub fn compose(host: &str, report: &Report) -> Alert {
    let verdict = report.verdict();
    let what = match (report.state, &report.action) {
        (_, Action::GaveUp) => format!("giving up: restart budget spent ({verdict})"),
        (RunState::Relaunched, Action::KillStuck) => {
            format!("stuck php-fpm workers killed ({verdict})")
        }
        (RunState::Healthy, Action::BudgetRestored) => "restart budget restored".to_owned(),
        (RunState::Healthy, _) => format!("heartbeat healthy ({verdict})"),
        (RunState::Relaunched, _) => format!("php-fpm relaunched after {verdict}"),
        (RunState::Recovered, _) => "heartbeat healthy again".to_owned(),
        (RunState::Saturated, _) => format!("php-fpm saturated, not relaunched ({verdict})"),
        (RunState::ConfigError, _) => {
            format!("php-fpm config test failed, not relaunched ({verdict})")
        }
        (RunState::Down, Action::Would(_) | Action::WouldReplicas(_)) => {
            format!("php-fpm needs a relaunch ({verdict})")
        }
        (RunState::Down, _) => format!("php-fpm still down after relaunch ({verdict})"),
        (RunState::WebServerDown, _) => format!("web server unreachable ({verdict})"),
        (RunState::WebServerHung, _) => {
            format!("web server hung, php-fpm answers ({verdict}): php-fpm left alone")
        }
        _ => format!("heartbeat answered {verdict}"),
    };
    let mut body = String::new();
    let pid = |p: Option<u32>| p.map_or_else(|| "-".to_owned(), |p| p.to_string());
    let _ = writeln!(body, "Host:           {host}");
    let _ = writeln!(body, "Time:           {}", report.time.to_rfc3339());
    let _ = writeln!(body, "URL:            {}", report.target);
    let _ = writeln!(
        body,
        "Verdict:        {verdict} after {:.3}s",
        report.latency.as_secs_f64()
    );
    let _ = writeln!(body, "Action:         {}", report.action);
    let _ = writeln!(body, "Old master pid: {}", pid(report.old_pid));
    let _ = writeln!(body, "New master pid: {}", pid(report.new_pid));
    if let Some(took) = report.took {
        let _ = writeln!(body, "Relaunch took:  {:.3}s", took.as_secs_f64());
    }
    let _ = writeln!(body, "Final state:    {}", report.state);
    if let Some(error) = &report.error {
        let _ = writeln!(body, "Error:          {}", escape::field(error));
    }
    if !report.processes.is_empty() {
        let _ = writeln!(body, "\nphp-fpm processes before the relaunch:");
        let _ = writeln!(
            body,
            "{:>7} {:>7} {:<10} {:>10} {:>11}  COMMAND",
            "PID", "PPID", "STATE", "CPU", "RSS"
        );
        for p in &report.processes {
            let _ = writeln!(body, "{p}");
        }
    }
    if let Some(evidence) = &report.evidence {
        let _ = writeln!(body, "\n{}", evidence.trim_end());
    }
    let _ = writeln!(body, "\nLog line:\n{}", journal::line(report).trim_end());
    Alert {
        subject: escape::field(&format!("php-relaunch on {host}: {what}")),
        body: escape::printable(&body, &['\n', '\t']),
    }
}

/// Sends `alert` from `from` to every recipient in one message.
pub fn send(transport: &Transport, from: &Address, to: &[Address], alert: &Alert) -> Result<()> {
    let mut builder = Message::builder()
        .from(Mailbox::new(Some("php-relaunch".to_owned()), from.clone()))
        .subject(&alert.subject)
        .header(ContentType::TEXT_PLAIN);
    for address in to {
        builder = builder.to(Mailbox::new(None, address.clone()));
    }
    let message = builder
        .body(alert.body.clone())
        .context("building the alert mail")?;
    match transport {
        Transport::Smtp { host, port } => {
            smtp(host, *port, &message, Instant::now() + SEND_DEADLINE)
                .with_context(|| format!("sending mail through smtp://{host}:{port}"))?;
        }
        Transport::Sendmail => {
            let sendmail = spawn::first_existing(&["/usr/sbin/sendmail", "/usr/lib/sendmail"])
                .ok_or_else(|| anyhow!("no sendmail program found; use --smtp"))?;
            let from = from.to_string();
            let rcpts: Vec<String> = to.iter().map(ToString::to_string).collect();
            let mut args = vec![
                OsStr::new("-i"),
                OsStr::new("-f"),
                OsStr::new(&from),
                OsStr::new("--"),
            ];
            args.extend(rcpts.iter().map(OsStr::new));
            spawn::run_ok(&sendmail, &args, Some(&message.formatted()), SEND_DEADLINE)?;
        }
    }
    Ok(())
}

/// Hands `message` to the SMTP server by `deadline`, all of it: the name lookup, the connection and
/// every command (lettre's own timeout is per read or write, so a server that answers slowly
/// could stretch a mail over many of them). Each step gets the time left, and none starts after it.
fn smtp(host: &str, port: u16, message: &Message, deadline: Instant) -> Result<()> {
    let left = || {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!(
                "the mail server did not take the mail within {}s",
                SEND_DEADLINE.as_secs()
            );
        }
        Ok(left)
    };
    let addrs = resolve(host, port, deadline).map_err(|err| anyhow!(err))?;
    let hello = ClientId::default();
    let mut connection =
        SmtpConnection::connect(&addrs[..], Some(left()?), &hello, None, None).map_err(said)?;
    connection.set_timeout(Some(left()?))?;
    connection
        .send(message.envelope(), &message.formatted())
        .map_err(said)?;
    if let Ok(left) = left()
        && connection.set_timeout(Some(left)).is_ok()
    {
        let _ = connection.quit();
    }
    Ok(())
}

/// lettre's error, with a timeout said as one (std's socket timeout reads "Resource temporarily
/// unavailable").
fn said(err: lettre::transport::smtp::Error) -> anyhow::Error {
    let timed_out = err.is_timeout()
        || std::error::Error::source(&err)
            .and_then(|e| e.downcast_ref::<std::io::Error>())
            .is_some_and(|e| e.kind() == std::io::ErrorKind::WouldBlock);
    if timed_out {
        anyhow!(
            "the mail server did not answer within {}s",
            SEND_DEADLINE.as_secs()
        )
    } else {
        anyhow::Error::new(err)
    }
}

/// `php-relaunch@HOSTNAME`, the default sender.
pub fn default_sender(host: &str) -> Result<Address> {
    format!("php-relaunch@{host}").parse().with_context(|| {
        format!("cannot make a sender address from host name '{host}'; use --from")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fpm::{Plan, Proc, Step};
    use crate::probe::Answer;
    use chrono::DateTime;

    fn report(state: RunState, action: Action) -> Report {
        let mut report = Report::new(
            DateTime::parse_from_rfc3339("2026-11-23T03:04:05+00:00").unwrap(),
            "http://127.0.0.1:8889/php-heartbeat.php".into(),
            Some(Answer::Timeout),
            Duration::from_secs(2),
        );
        report.state = state;
        report.action = action;
        report.old_pid = Some(100);
        report.new_pid = Some(200);
        report.took = Some(Duration::from_millis(1500));
        report
    }

    #[test]
    fn subjects_name_host_and_verdict() {
        use Step::{Kill, Restart, Start};
        let cases = [
            (
                RunState::Relaunched,
                Action::Relaunch(vec![Kill, Start]),
                "php-relaunch on web1: php-fpm relaunched after timeout",
            ),
            (
                RunState::Down,
                Action::Relaunch(vec![Restart, Kill, Start]),
                "php-relaunch on web1: php-fpm still down after relaunch (timeout)",
            ),
            (
                RunState::Down,
                Action::Would(Plan::Restart),
                "php-relaunch on web1: php-fpm needs a relaunch (timeout)",
            ),
            (
                RunState::Down,
                Action::GaveUp,
                "php-relaunch on web1: giving up: restart budget spent (timeout)",
            ),
            (
                RunState::Relaunched,
                Action::KillStuck,
                "php-relaunch on web1: stuck php-fpm workers killed (timeout)",
            ),
            (
                RunState::Recovered,
                Action::None,
                "php-relaunch on web1: heartbeat healthy again",
            ),
            (
                RunState::WebServerDown,
                Action::None,
                "php-relaunch on web1: web server unreachable (timeout)",
            ),
            (
                RunState::WebServerHung,
                Action::None,
                "php-relaunch on web1: web server hung, php-fpm answers (timeout): php-fpm left alone",
            ),
            (
                RunState::UnexpectedStatus,
                Action::None,
                "php-relaunch on web1: heartbeat answered timeout",
            ),
        ];
        for (state, action, subject) in cases {
            assert_eq!(compose("web1", &report(state, action)).subject, subject);
        }
    }

    #[test]
    fn body_carries_the_facts_and_processes() {
        let proc = Proc {
            pid: 100,
            ppid: Some(1),
            uid: Some(0),
            state: "Stopped".into(),
            stopped: true,
            gone: false,
            cpu: Duration::from_millis(1250),
            rss: 10 * 1024 * 1024,
            cmd: "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)".into(),
            exe: None,
        };
        let mut report = report(
            RunState::Relaunched,
            Action::Relaunch(vec![Step::Kill, Step::Start]),
        );
        report.processes = vec![proc];
        report.evidence = Some("Evidence file: /x".into());
        let body = compose("web1", &report).body;
        for fact in [
            "Action:         kill+start",
            "Old master pid: 100",
            "New master pid: 200",
            "Relaunch took:  1.500s",
            "Stopped",
            "1.25s",
            "10240 KiB",
            "php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)",
            "Evidence file: /x",
        ] {
            assert!(body.contains(fact), "missing {fact:?} in:\n{body}");
        }
    }
}
