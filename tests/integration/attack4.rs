//! `watch` (#21) and the classic run against the pool user and `nobody`, second round (#18: root
//! trusts only what root controls). Private php-fpm masters from a copy of Debian's binary; the
//! attacker acts only as the pool user could (it owns the sockets' directory, as /run/php on
//! Debian) or as `nobody` would.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::{Fpm, Nginx, php_relaunch, shared_tempdir, stderr, stdout, wait_until};
use crate::pool_user::{
    as_www_data, master_in, occupy, target_file, two_pool_master, watch, workers_of,
    write_as_www_data, www_data_dir,
};

/// The first round's hard link, as a symbolic link: the probe's connect follows it to master
/// `b`'s socket (root's listener), and the believer, looking at the path without following it,
/// found "no socket file there, no claim". Master `a` hangs and looks healthy for ever.
#[test]
fn attack4_a_symlink_to_another_masters_socket_keeps_a_hung_master_looking_healthy() {
    let dir = shared_tempdir();
    let d = dir.path();
    let run = www_data_dir(d, "run");
    let a = master_in(d, &run, "a");
    let b = master_in(d, &run, "b");
    // A link to the master's own socket (as Debian's alternatives link /run/php/php-fpm.sock)
    // leads to a socket the verified master listens on: believed.
    let alias = Fpm {
        socket: d.join("alias.sock"),
        bin: a.bin.clone(),
        config: a.config.clone(),
        pid_file: a.pid_file.clone(),
        port: None,
    };
    std::os::unix::fs::symlink(&a.socket, &alias.socket).unwrap();
    let out = watch(d, &target_file(d, &alias), &["--dry-run"]);
    std::mem::forget(alias);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    let file = target_file(d, &a);
    let out = watch(d, &file, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    a.freeze();
    let (a_sock, b_sock) = (
        a.socket.display().to_string(),
        b.socket.display().to_string(),
    );
    assert!(as_www_data(&["ln", "-sf", &b_sock, &a_sock]));
    let out = watch(d, &file, &["--dry-run"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a hung master taken for healthy: another master answered through a link at its pool's \
         path: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("action=would-kill+start"),
        "{}",
        stdout(&out)
    );
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
    assert_ne!(classic.status.code(), Some(0), "{}", stdout(&classic));
}

/// Root's php-fpm configuration, in a directory only root writes, that includes `pool.d/*.conf`,
/// a directory the pool user can write (a hosting panel's per-site pool files, or a pool.d made
/// group-writable): whatever www-data puts there is read by the master root starts. Only the main
/// file was held to be root's. Returns the instance, and `secret/owned`, a file only a master
/// started with www-data's settings makes (its pid file, in a directory only root may write).
fn root_config_including_theirs(d: &Path) -> (Fpm, PathBuf) {
    let home = d.join("fpm");
    fs::create_dir(&home).unwrap();
    let secret = d.join("secret");
    fs::create_dir(&secret).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
    let pool_d = www_data_dir(d, "pool.d");
    let fpm = Fpm::new(&home);
    fs::write(
        &fpm.config,
        format!(
            "[global]\npid = {pid}\nerror_log = {home}/php-fpm.log\ndaemonize = yes\n\
             include = {pool_d}/*.conf\n",
            pid = fpm.pid_file.display(),
            home = home.display(),
            pool_d = pool_d.display()
        ),
    )
    .unwrap();
    fs::write(
        pool_d.join("site.conf"),
        format!(
            "[site]\nuser = www-data\ngroup = www-data\nlisten = {sock}\npm = static\n\
             pm.max_children = 1\nping.path = /ping\n",
            sock = fpm.socket.display()
        ),
    )
    .unwrap();
    (fpm, secret.join("owned"))
}

/// A root-owned php-fpm configuration whose `include` pattern matches files the pool user can
/// write: www-data adds a file with a `[global]` section of its own, the master is down, and watch
/// (and the classic run) start php-fpm as root with it: its master writes where www-data said.
/// Every file a configuration includes decides what root's master does, so each must be root's
/// too (as `fpm::root_file` holds the main file), else the pools are alert-only.
#[test]
fn attack4_a_root_configuration_including_files_the_pool_user_writes_is_never_started() {
    let dir = shared_tempdir();
    let d = dir.path();
    let (fpm, owned) = root_config_including_theirs(d);
    write_as_www_data(
        &d.join("pool.d/zz-evil.conf"),
        &format!("[global]\npid = {}\n", owned.display()),
    );
    let file = d.join("watch.toml");
    fs::write(
        &file,
        format!(
            "timeout = 1\nrestart_timeout = 10\npause_file = \"{d}/pause\"\n\n[discover]\n\
             fpm_configs = [\"{config}\"]\nfpm_bin = \"{bin}\"\n",
            d = d.display(),
            config = fpm.config.display(),
            bin = fpm.bin.display()
        ),
    )
    .unwrap();
    let out = watch(d, &file, &[]);
    let log = fs::read_to_string(d.join("log")).unwrap_or_default();
    let started = owned.exists();
    if let Ok(pid) = fs::read_to_string(&owned) {
        crate::common::signal(pid.trim().parse().unwrap(), rustix::process::Signal::KILL);
    }
    assert!(
        !started,
        "root ran php-fpm with a pool file www-data wrote (exit {:?}): {log}{}",
        out.status.code(),
        stderr(&out)
    );
    // The classic run is held to the same: its --fpm-config is refused.
    let classic = php_relaunch()
        .arg(fpm.target("/ping"))
        .arg("1")
        .arg("--fpm-bin")
        .arg(&fpm.bin)
        .arg("--fpm-config")
        .arg(&fpm.config)
        .arg("--state")
        .arg(d.join("classic.json"))
        .output()
        .unwrap();
    let started = owned.exists();
    if let Ok(pid) = fs::read_to_string(&owned) {
        crate::common::signal(pid.trim().parse().unwrap(), rustix::process::Signal::KILL);
    }
    assert!(
        !started,
        "the classic run started php-fpm with a pool file www-data wrote (exit {:?}): {}{}",
        classic.status.code(),
        stdout(&classic),
        stderr(&classic)
    );
}

/// An nginx serving www's ping at `/ping` and www's status page at `/status`, over their sockets.
fn nginx_for_www(d: &Path) -> Nginx {
    let port = crate::common::free_port();
    fs::copy("/etc/nginx/fastcgi_params", d.join("fastcgi_params")).unwrap();
    let run = d.join("run");
    let nginx = Nginx::custom(
        d,
        port,
        &format!(
            "user www-data;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\n\
             events {{ worker_connections 64; }}\nhttp {{\n access_log off;\n server {{\n  \
             listen 127.0.0.1:{port};\n  location = /ping {{ include {d}/fastcgi_params; fastcgi_param SCRIPT_FILENAME {d}$fastcgi_script_name; \
             fastcgi_pass unix:{run}/www.sock; }}\n  location = /status {{ fastcgi_param SCRIPT_FILENAME {d}$fastcgi_script_name; include \
             {d}/fastcgi_params; fastcgi_pass unix:{run}/www-status.sock; }}\n }}\n}}\n",
            d = d.display(),
            run = run.display(),
        ),
    );
    nginx.start();
    nginx
}

/// The first round's fix judges a target's own pool, and takes a status page's `pool` only when
/// the target's pool is unknown: an HTTP heartbeat. There the page still chooses which pool's
/// workers are killed: www-data links `shop`'s socket (another site's pool of the same master)
/// in place of www's status socket, fills www (its heartbeat times out), and watch reads shop's
/// page through nginx, judges shop, and SIGKILLs shop's worker in the middle of its request; shop
/// being "not saturated", the master is then restarted too (every pool's requests dropped), where
/// www's full pool alone is alerted and left alone.
#[test]
fn attack4_a_status_page_over_http_gets_another_pools_workers_killed() {
    let dir = shared_tempdir();
    let d = dir.path();
    let fpm = two_pool_master(d);
    let nginx = nginx_for_www(d);
    wait_until("shop's two workers", Duration::from_secs(10), || {
        workers_of(&fpm, "shop").len() == 2
    });
    let shop = workers_of(&fpm, "shop");
    let _busy = occupy(d, "www", 2);
    wait_until("www to be full", Duration::from_secs(20), || {
        !php_relaunch()
            .args(["check", &nginx.url("ping"), "0.3"])
            .output()
            .unwrap()
            .status
            .success()
    });
    let _slow = occupy(d, "shop", 1);
    let (shop_sock, status) = (
        d.join("run/shop.sock").display().to_string(),
        d.join("run/www-status.sock").display().to_string(),
    );
    assert!(as_www_data(&["ln", "-f", &shop_sock, &status]));
    // shop's request has been running longer than stuck_after.
    std::thread::sleep(Duration::from_millis(1500));

    let file = d.join("stuck.toml");
    fs::write(
        &file,
        format!(
            "timeout = 2\npause_file = \"{d}/pause\"\n\n[[target]]\nurl = \"{ping}\"\n\
             fpm_bin = \"{bin}\"\nfpm_config = \"{conf}\"\nstatus = \"{status}\"\n\
             stuck_after = \"1s\"\n",
            d = d.display(),
            ping = nginx.url("ping"),
            bin = fpm.bin.display(),
            conf = fpm.config.display(),
            status = nginx.url("status"),
        ),
    )
    .unwrap();
    let out = watch(d, &file, &[]);
    let log = fs::read_to_string(d.join("log")).unwrap_or_default();
    assert!(
        shop.iter().all(|&p| crate::common::alive(p)),
        "shop's worker was killed for www's page (exit {:?}): {log}{}",
        out.status.code(),
        stderr(&out)
    );
    // www is full: alerted, and its master (every pool's requests) left alone.
    assert!(log.contains("state=saturated"), "{log}");
    assert!(!log.contains("action=restart"), "{log}");
}

/// An alert-only discovered pool (no service and no `fpm_bin`: nothing to verify its master by)
/// believed any root listener the path led to: www-data links master `b`'s socket in place of
/// hung master `a`'s, and no alert ever tells of `a`. A link at the path a probe connected through
/// is never php-fpm's socket, whatever is known of its master.
#[test]
fn attack4_a_link_at_an_alert_only_pools_path_silences_its_hung_master() {
    alert_only_master_hidden_by(&["ln", "-sf"], "a link");
}

/// The same with a hard link (a socket file, bound to master `b`'s listener): an alert-only pool
/// has no verified master to hold the socket against, so `a`'s hang is never told. Its master is
/// still known by its configuration: only a root process titled `php-fpm: master process (CONF)`
/// holding the listener bound there is `a`'s.
#[test]
fn attack4_a_hard_link_at_an_alert_only_pools_path_silences_its_hung_master() {
    alert_only_master_hidden_by(&["ln", "-f"], "a hard link");
}

/// Master `a` discovered alert-only and hung, while www-data puts `b`'s socket at its path with
/// `ln`: the run must not say healthy.
fn alert_only_master_hidden_by(ln: &[&str], what: &str) {
    let dir = shared_tempdir();
    let d = dir.path();
    let run = www_data_dir(d, "run");
    let a = master_in(d, &run, "a");
    let b = master_in(d, &run, "b");
    let file = d.join("watch.toml");
    fs::write(
        &file,
        format!(
            "timeout = 2\nrestart_timeout = 10\npause_file = \"{d}/pause\"\n\n[discover]\n\
             fpm_configs = [\"{conf}\"]\n",
            d = d.display(),
            conf = a.config.display()
        ),
    )
    .unwrap();
    let out = watch(d, &file, &["--dry-run"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    a.freeze();
    let (a_sock, b_sock) = (
        a.socket.display().to_string(),
        b.socket.display().to_string(),
    );
    let argv: Vec<&str> = ln
        .iter()
        .copied()
        .chain([b_sock.as_str(), a_sock.as_str()])
        .collect();
    assert!(as_www_data(&argv));
    let out = watch(d, &file, &["--dry-run"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a hung alert-only master taken for healthy through {what}: {}{}",
        stdout(&out),
        stderr(&out)
    );
}
