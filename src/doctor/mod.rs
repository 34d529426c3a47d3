//! `php-relaunch doctor`: looks at this host — php-fpm installations and their pools, the services that
//! control them, nginx, php-relaunch lines already installed — and says what to watch and how, as
//! ready-to-paste lines. It reads; it changes nothing and wakes nothing: installed lines are read
//! from root's own files only, and their targets probed only where that starts no php-fpm
//! (`installed`).

mod installed;
mod watch_config;

pub use watch_config::command as watch_config;

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::cli::DoctorArgs;
use crate::escape;
use crate::exit::Exit;
use crate::fpm::{self, Control, Instance, PoolConf};
use crate::spawn;
use crate::stdout;

/// One php-fpm configuration and what controls it.
#[derive(Debug, Serialize)]
pub struct Installation {
    pub config: PathBuf,
    /// The service that controls it (`php8.2-fpm`, FreeBSD's `php_fpm`), if one does.
    pub service: Option<String>,
    /// What runs that service here: `systemd service` or `init script`.
    pub init: Option<&'static str>,
    /// The php-fpm binary, when known.
    pub binary: Option<PathBuf>,
    /// Its master's pid, when one runs.
    pub master: Option<u32>,
    pub pools: Vec<Pool>,
}

/// One pool, what it is set to, and how to watch it.
#[derive(Debug, Serialize)]
pub struct Pool {
    pub name: String,
    pub file: PathBuf,
    pub listen: Option<String>,
    pub pm: Option<String>,
    pub ping_path: Option<String>,
    pub status_path: Option<String>,
    pub status_listen: Option<String>,
    /// The target a watching run probes: php-fpm's ping over FastCGI.
    pub target: Option<String>,
    /// Ready-to-paste lines: root's crontab, mcron, the timer's ExecStart.
    pub crontab: Option<String>,
    pub mcron: Option<String>,
    pub timer: Option<String>,
    /// What needs attention before it can be watched.
    pub problems: Vec<String>,
}

/// The whole look.
#[derive(Debug, Serialize)]
pub struct Findings {
    pub installations: Vec<Installation>,
    /// What needs attention beyond one pool (shared sockets, installed lines that fail).
    pub problems: Vec<String>,
    /// Worth knowing, not in the way.
    pub notes: Vec<String>,
}

pub fn command(args: &DoctorArgs) -> Result<Exit> {
    let findings = look(&args.fpm_config);
    let attention = !findings.problems.is_empty()
        || findings
            .installations
            .iter()
            .flat_map(|i| &i.pools)
            .any(|p| !p.problems.is_empty());
    // Pool names, paths and the problems found quote files and processes: escaped once, here (#18).
    if args.json {
        stdout::print(&(escape::json(&serde_json::to_string_pretty(&findings)?) + "\n"))?;
    } else {
        stdout::print(&escape::printable(&text(&findings), &['\n']))?;
    }
    Ok(if attention {
        Exit::Failing
    } else {
        Exit::Healthy
    })
}

/// Looks at the host, with the extra configs given.
pub fn look(extra: &[PathBuf]) -> Findings {
    let procs = fpm::snapshot().unwrap_or_default();
    let me = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/sbin/php-relaunch"));
    let mut installations = Vec::new();
    for (config, service, binary) in candidates(extra) {
        let master = master(&config, service.as_deref(), &procs);
        let binary = binary.or_else(|| {
            fpm::running(Some(&config), None, &procs)
                .ok()
                .flatten()
                .and_then(|(instance, _)| instance.binary().map(Path::to_owned))
        });
        let control = match (&service, &binary) {
            (Some(service), _) => format!("--service {service}"),
            (None, Some(bin)) => format!(
                "--fpm-bin {} --fpm-config {}",
                bin.display(),
                config.display()
            ),
            (None, None) => format!("--fpm-bin PHP-FPM --fpm-config {}", config.display()),
        };
        let pools = fpm::read_config(&config)
            .pools
            .into_iter()
            .map(|pool| advise(pool, &me, &control, service.as_deref()))
            .collect();
        installations.push(Installation {
            config,
            init: service.as_deref().map(fpm::service_kind),
            service,
            binary,
            master,
            pools,
        });
    }
    let mut problems = shared_sockets(&installations);
    let installed = installed::look();
    problems.extend(installed.problems);
    let mut notes = installed.notes;
    notes.extend(nginx_note());
    Findings {
        installations,
        problems,
        notes,
    }
}

