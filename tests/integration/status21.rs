//! `watch`'s `[discover]` judges a pool from its own status page (#21): over `pm.status_listen`
//! when php-fpm has one (answered while every worker of the pool is busy), else over the pool's own
//! `listen`; only once its probe failed, so a healthy run asks no status page.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use crate::common::{
    Smtp, alive, field, live_pid_in, php_relaunch, pids_of_exe, shared_tempdir, signal, stderr,
    stdout, wait_until,
};

/// One private master with four pools: `shop` (2 workers, `pm.status_listen`), `blog` (status page
/// on its own socket only), `wiki` (1 worker, `pm.status_listen`) and `docs` (no status page).
struct Host {
    bin: PathBuf,
    conf: PathBuf,
    pid_file: PathBuf,
    dir: tempfile::TempDir,
}

const POOLS: [&str; 4] = ["shop", "blog", "wiki", "docs"];

impl Host {
    fn start() -> Host {
        let dir = shared_tempdir();
        let d = dir.path();
        let bin = d.join("php-fpm");
        fs::copy("/usr/sbin/php-fpm8.2", &bin).unwrap();
        fs::create_dir(d.join("confs")).unwrap();
        fs::write(d.join("sleep.php"), "<?php sleep(60); echo 'slept';\n").unwrap();
        let conf = d.join("confs/m.conf");
        let pid_file = d.join("m.pid");
        let mut text = format!(
            "[global]\npid = {}\nerror_log = {}/m.log\ndaemonize = yes\n",
            pid_file.display(),
            d.display()
        );
        for pool in POOLS {
            let _ = write!(
                text,
                "\n[{pool}]\nuser = www-data\ngroup = www-data\nlisten = {d}/{pool}.sock\n\
                 listen.owner = www-data\nlisten.group = www-data\nlisten.mode = 0660\n\
                 ping.path = /ping\npm = static\n",
                d = d.display()
            );
            text.push_str(match pool {
                "shop" => "pm.max_children = 2\npm.status_path = /status\n",
                "blog" => "pm.max_children = 1\npm.status_path = /status\n",
                "wiki" => "pm.max_children = 1\npm.status_path = /fpm-status\n",
                _ => "pm.max_children = 1\n",
            });
            if ["shop", "wiki"].contains(&pool) {
                let _ = writeln!(
                    text,
                    "pm.status_listen = {}/{pool}-status.sock",
                    d.display()
                );
            }
        }
        fs::write(&conf, text).unwrap();
        let host = Host {
            bin: bin.canonicalize().unwrap(),
            conf,
            pid_file,
            dir,
        };
        let status = loop {
            let started = Command::new(&host.bin)
                .args(["--daemonize", "--fpm-config"])
                .arg(&host.conf)
                .stdin(Stdio::null())
                .status();
            match started {
                // Another test thread forked while this binary's copy was still open for writing.
                Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                other => break other.unwrap(),
            }
        };
        assert!(status.success(), "php-fpm did not start");
        wait_until("every worker", Duration::from_secs(10), || {
            POOLS.iter().map(|p| host.workers(p).len()).sum::<usize>() == 5
        });
        host
    }

    fn d(&self) -> &Path {
        self.dir.path()
    }

    fn socket(&self, pool: &str) -> PathBuf {
        self.d().join(format!("{pool}.sock"))
    }

    fn master(&self) -> Option<u32> {
        live_pid_in(&self.pid_file)
    }

