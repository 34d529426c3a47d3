//! The pool user's moves, shared by the attacker tests (#18, #21): what www-data can write and
//! occupy, and private php-fpm masters whose sockets live in a directory www-data owns, as Debian's
//! /run/php.

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{Fpm, php_relaunch, wait_until};

/// www-data's uid and gid on Debian.
pub const WWW_DATA: u32 = 33;

/// `text` written to `path` by www-data.
pub fn write_as_www_data(path: &Path, text: &str) {
    let mut child = Command::new("setpriv")
        .args(["--reuid=33", "--regid=33", "--clear-groups", "tee"])
        .arg(path)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), text.as_bytes()).unwrap();
    drop(child.stdin.take());
    assert!(child.wait().unwrap().success());
}

/// `argv` run as www-data (no groups); true when it succeeded.
pub fn as_www_data(argv: &[&str]) -> bool {
    Command::new("setpriv")
        .args(["--reuid=33", "--regid=33", "--clear-groups"])
        .args(argv)
        .status()
        .unwrap()
        .success()
}

/// A directory the pool user owns, as Debian's /run/php.
pub fn www_data_dir(d: &Path, name: &str) -> PathBuf {
    let run = d.join(name);
    fs::create_dir(&run).unwrap();
    chown(&run, Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    run
}

/// `php-relaunch watch --config FILE` with its log and state in `dir`.
pub fn watch(dir: &Path, file: &Path, extra: &[&str]) -> std::process::Output {
    php_relaunch()
        .arg("watch")
        .arg("--config")
        .arg(file)
        .arg("--log")
        .arg(dir.join("log"))
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .output()
        .unwrap()
}

/// A private php-fpm of one pool `name`, its socket in `run`.
pub fn master_in(d: &Path, run: &Path, name: &str) -> Fpm {
    let home = d.join(name);
    fs::create_dir(&home).unwrap();
    let mut fpm = Fpm::new(&home);
    fpm.socket = run.join(format!("{name}.sock"));
    fs::write(
        &fpm.config,
        format!(
            "[global]\npid = {pid}\nerror_log = {home}/php-fpm.log\ndaemonize = yes\n\n\
             [{name}]\nuser = www-data\ngroup = www-data\nlisten = {sock}\nlisten.owner = www-data\n\
             listen.group = www-data\nlisten.mode = 0660\npm = static\npm.max_children = 2\n\
             ping.path = /ping\n",
            pid = fpm.pid_file.display(),
            home = home.display(),
            sock = fpm.socket.display()
        ),
    )
    .unwrap();
    fpm.start();
    wait_until("its socket", Duration::from_secs(10), || {
        fpm.socket.exists()
    });
    fpm
}

/// A watch file of one `[[target]]`: `fpm`'s `/ping`, controlled through its binary and config.
pub fn target_file(d: &Path, fpm: &Fpm) -> PathBuf {
    let file = d.join("watch.toml");
    fs::write(
        &file,
        format!(
            "timeout = 2\nrestart_timeout = 10\npause_file = \"{d}/pause\"\n\n[[target]]\n\
             url = \"{url}\"\nfpm_bin = \"{bin}\"\nfpm_config = \"{conf}\"\n",
            d = d.display(),
            url = fpm.target("/ping"),
            bin = fpm.bin.display(),
            conf = fpm.config.display()
        ),
    )
    .unwrap();
    file
}

/// Requests held open in the background, ended when dropped.
pub struct Busy(Vec<Child>);

impl Drop for Busy {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// One master of two pools, `www` and `shop`, their sockets in `run/` (the pool user's, as
/// Debian's /run/php); `www` has its status page on a socket of its own (pm.status_listen).
pub fn two_pool_master(d: &Path) -> Fpm {
    let fpm = Fpm::new(d);
    let run = www_data_dir(d, "run");
    fs::write(d.join("sleep.php"), "<?php sleep(60); echo 'slept';\n").unwrap();
    let pool = |name: &str, extra: &str| {
        format!(
            "\n[{name}]\nuser = www-data\ngroup = www-data\nlisten = {r}/{name}.sock\n\
             listen.owner = www-data\nlisten.group = www-data\nlisten.mode = 0660\n\
             pm = static\npm.max_children = 2\nping.path = /ping\npm.status_path = /status\n{extra}",
            r = run.display()
        )
    };
    fs::write(
        &fpm.config,
        format!(
            "[global]\npid = {pid}\nerror_log = {d}/php-fpm.log\ndaemonize = yes\n{www}{shop}",
            pid = fpm.pid_file.display(),
            d = d.display(),
            www = pool(
                "www",
                &format!("pm.status_listen = {}/www-status.sock\n", run.display())
            ),
            shop = pool("shop", ""),
        ),
    )
    .unwrap();
    fpm.start();
    wait_until("both pools", Duration::from_secs(10), || {
        run.join("www.sock").exists() && run.join("shop.sock").exists()
    });
    fpm
}

/// The workers of `pool` of `fpm`, by their title.
pub fn workers_of(fpm: &Fpm, pool: &str) -> Vec<u32> {
    let master = fpm.master();
    fpm.pids()
        .into_iter()
        .filter(|&p| Some(p) != master)
        .filter(|&p| {
            fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.trim_end_matches(['\0', ' ']) == format!("php-fpm: pool {pool}"))
        })
        .collect()
}

/// `n` requests to `sleep.php` held open on `pool`, as anyone who may connect to its socket can.
pub fn occupy(d: &Path, pool: &str, n: usize) -> Busy {
    let sleep = format!(
        "unix://{}/run/{pool}.sock;{}/sleep.php",
        d.display(),
        d.display()
    );
    Busy(
        (0..n)
            .map(|_| {
                php_relaunch()
                    .args(["check", &sleep, "60"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect(),
    )
}
