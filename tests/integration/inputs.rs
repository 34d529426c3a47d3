//! Bad input and unsafe paths: one clear line on stderr, exit 2, nothing probed, restarted or logged.

use std::fs;
use std::os::unix::fs::symlink;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Site, curl_status, field, stderr, stdout, wait_until};

/// A site whose php-fpm is down, so any run that got past validation would relaunch it.
fn broken_site() -> Site {
    let site = Site::start();
    site.fpm.stop();
    site
}

fn assert_refused(site: &Site, args: &[&str], says: &str) {
    let out = crate::common::php_relaunch().args(args).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert_eq!(stdout(&out), "", "{args:?}");
    assert_eq!(err.lines().count(), 1, "{args:?}: not one line: {err}");
    assert!(err.starts_with("php-relaunch: "), "{args:?}: {err}");
    assert!(err.contains(says), "{args:?}: expected {says:?} in {err}");
    assert!(site.fpm.pids().is_empty(), "{args:?}: php-fpm was started");
    assert!(!site.log.exists(), "{args:?}: the log was written");
}

#[test]
fn every_bad_input_is_refused_before_anything_happens() {
    let site = broken_site();
    let url = site.heartbeat();
    let log = site.log.display().to_string();
    let lock = site.lock.display().to_string();
    let state = site.state.display().to_string();
    let fpm = site.fpm.direct_args();
    let with = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        all.extend(["--log".into(), log.clone(), "--lock".into(), lock.clone()]);
        all.extend(["--state".into(), state.clone()]);
        all.extend(fpm.iter().cloned());
        all
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![], "<URL>"),
        (with(&[&url]), "<TIMEOUT>"),
        (
            with(&["127.0.0.1:8889/php-heartbeat.php", "5"]),
            "has no scheme",
        ),
        (
            with(&["http://bad host/php-heartbeat.php", "5"]),
            "bad host",
        ),
        (
            with(&["http://-bad-/php-heartbeat.php", "5"]),
            "bad host '-bad-'",
        ),
        (
            with(&[&url, "0"]),
            "TIMEOUT must be at least 0.001 seconds, got '0'",
        ),
        (
            with(&[&url, "-1"]),
            "TIMEOUT must be at least 0.001 seconds, got '-1'",
        ),
        (
            with(&[&url, "1e-10"]),
            "TIMEOUT must be at least 0.001 seconds, got '1e-10'",
        ),
        (
            with(&[&url, "soon"]),
            "TIMEOUT must be a number of seconds, got 'soon'",
        ),
        (
            with(&[&url, "5", "ops@example.com,not an address"]),
            "EMAILS: 'not an address' is not a valid e-mail address",
        ),
        (
            with(&[&url, "5", "", "2"]),
            "PHP_CGI must be 0 or 1, got '2'",
        ),
        (
            with(&[&url, "5", "--bogus"]),
            "unexpected argument '--bogus'",
        ),
        (
            with(&[&url, "5", "--relaunch-on", "200"]),
            "--relaunch-on takes HTTP statuses from 400 to 599, got '200'",
        ),
        (
            with(&[&url, "5", "--every", "60"]),
            "--every must be under 60 seconds",
        ),
        (
            with(&[&url, "5", "--smtp", "smtps://mail.example.com"]),
            "--smtp 'smtps://mail.example.com' must be smtp://HOST[:PORT]",
        ),
        (
            with(&[&url, "5", "--from", "nobody"]),
            "--from: 'nobody' is not a valid e-mail address",
        ),
        (
            vec![
                url.clone(),
                "5".into(),
                "--service".into(),
                "no-such-fpm".into(),
                "--log".into(),
                log.clone(),
            ],
            "service 'no-such-fpm' not found",
        ),
    ];
    for (args, says) in &cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        assert_refused(&site, &args, says);
    }
    assert_eq!(curl_status(&url), "502", "php-fpm must still be down");
}

