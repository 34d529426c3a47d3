//! Typed values of the command line, parsed without touching the system: every parser here is a pure
//! function of its text, and its errors name the argument and the offending value.

use std::ffi::OsStr;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use clap::builder::TypedValueParser;
use clap::error::ErrorKind;
use lettre::Address;

use crate::alert::Transport;
use crate::probe::{Target, split_host_port, valid_host};

/// A clap value parser from a function of the argument's name and its text, so that messages read
/// `--within takes a duration …` whichever argument it is.
#[derive(Clone, Copy)]
pub struct Named<T>(pub fn(&str, &str) -> Result<T>);

impl<T: Clone + Send + Sync + 'static> TypedValueParser for Named<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg.map_or_else(String::new, |arg| match arg.get_long() {
            Some(long) => format!("--{long}"),
            None => arg.get_id().as_str().to_uppercase(),
        });
        let text = value.to_str().unwrap_or_default();
        (self.0)(&name, text).map_err(|err| {
            clap::Error::raw(ErrorKind::ValueValidation, format!("{err:#}\n")).with_cmd(cmd)
        })
    }
}

/// Positive seconds, fractions allowed, at most a day.
pub fn seconds(name: &str, text: &str) -> Result<Duration> {
    let value: f64 = text
        .trim()
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite())
        .with_context(|| format!("{name} must be a number of seconds, got '{text}'"))?;
    // Below a millisecond nothing can answer, and the value would print as "0s" (#19).
    ensure!(
        value >= 0.001,
        "{name} must be at least 0.001 seconds, got '{text}'"
    );
    ensure!(
        value <= 86_400.0,
        "{name} must be at most 86400 seconds, got '{text}'"
    );
    Ok(Duration::from_secs_f64(value))
}

/// `--every`: seconds under a minute, since it repeats within one cron minute.
pub fn every(name: &str, text: &str) -> Result<Duration> {
    let every = seconds(name, text)?;
    ensure!(
        every < Duration::from_mins(1),
        "{name} must be under 60 seconds (it repeats within one cron minute), got '{}'",
        every.as_secs_f64()
    );
    Ok(every)
}

/// A duration as [`duration`] reads it, or zero (`0`, `0s`…): for a wait that may be left out.
pub fn duration_or_zero(name: &str, text: &str) -> Result<Duration> {
    if matches!(text.trim(), "0" | "0s" | "0m" | "0h" | "0d") {
        return Ok(Duration::ZERO);
    }
    duration(name, text)
}

/// A duration as people write them: `90s`, `10m`, `1h`, `2d`, or plain seconds.
pub fn duration(name: &str, text: &str) -> Result<Duration> {
    let text = text.trim();
    let (number, unit) = text.split_at(
        text.find(|c: char| c.is_ascii_alphabetic())
            .unwrap_or(text.len()),
    );
    let scale = match unit {
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86_400.0,
        _ => bail!("{name} takes a duration such as 90s, 10m or 1h, got '{text}'"),
    };
    let value: f64 = number
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0 && *v * scale <= 366.0 * 86_400.0)
        .with_context(|| format!("{name} takes a duration such as 90s, 10m or 1h, got '{text}'"))?;
    Ok(Duration::from_secs_f64(value * scale))
}

/// A probe target (see [`Target`]).
pub fn target(_name: &str, text: &str) -> Result<Target> {
    text.parse()
}

/// `--status`: a FastCGI or HTTP target with the status page's path.
pub fn status_page(name: &str, text: &str) -> Result<Target> {
    let status: Target = text.parse()?;
    ensure!(
        !matches!(status, Target::FastCgi { script: None, .. }),
        "{name} '{text}' needs the status path, e.g. '{text};/status'"
    );
    Ok(status)
}

/// The addresses to alert: comma-separated, empty items ignored so `''` means nobody.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipients(pub Vec<Address>);

pub fn recipients(name: &str, text: &str) -> Result<Recipients> {
    text.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| address(name, item))
        .collect::<Result<_>>()
        .map(Recipients)
}

/// One e-mail address.
pub fn address(name: &str, text: &str) -> Result<Address> {
    Address::from_str(text.trim())
        .with_context(|| format!("{name}: '{text}' is not a valid e-mail address"))
}

/// The classic script's fallback flag: `0` or `1`.
pub fn flag(name: &str, text: &str) -> Result<bool> {
    match text {
        "0" => Ok(false),
        "1" => Ok(true),
        other => bail!("{name} must be 0 or 1, got '{other}'"),
    }
}

/// `--relaunch-on`: the HTTP statuses that call for a relaunch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusCodes(pub Vec<u16>);

pub fn status_codes(name: &str, text: &str) -> Result<StatusCodes> {
    text.split(',')
        .map(|item| {
            let item = item.trim();
            match item.parse::<u16>() {
                Ok(code @ 400..=599) => Ok(code),
                _ => bail!("{name} takes HTTP statuses from 400 to 599, got '{item}'"),
            }
        })
        .collect::<Result<_>>()
        .map(StatusCodes)
}

