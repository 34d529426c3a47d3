//! Plans root makes from what others can show (#18): a pool's listener judged by the socket php-fpm
//! itself binds, not by any other address on its port; a stopped worker or an orphan of the pool
//! user never turns a graceful restart of a live master into kill+start. The attacker is `nobody`
//! or `www-data`, against private php-fpm and nginx instances.

use std::fs;
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;

use crate::common::{Fpm, Nginx, Site, field, shared_tempdir, signal, stderr, stdout, wait_until};
use crate::pong::{Attacker, WWW_DATA};

/// A pool with `listen = localhost:PORT` (php-fpm binds 127.0.0.1:PORT); `nobody` listens on
/// 127.0.0.2:PORT, which takes no connection of nginx's. The run must leave the healthy php-fpm
/// alone: `nobody`'s listener is not the pool's.
#[test]
fn nobody_on_another_address_of_a_named_pool_port_leaves_a_healthy_php_fpm_alone() {
    let dir = shared_tempdir();
    let fpm = Fpm::new_tcp(dir.path());
    let port = fpm.port.unwrap();
    let conf = fs::read_to_string(&fpm.config)
        .unwrap()
        .replace(&format!("127.0.0.1:{port}"), &format!("localhost:{port}"));
    fs::write(&fpm.config, conf).unwrap();
    fpm.start();
    let nginx = Nginx::new(dir.path(), &format!("127.0.0.1:{port}"));
    nginx.start();
    let site = Site {
        log: dir.path().join("php-relaunch.log"),
        lock: dir.path().join("php-relaunch.lock"),
        state: dir.path().join("state.json"),
        fpm,
        nginx,
        dir,
    };
    assert!(site.heartbeat_ok());
    let _nobody = Attacker::pong(crate::common::NOBODY, "tcp", &format!("127.0.0.2:{port}"));
    assert!(site.heartbeat_ok(), "nginx still reaches php-fpm");

    let out = site.run(&site.heartbeat(), "2", &["--dry-run"]);
    let line = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "a healthy php-fpm would be restarted: {line}\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// The pool user SIGSTOPs one of the real pool's workers (they run as itself): a relaunch of the
/// live master must stay a graceful restart, not kill+start.
#[test]
fn a_worker_the_pool_user_stopped_leaves_the_restart_graceful() {
    let site = Site::start();
    let master = site.fpm.master().unwrap();
    let worker = site.fpm.pids().into_iter().find(|&p| p != master).unwrap();
    let stopped = Command::new("setpriv")
        .arg(format!("--reuid={WWW_DATA}"))
        .arg(format!("--regid={WWW_DATA}"))
        .arg("--clear-groups")
        .args(["kill", "-STOP", &worker.to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());

    // A check the operator set to relaunch on 404 (a missing ping page), dry: what would it do?
    let out = site.run(
        &site.fpm.target("/no-such-page"),
        "2",
        &["--relaunch-on", "404", "--dry-run"],
    );
    signal(worker, Signal::CONT);
    let line = stdout(&out);
    assert_eq!(
        field(&line, "action"),
        Some("would-restart"),
        "{line}\n{}",
        stderr(&out)
    );
}

/// The pool user SIGSTOPs every worker of the pool: the heartbeat times out and php-fpm does not
/// answer on its own socket either, so php-fpm is relaunched, but its master is healthy and takes a
/// graceful restart (the stopped workers are continued first, then end with it), not kill+start.
#[test]
fn workers_the_pool_user_stopped_are_ended_by_a_graceful_restart() {
    let site = Site::start();
    let master = site.fpm.master().unwrap();
    let workers: Vec<u32> = site
        .fpm
        .pids()
        .into_iter()
        .filter(|&p| p != master)
        .collect();
    assert_eq!(workers.len(), 2, "pm.max_children = 2");
    let mut kill = Command::new("setpriv");
    kill.arg(format!("--reuid={WWW_DATA}"))
        .arg(format!("--regid={WWW_DATA}"))
        .arg("--clear-groups")
        .args(["kill", "-STOP"])
        .args(workers.iter().map(u32::to_string));
    assert!(kill.status().unwrap().success());
    wait_until("the workers to stop", Duration::from_secs(5), || {
        workers
            .iter()
            .all(|&p| crate::common::state(p) == Some('T'))
    });

    let out = site.run(&site.heartbeat(), "2", &[]);
    let lines = site.log_lines();
    assert_eq!(lines.len(), 1, "{lines:?}\n{}", stderr(&out));
    let line = &lines[0];
    assert_eq!(field(line, "verdict"), Some("timeout"), "{line}");
    assert_eq!(field(line, "action"), Some("restart"), "{line}");
    assert_eq!(field(line, "state"), Some("healthy"), "{line}");
    for pid in workers {
        assert!(!crate::common::alive(pid), "stopped worker {pid} survived");
    }
    assert_ne!(site.fpm.master(), Some(master), "a new master runs");
    assert!(site.heartbeat_ok());
}
