//! Never worse (#19): the hook answers every event, even one held back by the window after a run.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;

use crate::common::{Site, field, wait_until};
use crate::trust_hook::{hook_lines, start_hook};

/// One event to the hook's socket, as nginx's access log sends it (root stands for nginx here).
fn send(socket: &Path, status: u16) {
    UnixDatagram::unbound()
        .unwrap()
        .send_to(
            format!("status={status} upstream=- uri=/").as_bytes(),
            socket,
        )
        .unwrap();
}

/// Item 12: a quiet site. A 502 starts a run (healthy), then php-fpm dies 3 s into the `--hold`
/// window and the one visitor's 502 arrives inside it. Before #19 that event waited for a later
/// one, which on a quiet site never comes: php-fpm stayed down. Now it is answered when the window
/// ends, by a run that relaunches php-fpm.
#[test]
fn a_php_fpm_that_dies_inside_the_window_is_relaunched_when_it_ends() {
    let site = Site::start();
    let (_hook, socket) = start_hook(&site, &["--hold", "5"], &site.heartbeat(), &[]);
    send(&socket, 502);
    wait_until("the first hook run's line", Duration::from_mins(1), || {
        !hook_lines(&site).is_empty()
    });
    assert_eq!(field(&hook_lines(&site)[0], "state"), Some("healthy"));
    let old = site.fpm.master().unwrap();
    site.fpm.stop();
    send(&socket, 502);
    wait_until(
        "the held event's run (it never came before #19)",
        Duration::from_mins(1),
        || hook_lines(&site).len() > 1,
    );
    let lines = hook_lines(&site);
    let line = &lines[1];
    assert!(
        field(line, "action").is_some_and(|a| a.contains("start")),
        "{line}"
    );
    assert_eq!(field(line, "state"), Some("healthy"), "{line}");
    assert_eq!(field(line, "events"), Some("1"), "{line}");
    assert!(site.fpm.master().is_some_and(|new| new != old), "{line}");
}

/// Item 12, a healthy php-fpm: a lone 504 inside the window gets its run and its line when the
/// window ends.
#[test]
fn a_lone_504_inside_the_window_gets_its_line() {
    let site = Site::start();
    let (_hook, socket) = start_hook(&site, &["--hold", "3"], &site.heartbeat(), &[]);
    send(&socket, 502);
    wait_until("the first hook run's line", Duration::from_mins(1), || {
        !hook_lines(&site).is_empty()
    });
    send(&socket, 504);
    wait_until(
        "the lone 504's line (it never came before #19)",
        Duration::from_mins(1),
        || hook_lines(&site).len() > 1,
    );
    let lines = hook_lines(&site);
    assert_eq!(lines.len(), 2, "{lines:#?}");
    assert_eq!(field(&lines[1], "state"), Some("healthy"), "{}", lines[1]);
    assert_eq!(field(&lines[1], "events"), Some("1"), "{}", lines[1]);
}

/// Items 5 and 16: php-fpm is stopped and the mail server refuses. The relaunch's mail fails; its
/// line says `mail=failed` with the reason in `mail_error=`, not in `error=`. Once the mail server
/// is up, the next run sends the incident's mail (its end), once.
/// Before #19 the failed mail was booked as sent and never tried again.
#[test]
fn a_failed_mail_is_sent_on_the_next_run_of_the_incident() {
    let site = Site::start();
    let port = crate::common::free_port();
    let smtp_url = format!("smtp://127.0.0.1:{port}");
    let args = ["ops@example.com", "--smtp", smtp_url.as_str()];
    site.fpm.stop();
    site.run(&site.heartbeat(), "2", &args);
    let lines = site.log_lines();
    let line = lines.last().unwrap();
    assert_eq!(field(line, "mail"), Some("failed"), "{line}");
    assert!(line.contains(" mail_error=\""), "{line}");
    assert!(
        !field(line, "error").is_some_and(|e| e.contains("mail")),
        "{line}"
    );

    // The next run finds php-fpm healthy: the incident's mail, which failed, goes now.
    let smtp = crate::common::Smtp::start_on(site.dir.path(), port);
    site.run(&site.heartbeat(), "2", &args);
    let lines = site.log_lines();
    let line = lines.last().unwrap();
    assert_eq!(field(line, "state"), Some("recovered"), "{line}");
    assert_eq!(field(line, "mail"), Some("sent"), "{line}");
    assert_eq!(smtp.messages().len(), 1, "{lines:#?}");
    site.run(&site.heartbeat(), "2", &args);
    assert_eq!(smtp.messages().len(), 1, "once: {:#?}", site.log_lines());
}

/// Item 16: a mail server that accepts and never answers. The mail is given up within its bound,
/// said on the line as `mail=failed mail_error=…`, and the run ends.
#[test]
fn a_mail_server_that_never_answers_is_given_up_on_the_line() {
    let site = Site::start();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let smtp_url = format!("smtp://{}", silent.local_addr().unwrap());
    site.fpm.stop();
    site.run(
        &site.heartbeat(),
        "2",
        &["ops@example.com", "--smtp", &smtp_url],
    );
    let lines = site.log_lines();
    let line = lines.last().unwrap();
    assert_eq!(field(line, "mail"), Some("failed"), "{line}");
    assert!(line.contains(" mail_error=\""), "{line}");
    assert_eq!(field(line, "state"), Some("healthy"), "{line}");
    assert!(
        !line.contains(" error="),
        "no php-fpm error on a healthy line: {line}"
    );
}