/// A service name as init systems spell them; never an option or a path. Whether it exists is
/// asked later, when the configuration is checked.
pub fn service_name(name: &str, text: &str) -> Result<String> {
    ensure!(
        !text.is_empty()
            && !text.starts_with('-')
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"@._-".contains(&b)),
        "{name}: '{text}' is not a service name"
    );
    Ok(text.to_owned())
}

/// `smtp://HOST[:PORT]`, port 25 by default.
pub fn smtp(name: &str, text: &str) -> Result<Transport> {
    let Some(authority) = text.strip_prefix("smtp://") else {
        bail!("{name} '{text}' must be smtp://HOST[:PORT] (plain SMTP, no TLS)");
    };
    let authority = authority.trim_end_matches('/');
    let (host, port) = split_host_port(authority);
    ensure!(valid_host(host), "{name} '{text}' has a bad host '{host}'");
    let port = match port {
        None => 25,
        Some(port) => match port.parse::<u16>() {
            Ok(port) if port > 0 => port,
            _ => bail!("{name} '{text}' has a bad port '{port}'"),
        },
    };
    Ok(Transport::Smtp {
        host: host.to_owned(),
        port,
    })
}

/// A count of at least 1.
pub fn at_least_one(name: &str, text: &str) -> Result<u32> {
    let n: u32 = text
        .trim()
        .parse()
        .with_context(|| format!("{name} takes a whole number, got '{text}'"))?;
    ensure!(n >= 1, "{name} must be at least 1, got '{text}'");
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (text, secs) in [
            ("90s", 90),
            ("10m", 600),
            ("1h", 3600),
            ("2d", 172_800),
            ("45", 45),
        ] {
            assert_eq!(
                duration("--within", text).unwrap(),
                Duration::from_secs(secs),
                "{text}"
            );
        }
        assert_eq!(
            duration("--within", "1.5m").unwrap(),
            Duration::from_secs(90)
        );
        for bad in ["", "0s", "-1m", "10x", "m", "1h30m", "400d"] {
            let err = duration("--within", bad).unwrap_err().to_string();
            assert!(
                err.starts_with("--within takes a duration such as 90s"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_hold_may_be_zero() {
        for zero in ["0", "0s", " 0m "] {
            assert_eq!(duration_or_zero("--hold", zero).unwrap(), Duration::ZERO);
        }
        assert_eq!(
            duration_or_zero("--hold", "10s").unwrap(),
            Duration::from_secs(10)
        );
        for bad in ["", "-1", "0x", "x"] {
            assert!(duration_or_zero("--hold", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn timeouts() {
        assert_eq!(
            seconds("TIMEOUT", "0.5").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(seconds("TIMEOUT", "5").unwrap(), Duration::from_secs(5));
        for bad in ["0", "-1", "abc", "", "NaN", "inf", "1e9", "1e-10", "0.0009"] {
            assert!(seconds("TIMEOUT", bad).is_err(), "{bad}");
        }
        assert_eq!(
            seconds("TIMEOUT", "0.001").unwrap(),
            Duration::from_millis(1)
        );
        let err = seconds("TIMEOUT", "0").unwrap_err().to_string();
        assert_eq!(err, "TIMEOUT must be at least 0.001 seconds, got '0'");
    }

    #[test]
    fn emails() {
        assert!(recipients("EMAILS", "").unwrap().0.is_empty());
        assert_eq!(
            recipients("EMAILS", "a@example.com, b@example.com")
                .unwrap()
                .0
                .len(),
            2
        );
        let err = recipients("EMAILS", "a@example.com,not-an-address")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "EMAILS: 'not-an-address' is not a valid e-mail address"
        );
    }

    #[test]
    fn relaunch_codes() {
        assert_eq!(
            status_codes("--relaunch-on", "502,504").unwrap().0,
            [502, 504]
        );
        assert_eq!(
            status_codes("--relaunch-on", "500, 502,503,504").unwrap().0,
            [500, 502, 503, 504]
        );
        for bad in ["200", "abc", "", "502,", "600"] {
            assert!(status_codes("--relaunch-on", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn smtp_urls() {
        assert_eq!(
            smtp("--smtp", "smtp://127.0.0.1:2525").unwrap(),
            Transport::Smtp {
                host: "127.0.0.1".into(),
                port: 2525
            }
        );
        assert_eq!(
            smtp("--smtp", "smtp://mail.example.com").unwrap(),
            Transport::Smtp {
                host: "mail.example.com".into(),
                port: 25
            }
        );
        assert!(smtp("--smtp", "smtps://mail.example.com").is_err());
        assert!(smtp("--smtp", "smtp://mail.example.com:x").is_err());
    }

    #[test]
    fn service_names_are_never_options_or_paths() {
        for bad in ["-x", "../php", "php fpm", ""] {
            let err = service_name("--service", bad).unwrap_err().to_string();
            assert!(err.contains("is not a service name"), "{bad}: {err}");
        }
    }
}
