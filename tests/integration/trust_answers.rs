//! The answers a run believes (#18): a healthy answer counts only while a verified php-fpm master
//! runs, a socket's holder counts as its activator only when it is root's (or ours) and not of the
//! pool user, and the pool's socket path must be the socket file root's listener is bound to. The
//! attacker is the pool user, `www-data`: a program started from PHP inherits the pool's listening
//! socket (php-fpm's workers hold it without close-on-exec), or a link replaces the socket path.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;

use crate::common::{Fpm, Nginx, Site, field, shared_tempdir, signal, stderr, stdout, wait_until};
use crate::pong::{Attacker, PONG, WWW_DATA};

/// php-fpm's socket in a directory the pool user owns (as /run/php on Debian), nginx in front.
fn site_in_pool_users_dir() -> Site {
    let dir = shared_tempdir();
    let run = dir.path().join("run");
    fs::create_dir(&run).unwrap();
    std::os::unix::fs::chown(&run, Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    let mut fpm = Fpm::new(dir.path());
    let socket = run.join("www.sock");
    let conf = fs::read_to_string(&fpm.config).unwrap().replace(
        &fpm.socket.display().to_string(),
        &socket.display().to_string(),
    );
    fs::write(&fpm.config, conf).unwrap();
    fpm.socket = socket;
    fpm.start();
    let nginx = Nginx::new(dir.path(), &format!("unix:{}", fpm.socket.display()));
    nginx.start();
    Site {
        log: dir.path().join("php-relaunch.log"),
        lock: dir.path().join("php-relaunch.lock"),
        state: dir.path().join("state.json"),
        fpm,
        nginx,
        dir,
    }
}

/// As `www-data`: `ln -s TARGET LINK`.
fn symlink_as(uid: u32, target: &Path, link: &Path) {
    let ok = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .arg("ln")
        .arg("-s")
        .arg(target)
        .arg(link)
        .status()
        .unwrap();
    assert!(ok.success());
}

/// php-fpm is dead; the pool user listens at another name in its own directory and links php-fpm's
/// socket path to it. nginx follows the link and serves the pool user's "pong" as the heartbeat;
/// the run must not take that for php-fpm (#18 item 1: the pool socket's listener is checked by
/// the file at the path, and a link there is no socket file, so nothing was checked).
#[test]
fn a_link_at_the_pool_socket_path_is_no_trusted_listener_and_a_dead_php_fpm_is_not_healthy() {
    let site = site_in_pool_users_dir();
    site.fpm.stop();
    let elsewhere = site.fpm.socket.with_file_name("elsewhere.sock");
    let _www_data = Attacker::pong(WWW_DATA, "unix", &elsewhere.display().to_string());
    symlink_as(WWW_DATA, &elsewhere, &site.fpm.socket);
    assert!(site.heartbeat_ok(), "nginx serves www-data's answer");

    let out = site.run(&site.heartbeat(), "2", &[]);
    let line = site.log_lines().pop().unwrap_or_default();
    assert_ne!(
        out.status.code(),
        Some(0),
        "a dead php-fpm passed for healthy: {line}\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        field(&line, "verdict"),
        Some("untrusted-listener"),
        "{line}"
    );
}

/// php-fpm is alive; the pool user removes its socket file (its directory is the pool user's, as
/// /run/php) and puts a link to a socket of its own there. nginx follows the link: the verified
/// master runs, but what answers is not php-fpm, and a link is no socket root's listener is bound to.
#[test]
fn a_link_in_place_of_a_live_pool_socket_is_no_trusted_listener() {
    let site = site_in_pool_users_dir();
    let elsewhere = site.fpm.socket.with_file_name("elsewhere.sock");
    let _www_data = Attacker::pong(WWW_DATA, "unix", &elsewhere.display().to_string());
    let removed = Command::new("setpriv")
        .args(["--reuid=33", "--regid=33", "--clear-groups", "rm"])
        .arg(&site.fpm.socket)
        .status()
        .unwrap();
    assert!(removed.success());
    symlink_as(WWW_DATA, &elsewhere, &site.fpm.socket);
    assert!(site.heartbeat_ok(), "nginx serves www-data's answer");
    assert!(site.fpm.master().is_some(), "php-fpm's master runs");

    let out = site.run(&site.heartbeat(), "2", &["--dry-run"]);
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert_ne!(out.status.code(), Some(0), "{said}");
    assert!(said.contains("untrusted-listener"), "{said}");
    assert!(said.contains("is a link"), "{said}");
}

/// The scene below: php-fpm dead, its socket file left, root's listening socket held and answered
/// by a program the pool user started from PHP.
fn dead_php_fpm_on_inherited_socket() -> (Site, tempfile::TempDir, KillHolders) {
    let (site, home, ends) = php_fpm_with_inherited_socket_holder();
    // php-fpm crashes: master and workers gone at once, the socket file left.
    for pid in site.fpm.pids() {
        signal(pid, Signal::KILL);
    }
    wait_until("php-fpm to be gone", Duration::from_secs(10), || {
        site.fpm.pids().is_empty()
    });
    assert!(site.heartbeat_ok(), "nginx serves the pool user's answer");

    (site, home, ends)
}

/// php-fpm runs; a program the pool user started from PHP holds root's listening socket (php-fpm's
/// workers keep it without close-on-exec).
fn php_fpm_with_inherited_socket_holder() -> (Site, tempfile::TempDir, KillHolders) {
    let site = Site::start();
    let home = shared_tempdir();
    std::os::unix::fs::chown(home.path(), Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    let mark = home.path().join("holding");
    let holder = home.path().join("hold.py");
    let pong = PONG
        .replace(
            "kind, where, mark = sys.argv[1:4]",
            "mark = sys.argv[1]\nkind = 'inherited'",
        )
        .replace(
            "if kind == \"tcp\":",
            "if kind == 'inherited':\n    s = socket.socket(fileno=6)\nelif kind == \"tcp\":",
        )
        .replace("s.listen(64)\n", "");
    fs::write(&holder, pong).unwrap();
    let ends = KillHolders(holder.clone());
    let page = home.path().join("start.php");
    fs::write(
        &page,
        format!(
            "<?php exec('/usr/bin/python3 {} {} </dev/null >/dev/null 2>&1 &'); echo 'started';\n",
            holder.display(),
            mark.display()
        ),
    )
    .unwrap();
    // Any page of the site can do this; here a request straight to php-fpm runs it.
    let ran = Command::new("cgi-fcgi")
        .args(["-bind", "-connect"])
        .arg(&site.fpm.socket)
        .env("SCRIPT_FILENAME", &page)
        .env("SCRIPT_NAME", "/start.php")
        .env("REQUEST_METHOD", "GET")
        .output()
        .unwrap();
    assert!(stdout_of(&ran).contains("started"), "{}", stdout_of(&ran));
    wait_until("the pool user's program", Duration::from_secs(10), || {
        mark.exists()
    });
    (site, home, ends)
}

#[test]
fn an_answer_on_roots_own_socket_counts_only_with_a_verified_master_running() {
    let (site, _home, _ends) = dead_php_fpm_on_inherited_socket();
    for target in [site.fpm.target("/ping"), site.heartbeat()] {
        let out = site.run(&target, "2", &["--dry-run"]);
        assert_ne!(
            out.status.code(),
            Some(0),
            "{target}: a dead php-fpm passed for healthy\n{}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    // A real run relaunches the dead php-fpm, and says why.
    let _ = site.run(&site.heartbeat(), "2", &[]);
    let line = site.log_lines().pop().unwrap_or_default();
    assert_eq!(
        field(&line, "verdict"),
        Some("untrusted-listener"),
        "{line}"
    );
    assert!(line.contains("no verified php-fpm master"), "{line}");
    assert!(
        field(&line, "action").is_some_and(|a| a.contains("start")),
        "{line}"
    );
    // And php-fpm is back: the socket the pool user's program held was unlinked before the start,
    // so php-fpm bound a fresh one, and nginx reaches it.
    assert_eq!(field(&line, "state"), Some("healthy"), "{line}");
    assert!(site.fpm.master().is_some());
    assert!(site.heartbeat_ok());
}

/// The same scene, watched as an on-demand pool: the pool user's program is taken for the socket's
/// activator, so the dead php-fpm counts as asleep (`state=idle`, exit 0) where #18 item 8 wants
/// `socket-lost` (exit 4). By the same proof, `idle-stop` would take a pool that is not
/// socket-activated for one and stop it.
#[test]
fn a_program_started_from_php_holding_the_socket_is_no_activator_of_an_on_demand_pool() {
    let (site, _home, _ends) = dead_php_fpm_on_inherited_socket();
    let out = site.run(
        &site.fpm.target("/ping"),
        "2",
        &["--dry-run", "--on-demand"],
    );
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}

fn stdout_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Ends the test's python processes running `script`, by pid.
fn kill_holders(script: &Path) {
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for entry in procs.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if String::from_utf8_lossy(&cmdline).contains(&*script.to_string_lossy()) {
            signal(pid, Signal::KILL);
        }
    }
}

/// Ends the pool user's programs running a script when dropped (even when the test fails).
struct KillHolders(PathBuf);

impl Drop for KillHolders {
    fn drop(&mut self) {
        kill_holders(&self.0);
    }
}

/// php-fpm runs and is idle; the only process outside its family that holds its socket is the pool
/// user's program. Nothing would start php-fpm again once stopped: idle-stop must refuse.
#[test]
fn idle_stop_refuses_a_pool_whose_socket_only_a_program_started_from_php_holds() {
    let (site, _home, _ends) = php_fpm_with_inherited_socket_holder();
    let master = site.fpm.master().expect("php-fpm runs");
    let out = crate::common::php_relaunch()
        .arg("idle-stop")
        .arg("--fpm-config")
        .arg(&site.fpm.config)
        .arg("--state")
        .arg(site.dir.path().join("idle.json"))
        .arg("--log")
        .arg(&site.log)
        .arg("--lock")
        .arg(&site.lock)
        .args(["--idle-for", "1s"])
        .output()
        .unwrap();
    assert!(
        stderr(&out).contains("refusing to stop"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_ne!(out.status.code(), Some(0));
    assert_eq!(site.fpm.master(), Some(master), "php-fpm left running");
}

/// A `watch` run believes an answer as a classic run does: the same scene, one target in a watch
/// file, is a failure that names the missing master, not a healthy pool.
#[test]
fn a_watch_run_believes_an_answer_only_with_a_verified_master_running() {
    let (site, _home, _ends) = dead_php_fpm_on_inherited_socket();
    let file = site.dir.path().join("watch.toml");
    fs::write(
        &file,
        format!(
            "timeout = 2\n\n[[target]]\nurl = \"unix://{};/ping\"\nfpm_bin = \"{}\"\n\
             fpm_config = \"{}\"\n",
            site.fpm.socket.display(),
            site.fpm.bin.display(),
            site.fpm.config.display()
        ),
    )
    .unwrap();
    let out = crate::common::php_relaunch()
        .arg("watch")
        .arg("--config")
        .arg(&file)
        .arg("--log")
        .arg(&site.log)
        .arg("--state-dir")
        .arg(site.dir.path().join("state"))
        .output()
        .unwrap();
    let line = site.log_lines().pop().unwrap_or_default();
    assert_ne!(
        out.status.code(),
        Some(0),
        "{line}\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        field(&line, "verdict"),
        Some("untrusted-listener"),
        "{line}"
    );
    assert!(
        line.contains("no verified php-fpm master")
            || line.contains("opened the socket that answered (pid"),
        "{line}"
    );
}
