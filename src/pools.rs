//! Redundant pool replicas (#4): status, start, stop, rolling restarts replica by replica, and atomic
//! release switches. A replica is a php-fpm master of its own (binary + config). Behind nginx it is
//! drained by removing its unix socket, and `fastcgi_next_upstream` carries requests to the other
//! replicas; behind Apache's mod_proxy_balancer it is drained through the balancer-manager, as
//! pools-manager does.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::config::Control;
use crate::fpm::{self, Instance};
use crate::probe::{self, Target};

/// How long a replica may take to answer its ping after a start.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// How long one ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

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

/// How a pool's replicas are taken out of the load balancer and put back.
#[derive(Debug, Clone)]
pub enum Balancer {
    /// nginx: a replica is drained by removing its unix socket.
    Nginx,
    /// Apache mod_proxy_balancer, through its balancer-manager.
    Apache(Manager),
}

/// Apache's balancer-manager for one balancer.
#[derive(Debug, Clone)]
pub struct Manager {
    /// The balancer-manager page.
    pub url: String,
    /// The balancer, as in `balancer://NAME`.
    pub balancer: String,
}

/// A pool of identical replicas.
#[derive(Debug, Clone)]
pub struct Pool {
    /// Its name in the file.
    pub name: String,
    /// Its load balancer.
    pub balancer: Balancer,
    /// The `current` symlink that `deploy` switches.
    pub release_link: Option<PathBuf>,
    /// How long a draining replica's requests may take.
    pub drain_timeout: Duration,
    /// Its replicas, numbered from 1.
    pub replicas: Vec<Replica>,
}

/// One php-fpm master of a pool.
#[derive(Debug, Clone)]
pub struct Replica {
    /// `POOL/N`.
    pub name: String,
    /// The php-fpm binary.
    pub fpm_bin: PathBuf,
    /// Its config (its pid file and listen socket are read from it).
    pub fpm_config: PathBuf,
    /// Its FastCGI ping.
    pub ping: Target,
    /// Apache: its worker URL in the balancer.
    pub member: Option<String>,
}

