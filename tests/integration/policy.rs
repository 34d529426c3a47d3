//! Relaunches that never make things worse (#5), end to end against a private php-fpm behind a
//! private nginx: thresholds, cooldown, budget, reset, pause, config test, saturation, stuck workers,
//! evidence, one alert per incident, and the state file's own troubles.

use std::fs;
use std::process::{Child, Command};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::common::{Site, Smtp, alive, curl_status, field, stderr, wait_until};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The last log line, and how many lines there are.
fn last_line(site: &Site) -> (String, usize) {
    let lines = site.log_lines();
    (lines.last().cloned().unwrap_or_default(), lines.len())
}

/// Background requests that keep php-fpm workers busy; ended when dropped.
struct Busy(Vec<Child>);

impl Busy {
    fn start(url: &str, count: usize) -> Busy {
        Busy(
            (0..count)
                .map(|_| {
                    Command::new("curl")
                        .args(["-s", "-o", "/dev/null", "--noproxy", "*", "-m", "90", url])
                        .spawn()
                        .unwrap()
                })
                .collect(),
        )
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// php-fpm's status page on its own socket (pm.status_listen), answered even when the pool is full.
fn with_status_listener(site: &Site, extra: &str) -> String {
    let socket = site.dir.path().join("status.sock");
    site.fpm
        .reconfigure(&format!("pm.status_listen = {}\n{extra}", socket.display()));
    format!("unix://{};/status", socket.display())
}

/// Fills `site`'s pool (2 workers) with requests that sleep a minute; the heartbeat then times out.
fn fill_the_pool(site: &Site) -> Busy {
    let busy = Busy::start(&site.nginx.url("slow.php?s=60"), 2);
    wait_until("the pool to fill", Duration::from_secs(10), || {
        curl_status(&site.heartbeat()) != "200"
    });
    busy
}

/// The run's line says `saturated`, exit 4, and the master is the one that was running.
fn assert_saturated_and_left_alone(site: &Site, master: u32, extra: &[&str]) {
    let out = site.run(&site.heartbeat(), "1", extra);
    let (line, _) = last_line(site);
    assert_eq!(out.status.code(), Some(4), "{line}\n{}", stderr(&out));
    assert_eq!(field(&line, "state"), Some("saturated"), "{line}");
    assert_eq!(field(&line, "action"), Some("none"), "{line}");
    assert_eq!(site.fpm.master(), Some(master), "not restarted");
}

#[test]
fn a_saturated_pool_beside_its_status_pool_is_alerted_on_never_restarted() {
    let site = Site::start();
    // pm.status_listen: the status page is served by a pool of its own (`www_status`), whose idle
    // worker waits in accept(2) while every `www` worker is busy.
    let status = with_status_listener(&site, "");
    let master = site.fpm.master().unwrap();
    let _busy = fill_the_pool(&site);
    assert_saturated_and_left_alone(&site, master, &["--status", &format!("{status}?json")]);
    // A status page that does not answer leaves the judgement to /proc, for this pool alone.
    let silent = format!(
        "unix://{};/status",
        site.dir.path().join("none.sock").display()
    );
    assert_saturated_and_left_alone(&site, master, &["--status", &silent]);
    assert_saturated_and_left_alone(&site, master, &[]);
}

#[test]
fn a_saturated_pool_beside_an_idle_one_is_alerted_on_never_restarted() {
    let site = Site::start();
    site.fpm.reconfigure(&format!(
        "\n[other]\nuser = www-data\ngroup = www-data\nlisten = {}\npm = static\npm.max_children = 2\n",
        site.dir.path().join("other.sock").display()
    ));
    let master = site.fpm.master().unwrap();
    let _busy = fill_the_pool(&site);
    assert_saturated_and_left_alone(&site, master, &[]);
}

#[test]
fn the_failure_threshold_delays_the_relaunch() {
    let site = Site::start();
    site.fpm.stop();

    for n in 1..=2 {
        let out = site.run(&site.heartbeat(), "2", &["--failures", "3"]);
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        let (line, count) = last_line(&site);
        assert_eq!(count, n);
        assert_eq!(field(&line, "action"), Some("none"), "{line}");
        assert_eq!(field(&line, "state"), Some("failing"), "{line}");
        assert_eq!(
            field(&line, "error"),
            Some(format!("failure {n} of 3 before a relaunch").as_str())
        );
        assert!(site.fpm.pids().is_empty(), "relaunched below the threshold");
    }
    let out = site.run(&site.heartbeat(), "2", &["--failures", "3"]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let (line, _) = last_line(&site);
    assert_eq!(field(&line, "action"), Some("start"), "{line}");
    let relaunches = site
        .log_lines()
        .iter()
        .filter(|l| field(l, "action") == Some("start"))
        .count();
    assert_eq!(relaunches, 1);
    assert!(site.heartbeat_ok());
}

#[test]
fn a_second_relaunch_waits_for_the_cooldown() {
    let site = Site::start();
    site.fpm.stop();
    let out = site.run(&site.heartbeat(), "2", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    site.fpm.stop();

    let out = site.run(&site.heartbeat(), "2", &[]);

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (line, count) = last_line(&site);
    assert_eq!(count, 2);
    assert_eq!(field(&line, "state"), Some("cooldown"), "{line}");
    assert!(
        field(&line, "error")
            .unwrap()
            .starts_with("the previous relaunch's recovery window is open"),
        "{line}"
    );
    assert!(site.fpm.pids().is_empty(), "relaunched inside the cooldown");
}

#[test]
fn a_spent_budget_alerts_once_and_healthy_runs_restore_it() {
    let site = Site::start();
    let smtp = Smtp::start(site.dir.path());
    let limits = [
        "ops@example.com",
        "--smtp",
        &smtp.url(),
        "--max-restarts",
        "2",
        "--within",
        "1h",
        "--recover-after",
        "2",
    ];
    // Two relaunches in the last hour already, the last long past its cooldown.
    let t = now();
    fs::write(
        &site.state,
        format!(
            "{{\"relaunches\": [{}, {}], \"last_took_ms\": 100}}",
            t - 600,
            t - 300
        ),
    )
    .unwrap();
    site.fpm.stop();

    let out = site.run(&site.heartbeat(), "2", &limits);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (line, _) = last_line(&site);
    assert_eq!(field(&line, "action"), Some("gave-up"), "{line}");
    assert!(
        field(&line, "error")
            .unwrap()
            .starts_with("restart budget spent (2 relaunches within 3600s)"),
        "{line}"
    );
    assert_eq!(smtp.messages().len(), 1);
    assert!(
        smtp.messages()[0].contains(": giving up: restart budget spent (502)"),
        "{}",
        smtp.messages()[0]
    );

    // Still failing: probed and logged, not relaunched, no second alert.
    let out = site.run(&site.heartbeat(), "2", &limits);
    assert_eq!(out.status.code(), Some(1));
    let (line, count) = last_line(&site);
    assert_eq!((field(&line, "action"), count), (Some("none"), 2), "{line}");
    assert!(site.fpm.pids().is_empty());
    assert_eq!(smtp.messages().len(), 1);

    // The operator brings it back: a "recovered" alert, and after two healthy runs the budget.
    site.fpm.start();
    assert_eq!(
        site.run(&site.heartbeat(), "2", &limits).status.code(),
        Some(0)
    );
    let (line, _) = last_line(&site);
    assert_eq!(field(&line, "state"), Some("recovered"), "{line}");
    assert_eq!(smtp.messages().len(), 2);
    assert_eq!(
        site.run(&site.heartbeat(), "2", &limits).status.code(),
        Some(0)
    );
    let (line, count) = last_line(&site);
    assert_eq!(
        (field(&line, "action"), count),
        (Some("budget-restored"), 4),
        "{line}"
    );
    // Quiet again when all is well.
    assert_eq!(
        site.run(&site.heartbeat(), "2", &limits).status.code(),
        Some(0)
    );
    assert_eq!(site.log_lines().len(), 4);

    site.fpm.stop();
    let out = site.run(&site.heartbeat(), "2", &limits);
    assert_eq!(
        out.status.code(),
        Some(3),
        "relaunching again: {}",
        stderr(&out)
    );
    assert_eq!(smtp.messages().len(), 3);
}

#[test]
fn reset_restores_a_spent_budget() {
    let site = Site::start();
    let t = now();
    fs::write(
        &site.state,
        format!("{{\"relaunches\": [{}], \"gave_up\": true}}", t - 60),
    )
    .unwrap();
    site.fpm.stop();
    assert_eq!(site.run(&site.heartbeat(), "2", &[]).status.code(), Some(1));
    assert!(site.fpm.pids().is_empty());

    let out = crate::common::php_relaunch()
        .args(["reset", &site.heartbeat(), "--state"])
        .arg(&site.state)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        crate::common::stdout(&out),
        format!("restart budget restored ({})\n", site.state.display())
    );

    let out = site.run(&site.heartbeat(), "2", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
}

#[test]
fn reset_mends_a_corrupt_state_file() {
    let site = Site::start();
    fs::write(&site.state, "{\"relaunches\": [1, 2,").unwrap();
    let out = crate::common::php_relaunch()
        .args(["reset", &site.heartbeat(), "--state"])
        .arg(&site.state)
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let said = crate::common::stdout(&out);
    assert!(
        said.starts_with(&format!(
            "state file '{}' is corrupt (",
            site.state.display()
        )) && said.ends_with("); replaced it with a fresh state\n"),
        "{said}"
    );
    let mended: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(&site.state).unwrap()).unwrap();
    assert!(mended.is_object(), "{mended}");

    // And runs read it again without a word.
    let out = site.run(&site.heartbeat(), "2", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
}

#[test]
fn a_pause_file_changes_nothing() {
    let site = Site::start();
    let pause = site.dir.path().join("pause");
    fs::write(&pause, "deploying\n").unwrap();
    site.fpm.stop();

    let out = site.run(
        &site.heartbeat(),
        "2",
        &["--pause-file", pause.to_str().unwrap()],
    );

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (line, _) = last_line(&site);
    assert_eq!(field(&line, "action"), Some("none"), "{line}");
    assert_eq!(field(&line, "state"), Some("paused"), "{line}");
    assert!(site.fpm.pids().is_empty(), "started while paused");
}

#[test]
fn a_broken_config_is_not_restarted() {
    let site = Site::start();
    let smtp = Smtp::start(site.dir.path());
    let master = site.fpm.master().unwrap();
    let conf = fs::read_to_string(&site.fpm.config).unwrap() + "pm.max_children = lots\n";
    fs::write(&site.fpm.config, conf).unwrap();

    // A 404 made to call for a relaunch: the pool is running and idle, so only the config test stands
    // between it and a restart.
    let out = site.run(
        &site.nginx.url("missing.php"),
        "2",
        &[
            "ops@example.com",
            "--smtp",
            &smtp.url(),
            "--relaunch-on",
            "404",
        ],
    );

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (line, _) = last_line(&site);
    assert_eq!(field(&line, "action"), Some("none"), "{line}");
    assert_eq!(field(&line, "state"), Some("config-error"), "{line}");
    let error = field(&line, "error").unwrap();
    assert!(
        error.starts_with("config test failed, php-fpm left running: `"),
        "{line}"
    );
    assert!(error.contains("pm.max_children"), "{line}");
    assert_eq!(site.fpm.master(), Some(master));
    assert!(site.heartbeat_ok(), "the running master keeps serving");
    let mail = &smtp.messages()[0];
    assert!(
        mail.contains("php-fpm config test failed, not relaunched (404)"),
        "{mail}"
    );
    assert!(
        mail.contains("unable to parse value for entry 'pm.max_children'"),
        "{mail}"
    );
}

#[test]
fn a_saturated_pool_is_reported_not_relaunched_unless_allowed() {
    let site = Site::start();
    let status = with_status_listener(&site, "");
    let master = site.fpm.master().unwrap();
    let _busy = Busy::start(&site.nginx.url("slow.php?s=60"), 2);
    wait_until("the pool to fill", Duration::from_secs(10), || {
        curl_status(&site.heartbeat()) != "200"
    });

    let out = site.run(&site.heartbeat(), "1", &["--status", &status]);

    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let (line, _) = last_line(&site);
    assert_eq!(field(&line, "verdict"), Some("timeout"), "{line}");
    assert_eq!(field(&line, "state"), Some("saturated"), "{line}");
    assert!(
        field(&line, "error")
            .unwrap()
            .starts_with("2 of 2 workers busy (from status page)"),
        "{line}"
    );
    assert_eq!(site.fpm.master(), Some(master));

    // With the opt-in it is relaunched, and the evidence of it kept.
    let out = site.run(
        &site.heartbeat(),
        "1",
        &["--status", &status, "--relaunch-saturated"],
    );
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let (line, _) = last_line(&site);
    assert_eq!(field(&line, "action"), Some("restart"), "{line}");
    assert_ne!(site.fpm.master(), Some(master));
    let evidence: Vec<_> = fs::read_dir(site.dir.path().join("evidence"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(evidence.len(), 1);
    let name = evidence[0].file_name().to_string_lossy().into_owned();
    assert!(name.ends_with("-timeout.txt"), "{name}");
    let text = fs::read_to_string(evidence[0].path()).unwrap();
    assert!(
        text.contains("php-fpm status page (?json&full):\n{\"pool\":\"www\""),
        "{text}"
    );
    assert!(
        text.contains("\"request uri\":\"\\/slow.php?s=60\""),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "php-fpm: master process ({})",
            site.fpm.config.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "Last lines of {}/php-fpm.log:",
            site.dir.path().display()
        )),
        "{text}"
    );
}

#[test]
fn one_stuck_worker_is_killed_and_the_pool_kept() {
    let site = Site::start();
    // A request holding a lock that the heartbeat page needs, as a stuck request holding a PHP
    // session does: the heartbeat times out while other workers sit idle.
    let lock = site.dir.path().join("page.lock");
    let page = format!(
        "<?php $f = fopen('{}', 'c'); flock($f, LOCK_EX); if (isset($_GET['hold'])) sleep(60); echo 'ok';\n",
        lock.display()
    );
    fs::write(site.dir.path().join("www/locked.php"), page).unwrap();
    // The workers run as www-data: the lock file must be theirs to open.
    fs::write(&lock, "").unwrap();
    fs::set_permissions(&lock, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let status = with_status_listener(&site, "pm.max_children = 3\n");
    let master = site.fpm.master().unwrap();
    let workers_before = site.fpm.pids();
    let _holder = Busy::start(&site.nginx.url("locked.php?hold=1"), 1);
    // Well past --stuck-after for the holder, while the heartbeat's own request stays far below it.
    std::thread::sleep(Duration::from_millis(4500));

    let out = site.run(
        &site.nginx.url("locked.php"),
        "1",
        &["--status", &status, "--stuck-after", "3s"],
    );

    let (line, _) = last_line(&site);
    assert_eq!(out.status.code(), Some(3), "{line}{}", stderr(&out));
    assert_eq!(field(&line, "verdict"), Some("timeout"), "{line}");
    assert_eq!(field(&line, "action"), Some("kill-stuck"), "{line}");
    assert_eq!(field(&line, "state"), Some("healthy"), "{line}");
    let error = field(&line, "error").unwrap();
    assert!(
        error.starts_with("killed workers stuck in one request: "),
        "{line}"
    );
    assert_eq!(site.fpm.master(), Some(master), "the master must stay");
    let killed: Vec<u32> = workers_before
        .iter()
        .copied()
        .filter(|&p| !alive(p))
        .collect();
    assert_eq!(killed.len(), 1, "exactly the stuck worker goes: {killed:?}");
    assert!(error.contains(&format!("{} (", killed[0])), "{line}");
    assert_eq!(curl_status(&site.nginx.url("locked.php")), "200");
}

#[test]
fn one_alert_per_incident_and_one_when_it_ends() {
    let site = Site::start();
    let smtp = Smtp::start(site.dir.path());
    let mail = ["ops@example.com", "--smtp", &smtp.url()];
    site.nginx.stop();

    for _ in 0..3 {
        assert_eq!(
            site.run(&site.heartbeat(), "1", &mail).status.code(),
            Some(4)
        );
    }
    assert_eq!(site.log_lines().len(), 3);
    assert_eq!(
        smtp.messages().len(),
        1,
        "one alert for the incident, not one per run"
    );

    site.nginx.start();
    assert_eq!(
        site.run(&site.heartbeat(), "1", &mail).status.code(),
        Some(0)
    );
    let (line, count) = last_line(&site);
    assert_eq!(
        (field(&line, "state"), count),
        (Some("recovered"), 4),
        "{line}"
    );
    assert!(
        field(&line, "error").unwrap().ends_with("(refused)"),
        "{line}"
    );
    let messages = smtp.messages();
    assert_eq!(messages.len(), 2);
    assert!(
        messages
            .iter()
            .any(|m| m.contains(": heartbeat healthy again\n")),
        "{messages:?}"
    );
}

#[test]
fn a_corrupt_state_file_is_reported_once_and_a_symlink_refused() {
    let site = Site::start();
    fs::write(&site.state, "{\"failures\": ").unwrap();

    let out = site.run(&site.heartbeat(), "2", &[]);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("is corrupt"), "{err}");
    let again = site.run(&site.heartbeat(), "2", &[]);
    assert_eq!(stderr(&again), "", "reported once");

    let target = site.dir.path().join("precious");
    fs::write(&target, "keep").unwrap();
    fs::remove_file(&site.state).unwrap();
    std::os::unix::fs::symlink(&target, &site.state).unwrap();
    site.fpm.stop();
    let out = site.run(&site.heartbeat(), "2", &[]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "watching goes on: {}",
        stderr(&out)
    );
    assert!(
        stderr(&out).contains("is a symbolic link"),
        "{}",
        stderr(&out)
    );
    assert_eq!(fs::read_to_string(&target).unwrap(), "keep");
    assert!(
        site.state
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_symlink()
    );
}
