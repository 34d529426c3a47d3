//! What one run's `[discover]` has parsed and checked, reused for its other pools (#21): the
//! settings of discovered pools differ only in what is the pool's own (its url, its status page,
//! its state file), so the rest goes through clap once per distinct set of words and through the
//! system checks once per binary, configuration and service, instead of once per pool. The
//! pool's own values go through the same value parsers clap uses, and the whole through
//! `Config::from_run`; a pool the short way does not take is built the long way, which also gives
//! every mistake in the words it always had.

use std::collections::HashMap;
use std::ffi::OsString;

use super::keys::{Setting, Settings, Value, state_path, words};
use super::{RunSettings, classic};
use crate::cli::{self, RunArgs, values};
use crate::config::{Config, SystemChecks, Terms};

/// A target that stands for every pool in the words that do not depend on the pool.
const SAMPLE_URL: &str = "unix:///run/php/sample.sock;/ping";

/// A status page that stands for every pool's own.
const SAMPLE_STATUS: &str = "unix:///run/php/sample-status.sock;/status";

/// What one run has parsed and checked so far; a new one for every run, so a pool or a
/// configuration changed between runs is read anew.
#[derive(Debug, Default)]
pub struct Memo {
    /// The classic run's arguments, parsed, by the words of the sample target; `None` when clap
    /// refused them (each pool is then built the long way, which says why).
    parsed: HashMap<Vec<OsString>, Option<RunArgs>>,
    /// The answers of `Config::from_run`'s checks against the system.
    checks: SystemChecks,
}

impl Memo {
    /// The classic run's configuration of the pool at `url` with `settings`: as `classic` gives
    /// it, the same checks and the same mistakes.
    pub(super) fn classic(
        &mut self,
        url: &str,
        settings: &Settings,
        run: &RunSettings,
    ) -> Result<Config, (Option<usize>, anyhow::Error)> {
        match self.short(url, settings, run) {
            Some(config) => Ok(config),
            None => classic(url, settings, run),
        }
    }

    /// The short way: the shared words parsed once, the pool's own values set on a copy.
    fn short(&mut self, url: &str, settings: &Settings, run: &RunSettings) -> Option<Config> {
        let status = match settings.get("status").map(|s| &s.value) {
            Some(Value::Text(page)) => Some(page.as_str()),
            Some(_) => return None,
            None => None,
        };
        let shared = match status {
            Some(_) => {
                let mut shared = settings.clone();
                shared.insert(
                    "status".into(),
                    Setting {
                        value: Value::Text(SAMPLE_STATUS.into()),
                        line: 0,
                    },
                );
                words(SAMPLE_URL, &shared, run)
            }
            None => words(SAMPLE_URL, settings, run),
        };
        let mut args = self
            .parsed
            .entry(shared)
            .or_insert_with_key(|words| cli::parse_target(words).ok())
            .clone()?;
        // What clap would make of the pool's own words, by the parsers it uses for them.
        args.url = Some(values::target("URL", url).ok()?);
        args.status = match status {
            Some(page) => Some(values::status_page("--status", page).ok()?),
            None => None,
        };
        args.probe.state = Some(state_path(url, run));
        let mut config = Config::from_run_checked(args, &mut self.checks).ok()?;
        config.terms = Terms::WatchFile;
        Some(config)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::{DiscoveredControl, Overrides, parse};
    use super::*;

    /// A discovered pool's configuration, the short way and the long way (its words through clap,
    /// then `Config::from_run`), must not differ: in what is built, nor in what a mistake says.
    #[test]
    fn discovered_pools_are_built_as_their_command_line_would_build_them() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("php-fpm.conf");
        std::fs::write(&conf, "[global]\n").unwrap();
        let text = "timeout = 1.5\nfailures = 2\nemails = [\"a@example.com\"]\n\
             listen_queue = 3\nstatus = \"unix:///run/php/top.sock;/status\"\n\
             [discover]\nfpm_configs = \"/x\"\nfpm_bin = \"/usr/sbin/php-fpm8.2\"\n\
             stuck_after = \"5m\"\nrelaunch_saturated = true\nmax_restarts = 2\n";
        let watch = parse(
            Path::new("/etc/php-relaunch/watch.toml"),
            text,
            true,
            None,
            Overrides {
                log: Some("/tmp/watch-test.log".into()),
                state_dir: Some("/srv/state".into()),
                ..Overrides::default()
            },
        )
        .unwrap();
        let discover = watch.discover.unwrap();
        let direct = DiscoveredControl::Direct(conf.clone());
        let service = DiscoveredControl::Service("php8.2-fpm".into());
        let alert = DiscoveredControl::AlertOnly {
            config: conf.clone(),
            why: "no control".into(),
        };
        let cases: [(&str, &DiscoveredControl, bool, Option<&str>); 9] = [
            ("unix:///run/php/a.sock;/ping", &direct, false, None),
            (
                "unix:///run/php/b.sock;/ping",
                &direct,
                true,
                Some("unix:///run/php/b-status.sock;/status"),
            ),
            ("unix:///run/php/c.sock", &direct, false, None),
            ("fcgi://127.0.0.1:9001/ping", &service, false, None),
            (
                "unix:///run/php/d.sock",
                &alert,
                false,
                Some("fcgi://127.0.0.1:9100/status"),
            ),
            ("unix:///run/php/e.sock;/ping", &alert, true, None),
            // Mistakes: on-demand over TCP, a port out of range, a status page without a path.
            ("fcgi://127.0.0.1:9002/ping", &direct, true, None),
            ("fcgi://127.0.0.1:99999/ping", &direct, false, None),
            (
                "unix:///run/php/f.sock;/ping",
                &alert,
                false,
                Some("unix:///run/php/f-status.sock"),
            ),
        ];
        // One memo for every pool, as a run keeps it: what one pool parsed serves the next.
        let mut memo = Memo::default();
        for (url, control, on_demand, status) in cases {
            let short = discover.target(&mut memo, url, "www", control, on_demand, status);
            let (settings, _, own) = discover.settings_of(control, on_demand, status);
            let long = classic(url, &settings, &discover.run);
            // The short way is taken where it can be, not left for the long way every time.
            assert_eq!(
                memo.short(url, &settings, &discover.run).is_some(),
                long.is_ok(),
                "{url}"
            );
            match (short, long) {
                (Ok(short), Ok(mut long)) => {
                    long.fpm_pool = Some("www".into());
                    // An alert-only configuration is a master of its own, whatever the words say.
                    if let Some(key) = own {
                        long.lock = crate::lock::instance_path(&key);
                    }
                    assert_eq!(
                        format!("{:?}", short.config),
                        format!("{long:?}"),
                        "{url} {control:?} {on_demand} {status:?}"
                    );
                }
                (Err(short), Err((_, long))) => {
                    assert_eq!(
                        format!("{short:#}"),
                        format!("discovered pool 'www' ({url}): {long:#}")
                    );
                }
                (short, long) => panic!("{url}: the short way {short:?}, the long way {long:?}"),
            }
        }
        // Once per distinct set of shared words: direct, direct on demand with a page, direct on
        // demand, the service, alert-only with a page, alert-only on demand.
        assert_eq!(memo.parsed.len(), 6);
    }
}
