//! On-demand pools (#10) with the real php-fpm behind the real nginx. systemd cannot run here (it is
//! not PID 1), so tests/fixtures/activator.py holds the socket as a `.socket` unit does and starts
//! php-fpm with `FPM_SOCKETS` when a connection waits; `--read-only-dir` gives php-fpm the shipped
//! service's read-only socket directory (a mount namespace, as `ReadOnlyPaths=` makes).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::common::{
    Nginx, alive, curl_status, field, live_pid_in, php_relaunch, pids_of_exe, project,
    shared_tempdir, signal, stderr, stdout, wait_until, wait_until_quietly,
};

/// A pool whose socket the activator holds, behind an nginx.
struct OnDemand {
    bin: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    activator: Child,
    nginx: Nginx,
    // Dropped last, after the servers using it.
    dir: tempfile::TempDir,
}

impl OnDemand {
    /// With `fixed`, php-fpm runs with its socket's directory read-only (the shipped service).
    fn start(fixed: bool) -> OnDemand {
        let dir = shared_tempdir();
        let d = dir.path();
        let bin = d.join("php-fpm");
        fs::copy("/usr/sbin/php-fpm8.2", &bin).unwrap();
        fs::create_dir(d.join("sockets")).unwrap();
        fs::set_permissions(
            d.join("sockets"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let socket = d.join("sockets/www.sock");
        let config = d.join("php-fpm.conf");
        fs::write(
            &config,
            format!(
                "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\nprocess_control_timeout = 10s\n\n\
                 [www]\nuser = www-data\ngroup = www-data\nlisten = {socket}\npm = ondemand\n\
                 pm.max_children = 4\npm.process_idle_timeout = 1s\nping.path = /ping\npm.status_path = /status\n",
                d = d.display(),
                socket = socket.display(),
            ),
        )
        .unwrap();
        let mut activator = Command::new("/usr/bin/python3");
        activator
            .arg(project().join("tests/fixtures/activator.py"))
            .arg(&socket)
            .args(fixed.then_some("--read-only-dir"))
            .arg("--")
            .arg(&bin)
            .args(["--nodaemonize", "--fpm-config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let activator = activator.spawn().unwrap();
        let ready = PathBuf::from(format!("{}.ready", socket.display()));
        wait_until("the activator", Duration::from_secs(10), || ready.exists());
        let nginx = Nginx::new(d, &format!("unix:{}", socket.display()));
        fs::write(d.join("www/hello.php"), "<?php echo 'hello';\n").unwrap();
        nginx.start();
        OnDemand {
            bin,
            config,
            socket,
            activator,
            nginx,
            dir,
        }
    }

    fn status(&self, page: &str) -> String {
        curl_status(&self.nginx.url(page))
    }

    fn master(&self) -> Option<u32> {
        live_pid_in(&self.dir.path().join("php-fpm.pid"))
    }

    /// php-fpm processes of this pool's binary.
    fn processes(&self) -> Vec<u32> {
        pids_of_exe(&self.bin)
    }

    fn activations(&self) -> usize {
        fs::read_to_string(format!("{}.activations", self.socket.display()))
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn idle_stop(&self, extra: &[&str]) -> Output {
        idle_stop(self.dir.path(), ("--fpm-config", &self.config), extra)
    }

    fn log_lines(&self) -> Vec<String> {
        fs::read_to_string(self.dir.path().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits until the pool's ondemand workers have ended (pm.process_idle_timeout).
    fn wait_for_no_workers(&self) {
        wait_until("the workers to end", Duration::from_secs(10), || {
            self.processes().len() <= 1
        });
    }
}

impl Drop for OnDemand {
    fn drop(&mut self) {
        signal(self.activator.id(), Signal::TERM);
        let _ = self.activator.wait();
        for pid in self.processes() {
            signal(pid, Signal::KILL);
        }
        let _ = wait_until_quietly(Duration::from_secs(5), || self.processes().is_empty());
    }
}

/// `php-relaunch idle-stop POOL EXTRA…` with its state, log and lock in `dir`; `pool` is
/// `("--fpm-config", CONF)` or `("--pid-file", PATH)`.
fn idle_stop(dir: &Path, pool: (&str, &Path), extra: &[&str]) -> Output {
    php_relaunch()
        .arg("idle-stop")
        .arg(pool.0)
        .arg(pool.1)
        .arg("--state")
        .arg(dir.join("idle.json"))
        .arg("--log")
        .arg(dir.join("log"))
        .arg("--lock")
        .arg(dir.join("lock"))
        .args(extra)
        .output()
        .unwrap()
}

/// Stops the master the way `idle-stop` and the old recipe both do (QUIT) and waits for it.
fn quit_master(pool: &OnDemand) {
    let master = pool.master().expect("a master runs");
    signal(master, Signal::QUIT);
    wait_until("the master to exit", Duration::from_secs(15), || {
        !alive(master)
    });
    wait_until("its workers to exit", Duration::from_secs(15), || {
        pool.processes().is_empty()
    });
}

#[test]
fn php_fpm_unlinks_its_socket_unless_the_directory_is_read_only() {
    // The known recipe: php-fpm started by its socket, stopped when idle. It loses the socket.
    let recipe = OnDemand::start(false);
    assert_eq!(recipe.status("hello.php"), "200");
    assert_eq!(recipe.activations(), 1);
    quit_master(&recipe);
    assert!(!recipe.socket.exists(), "php-fpm removed the path on exit");
    assert_eq!(recipe.status("hello.php"), "502", "the site is down");

    // The shipped fix: the unlink fails in php-fpm's read-only view of the directory.
    let fixed = OnDemand::start(true);
    assert_eq!(fixed.status("hello.php"), "200");
    quit_master(&fixed);
    assert!(fixed.socket.exists());
    assert_eq!(fixed.status("hello.php"), "200", "activated afresh");
    assert_eq!(fixed.activations(), 2);
}

#[test]
fn idle_stop_stops_a_pool_idle_for_long_enough_and_never_a_busy_one() {
    let pool = OnDemand::start(true);
    assert_eq!(pool.status("hello.php"), "200");
    let master = pool.master().unwrap();

    // Busy: a request in flight.
    let url = pool.nginx.url("slow.php?s=3");
    let slow = thread::spawn(move || curl_status(&url));
    wait_until("the slow request", Duration::from_secs(5), || {
        pool.processes().len() >= 2
    });
    thread::sleep(Duration::from_millis(300));
    let out = pool.idle_stop(&["--idle-for", "1s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(alive(master), "busy: not stopped");
    assert_eq!(slow.join().unwrap(), "200");

    // Idle, but not yet for --idle-for.
    let out = pool.idle_stop(&["--idle-for", "1h"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(alive(master), "idle for less than --idle-for: not stopped");
    assert!(pool.log_lines().is_empty(), "nothing done, nothing logged");

    // Idle long enough: stopped, and the socket still takes the next request.
    pool.wait_for_no_workers();
    let started = Instant::now();
    let stopped = loop {
        let out = pool.idle_stop(&["--idle-for", "1s"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), "");
        if !alive(master) {
            break out;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never stopped");
        thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(stderr(&stopped), "");
    assert!(pool.processes().is_empty(), "master and workers gone");
    assert!(pool.socket.exists());
    let line = pool.log_lines().pop().unwrap();
    assert_eq!(field(&line, "action"), Some("idle-stop"), "{line}");
    assert_eq!(
        field(&line, "old_pid"),
        Some(master.to_string().as_str()),
        "{line}"
    );
    // Asleep: nothing to do, and idle-stop itself does not wake it.
    let out = pool.idle_stop(&["--idle-for", "1s"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(pool.activations(), 1);
    assert_eq!(pool.log_lines().len(), 1);
    assert_eq!(pool.status("hello.php"), "200", "activated afresh");
    assert_eq!(pool.activations(), 2);
}

#[test]
fn idle_stop_with_a_log_it_cannot_write_stops_nothing() {
    let pool = OnDemand::start(true);
    assert_eq!(pool.status("hello.php"), "200");
    let master = pool.master().unwrap();
    pool.wait_for_no_workers();
    let not_a_log = pool.dir.path().join("not-a-log");
    fs::create_dir(&not_a_log).unwrap();
    for _ in 0..3 {
        let out = php_relaunch()
            .arg("idle-stop")
            .arg("--fpm-config")
            .arg(&pool.config)
            .arg("--state")
            .arg(pool.dir.path().join("idle.json"))
            .arg("--log")
            .arg(&not_a_log)
            .arg("--lock")
            .arg(pool.dir.path().join("lock"))
            .args(["--idle-for", "1s"])
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        assert!(stderr(&out).contains("not-a-log"), "{}", stderr(&out));
        assert!(alive(master), "exit 2, and nothing was done");
        thread::sleep(Duration::from_millis(700));
    }
}

#[test]
fn a_request_in_flight_while_idle_stop_decides_finishes() {
    let pool = OnDemand::start(true);
    for _ in 0..3 {
        assert_eq!(pool.status("hello.php"), "200");
        pool.wait_for_no_workers();
        // Idle since long ago, so the next idle look stops it; a request arrives at that moment.
        fs::write(pool.dir.path().join("idle.json"), r#"{"idle_since": 1}"#).unwrap();
        let url = pool.nginx.url("slow.php?s=1");
        let request = thread::spawn(move || curl_status(&url));
        let out = pool.idle_stop(&["--idle-for", "1s"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(request.join().unwrap(), "200", "{}", stderr(&out));
    }
}

#[test]
fn a_pool_that_is_not_socket_activated_is_never_stopped() {
    let dir = shared_tempdir();
    let fpm = crate::common::Fpm::new(dir.path());
    fpm.start();
    let master = fpm.master().unwrap();
    let out = idle_stop(
        dir.path(),
        ("--fpm-config", &fpm.config),
        &["--idle-for", "1s"],
    );
    assert_eq!(out.status.code(), Some(1));
    let said = stderr(&out);
    assert!(
        said.starts_with("php-relaunch: refusing to stop the php-fpm of ")
            && said.ends_with("(it is not socket-activated)\n")
            && said.lines().count() == 1,
        "{said}"
    );
    assert!(alive(master));

    // Named by its pid file, the same.
    let out = idle_stop(
        dir.path(),
        ("--pid-file", &fpm.pid_file),
        &["--idle-for", "1s"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("(it is not socket-activated)"));
    assert!(alive(master));
    assert_eq!(
        fs::read_to_string(dir.path().join("log")).unwrap_or_default(),
        "",
        "nothing logged"
    );
}

#[test]
fn a_watching_run_does_not_wake_a_sleeping_pool_and_alerts_when_its_socket_is_lost() {
    let pool = OnDemand::start(true);
    let target = format!("unix://{};/ping", pool.socket.display());
    let d = pool.dir.path();
    let run = |extra: &[&str]| {
        php_relaunch()
            .arg(&target)
            .args(["2", "", "--on-demand", "--fpm-bin"])
            .arg(&pool.bin)
            .arg("--fpm-config")
            .arg(&pool.config)
            .arg("--log")
            .arg(d.join("run.log"))
            .arg("--lock")
            .arg(d.join("lock"))
            .arg("--state")
            .arg(d.join("run.json"))
            .args(extra)
            .output()
            .unwrap()
    };
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!((stdout(&out).as_str(), stderr(&out).as_str()), ("", ""));
    assert_eq!(pool.activations(), 0, "no connection: the pool sleeps on");
    assert!(pool.processes().is_empty());
    let dry = run(&["--dry-run"]);
    assert_eq!(
        field(&stdout(&dry), "state"),
        Some("idle"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(pool.activations(), 0);

    // Awake, it is probed as usual.
    assert_eq!(pool.status("hello.php"), "200");
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    quit_master(&pool);

    // The socket file gone while nothing runs: the outage this mode is for. Alert, start nothing.
    fs::remove_file(&pool.socket).unwrap();
    let activations = pool.activations();
    let out = run(&[]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let line = fs::read_to_string(d.join("run.log")).unwrap();
    assert_eq!(field(&line, "state"), Some("socket-lost"), "{line}");
    assert!(
        field(&line, "error").is_some_and(|e| e.contains("its socket") && e.contains(" is gone")),
        "{line}"
    );
    assert!(
        pool.processes().is_empty(),
        "php-fpm is never started by hand"
    );
    assert_eq!(pool.activations(), activations);
}

#[test]
fn under_light_load_with_idle_gaps_pools_sleep_and_wake_without_a_failed_request() {
    let pool = OnDemand::start(true);
    let stopper = {
        let (config, dir) = (pool.config.clone(), pool.dir.path().to_owned());
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let finished = std::sync::Arc::clone(&done);
        let handle = thread::spawn(move || {
            while !finished.load(std::sync::atomic::Ordering::SeqCst) {
                let out = idle_stop(&dir, ("--fpm-config", &config), &["--idle-for", "1s"]);
                assert!(out.status.success(), "{}", stderr(&out));
                thread::sleep(Duration::from_secs(1));
            }
        });
        (done, handle)
    };
    // Gaps of 0 to 8 s from a fixed sequence, so the run is the same every time.
    let mut seed: u32 = 12_345;
    let mut failed = Vec::new();
    let mut requests = 0;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(100) {
        let status = pool.status("hello.php");
        requests += 1;
        if status != "200" {
            failed.push(status);
        }
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        thread::sleep(Duration::from_millis(u64::from(seed >> 16) % 8001));
    }
    stopper.0.store(true, std::sync::atomic::Ordering::SeqCst);
    stopper.1.join().unwrap();
    let stops = pool
        .log_lines()
        .iter()
        .filter(|l| field(l, "action") == Some("idle-stop"))
        .count();
    eprintln!(
        "{requests} requests, {} activations, {stops} idle stops",
        pool.activations()
    );
    assert!(failed.is_empty(), "failed: {failed:?}");
    assert!(stops >= 10, "{stops} idle stops");
    assert!(pool.activations() >= 10);
}

#[test]
fn the_shipped_units_pass_systemd_analyze_verify() {
    let dir = shared_tempdir();
    for unit in ["php-fpm-ondemand@.socket", "php-fpm-ondemand@.service"] {
        fs::copy(project().join("systemd").join(unit), dir.path().join(unit)).unwrap();
    }
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(dir.path().join("php-fpm-ondemand@www.socket"))
        .arg(dir.path().join("php-fpm-ondemand@www.service"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let service = fs::read_to_string(dir.path().join("php-fpm-ondemand@.service")).unwrap();
    for setting in [
        "Environment=FPM_SOCKETS=/run/php-fpm-ondemand/%i.sock=3",
        "--nodaemonize",
        "ReadOnlyPaths=/run/php-fpm-ondemand",
    ] {
        assert!(service.contains(setting), "{setting}");
    }
    // The example config keeps what php-fpm writes out of the read-only directory.
    let example = fs::read_to_string(project().join("examples/php-fpm-ondemand.conf")).unwrap();
    for setting in [
        "pm = ondemand",
        "process_control_timeout",
        "listen = /run/php-fpm-ondemand/www.sock",
        "pid = /run/php-fpm-ondemand-www/",
    ] {
        assert!(example.contains(setting), "{setting}");
    }
}
