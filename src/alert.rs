//! The alert mail: one message to all recipients, through the local sendmail or an SMTP server.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{Address, Message, SmtpTransport, Transport as _};

use crate::fpm::Proc;
use crate::journal::Entry;
use crate::spawn;

/// How long sending may take, so a dead mail server never holds the lock for long.
const SEND_DEADLINE: Duration = Duration::from_secs(15);

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

/// The subject names the host and what happened; the body carries the log line's facts and the
/// php-fpm processes as they were before the relaunch.
pub fn compose(host: &str, entry: &Entry, processes: &[Proc], evidence: Option<&str>) -> Alert {
    let verdict = &entry.verdict;
    let what = match entry.state {
        _ if entry.action == "gave-up" => format!("giving up: restart budget spent ({verdict})"),
        "healthy" if entry.action == "kill-stuck" => {
            format!("stuck php-fpm workers killed ({verdict})")
        }
        "healthy" if entry.action == "budget-restored" => "restart budget restored".to_owned(),
        "healthy" => format!("php-fpm relaunched after {verdict}"),
        "recovered" => "heartbeat healthy again".to_owned(),
        "saturated" => format!("php-fpm saturated, not relaunched ({verdict})"),
        "config-error" => format!("php-fpm config test failed, not relaunched ({verdict})"),
        "down" if entry.action.starts_with("would-") => {
            format!("php-fpm needs a relaunch ({verdict})")
        }
        "down" => format!("php-fpm still down after relaunch ({verdict})"),
        "web-server-down" => format!("web server unreachable ({verdict})"),
        _ => format!("heartbeat answered {verdict}"),
    };
    let mut body = String::new();
    let pid = |p: Option<u32>| p.map_or_else(|| "-".to_owned(), |p| p.to_string());
    let _ = writeln!(body, "Host:           {host}");
    let _ = writeln!(body, "Time:           {}", entry.time.to_rfc3339());
    let _ = writeln!(body, "URL:            {}", entry.url);
    let _ = writeln!(
        body,
        "Verdict:        {verdict} after {:.3}s",
        entry.latency.as_secs_f64()
    );
    let _ = writeln!(body, "Action:         {}", entry.action);
    let _ = writeln!(body, "Old master pid: {}", pid(entry.old_pid));
    let _ = writeln!(body, "New master pid: {}", pid(entry.new_pid));
    if let Some(took) = entry.took {
        let _ = writeln!(body, "Relaunch took:  {:.3}s", took.as_secs_f64());
    }
    let _ = writeln!(body, "Final state:    {}", entry.state);
    if let Some(error) = &entry.error {
        let _ = writeln!(body, "Error:          {error}");
    }
    if !processes.is_empty() {
        let _ = writeln!(body, "\nphp-fpm processes before the relaunch:");
        let _ = writeln!(
            body,
            "{:>7} {:>7} {:<10} {:>10} {:>11}  COMMAND",
            "PID", "PPID", "STATE", "CPU", "RSS"
        );
        for p in processes {
            let _ = writeln!(body, "{p}");
        }
    }
    if let Some(evidence) = evidence {
        let _ = writeln!(body, "\n{}", evidence.trim_end());
    }
    let _ = writeln!(body, "\nLog line:\n{}", entry.line().trim_end());
    Alert {
        subject: format!("php-relaunch on {host}: {what}"),
        body,
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
            SmtpTransport::builder_dangerous(host.as_str())
                .port(*port)
                .timeout(Some(SEND_DEADLINE))
                .build()
                .send(&message)
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

/// `php-relaunch@HOSTNAME`, the default sender.
pub fn default_sender(host: &str) -> Result<Address> {
    format!("php-relaunch@{host}").parse().with_context(|| {
        format!("cannot make a sender address from host name '{host}'; use --from")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;

    fn entry(state: &'static str, action: &str) -> Entry {
        Entry {
            time: DateTime::parse_from_rfc3339("2026-11-23T03:04:05+00:00").unwrap(),
            url: "http://127.0.0.1:8889/php-heartbeat.php".into(),
            verdict: "timeout".into(),
            latency: Duration::from_secs(2),
            action: action.into(),
            old_pid: Some(100),
            new_pid: Some(200),
            took: Some(Duration::from_millis(1500)),
            state,
            mail: "none",
            error: None,
        }
    }

    #[test]
    fn subjects_name_host_and_verdict() {
        let cases = [
            (
                "healthy",
                "kill+start",
                "php-relaunch on web1: php-fpm relaunched after timeout",
            ),
            (
                "down",
                "restart+kill+start",
                "php-relaunch on web1: php-fpm still down after relaunch (timeout)",
            ),
            (
                "down",
                "would-restart",
                "php-relaunch on web1: php-fpm needs a relaunch (timeout)",
            ),
            (
                "web-server-down",
                "none",
                "php-relaunch on web1: web server unreachable (timeout)",
            ),
            (
                "unexpected-status",
                "none",
                "php-relaunch on web1: heartbeat answered timeout",
            ),
        ];
        for (state, action, subject) in cases {
            assert_eq!(
                compose("web1", &entry(state, action), &[], None).subject,
                subject
            );
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
        let body = compose(
            "web1",
            &entry("healthy", "kill+start"),
            &[proc],
            Some("Evidence file: /x"),
        )
        .body;
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
