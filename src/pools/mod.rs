//! Redundant pool replicas (#4): status, start, stop, rolling restarts replica by replica, and atomic
//! release switches. A replica is a php-fpm master of its own (binary + config). Behind nginx it is
//! drained by removing its unix socket, and `fastcgi_next_upstream` carries requests to the other
//! replicas; behind Apache's mod_proxy_balancer it is drained through the balancer-manager, as
//! pools-manager does.

mod apache;
mod command;
mod file;
mod nginx;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::fpm::{self, Control, Instance};
use crate::poll::poll_until;
use crate::probe::{self, Target};

pub use command::command;
pub use file::load;

/// How long a replica may take to answer its ping after a start.
const START_DEADLINE: Duration = Duration::from_secs(10);

/// How long one ping may take.
const PING_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a wait asks again.
const EVERY: Duration = Duration::from_millis(50);

/// What takes a pool's replicas out of the load and puts them back: nginx or Apache.
pub trait Balancer: fmt::Debug + Send + Sync {
    /// Its name in the pools file.
    fn name(&self) -> &'static str;
    /// Whether it sends the replica requests now.
    fn standing(&self, replica: &Replica) -> Standing;
    /// Takes the replica out, so new requests go to the others, and waits (until `until`) for
    /// what the balancer itself counts in flight.
    fn drain(&self, replica: &Replica, until: Instant, say: &mut dyn FnMut(String)) -> Result<()>;
    /// Puts a started replica back, if it was out.
    fn restore(&self, replica: &Replica, say: &mut dyn FnMut(String)) -> Result<()>;
}

/// Where a replica stands with its balancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// It takes requests.
    In,
    /// It is drained (nginx: its socket is gone; Apache: the balancer-manager says Drn).
    Out,
    /// The balancer does not say (the balancer-manager does not answer).
    Unknown,
}

impl Standing {
    fn as_str(self) -> &'static str {
        match self {
            Standing::In => "in",
            Standing::Out => "out",
            Standing::Unknown => "unknown",
        }
    }
}

/// A pool of identical replicas.
#[derive(Debug, Clone)]
pub struct Pool {
    /// Its name in the file.
    pub name: String,
    /// Its load balancer.
    pub balancer: Arc<dyn Balancer>,
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

impl Replica {
    /// Its php-fpm, recognised in `procs` (one snapshot serves the caller and this).
    fn instance(&self, procs: &[fpm::Proc]) -> Result<Instance> {
        Instance::resolve(&self.control(), None, procs)
    }

    fn control(&self) -> Control {
        Control::Direct {
            bin: self.fpm_bin.clone(),
            config: self.fpm_config.clone(),
        }
    }

    /// Asks its ping until it answers or `deadline` passes; what the last ping said.
    fn ping_within(&self, deadline: Duration) -> Result<String, String> {
        poll_until(Instant::now() + deadline, EVERY, || self.ping())
    }

    /// Whether it answers its ping, and what it said: how fast, or what went wrong.
    fn ping(&self) -> Result<String, String> {
        let verdict = probe::probe(&self.ping, PING_TIMEOUT, None);
        let answer = &verdict.answer;
        if answer.is_healthy() {
            // Only while its verified master runs, and from a socket it opened: its workers'
            // children may hold the socket (#18), and the pool user may link another's in (#21).
            let opener = match (&self.ping, verdict.listener) {
                (
                    probe::Target::FastCgi {
                        address: probe::fastcgi::Address::Unix(path),
                        ..
                    },
                    Some(pid),
                ) => fpm::opener_not_running(pid, path),
                _ => None,
            };
            if let Some(why) = opener.or_else(|| {
                fpm::known(&self.control(), None)
                    .and_then(|instance| fpm::masterless(&instance, verdict.listener))
            }) {
                return Err(format!("untrusted-listener ({why})"));
            }
            Ok(format!(
                "answered {answer} in {:.1} ms",
                verdict.latency.as_secs_f64() * 1000.0
            ))
        } else {
            Err(format!(
                "{answer} ({})",
                answer.detail().unwrap_or("no answer")
            ))
        }
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
            let (ping_ok, ping) = match replica.ping() {
                Ok(said) => (true, said),
                Err(said) => (false, said),
            };
            let balancer = pool.balancer.standing(replica).as_str();
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
    replica.ping().is_ok()
}

/// Relaunches one failing replica as a cron run relaunches php-fpm (start; restart; SIGKILL of its
/// family and start when it is stopped or the restart does not help), checked by its own ping.
pub fn relaunch_replica(replica: &Replica, deadline: Duration) -> Result<fpm::Relaunch> {
    let procs = fpm::snapshot()?;
    let instance = replica.instance(&procs)?;
    let plan = instance.plan(&procs);
    let mut levers = ReplicaLevers {
        replica,
        instance,
        deadline,
    };
    Ok(fpm::relaunch(plan, &mut levers))
}

/// A replica's php-fpm, and its own ping as the heartbeat.
struct ReplicaLevers<'a> {
    replica: &'a Replica,
    instance: Instance,
    deadline: Duration,
}

impl fpm::Levers for ReplicaLevers<'_> {
    fn take(&mut self, step: fpm::Step) -> Result<()> {
        self.instance.take(step, self.deadline)
    }

    fn healthy(&mut self) -> bool {
        self.replica.ping_within(self.deadline).is_ok()
    }
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
    pool.balancer.restore(replica, say)?;
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
        .any(|r| r.ping().is_ok());
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
    pool.balancer.drain(replica, until, say)?;
    // php-fpm's own graceful stop waits for busy workers only when process_control_timeout is set;
    // so wait here until every worker is back in accept(2), its request done, before signalling.
    let busy = || -> Result<usize> {
        let procs = fpm::snapshot()?;
        Ok(instance.workers_idle(&procs).map_or(0, |workers| {
            workers.iter().filter(|(_, idle)| !idle).count()
        }))
    };
    match poll_until(until, EVERY, || match busy() {
        Ok(0) => Ok(()),
        other => Err(other),
    }) {
        Ok(()) => {}
        Err(Ok(busy)) => say(format!(
            "{}: {busy} requests still running after the drain timeout",
            replica.name
        )),
        Err(Err(err)) => return Err(err),
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

fn wait_for_ping(replica: &Replica, say: &mut dyn FnMut(String)) -> Result<()> {
    match replica.ping_within(START_DEADLINE) {
        Ok(what) => {
            say(format!("{}: ping {what}", replica.name));
            Ok(())
        }
        Err(what) => bail!(
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
