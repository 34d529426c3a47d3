//! Redundant pool replicas (#4): two private php-fpm masters behind a private nginx whose upstream is
//! the project's nginx/pool-upstream.conf, driven by `php-relaunch pools` under real load.

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use crate::common::{Apache, Fpm, Nginx, alive, free_port, shared_tempdir, stderr, stdout};

/// Two replicas of pool `www` and an nginx in front of them.
struct Pool {
    replicas: Vec<Fpm>,
    nginx: Nginx,
    pools_file: PathBuf,
    log: PathBuf,
    dir: tempfile::TempDir,
}

impl Pool {
    /// `root` is the web root nginx serves (relative to the test directory).
    fn start(root: &str) -> Pool {
        let dir = shared_tempdir();
        let www = dir.path().join("www");
        fs::create_dir_all(&www).unwrap();
        fs::write(www.join("hello.php"), "<?php echo 'hello';\n").unwrap();
        fs::write(www.join("slow.php"), "<?php sleep(2); echo 'slow done';\n").unwrap();
        let replicas: Vec<Fpm> = (1..=2)
            .map(|n| {
                let home = dir.path().join(format!("r{n}"));
                fs::create_dir(&home).unwrap();
                let fpm = Fpm::new(&home);
                let conf = fs::read_to_string(&fpm.config).unwrap() + "pm.max_children = 4\n";
                fs::write(&fpm.config, conf).unwrap();
                fpm.start();
                fpm
            })
            .collect();
        let upstream =
            fs::read_to_string(crate::common::project().join("nginx/pool-upstream.conf"))
                .unwrap()
                .replace(
                    "/run/php-relaunch/www-1.sock",
                    &replicas[0].socket.display().to_string(),
                )
                .replace(
                    "/run/php-relaunch/www-2.sock",
                    &replicas[1].socket.display().to_string(),
                );
        fs::write(dir.path().join("pool-upstream.conf"), upstream).unwrap();
        fs::copy(
            "/etc/nginx/fastcgi_params",
            dir.path().join("fastcgi_params"),
        )
        .unwrap();
        let port = free_port();
        let d = dir.path().display();
        let nginx = Nginx::custom(
            dir.path(),
            port,
            &format!(
                "user www-data;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
                 events {{ worker_connections 256; }}\n\
                 http {{\n  access_log off;\n  include {d}/pool-upstream.conf;\n\
                 server {{\n    listen 127.0.0.1:{port};\n    root {d}/{root};\n\
                 location ~ \\.php$ {{\n      include fastcgi_params;\n\
                 fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n\
                 fastcgi_pass php_www;\n      fastcgi_next_upstream error timeout;\n      fastcgi_next_upstream_tries 0;\n\
                 }}\n  }}\n}}\n"
            ),
        );
        nginx.start();
        let pools_file = dir.path().join("pools.toml");
        let mut toml = format!(
            "[pools.www]\nbalancer = \"nginx\"\nrelease_link = \"{d}/current\"\ndrain_timeout = 10\n"
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
        fs::write(&pools_file, toml).unwrap();
        Pool {
            replicas,
            nginx,
            log: dir.path().join("log"),
            pools_file,
            dir,
        }
    }

    fn pools(&self, args: &[&str]) -> Output {
        pools_command(&self.pools_file, self.dir.path(), args)
    }

    fn url(&self, page: &str) -> String {
        self.nginx.url(page)
    }
}

/// Requests from `clients` keep-alive connections until stopped; what came back.
struct Load {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
    threads: Vec<thread::JoinHandle<Vec<Result<String, String>>>>,
}

impl Load {
    fn start(url: &str, clients: usize) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let threads = (0..clients)
            .map(|_| {
                let (stop, count, url) = (Arc::clone(&stop), Arc::clone(&count), url.to_owned());
                thread::spawn(move || {
                    let agent: ureq::Agent = ureq::Agent::config_builder()
                        .timeout_global(Some(Duration::from_secs(20)))
                        .http_status_as_error(false)
                        .proxy(None)
                        .build()
                        .into();
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        seen.push(match agent.get(&url).call() {
                            Ok(mut r) if r.status() == 200 => {
                                Ok(r.body_mut().read_to_string().unwrap_or_default())
                            }
                            Ok(r) => Err(format!("status {}", r.status())),
                            Err(err) => Err(err.to_string()),
                        });
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    seen
                })
            })
            .collect();
        Load {
            stop,
            count,
            threads,
        }
    }

