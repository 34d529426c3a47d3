//! Probe targets as people write them: `http://HOST[:PORT]/PATH`, `fcgi://HOST:PORT[/PATH[?QUERY]]`
//! and `unix:///SOCKET[;/PATH[?QUERY]]`. Parsing them is pure: nothing is resolved or opened.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use anyhow::{Context, Result, bail, ensure};

use super::fastcgi::{self, Address};

/// What to probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The heartbeat page through the web server: `http://HOST[:PORT]/PATH`.
    Http(String),
    /// php-fpm itself: `fcgi://HOST:PORT[/PATH[?QUERY]]` or `unix:///SOCKET[;/PATH[?QUERY]]`.
    FastCgi {
        /// The target as written, for messages and the log.
        text: String,
        /// Where php-fpm listens.
        address: Address,
        /// The script to request; `None` for a GET_VALUES management record.
        script: Option<Script>,
    },
}

/// A script path and query for a FastCGI request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Script {
    /// SCRIPT_NAME and SCRIPT_FILENAME: `ping.path`, `pm.status_path` or an absolute file.
    pub path: String,
    /// QUERY_STRING, without the `?`.
    pub query: String,
}

impl Target {
    /// Whether this target speaks FastCGI straight to php-fpm (so a refused connection means
    /// php-fpm is down, not the web server).
    pub fn is_fastcgi(&self) -> bool {
        matches!(self, Target::FastCgi { .. })
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Http(url) => f.write_str(url),
            Target::FastCgi { text, .. } => f.write_str(text),
        }
    }
}

impl FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> Result<Target> {
        probe_target(text)
    }
}

/// A probe target: `http://…`, `fcgi://HOST:PORT[/PATH[?QUERY]]` or `unix:///SOCKET[;/PATH[?QUERY]]`.
fn probe_target(text: &str) -> Result<Target> {
    if let Some(rest) = text.strip_prefix("fcgi://") {
        let (authority, script) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, ""),
        };
        let (host, port) = split_host_port(authority);
        ensure!(valid_host(host), "URL '{text}' has a bad host '{host}'");
        let port = match port {
            None => 9000,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port > 0 => port,
                _ => bail!("URL '{text}' has a bad port '{port}'"),
            },
        };
        return Ok(Target::FastCgi {
            text: text.to_owned(),
            address: fastcgi::Address::Tcp {
                host: host.to_owned(),
                port,
            },
            script: fastcgi_script(text, script)?,
        });
    }
    if let Some(rest) = text.strip_prefix("unix://") {
        let (socket, script) = rest.split_once(';').unwrap_or((rest, ""));
        ensure!(
            socket.starts_with('/') && socket.len() > 1,
            "URL '{text}' needs an absolute socket path: unix:///run/php/php-fpm.sock[;/PATH]"
        );
        ensure!(
            script.is_empty() || script.starts_with('/'),
            "URL '{text}': the path after ';' must start with '/'"
        );
        return Ok(Target::FastCgi {
            text: text.to_owned(),
            address: fastcgi::Address::Unix(PathBuf::from(socket)),
            script: fastcgi_script(text, script)?,
        });
    }
    heartbeat_url(text).map(Target::Http)
}

/// `/PATH[?QUERY]` → the script to request; empty or `/` → none (GET_VALUES).
fn fastcgi_script(text: &str, script: &str) -> Result<Option<Script>> {
    if script.is_empty() || script == "/" {
        return Ok(None);
    }
    ensure!(
        !script.chars().any(char::is_control),
        "URL '{text}' has a control character in its path"
    );
    let (path, query) = script.split_once('?').unwrap_or((script, ""));
    Ok(Some(Script {
        path: path.to_owned(),
        query: query.to_owned(),
    }))
}

