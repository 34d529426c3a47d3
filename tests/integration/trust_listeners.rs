//! #18 items 1, 7 and 8: a healthy answer counts only from a listener root trusts, an orphan only if
//! it holds the pool's own listening socket, and a socket's holder is matched by the bound file's
//! inode in our mount namespace, never by its path string. The attacker is `nobody` or `www-data`
//! (setpriv), against private php-fpm and nginx instances.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use rustix::process::Signal;

use crate::common::{
    Fpm, NOBODY, Site, alive, field, free_port, php_relaunch, shared_tempdir, signal, state,
    stderr, stdout, wait_until,
};
use crate::pool_user::WWW_DATA;

/// How [`pong`] binds: as soon as it can (trying again every half millisecond, so it takes a port the
/// moment it is freed).
const BIND: &str = r#"
import os, socket, struct, sys, threading, time
kind, where, mark = sys.argv[1:4]
if kind == "tcp":
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    addr = ("127.0.0.1", int(where))
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    addr = where
    try:
        os.unlink(where)
    except OSError:
        pass
while True:
    try:
        s.bind(addr)
        break
    except OSError:
        time.sleep(0.0005)
if kind == "unix":
    os.chmod(where, 0o666)
"#;

/// A FastCGI server that answers every request "pong" with status 200, as an unprivileged user
/// would run it: bound as [`BIND`] says, then [`crate::pong::serving`]; it leaves a mark file.
fn pong() -> String {
    format!("{BIND}{}", crate::pong::serving())
}

/// Mounts a tmpfs over a directory in a mount namespace of its own, binds and holds a listening
/// socket at the same path there, and leaves a mark file outside.
const NAMESAKE: &str = r#"
import ctypes, os, socket, sys, time
where, mark = sys.argv[1:3]
libc = ctypes.CDLL(None, use_errno=True)
if libc.mount(b"none", os.path.dirname(where).encode(), b"tmpfs", 0, None) != 0:
    sys.exit("mount: errno %d" % ctypes.get_errno())
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.bind(where)
s.listen(8)
open(mark, "w").close()
while True:
    time.sleep(60)
"#;

/// An attacker's process, ended by pid when dropped.
struct Attacker {
    child: Child,
    mark: PathBuf,
    _dir: tempfile::TempDir,
}

impl Attacker {
    /// `python3 -c SCRIPT ARGS… MARK` as `uid`, through setpriv (and `unshare -Urm` when `own_ns`).
    fn spawn(uid: u32, own_ns: bool, script: &str, args: &[&str]) -> Attacker {
        let dir = shared_tempdir();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
        let mark = dir.path().join("bound");
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups");
        if own_ns {
            cmd.args(["unshare", "-Urm"]);
        }
        let child = cmd
            .args(["/usr/bin/python3", "-c", script])
            .args(args)
            .arg(&mark)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        Attacker {
            child,
            mark,
            _dir: dir,
        }
    }

    /// A "pong" FastCGI server on a loopback port.
    fn pong_tcp(uid: u32, port: u16) -> Attacker {
        Attacker::spawn(uid, false, &pong(), &["tcp", &port.to_string()])
    }

    /// A "pong" FastCGI server on a unix socket path.
    fn pong_unix(uid: u32, path: &Path) -> Attacker {
        Attacker::spawn(uid, false, &pong(), &["unix", &path.display().to_string()])
    }

    fn bound(&self) -> bool {
        self.mark.exists()
    }

    fn wait_bound(&self) {
        wait_until("the attacker's socket", Duration::from_secs(10), || {
            self.bound()
        });
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        // setpriv and unshare exec: the child is the python process itself.
        signal(self.child.id(), Signal::KILL);
        let _ = self.child.wait();
    }
}

/// The site's php-fpm on a TCP port instead of its unix socket, nginx in front of it.
fn tcp_site() -> Site {
    let dir = shared_tempdir();
    let fpm = Fpm::new_tcp(dir.path());
    fpm.start();
    let upstream = format!("127.0.0.1:{}", fpm.port.expect("a TCP instance"));
    Site::around(dir, fpm, &upstream)
}

/// The site's php-fpm on a unix socket in a directory the pool user owns, as /run/php on Debian.
fn site_with_socket_in_pool_users_dir() -> Site {
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
    let upstream = format!("unix:{}", fpm.socket.display());
    Site::around(dir, fpm, &upstream)
}

fn last_line(site: &Site) -> String {
    site.log_lines().pop().unwrap_or_default()
}

