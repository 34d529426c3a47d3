//! `[discover]`: every pool of the php-fpm configurations the patterns match, found anew each run
//! (a site added tomorrow is watched after php-fpm's reload, the file unedited), as `doctor` reads
//! them. A pool is probed over its own listen socket: its `ping.path` when set, else FastCGI
//! GET_VALUES. A pool with `pm.status_path` is judged (saturated, stuck workers) from its own status
//! page, as a listed target with `status` is. A socket held by something other than php-fpm
//! (systemd, an activator) is an on-demand pool, watched without waking it.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::config::watch::{Discover, DiscoveredControl, Memo, Target};
use crate::fpm::{self, sockets};
use crate::listener;

/// The targets of the pools found, and what could not be watched (one line each).
pub fn targets(discover: &Discover) -> (Vec<Target>, Vec<String>) {
    let mut targets = Vec::new();
    let mut notes = Vec::new();
    let mut configs: Vec<PathBuf> = discover
        .fpm_configs
        .iter()
        .flat_map(|pattern| expand(pattern))
        .map(|config| config.canonicalize().unwrap_or(config))
        .collect();
    configs.dedup();
    if configs.is_empty() {
        notes.push(format!(
            "no php-fpm configuration matches {}",
            discover.fpm_configs.join(", ")
        ));
    }
    // Who holds sockets, besides php-fpm, and which socket is bound to each file: read once per
    // run, not once per pool.
    let activators = activator_sockets();
    let bound = if activators.is_empty() {
        HashMap::new()
    } else {
        listener::unix_by_file()
    };
    // The settings every pool shares are parsed and checked once per run, not once per pool.
    let mut memo = Memo::default();
    for config in configs {
        let control = control_of(&config, discover.fpm_bin.is_some());
        let read = fpm::read_config(&config);
        if read.pools.is_empty() {
            notes.push(format!("{}: no pool defined", config.display()));
        }
        for pool in read.pools {
            let Some(listen) = pool.settings.get("listen") else {
                notes.push(format!(
                    "pool {} ({}): no `listen`: nothing to watch",
                    pool.name,
                    pool.file.display()
                ));
                continue;
            };
            let url = url_of(listen, pool.settings.get("ping.path").map(String::as_str));
            let status = status_of(&pool.settings);
            // Only root's holders are activators (#18): a program PHP started inherits the
            // socket from its worker and outlives it, and is no activator.
            let on_demand = listen.starts_with('/')
                && listener::socket_file(Path::new(listen))
                    .and_then(|file| bound.get(&file))
                    .into_iter()
                    .flatten()
                    .filter(|l| l.trusted())
                    .filter_map(|l| activators.get(&l.inode))
                    .flatten()
                    .any(|&pid| sockets::trusted_process(pid));
            match discover.target(
                &mut memo,
                &url,
                &pool.name,
                &control,
                on_demand,
                status.as_deref(),
            ) {
                Ok(target) => targets.push(target),
                Err(err) => notes.push(format!("{err:#}")),
            }
        }
    }
    (targets, notes)
}

/// How a configuration's master is controlled: the service whose configuration it is, else
/// `[discover]`'s `fpm_bin`, else nothing (alert only, saying what to set).
fn control_of(config: &Path, fpm_bin: bool) -> DiscoveredControl {
    let service = config
        .to_str()
        .and_then(|c| c.strip_prefix("/etc/php/"))
        .and_then(|rest| rest.strip_suffix("/fpm/php-fpm.conf"))
        .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .map(|version| format!("php{version}-fpm"))
        .filter(|service| fpm::service_exists(service));
    // Root would start a master with it, through its service or fpm_bin: only a configuration
    // root controls, its includes too (#18).
    let untrusted = |err: anyhow::Error| DiscoveredControl::AlertOnly {
        config: config.to_owned(),
        why: format!("{err:#}: php-fpm is not started with it"),
    };
    match (service, fpm_bin) {
        (Some(service), _) => match fpm::root_config(config) {
            Ok(_) => DiscoveredControl::Service(service),
            Err(err) => untrusted(err),
        },
        (None, true) => match fpm::root_config(config) {
            Ok(_) => DiscoveredControl::Direct(config.to_owned()),
            Err(err) => untrusted(err),
        },
        (None, false) => DiscoveredControl::AlertOnly {
            config: config.to_owned(),
            why: format!(
                "no service runs {} and [discover] has no fpm_bin: set fpm_bin (or list it as a \
                 [[target]] with service or fpm_bin + fpm_config) to have it relaunched",
                config.display()
            ),
        },
    }
}

/// The probe of a pool at `listen`: its ping, else GET_VALUES.
pub fn url_of(listen: &str, ping: Option<&str>) -> String {
    if listen.starts_with('/') {
        return match ping {
            Some(ping) => format!("unix://{listen};{ping}"),
            None => format!("unix://{listen}"),
        };
    }
    let (host, port) = match listen.rsplit_once(':') {
        Some((host, port)) => (host.trim_matches(['[', ']']), port),
        None => ("127.0.0.1", listen),
    };
    let host = match host {
        "" | "0.0.0.0" | "*" => "127.0.0.1".to_owned(),
        "::" => "[::1]".to_owned(),
        host if host.contains(':') => format!("[{host}]"),
        host => host.to_owned(),
    };
    format!("fcgi://{host}:{port}{}", ping.unwrap_or(""))
}

