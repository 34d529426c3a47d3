//! `php-relaunch watch` (#21): one run for every pool of one file. Private php-fpm masters (one
//! binary copy, so Debian's init script never touches them) with many pools each, one of them
//! socket-activated by the test suite's activator, all watched through one `[discover]` file.

use std::fmt::Write as _;
use std::fs;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use rustix::process::Signal;

use crate::common::{
    Smtp, alive, field, live_pid_in, php_relaunch, pids_of_exe, project, shared_tempdir, signal,
    state, stderr, stdout, wait_until, wait_until_quietly,
};

/// The probe deadline the files give.
const TIMEOUT: u64 = 2;

/// One php-fpm master of the farm.
struct Master {
    conf: PathBuf,
    pid_file: PathBuf,
    pools: Vec<String>,
}

/// Masters with many pools, run from one private binary copy; optionally a socket-activated one.
struct Farm {
    bin: PathBuf,
    masters: Vec<Master>,
    activator: Option<(Child, PathBuf)>,
    // Dropped last, after the servers using it.
    dir: tempfile::TempDir,
}

impl Farm {
    /// Masters named by `spec` (name, pools); master `a` gets a pool with pm.status_listen (`a01`)
    /// and one with pm = ondemand (`a02`).
    fn start(spec: &[(&str, usize)], activated: bool) -> Farm {
        let dir = shared_tempdir();
        let d = dir.path();
        let bin = d.join("php-fpm");
        fs::copy("/usr/sbin/php-fpm8.2", &bin).unwrap();
        fs::create_dir(d.join("confs")).unwrap();
        fs::write(d.join("sleep.php"), "<?php sleep(60); echo 'slept';\n").unwrap();
        let mut farm = Farm {
            bin: bin.canonicalize().unwrap(),
            masters: Vec::new(),
            activator: None,
            dir,
        };
        for &(name, pools) in spec {
            let master = farm.write_master(name, pools);
            farm.masters.push(master);
        }
        for i in 0..farm.masters.len() {
            farm.start_master(i);
        }
        if activated {
            farm.start_activated();
        }
        farm
    }

    fn d(&self) -> &Path {
        self.dir.path()
    }

    fn socket(&self, master: &str, pool: &str) -> PathBuf {
        self.d().join(format!("{master}-{pool}.sock"))
    }

    fn pool_section(&self, master: &str, pool: &str) -> String {
        let mut section = format!(
            "\n[{pool}]\nuser = www-data\ngroup = www-data\nlisten = {}\nlisten.owner = www-data\n\
             listen.group = www-data\nlisten.mode = 0660\nping.path = /ping\npm.status_path = /status\n",
            self.socket(master, pool).display()
        );
        match pool {
            "a01" => {
                let status = self.d().join("a-status.sock");
                let _ = write!(
                    section,
                    "pm = static\npm.max_children = 2\npm.status_listen = {}\n",
                    status.display()
                );
            }
            "a02" => section
                .push_str("pm = ondemand\npm.max_children = 2\npm.process_idle_timeout = 30s\n"),
            _ => section.push_str("pm = static\npm.max_children = 1\n"),
        }
        section
    }

    fn write_master(&self, name: &str, pools: usize) -> Master {
        let conf = self.d().join(format!("confs/{name}.conf"));
        let pid_file = self.d().join(format!("{name}.pid"));
        let names: Vec<String> = (1..=pools).map(|i| format!("{name}{i:02}")).collect();
        let mut text = format!(
            "[global]\npid = {}\nerror_log = {}/{name}.log\ndaemonize = yes\n",
            pid_file.display(),
            self.d().display()
        );
        for pool in &names {
            text.push_str(&self.pool_section(name, pool));
        }
        fs::write(&conf, text).unwrap();
        Master {
            conf,
            pid_file,
            pools: names,
        }
    }