/// The configurations to look at: Debian's `/etc/php/X.Y/fpm/php-fpm.conf`, FreeBSD's
/// `/usr/local/etc/php-fpm.conf`, and those given; with the service and binary of each when known.
fn candidates(extra: &[PathBuf]) -> Vec<(PathBuf, Option<String>, Option<PathBuf>)> {
    let mut found = Vec::new();
    let mut versions: Vec<String> = fs::read_dir("/etc/php")
        .map(|dir| {
            dir.flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    for version in versions {
        let config = PathBuf::from(format!("/etc/php/{version}/fpm/php-fpm.conf"));
        if config.is_file() {
            let service = format!("php{version}-fpm");
            let binary =
                fpm::trusted_binary(Path::new(&format!("/usr/sbin/php-fpm{version}"))).ok();
            found.push((
                config,
                fpm::service_exists(&service).then_some(service),
                binary,
            ));
        }
    }
    let freebsd = PathBuf::from("/usr/local/etc/php-fpm.conf");
    if freebsd.is_file() {
        let service = ["php_fpm", "php-fpm"]
            .into_iter()
            .find(|s| fpm::service_exists(s))
            .map(str::to_owned);
        let binary = fpm::trusted_binary(Path::new("/usr/local/sbin/php-fpm")).ok();
        found.push((freebsd, service, binary));
    }
    for config in extra {
        let config = config.canonicalize().unwrap_or_else(|_| config.clone());
        if !found.iter().any(|(c, _, _)| *c == config) {
            found.push((config, None, None));
        }
    }
    found
}

/// The verified master of an installation, if one runs.
fn master(config: &Path, service: Option<&str>, procs: &[fpm::Proc]) -> Option<u32> {
    if let Some(service) = service {
        let instance =
            Instance::resolve(&Control::Service(Some(service.to_owned())), None, procs).ok()?;
        return instance.master(procs).map(|p| p.pid);
    }
    let (instance, _) = fpm::running(Some(config), None, procs).ok()??;
    instance.master(procs).map(|p| p.pid)
}

/// What a pool is set to, and the lines that watch it (or what to set first).
fn advise(pool: PoolConf, me: &Path, control: &str, service: Option<&str>) -> Pool {
    let get = |key: &str| pool.settings.get(key).cloned();
    let listen = get("listen");
    let ping_path = get("ping.path");
    let mut problems = Vec::new();
    let target = match (&listen, &ping_path) {
        (Some(listen), Some(ping)) => Some(target_of(listen, ping)),
        (None, _) => {
            problems.push(format!("no `listen` in [{}]: nothing to watch", pool.name));
            None
        }
        (Some(_), None) => {
            let reload = service.map_or_else(
                || "reload php-fpm (kill -USR2 its master)".to_owned(),
                |s| format!("`service {s} reload`"),
            );
            problems.push(format!(
                "no ping.path: add `ping.path = /ping` to [{}] in {}, then {reload}",
                pool.name,
                pool.file.display()
            ));
            None
        }
    };
    let me = me.display();
    let crontab = target
        .as_ref()
        .map(|t| crontab_line(&me.to_string(), t, control));
    let mcron = target.as_ref().map(|t| {
        let words: Vec<String> = control.split(' ').map(|w| format!(" \"{w}\"")).collect();
        format!(
            "(job '(next-second (range 0 60 10)) (lambda () (system* \"{me}\" \"{t}\" \"2\" \"ops@example.com\"{})) \"php-relaunch {t}\")",
            words.concat()
        )
    });
    let timer = target
        .as_ref()
        .map(|t| format!("ExecStart={me} '{t}' 2 \"ops@example.com\" {control}"));
    Pool {
        name: pool.name,
        file: pool.file,
        listen,
        pm: get("pm"),
        ping_path,
        status_path: get("pm.status_path"),
        status_listen: get("pm.status_listen"),
        target,
        crontab,
        mcron,
        timer,
        problems,
    }
}

/// php-fpm's ping over FastCGI at a `listen` address: a socket path, `HOST:PORT`, or a port.
fn target_of(listen: &str, ping: &str) -> String {
    if listen.starts_with('/') {
        return format!("unix://{listen};{ping}");
    }
    let (host, port) = match listen.rsplit_once(':') {
        Some((host, port)) => (host.trim_matches(['[', ']']), port),
        None => ("127.0.0.1", listen),
    };
    let host = match host {
        "" | "0.0.0.0" | "*" => "127.0.0.1",
        "::" => "[::1]",
        host if host.contains(':') => return format!("fcgi://[{host}]:{port}{ping}"),
        host => host,
    };
    format!("fcgi://{host}:{port}{ping}")
}

/// Pools of different configurations (or versions) that listen on the same address.
fn shared_sockets(installations: &[Installation]) -> Vec<String> {
    let mut seen: Vec<(&str, &str, &Path)> = Vec::new();
    let mut problems = Vec::new();
    for installation in installations {
        for pool in &installation.pools {
            let Some(listen) = pool.listen.as_deref() else {
                continue;
            };
            if let Some((_, other, config)) = seen.iter().find(|(l, _, _)| *l == listen) {
                problems.push(format!(
                    "pools {other} ({}) and {} ({}) both listen on {listen}: only one of them gets it",
                    config.display(),
                    pool.name,
                    installation.config.display()
                ));
            } else {
                seen.push((listen, &pool.name, &installation.config));
            }
        }
    }
    problems
}

/// nginx without the heartbeat vhost: the HTTP lines of the README would not answer.
fn nginx_note() -> Option<String> {
    let nginx = Path::new("/usr/sbin/nginx");
    if !nginx.is_file() {
        return None;
    }
    let dump = spawn::run(
        nginx,
        &[std::ffi::OsStr::new("-T")],
        None,
        Duration::from_secs(5),
    )
    .ok()?;
    (!dump.output.contains("php-heartbeat.php")).then(|| {
        "nginx has no php-heartbeat.php location: the lines above go to php-fpm directly; to watch \
         through nginx too, see /usr/share/doc/php-relaunch/nginx/heartbeat.conf"
            .to_owned()
    })
}

/// For a person.
fn text(findings: &Findings) -> String {
    let mut out = String::new();
    if findings.installations.is_empty() {
        let _ = writeln!(
            out,
            "no php-fpm configuration found (give one with --fpm-config)"
        );
    }
    for i in &findings.installations {
        let running = i
            .master
            .map_or_else(|| "not running".to_owned(), |pid| format!("master {pid}"));
        let service = match (&i.service, i.init) {
            (Some(name), Some(init)) => format!("{name}, {init}"),
            (Some(name), None) => name.clone(),
            (None, _) => "no service".to_owned(),
        };
        let _ = writeln!(out, "{} ({service}, {running})", i.config.display());
        for pool in &i.pools {
            let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".to_owned());
            let _ = writeln!(
                out,
                "  pool {}: listen {}, pm {}, ping.path {}, pm.status_path {}, pm.status_listen {}",
                pool.name,
                show(&pool.listen),
                show(&pool.pm),
                show(&pool.ping_path),
                show(&pool.status_path),
                show(&pool.status_listen)
            );
            for problem in &pool.problems {
                let _ = writeln!(out, "    ! {problem}");
            }
            for (what, line) in [
                ("crontab", &pool.crontab),
                ("mcron", &pool.mcron),
                ("timer", &pool.timer),
            ] {
                if let Some(line) = line {
                    let _ = writeln!(out, "    {what}: {line}");
                }
            }
        }
    }
    for problem in &findings.problems {
        let _ = writeln!(out, "! {problem}");
    }
    for note in &findings.notes {
        let _ = writeln!(out, "note: {note}");
    }
    out
}

/// The crontab line doctor suggests; README.md and the package's /etc/cron.d file show the same
/// (a unit test holds them to it).
fn crontab_line(me: &str, target: &str, control: &str) -> String {
    format!("* * * * * {me} '{target}' 2 'ops@example.com' {control} >/dev/null 2>&1")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_readme_and_cron_d_show_the_line_doctor_gives() {
        let line = super::crontab_line(
            "/usr/sbin/php-relaunch",
            "unix:///run/php/php8.2-fpm.sock;/ping",
            "--service php8.2-fpm",
        );
        let readme = include_str!("../../README.md");
        assert!(readme.lines().any(|l| l == line), "README lacks\n{line}");
        let cron_d = include_str!("../../debian/cron.d");
        let as_cron_d = format!("#{}", line.replacen("* * * * * ", "* * * * * root ", 1));
        assert!(
            cron_d.lines().any(|l| l == as_cron_d),
            "cron.d lacks\n{as_cron_d}"
        );
    }

    use super::*;

    #[test]
    fn listen_addresses_become_ping_targets() {
        for (listen, target) in [
            (
                "/run/php/php8.2-fpm.sock",
                "unix:///run/php/php8.2-fpm.sock;/ping",
            ),
            ("127.0.0.1:9000", "fcgi://127.0.0.1:9000/ping"),
            ("9001", "fcgi://127.0.0.1:9001/ping"),
            ("0.0.0.0:9002", "fcgi://127.0.0.1:9002/ping"),
            ("[::]:9003", "fcgi://[::1]:9003/ping"),
        ] {
            assert_eq!(target_of(listen, "/ping"), target, "{listen}");
            assert!(target.parse::<crate::probe::Target>().is_ok());
        }
    }
}