/// Checks that `text` is an http:// URL with a plausible host; returns it unchanged.
fn heartbeat_url(text: &str) -> Result<String> {
    let Some((scheme, rest)) = text.split_once("://") else {
        bail!(
            "URL '{text}' has no scheme: write it as http://HOST[:PORT]/PATH, fcgi://HOST:PORT[/PATH] or unix:///SOCKET[;/PATH]"
        );
    };
    if scheme.eq_ignore_ascii_case("https") {
        bail!("URL '{text}': https is not supported; probe the heartbeat over http on loopback");
    }
    ensure!(
        scheme.eq_ignore_ascii_case("http"),
        "URL '{text}' has scheme '{scheme}'; only http:// is supported"
    );
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    ensure!(
        !authority.contains('@'),
        "URL '{text}': credentials in the URL are not supported"
    );
    let (host, port) = split_host_port(authority);
    ensure!(valid_host(host), "URL '{text}' has a bad host '{host}'");
    if let Some(port) = port {
        ensure!(
            matches!(port.parse::<u16>(), Ok(p) if p > 0),
            "URL '{text}' has a bad port '{port}'"
        );
    }
    text.parse::<ureq::http::Uri>()
        .with_context(|| format!("URL '{text}' is not a valid URL"))?;
    Ok(text.to_owned())
}

/// Splits `host[:port]` and `[v6]:port`.
pub fn split_host_port(authority: &str) -> (&str, Option<&str>) {
    if let Some(rest) = authority.strip_prefix('[') {
        return match rest.split_once(']') {
            Some((host, tail)) => (host, tail.strip_prefix(':')),
            None => (authority, None),
        };
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    }
}

/// A DNS name, an IPv4 address, or (unbracketed here) an IPv6 address.
pub fn valid_host(host: &str) -> bool {
    if host.parse::<std::net::IpAddr>().is_ok() {
        return true;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for good in [
            "http://127.0.0.1:8889/php-heartbeat.php",
            "http://heartbeat.no-ip:8889/php-heartbeat.php",
            "http://[::1]:8889/",
            "HTTP://localhost",
        ] {
            assert_eq!(probe_target(good).unwrap(), Target::Http(good.to_owned()));
        }
        for (bad, says) in [
            ("127.0.0.1/php-heartbeat.php", "no scheme"),
            ("https://example.com/", "https is not supported"),
            ("ftp://example.com/", "only http://"),
            ("unix://relative.sock", "absolute socket path"),
            ("unix:///run/php.sock;ping", "must start with '/'"),
            ("fcgi://bad host:9000/ping", "bad host"),
            ("fcgi://127.0.0.1:0/ping", "bad port"),
            ("http://exa mple/", "bad host"),
            ("http://-bad-/", "bad host"),
            ("http:///path", "bad host"),
            ("http://host:0/", "bad port"),
            ("http://host:99999/", "bad port"),
            ("http://user@host/", "credentials"),
        ] {
            let err = probe_target(bad).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[test]
    fn fastcgi_targets() {
        use fastcgi::Address;
        let unix = |socket: &str| Address::Unix(PathBuf::from(socket));
        let script = |path: &str, query: &str| {
            Some(Script {
                path: path.into(),
                query: query.into(),
            })
        };
        let cases = [
            (
                "unix:///run/php/php8.2-fpm.sock",
                unix("/run/php/php8.2-fpm.sock"),
                None,
            ),
            (
                "unix:///run/php/php8.2-fpm.sock;/ping",
                unix("/run/php/php8.2-fpm.sock"),
                script("/ping", ""),
            ),
            (
                "unix:///run/php/php8.2-fpm.sock;/status?json&full",
                unix("/run/php/php8.2-fpm.sock"),
                script("/status", "json&full"),
            ),
            (
                "fcgi://127.0.0.1:9000/ping",
                Address::Tcp {
                    host: "127.0.0.1".into(),
                    port: 9000,
                },
                script("/ping", ""),
            ),
            (
                "fcgi://localhost",
                Address::Tcp {
                    host: "localhost".into(),
                    port: 9000,
                },
                None,
            ),
            (
                "fcgi://[::1]:9001/var/www/heartbeat/php-heartbeat.php",
                Address::Tcp {
                    host: "::1".into(),
                    port: 9001,
                },
                script("/var/www/heartbeat/php-heartbeat.php", ""),
            ),
        ];
        for (text, address, script) in cases {
            assert_eq!(
                probe_target(text).unwrap(),
                Target::FastCgi {
                    text: text.into(),
                    address,
                    script
                },
                "{text}"
            );
        }
    }
}
