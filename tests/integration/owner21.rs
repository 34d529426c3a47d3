//! Root trusts only what root controls (#18), for what `watch` (#21) left open: the pools file
//! (which names the php-fpm replicas root starts, stops and signals) must be root's as the watch
//! file is, and discovered configurations watched alert-only are each their own master (lock,
//! budget, group), never one shared `service:detected`.

use std::fs;
use std::os::unix::fs::{PermissionsExt, chown, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use rustix::process::Signal;

use crate::common::{Fpm, field, live_pid_in, php_relaunch, shared_tempdir, signal, stderr};
use crate::pool_user::{WWW_DATA, write_as_www_data};

/// A directory of `d` that www-data owns (where the pool user can write).
fn theirs(d: &Path) -> PathBuf {
    let theirs = d.join("theirs");
    fs::create_dir(&theirs).unwrap();
    chown(&theirs, Some(WWW_DATA), Some(WWW_DATA)).unwrap();
    theirs
}

/// A php-fpm configuration whose master (run as root) writes its pid file into `secret/`, a
/// directory only root may write. Returns the configuration and `secret/owned`, which only such a
/// master makes.
fn marking_config(d: &Path, config: &Path, write: impl Fn(&Path, &str)) -> (PathBuf, PathBuf) {
    let secret = d.join("secret");
    fs::create_dir_all(&secret).unwrap();
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o700)).unwrap();
    let at = config.parent().unwrap().display().to_string();
    write(
        config,
        &format!(
            "[global]\npid = {secret}/owned\nerror_log = {at}/error.log\ndaemonize = yes\n\n\
             [www]\nuser = www-data\ngroup = www-data\nlisten = {at}/www.sock\npm = static\n\
             pm.max_children = 1\nping.path = /ping\n",
            secret = secret.display(),
        ),
    );
    (config.to_owned(), secret.join("owned"))
}

/// A pools file of one pool `www` whose one replica runs `fpm`'s binary (root's) with `config`.
fn pools_toml(d: &Path, fpm: &Fpm, config: &Path) -> String {
    format!(
        "[pools.www]\nbalancer = \"nginx\"\n\n[[pools.www.replicas]]\nfpm_bin = \"{bin}\"\n\
         fpm_config = \"{config}\"\nping = \"unix://{d}/theirs/www.sock;/ping\"\n",
        bin = fpm.bin.display(),
        config = config.display(),
        d = d.display(),
    )
}

/// `php-relaunch pools ARGS --config FILE`, its log and lock in `d`.
fn pools(d: &Path, file: &Path, args: &[&str]) -> Output {
    php_relaunch()
        .arg("pools")
        .args(args)
        .arg("--config")
        .arg(file)
        .arg("--log")
        .arg(d.join("log"))
        .arg("--lock")
        .arg(d.join("lock"))
        .output()
        .unwrap()
}

/// Ends the master a test should never have seen started, so a failing test leaves nothing behind.
struct Marked(PathBuf);

impl Drop for Marked {
    fn drop(&mut self) {
        if let Some(pid) = live_pid_in(&self.0) {
            signal(pid, Signal::KILL);
        }
    }
}

/// Asserts a refusal: exit 2, one line on stderr naming `file` and saying `why`, nothing started.
fn assert_refused(out: &Output, file: &Path, why: &str, owned: &Path) {
    assert!(
        !owned.exists(),
        "root ran php-fpm as the pools file said (exit {:?}): {}",
        out.status.code(),
        stderr(out)
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(out));
    let err = stderr(out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains(why), "{err}");
}

