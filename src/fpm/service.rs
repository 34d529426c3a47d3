//! The init system's side of php-fpm: which services exist, which one runs the verified master, the
//! binary and config each one uses by convention, and `service NAME ACTION`.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Mutex;

use anyhow::{Context, Result, bail};

use super::{Proc, trust};
use crate::spawn;

/// The config path in a master's title `php-fpm: master process (CONF)`.
pub fn master_config(cmd: &str) -> Option<&str> {
    cmd.trim()
        .strip_prefix("php-fpm: master process (")?
        .strip_suffix(')')
}

/// The service that runs a master with this config: Debian's `/etc/php/X.Y/fpm/php-fpm.conf` is
/// `phpX.Y-fpm`; elsewhere (FreeBSD, RHEL) the service is `php-fpm`.
pub fn service_of_config(config: &str) -> String {
    config
        .strip_prefix("/etc/php/")
        .and_then(|rest| rest.strip_suffix("/fpm/php-fpm.conf"))
        .filter(|version| is_version(version))
        .map_or_else(
            || "php-fpm".to_owned(),
            |version| format!("php{version}-fpm"),
        )
}

fn is_version(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit() || b == b'.')
}

/// `phpX.Y-fpm` → `X.Y`.
fn debian_version(service: &str) -> Option<&str> {
    service
        .strip_prefix("php")?
        .strip_suffix("-fpm")
        .filter(|v| is_version(v))
}

/// Where init scripts and units live.
const INIT_DIRS: [&str; 3] = ["/etc/init.d", "/usr/local/etc/rc.d", "/etc/rc.d"];
const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];

/// Whether an init script or systemd unit of this name exists.
pub fn service_exists(name: &str) -> bool {
    // An instance of a template unit (`php-fpm-ondemand@shop`) exists where its template does.
    let unit = match name.split_once('@') {
        Some((template, _)) => format!("{template}@"),
        None => name.to_owned(),
    };
    INIT_DIRS
        .iter()
        .any(|dir| Path::new(dir).join(name).is_file())
        || UNIT_DIRS
            .iter()
            .any(|dir| Path::new(dir).join(format!("{unit}.service")).is_file())
}

/// What runs a service on this host: `"systemd service"` when systemd is the init system and has a
/// unit of that name (`service` then redirects to `systemctl`), `"init script"` otherwise.
pub fn service_kind(name: &str) -> &'static str {
    if systemd_unit(name) {
        "systemd service"
    } else {
        "init script"
    }
}

/// Whether systemd runs this host (`/run/systemd/system`, as `sd_booted()` checks) and has a unit
/// file for the service.
fn systemd_unit(name: &str) -> bool {
    let unit = match name.split_once('@') {
        Some((template, _)) => format!("{template}@"),
        None => name.to_owned(),
    };
    Path::new("/run/systemd/system").is_dir()
        && UNIT_DIRS
            .iter()
            .any(|dir| Path::new(dir).join(format!("{unit}.service")).is_file())
}

/// The php-fpm services installed on this host.
fn installed_services() -> BTreeSet<String> {
    let looks_like_fpm =
        |name: &str| (name.starts_with("php") && name.ends_with("-fpm")) || name == "php_fpm";
    let mut found = BTreeSet::new();
    for dir in INIT_DIRS.iter().chain(&UNIT_DIRS) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let name = name.strip_suffix(".service").unwrap_or(&name);
            if looks_like_fpm(name) {
                found.insert(name.to_owned());
            }
        }
    }
    found
}

/// Picks the php-fpm service: the one whose verified master runs, else the only one installed. A
/// process that merely calls itself a master (any user can set a title) counts for nothing.
pub fn detect_service(procs: &[Proc]) -> Result<String> {
    let running: BTreeSet<String> = procs
        .iter()
        .filter(|p| !p.gone && p.uid == Some(trust::me()))
        .filter_map(|p| Some((p, service_of_config(master_config(&p.cmd)?))))
        .filter(|(p, name)| {
            service_exists(name)
                && service_binary(name).is_some_and(|bin| p.exe.as_deref() == Some(&bin))
        })
        .map(|(_, name)| name)
        .collect();
    let candidates = if running.is_empty() {
        installed_services()
    } else {
        running
    };
    let mut names = candidates.into_iter();
    match (names.next(), names.next()) {
        (Some(only), None) => Ok(only),
        (None, _) => bail!(
            "no php-fpm service found: name it with --service, or use --fpm-bin and --fpm-config"
        ),
        (Some(first), Some(second)) => {
            let rest: Vec<String> = names.collect();
            let all = [vec![first, second], rest].concat().join(", ");
            bail!("several php-fpm services ({all}): choose one with --service")
        }
    }
}