    fn start_master(&self, i: usize) {
        let master = &self.masters[i];
        let status = Command::new(&self.bin)
            .args(["--daemonize", "--fpm-config"])
            .arg(&master.conf)
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "php-fpm did not start");
        wait_until("php-fpm master", Duration::from_secs(10), || {
            self.master_pid(i).is_some()
        });
        // Every static worker up, so the process table is what the test compares.
        wait_until("its workers", Duration::from_secs(10), || {
            master
                .pools
                .iter()
                .all(|p| self.socket(&self.name(i), p).exists())
        });
    }

    fn name(&self, i: usize) -> String {
        self.masters[i]
            .conf
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// The fourth master: one on-demand pool whose socket the activator holds.
    fn start_activated(&mut self) {
        let d = self.d().to_owned();
        let socket = d.join("z-z01.sock");
        let conf = d.join("confs/z.conf");
        fs::write(
            &conf,
            format!(
                "[global]\npid = {d}/z.pid\nerror_log = {d}/z.log\n\n[z01]\nuser = www-data\ngroup = www-data\n\
                 listen = {}\npm = ondemand\npm.max_children = 2\npm.process_idle_timeout = 1s\nping.path = /ping\n",
                socket.display(),
                d = d.display()
            ),
        )
        .unwrap();
        let child = Command::new("/usr/bin/python3")
            .arg(project().join("tests/fixtures/activator.py"))
            .arg(&socket)
            .arg("--")
            .arg(&self.bin)
            .args(["--nodaemonize", "--fpm-config"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let ready = PathBuf::from(format!("{}.ready", socket.display()));
        wait_until("the activator", Duration::from_secs(10), || ready.exists());
        self.activator = Some((child, socket));
    }

    fn activations(&self) -> usize {
        let Some((_, socket)) = &self.activator else {
            return 0;
        };
        fs::read_to_string(format!("{}.activations", socket.display()))
            .unwrap_or_default()
            .lines()
            .count()
    }

    fn master_pid(&self, i: usize) -> Option<u32> {
        live_pid_in(&self.masters[i].pid_file)
    }

    /// The master and its workers, as /proc shows them.
    fn family(&self, i: usize) -> Vec<u32> {
        let Some(master) = self.master_pid(i) else {
            return Vec::new();
        };
        let mut family: Vec<u32> = pids_of_exe(&self.bin)
            .into_iter()
            .filter(|&pid| pid == master || parent(pid) == Some(master))
            .collect();
        family.sort_unstable();
        family
    }

    /// The master and its static workers: what a run over its pools must leave as it is (an
    /// on-demand pool's workers come and go with the probes, and php-fpm forks a01's status pool,
    /// `a01_status`, when its status page is first asked).
    fn stable(&self, i: usize) -> Vec<u32> {
        self.family(i)
            .into_iter()
            .filter(|&p| {
                fs::read_to_string(format!("/proc/{p}/cmdline"))
                    .is_ok_and(|c| !c.contains("pool a02") && !c.contains("_status"))
            })
            .collect()
    }

    /// SIGKILLs a master and its workers: the pools' sockets are left stale.
    fn kill(&self, i: usize) {
        let family = self.family(i);
        for &pid in &family {
            signal(pid, Signal::KILL);
        }
        wait_until("the family to die", Duration::from_secs(5), || {
            family.iter().all(|&p| !alive(p))
        });
    }

    /// SIGSTOPs a master and its workers: a hung php-fpm.
    fn freeze(&self, i: usize) -> Vec<u32> {
        let family = self.family(i);
        for &pid in &family {
            signal(pid, Signal::STOP);
        }
        wait_until("the family to stop", Duration::from_secs(5), || {
            family.iter().all(|&p| state(p) == Some('T'))
        });
        family
    }

    /// A watch file discovering every master's pools, with `extra` at the top.
    fn watch_file(&self, extra: &str) -> PathBuf {
        self.watch_file_timeout(TIMEOUT, extra)
    }

    /// The same with another probe deadline.
    fn watch_file_timeout(&self, timeout: u64, extra: &str) -> PathBuf {
        let file = self.d().join("watch.toml");
        fs::write(
            &file,
            format!(
                "timeout = {timeout}\nrestart_timeout = 10\npause_file = \"{d}/pause\"\n{extra}\n\
                 [discover]\nfpm_configs = [\"{d}/confs/*.conf\"]\nfpm_bin = \"{bin}\"\n",
                d = self.d().display(),
                bin = self.bin.display()
            ),
        )
        .unwrap();
        file
    }

    /// `php-relaunch watch --config FILE` with this farm's log and state, and `extra`.
    fn watch(&self, file: &Path, extra: &[&str]) -> Command {
        let mut cmd = php_relaunch();
        cmd.arg("watch")
            .arg("--config")
            .arg(file)
            .arg("--log")
            .arg(self.d().join("log"))
            .arg("--state-dir")
            .arg(self.d().join("state"))
            .args(extra);
        cmd
    }

    fn log_lines(&self) -> Vec<String> {
        fs::read_to_string(self.d().join("log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// A request to `sleep.php` on a pool, held open in the background: one busy worker.
    fn occupy(&self, master: &str, pool: &str) -> Child {
        php_relaunch()
            .arg("check")
            .arg(format!(
                "unix://{};{}",
                self.socket(master, pool).display(),
                self.d().join("sleep.php").display()
            ))
            .arg("60")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    }

    /// Both workers of `pool` busy for a minute, once its ping no longer answers: the pool is full.
    fn fill(&self, master: &str, pool: &str) -> Vec<Child> {
        let busy = vec![self.occupy(master, pool), self.occupy(master, pool)];
        let ping = format!("unix://{};/ping", self.socket(master, pool).display());
        crate::common::wait_until("the pool to be full", Duration::from_secs(20), || {
            !php_relaunch()
                .args(["check", &ping, "0.3"])
                .output()
                .unwrap()
                .status
                .success()
        });
        busy
    }
}

impl Drop for Farm {
    fn drop(&mut self) {
        if let Some((child, _)) = self.activator.as_mut() {
            signal(child.id(), Signal::TERM);
            let _ = child.wait();
        }
        for _ in 0..100 {
            let pids = pids_of_exe(&self.bin);
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                signal(pid, Signal::CONT);
                signal(pid, Signal::KILL);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The second of the wall clock's minute.
fn chrono_second() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() % 60)
}

/// The parent of a process.
fn parent(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(1)?.parse().ok()
}

fn code(out: &Output) -> i32 {
    out.status.code().unwrap_or(-1)
}

/// The three masters of the issue (12, 8 and 4 pools) and the socket-activated fourth.
fn issue_farm() -> Farm {
    Farm::start(&[("a", 12), ("b", 8), ("c", 4)], true)
}

#[test]
fn all_healthy_is_quiet_and_a_hung_master_of_8_pools_costs_one_timeout() {
    let farm = issue_farm();
    let file = farm.watch_file("");
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    assert_eq!(stdout(&out), "");
    assert_eq!(stderr(&out), "");
    assert!(farm.log_lines().is_empty(), "{:?}", farm.log_lines());
    // 25 pools probed: every one has its state file, the sleeping one included.
    let states = fs::read_dir(farm.d().join("state")).unwrap().count();
    assert!(states >= 25, "{states} state files");

    let frozen = farm.freeze(1);
    let started = Instant::now();
    let out = farm.watch(&file, &["--dry-run"]).output().unwrap();
    let took = started.elapsed();
    // Eight probes one after another would take 8 × TIMEOUT; at once they take one.
    assert!(
        took < Duration::from_secs(2 * TIMEOUT),
        "took {took:?}: {}",
        stderr(&out)
    );
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    let lines: Vec<&str> = said.lines().collect();
    // The dry run also shows the sleeping pool it left asleep.
    let (hung, other): (Vec<&str>, Vec<&str>) = lines
        .iter()
        .partition(|l| field(l, "pool").is_some_and(|p| p.starts_with('b')));
    let pools: Vec<&str> = hung.iter().filter_map(|l| field(l, "pool")).collect();
    assert_eq!(pools, farm.masters[1].pools, "{lines:?}");
    assert!(
        other.iter().all(|l| field(l, "state") == Some("idle")),
        "{other:?}"
    );
    for line in &hung {
        assert_eq!(field(line, "verdict"), Some("timeout"), "{line}");
        assert_eq!(field(line, "action"), Some("would-kill+start"), "{line}");
    }
    // A dry run changes nothing: still stopped, nothing logged.
    assert!(frozen.iter().all(|&p| state(p) == Some('T')));
    assert!(farm.log_lines().is_empty());
}

#[test]
fn a_killed_master_is_relaunched_alone_with_one_mail_and_a_line_per_pool() {
    let farm = issue_farm();
    let smtp = Smtp::start(farm.d());
    let file = farm.watch_file("emails = [\"ops@example.com\"]");
    let (a, b) = (farm.stable(0), farm.stable(1));
    let old = farm.master_pid(2).unwrap();
    farm.kill(2);
    let out = farm
        .watch(&file, &["--smtp", &smtp.url()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    let new = farm.master_pid(2).expect("master c runs again");
    assert_ne!(new, old);
    assert_eq!(farm.stable(0), a, "master a untouched");
    assert_eq!(farm.stable(1), b, "master b untouched");
    let lines = farm.log_lines();
    let pools: Vec<&str> = lines.iter().filter_map(|l| field(l, "pool")).collect();
    assert_eq!(pools, farm.masters[2].pools, "{lines:#?}");
    for line in &lines {
        assert_eq!(field(line, "state"), Some("healthy"), "{line}");
        assert_eq!(
            field(line, "new_pid"),
            Some(new.to_string().as_str()),
            "{line}"
        );
        assert!(
            field(line, "master").is_some_and(|m| m.ends_with("confs/c.conf")),
            "{line}"
        );
        assert_eq!(field(line, "mail"), Some("sent"), "{line}");
    }
    // One relaunch: one line says how, its siblings say they came back with it.
    let relaunches = lines
        .iter()
        .filter(|l| !l.contains("relaunched with its master"))
        .count();
    assert_eq!(relaunches, 1, "{lines:#?}");
    wait_until_quietly(Duration::from_secs(5), || !smtp.messages().is_empty());
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "one mail per run");
    for pool in &farm.masters[2].pools {
        assert!(
            messages[0].contains(pool.as_str()),
            "{pool} in\n{}",
            messages[0]
        );
    }
    assert!(!messages[0].contains("pool=a01"));
    // `report` over the watch log: totals per target.
    let out = php_relaunch()
        .args(["report", "--log"])
        .arg(farm.d().join("log"))
        .output()
        .unwrap();
    let said = stdout(&out);
    assert!(said.contains("per target (4)"), "{said}");
    for pool in &farm.masters[2].pools {
        let url = format!("unix://{};/ping", farm.socket("c", pool).display());
        assert!(
            said.lines().any(|l| l.contains(&url)
                && l.contains(&format!("(pool {pool})"))
                && l.contains("1 failed, 1 relaunches (1)")),
            "{url}\n{said}"
        );
    }
    // Each pool came back with its master, which was relaunched once.
    let total = said
        .lines()
        .find(|l| l.starts_with("relaunches "))
        .and_then(|l| l.split_whitespace().nth(1));
    assert_eq!(total, Some("1"), "{said}");
}

#[test]
fn a_hung_master_gets_kill_and_start_of_exactly_its_family() {
    let farm = issue_farm();
    let file = farm.watch_file("");
    let (a, c) = (farm.stable(0), farm.stable(2));
    let frozen = farm.freeze(1);
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    assert!(
        frozen.iter().all(|&p| !alive(p)),
        "every process of b ended"
    );
    assert!(farm.master_pid(1).is_some_and(|p| !frozen.contains(&p)));
    assert_eq!(farm.stable(0), a, "master a untouched");
    assert_eq!(farm.stable(2), c, "master c untouched");
    let lines = farm.log_lines();
    let actions: Vec<&str> = lines.iter().filter_map(|l| field(l, "action")).collect();
    assert!(actions.iter().all(|a| *a == "kill+start"), "{lines:#?}");
    assert_eq!(lines.len(), 8, "{lines:#?}");
}

#[test]
fn a_saturated_pool_is_alerted_alone_and_stuck_workers_of_one_pool_are_killed_alone() {
    let farm = Farm::start(&[("a", 4)], false);
    let a = "a";
    // a01 has pm.status_listen: its a01_status worker waits in accept while a01's are busy.
    let mut busy = farm.fill(a, "a01");
    let family = farm.stable(0);
    let file = farm.watch_file("");
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 4, "{}{}", stdout(&out), stderr(&out));
    let lines = farm.log_lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert_eq!(field(&lines[0], "pool"), Some("a01"));
    assert_eq!(field(&lines[0], "state"), Some("saturated"), "{}", lines[0]);
    // In the file's terms, as the user would set it.
    assert!(
        lines[0].contains("(relaunch_saturated = true to allow)"),
        "{}",
        lines[0]
    );
    assert_eq!(farm.stable(0), family, "nothing restarted or killed");

    // Now with its status page and --stuck-after: a01's stuck workers go, nobody else's.
    let workers_of = |pool: &str| -> Vec<u32> {
        farm.family(0)
            .into_iter()
            .filter(|&p| {
                fs::read_to_string(format!("/proc/{p}/cmdline")).is_ok_and(|c| {
                    c.trim_end_matches(['\0', ' ']) == format!("php-fpm: pool {pool}")
                })
            })
            .collect()
    };
    let stuck = workers_of("a01");
    let others: Vec<u32> = ["a02", "a03", "a04", "a01_status"]
        .iter()
        .flat_map(|p| workers_of(p))
        .collect();
    assert_eq!(stuck.len(), 2);
    let file = farm.d().join("stuck.toml");
    fs::write(
        &file,
        format!(
            "timeout = {TIMEOUT}\npause_file = \"{d}/pause\"\n\n[[target]]\nurl = \"unix://{sock};/ping\"\n\
             fpm_bin = \"{bin}\"\nfpm_config = \"{conf}\"\nstatus = \"unix://{d}/a-status.sock;/status\"\n\
             stuck_after = \"1s\"\n",
            d = farm.d().display(),
            sock = farm.socket(a, "a01").display(),
            bin = farm.bin.display(),
            conf = farm.masters[0].conf.display()
        ),
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    let line = farm.log_lines().pop().unwrap();
    assert_eq!(field(&line, "action"), Some("kill-stuck"), "{line}");
    assert!(
        stuck.iter().all(|&p| !alive(p)),
        "a01's stuck workers killed"
    );
    assert!(
        others.iter().all(|&p| alive(p)),
        "no other pool's worker touched"
    );
    assert_eq!(farm.master_pid(0), Some(family[0]));
    for child in &mut busy {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn a_pool_added_and_reloaded_is_watched_by_the_next_run() {
    let farm = Farm::start(&[("c", 2)], false);
    let file = farm.watch_file("");
    let metrics = farm.d().join("watch.prom");
    let metrics_arg = metrics.display().to_string();
    let out = farm
        .watch(&file, &["--metrics-file", &metrics_arg])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("pool=\"c02\""), "{text}");
    assert!(!text.contains("pool=\"c03\""), "{text}");
    assert_eq!(
        text.matches("# TYPE php_relaunch_up gauge").count(),
        1,
        "{text}"
    );

    let conf = &farm.masters[0].conf;
    let added = fs::read_to_string(conf).unwrap() + &farm.pool_section("c", "c03");
    fs::write(conf, added).unwrap();
    signal(farm.master_pid(0).unwrap(), Signal::USR2);
    wait_until("the new pool", Duration::from_secs(10), || {
        farm.socket("c", "c03").exists()
    });
    let out = farm
        .watch(&file, &["--metrics-file", &metrics_arg])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = fs::read_to_string(&metrics).unwrap();
    assert!(text.contains("php_relaunch_up{pool=\"c03\""), "{text}");
}

#[test]
fn the_sleeping_socket_activated_pool_stays_asleep() {
    let farm = Farm::start(&[("c", 1)], true);
    let file = farm.watch_file("");
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let out = farm.watch(&file, &["--dry-run"]).output().unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    let said = stdout(&out);
    let line = said
        .lines()
        .find(|l| field(l, "pool") == Some("z01"))
        .unwrap_or_default();
    assert_eq!(field(line, "state"), Some("idle"), "{said}");
    assert_eq!(farm.activations(), 0, "nothing woke it");
    assert!(!farm.d().join("z.pid").exists());
}

#[test]
fn a_crash_looping_master_spends_its_own_budget_and_another_is_still_relaunched() {
    let farm = Farm::start(&[("b", 2), ("c", 2)], false);
    let file = farm.watch_file("max_restarts = 1\nwithin = \"1h\"");
    farm.kill(1);
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 3, "{}", stderr(&out));
    assert!(farm.master_pid(1).is_some());
    farm.kill(1);
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 1, "{}", stderr(&out));
    assert!(
        farm.master_pid(1).is_none(),
        "c's budget is spent: left down"
    );
    let gave_up = farm
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("restart budget spent"))
        .count();
    assert!(gave_up >= 1, "{:#?}", farm.log_lines());
    let b = farm.master_pid(0).unwrap();
    farm.kill(0);
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 1, "c still down: {}", stderr(&out));
    assert!(
        farm.master_pid(0).is_some_and(|p| p != b),
        "b has a budget of its own"
    );
    assert!(farm.master_pid(1).is_none());
}

#[test]
fn a_bad_file_is_exit_2_naming_file_and_line_and_probes_nothing() {
    let dir = shared_tempdir();
    let socket = dir.path().join("probe.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    listener.set_nonblocking(true).unwrap();
    let target = format!(
        "url = \"unix://{};/ping\"\nfpm_config = \"/nonexistent\"",
        socket.display()
    );
    let good = format!("[[target]]\nurl = \"unix://{}\"\n", socket.display());
    for (text, line, says) in [
        (
            format!("timeout = 2\n{good}\n[[target]]\n{target}\nbogus = 1\n"),
            8,
            "unknown key `bogus`",
        ),
        (
            format!("timeout = 2\n{good}\n[[target]]\nfailures = 2\n"),
            5,
            "without `url`",
        ),
        (
            format!("timeout = 2\n\n{good}{good}"),
            5,
            "duplicate target",
        ),
        (format!("timeout = 2\nfailures = 0\n{good}"), 2, "failures"),
    ] {
        let file = dir.path().join("watch.toml");
        fs::write(&file, &text).unwrap();
        let out = php_relaunch()
            .args(["watch", "--config"])
            .arg(&file)
            .arg("--log")
            .arg(dir.path().join("log"))
            .output()
            .unwrap();
        assert_eq!(code(&out), 2, "{text}\n{}", stderr(&out));
        let said = stderr(&out);
        let at = format!("php-relaunch: {}:{line}: ", file.display());
        assert!(
            said.starts_with(&at),
            "{said} should start with {at}\n{text}"
        );
        assert!(said.contains(says), "{said}");
        assert_eq!(said.lines().count(), 1, "{said}");
        assert!(listener.accept().is_err(), "nothing probed");
    }
}

#[test]
fn watch_every_beside_a_classic_run_and_a_hook_none_waits_on_the_other() {
    let farm = Farm::start(&[("a", 2), ("b", 1), ("c", 1)], false);
    let only_a = farm.d().join("a.toml");
    fs::write(
        &only_a,
        format!(
            "timeout = {TIMEOUT}\n[discover]\nfpm_configs = [\"{}\"]\nfpm_bin = \"{}\"\n",
            farm.masters[0].conf.display(),
            farm.bin.display()
        ),
    )
    .unwrap();
    // --every repeats until the minute is over: start it early in one, so it outlives the others.
    let second = || chrono_second();
    if second() > 30 {
        wait_until("the next minute", Duration::from_secs(35), || second() < 30);
    }
    let mut every = farm
        .watch(&only_a, &["--every", "10"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The loop holds a's lock while it checks, and none while it sleeps; b's and c's are free.
    std::thread::sleep(Duration::from_millis(300));
    let b_target = format!("unix://{};/ping", farm.socket("b", "b01").display());
    let classic = php_relaunch()
        .arg(&b_target)
        .arg("2")
        .args(["--fpm-bin"])
        .arg(&farm.bin)
        .arg("--fpm-config")
        .arg(&farm.masters[1].conf)
        .arg("--log")
        .arg(farm.d().join("classic.log"))
        .arg("--state")
        .arg(farm.d().join("classic.json"))
        .output()
        .unwrap();
    assert_eq!(code(&classic), 0, "{}", stderr(&classic));
    assert_eq!(stderr(&classic), "");
    // A hook for c, answering through its own watch file: one event, one run, at once.
    let only_c = farm.d().join("c.toml");
    fs::write(
        &only_c,
        format!(
            "timeout = {TIMEOUT}\nstate_dir = \"{}/hook-state\"\n[discover]\nfpm_configs = [\"{}\"]\nfpm_bin = \"{}\"\n",
            farm.d().display(),
            farm.masters[2].conf.display(),
            farm.bin.display()
        ),
    )
    .unwrap();
    let c_old = farm.master_pid(2).unwrap();
    farm.kill(2);
    let mut hook = php_relaunch()
        .args(["hook", "--stdin", "--watch"])
        .arg(&only_c)
        .arg("--log")
        .arg(farm.d().join("hook.log"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut input = hook.stdin.take().unwrap();
        input.write_all(b"status=502 upstream=- uri=/\n").unwrap();
    }
    let out = hook.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(
        farm.master_pid(2).is_some_and(|p| p != c_old),
        "the hook's run relaunched c"
    );
    let hook_log = fs::read_to_string(farm.d().join("hook.log")).unwrap();
    assert!(hook_log.contains("trigger=hook"), "{hook_log}");
    assert!(hook_log.contains("pool=c01"), "{hook_log}");
    // All that while the loop was still going, and it turned nobody away.
    assert!(
        every.try_wait().unwrap().is_none(),
        "the --every loop still runs"
    );
    signal(every.id(), Signal::TERM);
    let out = every.wait_with_output().unwrap();
    assert!(!stderr(&out).contains("holds the lock"), "{}", stderr(&out));
}

#[test]
fn a_hung_pool_relaunches_its_master_once_and_names_its_healthy_siblings() {
    let farm = Farm::start(&[("c", 4)], false);
    // A deadline the healthy pools meet even on a loaded machine: only c01's is to pass.
    let file = farm.watch_file_timeout(5, "");
    // c01's only worker hangs; its master and the other pools' workers are fine. (Under load a
    // worker may show its pool's title a moment after the pool's socket exists.)
    let c01_worker = || {
        farm.family(0).into_iter().find(|&p| {
            fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.trim_end_matches(['\0', ' ']) == "php-fpm: pool c01")
        })
    };
    wait_until("c01's worker", Duration::from_secs(10), || {
        c01_worker().is_some()
    });
    let worker = c01_worker().expect("c01's worker");
    signal(worker, Signal::STOP);
    wait_until("the worker to stop", Duration::from_secs(5), || {
        state(worker) == Some('T')
    });
    let old = farm.master_pid(0).unwrap();
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    assert!(farm.master_pid(0).is_some_and(|p| p != old));
    let lines = farm.log_lines();
    assert_eq!(
        lines.len(),
        1,
        "one line: the pool with the problem {lines:#?}"
    );
    assert_eq!(field(&lines[0], "pool"), Some("c01"));
    // A stopped worker leaves its healthy master a graceful restart (continued first); only a
    // stopped master forces kill+start (#18: the pool user can stop its own workers).
    assert_eq!(field(&lines[0], "action"), Some("restart"), "{}", lines[0]);
    assert!(!alive(worker), "the stopped worker is gone");
    assert!(
        lines[0].contains("affected: healthy pools restarted with their master: c02, c03, c04"),
        "{}",
        lines[0]
    );
}

#[test]
fn a_run_past_its_run_timeout_is_logged_and_ended() {
    let farm = Farm::start(&[("c", 2)], false);
    let file = farm.watch_file("run_timeout = 1");
    farm.freeze(0);
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 1, "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("run-timeout"), "{}", stderr(&out));
    let lines = farm.log_lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    assert!(
        field(&lines[0], "url").is_some_and(|u| u.starts_with("watch:")),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("run-timeout"), "{}", lines[0]);
}

#[test]
fn a_mail_that_failed_is_sent_by_the_next_run() {
    let farm = Farm::start(&[("a", 2)], false);
    let mut busy = farm.fill("a", "a01");
    let file = farm.watch_file("emails = [\"ops@example.com\"]");
    let nowhere = format!("smtp://127.0.0.1:{}", crate::common::free_port());
    let out = farm.watch(&file, &["--smtp", &nowhere]).output().unwrap();
    assert_eq!(code(&out), 4, "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("mail"), "{}", stderr(&out));
    let first = farm.log_lines().pop().unwrap();
    assert_eq!(field(&first, "mail"), Some("failed"), "{first}");
    let smtp = Smtp::start(farm.d());
    let out = farm
        .watch(&file, &["--smtp", &smtp.url()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 4, "{}{}", stdout(&out), stderr(&out));
    let second = farm.log_lines().pop().unwrap();
    assert_eq!(field(&second, "mail"), Some("sent"), "{second}");
    wait_until_quietly(Duration::from_secs(5), || !smtp.messages().is_empty());
    assert_eq!(smtp.messages().len(), 1);
    assert!(smtp.messages()[0].contains("a01"));
    for child in &mut busy {
        let _ = child.kill();
        let _ = child.wait();
    }
}

#[test]
fn two_runs_at_once_relaunch_a_dead_master_once() {
    let farm = Farm::start(&[("c", 3)], false);
    let file = farm.watch_file("");
    farm.kill(0);
    let first = farm
        .watch(&file, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let second = farm
        .watch(&file, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let outs = [
        first.wait_with_output().unwrap(),
        second.wait_with_output().unwrap(),
    ];
    let mut codes: Vec<i32> = outs.iter().map(code).collect();
    codes.sort_unstable();
    assert!(
        codes == [3, 5] || codes == [0, 3],
        "{codes:?}: {}{}",
        stderr(&outs[0]),
        stderr(&outs[1])
    );
    assert!(farm.master_pid(0).is_some());
    let lines = farm.log_lines();
    let relaunches = lines
        .iter()
        .filter(|l| matches!(field(l, "action"), Some("start" | "kill+start")))
        .filter(|l| !l.contains("relaunched with its master"))
        .count();
    assert_eq!(relaunches, 1, "{lines:#?}");
}

#[test]
fn the_file_doctor_writes_watches_the_pools_it_found() {
    let farm = Farm::start(&[("c", 3)], false);
    let out = php_relaunch()
        .args(["doctor", "--watch-config", "--fpm-config"])
        .arg(&farm.masters[0].conf)
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let text = stdout(&out);
    for pool in &farm.masters[0].pools {
        let url = format!(
            "url = \"unix://{};/ping\"",
            farm.socket("c", pool).display()
        );
        assert!(text.contains(&url), "{url} in\n{text}");
    }
    // Only this farm's targets: doctor also finds the host's own php-fpm (Debian's php8.2-fpm),
    // whose service this test must not touch.
    let mut blocks = text.split("\n[[target]]");
    let mut mine = blocks.next().unwrap_or_default().to_owned();
    let ours = format!("url = \"unix://{}", farm.d().display());
    for block in blocks.filter(|b| b.contains(&ours)) {
        mine.push_str("\n[[target]]");
        mine.push_str(block);
    }
    assert!(!mine.contains("/run/php/"), "{mine}");
    let text = mine;
    let file = farm.d().join("doctor.toml");
    fs::write(&file, &text).unwrap();
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 0, "{text}\n{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    // Its master is controlled as doctor saw it: killed, it is relaunched.
    farm.kill(0);
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 3, "{text}\n{}", stderr(&out));
}

/// The lock a watch run of `file` takes for the farm's only master: the file under
/// /run/php-relaunch/ in which that run wrote its pid.
fn lock_of(farm: &Farm, file: &Path) -> PathBuf {
    let run = farm
        .watch(file, &[])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = run.id();
    let out = run.wait_with_output().unwrap();
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let said = format!("pid {pid}, watch,");
    fs::read_dir("/run/php-relaunch")
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .find(|path| fs::read_to_string(path).is_ok_and(|text| text.starts_with(&said)))
        .expect("the lock the run held names it")
}

/// `lock` held by this process (the same flock(2) lock every run takes) until the file is dropped.
fn hold(lock: &Path) -> fs::File {
    let file = fs::OpenOptions::new().write(true).open(lock).unwrap();
    file.try_lock().unwrap();
    file
}

/// A hook run for `file` answering one event; its output once it ends.
fn hook_event(farm: &Farm, file: &Path) -> Output {
    let mut hook = php_relaunch()
        .args(["hook", "--stdin", "--watch"])
        .arg(file)
        .arg("--log")
        .arg(farm.d().join("hook.log"))
        .arg("--hold")
        .arg("0")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut input = hook.stdin.take().unwrap();
        input.write_all(b"status=502 upstream=- uri=/\n").unwrap();
    }
    hook.wait_with_output().unwrap()
}

#[test]
fn a_hooks_run_waits_for_the_run_holding_its_master_and_judges_it_anew() {
    let farm = Farm::start(&[("a", 2)], false);
    let file = farm.watch_file("run_timeout = 20");
    let lock = lock_of(&farm, &file);
    let old = farm.master_pid(0).unwrap();

    // A cron run skips a master another run holds; the hook's run waits for it, then relaunches.
    let holder = hold(&lock);
    farm.kill(0);
    let out = farm.watch(&file, &[]).output().unwrap();
    assert_eq!(code(&out), 5, "{}{}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("skipped"), "{}", stderr(&out));
    assert_eq!(
        farm.master_pid(0),
        None,
        "the cron run left it to the holder"
    );
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(2));
        drop(holder);
    });
    let out = hook_event(&farm, &file);
    release.join().unwrap();
    assert!(
        farm.master_pid(0).is_some_and(|p| p != old),
        "the hook's run relaunched a once the lock was free: {}",
        stderr(&out)
    );
    let hook_log = fs::read_to_string(farm.d().join("hook.log")).unwrap();
    assert!(hook_log.contains("trigger=hook"), "{hook_log}");
    assert!(!stderr(&out).contains("skipped"), "{}", stderr(&out));

    // What the holder did meanwhile is what the waiting run judges: relaunched by the holder, the
    // master is healthy, and the hook's run leaves it alone.
    let holder = hold(&lock);
    farm.kill(0);
    let restart = {
        let bin = farm.bin.clone();
        let conf = farm.masters[0].conf.clone();
        let pid_file = farm.masters[0].pid_file.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(1));
            let started = Command::new(bin)
                .args(["--daemonize", "--fpm-config"])
                .arg(conf)
                .stdin(Stdio::null())
                .status()
                .unwrap();
            assert!(started.success(), "php-fpm started by the holder");
            // Its workers up before the lock is let go, as a run's relaunch waits for them.
            std::thread::sleep(Duration::from_secs(1));
            let master = live_pid_in(&pid_file);
            drop(holder);
            master
        })
    };
    let out = hook_event(&farm, &file);
    let by_holder = restart.join().unwrap();
    assert!(by_holder.is_some(), "the holder's master runs");
    assert_eq!(
        farm.master_pid(0),
        by_holder,
        "the hook's run left alone the master the holder had just started: {}",
        stderr(&out)
    );
    let hook_log = fs::read_to_string(farm.d().join("hook.log")).unwrap();
    assert!(
        !hook_log
            .lines()
            .last()
            .unwrap_or("")
            .contains("action=start")
            && !hook_log
                .lines()
                .last()
                .unwrap_or("")
                .contains("action=restart"),
        "{hook_log}"
    );
}

#[test]
fn a_relaunch_whose_mail_failed_is_told_by_the_next_run() {
    let farm = Farm::start(&[("a", 2)], false);
    let file = farm.watch_file("emails = [\"ops@example.com\"]");
    let old = farm.master_pid(0).unwrap();
    farm.kill(0);
    let nowhere = format!("smtp://127.0.0.1:{}", crate::common::free_port());
    let out = farm.watch(&file, &["--smtp", &nowhere]).output().unwrap();
    assert_eq!(code(&out), 3, "{}{}", stdout(&out), stderr(&out));
    assert!(farm.master_pid(0).is_some_and(|p| p != old));
    let first = farm.log_lines();
    assert!(
        first.iter().all(|l| field(l, "mail") == Some("failed")),
        "{first:#?}"
    );
    // The relaunch healed it, but nobody was told: the next run, healthy, tells.
    let smtp = Smtp::start(farm.d());
    let out = farm
        .watch(&file, &["--smtp", &smtp.url()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    wait_until_quietly(Duration::from_secs(5), || !smtp.messages().is_empty());
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "{messages:#?}");
    assert!(messages[0].contains("a01"), "{}", messages[0]);
    // Told once: a third run has nothing more to say.
    let out = farm
        .watch(&file, &["--smtp", &smtp.url()])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0, "{}{}", stdout(&out), stderr(&out));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(smtp.messages().len(), 1);
}
