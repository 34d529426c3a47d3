//! `doctor` (#12) against the real Debian php8.2-fpm of this machine and against private pools the
//! test makes (static, dynamic and ondemand; unix and TCP; with and without ping.path and
//! pm.status_listen; a socket two configurations share). The lines it suggests are run.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::common::{Fpm, free_port, php_relaunch, shared_tempdir, stderr, stdout, wait_until};

fn doctor(extra: &[&Path]) -> (Option<i32>, serde_json::Value) {
    let mut cmd = php_relaunch();
    cmd.args(["doctor", "--json"]);
    for config in extra {
        cmd.arg("--fpm-config").arg(config);
    }
    let out = cmd.output().unwrap();
    let json = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|err| panic!("{err}: {}{}", stdout(&out), stderr(&out)));
    (out.status.code(), json)
}

fn installation<'a>(json: &'a serde_json::Value, config: &Path) -> &'a serde_json::Value {
    let config = config.canonicalize().unwrap();
    json["installations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["config"] == config.display().to_string())
        .unwrap_or_else(|| panic!("no {} in {json:#}", config.display()))
}

fn pool<'a>(installation: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    installation["pools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no pool {name} in {installation:#}"))
}

#[test]
fn debians_own_pool_needs_a_ping_path_first() {
    let (code, json) = doctor(&[]);
    assert_eq!(code, Some(1), "{json:#}");
    let debian = installation(&json, Path::new("/etc/php/8.2/fpm/php-fpm.conf"));
    assert_eq!(debian["service"], "php8.2-fpm");
    let www = pool(debian, "www");
    assert_eq!(www["listen"], "/run/php/php8.2-fpm.sock");
    assert_eq!(www["pm"], "dynamic");
    assert!(www["ping_path"].is_null());
    assert!(www["crontab"].is_null(), "no line before ping.path is set");
    let problem = www["problems"][0].as_str().unwrap();
    assert!(
        problem.starts_with(
            "no ping.path: add `ping.path = /ping` to [www] in /etc/php/8.2/fpm/pool.d/www.conf"
        ),
        "{problem}"
    );
}

/// Runs a suggested crontab line's command the way cron does (through sh), with this test's log,
/// lock and state.
fn run_crontab_line(line: &str, dir: &Path) -> std::process::Output {
    let command = line
        .strip_prefix("* * * * * ")
        .and_then(|l| l.strip_suffix(" >/dev/null 2>&1"))
        .unwrap_or_else(|| panic!("not a crontab line: {line}"));
    let command = format!(
        "{command} --log {d}/log --lock {d}/lock --state {d}/state.json",
        d = dir.display()
    );
    Command::new("sh")
        .args(["-c", &command])
        .env_remove("RUST_BACKTRACE")
        .output()
        .unwrap()
}