/// The run's outcome must not be healthy, and its log line must name the untrusted listener's uid.
fn assert_untrusted(site: &Site, out: &Output, uid: u32) {
    let line = last_line(site);
    assert_ne!(
        out.status.code(),
        Some(0),
        "{line}\n{}{}",
        stdout(out),
        stderr(out)
    );
    assert_eq!(
        field(&line, "verdict"),
        Some("untrusted-listener"),
        "{line}"
    );
    assert!(
        field(&line, "error").is_some_and(|e| e.contains(&format!("uid {uid}"))),
        "{line}"
    );
    assert_ne!(field(&line, "state"), Some("relaunched"), "{line}");
}

#[test]
fn item_1_an_answer_from_a_listener_root_does_not_trust_never_counts_as_healthy() {
    // FastCGI over TCP: php-fpm is dead and nobody answers "pong" on its port.
    let site = tcp_site();
    let port = site.fpm.port.unwrap();
    let fcgi = site.fpm.target("/ping");
    site.fpm.stop();
    let nobody = Attacker::pong_tcp(NOBODY, port);
    nobody.wait_bound();
    let out = site.run(&fcgi, "2", &[]);
    assert_untrusted(&site, &out, NOBODY);
    assert!(site.fpm.master().is_none(), "the port is nobody's");
    // The HTTP heartbeat through the root nginx: nginx's listener is root's, but the pool's is not.
    let out = site.run(&site.heartbeat(), "2", &[]);
    assert_untrusted(&site, &out, NOBODY);
    // `check` says the same, without relaunching anything.
    let out = php_relaunch().args(["check", &fcgi, "2"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("untrusted-listener"),
        "{}",
        stdout(&out)
    );
    drop(nobody);

    // Between the kill and the start of a relaunch, www-data takes the port: php-fpm cannot bind
    // it, and www-data's "pong" must not make the relaunch a success.
    let site = tcp_site();
    let port = site.fpm.port.unwrap();
    site.fpm.freeze();
    let www_data = Attacker::pong_tcp(WWW_DATA, port);
    let out = site.run(&site.fpm.target("/ping"), "1", &[]);
    assert!(www_data.bound(), "www-data took the port");
    let line = last_line(&site);
    assert!(
        field(&line, "action").is_some_and(|a| a.starts_with("kill+start")),
        "{line}"
    );
    assert_eq!(out.status.code(), Some(1), "{line}");
    assert_eq!(field(&line, "state"), Some("down"), "{line}");
    assert!(
        site.fpm.master().is_none(),
        "php-fpm could not bind its port"
    );
    let out = site.run(&site.fpm.target("/ping"), "1", &[]);
    assert_ne!(out.status.code(), Some(0), "{}", last_line(&site));
    assert_ne!(field(&last_line(&site), "state"), Some("recovered"));
    drop(www_data);

    // The unix socket in a directory www-data owns (/run/php on Debian): php-fpm is dead, www-data
    // binds the path, nginx serves its "pong" as the heartbeat.
    let site = site_with_socket_in_pool_users_dir();
    site.fpm.stop();
    let www_data = Attacker::pong_unix(WWW_DATA, &site.fpm.socket);
    www_data.wait_bound();
    assert!(site.heartbeat_ok(), "nginx serves www-data's answer");
    let out = site.run(&site.heartbeat(), "2", &[]);
    assert_untrusted(&site, &out, WWW_DATA);
    let out = site.run(&site.fpm.target("/ping"), "2", &[]);
    assert_untrusted(&site, &out, WWW_DATA);
}

#[test]
fn item_1_pools_stop_keeps_the_only_real_replica_when_nobody_answers_for_the_other() {
    let dir = shared_tempdir();
    let replicas: Vec<Fpm> = (1..=2)
        .map(|n| {
            let home = dir.path().join(format!("r{n}"));
            fs::create_dir(&home).unwrap();
            let fpm = Fpm::new_tcp(&home);
            fpm.start();
            fpm
        })
        .collect();
    let mut toml = "[pools.www]\nbalancer = \"nginx\"\ndrain_timeout = 2\n".to_owned();
    for fpm in &replicas {
        let _ = write!(
            toml,
            "\n[[pools.www.replicas]]\nfpm_bin = \"{}\"\nfpm_config = \"{}\"\nping = \"{}\"\n",
            fpm.bin.display(),
            fpm.config.display(),
            fpm.target("/ping")
        );
    }
    let pools_file = dir.path().join("pools.toml");
    fs::write(&pools_file, toml).unwrap();
    replicas[1].stop();
    let nobody = Attacker::pong_tcp(NOBODY, replicas[1].port.unwrap());
    nobody.wait_bound();
    let real = replicas[0].master().unwrap();

    let out = php_relaunch()
        .args(["pools", "stop", "www", "1", "--config"])
        .arg(&pools_file)
        .arg("--log")
        .arg(dir.path().join("log"))
        .arg("--lock")
        .arg(dir.path().join("lock"))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(
        stdout(&out),
        "www/1: refusing to stop www/1: no other replica of pool 'www' is serving\n"
    );
    assert!(alive(real), "the only real replica keeps serving");
}

/// A php-fpm of the trusted binary, run by www-data with a pool named like the real one (`www`) on
/// a socket of its own, its master killed and its one worker SIGSTOPped: an orphan in name only.
fn orphan_impostor(bin: &Path) -> (tempfile::TempDir, u32) {
    let dir = shared_tempdir();
    let d = dir.path();
    std::os::unix::fs::chown(d, Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    let config = d.join("impostor.conf");
    fs::write(
        &config,
        format!(
            "[global]\npid = {d}/impostor.pid\nerror_log = {d}/impostor.log\ndaemonize = no\n\n\
             [www]\nlisten = {d}/impostor.sock\npm = static\npm.max_children = 1\n",
            d = d.display()
        ),
    )
    .unwrap();
    let mut master = Command::new("setpriv")
        .args([
            &format!("--reuid={WWW_DATA}"),
            &format!("--regid={WWW_DATA}"),
            "--clear-groups",
        ])
        .arg(bin)
        .args(["--nodaemonize", "--fpm-config"])
        .arg(&config)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let workers = |master: u32| -> Vec<u32> {
        crate::common::pids_of_exe(bin)
            .into_iter()
            .filter(|&p| {
                fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                    stat.rsplit(')')
                        .next()
                        .and_then(|s| s.split_whitespace().nth(1))
                        == Some(master.to_string().as_str())
                })
            })
            .collect()
    };
    let pid = master.id();
    wait_until("the impostor's worker", Duration::from_secs(10), || {
        workers(pid).len() == 1
    });
    let worker = workers(pid)[0];
    signal(worker, Signal::STOP);
    wait_until("the worker to stop", Duration::from_secs(5), || {
        state(worker) == Some('T')
    });
    signal(pid, Signal::KILL);
    let _ = master.wait();
    (dir, worker)
}

