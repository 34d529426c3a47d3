//! One lock per php-fpm instance (#19): runs for different masters never wait for each other, an
//! `--every` loop lets its lock go while it sleeps, and a run turned away says which run holds it.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::common::{Site, field, php_relaunch, stderr};

/// `php-relaunch URL 2 …` on `site`'s php-fpm, log and state, with the default (per-instance) lock.
fn run_with_default_lock(site: &Site, extra: &[&str]) -> Command {
    let mut cmd = php_relaunch();
    cmd.arg(site.heartbeat())
        .arg("2")
        .args(extra)
        .args(site.fpm.direct_args())
        .arg("--log")
        .arg(&site.log)
        .arg("--state")
        .arg(&site.state)
        .env_remove("RUST_BACKTRACE");
    cmd
}

/// Removes, when dropped, the default locks the runs took for these sites' php-fpm (their names
/// carry the site's temporary directory): the tests leave /run/php-relaunch as they found it.
struct DefaultLocks(Vec<String>);

impl DefaultLocks {
    fn of(sites: &[&Site]) -> DefaultLocks {
        DefaultLocks(
            sites
                .iter()
                .map(|s| {
                    s.dir
                        .path()
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .replace('.', "_")
                })
                .collect(),
        )
    }
}

impl Drop for DefaultLocks {
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir("/run/php-relaunch") else {
            return;
        };
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if self
                .0
                .iter()
                .any(|tag| name.replace('.', "_").contains(tag.as_str()))
            {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
}

#[test]
fn every_loops_for_two_php_fpm_instances_both_check_all_minute() {
    let (one, two) = (Site::start(), Site::start());
    let _locks = DefaultLocks::of(&[&one, &two]);
    // Each php-fpm down and held back by --failures: every check writes a line and changes nothing.
    one.fpm.stop();
    two.fpm.stop();
    early_in_a_minute();
    let loops: Vec<_> = [&one, &two]
        .iter()
        .map(|site| {
            run_with_default_lock(site, &["--every", "10", "--failures", "100"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (site, child) in [&one, &two].into_iter().zip(loops) {
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
        // Started in the first 20 s of the minute, every 10 s: at least 4 checks, each made.
        let lines = site.log_lines();
        assert!(lines.len() >= 4, "{lines:#?}\n{}", stderr(&out));
        for (n, line) in lines.iter().enumerate() {
            assert_eq!(field(line, "state"), Some("failing"), "{line}");
            assert!(
                line.ends_with(&format!(
                    " error=\"failure {} of 100 before a relaunch\"",
                    n + 1
                )),
                "{line}"
            );
        }
    }
}

/// Waits, if need be, for the first 20 seconds of a minute: `--every` stops at the minute's end.
fn early_in_a_minute() {
    use chrono::Timelike as _;
    crate::common::wait_until(
        "the first 20 s of a minute",
        Duration::from_secs(61),
        || chrono::Local::now().second() < 20,
    );
}

#[test]
fn a_run_turned_away_says_which_run_holds_the_lock() {
    let site = Site::start();
    let _locks = DefaultLocks::of(&[&site]);
    // A frozen php-fpm: the holder's probe waits out its 2 s deadline with the lock held.
    site.fpm.freeze();
    let mut holder = run_with_default_lock(&site, &["--failures", "100"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Once the holder has the lock: it says so in the lock file.
    let mark = format!("pid {}, ", holder.id());
    crate::common::wait_until(
        "the holder to take its lock",
        Duration::from_secs(10),
        || {
            std::fs::read_dir("/run/php-relaunch").is_ok_and(|dir| {
                dir.flatten().any(|e| {
                    std::fs::read_to_string(e.path()).is_ok_and(|text| text.starts_with(&mark))
                })
            })
        },
    );
    let out = run_with_default_lock(&site, &["--failures", "100"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "{}", stderr(&out));
    let said = stderr(&out);
    let _ = holder.kill();
    let _ = holder.wait();
    let pid = holder.id();
    assert!(
        said.starts_with(&format!(
            "php-relaunch: another run (pid {pid}, cron, since "
        )),
        "{said:?}"
    );
    assert!(said.contains("/run/php-relaunch/"), "{said}");
}