    /// The workers titled `php-fpm: pool POOL` (`shop_status` for the status pool of `shop`).
    fn workers(&self, pool: &str) -> Vec<u32> {
        pids_of_exe(&self.bin)
            .into_iter()
            .filter(|&p| {
                fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                    c.trim_end_matches(['\0', ' ']) == format!("php-fpm: pool {pool}")
                })
            })
            .collect()
    }

    /// A watch file discovering the master's pools, with `discover` in `[discover]`.
    fn watch_file(&self, top: &str, discover: &str) -> PathBuf {
        let file = self.d().join("watch.toml");
        fs::write(
            &file,
            format!(
                "timeout = 1\nrestart_timeout = 10\npause_file = \"{d}/pause\"\n{top}\n\
                 [discover]\nfpm_configs = [\"{d}/confs/*.conf\"]\nfpm_bin = \"{bin}\"\n{discover}\n",
                d = self.d().display(),
                bin = self.bin.display()
            ),
        )
        .unwrap();
        file
    }

    fn watch(&self, file: &Path) -> Output {
        php_relaunch()
            .arg("watch")
            .arg("--config")
            .arg(file)
            .arg("--log")
            .arg(self.d().join("log"))
            .arg("--state-dir")
            .arg(self.d().join("state"))
            .output()
            .unwrap()
    }

    fn log_lines(&self) -> Vec<String> {
        fs::read_to_string(self.d().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Every worker of `pool` in a minute-long request, once its ping no longer answers.
    fn fill(&self, pool: &str, workers: usize) -> Vec<Child> {
        let target = format!(
            "unix://{};{}",
            self.socket(pool).display(),
            self.d().join("sleep.php").display()
        );
        let busy: Vec<Child> = (0..workers)
            .map(|_| {
                php_relaunch()
                    .args(["check", &target, "60"])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let ping = format!("unix://{};/ping", self.socket(pool).display());
        wait_until("the pool to be full", Duration::from_secs(20), || {
            !php_relaunch()
                .args(["check", &ping, "0.3"])
                .output()
                .unwrap()
                .status
                .success()
        });
        busy
    }

    /// `accepted conn` of a pool's status page asked on its own socket (this request counts too).
    fn accepted(&self, pool: &str) -> u64 {
        let out = Command::new("cgi-fcgi")
            .args(["-bind", "-connect"])
            .arg(self.socket(pool))
            .env_clear()
            .env("SCRIPT_NAME", "/status")
            .env("SCRIPT_FILENAME", "/status")
            .env("REQUEST_METHOD", "GET")
            .env("QUERY_STRING", "json")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let after = text.split("\"accepted conn\":").nth(1).expect(&text);
        after
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        for _ in 0..100 {
            let pids = pids_of_exe(&self.bin);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                signal(pid, rustix::process::Signal::CONT);
                signal(pid, rustix::process::Signal::KILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn end(children: Vec<Child>) {
    for mut child in children {
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

#[test]
fn a_discovered_pool_with_every_worker_busy_is_judged_saturated_from_its_status_page() {
    let host = Host::start();
    let smtp = Smtp::start(host.d());
    let busy = host.fill("shop", 2);
    let before: Vec<Vec<u32>> = POOLS.iter().map(|p| host.workers(p)).collect();
    let master = host.master();
    let file = host.watch_file(
        &format!("emails = [\"ops@example.com\"]\nsmtp = \"{}\"", smtp.url()),
        "",
    );
    let out = host.watch(&file);
    assert_eq!(code(&out), 4, "{}{}", stdout(&out), stderr(&out));
    let lines = host.log_lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert_eq!(field(line, "pool"), Some("shop"), "{line}");
    assert_eq!(field(line, "state"), Some("saturated"), "{line}");
    assert!(
        line.contains("2 of 2 workers busy (from status page)"),
        "the line says what shop's status page said: {line}"
    );
    let after: Vec<Vec<u32>> = POOLS.iter().map(|p| host.workers(p)).collect();
    assert_eq!(after, before, "nothing restarted or killed");
    assert_eq!(host.master(), master);
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "{mails:#?}");
    let urls: Vec<&str> = mails[0]
        .lines()
        .filter_map(|l| l.strip_prefix("URL:"))
        .map(str::trim)
        .collect();
    assert_eq!(
        urls,
        [format!("unix://{};/ping", host.socket("shop").display())],
        "{}",
        mails[0]
    );
    end(busy);
}

#[test]
fn stuck_workers_of_a_discovered_pool_are_killed_from_its_status_page_alone() {
    let host = Host::start();
    let busy = host.fill("wiki", 1);
    // The request began before the pool was full: a second on, it is past stuck_after.
    std::thread::sleep(Duration::from_millis(1100));
    let stuck = host.workers("wiki");
    assert_eq!(stuck.len(), 1);
    let others: Vec<u32> = ["shop", "blog", "docs", "shop_status", "wiki_status"]
        .iter()
        .flat_map(|p| host.workers(p))
        .collect();
    let master = host.master();
    let file = host.watch_file("", "stuck_after = \"1s\"");
    let out = host.watch(&file);
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    let lines = host.log_lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert_eq!(field(line, "pool"), Some("wiki"), "{line}");
    assert_eq!(field(line, "action"), Some("kill-stuck"), "{line}");
    assert!(
        line.contains(&format!(
            "killed workers stuck in one request: {}",
            stuck[0]
        )),
        "{line}"
    );
    assert!(
        stuck.iter().all(|&p| !alive(p)),
        "wiki's stuck worker killed"
    );
    assert!(
        others.iter().all(|&p| alive(p)),
        "no other pool's worker touched"
    );
    assert_eq!(host.master(), master, "the master kept");
    end(busy);
}

#[test]
fn a_healthy_run_asks_no_status_page() {
    let host = Host::start();
    let file = host.watch_file("", "stuck_after = \"5m\"");
    let before = host.accepted("blog");
    let out = host.watch(&file);
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stderr(&out), "", "every pool watched, nothing to say");
    assert!(host.log_lines().is_empty(), "{:#?}", host.log_lines());
    // blog's status page is on its own socket: the run's ping, and this read, and nothing else.
    assert_eq!(
        host.accepted("blog"),
        before + 2,
        "one connection: the ping"
    );
    // php-fpm forks a status pool's worker on the first connection to pm.status_listen.
    for status in ["shop_status", "wiki_status"] {
        assert!(host.workers(status).is_empty(), "{status}: connected to");
    }
}

#[test]
fn status_in_discover_is_refused_naming_file_and_line() {
    let dir = shared_tempdir();
    let file = dir.path().join("watch.toml");
    fs::write(
        &file,
        "timeout = 1\n\n[discover]\nfpm_configs = [\"/etc/php/*/fpm/php-fpm.conf\"]\n\
         status = \"unix:///run/php/status.sock;/status\"\n",
    )
    .unwrap();
    let out = php_relaunch()
        .args(["watch", "--config"])
        .arg(&file)
        .arg("--log")
        .arg(dir.path().join("log"))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .output()
        .unwrap();
    assert_eq!(code(&out), 2, "{}", stderr(&out));
    assert_eq!(
        stderr(&out),
        format!(
            "php-relaunch: {}:5: `status` in [discover] would give every pool the same status \
             page: each discovered pool with pm.status_path is judged from its own (over \
             pm.status_listen when set); list a pool as a [[target]] to give it another\n",
            file.display()
        )
    );
    assert!(!dir.path().join("log").exists(), "nothing probed or logged");
}
