//! `watch` (#21) against the pool user and `nobody` (#18: root trusts only what root controls).
//! Private php-fpm masters from a copy of Debian's binary, watched through `[discover]` files; the
//! attacker acts only as the pool user could (a PHP script) or as `nobody` would.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use rustix::process::Signal;

use crate::common::{
    Fpm, alive, field, php_relaunch, shared_tempdir, signal, stderr, stdout, wait_until,
};
use crate::pool_user::{
    Busy, WWW_DATA, master_in, occupy, target_file, two_pool_master, watch, workers_of,
    write_as_www_data,
};

/// A `[discover]` watch file for `fpm`'s config, controlled directly through its binary.
fn discover_file(dir: &Path, fpm: &Fpm) -> PathBuf {
    let file = dir.join("watch.toml");
    fs::write(
        &file,
        format!(
            "timeout = 2\nrestart_timeout = 10\npause_file = \"{d}/pause\"\n\n[discover]\n\
             fpm_configs = [\"{conf}\"]\nfpm_bin = \"{bin}\"\n",
            d = dir.display(),
            conf = fpm.config.display(),
            bin = fpm.bin.display()
        ),
    )
    .unwrap();
    file
}

/// A process the pool's PHP started in the background, ended by pid when dropped.
struct Background(u32);

impl Drop for Background {
    fn drop(&mut self) {
        signal(self.0, Signal::KILL);
    }
}