/// Reads and checks the pools file; errors name the file, the line and the field.
pub fn load(path: &Path) -> Result<Vec<Pool>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read pools file '{}'", path.display()))?;
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
            let balancer = match pool.balancer.get_ref().as_str() {
                "nginx" => Balancer::Nginx,
                "apache" => {
                    let (Some(url), Some(balancer)) = (pool.manager_url, pool.balancer_name) else {
                        bail!(
                            "{balancer_at}: pool '{name}': balancer \"apache\" needs `manager_url` and `balancer_name`"
                        );
                    };
                    Balancer::Apache(Manager { url, balancer })
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
                    let ping = crate::config::probe_target(r.ping.get_ref())
                        .with_context(|| format!("{ping_at}: replica {replica}: field `ping`"))?;
                    ensure!(
                        ping.is_fastcgi(),
                        "{ping_at}: replica {replica}: field `ping` must be a FastCGI target (unix:// or fcgi://)"
                    );
                    let config_at = at(r.fpm_config.span());
                    let fpm_config = r.fpm_config.get_ref().canonicalize().with_context(|| {
                        format!(
                            "{config_at}: replica {replica}: field `fpm_config` '{}'",
                            r.fpm_config.get_ref().display()
                        )
                    })?;
                    ensure!(
                        !matches!(balancer, Balancer::Apache(_)) || r.member.is_some(),
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

impl Replica {
    /// Its php-fpm, recognised in `procs` (one snapshot serves the caller and this).
    fn instance(&self, procs: &[fpm::Proc]) -> Result<Instance> {
        let control = Control::Direct {
            bin: self.fpm_bin.clone(),
            config: self.fpm_config.clone(),
        };
        Instance::resolve(&control, None, procs)
    }

    /// The unix socket nginx reaches it on, from its config's `listen`.
    fn socket(&self) -> Option<PathBuf> {
        fpm::config_setting(&self.fpm_config, "listen")
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    }

    /// Asks its ping until it answers or `deadline` passes; the last answer.
    fn ping_within(&self, deadline: Duration) -> (bool, String) {
        let until = Instant::now() + deadline;
        loop {
            let (ok, what) = self.ping();
            if ok || Instant::now() >= until {
                return (ok, what);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether it answers its ping, and how fast.
    fn ping(&self) -> (bool, String) {
        let verdict = probe::probe(&self.ping, PING_TIMEOUT, None);
        let healthy = verdict.answer.is_healthy();
        let what = if healthy {
            format!(
                "answered {} in {:.1} ms",
                verdict.answer,
                verdict.latency.as_secs_f64() * 1000.0
            )
        } else {
            format!(
                "{} ({})",
                verdict.answer,
                verdict.answer.detail().unwrap_or("no answer")
            )
        };
        (healthy, what)
    }
}

/// One replica's state, for `pools status`.
#[derive(Debug, Serialize)]
pub struct Status {
    /// `POOL/N`.
    pub replica: String,
    /// Its master's pid, if it runs.
    pub master_pid: Option<u32>,
    /// Whether it answers its ping.
    pub ping_ok: bool,
    /// What the ping said.
    pub ping: String,
    /// `in` while it takes requests; `out` while drained (nginx: its socket is gone; Apache: the
    /// balancer-manager says Drn); `unknown` when the balancer-manager does not answer.
    pub balancer: &'static str,
    /// Where the pool's release link points.
    pub release: Option<String>,
}

/// The state of each chosen replica.
pub fn status(pool: &Pool, replicas: &[&Replica]) -> Result<Vec<Status>> {
    let release = pool
        .release_link
        .as_deref()
        .and_then(|link| std::fs::read_link(link).ok())
        .map(|target| target.display().to_string());
    replicas
        .iter()
        .map(|replica| {
            let procs = fpm::snapshot()?;
            let master_pid = replica.instance(&procs)?.master(&procs).map(|m| m.pid);
            let (ping_ok, ping) = replica.ping();
            let balancer = match &pool.balancer {
                Balancer::Nginx if replica.socket().is_some_and(|s| s.exists()) => "in",
                Balancer::Nginx => "out",
                Balancer::Apache(manager) => match manager.member(replica) {
                    Ok(row) if row.draining => "out",
                    Ok(_) => "in",
                    Err(_) => "unknown",
                },
            };
            Ok(Status {
                replica: replica.name.clone(),
                master_pid,
                ping_ok,
                ping,
                balancer,
                release: release.clone(),
            })
        })
        .collect()
}

/// A replica's processes and log files, for the evidence of its relaunch.
pub fn evidence_of(replica: &Replica) -> Result<(Vec<fpm::Proc>, Vec<PathBuf>)> {
    let procs = fpm::snapshot()?;
    let instance = replica.instance(&procs)?;
    let family = instance.family(&procs).into_iter().cloned().collect();
    Ok((family, instance.log_files()))
}

/// Whether a replica answers its ping.
pub fn answers(replica: &Replica) -> bool {
    replica.ping().0
}

/// Relaunches one failing replica as a cron run relaunches php-fpm (start; restart; SIGKILL of its
/// family and start when it is stopped or the restart does not help), checked by its own ping.
pub fn relaunch_replica(replica: &Replica, deadline: Duration) -> Result<fpm::Relaunch> {
    let procs = fpm::snapshot()?;
    let instance = replica.instance(&procs)?;
    let mut answered = || replica.ping_within(deadline).0;
    Ok(fpm::relaunch(&instance, &procs, deadline, &mut answered))
}

/// Starts a replica that is not running, waits for its ping, and puts it back into the balancer.
pub fn start(pool: &Pool, replica: &Replica, say: &mut dyn FnMut(String)) -> Result<()> {
    let procs = fpm::snapshot()?;
    let instance = replica.instance(&procs)?;
    if instance.master(&procs).is_some() {
        say(format!("{}: already running", replica.name));
    } else {
        say(format!("{}: starting", replica.name));
        instance.start(START_DEADLINE)?;
        wait_for_ping(replica, say)?;
    }
    if let Balancer::Apache(manager) = &pool.balancer
        && manager.member(replica)?.draining
    {
        manager.set_drain(replica, false)?;
        say(format!(
            "{}: back in balancer://{}",
            replica.name, manager.balancer
        ));
    }
    Ok(())
}

/// Stops a replica: drain (nginx: its socket removed, so new requests go elsewhere at once; Apache:
/// the balancer-manager's drain flag, then its busy count down to 0), wait for its workers' requests,
/// then a graceful stop. Refused when no other replica of the pool is serving.
pub fn stop(pool: &Pool, replica: &Replica, say: &mut dyn FnMut(String)) -> Result<()> {
    let others_serving = pool
        .replicas
        .iter()
        .filter(|r| r.name != replica.name)
        .any(|r| r.ping().0);
    if !others_serving {
        bail!(
            "refusing to stop {}: no other replica of pool '{}' is serving",
            replica.name,
            pool.name
        );
    }
    let instance = replica.instance(&fpm::snapshot()?)?;
    let started = Instant::now();
    let until = started + pool.drain_timeout;
    match &pool.balancer {
        Balancer::Nginx => {
            if let Some(socket) = replica.socket() {
                // nginx's connect now fails at once and goes to the next upstream; the master keeps
                // the bound socket for its requests in flight.
                match std::fs::remove_file(&socket) {
                    Ok(()) => say(format!(
                        "{}: drained (removed {})",
                        replica.name,
                        socket.display()
                    )),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => bail!(
                        "cannot drain {}: removing {}: {err}",
                        replica.name,
                        socket.display()
                    ),
                }
            }
        }
        Balancer::Apache(manager) => {
            manager.set_drain(replica, true)?;
            say(format!(
                "{}: drained in balancer://{}",
                replica.name, manager.balancer
            ));
            // Apache's own count of the member's requests in flight.
            loop {
                let busy = manager.member(replica)?.busy;
                if busy == 0 {
                    break;
                }
                if Instant::now() >= until {
                    say(format!(
                        "{}: Apache still counts {busy} busy requests after the drain timeout",
                        replica.name
                    ));
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
    // php-fpm's own graceful stop waits for busy workers only when process_control_timeout is set;
    // so wait here until every worker is back in accept(2), its request done, before signalling.
    loop {
        let procs = fpm::snapshot()?;
        let busy = instance.workers_idle(&procs).map_or(0, |workers| {
            workers.iter().filter(|(_, idle)| !idle).count()
        });
        if busy == 0 || Instant::now() >= until {
            if busy > 0 {
                say(format!(
                    "{}: {busy} requests still running after the drain timeout",
                    replica.name
                ));
            }
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    match instance.stop_gracefully(Duration::from_secs(5))? {
        Some(signal) => say(format!(
            "{}: stopped ({signal}) after {:.2}s",
            replica.name,
            started.elapsed().as_secs_f64()
        )),
        None => say(format!("{}: was not running", replica.name)),
    }
    Ok(())
}

/// Restarts one replica: config test, stop (refused if it is the last serving), start, ping.
pub fn restart(pool: &Pool, replica: &Replica, say: &mut dyn FnMut(String)) -> Result<()> {
    let instance = replica.instance(&fpm::snapshot()?)?;
    instance
        .test_config(START_DEADLINE)
        .with_context(|| format!("{}: config test failed; left as it is", replica.name))?;
    stop(pool, replica, say)?;
    start(pool, replica, say)
}

/// Restarts `replicas` one at a time; a failure is reported and the next replica is still tried (the
/// last-serving check keeps the pool up). Returns how many failed.
pub fn rolling_restart(pool: &Pool, replicas: &[&Replica], say: &mut dyn FnMut(String)) -> usize {
    let mut failed = 0;
    for replica in replicas {
        if let Err(err) = restart(pool, replica, say) {
            say(format!("{}: {err:#}", replica.name));
            failed += 1;
        }
    }
    failed
}

/// Points the pool's release link at `dir` atomically (a new symlink renamed over the old one), then
/// restarts the pool replica by replica, so each replica serves the old release or the new one.
pub fn deploy(pool: &Pool, dir: &Path, say: &mut dyn FnMut(String)) -> Result<usize> {
    let Some(link) = &pool.release_link else {
        bail!("pool '{}' has no release_link in the pools file", pool.name);
    };
    ensure!(dir.is_dir(), "'{}' is not a directory", dir.display());
    let dir = dir.canonicalize()?;
    let parent = link
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = link.file_name().context("release_link has no file name")?;
    let temp = parent.join(format!(
        ".{}.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    std::os::unix::fs::symlink(&dir, &temp)
        .with_context(|| format!("creating '{}'", temp.display()))?;
    if let Err(err) = std::fs::rename(&temp, link) {
        let _ = std::fs::remove_file(&temp);
        bail!("switching '{}': {err}", link.display());
    }
    say(format!(
        "{}: {} -> {}",
        pool.name,
        link.display(),
        dir.display()
    ));
    let replicas: Vec<&Replica> = pool.replicas.iter().collect();
    Ok(rolling_restart(pool, &replicas, say))
}

/// A member's row in the balancer-manager page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its status says Drn.
    pub draining: bool,
    /// Requests it is serving now.
    pub busy: u64,
}

impl Manager {
    fn agent() -> ureq::Agent {
        ureq::Agent::config_builder()
            .timeout_global(Some(PING_TIMEOUT))
            .http_status_as_error(true)
            .proxy(None)
            .build()
            .into()
    }

    fn page(&self) -> Result<String> {
        Self::agent()
            .get(&self.url)
            .call()
            .and_then(|mut r| r.body_mut().read_to_string())
            .with_context(|| format!("reading the balancer-manager at {}", self.url))
    }

    /// The replica's row.
    pub fn member(&self, replica: &Replica) -> Result<Member> {
        let member = replica.member.as_deref().unwrap_or_default();
        parse_member(&self.page()?, member).with_context(|| {
            format!(
                "balancer://{} at {} has no member {member}",
                self.balancer, self.url
            )
        })
    }

    /// Sets or clears the member's drain flag, as the balancer-manager's form does (with its nonce,
    /// and the Referer it demands against cross-site requests).
    pub fn set_drain(&self, replica: &Replica, drain: bool) -> Result<()> {
        let member = replica.member.as_deref().unwrap_or_default();
        let page = self.page()?;
        let nonce = parse_nonce(&page, &self.balancer).with_context(|| {
            format!("no nonce for balancer://{} at {}", self.balancer, self.url)
        })?;
        Self::agent()
            .post(&self.url)
            .header("Referer", &self.url)
            .send_form([
                ("b", self.balancer.as_str()),
                ("w", member),
                ("nonce", nonce.as_str()),
                ("w_status_N", if drain { "1" } else { "0" }),
            ])
            .with_context(|| format!("setting the drain flag of {member} at {}", self.url))?;
        ensure!(
            self.member(replica)?.draining == drain,
            "the balancer-manager at {} did not take the drain flag of {member}",
            self.url
        );
        Ok(())
    }
}

/// `nonce=…` in the balancer's links.
fn parse_nonce(page: &str, balancer: &str) -> Option<String> {
    let at = page.find(&format!("b={balancer}&amp;"))?;
    let rest = &page[at..];
    let nonce = &rest[rest.find("nonce=")? + "nonce=".len()..];
    let end = nonce.find(|c: char| !(c.is_ascii_hexdigit() || c == '-'))?;
    Some(nonce[..end].to_owned())
}

/// The cells after `>MEMBER</a></td>`: route, redir, factor, set, status, elected, busy, …
fn parse_member(page: &str, member: &str) -> Option<Member> {
    let at = page.find(&format!(">{member}</a></td>"))?;
    let end = page[at..].find("</tr>").map_or(page.len(), |end| at + end);
    let cells: Vec<&str> = page[at..end]
        .split("<td>")
        .skip(1)
        .map(|cell| cell.split("</td>").next().unwrap_or_default().trim())
        .collect();
    Some(Member {
        draining: cells.get(4)?.split_whitespace().any(|flag| flag == "Drn"),
        busy: cells.get(6)?.parse().ok()?,
    })
}

fn wait_for_ping(replica: &Replica, say: &mut dyn FnMut(String)) -> Result<()> {
    match replica.ping_within(START_DEADLINE) {
        (true, what) => {
            say(format!("{}: ping {what}", replica.name));
            Ok(())
        }
        (false, what) => bail!(
            "{} does not answer its ping after start: {what}",
            replica.name
        ),
    }
}

/// The replicas that `POOL [REPLICA]` names (all pools when `pool` is `None`).
pub fn select<'a>(
    pools: &'a [Pool],
    pool: Option<&str>,
    replica: Option<usize>,
) -> Result<Vec<(&'a Pool, Vec<&'a Replica>)>> {
    let chosen: Vec<&Pool> = match pool {
        None => pools.iter().collect(),
        Some(name) => vec![
            pools
                .iter()
                .find(|p| p.name == name)
                .with_context(|| format!("no pool named '{name}'"))?,
        ],
    };
    chosen
        .into_iter()
        .map(|pool| {
            let replicas = match replica {
                None => pool.replicas.iter().collect(),
                Some(n) => vec![
                    pool.replicas
                        .get(n.wrapping_sub(1))
                        .with_context(|| format!("pool '{}' has no replica {n}", pool.name))?,
                ],
            };
            Ok((pool, replicas))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From Apache 2.4's balancer-manager page, one balancer with two members, the first drained.
    const PAGE: &str = r#"<h3>LoadBalancer Status for <a href="/balancer-manager?b=php_www&amp;nonce=45f3a7a9-b44a-fd29-3471-84c3d757fe06">balancer://php_www</a> [p8df6fda7_php_www]</h3>
<table><tr><th>Worker URL</th><th>Route</th><th>RouteRedir</th><th>Factor</th><th>Set</th><th>Status</th><th>Elected</th><th>Busy</th><th>Load</th><th>To</th><th>From</th></tr>
<tr>
<td><a href="/balancer-manager?b=php_www&amp;w=fcgi://127.0.0.1:54527&amp;nonce=45f3a7a9-b44a-fd29-3471-84c3d757fe06">fcgi://127.0.0.1:54527</a></td><td></td><td></td><td>1.00</td><td>0</td><td>Init Drn Ok </td><td>1</td><td>2</td><td>-100</td><td>912 </td><td> 72 </td></tr>
<tr>
<td><a href="/balancer-manager?b=php_www&amp;w=fcgi://127.0.0.1:44453&amp;nonce=45f3a7a9-b44a-fd29-3471-84c3d757fe06">fcgi://127.0.0.1:44453</a></td><td></td><td></td><td>1.00</td><td>0</td><td>Init Ok </td><td>4</td><td>0</td><td>100</td><td>3.6K</td><td>288 </td></tr>
</table>"#;

    #[test]
    fn the_shipped_example_parses() {
        let file: PoolsFile = toml::from_str(include_str!("../examples/pools.toml")).unwrap();
        let www = &file.pools["www"];
        assert_eq!(
            (
                www.balancer.get_ref().as_str(),
                www.replicas.len(),
                www.drain_timeout.as_ref().map(|t| *t.get_ref())
            ),
            ("nginx", 2, Some(30))
        );
        assert_eq!(
            www.release_link.as_deref(),
            Some(Path::new("/srv/www/current"))
        );
    }

    #[test]
    fn balancer_manager_page() {
        assert_eq!(
            parse_nonce(PAGE, "php_www").as_deref(),
            Some("45f3a7a9-b44a-fd29-3471-84c3d757fe06")
        );
        assert_eq!(parse_nonce(PAGE, "other"), None);
        assert_eq!(
            parse_member(PAGE, "fcgi://127.0.0.1:54527"),
            Some(Member {
                draining: true,
                busy: 2
            })
        );
        assert_eq!(
            parse_member(PAGE, "fcgi://127.0.0.1:44453"),
            Some(Member {
                draining: false,
                busy: 0
            })
        );
        assert_eq!(parse_member(PAGE, "fcgi://127.0.0.1:1"), None);
    }
}
