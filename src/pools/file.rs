//! The pools file (`/etc/php-relaunch/pools.toml`): read, checked, and turned into [`Pool`]s. Errors
//! name the file, the line and the field.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde::Deserialize;
use toml::Spanned;

use super::apache::Apache;
use super::nginx::Nginx;
use super::{Balancer, Pool, Replica};
use crate::fpm;
use crate::probe::Target;
use crate::secure_file::{self, Links};

/// The pools file, as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolsFile {
    pools: BTreeMap<String, PoolFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    balancer: Spanned<String>,
    /// Apache: the balancer-manager page, e.g. `http://127.0.0.1/balancer-manager`.
    manager_url: Option<String>,
    /// Apache: the balancer's name, as in `balancer://NAME`.
    balancer_name: Option<String>,
    release_link: Option<PathBuf>,
    /// Seconds a draining replica's requests may take before TERM (30 unless given).
    drain_timeout: Option<Spanned<i64>>,
    replicas: Vec<ReplicaFile>,
}

/// How long a draining replica's requests may take unless the file says.
const DEFAULT_DRAIN: Duration = Duration::from_secs(30);

/// The longest `drain_timeout` taken: a day (a larger number is a typo, and would overflow a clock).
const MAX_DRAIN_SECS: i64 = 86_400;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplicaFile {
    fpm_bin: Spanned<PathBuf>,
    fpm_config: Spanned<PathBuf>,
    ping: Spanned<String>,
    /// Apache: the member's worker URL as the balancer-manager shows it, e.g. `fcgi://127.0.0.1:9001`.
    member: Option<String>,
}

/// The largest pools file read: far more than hundreds of replicas take.
const MAX_FILE: usize = 1 << 20;

/// Reads and checks the pools file.
pub fn load(path: &Path) -> Result<Vec<Pool>> {
    // It names the php-fpm root starts, stops and signals: only a file root controls (#18), read
    // where it was checked, not through the links again.
    let canonical = fpm::root_file(path)
        .map_err(|err| anyhow::anyhow!("pools file '{}': {err:#}", path.display()))?;
    let text = secure_file::read_text(&canonical, Links::Refuse, MAX_FILE)
        .map_err(|err| anyhow::anyhow!("pools file '{}': {err}", path.display()))?;
    // `FILE: line N:` for whatever the span points at.
    let at = |span: std::ops::Range<usize>| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        format!("{}: line {line}", path.display())
    };
    let file: PoolsFile = toml::from_str(&text).map_err(|err| {
        anyhow::anyhow!(
            "{}: {}",
            at(err.span().unwrap_or(0..0)),
            err.message().trim()
        )
    })?;
    file.pools
        .into_iter()
        .map(|(name, pool)| {
            let balancer_at = at(pool.balancer.span());
            let balancer: Arc<dyn Balancer> = match pool.balancer.get_ref().as_str() {
                "nginx" => Arc::new(Nginx),
                "apache" => {
                    let (Some(url), Some(name)) = (pool.manager_url, pool.balancer_name) else {
                        bail!(
                            "{balancer_at}: pool '{name}': balancer \"apache\" needs `manager_url` and `balancer_name`"
                        );
                    };
                    Arc::new(Apache::new(url, name))
                }
                other => bail!(
                    "{balancer_at}: field `balancer`: \"{other}\" is not supported (\"nginx\" or \"apache\")"
                ),
            };
            ensure!(!pool.replicas.is_empty(), "{}: pool '{name}' has no replicas", path.display());
            let drain_timeout = match pool.drain_timeout {
                None => DEFAULT_DRAIN,
                Some(secs) => {
                    let value = *secs.get_ref();
                    ensure!(
                        (0..=MAX_DRAIN_SECS).contains(&value),
                        "{}: pool '{name}': field `drain_timeout` must be 0 to {MAX_DRAIN_SECS} seconds, got {value}",
                        at(secs.span())
                    );
                    Duration::from_secs(value.unsigned_abs())
                }
            };
            let replicas = pool
                .replicas
                .into_iter()
                .enumerate()
                .map(|(i, r)| {
                    let replica = format!("{name}/{}", i + 1);
                    let ping_at = at(r.ping.span());
                    let ping = r.ping.get_ref().parse::<Target>()
                        .with_context(|| format!("{ping_at}: replica {replica}: field `ping`"))?;
                    ensure!(
                        ping.is_fastcgi(),
                        "{ping_at}: replica {replica}: field `ping` must be a FastCGI target (unix:// or fcgi://)"
                    );
                    let config_at = at(r.fpm_config.span());
                    // Root starts a master with it: only a configuration root controls (#18).
                    let fpm_config = fpm::root_config(r.fpm_config.get_ref()).with_context(|| {
                        format!(
                            "{config_at}: replica {replica}: field `fpm_config` '{}'",
                            r.fpm_config.get_ref().display()
                        )
                    })?;
                    ensure!(
                        balancer.name() != "apache" || r.member.is_some(),
                        "{}: replica {replica}: field `member` is needed behind Apache",
                        path.display()
                    );
                    let fpm_bin = fpm::trusted_binary(r.fpm_bin.get_ref()).with_context(|| {
                        format!(
                            "{}: replica {replica}: field `fpm_bin` '{}'",
                            at(r.fpm_bin.span()),
                            r.fpm_bin.get_ref().display()
                        )
                    })?;
                    Ok(Replica {
                        name: replica,
                        fpm_bin,
                        fpm_config,
                        ping,
                        member: r.member,
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            Ok(Pool {
                name,
                balancer,
                release_link: pool.release_link,
                drain_timeout,
                replicas,
            })
        })
        .collect()
}
