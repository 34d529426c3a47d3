//! The pool user against `idle-stop` and `check`, fifth round (#18: root trusts only what root
//! controls; #21's opener rules). Private php-fpm masters whose sockets live in a directory
//! www-data owns, as Debian's /run/php; the attacker acts as www-data (setpriv) or as the pool's
//! own PHP code.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::os::unix::net::UnixListener;
use std::time::Duration;

use rustix::process::Signal;

use crate::attack5::php_leaves_a_responder;
use crate::common::{alive, php_relaunch, shared_tempdir, signal, stderr, stdout, wait_until};
use crate::pool_user::{WWW_DATA, as_www_data, master_in, www_data_dir};

/// `idle-stop` refuses to stop a php-fpm that is not socket-activated (#18 item 8): only a root
/// process outside php-fpm's family holding the listening socket bound to the file at the pool's
/// path counts as its activator. But that file is whatever the owner of the socket's directory
/// (www-data, /run/php) puts there: a hard link to a socket file www-data owns that a root process
/// other than php-fpm listens on (another pool's activator, `SocketUser=www-data`) makes that
/// process the pool's "activator", and root stops a php-fpm nothing will ever start again: an
/// outage of every pool of that master, chosen by the pool user.
#[test]
fn attack7_idle_stop_takes_a_hard_linked_root_socket_for_the_activator() {
    let dir = shared_tempdir();
    let d = dir.path();
    let run = www_data_dir(d, "run");
    let fpm = master_in(d, &run, "a");
    let master = fpm.master().unwrap();
    // A root activator's listening socket whose file is www-data's, as a `.socket` unit with
    // `SocketUser=www-data` (what guides to on-demand php-fpm set, so that nginx may connect) makes
    // it: the kernel lets only a file's owner hard-link a socket file.
    let daemon_socket = d.join("daemon.sock");
    let _daemon = UnixListener::bind(&daemon_socket).unwrap();
    fs::set_permissions(&daemon_socket, fs::Permissions::from_mode(0o660)).unwrap();
    chown(&daemon_socket, Some(WWW_DATA), Some(WWW_DATA)).unwrap();

    // www-data links it in at the pool's path (rename over the socket file, in its own directory).
    let planted = run.join("a.sock.new");
    assert!(as_www_data(&[
        "ln",
        &daemon_socket.display().to_string(),
        &planted.display().to_string(),
    ]));
    assert!(as_www_data(&[
        "mv",
        "-f",
        &planted.display().to_string(),
        &fpm.socket.display().to_string(),
    ]));

    let idle_stop = || {
        php_relaunch()
            .args(["idle-stop", "--fpm-config"])
            .arg(&fpm.config)
            .args(["--idle-for", "1s", "--log"])
            .arg(d.join("log"))
            .arg("--lock")
            .arg(d.join("lock"))
            .arg("--state")
            .arg(d.join("idle.json"))
            .output()
            .unwrap()
    };
    // The first run books the pool idle; the second, a second later, finds it idle long enough.
    let mut out = idle_stop();
    if out.status.code() == Some(0) {
        std::thread::sleep(Duration::from_millis(1100));
        out = idle_stop();
    }
    let stopped = !alive(master);
    if !stopped {
        fpm.stop();
    }
    assert!(
        !stopped && out.status.code() == Some(1),
        "root stopped a php-fpm that is not socket-activated: a hard link www-data put at its \
         socket path made a root daemon look like its activator (master stopped: {stopped}, exit {:?}): {}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
}

/// `check unix://SOCKET;/ping` is the container probe (a HEALTHCHECK, a Kubernetes probe, a
/// monitoring check): php-fpm's master dies (OOM killer, a crash), and a program the pool's PHP
/// left running answers on the listening socket it inherited from a worker. The socket is root's
/// (SO_PEERCRED says uid 0), so `check` says healthy for ever, with no php-fpm at all; yet the
/// kernel names who opened it (SO_PEERCRED's pid), and that process is gone.
#[test]
fn attack7_check_believes_a_socket_whose_master_is_dead() {
    let dir = shared_tempdir();
    let d = dir.path();
    let run = www_data_dir(d, "run");
    let fpm = master_in(d, &run, "a");
    let _responder = php_leaves_a_responder(d, &fpm);
    let master = fpm.master().unwrap();
    let family = crate::common::pids_of_exe(&fpm.bin);
    for pid in &family {
        signal(*pid, Signal::KILL);
    }
    wait_until("php-fpm to be gone", Duration::from_secs(5), || {
        !alive(master) && crate::common::pids_of_exe(&fpm.bin).is_empty()
    });

    let out = php_relaunch()
        .args(["check", &fpm.target("/ping"), "2"])
        .output()
        .unwrap();
    assert_ne!(
        out.status.code(),
        Some(0),
        "check says healthy with no php-fpm running: a program PHP left running answers on the \
         socket a dead master opened: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// Two replicas of a pool (`pools`, #4), their sockets in www-data's directory. Replica 2's php-fpm
/// crashes and is started again (a relaunch unlinks the old socket file first); a program its PHP
/// left running kept the old listening socket, and www-data kept a hard link to the old socket file
/// (its own, `listen.owner`), which it renames back over replica 2's new socket. The kernel says the answering socket was opened by the dead master:
/// the classic run and `watch` then ask whether the running master holds the socket at the path (it
/// does not), but `pools` believes any socket whose opener is not a live php-fpm, so replica 2
/// "serves" with no php-fpm behind its path (and `pools stop www 1` then takes the only php-fpm
/// anything reaches down: seen, exit 0, "www/1: stopped (QUIT)").
#[test]
fn attack7_pools_believes_a_socket_its_dead_master_opened() {
    let dir = shared_tempdir();
    let d = dir.path();
    let run = www_data_dir(d, "run");
    let replicas = [master_in(d, &run, "r1"), master_in(d, &run, "r2")];
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
    let r2 = &replicas[1];
    let _responder = php_leaves_a_responder(d, r2);
    let kept = run.join("kept");
    assert!(as_www_data(&[
        "ln",
        &r2.socket.display().to_string(),
        &kept.display().to_string(),
    ]));
    // Replica 2 crashes (master and workers) and is started again: a new socket at its path.
    let old = r2.master().unwrap();
    for pid in r2.pids() {
        signal(pid, Signal::KILL);
    }
    wait_until("replica 2 to be gone", Duration::from_secs(5), || {
        !alive(old) && r2.pids().is_empty()
    });
    // A relaunch unlinks a pool's socket file that a listener answers on while no root process
    // holds it, so php-fpm binds a fresh one (php-fpm refuses a path something answers on).
    fs::remove_file(&r2.socket).unwrap();
    r2.start();
    wait_until("replica 2's socket", Duration::from_secs(10), || {
        r2.socket.exists()
    });
    assert!(as_www_data(&[
        "mv",
        "-f",
        &kept.display().to_string(),
        &r2.socket.display().to_string(),
    ]));

    let out = php_relaunch()
        .args(["pools", "status", "www", "2", "--config"])
        .arg(&pools_file)
        .output()
        .unwrap();
    for fpm in &replicas {
        fpm.stop();
    }
    assert!(
        out.status.code() == Some(1) && stdout(&out).contains("untrusted-listener"),
        "replica 2's path leads to a socket its dead master opened, not to its running master's, \
         and that answer was taken for replica 2's ping (exit {:?}): {}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
}
