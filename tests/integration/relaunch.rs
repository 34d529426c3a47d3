//! The core scenarios against a private php-fpm behind a private nginx, both real.

use std::collections::BTreeSet;
use std::fs;
use std::process::Stdio;

use crate::common::{Site, Smtp, alive, curl_status, field, state, stderr, stdout};

#[test]
fn healthy_heartbeat_changes_nothing_and_says_nothing() {
    let site = Site::start();
    let master = site.fpm.master().unwrap();

    let out = site.run(&site.heartbeat(), "5", &["ops@example.com"]);

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "");
    assert_eq!(site.fpm.master(), Some(master));
    assert!(site.log_lines().is_empty(), "{:?}", site.log_lines());
}

#[test]
fn stopped_php_fpm_is_started() {
    let site = Site::start();
    let old_master = site.fpm.master().unwrap();
    site.fpm.stop();
    assert_eq!(curl_status(&site.heartbeat()), "502");

    let out = site.run(&site.heartbeat(), "5", &[]);

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let lines = site.log_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(field(line, "verdict"), Some("502"), "{line}");
    assert_eq!(field(line, "action"), Some("start"), "{line}");
    assert_eq!(field(line, "old_pid"), Some("-"), "{line}");
    assert_eq!(field(line, "state"), Some("healthy"), "{line}");
    let new_master = site.fpm.master().expect("a master runs again");
    assert_ne!(new_master, old_master);
    assert_eq!(
        field(line, "new_pid"),
        Some(new_master.to_string().as_str()),
        "{line}"
    );
    assert!(site.heartbeat_ok());
}

#[test]
fn hung_php_fpm_is_killed_and_started() {
    let site = Site::start();
    let old_master = site.fpm.master().unwrap();
    let frozen = site.fpm.pids();
    site.fpm.freeze();

    let out = site.run(&site.heartbeat(), "2", &[]);

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let lines = site.log_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    assert_eq!(field(line, "verdict"), Some("timeout"), "{line}");
    // A stopped master ignores QUIT and TERM: straight to SIGKILL, no waiting on a restart.
    assert_eq!(field(line, "action"), Some("kill+start"), "{line}");
    assert_eq!(
        field(line, "old_pid"),
        Some(old_master.to_string().as_str()),
        "{line}"
    );
    assert_eq!(field(line, "state"), Some("healthy"), "{line}");
    for pid in frozen {
        assert!(!alive(pid), "frozen php-fpm process {pid} survived");
    }
    for pid in site.fpm.pids() {
        assert_ne!(
            state(pid),
            Some('T'),
            "a stopped php-fpm process is left: {pid}"
        );
    }
    assert!(site.heartbeat_ok());
}

#[test]
fn nginx_down_leaves_php_fpm_alone() {
    let site = Site::start();
    let smtp = Smtp::start(site.dir.path());
    let master = site.fpm.master().unwrap();
    site.nginx.stop();

    let out = site.run(
        &site.heartbeat(),
        "2",
        &["ops@example.com", "--smtp", &smtp.url()],
    );

    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let lines = site.log_lines();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(field(&lines[0], "verdict"), Some("refused"), "{}", lines[0]);
    assert_eq!(field(&lines[0], "action"), Some("none"), "{}", lines[0]);
    assert_eq!(
        field(&lines[0], "state"),
        Some("web-server-down"),
        "{}",
        lines[0]
    );
    assert_eq!(field(&lines[0], "mail"), Some("sent"), "{}", lines[0]);
    assert_eq!(site.fpm.master(), Some(master));
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    assert!(
        messages[0].contains(": web server unreachable (refused)\n"),
        "{}",
        messages[0]
    );
}

#[test]
fn application_errors_alert_without_relaunch() {
    let site = Site::start();
    let master = site.fpm.master().unwrap();

    for (page, code) in [("error500.php", "500"), ("missing.php", "404")] {
        let out = site.run(&site.nginx.url(page), "2", &[]);
        assert_eq!(out.status.code(), Some(4), "{page}: {}", stderr(&out));
        let lines = site.log_lines();
        let line = lines.last().unwrap();
        assert_eq!(field(line, "verdict"), Some(code), "{line}");
        assert_eq!(field(line, "action"), Some("none"), "{line}");
        assert_eq!(field(line, "state"), Some("unexpected-status"), "{line}");
    }
    assert_eq!(site.log_lines().len(), 2);
    assert_eq!(site.fpm.master(), Some(master));
}