/// The pools file decides which php-fpm root starts, with which configuration: one the pool user
/// wrote was read all the same, and `pools start` (or a `--pool` cron run) started a php-fpm master
/// as root with the pool user's configuration, which wrote where only root may.
#[test]
fn owner21_a_pools_file_the_pool_user_owns_is_refused() {
    let dir = shared_tempdir();
    let d = dir.path();
    let fpm = Fpm::new(d);
    let theirs = theirs(d);
    let (config, owned) = marking_config(d, &theirs.join("evil.conf"), write_as_www_data);
    let _marked = Marked(owned.clone());
    let file = theirs.join("pools.toml");
    write_as_www_data(&file, &pools_toml(d, &fpm, &config));

    let out = pools(d, &file, &["start"]);
    assert_refused(&out, &file, "is owned by uid 33, not by root", &owned);

    // The classic run's `--pool` reads it too: refused before anything is probed or started.
    let out = php_relaunch()
        .arg(format!("unix://{}/www.sock;/ping", theirs.display()))
        .arg("1")
        .args(["--pool", "www", "--config"])
        .arg(&file)
        .arg("--log")
        .arg(d.join("log"))
        .arg("--state")
        .arg(d.join("state"))
        .arg("--lock")
        .arg(d.join("lock"))
        .output()
        .unwrap();
    assert_refused(&out, &file, "is owned by uid 33, not by root", &owned);
}

/// Root's own pools file, but writable by others, or naming a php-fpm configuration the pool user
/// wrote: refused as well, nothing started.
#[test]
fn owner21_a_pools_file_others_can_write_or_naming_their_configuration_is_refused() {
    let dir = shared_tempdir();
    let d = dir.path();
    let fpm = Fpm::new(d);
    let theirs = theirs(d);

    let (mine, owned) = marking_config(d, &d.join("mine.conf"), |p, t| fs::write(p, t).unwrap());
    let _marked = Marked(owned.clone());
    let file = d.join("pools.toml");
    fs::write(&file, pools_toml(d, &fpm, &mine)).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o646)).unwrap();
    let out = pools(d, &file, &["start"]);
    assert_refused(&out, &file, "is writable by group or others", &owned);

    let (evil, owned) = marking_config(d, &theirs.join("evil.conf"), write_as_www_data);
    let _marked = Marked(owned.clone());
    fs::write(&file, pools_toml(d, &fpm, &evil)).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let out = pools(d, &file, &["start"]);
    assert_refused(&out, &file, "is owned by uid 33, not by root", &owned);
    assert!(stderr(&out).contains("fpm_config"), "{}", stderr(&out));
}

/// `--config` given as a link in a directory the pool user can write: checked only at its target,
/// the pool user chose which of root's files root read (and could swap the link between the check
/// and the read). Such a link is refused; a link in root's own directory is followed as before.
#[test]
fn owner21_a_pools_file_linked_from_a_directory_others_can_write_is_refused() {
    let dir = shared_tempdir();
    let d = dir.path();
    let fpm = Fpm::new(d);
    let theirs = theirs(d);
    let (mine, owned) = marking_config(d, &d.join("mine.conf"), |p, t| fs::write(p, t).unwrap());
    let _marked = Marked(owned.clone());
    let real = d.join("real.toml");
    fs::write(&real, pools_toml(d, &fpm, &mine)).unwrap();

    let link = theirs.join("pools.toml");
    let made = Command::new("setpriv")
        .args(["--reuid=33", "--regid=33", "--clear-groups", "ln", "-s"])
        .arg(&real)
        .arg(&link)
        .status()
        .unwrap();
    assert!(made.success());
    let out = pools(d, &link, &["list"]);
    assert_refused(&out, &link, "could be replaced by another user", &owned);

    // Root's link in root's directory: read as ever.
    let root_link = d.join("linked.toml");
    symlink(&real, &root_link).unwrap();
    let out = pools(d, &root_link, &["list"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// Removes, when dropped, the locks under /run/php-relaunch/ whose names carry `tag` (the test's
/// temporary directory): the tests leave that directory as they found it.
struct Locks(String);

impl Locks {
    fn of(dir: &Path) -> Locks {
        Locks(dir.file_name().unwrap().to_string_lossy().replace('.', "_"))
    }

    fn paths(&self) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir("/run/php-relaunch") else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().replace('.', "_").contains(&self.0))
            })
            .collect();
        paths.sort();
        paths
    }
}