/// The config a service's master runs by its convention (Debian: `/etc/php/X.Y/fpm/php-fpm.conf`).
pub(super) fn conventional_config(service: &str) -> Option<PathBuf> {
    if let Some((version, pool)) = ondemand_instance(service) {
        return Some(PathBuf::from(format!(
            "/etc/php/{version}/fpm/ondemand/{pool}.conf"
        )));
    }
    match debian_version(service) {
        Some(version) => Some(PathBuf::from(format!(
            "/etc/php/{version}/fpm/php-fpm.conf"
        ))),
        None => spawn::first_existing(&["/usr/local/etc/php-fpm.conf", "/etc/php-fpm.conf"]),
    }
}

/// The service's php-fpm binary by its convention (Debian `phpX.Y-fpm` → `/usr/sbin/php-fpmX.Y`), if
/// it is trusted to run as root.
pub(super) fn service_binary(service: &str) -> Option<PathBuf> {
    let version = ondemand_instance(service).map(|(version, _)| version);
    let conventional = match version.as_deref().or_else(|| debian_version(service)) {
        Some(version) => PathBuf::from(format!("/usr/sbin/php-fpm{version}")),
        None => spawn::first_existing(&["/usr/local/sbin/php-fpm", "/usr/sbin/php-fpm"])?,
    };
    trust::binary(&conventional).ok()
}

/// `php-fpm-ondemand@POOL` (systemd/php-fpm-ondemand@.service): the PHP version whose
/// `/etc/php/X.Y/fpm/ondemand/POOL.conf` exists, and the pool.
fn ondemand_instance(service: &str) -> Option<(String, &str)> {
    let pool = service.strip_prefix("php-fpm-ondemand@")?;
    let versions = std::fs::read_dir("/etc/php").ok()?;
    versions
        .flatten()
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter(|version| is_version(version))
        .find(|version| {
            Path::new(&format!("/etc/php/{version}/fpm/ondemand/{pool}.conf")).is_file()
        })
        .map(|version| (version, pool))
}

/// What starting a service took beyond the command itself, for the run's log line (see
/// [`take_notes`]). Runs of one process are serialised by the run lock.
static NOTES: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// The notes the service commands since the last call left, e.g. that a unit in systemd's
/// start-limit had to be reset first.
pub fn take_notes() -> Vec<String> {
    NOTES
        .lock()
        .map(|mut notes| std::mem::take(&mut *notes))
        .unwrap_or_default()
}

/// `service NAME ACTION`, or `systemctl ACTION NAME` where there is no `service`. Under systemd, a
/// unit that crashed too often refuses `start` ("start-limit-hit") until `systemctl reset-failed`:
/// when a start or restart is refused so, the unit is reset and the action taken once more (the
/// run's own restart budget still bounds how often), and a note says so.
pub fn service_command(name: &str, action: &str, deadline: Duration) -> Result<()> {
    let first = run_service(name, action, deadline);
    let Err(err) = first else {
        return Ok(());
    };
    if !matches!(action, "start" | "restart") || !systemd_unit(name) || !start_limit_hit(name) {
        return Err(err);
    }
    let systemctl = systemctl().context("systemctl not found")?;
    let unit = OsStr::new(name);
    spawn::run_ok(
        &systemctl,
        &[OsStr::new("reset-failed"), unit],
        None,
        deadline,
    )
    .context("systemctl reset-failed")?;
    run_service(name, action, deadline)
        .context("after systemctl reset-failed (start-limit-hit)")?;
    if let Ok(mut notes) = NOTES.lock() {
        notes.push(format!(
            "{name} was in systemd's start-limit-hit: reset-failed, {action}ed"
        ));
    }
    Ok(())
}