#[test]
fn item_7_an_orphan_impostor_does_not_turn_a_graceful_restart_into_kill_and_start() {
    let site = Site::start();
    let real = site.fpm.master().unwrap();
    let (_dir, orphan) = orphan_impostor(&site.fpm.bin);
    // A failing FastCGI heartbeat (nothing on this port) with the real master alive and idle.
    let refused = format!("fcgi://127.0.0.1:{}/ping", free_port());
    let out = site.run(&refused, "2", &["--dry-run"]);
    let said = stdout(&out);
    assert_eq!(field(&said, "action"), Some("would-restart"), "{said}");
    assert!(alive(real));
    assert_eq!(
        state(orphan),
        Some('T'),
        "the impostor's orphan is left alone"
    );
    signal(orphan, Signal::KILL);
}

/// A socket bound once at `path` and left as a file with nothing listening on it.
fn stale_socket(path: &Path) {
    drop(UnixListener::bind(path).unwrap());
}

#[test]
fn item_8_a_socket_bound_at_the_same_path_in_another_mount_namespace_holds_nothing() {
    // idle-stop: a pool that is not socket-activated, while nobody holds its path elsewhere.
    let dir = shared_tempdir();
    let fpm = Fpm::new(dir.path());
    fpm.start();
    let master = fpm.master().unwrap();
    let namesake = |socket: &Path| {
        let nobody = Attacker::spawn(NOBODY, true, NAMESAKE, &[&socket.display().to_string()]);
        nobody.wait_bound();
        nobody
    };
    let nobody = namesake(&fpm.socket);
    let out = php_relaunch()
        .args(["idle-stop", "--fpm-config"])
        .arg(&fpm.config)
        .args(["--idle-for", "1s", "--log"])
        .arg(dir.path().join("log"))
        .arg("--lock")
        .arg(dir.path().join("lock"))
        .arg("--state")
        .arg(dir.path().join("idle.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).ends_with("(it is not socket-activated)\n"),
        "{}",
        stderr(&out)
    );
    assert!(alive(master));
    drop(nobody);
    fpm.stop();

    // --on-demand: a stale socket file, and nobody's namesake elsewhere, is lost, not asleep.
    stale_socket(&fpm.socket);
    let _nobody = namesake(&fpm.socket);
    let out = php_relaunch()
        .arg(fpm.target("/ping"))
        .args(["2", "", "--on-demand"])
        .args(fpm.direct_args())
        .arg("--log")
        .arg(dir.path().join("run.log"))
        .arg("--lock")
        .arg(dir.path().join("lock"))
        .arg("--state")
        .arg(dir.path().join("run.json"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let line = fs::read_to_string(dir.path().join("run.log")).unwrap();
    assert_eq!(field(&line, "state"), Some("socket-lost"), "{line}");
    assert!(
        field(&line, "error").is_some_and(|e| e.contains("stale")),
        "{line}"
    );
    assert!(fpm.master().is_none(), "php-fpm is never started by hand");
}