impl Drop for Locks {
    fn drop(&mut self) {
        for path in self.paths() {
            let _ = fs::remove_file(path);
        }
    }
}

/// `php-relaunch watch --config FILE`, its log and state in `d`; the log's lines.
fn watch(d: &Path, file: &Path) -> (Output, Vec<String>) {
    let out = php_relaunch()
        .arg("watch")
        .arg("--config")
        .arg(file)
        .arg("--log")
        .arg(d.join("log"))
        .arg("--state-dir")
        .arg(d.join("state"))
        .output()
        .unwrap();
    let log = fs::read_to_string(d.join("log")).unwrap_or_default();
    let _ = fs::remove_file(d.join("log"));
    (out, log.lines().map(str::to_owned).collect())
}

/// Two unrelated php-fpm configurations found by `[discover]` with no service and no `fpm_bin`:
/// both watched alert-only. They were one master, `service:detected` (the lock a classic run of the
/// detected service takes, one budget, one group): a run holding one skipped the other too.
#[test]
fn owner21_alert_only_discovered_configurations_are_each_their_own_master() {
    let dir = shared_tempdir();
    let d = dir.path();
    let locks = Locks::of(d);
    let (a, b) = (d.join("a"), d.join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    // Both down: each pool has something to say.
    let (one, two) = (Fpm::new(&a), Fpm::new(&b));
    let file = d.join("watch.toml");
    fs::write(
        &file,
        format!(
            "timeout = 1\n\n[discover]\nfpm_configs = [\"{}\", \"{}\"]\n",
            one.config.display(),
            two.config.display()
        ),
    )
    .unwrap();

    let (out, lines) = watch(d, &file);
    assert_eq!(lines.len(), 2, "{lines:?}\n{}", stderr(&out));
    let masters: Vec<&str> = lines.iter().filter_map(|l| field(l, "master")).collect();
    assert_eq!(masters.len(), 2, "{lines:?}");
    assert_ne!(masters[0], masters[1], "{lines:?}");
    assert!(lines.iter().all(|l| l.contains("alert only")), "{lines:?}");
    let held = locks.paths();
    assert_eq!(held.len(), 2, "a lock per configuration: {held:?}");

    // A run holding one of them skips that one only.
    let holder = fs::OpenOptions::new().write(true).open(&held[0]).unwrap();
    holder.try_lock().unwrap();
    let (out, lines) = watch(d, &file);
    drop(holder);
    assert!(
        stderr(&out).contains(&held[0].display().to_string()),
        "{}",
        stderr(&out)
    );
    assert!(
        !stderr(&out).contains(&held[1].display().to_string()),
        "{}",
        stderr(&out)
    );
    assert_eq!(lines.len(), 1, "the other is judged: {lines:?}");
}

#[test]
fn owner21_a_classic_runs_fpm_config_the_pool_user_owns_is_refused() {
    let dir = shared_tempdir();
    let d = dir.path();
    let theirs = theirs(d);
    let (config, owned) = marking_config(d, &theirs.join("php-fpm.conf"), write_as_www_data);
    // Root's binary copy (not started: the run would start it, with www-data's configuration).
    let fpm = Fpm::new(d);
    let out = php_relaunch()
        .arg(format!(
            "unix://{};/ping",
            theirs.join("www.sock").display()
        ))
        .arg("1")
        .arg("--fpm-bin")
        .arg(&fpm.bin)
        .arg("--fpm-config")
        .arg(&config)
        .arg("--state")
        .arg(d.join("state.json"))
        .arg("--log")
        .arg(d.join("log"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let said = stderr(&out);
    assert_eq!(said.lines().count(), 1, "{said}");
    assert!(said.contains("--fpm-config"), "{said}");
    assert!(said.contains("not trusted"), "{said}");
    assert!(
        !owned.exists(),
        "root started php-fpm with www-data's configuration"
    );
}