#[test]
fn private_pools_are_found_and_their_lines_work() {
    let dir = shared_tempdir();
    let d = dir.path();
    let fpm = Fpm::new(d);
    let port = free_port();
    fs::create_dir(d.join("pool.d")).unwrap();
    fs::write(
        &fpm.config,
        format!(
            "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\ndaemonize = yes\ninclude = {d}/pool.d/*.conf\n",
            d = d.display()
        ),
    )
    .unwrap();
    let pool_conf = |name: &str, body: &str| {
        fs::write(
            d.join(format!("pool.d/{name}.conf")),
            format!("[{name}]\nuser = www-data\ngroup = www-data\nlisten.owner = www-data\nlisten.group = www-data\n{body}"),
        )
        .unwrap();
    };
    pool_conf(
        "stat",
        &format!(
            "listen = {d}/stat.sock\npm = static\npm.max_children = 1\nping.path = /ping\n\
             pm.status_path = /status\npm.status_listen = {d}/status.sock\n",
            d = d.display()
        ),
    );
    pool_conf(
        "dyn",
        &format!(
            "listen = 127.0.0.1:{port}\npm = dynamic\npm.max_children = 2\npm.start_servers = 1\n\
             pm.min_spare_servers = 1\npm.max_spare_servers = 1\nping.path = /ping\n"
        ),
    );
    pool_conf(
        "od",
        &format!(
            "listen = {d}/od.sock\npm = ondemand\npm.max_children = 1\n",
            d = d.display()
        ),
    );
    fpm.start();
    let master = fpm.master().unwrap();
    // A second configuration whose pool wants the first one's socket.
    let other = d.join("other.conf");
    fs::write(
        &other,
        format!("[global]\npid = {d}/other.pid\n\n[twin]\nlisten = {d}/stat.sock\npm = static\npm.max_children = 1\nping.path = /ping\n", d = d.display()),
    )
    .unwrap();

    let (code, json) = doctor(&[&fpm.config, &other]);
    assert_eq!(code, Some(1), "{json:#}");
    let mine = installation(&json, &fpm.config);
    assert_eq!(mine["master"], master, "{mine:#}");
    assert_eq!(mine["binary"], fpm.bin.display().to_string());
    let stat = pool(mine, "stat");
    assert_eq!(stat["pm"], "static");
    assert_eq!(
        stat["status_listen"],
        format!("{}/status.sock", d.display())
    );
    assert_eq!(
        stat["target"],
        format!("unix://{}/stat.sock;/ping", d.display())
    );
    let dyn_pool = pool(mine, "dyn");
    assert_eq!(dyn_pool["target"], format!("fcgi://127.0.0.1:{port}/ping"));
    let od = pool(mine, "od");
    assert_eq!(od["pm"], "ondemand");
    assert!(
        od["problems"][0]
            .as_str()
            .unwrap()
            .starts_with("no ping.path")
    );
    let shared = json["problems"].as_array().unwrap();
    assert!(
        shared
            .iter()
            .any(|p| p.as_str().unwrap().contains("stat") && p.as_str().unwrap().contains("twin")),
        "{json:#}"
    );

    // The suggested lines work as they are: healthy, exit 0, quiet.
    wait_until("the dynamic pool", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    for pool in [stat, dyn_pool] {
        let line = pool["crontab"].as_str().unwrap();
        assert!(
            line.contains(&format!("--fpm-config {}", fpm.config.display())),
            "{line}"
        );
        let out = run_crontab_line(line, d);
        assert_eq!(out.status.code(), Some(0), "{line}\n{}", stderr(&out));
        assert_eq!(stdout(&out), "");
    }
    // The mcron line is a job mcron accepts.
    let job = d.join("job.guile");
    fs::write(&job, stat["mcron"].as_str().unwrap()).unwrap();
    let out = Command::new("mcron")
        .arg("--schedule=2")
        .arg(&job)
        .env("GUILE_AUTO_COMPILE", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "mcron: {}", stderr(&out));
    assert!(
        stdout(&out).contains("php-relaunch unix://"),
        "{}",
        stdout(&out)
    );
}

/// Removes a file it made when dropped, so the machine is left as it was.
struct Made(std::path::PathBuf);

impl Drop for Made {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

#[test]
fn an_installed_line_whose_target_does_not_answer_needs_attention() {
    let dir = shared_tempdir();
    let gone = dir.path().join("gone.sock");
    let cron = Made(std::path::PathBuf::from(format!(
        "/etc/cron.d/php-relaunch-doctor-test-{}",
        std::process::id()
    )));
    assert!(!cron.0.exists());
    fs::write(
        &cron.0,
        format!(
            "# a comment: /usr/sbin/php-relaunch 'unix:///nowhere.sock;/ping' 2\n\
             * * * * * root /usr/sbin/php-relaunch 'unix://{};/ping' 2 '' >/dev/null 2>&1\n",
            gone.display()
        ),
    )
    .unwrap();
    let (code, json) = doctor(&[]);
    assert_eq!(code, Some(1));
    let problems: Vec<&str> = json["problems"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p.as_str())
        .filter(|p| p.starts_with(&cron.0.display().to_string()))
        .collect();
    assert_eq!(problems.len(), 1, "{json:#}");
    assert!(
        problems[0].contains(&format!(
            "watches unix://{};/ping, which answers refused",
            gone.display()
        )),
        "{}",
        problems[0]
    );
}
