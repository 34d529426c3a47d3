//! `watch` (#21) and the classic run against the pool user, third round (#18: root trusts only
//! what root controls). Private php-fpm masters from a copy of Debian's binary; the attacker acts
//! only as the pool's own PHP code could (a script that starts a program in the background).

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::process::Signal;

use crate::common::{
    Fpm, php_relaunch, project, shared_tempdir, signal, stderr, stdout, wait_until,
};
use crate::pool_user::{WWW_DATA, master_in, target_file, watch};

/// A program the pool's PHP left running, ended by pid when dropped.
pub(crate) struct Responder(u32);

impl Drop for Responder {
    fn drop(&mut self) {
        signal(self.0, Signal::KILL);
    }
}

/// What any PHP script of the pool may do: start a program in the background. It inherits the
/// pool's listening socket from its worker (php-fpm leaves it open across exec) and answers every
/// FastCGI request that reaches it as a healthy pool would (tests/fixtures/inherited_responder.pl).
pub(crate) fn php_leaves_a_responder(d: &Path, fpm: &Fpm) -> Responder {
    let drop_box = d.join("bg");
    fs::create_dir(&drop_box).unwrap();
    chown(&drop_box, Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    let responder = d.join("responder.pl");
    fs::copy(
        project().join("tests/fixtures/inherited_responder.pl"),
        &responder,
    )
    .unwrap();
    let pid_file = drop_box.join("pid");
    let script = d.join("bg.php");
    fs::write(
        &script,
        format!(
            "<?php exec('perl {} {} > /dev/null 2>&1 &'); echo 'started';\n",
            responder.display(),
            pid_file.display()
        ),
    )
    .unwrap();
    let out = php_relaunch()
        .args(["check", &fpm.target(&script.display().to_string()), "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the responder", Duration::from_secs(5), || {
        fs::read_to_string(&pid_file).is_ok_and(|p| p.trim().parse::<u32>().is_ok())
    });
    Responder(
        fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap(),
    )
}

/// The classic run of `fpm`'s `/ping`, controlled directly, in `--dry-run`.
fn classic(d: &Path, fpm: &Fpm) -> std::process::Output {
    php_relaunch()
        .arg(fpm.target("/ping"))
        .arg("2")
        .args(fpm.direct_args())
        .arg("--state")
        .arg(d.join("classic.json"))
        .arg("--dry-run")
        .output()
        .unwrap()
}

/// A listening socket's `SO_PEERCRED` pid names who called listen(2), not who accepts: a program
/// a pool's PHP left running accepts on the pool's socket it inherited, and while the whole
/// php-fpm family hangs (SIGSTOP: master and workers), it answers every probe. The pid is the
/// verified master's, so the answer is believed: a hung php-fpm looks healthy for ever, and is
/// never killed and started again.
#[test]
fn attack5_a_program_php_left_running_answers_for_a_hung_master() {
    let dir = shared_tempdir();
    let d = dir.path();
    let a = master_in(d, d, "a");
    let file = target_file(d, &a);
    let out = watch(d, &file, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let _responder = php_leaves_a_responder(d, &a);

    a.freeze();
    let out = watch(d, &file, &["--dry-run"]);
    assert!(
        stdout(&out).contains("action=would-kill+start"),
        "a hung master taken for healthy: a program PHP left running answered on its inherited \
         socket (exit {:?}): {}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    let out = classic(d, &a);
    assert_ne!(
        out.status.code(),
        Some(0),
        "the classic run too: {}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// The test suite's activator (tests/fixtures/activator.py, root's, as systemd's `.socket` unit)
/// holding a pool's socket and starting php-fpm on the first connection; ended by pid when dropped.
struct Activated {
    bin: PathBuf,
    config: PathBuf,
    socket: PathBuf,
    activator: std::process::Child,
}

impl Activated {
    fn start(d: &Path) -> Activated {
        let bin = d.join("php-fpm");
        fs::copy("/usr/sbin/php-fpm8.2", &bin).unwrap();
        let socket = d.join("www.sock");
        let config = d.join("php-fpm.conf");
        fs::write(
            &config,
            format!(
                "[global]\npid = {d}/php-fpm.pid\nerror_log = {d}/php-fpm.log\n\n\
                 [www]\nuser = www-data\ngroup = www-data\nlisten = {socket}\npm = ondemand\n\
                 pm.max_children = 4\npm.process_idle_timeout = 60s\nping.path = /ping\n",
                d = d.display(),
                socket = socket.display(),
            ),
        )
        .unwrap();
        let activator = std::process::Command::new("/usr/bin/python3")
            .arg(project().join("tests/fixtures/activator.py"))
            .arg(&socket)
            .arg("--")
            .arg(&bin)
            .args(["--nodaemonize", "--fpm-config"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let ready = PathBuf::from(format!("{}.ready", socket.display()));
        wait_until("the activator", Duration::from_secs(10), || ready.exists());
        Activated {
            bin,
            config,
            socket,
            activator,
        }
    }
}

impl Drop for Activated {
    fn drop(&mut self) {
        signal(self.activator.id(), Signal::TERM);
        let _ = self.activator.wait();
        for pid in crate::common::pids_of_exe(&self.bin) {
            signal(pid, Signal::KILL);
        }
    }
}

/// An alert-only discovered pool (no service, no `fpm_bin`) that root's activator holds, as
/// systemd's `.socket` unit does: awake and answering, its php-fpm master started with the very
/// configuration watched, it is alerted as `untrusted-listener` on every run, because its socket was
/// opened by the activator, not by "the master of its configuration" (a false alarm mailed every
/// minute while the pool is up).
#[test]
fn attack5_an_awake_socket_activated_alert_only_pool_is_not_called_untrusted() {
    let dir = shared_tempdir();
    let d = dir.path();
    let pool = Activated::start(d);
    let file = d.join("watch.toml");
    fs::write(
        &file,
        format!(
            "timeout = 2\npause_file = \"{d}/pause\"\n\n[discover]\nfpm_configs = [\"{conf}\"]\n",
            d = d.display(),
            conf = pool.config.display()
        ),
    )
    .unwrap();
    // Awake: the first request starts its master.
    let target = format!("unix://{};/ping", pool.socket.display());
    let woke = php_relaunch()
        .args(["check", &target, "5"])
        .output()
        .unwrap();
    assert!(woke.status.success(), "{}", stderr(&woke));
    let out = watch(d, &file, &["--dry-run"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "an awake, healthy socket-activated pool alerted: {}{}",
        stdout(&out),
        stderr(&out)
    );
}
