//! Root trusts only what root controls (#13): each test plays an unprivileged local user (`nobody`)
//! or the pool user against a private php-fpm and nginx, one numbered item of the issue each, and
//! checks the watchdog is neither steered nor stalled. The attacker's own programs are an impostor
//! built from tests/fixtures/fake_master.c, a `sleep` as the victim, and a fake status server (a
//! thread below): each stands for what an attacker would run, not for a server we could run instead.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, SystemTime};

use crate::common::{Impostor, Site, alive, field, shared_tempdir, stderr, wait_until_quietly};

/// The one log line a run wrote.
fn only_line(site: &Site) -> String {
    let lines = site.log_lines();
    assert_eq!(lines.len(), 1, "{lines:#?}");
    lines[0].clone()
}

/// A run finds the SIGSTOPped master `hung` (and no other), kills its family and starts afresh.
fn assert_hung_master_is_killed_and_replaced(site: &Site, hung: u32) {
    let out = site.run(&site.heartbeat(), "2", &[]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = only_line(site);
    assert_eq!(
        field(&line, "old_pid"),
        Some(hung.to_string().as_str()),
        "{line}"
    );
    assert_eq!(field(&line, "action"), Some("kill+start"), "{line}");
    assert!(!alive(hung));
}

/// Runs `cmd` in a process group of its own, ending the group if it has not finished within
/// `limit`: a hang fails the test instead of holding it.
fn run_within(mut cmd: Command, limit: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    let child = cmd
        .process_group(0)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let finished = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let done = finished.clone();
    let killer = thread::spawn(move || {
        if !wait_until_quietly(limit, || done.load(std::sync::atomic::Ordering::SeqCst))
            && let Some(group) = rustix::process::Pid::from_raw(pid.cast_signed())
        {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
    });
    let out = child.wait_with_output().unwrap();
    finished.store(true, std::sync::atomic::Ordering::SeqCst);
    killer.join().unwrap();
    assert!(
        out.status.code().is_some(),
        "php-relaunch hung and was killed after {limit:?}: {}",
        stderr(&out)
    );
    out
}

/// The pool user makes nginx answer 502 by moving php-fpm's socket away; the master lives on.
fn move_socket_away(site: &Site) {
    fs::rename(&site.fpm.socket, site.dir.path().join("moved.sock")).unwrap();
    assert_eq!(crate::common::curl_status(&site.heartbeat()), "502");
}

#[test]
fn item_1_and_4_impostor_masters_are_never_taken_never_run_and_never_keep_php_fpm_down() {
    let site = Site::start();
    site.fpm.stop();
    let title = format!("php-fpm: master process ({})", site.fpm.config.display());
    let mut impostor = Impostor::build();
    for _ in 0..3 {
        impostor.start(&title);
    }
    let impostors = impostor.pids();

    let out = site.run(&site.heartbeat(), "5", &[]);

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = only_line(&site);
    assert_eq!(field(&line, "action"), Some("start"), "{line}");
    assert_eq!(
        field(&line, "old_pid"),
        Some("-"),
        "an impostor taken for the master: {line}"
    );
    assert_eq!(field(&line, "state"), Some("healthy"), "{line}");
    assert!(site.fpm.master().is_some());
    assert!(!impostor.ran_as_root());
    assert!(
        impostors.iter().all(|&pid| alive(pid)),
        "an impostor was signalled"
    );
}

#[test]
fn item_1_a_hung_real_master_among_ten_impostors_is_the_one_killed() {
    let site = Site::start();
    let real = site.fpm.master().unwrap();
    let title = format!("php-fpm: master process ({})", site.fpm.config.display());
    let mut impostor = Impostor::build();
    for _ in 0..10 {
        impostor.start(&title);
    }
    let impostors = impostor.pids();
    site.fpm.freeze();

    assert_hung_master_is_killed_and_replaced(&site, real);
    assert!(!impostor.ran_as_root());
    assert!(
        impostors.iter().all(|&pid| alive(pid)),
        "an impostor was signalled"
    );
}

/// A status server anyone could run on a free port (or the pool user on the status socket): it
/// answers every request with `page` as php-fpm's `?json&full`, until the test ends.
fn fake_status_server(page: String) -> (u16, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let handle = thread::spawn(move || {
        let until = std::time::Instant::now() + Duration::from_mins(1);
        while std::time::Instant::now() < until {
            match listener.accept() {
                Ok((mut stream, _)) => {
                    stream.set_nonblocking(false).unwrap();
                    let mut request = [0; 2048];
                    let _ = stream.read(&mut request);
                    let _ = write!(
                        stream,
                        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                        page.len()
                    );
                }
                Err(_) => thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    (port, handle)
}

#[test]
fn item_2_a_fake_status_page_gets_no_root_process_killed_and_is_not_believed_over_proc() {
    let site = Site::start();
    let mut victim = Command::new("/bin/sleep").arg("120").spawn().unwrap();
    let page = format!(
        r#"{{"pool":"www","active processes":5,"idle processes":0,"total processes":5,
            "processes":[{{"pid":{},"state":"Running","request duration":900000000,"request uri":"/x"}}]}}"#,
        victim.id()
    );
    let (port, _server) = fake_status_server(page);
    move_socket_away(&site);

    let out = site.run(
        &site.heartbeat(),
        "5",
        &[
            "--status",
            &format!("http://127.0.0.1:{port}/status?json"),
            "--stuck-after",
            "1s",
        ],
    );

    let still_running = victim.try_wait().unwrap().is_none();
    let _ = victim.kill();
    let _ = victim.wait();
    assert!(
        still_running,
        "root's sleep was killed on a status page's word"
    );
    // The page says all 5 workers are busy; /proc shows the real master's workers idle in accept(2):
    // php-fpm is relaunched, not reported saturated.
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = only_line(&site);
    assert_eq!(field(&line, "action"), Some("restart"), "{line}");
    assert_eq!(field(&line, "state"), Some("healthy"), "{line}");
    let error = field(&line, "error").unwrap_or_default();
    assert!(
        error.contains(&format!(
            "not killed, not workers of the verified master: {}",
            victim.id()
        )),
        "{line}"
    );
}

fn mkfifo(path: &Path) {
    let _ = fs::remove_file(path);
    assert!(Command::new("mkfifo").arg(path).status().unwrap().success());
}

/// Peak resident memory of a command in KiB, as GNU time measures it.
fn with_peak_rss(cmd: &Command, out_file: &Path) -> Command {
    let mut timed = Command::new("/usr/bin/time");
    timed.arg("-f").arg("%M").arg("-o").arg(out_file);
    run_by(timed, cmd)
}

/// `wrapper` with `cmd`'s program, arguments and environment changes appended: `cmd` run by it.
fn run_by(mut wrapper: Command, cmd: &Command) -> Command {
    wrapper.arg(cmd.get_program()).args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(value) => wrapper.env(key, value),
            None => wrapper.env_remove(key),
        };
    }
    wrapper
}

#[test]
fn item_3_fifos_and_dev_zero_as_pid_file_or_slowlog_neither_hang_nor_bloat_a_run() {
    let site = Site::start();
    let slowlog = site.dir.path().join("slow.log");
    site.fpm
        .reconfigure(&format!("slowlog = {}\n", slowlog.display()));
    for (pid_file_is_fifo, round) in [(true, 1), (false, 2)] {
        // The pool user owns the pid file's directory on Debian: it puts a FIFO or a link to
        // /dev/zero in place of the pid file and of the slowlog.
        let _ = fs::remove_file(&site.fpm.pid_file);
        let _ = fs::remove_file(&slowlog);
        if pid_file_is_fifo {
            mkfifo(&site.fpm.pid_file);
            symlink("/dev/zero", &slowlog).unwrap();
        } else {
            symlink("/dev/zero", &site.fpm.pid_file).unwrap();
            mkfifo(&slowlog);
        }
        move_socket_away(&site);
        let rss = site.dir.path().join(format!("rss-{round}"));
        // Each round is a first failure, not one within the previous round's cooldown.
        let _ = fs::remove_file(&site.state);
        let cmd = site.command(&site.heartbeat(), "5", &[]);

        let out = run_within(with_peak_rss(&cmd, &rss), Duration::from_mins(1));

        assert_eq!(
            out.status.code(),
            Some(3),
            "round {round}: {} {:?}",
            stderr(&out),
            site.log_lines()
        );
        // GNU time's last line is the figure (a line before it tells the exit status).
        let report = fs::read_to_string(&rss).unwrap();
        let peak_kib: u64 = report.lines().last().unwrap().trim().parse().unwrap();
        assert!(
            peak_kib < 64 * 1024,
            "round {round}: {peak_kib} KiB peak: a read was not bounded"
        );
        let line = site.log_lines().pop().unwrap();
        assert_eq!(field(&line, "state"), Some("healthy"), "{line}");
        // The master was found by its verified identity, whatever stood at the pid file's path.
        assert_ne!(field(&line, "old_pid"), Some("-"), "{line}");
    }
}

/// Seconds since the epoch, now.
fn now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .cast_signed()
}

#[test]
fn item_5_a_relaunch_time_in_the_future_does_not_block_relaunching() {
    let site = Site::start();
    let tomorrow = now() + 86_400;
    fs::write(
        &site.state,
        format!(r#"{{"relaunches":[{tomorrow}],"last_took_ms":2000,"failures":0}}"#),
    )
    .unwrap();
    site.fpm.stop();

    let out = site.run(&site.heartbeat(), "5", &["--max-restarts", "1"]);

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("held times after now"),
        "{}",
        stderr(&out)
    );
    let line = only_line(&site);
    assert_eq!(field(&line, "action"), Some("start"), "{line}");
    let state = fs::read_to_string(&site.state).unwrap();
    assert!(!state.contains(&tomorrow.to_string()), "{state}");
    // Said once: the next run finds nothing to discard.
    let out = site.run(&site.heartbeat(), "5", &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stderr(&out), "");
}

/// `cmd` run in a private mount namespace in which `dir` is a tiny tmpfs filled to the last block.
fn with_full_filesystem(cmd: &Command, dir: &Path) -> Command {
    let mut wrapped = Command::new("unshare");
    wrapped
        .args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
        .arg(
            "mount -t tmpfs -o size=64k,mode=1777 tmpfs \"$1\" && \
             (dd if=/dev/zero of=\"$1/fill\" bs=4k 2>/dev/null; true) && shift && exec \"$@\"",
        )
        .arg("sh")
        .arg(dir);
    run_by(wrapped, cmd)
}

#[test]
fn item_6_a_full_log_filesystem_still_leaves_the_state_saved() {
    let site = Site::start();
    let log_dir = site.dir.path().join("logs");
    fs::create_dir(&log_dir).unwrap();
    let log = log_dir.join("php-relaunch.log");
    site.fpm.stop();
    let mut cmd = crate::common::php_relaunch();
    cmd.arg(site.heartbeat())
        .arg("5")
        .args(site.fpm.direct_args())
        .arg("--log")
        .arg(&log)
        .arg("--lock")
        .arg(&site.lock)
        .arg("--state")
        .arg(&site.state);

    let out = with_full_filesystem(&cmd, &log_dir).output().unwrap();

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("writing the log"), "{}", stderr(&out));
    let state = fs::read_to_string(&site.state).unwrap();
    assert!(state.contains("\"relaunches\": [\n    "), "{state}");
    // The relaunch was remembered: php-fpm dies again at once, and the next run is in cooldown
    // instead of relaunching (and mailing) anew.
    site.fpm.stop();
    let out = site.run(&site.heartbeat(), "5", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let line = only_line(&site);
    assert_eq!(field(&line, "state"), Some("cooldown"), "{line}");
}

#[test]
fn item_7_a_master_started_through_a_linked_config_is_found_and_killed_when_hung() {
    let site = Site::start();
    site.fpm.stop();
    let link = site.dir.path().join("linked.conf");
    symlink(&site.fpm.config, &link).unwrap();
    let status = Command::new(&site.fpm.bin)
        .args(["--daemonize", "--fpm-config"])
        .arg(&link)
        .status()
        .unwrap();
    assert!(status.success());
    crate::common::wait_until("php-fpm master", Duration::from_secs(10), || {
        site.fpm.master().is_some()
    });
    let hung = site.fpm.master().unwrap();
    site.fpm.freeze();

    assert_hung_master_is_killed_and_replaced(&site, hung);
}

#[test]
fn item_8_a_full_tmp_does_not_block_a_relaunch() {
    // The site lives outside /tmp, which the run sees full. php-fpm's own opcache lock file, which
    // defaults to /tmp, is moved out of it: that is php-fpm's to configure, not ours.
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let site = Site::start_in(dir);
    let ini = site.dir.path().join("ini");
    fs::create_dir(&ini).unwrap();
    fs::write(
        ini.join("99-lock.ini"),
        format!("opcache.lockfile_path = {}\n", site.dir.path().display()),
    )
    .unwrap();
    site.fpm.stop();
    let mut cmd = site.command(&site.heartbeat(), "5", &[]);
    cmd.env("PHP_INI_SCAN_DIR", format!(":{}", ini.display()));

    let out = with_full_filesystem(&cmd, Path::new("/tmp"))
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let line = only_line(&site);
    assert_eq!(field(&line, "action"), Some("start"), "{line}");
    assert_eq!(field(&line, "state"), Some("healthy"), "{line}");
}

#[test]
fn item_9_pruning_leaves_files_that_are_not_evidence_alone() {
    let site = Site::start();
    let evidence = site.dir.path().join("evidence");
    fs::create_dir(&evidence).unwrap();
    let foreign: Vec<PathBuf> = (0..60)
        .map(|i| evidence.join(format!("notes-{i:02}.txt")))
        .collect();
    for file in &foreign {
        fs::write(file, "keep me").unwrap();
    }
    site.fpm.stop();

    let out = site.run(
        &site.heartbeat(),
        "5",
        &["--evidence-dir", evidence.to_str().unwrap()],
    );

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        foreign.iter().all(|f| f.exists()),
        "a foreign file was pruned"
    );
    let written: Vec<_> = fs::read_dir(&evidence)
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with("notes-"))
        .collect();
    assert_eq!(written.len(), 1, "the new evidence file is kept");
}