#[test]
fn twenty_simultaneous_runs_relaunch_once() {
    let site = Site::start();
    site.fpm.stop();

    let children: Vec<_> = (0..20)
        .map(|_| {
            site.command(&site.heartbeat(), "5", &[])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let codes: Vec<i32> = children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap().status.code().unwrap())
        .collect();

    let lines = site.log_lines();
    let relaunches = lines
        .iter()
        .filter(|l| field(l, "action") != Some("none"))
        .count();
    assert_eq!(relaunches, 1, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 3).count(), 1, "{codes:?}");
    // The others either found the lock taken (5) or came after the relaunch and found it healthy (0).
    assert!(codes.iter().all(|c| [0, 3, 5].contains(c)), "{codes:?}");
    assert!(site.heartbeat_ok());
}

#[test]
fn relaunched_php_fpm_does_not_inherit_the_lock_or_the_log() {
    let site = Site::start();
    site.fpm.stop();

    let out = site.run(&site.heartbeat(), "5", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    let ours: BTreeSet<_> = [&site.lock, &site.log]
        .iter()
        .map(|p| p.canonicalize().unwrap())
        .collect();
    let pids = site.fpm.pids();
    assert!(!pids.is_empty());
    for pid in pids {
        for fd in fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
            if let Ok(target) = fs::read_link(fd.path()) {
                assert!(
                    !ours.contains(&target),
                    "php-fpm {pid} holds {}",
                    target.display()
                );
            }
        }
    }
    // And the lock is free again: the next run is not turned away.
    let again = site.run(&site.heartbeat(), "5", &[]);
    assert_eq!(again.status.code(), Some(0), "{}", stderr(&again));
}

#[test]
fn mail_goes_to_both_recipients_with_the_facts() {
    let site = Site::start();
    let smtp = Smtp::start(site.dir.path());
    site.fpm.stop();

    let out = site.run(
        &site.heartbeat(),
        "5",
        &[
            "ops@example.com,me@example.com",
            "--smtp",
            &smtp.url(),
            "--from",
            "watchdog@example.com",
        ],
    );

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = &site.log_lines()[0];
    assert_eq!(field(line, "mail"), Some("sent"), "{line}");
    let new_master = site.fpm.master().unwrap().to_string();
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "one message to all recipients");
    let mail = &messages[0];
    for fact in [
        "X-MailFrom: watchdog@example.com",
        "X-RcptTo: ops@example.com, me@example.com",
        "Subject: php-relaunch on ",
        "php-fpm relaunched after 502",
        "Action:         start",
        &format!("New master pid: {new_master}"),
        "Final state:    healthy",
    ] {
        assert!(mail.contains(fact), "missing {fact:?} in:\n{mail}");
    }
}

#[test]
fn smtp_down_still_relaunches_and_logs_the_failure() {
    let site = Site::start();
    site.fpm.stop();
    let dead = format!("smtp://127.0.0.1:{}", crate::common::free_port());

    let out = site.run(
        &site.heartbeat(),
        "5",
        &["ops@example.com", "--smtp", &dead],
    );

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).starts_with("php-relaunch: mail: "),
        "{}",
        stderr(&out)
    );
    let line = &site.log_lines()[0];
    assert_eq!(field(line, "action"), Some("start"), "{line}");
    assert_eq!(field(line, "state"), Some("healthy"), "{line}");
    assert_eq!(field(line, "mail"), Some("failed"), "{line}");
    // In its own field since #19: `error=` tells of php-fpm.
    assert!(
        line.contains(" mail_error=\"sending mail through "),
        "{line}"
    );
    assert!(site.heartbeat_ok());
}

#[test]
fn dry_run_reports_and_changes_nothing() {
    let site = Site::start();
    site.fpm.stop();

    let out = site.run(&site.heartbeat(), "5", &["--dry-run"]);

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let printed = stdout(&out);
    assert_eq!(field(&printed, "action"), Some("would-start"), "{printed}");
    assert!(!site.log.exists(), "a dry run wrote the log");
    assert!(site.fpm.pids().is_empty(), "a dry run started php-fpm");
    assert_eq!(curl_status(&site.heartbeat()), "502");
}