/// A pool's status page, when it has one (`pm.status_path`), in the form `--status` takes: over
/// `pm.status_listen` when set (php-fpm 8.0+ answers it from a pool of its own, `NAME_status`, so it
/// answers while every worker of the pool is busy), else over the pool's own `listen` (a worker
/// answers it). Only asked once the pool's probe failed, as a classic run's `--status` is.
fn status_of(settings: &std::collections::BTreeMap<String, String>) -> Option<String> {
    let path = settings
        .get("pm.status_path")
        .map(|p| p.trim())
        .filter(|p| p.starts_with('/'))?;
    let listen = settings
        .get("pm.status_listen")
        .or_else(|| settings.get("listen"))
        .map(|l| l.trim())
        .filter(|l| !l.is_empty())?;
    Some(url_of(listen, Some(path)))
}

/// The sockets processes other than php-fpm hold open, with their holders: a pool's listening
/// socket held by one of root's is held by systemd's `.socket` unit (or an activator), which starts
/// its php-fpm on the first request. Other users' processes and php-fpm's own, most of a host with
/// many pools, are not read; whose a holder really is, is asked only of a pool's socket's holders.
fn activator_sockets() -> HashMap<u64, Vec<u32>> {
    let mut inodes: HashMap<u64, Vec<u32>> = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return inodes;
    };
    for entry in procs.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // Only root's (or our) processes are activators: another user's is not read further
        // (its /proc directory is its effective uid's; `trusted_process` judges the holders found).
        if entry
            .metadata()
            .is_ok_and(|meta| !crate::listener::trusted_uid(meta.uid()))
        {
            continue;
        }
        let Ok(exe) = std::fs::read_link(format!("/proc/{pid}/exe")) else {
            continue;
        };
        if fpm::is_php_fpm(&exe) {
            continue;
        }
        for inode in sockets::held(pid) {
            inodes.entry(inode).or_default().push(pid);
        }
    }
    inodes
}

/// The files a pattern names: `*` and `?` within any path component.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut found = vec![PathBuf::from("/")];
    let relative = !pattern.starts_with('/');
    if relative {
        found = vec![PathBuf::from(".")];
    }
    for part in pattern.split('/').filter(|p| !p.is_empty()) {
        let wild = part.contains(['*', '?']);
        let mut next = Vec::new();
        for dir in found {
            if !wild {
                next.push(dir.join(part));
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|name| !name.starts_with('.') && matches(part, name))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|name| dir.join(name)));
        }
        found = next;
    }
    found.into_iter().filter(|p| p.is_file()).collect()
}

/// Shell-style matching of one component: `*` any run, `?` one character.
fn matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    let (mut pi, mut ni, mut star, mut mark) = (0, 0, None, 0);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_components() {
        for (pattern, name, expected) in [
            ("*", "8.2", true),
            ("php-fpm*.conf", "php-fpm.conf", true),
            ("php-fpm*.conf", "php-fpm-a.conf", true),
            ("*.conf", "www.conf.bak", false),
            ("8.?", "8.2", true),
            ("8.?", "8.21", false),
        ] {
            assert_eq!(matches(pattern, name), expected, "{pattern} {name}");
        }
    }

    #[test]
    fn patterns_expand_over_directories() {
        let dir = tempfile::tempdir().unwrap();
        for version in ["8.1", "8.2"] {
            let fpm = dir.path().join(version).join("fpm");
            std::fs::create_dir_all(&fpm).unwrap();
            std::fs::write(fpm.join("php-fpm.conf"), "").unwrap();
        }
        std::fs::create_dir_all(dir.path().join("8.3/fpm")).unwrap();
        let found = expand(&format!("{}/*/fpm/php-fpm.conf", dir.path().display()));
        assert_eq!(
            found,
            [
                dir.path().join("8.1/fpm/php-fpm.conf"),
                dir.path().join("8.2/fpm/php-fpm.conf")
            ]
        );
    }

    #[test]
    fn listen_addresses_become_targets() {
        for (listen, ping, url) in [
            (
                "/run/php/a.sock",
                Some("/ping"),
                "unix:///run/php/a.sock;/ping",
            ),
            ("/run/php/a.sock", None, "unix:///run/php/a.sock"),
            ("127.0.0.1:9000", None, "fcgi://127.0.0.1:9000"),
            ("9001", Some("/ping"), "fcgi://127.0.0.1:9001/ping"),
            ("[::]:9003", None, "fcgi://[::1]:9003"),
        ] {
            assert_eq!(url_of(listen, ping), url);
            assert!(url.parse::<crate::probe::Target>().is_ok(), "{url}");
        }
    }

    #[test]
    fn a_status_page_is_asked_where_php_fpm_serves_it() {
        let settings = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<std::collections::BTreeMap<_, _>>()
        };
        for (pairs, status) in [
            (
                &[("listen", "/run/php/a.sock"), ("pm.status_path", "/status")][..],
                Some("unix:///run/php/a.sock;/status"),
            ),
            (
                &[
                    ("listen", "/run/php/a.sock"),
                    ("pm.status_path", "/fpm-status"),
                    ("pm.status_listen", "/run/php/a-status.sock"),
                ][..],
                Some("unix:///run/php/a-status.sock;/fpm-status"),
            ),
            (
                &[
                    ("listen", "9000"),
                    ("pm.status_path", "/status"),
                    ("pm.status_listen", "127.0.0.1:9100"),
                ][..],
                Some("fcgi://127.0.0.1:9100/status"),
            ),
            (
                &[
                    ("listen", "/run/php/a.sock"),
                    ("pm.status_listen", "/s.sock"),
                ][..],
                None,
            ),
            (&[("listen", "/run/php/a.sock")][..], None),
        ] {
            let found = status_of(&settings(pairs));
            assert_eq!(found.as_deref(), status, "{pairs:?}");
            if let Some(status) = found {
                assert!(crate::cli::values::status_page("status", &status).is_ok());
            }
        }
    }
}
