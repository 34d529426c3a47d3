//! `watch` (#21) against the pool user and `nobody` (#18: root trusts only what root controls).
//! Private php-fpm masters from a copy of Debian's binary, watched through `[discover]` files; the
//! attacker acts only as the pool user could (a PHP script) or as `nobody` would.

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::Signal;

use crate::common::{
    Fpm, alive, field, php_relaunch, shared_tempdir, signal, stderr, stdout, wait_until,
};

/// www-data's uid and gid on Debian.
const WWW_DATA: u32 = 33;

/// A `[discover]` watch file for `fpm`'s config, controlled directly through its binary.
fn discover_file(dir: &Path, fpm: &Fpm) -> PathBuf {
    let file = dir.join("watch.toml");
    fs::write(
        &file,
        format!(
            "timeout = 2\nrestart_timeout = 10\npause_file = \"{d}/pause\"\n\n[discover]\n\
             fpm_configs = [\"{conf}\"]\nfpm_bin = \"{bin}\"\n",
            d = dir.display(),
            conf = fpm.config.display(),
            bin = fpm.bin.display()
        ),
    )
    .unwrap();
    file
}

/// `php-relaunch watch --config FILE` with its log and state in `dir`.
fn watch(dir: &Path, file: &Path, extra: &[&str]) -> std::process::Output {
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

/// A process the pool's PHP started in the background, ended by pid when dropped.
struct Background(u32);

impl Drop for Background {
    fn drop(&mut self) {
        signal(self.0, Signal::KILL);
    }
}

/// What any PHP script of the pool may do: start a program in the background. It inherits the
/// pool's listening socket from its worker (php-fpm leaves it open across exec) and outlives it.
fn php_starts_a_background_program(dir: &Path, fpm: &Fpm) -> Background {
    let drop_box = dir.join("bg");
    fs::create_dir(&drop_box).unwrap();
    chown(&drop_box, Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    let script = dir.join("bg.php");
    fs::write(
        &script,
        format!(
            "<?php exec('sleep 300 > /dev/null 2>&1 & echo $! > {}/pid'); echo 'started';\n",
            drop_box.display()
        ),
    )
    .unwrap();
    let out = php_relaunch()
        .args(["check", &fpm.target(&script.display().to_string()), "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pid_file = drop_box.join("pid");
    wait_until("the background program", Duration::from_secs(5), || {
        fs::read_to_string(&pid_file).is_ok_and(|p| p.trim().parse::<u32>().is_ok())
    });
    let pid = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Background(pid)
}

/// The master and every worker SIGKILLed at once (a crash, the OOM killer): the socket file stays.
fn crash(fpm: &Fpm) {
    let family = fpm.pids();
    for &pid in &family {
        signal(pid, Signal::KILL);
    }
    wait_until("the family to die", Duration::from_secs(5), || {
        family.iter().all(|&p| !alive(p))
    });
}

/// A program the pool's PHP left running holds the pool's listening socket, so `[discover]` took
/// the pool for a socket-activated one: when its master crashed, watch said `socket-lost` ("restart
/// the socket unit") and never relaunched php-fpm. Only root's holders are activators (#18).
#[test]
fn attack3_a_php_background_program_keeps_a_crashed_pool_from_being_relaunched() {
    let dir = shared_tempdir();
    let d = dir.path();
    let fpm = Fpm::new(d);
    fpm.start();
    let file = discover_file(d, &fpm);
    let out = watch(d, &file, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let background = php_starts_a_background_program(d, &fpm);
    assert!(alive(background.0));
    crash(&fpm);
    let out = watch(d, &file, &[]);
    let log = fs::read_to_string(d.join("log")).unwrap_or_default();
    let line = log.lines().next().unwrap_or_default();
    assert_ne!(
        field(line, "state"),
        Some("socket-lost"),
        "a pool of a crashed master taken for a socket-activated one: {line}"
    );
    assert!(
        fpm.master().is_some(),
        "the crashed master is relaunched (exit {:?}): {log}{}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
}