/// What any PHP script of the pool may do: start a program in the background. It inherits the
/// pool's listening socket from its worker (php-fpm leaves it open across exec) and outlives it.
fn php_starts_a_background_program(dir: &Path, fpm: &Fpm) -> Background {
    let drop_box = dir.join("bg");
    fs::create_dir(&drop_box).unwrap();
    chown(&drop_box, Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    let script = dir.join("bg.php");
    fs::write(
        &script,
        format!(
            "<?php exec('sleep 300 > /dev/null 2>&1 & echo $! > {}/pid'); echo 'started';\n",
            drop_box.display()
        ),
    )
    .unwrap();
    let out = php_relaunch()
        .args(["check", &fpm.target(&script.display().to_string()), "5"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pid_file = drop_box.join("pid");
    wait_until("the background program", Duration::from_secs(5), || {
        fs::read_to_string(&pid_file).is_ok_and(|p| p.trim().parse::<u32>().is_ok())
    });
    let pid = fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    Background(pid)
}

/// The master and every worker SIGKILLed at once (a crash, the OOM killer): the socket file stays.
fn crash(fpm: &Fpm) {
    let family = fpm.pids();
    for &pid in &family {
        signal(pid, Signal::KILL);
    }
    wait_until("the family to die", Duration::from_secs(5), || {
        family.iter().all(|&p| !alive(p))
    });
}

/// A program the pool's PHP left running holds the pool's listening socket, so `[discover]` took
/// the pool for a socket-activated one: when its master crashed, watch said `socket-lost` ("restart
/// the socket unit") and never relaunched php-fpm. Only root's holders are activators (#18).
#[test]
fn attack3_a_php_background_program_keeps_a_crashed_pool_from_being_relaunched() {
    let dir = shared_tempdir();
    let d = dir.path();
    let fpm = Fpm::new(d);
    fpm.start();
    let file = discover_file(d, &fpm);
    let out = watch(d, &file, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let background = php_starts_a_background_program(d, &fpm);
    assert!(alive(background.0));
    crash(&fpm);
    let out = watch(d, &file, &[]);
    let log = fs::read_to_string(d.join("log")).unwrap_or_default();
    let line = log.lines().next().unwrap_or_default();
    assert_ne!(
        field(line, "state"),
        Some("socket-lost"),
        "a pool of a crashed master taken for a socket-activated one: {line}"
    );
    assert!(
        fpm.master().is_some(),
        "the crashed master is relaunched (exit {:?}): {log}{}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
}

/// Both workers of `www` busy, until its ping no longer answers.
fn fill_www(d: &Path) -> Busy {
    let busy = occupy(d, "www", 2);
    let ping = format!("unix://{}/run/www.sock;/ping", d.display());
    wait_until("www to be full", Duration::from_secs(20), || {
        !php_relaunch()
            .args(["check", &ping, "0.3"])
            .output()
            .unwrap()
            .status
            .success()
    });
    busy
}

/// `www`'s status page is a claim: the pool user owns the directory of its socket (and the
/// socket files), so it links `shop`'s socket (another site's pool of the same master, root's
/// listener) in place of www's status socket. watch then read shop's page for www, judged the pool
/// the page named, and killed shop's worker that was in a long request: it checked only that it
/// was a worker of the verified master, not of the pool it judged ("stuck workers of one pool are
/// killed without touching the others", #21). Every run (every hook event) cuts shop's requests.
#[test]
fn attack3_a_linked_status_socket_gets_another_pools_workers_killed() {
    let dir = shared_tempdir();
    let d = dir.path();
    let fpm = two_pool_master(d);
    wait_until("shop's two workers", Duration::from_secs(10), || {
        workers_of(&fpm, "shop").len() == 2
    });
    let shop = workers_of(&fpm, "shop");
    let _busy = fill_www(d);
    // One of shop's workers in a long request (anyone who may use shop's socket can start one).
    let _slow = occupy(d, "shop", 1);

    // www-data: shop's socket linked in place of www's status socket.
    let status = d.join("run/www-status.sock");
    let linked = Command::new("setpriv")
        .args(["--reuid=33", "--regid=33", "--clear-groups", "ln", "-f"])
        .arg(d.join("run/shop.sock"))
        .arg(&status)
        .status()
        .unwrap();
    assert!(linked.success());
    std::thread::sleep(Duration::from_millis(1500));

    let file = d.join("stuck.toml");
    fs::write(
        &file,
        format!(
            "timeout = 2\npause_file = \"{d}/pause\"\n\n[[target]]\nurl = \"unix://{d}/run/www.sock;/ping\"\n\
             fpm_bin = \"{bin}\"\nfpm_config = \"{conf}\"\nstatus = \"unix://{status};/status\"\n\
             stuck_after = \"1s\"\n",
            d = d.display(),
            bin = fpm.bin.display(),
            conf = fpm.config.display(),
            status = status.display()
        ),
    )
    .unwrap();
    let out = watch(d, &file, &[]);
    let log = fs::read_to_string(d.join("log")).unwrap_or_default();
    assert!(
        shop.iter().all(|&p| alive(p)),
        "shop's worker was killed for www's page (exit {:?}): {log}{}",
        out.status.code(),
        stderr(&out)
    );
    // www is judged by its own workers: full, so alerted and left alone.
    assert!(log.contains("state=saturated"), "{log}");
    assert!(!log.contains("action=kill-stuck"), "{log}");
}

/// www-data's own php-fpm configuration in a directory of its own (`theirs/`), whose master (run as
/// root) would write its pid file into `secret/`, a directory only root may write; its pool is down.
/// Returns the configuration and `secret/owned`, which only such a master makes.
fn planted_config(d: &Path) -> (PathBuf, PathBuf) {
    let secret = d.join("secret");
    fs::create_dir(&secret).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
    let theirs = d.join("theirs");
    fs::create_dir(&theirs).unwrap();
    chown(&theirs, Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    let evil = theirs.join("evil.conf");
    write_as_www_data(
        &evil,
        &format!(
            "[global]\npid = {secret}/owned\nerror_log = {t}/error.log\ndaemonize = yes\n\n\
             [evil]\nuser = www-data\ngroup = www-data\nlisten = {t}/evil.sock\npm = static\n\
             pm.max_children = 1\n",
            secret = secret.display(),
            t = theirs.display()
        ),
    );
    (evil, secret.join("owned"))
}

/// A watch file discovering `config`, controlled with `fpm`'s binary (root's).
fn discovering(d: &Path, config: &Path, fpm: &Fpm) -> String {
    format!(
        "timeout = 1\nrestart_timeout = 10\npause_file = \"{d}/pause\"\n\n[discover]\n\
         fpm_configs = [\"{config}\"]\nfpm_bin = \"{bin}\"\n",
        d = d.display(),
        config = config.display(),
        bin = fpm.bin.display()
    )
}

/// The watch file decides what root runs (`service`, `fpm_config`, `[discover]`'s configurations
/// started with `fpm_bin`) and where root writes (`log`, `state_dir`, `metrics_file`). One the pool
/// user can write was read all the same (followed through links, owner never looked at): here
/// www-data's file discovers www-data's php-fpm configuration, whose pool is down, so watch starts
/// a php-fpm master as root with it, and that master writes its pid file where www-data said (a
/// directory only root may write). Root should read only a watch file root controls (as `fpm_bin`
/// must be, #13).
#[test]
fn attack3_a_watch_file_the_pool_user_owns_is_refused() {
    let dir = shared_tempdir();
    let d = dir.path();
    let fpm = Fpm::new(d);
    let (evil, owned) = planted_config(d);
    let file = d.join("theirs/watch.toml");
    write_as_www_data(&file, &discovering(d, &evil, &fpm));
    let out = watch(d, &file, &[]);
    assert!(
        !owned.exists(),
        "root ran php-fpm with www-data's configuration (exit {:?}): {}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("is owned by uid 33, not by root"),
        "{}",
        stderr(&out)
    );
}

/// Root's own watch file, whose `[discover]` pattern matches a configuration the pool user wrote
/// (a pattern over a directory others can write): its pool is down, and watch started a php-fpm
/// master as root with www-data's configuration. Such a pool is watched alert-only, and says why.
#[test]
fn attack3_a_discovered_configuration_the_pool_user_owns_is_never_started() {
    let dir = shared_tempdir();
    let d = dir.path();
    let fpm = Fpm::new(d);
    let (evil, owned) = planted_config(d);
    let file = d.join("watch.toml");
    fs::write(&file, discovering(d, &evil, &fpm)).unwrap();
    let out = watch(d, &file, &[]);
    let log = fs::read_to_string(d.join("log")).unwrap_or_default();
    assert!(
        !owned.exists(),
        "root ran php-fpm with www-data's configuration (exit {:?}): {log}{}",
        out.status.code(),
        stderr(&out)
    );
    assert!(log.contains("alert only"), "{log}");
}

/// The pool user owns the sockets' directory (and the socket files): it links another master's
/// socket in place of pool `a`'s. Master `a` hangs; its target's probe reaches master `b`'s pool,
/// root's listener, and `a` looked healthy for ever (a FastCGI target's listener is judged by its
/// owner alone, not by whether `a`'s master holds it). The requests meant for `a` now run in `b`'s
/// pool, and `a`'s hung master is never relaunched.
#[test]
fn attack3_another_masters_socket_linked_in_keeps_a_hung_master_looking_healthy() {
    let dir = shared_tempdir();
    let d = dir.path();
    let run = d.join("run");
    fs::create_dir(&run).unwrap();
    chown(&run, Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    let a = master_in(d, &run, "a");
    let b = master_in(d, &run, "b");
    let file = target_file(d, &a);
    let out = watch(d, &file, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    a.freeze();
    let linked = Command::new("setpriv")
        .args(["--reuid=33", "--regid=33", "--clear-groups", "ln", "-f"])
        .arg(&b.socket)
        .arg(&a.socket)
        .status()
        .unwrap();
    assert!(linked.success());
    let out = watch(d, &file, &["--dry-run"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a hung master taken for healthy: another master answered at its pool's path: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("action=would-kill+start"),
        "{}",
        stdout(&out)
    );
    // The classic run of the same pool judges it alike.
    let classic = php_relaunch()
        .arg(a.target("/ping"))
        .arg("2")
        .arg("--fpm-bin")
        .arg(&a.bin)
        .arg("--fpm-config")
        .arg(&a.config)
        .arg("--state")
        .arg(d.join("classic.json"))
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_ne!(classic.status.code(), Some(0), "{}", stderr(&classic));
    assert!(
        stdout(&classic).contains("verdict=untrusted-listener"),
        "{}",
        stdout(&classic)
    );
}