#[test]
fn item_10_a_huge_drain_timeout_is_a_clear_config_error() {
    let dir = shared_tempdir();
    let pools = dir.path().join("pools.toml");
    fs::write(
        &pools,
        "[pools.www]\nbalancer = \"nginx\"\ndrain_timeout = 9223372036854775807\n\
         [[pools.www.replicas]]\nfpm_bin = \"/usr/sbin/php-fpm8.2\"\nfpm_config = \"/etc/php/8.2/fpm/php-fpm.conf\"\n\
         ping = \"unix:///run/x.sock;/ping\"\n",
    )
    .unwrap();

    let out = crate::common::php_relaunch()
        .args(["pools", "restart", "--config"])
        .arg(&pools)
        .arg("--lock")
        .arg(dir.path().join("lock"))
        .arg("--log")
        .arg(dir.path().join("log"))
        .output()
        .unwrap();

    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        stderr(&out),
        format!(
            "php-relaunch: {}: line 3: pool 'www': field `drain_timeout` must be 0 to 86400 seconds, got 9223372036854775807\n",
            pools.display()
        )
    );
}

#[test]
fn item_11_control_characters_in_a_workers_title_show_escaped_in_the_mail() {
    let site = Site::start();
    let smtp = crate::common::Smtp::start(site.dir.path());
    // A pool whose name carries an escape sequence and a tab, as its workers show it.
    let conf = fs::read_to_string(&site.fpm.config)
        .unwrap()
        .replace("[www]", "[www\u{1b}[2J\tx]");
    fs::write(&site.fpm.config, conf).unwrap();
    site.fpm.stop();
    site.fpm.start();
    site.fpm.freeze();

    let out = site.run(
        &site.heartbeat(),
        "2",
        &["ops@example.com", "--smtp", &smtp.url()],
    );

    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1);
    let mail = &messages[0];
    assert!(mail.contains(r"php-fpm: pool www\u{1b}[2J\tx"), "{mail}");
    assert!(
        !mail.contains('\u{1b}'),
        "a raw escape sequence reached the mail"
    );
}

#[test]
fn every_run_has_an_overall_deadline_that_frees_the_lock() {
    // php-fpm now listens where nginx does not pass, so the heartbeat never recovers and verifying
    // the relaunch would wait out --restart-timeout 60; --run-timeout 3 ends the run first.
    let site = Site::start();
    let elsewhere = site.dir.path().join("elsewhere.sock");
    site.fpm
        .reconfigure(&format!("listen = {}\n", elsewhere.display()));
    assert_eq!(crate::common::curl_status(&site.heartbeat()), "502");
    let cmd = site.command(
        &site.heartbeat(),
        "1",
        &["--restart-timeout", "60", "--run-timeout", "3"],
    );

    let out = run_within(cmd, Duration::from_secs(50));

    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("run-timeout"), "{}", stderr(&out));
    let line = site.log_lines().pop().unwrap();
    assert_eq!(field(&line, "state"), Some("down"), "{line}");
    assert!(
        field(&line, "error").unwrap().starts_with("run-timeout: "),
        "{line}"
    );
    let lock = fs::File::open(&site.lock).unwrap();
    lock.try_lock()
        .expect("the lock is free once the run has ended");
}