fn run_service(name: &str, action: &str, deadline: Duration) -> Result<()> {
    // Under systemd, `service` only ends in `systemctl ACTION NAME`, after listing every unit file
    // (0.5–1.3 s measured under systemd 252, most of a hook's relaunch): ask systemctl at once.
    let direct = systemd_unit(name).then(systemctl).flatten();
    let (name, action) = (OsStr::new(name), OsStr::new(action));
    if let Some(systemctl) = direct {
        spawn::run_ok(&systemctl, &[action, name], None, deadline).map(drop)
    } else if let Some(service) =
        spawn::first_existing(&["/usr/sbin/service", "/sbin/service", "/usr/bin/service"])
    {
        spawn::run_ok(&service, &[name, action], None, deadline).map(drop)
    } else if let Some(systemctl) = systemctl() {
        spawn::run_ok(&systemctl, &[action, name], None, deadline).map(drop)
    } else {
        bail!("neither service nor systemctl found")
    }
}

fn systemctl() -> Option<PathBuf> {
    spawn::first_existing(&["/usr/bin/systemctl", "/bin/systemctl"])
}

/// Whether systemd refused the unit's last start for its start limit. systemd 252 keeps the
/// unit's `Result` at the crash's (`signal`, `exit-code`) and says so only in the journal: "Start
/// request repeated too quickly", which it logs for no other reason.
fn start_limit_hit(name: &str) -> bool {
    let Some(journalctl) = spawn::first_existing(&["/usr/bin/journalctl", "/bin/journalctl"])
    else {
        return false;
    };
    let unit = format!("{name}.service");
    let args = [
        "--no-pager",
        "--quiet",
        "--output=cat",
        "--lines=5",
        "--unit",
        unit.as_str(),
    ]
    .map(OsStr::new);
    spawn::run_ok(&journalctl, &args, None, Duration::from_secs(5))
        .is_ok_and(|out| last_start_refused(&out.output))
}

/// Whether the journal's last lines end in systemd's start-limit refusal (not an older one that a
/// later start has since overtaken).
fn last_start_refused(journal: &str) -> bool {
    // systemd follows the refusal with "Failed with result …" and "Failed to start …": the
    // refusal counts when no start came after it.
    journal
        .lines()
        .rev()
        .find(|line| {
            line.contains("Start request repeated too quickly")
                || line.starts_with("Started ")
                || line.starts_with("Starting ")
        })
        .is_some_and(|line| line.contains("Start request repeated too quickly"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn master_titles() {
        assert_eq!(
            master_config("php-fpm: master process (/etc/php/8.2/fpm/php-fpm.conf)"),
            Some("/etc/php/8.2/fpm/php-fpm.conf")
        );
        assert_eq!(master_config("php-fpm: pool www"), None);
        assert_eq!(master_config("/usr/sbin/php-fpm8.2 --daemonize"), None);
    }

    #[test]
    fn services_from_configs() {
        assert_eq!(
            service_of_config("/etc/php/8.2/fpm/php-fpm.conf"),
            "php8.2-fpm"
        );
        assert_eq!(
            service_of_config("/etc/php/7.4/fpm/php-fpm.conf"),
            "php7.4-fpm"
        );
        assert_eq!(service_of_config("/usr/local/etc/php-fpm.conf"), "php-fpm");
        assert_eq!(service_of_config("/etc/php/x/fpm/php-fpm.conf"), "php-fpm");
        assert_eq!(debian_version("php8.2-fpm"), Some("8.2"));
        assert_eq!(debian_version("php-fpm"), None);
    }

    #[test]
    fn start_limit_read_from_the_journal() {
        let refused = "php8.2-fpm.service: Main process exited, code=killed, status=9/KILL\n\
                       php8.2-fpm.service: Start request repeated too quickly.\n\
                       php8.2-fpm.service: Failed with result 'signal'.\n\
                       Failed to start php8.2-fpm.service - The PHP 8.2 FastCGI Process Manager.\n";
        assert!(last_start_refused(refused));
        let started_since =
            format!("{refused}Started php8.2-fpm.service - The PHP 8.2 FastCGI Process Manager.\n");
        assert!(!last_start_refused(&started_since));
        assert!(!last_start_refused("Failed to start php8.2-fpm.service.\n"));
        assert!(!last_start_refused(""));
    }
}