#[test]
fn a_symlinked_log_or_lock_is_refused_and_its_target_untouched() {
    let site = broken_site();
    let target = site.dir.path().join("precious");
    fs::write(&target, "keep me\n").unwrap();
    let link = site.dir.path().join("link");
    symlink(&target, &link).unwrap();

    for (option, log, lock) in [("--log", &link, &site.lock), ("--lock", &site.log, &link)] {
        let out = crate::common::php_relaunch()
            .args([&site.heartbeat(), "5"])
            .args(site.fpm.direct_args())
            .arg("--log")
            .arg(log)
            .arg("--lock")
            .arg(lock)
            .arg("--state")
            .arg(&site.state)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{option}: {}", stderr(&out));
        let what = option.trim_start_matches("--");
        assert_eq!(
            stderr(&out),
            format!(
                "php-relaunch: refusing {what} '{}': it is a symbolic link\n",
                link.display()
            )
        );
        assert_eq!(fs::read_to_string(&target).unwrap(), "keep me\n");
        assert!(site.fpm.pids().is_empty(), "{option}: php-fpm was started");
    }
}

#[test]
fn a_log_owned_by_another_user_is_refused() {
    let site = broken_site();
    fs::write(&site.log, "").unwrap();
    rustix::fs::chown(&site.log, Some(rustix::fs::Uid::from_raw(65534)), None).unwrap();

    let out = site.run(&site.heartbeat(), "5", &[]);

    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("owned by uid 65534"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::metadata(&site.log).unwrap().len(), 0);
    assert!(site.fpm.pids().is_empty());
}

#[test]
fn a_held_lock_sends_the_run_away_saying_so() {
    let site = broken_site();
    let holder = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&site.lock)
        .unwrap();
    holder.try_lock().unwrap();

    let out = site.run(&site.heartbeat(), "5", &[]);

    assert_eq!(out.status.code(), Some(5));
    assert_eq!(stdout(&out), "");
    // One line that says so (a holder that wrote nothing about itself is not named).
    assert_eq!(
        stderr(&out),
        format!(
            "php-relaunch: another run holds the lock '{}'\n",
            site.lock.display()
        )
    );
    assert!(site.fpm.pids().is_empty(), "ran despite the lock");
    assert!(site.log_lines().is_empty());
}

#[test]
fn help_documents_the_options_and_exit_codes() {
    let out = crate::common::php_relaunch()
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = stdout(&out);
    for needle in [
        "--log <PATH>",
        "--lock <PATH>",
        "--service <NAME>",
        "--smtp <URL>",
        "--from <ADDRESS>",
        "--dry-run",
        "--relaunch-on <CODES>",
        "--every <SECONDS>",
        "--fpm-bin <PATH>",
        "--fpm-config <CONF>",
        "--pid-file <PATH>",
        "[default: /var/log/php-relaunch.log]",
        "[default: one per php-fpm master, under /run/php-relaunch/]",
        "[default: 502,504]",
        "5  another run holds the lock",
        "Usage: php-relaunch [OPTIONS] <URL> <TIMEOUT> [EMAILS] [PHP_CGI]",
        "       php-relaunch <COMMAND>",
    ] {
        assert!(help.contains(needle), "--help lacks {needle:?}");
    }
    for (command, about) in [
        ("check", "Health check for Docker HEALTHCHECK"),
        ("reset", "Restore a spent restart budget"),
        ("pools", "Redundant pool replicas"),
        ("hook", "Relaunch on the first 502 nginx serves"),
        ("idle-stop", "Stop an on-demand (socket-activated) pool"),
    ] {
        let listed = help.lines().any(|line| {
            let rest = line.trim_start().strip_prefix(command);
            rest.is_some_and(|rest| rest.starts_with(' ') && rest.trim_start().starts_with(about))
        });
        assert!(listed, "--help does not list {command}: {help}");
    }
}

#[test]
fn php_cgi_fallback_is_killed_on_relaunch() {
    let site = broken_site();
    let port = crate::common::free_port();
    let mut cgi = Command::new("/usr/bin/php-cgi8.2")
        .args(["-b", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let cgi_pid = cgi.id();
    wait_until("php-cgi to listen", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });

    let out = site.run(&site.heartbeat(), "5", &["", "1"]);

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = &site.log_lines()[0];
    assert_eq!(field(line, "action"), Some("start+cgi-kill"), "{line}");
    let status = cgi.wait().unwrap();
    assert!(
        status.code().is_none(),
        "php-cgi {cgi_pid} was not killed: {status}"
    );
    assert!(site.heartbeat_ok());
}