#[test]
fn every_repeats_within_the_minute() {
    let site = Site::start();
    // --every stops when the next check could not end within the minute, so start the run early in
    // one: two checks 0.2 s apart with a 2 s deadline then always fit. The heartbeat requests are
    // counted by php-fpm's own access log, not by our code.
    let into_minute = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
        % 60.0;
    if into_minute > 50.0 {
        std::thread::sleep(std::time::Duration::from_secs_f64(60.5 - into_minute));
    }
    let access = site.dir.path().join("access.log");
    let conf = fs::read_to_string(&site.fpm.config).unwrap()
        + &format!("access.log = {}\n", access.display());
    fs::write(&site.fpm.config, conf).unwrap();
    site.fpm.stop();
    site.fpm.start();

    let out = crate::common::php_relaunch()
        .args([&site.heartbeat(), "2", "", "0", "--every", "0.2"])
        .args(site.fpm.direct_args())
        .arg("--log")
        .arg(&site.log)
        .arg("--lock")
        .arg(&site.lock)
        .arg("--state")
        .arg(&site.state)
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let requests = fs::read_to_string(&access)
        .unwrap_or_default()
        .lines()
        .count();
    assert!(requests >= 2, "--every made {requests} request(s)");
    assert!(site.log_lines().is_empty(), "{:?}", site.log_lines());
}

#[test]
fn a_php_fpm_that_cannot_start_is_reported_still_down() {
    let site = Site::start();
    site.fpm.stop();
    let broken = fs::read_to_string(&site.fpm.config).unwrap() + "pm.max_children = lots\n";
    fs::write(&site.fpm.config, broken).unwrap();

    let out = site.run(&site.heartbeat(), "2", &["--restart-timeout", "2"]);

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = &site.log_lines()[0];
    assert_eq!(field(line, "verdict"), Some("502"), "{line}");
    // Start failed, so it escalated once: kill whatever is left of the family, start again.
    assert_eq!(field(line, "action"), Some("start+kill+start"), "{line}");
    assert_eq!(field(line, "state"), Some("down"), "{line}");
    assert_eq!(field(line, "new_pid"), Some("-"), "{line}");
    let error = field(line, "error").unwrap();
    assert!(error.starts_with("start: `"), "{line}");
    assert!(
        error.contains("pm.max_children"),
        "php-fpm's own message belongs in the log: {line}"
    );
    assert!(
        error.ends_with("; start: failed the same way again"),
        "{line}"
    );
}

#[test]
fn an_explicit_pid_file_is_where_the_relaunched_master_writes() {
    let site = Site::start();
    site.fpm.stop();
    // A config without a `pid` setting: only --pid-file says where the master's pid goes.
    let conf = fs::read_to_string(&site.fpm.config).unwrap();
    let conf: Vec<&str> = conf.lines().filter(|l| !l.starts_with("pid =")).collect();
    fs::write(&site.fpm.config, conf.join("\n") + "\n").unwrap();
    let pid_file = site.dir.path().join("custom.pid");

    let out = site.run(
        &site.heartbeat(),
        "5",
        &["--pid-file", pid_file.to_str().unwrap()],
    );

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let master: u32 = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(alive(master));
    let line = &site.log_lines()[0];
    assert_eq!(
        field(line, "new_pid"),
        Some(master.to_string().as_str()),
        "{line}"
    );
    assert!(site.heartbeat_ok());
}

#[test]
fn the_alert_shows_the_processes_as_they_were_before_the_relaunch() {
    let site = Site::start();
    let smtp = Smtp::start(site.dir.path());
    let old_master = site.fpm.master().unwrap();
    site.fpm.freeze();

    let out = site.run(
        &site.heartbeat(),
        "1",
        &["ops@example.com", "--smtp", &smtp.url()],
    );

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let mail = &messages[0];
    assert!(mail.contains("php-fpm relaunched after timeout"), "{mail}");
    assert!(
        mail.contains("php-fpm processes before the relaunch:"),
        "{mail}"
    );
    let master_row = mail
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{old_master} ")))
        .unwrap_or_else(|| panic!("no row for master {old_master}:\n{mail}"));
    assert!(master_row.contains("Stopped"), "{master_row}");
    assert!(master_row.contains(" KiB "), "{master_row}");
    let title = format!("php-fpm: master process ({})", site.fpm.config.display());
    assert!(master_row.ends_with(&title), "{master_row}");
    let workers = mail
        .lines()
        .filter(|l| l.ends_with("php-fpm: pool www"))
        .count();
    assert_eq!(workers, 2, "{mail}");
}