    /// Stops once at least `min` requests were made, and returns them all.
    fn finish(self, min: usize) -> Vec<Result<String, String>> {
        crate::common::wait_until("enough requests", Duration::from_mins(2), || {
            self.count.load(Ordering::Relaxed) >= min
        });
        self.stop.store(true, Ordering::Relaxed);
        let results: Vec<_> = self
            .threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        assert!(
            results.len() >= min,
            "only {} requests were made",
            results.len()
        );
        results
    }
}

fn failures(results: &[Result<String, String>]) -> Vec<&String> {
    results.iter().filter_map(|r| r.as_ref().err()).collect()
}

/// Reports how the load went (for the README's figures) and asserts that no request failed.
fn assert_none_failed(what: &str, results: &[Result<String, String>]) {
    let failed = failures(results);
    eprintln!(
        "{what}: {} requests, {} failed",
        results.len(),
        failed.len()
    );
    assert!(
        failed.is_empty(),
        "{what}: {} of {} failed, e.g. {:?}",
        failed.len(),
        results.len(),
        failed.first()
    );
}

/// `pools restart www`, `times` times in a row, each of which must succeed.
fn rolling_restarts(pools_file: &std::path::Path, dir: &std::path::Path, times: usize) {
    for _ in 0..times {
        let out = pools_command(pools_file, dir, &["restart", "www"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}{}",
            stdout(&out),
            stderr(&out)
        );
    }
}

/// `php-relaunch pools ARGS` on this pools file, with its own log and lock in `dir`.
fn pools_command(pools_file: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> Output {
    crate::common::php_relaunch()
        .arg("pools")
        .args(args)
        .arg("--config")
        .arg(pools_file)
        .arg("--log")
        .arg(dir.join("log"))
        .arg("--lock")
        .arg(dir.join("lock"))
        .output()
        .unwrap()
}

#[test]
fn a_reader_that_stops_early_never_interrupts_a_command() {
    let pool = Pool::start("www");
    let before: Vec<u32> = pool.replicas.iter().map(|r| r.master().unwrap()).collect();
    for args in [&["list"][..], &["status", "--json"], &["restart"]] {
        // `pools … | head -c0`: the pipe is closed before the command writes a byte.
        let mut child = crate::common::php_relaunch()
            .arg("pools")
            .args(args)
            .arg("--config")
            .arg(&pool.pools_file)
            .arg("--log")
            .arg(pool.dir.path().join("log"))
            .arg("--lock")
            .arg(pool.dir.path().join("lock"))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    }
    // The restart was done whole: every replica replaced and serving.
    let after: Vec<u32> = pool.replicas.iter().map(|r| r.master().unwrap()).collect();
    assert!(
        before.iter().zip(&after).all(|(b, a)| b != a),
        "{before:?} {after:?}"
    );
    assert_eq!(crate::common::curl_status(&pool.url("hello.php")), "200");
}

#[test]
fn rolling_restarts_under_load_fail_no_request() {
    let pool = Pool::start("www");
    let before: Vec<u32> = pool.replicas.iter().map(|r| r.master().unwrap()).collect();
    let load = Load::start(&pool.url("hello.php"), 8);
    let slow = {
        let url = pool.url("slow.php");
        thread::spawn(move || {
            ureq::get(&url)
                .call()
                .map(|mut r| r.body_mut().read_to_string().unwrap())
        })
    };
    thread::sleep(Duration::from_millis(300));

    rolling_restarts(&pool.pools_file, pool.dir.path(), 3);
    let results = load.finish(5000);

    assert_none_failed("rolling restarts x3", &results);
    assert_eq!(
        slow.join().unwrap().unwrap(),
        "slow done",
        "a request in flight must complete"
    );
    for (replica, old) in pool.replicas.iter().zip(before) {
        assert!(!alive(old), "replica master {old} was not restarted");
        assert!(replica.master().is_some());
    }
    let log = fs::read_to_string(&pool.log).unwrap();
    assert_eq!(log.matches(" pools: www/1: drained").count(), 3, "{log}");
    assert_eq!(
        log.matches(" pools: www/2: stopped (QUIT)").count(),
        3,
        "{log}"
    );
}

#[test]
fn deploy_switches_the_release_under_load() {
    let pool = Pool::start("current/public");
    for release in ["a", "b"] {
        let public = pool.dir.path().join(format!("releases/{release}/public"));
        fs::create_dir_all(&public).unwrap();
        fs::write(
            public.join("release.php"),
            format!("<?php echo '{release}';\n"),
        )
        .unwrap();
    }
    let current = pool.dir.path().join("current");
    std::os::unix::fs::symlink(pool.dir.path().join("releases/a"), &current).unwrap();
    let load = Load::start(&pool.url("release.php"), 8);
    thread::sleep(Duration::from_millis(500));

    let b = pool.dir.path().join("releases/b");
    let out = pool.pools(&["deploy", "www", b.to_str().unwrap()]);

    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    thread::sleep(Duration::from_millis(500));
    let results = load.finish(5000);
    let failed = failures(&results);
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        failed.first()
    );
    let bodies: std::collections::BTreeSet<&str> =
        results.iter().filter_map(|r| r.as_deref().ok()).collect();
    assert_eq!(
        bodies,
        ["a", "b"].into(),
        "every response is exactly one release"
    );
    assert_eq!(fs::read_link(&current).unwrap(), b);
    for _ in 0..20 {
        assert_eq!(
            ureq::get(&pool.url("release.php"))
                .call()
                .unwrap()
                .body_mut()
                .read_to_string()
                .unwrap(),
            "b"
        );
    }
}

