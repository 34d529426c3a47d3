//! The shipped systemd units, as `systemd-analyze security --offline=yes` rates them: php-relaunch's
//! own services at most 5.0, the on-demand php-fpm template no worse than Debian's own
//! `php8.2-fpm.service`. That they still relaunch php-fpm is shown under a real systemd by
//! `scripts/systemd-tier.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn unit(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("systemd")
        .join(name)
}

/// The overall exposure systemd-analyze gives a unit file, e.g. 9.6 for "9.6 UNSAFE".
fn exposure(path: &Path) -> f64 {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(path)
        .env("SYSTEMD_COLORS", "0")
        .output()
        .expect("systemd-analyze runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .unwrap_or_else(|| panic!("no exposure line for {}: {text}", path.display()));
    let value = line
        .rsplit_once(": ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|v| v.parse().ok());
    value.unwrap_or_else(|| panic!("unreadable exposure line: {line}"))
}

#[test]
fn php_relaunch_services_are_exposed_at_most_5() {
    for name in ["php-relaunch.service", "php-relaunch-hook.service"] {
        let level = exposure(&unit(name));
        assert!(level <= 5.0, "{name}: exposure {level}, more than 5.0");
    }
}

#[test]
fn ondemand_service_is_no_worse_than_debians_php_fpm() {
    let debian = exposure(Path::new("/lib/systemd/system/php8.2-fpm.service"));
    let ours = exposure(&unit("php-fpm-ondemand@.service"));
    assert!(
        ours <= debian,
        "php-fpm-ondemand@.service: exposure {ours}, Debian's php8.2-fpm.service {debian}"
    );
}

#[test]
fn services_relaunch_through_systemd_not_as_children() {
    // A php-fpm started directly (--fpm-bin) would inherit the sandbox and die with the unit.
    for name in ["php-relaunch.service", "php-relaunch-hook.service"] {
        let text = std::fs::read_to_string(unit(name)).expect("unit readable");
        let exec = text
            .lines()
            .find(|l| l.starts_with("ExecStart="))
            .expect("an ExecStart line");
        assert!(exec.contains("--service php8.2-fpm"), "{name}: {exec}");
        assert!(!exec.contains("--fpm-bin"), "{name}: {exec}");
    }
}
