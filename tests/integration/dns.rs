//! Name resolution is inside the probe's deadline, and a lookup that fails or hangs is `dns` (#19):
//! a resolver outage is never a reason to restart php-fpm. The hanging resolver is a UDP socket of
//! the test's that reads queries and never answers, named in a resolv.conf bind-mounted over
//! /etc/resolv.conf in a mount namespace of the run's own (the host's file is never touched).

use std::fs;
use std::net::UdpSocket;
use std::process::Command;

use crate::common::{Site, field, stderr};

/// The run's log line.
fn only_line(site: &Site) -> String {
    let lines = site.log_lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    lines[0].clone()
}

#[test]
fn a_fastcgi_host_that_does_not_resolve_is_dns_and_restarts_nothing() {
    let site = Site::start();
    let master = site.fpm.master().unwrap();
    let out = site.run("fcgi://php-relaunch-test.invalid:9000/ping", "2", &[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let line = only_line(&site);
    assert_eq!(field(&line, "verdict"), Some("dns"), "{line}");
    assert_eq!(field(&line, "action"), Some("none"), "{line}");
    assert_eq!(site.fpm.master(), Some(master));

    let out = crate::common::php_relaunch()
        .args(["check", "fcgi://php-relaunch-test.invalid:9000/ping", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let said = crate::common::stdout(&out);
    assert!(
        said.starts_with("unhealthy: fcgi://php-relaunch-test.invalid:9000/ping: cannot resolve: 'php-relaunch-test.invalid': "),
        "{said}"
    );
}

#[test]
fn a_resolver_that_never_answers_is_dns_within_the_deadline_and_restarts_nothing() {
    let site = Site::start();
    let master = site.fpm.master().unwrap();
    // A resolver that reads every query and answers none.
    let resolver = UdpSocket::bind("127.0.0.77:53").unwrap();
    let resolv_conf = site.dir.path().join("resolv.conf");
    fs::write(
        &resolv_conf,
        "nameserver 127.0.0.77\noptions timeout:30 attempts:1\n",
    )
    .unwrap();
    let port = site
        .heartbeat()
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned();
    for (url, target_kind) in [
        (
            format!("http://heartbeat.php-relaunch.test:{port}/php-heartbeat.php"),
            "http",
        ),
        (
            "fcgi://php-fpm.php-relaunch.test:9000/ping".to_owned(),
            "fcgi",
        ),
    ] {
        let run = site.command(&url, "1", &[]);
        // unshare -m: a private mount namespace, where the bind mount is seen by the run alone.
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "/bin/sh", "-c"])
            .arg("mount --bind \"$1\" /etc/resolv.conf && shift && exec \"$@\"")
            .arg("sh")
            .arg(&resolv_conf)
            .arg(run.get_program())
            .args(run.get_args())
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(4),
            "{target_kind}: {}",
            stderr(&out)
        );
        let lines = site.log_lines();
        let line = lines.last().unwrap();
        assert_eq!(field(line, "verdict"), Some("dns"), "{target_kind}: {line}");
        assert_eq!(field(line, "action"), Some("none"), "{target_kind}: {line}");
        assert!(line.contains("did not answer"), "{target_kind}: {line}");
        assert_eq!(
            site.fpm.master(),
            Some(master),
            "{target_kind}: php-fpm untouched"
        );
    }
    // The queries did reach the silent resolver: it is what was waited for.
    resolver.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    assert!(
        resolver.recv_from(&mut buf).is_ok(),
        "no query reached the resolver"
    );
}