#[test]
fn the_last_serving_replica_is_never_stopped() {
    let pool = Pool::start("www");
    let out = pool.pools(&["stop", "www", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(pool.replicas[1].master().is_none());

    let out = pool.pools(&["stop", "www", "1"]);

    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stdout(&out),
        "www/1: refusing to stop www/1: no other replica of pool 'www' is serving\n"
    );
    assert!(pool.replicas[0].master().is_some());
    assert_eq!(crate::common::curl_status(&pool.url("hello.php")), "200");

    let out = pool.pools(&["start", "www", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("www/2: starting\nwww/2: ping answered 200 in "),
        "{}",
        stdout(&out)
    );
}

#[test]
fn a_replica_that_would_not_start_is_left_running_and_reported() {
    let pool = Pool::start("www");
    let second = pool.replicas[1].master().unwrap();
    let conf = fs::read_to_string(&pool.replicas[1].config).unwrap() + "pm.max_children = lots\n";
    fs::write(&pool.replicas[1].config, conf).unwrap();

    let out = pool.pools(&["restart", "www"]);

    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.contains("www/1: ping answered 200"), "{text}");
    assert!(
        text.contains("www/2: www/2: config test failed; left as it is: `"),
        "{text}"
    );
    assert_eq!(
        pool.replicas[1].master(),
        Some(second),
        "the running replica must stay"
    );
    assert_eq!(crate::common::curl_status(&pool.url("hello.php")), "200");
}

#[test]
fn status_says_how_each_replica_is() {
    let pool = Pool::start("www");
    let out = pool.pools(&["status", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    for (row, fpm) in rows.iter().zip(&pool.replicas) {
        assert_eq!(row["master_pid"], fpm.master().unwrap());
        assert_eq!(row["ping_ok"], true);
        assert_eq!(row["balancer"], "in");
    }
    let out = pool.pools(&["list"]);
    assert!(
        stdout(&out).starts_with("www: 2 replicas, balancer nginx\n"),
        "{}",
        stdout(&out)
    );
}

fn pools_error(toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pools.toml");
    fs::write(&file, toml).unwrap();
    let out = crate::common::php_relaunch()
        .args(["pools", "list", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    stderr(&out).replace(&file.display().to_string(), "FILE")
}

#[test]
fn config_errors_name_the_file_the_line_and_the_field() {
    let no_such = "[pools.www]\nbalancer = \"nginx\"\n\n[[pools.www.replicas]]\nfpm_bin = \"/usr/sbin/php-fpm8.2\"\nfpm_config = \"/nonexistent/1.conf\"\nping = \"unix:///x.sock;/ping\"\n";
    let err = pools_error(no_such);
    assert!(
        err.starts_with(
            "php-relaunch: FILE: line 6: replica www/1: field `fpm_config` '/nonexistent/1.conf': "
        ),
        "{err}"
    );
    let missing = "[pools.www]\nbalancer = \"nginx\"\n\n[[pools.www.replicas]]\nfpm_bin = \"/usr/sbin/php-fpm8.2\"\nping = \"unix:///x.sock;/ping\"\n";
    assert_eq!(
        pools_error(missing),
        "php-relaunch: FILE: line 4: missing field `fpm_config`\n"
    );
    let typo = "[pools.www]\nbalancer = \"nginx\"\nreplcas = []\n";
    let err = pools_error(typo);
    assert!(
        err.starts_with("php-relaunch: FILE: line 3: unknown field `replcas`"),
        "{err}"
    );
    let apache = "[pools.www]\nbalancer = \"apache\"\nreplicas = []\n";
    assert_eq!(
        pools_error(apache),
        "php-relaunch: FILE: line 2: pool 'www': balancer \"apache\" needs `manager_url` and `balancer_name`\n"
    );
    let haproxy = "[pools.www]\nbalancer = \"haproxy\"\nreplicas = []\n";
    assert_eq!(
        pools_error(haproxy),
        "php-relaunch: FILE: line 2: field `balancer`: \"haproxy\" is not supported (\"nginx\" or \"apache\")\n"
    );
}

#[test]
fn a_cron_run_relaunches_just_the_failing_replica() {
    let pool = Pool::start("www");
    let (first, second) = (
        pool.replicas[0].master().unwrap(),
        pool.replicas[1].master().unwrap(),
    );
    pool.replicas[0].freeze();
    let log = pool.dir.path().join("cron.log");
    let run = || {
        crate::common::php_relaunch()
            .args([
                &pool.url("hello.php"),
                "1",
                "",
                "0",
                "--pool",
                "www",
                "--config",
            ])
            .arg(&pool.pools_file)
            .arg("--log")
            .arg(&log)
            .arg("--lock")
            .arg(pool.dir.path().join("cron.lock"))
            .arg("--state")
            .arg(pool.dir.path().join("state.json"))
            .output()
            .unwrap()
    };
    // nginx takes turns between the replicas: a heartbeat sent to the frozen one times out.
    let mut out = run();
    for _ in 0..5 {
        if out.status.code() != Some(0) {
            break;
        }
        out = run();
    }

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = fs::read_to_string(&log).unwrap();
    let line = text.lines().last().unwrap();
    assert_eq!(
        crate::common::field(line, "verdict"),
        Some("timeout"),
        "{line}"
    );
    assert_eq!(
        crate::common::field(line, "action"),
        Some("www/1:kill+start"),
        "{line}"
    );
    assert_eq!(
        crate::common::field(line, "state"),
        Some("healthy"),
        "{line}"
    );
    assert!(!alive(first), "the frozen replica was not replaced");
    assert!(pool.replicas[0].master().is_some());
    assert_eq!(
        pool.replicas[1].master(),
        Some(second),
        "the healthy replica must be left alone"
    );
    // The evidence holds the frozen replica's processes, not its twin's.
    let evidence: Vec<_> = fs::read_dir(pool.dir.path().join("evidence"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(evidence.len(), 1);
    let text = fs::read_to_string(evidence[0].path()).unwrap();
    let row_of = |pid: u32| {
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(pid.to_string().as_str()))
    };
    assert!(
        row_of(first).is_some_and(|row| row.contains("Stopped")),
        "{text}"
    );
    assert!(row_of(second).is_none(), "{text}");
}

#[test]
fn rolling_restarts_behind_apache_drain_through_the_balancer_manager() {
    rolling_restarts_behind_apache(false);
}

#[test]
fn unix_socket_members_behind_apache_are_drained_and_put_back() {
    // Apache shows such a member as `<i>unix:SOCKET|fcgi://rN</i>`, and its form names it by the
    // worker URL alone: matching the row by `>MEMBER</a></td>` found neither.
    let apache = rolling_restarts_behind_apache(true);
    let load = Load::start(&format!("http://127.0.0.1:{}/hello.php", apache.port), 8);
    let out = pools_command(&apache.pools_file, apache.dir.path(), &["stop", "www", "1"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let standing = |apache: &Apache| -> Vec<String> {
        let out = pools_command(&apache.pools_file, apache.dir.path(), &["status", "--json"]);
        let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        rows.iter().map(|r| r["balancer"].to_string()).collect()
    };
    assert_eq!(standing(&apache), ["\"out\"", "\"in\""]);
    thread::sleep(Duration::from_millis(300));
    let out = pools_command(
        &apache.pools_file,
        apache.dir.path(),
        &["start", "www", "1"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("www/1: back in balancer://php_www"),
        "{}",
        stdout(&out)
    );
    assert_eq!(standing(&apache), ["\"in\"", "\"in\""]);
    assert_none_failed(
        "apache unix-socket member stopped and started",
        &load.finish(5000),
    );
}

/// Two rolling restarts under load behind Apache: no request fails, and each replica was drained
/// and put back through the balancer-manager.
fn rolling_restarts_behind_apache(unix: bool) -> Apache {
    let apache = Apache::start(unix);
    let out = pools_command(&apache.pools_file, apache.dir.path(), &["list"]);
    assert!(
        stdout(&out).starts_with("www: 2 replicas, balancer apache\n"),
        "{}",
        stdout(&out)
    );
    let log = apache.dir.path().join("log");
    let before: Vec<u32> = apache
        .replicas
        .iter()
        .map(|r| r.master().unwrap())
        .collect();
    let load = Load::start(&format!("http://127.0.0.1:{}/hello.php", apache.port), 8);
    thread::sleep(Duration::from_millis(300));

    rolling_restarts(&apache.pools_file, apache.dir.path(), 2);
    let results = load.finish(5000);

    assert_none_failed("apache rolling restarts x2", &results);
    for (replica, old) in apache.replicas.iter().zip(before) {
        assert!(!alive(old));
        assert!(replica.master().is_some());
    }
    let text = fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.matches("www/1: drained in balancer://php_www").count(),
        2,
        "{text}"
    );
    assert_eq!(
        text.matches("www/2: back in balancer://php_www").count(),
        2,
        "{text}"
    );
    let out = pools_command(&apache.pools_file, apache.dir.path(), &["status", "--json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(rows.iter().all(|r| r["balancer"] == "in"), "{rows:?}");
    apache
}

#[test]
fn a_plain_restart_of_a_single_pool_fails_requests_under_the_same_load() {
    // The control for the zero above: the same load sees failures when the only serving php-fpm is
    // restarted the plain way (QUIT, wait, start), as an init script does.
    let pool = Pool::start("www");
    let out = pool.pools(&["stop", "www", "2"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let only = &pool.replicas[0];
    let load = Load::start(&pool.url("hello.php"), 8);
    thread::sleep(Duration::from_millis(300));

    for _ in 0..3 {
        let master = only.master().unwrap();
        crate::common::signal(master, rustix::process::Signal::QUIT);
        crate::common::wait_until("the master to exit", Duration::from_secs(10), || {
            !alive(master)
        });
        only.start();
        thread::sleep(Duration::from_millis(300));
    }
    let results = load.finish(5000);

    let failed = failures(&results);
    eprintln!(
        "plain restarts x3: {} requests, {} failed",
        results.len(),
        failed.len()
    );
    assert!(
        !failed.is_empty(),
        "a plain restart under load is expected to fail requests"
    );
}
