//! `doctor --watch-config`: a ready watch file for the pools found (#21), one `[[target]]` per pool,
//! each probed over its own listen socket (its ping, else GET_VALUES). A master no service controls
//! and whose binary is not known is written alert-only, with a comment saying what to set.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;

use super::{Findings, look};
use crate::exit::Exit;
use crate::stdout;
use crate::watch::discover::url_of;

/// Prints the watch file for what `look` finds (with the extra configs given).
pub fn command(extra: &[PathBuf]) -> Result<Exit> {
    stdout::print(&render(&look(extra)))?;
    Ok(Exit::Healthy)
}

/// The watch file for `findings`.
fn render(findings: &Findings) -> String {
    let mut out = String::from(
        "# Watch file written by `php-relaunch doctor --watch-config`: review it, save it as\n\
         # /etc/php-relaunch/watch.toml and run it from root's crontab:\n\
         # * * * * * /usr/sbin/php-relaunch watch >/dev/null 2>&1\n\
         # Keys: docs/watch.md (the classic run's options, `-` written `_`).\n\n\
         timeout = 2\n\
         # emails = [\"ops@example.com\"]\n",
    );
    if findings.installations.is_empty() {
        out.push_str("\n# no php-fpm configuration found (give one with --fpm-config)\n");
    }
    for installation in &findings.installations {
        let config = installation.config.display().to_string();
        let _ = writeln!(out, "\n# {}", one_line(&config));
        for pool in &installation.pools {
            let Some(listen) = &pool.listen else {
                let _ = writeln!(
                    out,
                    "# pool {}: no `listen`, nothing to watch",
                    one_line(&pool.name)
                );
                continue;
            };
            let url = url_of(listen, pool.ping_path.as_deref());
            let _ = writeln!(out, "\n[[target]]\n# pool {}", one_line(&pool.name));
            let _ = writeln!(out, "url = {}", quoted(&url));
            match (&installation.service, &installation.binary) {
                (Some(service), _) => {
                    let _ = writeln!(out, "service = {}", quoted(service));
                }
                (None, Some(bin)) => {
                    let _ = writeln!(out, "fpm_bin = {}", quoted(&bin.display().to_string()));
                    let _ = writeln!(out, "fpm_config = {}", quoted(&config));
                }
                (None, None) => {
                    let _ = writeln!(
                        out,
                        "# How its master is controlled is not known: watched and alerted on, never\n\
                         # relaunched. To relaunch it, remove `alert_only` and set\n\
                         # fpm_bin = \"/usr/sbin/php-fpmX.Y\" (its php-fpm binary) and\n\
                         # fpm_config = {}\n\
                         alert_only = true",
                        quoted(&config)
                    );
                }
            }
        }
    }
    out
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Text for a comment: one line.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::{Installation, Pool};

    fn pool(name: &str, listen: &str, ping: Option<&str>) -> Pool {
        Pool {
            name: name.into(),
            file: "/etc/php/8.2/fpm/pool.d/x.conf".into(),
            listen: Some(listen.into()),
            pm: None,
            ping_path: ping.map(str::to_owned),
            status_path: None,
            status_listen: None,
            target: None,
            crontab: None,
            mcron: None,
            timer: None,
            problems: Vec::new(),
        }
    }

    #[test]
    fn the_file_doctor_writes_is_a_watch_file_that_loads() {
        let findings = Findings {
            installations: vec![
                Installation {
                    config: "/etc/php/8.2/fpm/php-fpm.conf".into(),
                    service: None,
                    init: None,
                    binary: Some("/usr/sbin/php-fpm8.2".into()),
                    master: None,
                    pools: vec![
                        pool("www", "/run/php/php8.2-fpm.sock", Some("/ping")),
                        pool("shop", "127.0.0.1:9001", None),
                    ],
                },
                Installation {
                    config: "/srv/\"odd\"/php-fpm.conf".into(),
                    service: None,
                    init: None,
                    binary: None,
                    master: None,
                    pools: vec![pool("api", "/run/api.sock", None)],
                },
            ],
            problems: Vec::new(),
            notes: Vec::new(),
        };
        let text = render(&findings);
        assert!(
            text.contains("url = \"unix:///run/php/php8.2-fpm.sock;/ping\""),
            "{text}"
        );
        assert!(text.contains("url = \"fcgi://127.0.0.1:9001\""), "{text}");
        assert!(text.contains("alert_only = true"), "{text}");
        let dir = tempfile::tempdir().unwrap();
        let config = crate::config::watch::parse(
            &dir.path().join("watch.toml"),
            &text,
            false,
            None,
            crate::config::watch::Overrides::default(),
        );
        // /usr/sbin/php-fpm8.2 is installed on the test hosts; the file is taken as it is written.
        let config = config.unwrap();
        assert_eq!(config.targets.len(), 3);
        assert!(config.targets[2].alert_only.is_some());
    }
}
