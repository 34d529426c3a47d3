//! `watch` (#21) and the classic run against the pool user, fourth round (#18: root trusts only
//! what root controls). Private php-fpm masters from a copy of Debian's binary; the attacker acts
//! only as the pool's own PHP code could (a script that starts a program in the background).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use rustix::process::Signal;

use crate::attack5::php_leaves_a_responder;
use crate::common::{Fpm, alive, shared_tempdir, signal, stderr, stdout, wait_until};
use crate::pool_user::watch;

/// A `[discover]` watch file for `fpm`'s configuration and nothing to control it by: alert-only.
fn alert_only_file(d: &Path, fpm: &Fpm) -> PathBuf {
    let file = d.join("watch.toml");
    fs::write(
        &file,
        format!(
            "timeout = 2\npause_file = \"{d}/pause\"\n\n[discover]\nfpm_configs = [\"{conf}\"]\n",
            d = d.display(),
            conf = fpm.config.display()
        ),
    )
    .unwrap();
    file
}

/// An alert-only discovered pool on TCP: its master crashes (SIGKILL of the whole family, as the
/// OOM killer would), but a program its PHP left running holds the listening port it inherited
/// (root's, so trusted by owner) and answers. A unix pool is believed only from a socket its own
/// master opened; a TCP one is believed with no master at all, so the dead php-fpm is never
/// alerted.
#[test]
fn attack6_an_alert_only_tcp_pool_is_believed_without_its_master() {
    let dir = shared_tempdir();
    let d = dir.path();
    let fpm = Fpm::new_tcp(d);
    fpm.start();
    let file = alert_only_file(d, &fpm);
    let out = watch(d, &file, &["--dry-run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let _responder = php_leaves_a_responder(d, &fpm);

    for pid in fpm.pids() {
        signal(pid, Signal::KILL);
    }
    wait_until(
        "php-fpm to be gone",
        std::time::Duration::from_secs(10),
        || fpm.pids().iter().all(|&pid| !alive(pid)),
    );
    let out = watch(d, &file, &["--dry-run"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a dead alert-only php-fpm taken for healthy: a program PHP left running answered on the \
         TCP port it inherited: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Two replicas of a pool (`pools`, #4): the second's php-fpm hangs (SIGSTOP of master and
/// workers) while a program its PHP left running answers on the socket it inherited. A `watch` or
/// classic run says a stopped master answers for nothing; `pools` still takes that replica for
/// serving, so `pools stop` takes the only working replica down.
#[test]
fn attack6_pools_stop_counts_a_replica_whose_master_is_stopped_as_serving() {
    let dir = shared_tempdir();
    let d = dir.path();
    let replicas: Vec<Fpm> = (1..=2)
        .map(|n| {
            let home = d.join(format!("r{n}"));
            fs::create_dir(&home).unwrap();
            let fpm = Fpm::new(&home);
            fpm.start();
            fpm
        })
        .collect();
    let mut toml = format!(
        "[pools.www]\nbalancer = \"nginx\"\nrelease_link = \"{}/current\"\n",
        d.display()
    );
    for fpm in &replicas {
        let _ = write!(
            toml,
            "\n[[pools.www.replicas]]\nfpm_bin = \"{}\"\nfpm_config = \"{}\"\nping = \"unix://{};/ping\"\n",
            fpm.bin.display(),
            fpm.config.display(),
            fpm.socket.display()
        );
    }
    let pools_file = d.join("pools.toml");
    fs::write(&pools_file, toml).unwrap();
    let _responder = php_leaves_a_responder(d, &replicas[1]);
    replicas[1].freeze();

    let out = crate::common::php_relaunch()
        .args(["pools", "stop", "www", "1", "--config"])
        .arg(&pools_file)
        .arg("--log")
        .arg(d.join("log"))
        .arg("--lock")
        .arg(d.join("lock"))
        .output()
        .unwrap();
    assert!(
        replicas[0].master().is_some(),
        "the only working replica stopped, a hung one taken for serving (exit {:?}): {}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
}
