//! `watch` (#21) and the classic run against the pool user and `nobody`, second round (#18: root
//! trusts only what root controls). Private php-fpm masters from a copy of Debian's binary; the
//! attacker acts only as the pool user could (it owns the sockets' directory, as /run/php on
//! Debian) or as `nobody` would.

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::common::{Fpm, php_relaunch, shared_tempdir, stderr, stdout, wait_until};

/// www-data's uid and gid on Debian.
const WWW_DATA: u32 = 33;

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

/// `argv` run as www-data.
fn as_www_data(argv: &[&str]) -> bool {
    Command::new("setpriv")
        .args(["--reuid=33", "--regid=33", "--clear-groups"])
        .args(argv)
        .status()
        .unwrap()
        .success()
}

/// A directory the pool user owns, as Debian's /run/php.
fn www_data_dir(d: &Path, name: &str) -> PathBuf {
    let run = d.join(name);
    fs::create_dir(&run).unwrap();
    chown(&run, Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    run
}

/// A private php-fpm of one pool `name`, its socket in `run`.
fn master_in(d: &Path, run: &Path, name: &str) -> Fpm {
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
fn target_file(d: &Path, fpm: &Fpm) -> PathBuf {
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

/// The first round's hard link, as a symbolic link: the probe's connect follows it to master
/// `b`'s socket (root's listener), and the believer, looking at the path without following it,
/// found "no socket file there, no claim". Master `a` hangs and looks healthy for ever.
#[test]
fn attack4_a_symlink_to_another_masters_socket_keeps_a_hung_master_looking_healthy() {
    let dir = shared_tempdir();
    let d = dir.path();
    let run = www_data_dir(d, "run");
    let a = master_in(d, &run, "a");
    let b = master_in(d, &run, "b");
    let file = target_file(d, &a);
    let out = watch(d, &file, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    a.freeze();
    let (a_sock, b_sock) = (a.socket.display().to_string(), b.socket.display().to_string());
    assert!(as_www_data(&["ln", "-sf", &b_sock, &a_sock]));
    let out = watch(d, &file, &["--dry-run"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a hung master taken for healthy: another master answered through a link at its pool's \
         path: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("action=would-kill+start"),
        "{}",
        stdout(&out)
    );
    let classic = php_relaunch()
        .arg(a.target("/ping"))
        .arg("2")
        .arg("--fpm-bin")
        .arg(&a.bin)
        .arg("--fpm-config")
        .arg(&a.config)
        .arg("--state")
        .arg(d.join("classic.json"))
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_ne!(classic.status.code(), Some(0), "{}", stdout(&classic));
}
