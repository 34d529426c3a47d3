//! Never worse (#19, item 18): a mail never holds up the watchdog. The run hands its mail over
//! after letting go of the lock, so the next run checks php-fpm while the mail server dawdles; the
//! mail's outcome still reaches the run's line and the state.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::common::{Site, Smtp, field};

/// php-fpm is stopped; the first run relaunches it and its mail hangs on a server that accepts and
/// never answers. While it hangs, php-fpm is stopped again: a second run is not turned away (before
/// #19 it exited 5, "another run holds the lock"), checks, and finds it down (inside the recovery
/// window, so it holds back). The first run's line says `mail=failed mail_error=…`; the next run of
/// the incident sends the mail, once.
#[test]
fn a_run_checks_while_the_previous_runs_mail_hangs() {
    let site = Site::start();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let args = ["ops@example.com", "--smtp", smtp_url.as_str()];
    site.fpm.stop();
    let mut first = site.command(&site.heartbeat(), "2", &args).spawn().unwrap();
    // The first run is handing its mail over once it connects; the connection is held unanswered.
    let (held, _) = silent.accept().unwrap();
    assert!(site.heartbeat_ok(), "the first run relaunched php-fpm");
    site.fpm.stop();
    let second = site.run(&site.heartbeat(), "2", &args);
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run's mail was still hanging during the second run"
    );
    assert_ne!(second.status.code(), Some(5), "{second:?}");
    let lines = site.log_lines();
    assert_eq!(lines.len(), 1, "the second run's line: {lines:#?}");
    assert_eq!(field(&lines[0], "state"), Some("cooldown"), "{lines:#?}");
    let status = first.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(3),
        "relaunched: {:#?}",
        site.log_lines()
    );
    drop(held);
    let lines = site.log_lines();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let line = &lines[1];
    assert!(
        field(line, "action").is_some_and(|a| a.contains("start")),
        "{line}"
    );
    assert_eq!(field(line, "state"), Some("healthy"), "{line}");
    assert_eq!(field(line, "mail"), Some("failed"), "{line}");
    assert!(line.contains(" mail_error=\""), "{line}");

    // php-fpm is back and the mail server is up: the next run tells the incident's end, once.
    site.fpm.start();
    // The mail server is up now: the next run tells the incident's end, once.
    drop(silent);
    let smtp = Smtp::start_on(site.dir.path(), port);
    site.run(&site.heartbeat(), "2", &args);
    let lines = site.log_lines();
    let line = lines.last().unwrap();
    assert_eq!(field(line, "state"), Some("recovered"), "{lines:#?}");
    assert_eq!(field(line, "mail"), Some("sent"), "{lines:#?}");
    site.run(&site.heartbeat(), "2", &args);
    assert_eq!(smtp.messages().len(), 1, "{:#?}", site.log_lines());
}

/// A mail server that answers slowly (it holds back its reply to the message until told): nginx
/// is down, the first run's alert is on its way, a second run of the same incident checks (before
/// #19 it was turned away with exit 5) and does not send the alert again; the first run's mail
/// goes, is on its line as sent and booked, so a third run sends nothing either.
#[test]
fn a_mail_on_its_way_is_sent_once() {
    let site = Site::start();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp_url = format!("smtp://{}", listener.local_addr().unwrap());
    let args = ["ops@example.com", "--smtp", smtp_url.as_str()];
    let (go_on, wait) = mpsc::channel::<()>();
    let (data_seen, data) = mpsc::channel::<()>();
    let server = thread::spawn(move || slow_smtp(&listener, &wait, &data_seen));
    site.nginx.stop();
    let mut first = site.command(&site.heartbeat(), "2", &args).spawn().unwrap();
    data.recv_timeout(Duration::from_mins(1))
        .expect("the first run's message");
    let second = site.run(&site.heartbeat(), "2", &args);
    assert!(
        first.try_wait().unwrap().is_none(),
        "the first run's mail was still on its way during the second run"
    );
    go_on.send(()).unwrap();
    first.wait().unwrap();
    assert_ne!(second.status.code(), Some(5), "{second:?}");
    let third = site.run(&site.heartbeat(), "2", &args);
    assert_ne!(third.status.code(), Some(5), "{third:?}");
    drop(go_on);
    let messages = server.join().unwrap();
    let lines = site.log_lines();
    assert_eq!(lines.len(), 3, "{lines:#?}");
    for line in &lines {
        assert_eq!(field(line, "state"), Some("web-server-down"), "{line}");
    }
    let sent = lines
        .iter()
        .filter(|l| field(l, "mail") == Some("sent"))
        .count();
    assert_eq!(sent, 1, "{lines:#?}");
    assert_eq!(messages, 1, "{lines:#?}");
    // The first run's line is the one that says so, whatever order the lines were written in.
    let first_line = lines
        .iter()
        .find(|l| field(l, "mail") == Some("sent"))
        .unwrap();
    assert!(!first_line.contains("mail_error="), "{first_line}");
}

/// Serves SMTP to each connection in turn until `wait` is closed; the first message's final reply
/// is held back until `wait` says go on (so its sender is mid-mail), and `data_seen` told it came.
/// Returns how many messages were accepted.
fn slow_smtp(
    listener: &TcpListener,
    wait: &mpsc::Receiver<()>,
    data_seen: &mpsc::Sender<()>,
) -> u32 {
    listener.set_nonblocking(true).unwrap();
    let mut messages = 0;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false).unwrap();
                if converse(stream, messages == 0, wait, data_seen) {
                    messages += 1;
                }
            }
            Err(_) => {
                if let Err(mpsc::RecvTimeoutError::Disconnected) =
                    wait.recv_timeout(Duration::from_millis(50))
                {
                    return messages;
                }
            }
        }
    }
}

/// One SMTP conversation; whether a message was accepted.
fn converse(
    mut stream: TcpStream,
    hold: bool,
    wait: &mpsc::Receiver<()>,
    data_seen: &mpsc::Sender<()>,
) -> bool {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let _ = stream.write_all(b"220 slow ESMTP\r\n");
    let mut accepted = false;
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return accepted;
        }
        let verb = line.get(..4).unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" | "HELO" => b"250 slow\r\n",
            "DATA" => {
                let _ = stream.write_all(b"354 go on\r\n");
                loop {
                    line.clear();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return accepted;
                    }
                    if line == ".\r\n" {
                        break;
                    }
                }
                if hold {
                    let _ = data_seen.send(());
                    let _ = wait.recv_timeout(Duration::from_secs(4));
                }
                accepted = true;
                b"250 queued\r\n"
            }
            "QUIT" => {
                let _ = stream.write_all(b"221 bye\r\n");
                return accepted;
            }
            _ => b"250 ok\r\n",
        };
        let _ = stream.write_all(reply);
    }
}
