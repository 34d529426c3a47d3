//! The real [`Host`]: php-fpm through `fpm` (verified processes, the service or the binary), pools
//! through `pools`, the heartbeat through `probe`, mail through `alert`, evidence files, the clock.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result, anyhow, bail};

use super::host::{Found, FoundReplicas, Host};
use crate::alert::{self, Alert};
use crate::config::Config;
use crate::evidence;
use crate::fpm::{self, Instance, Plan, Relaunch, Step, StuckKill};
use crate::health;
use crate::listener;
use crate::load;
use crate::ondemand::{self, Dormancy};
use crate::poll::poll_until;
use crate::pools;
use crate::probe::fastcgi::Address;
use crate::probe::{self, Answer, Target, Verdict};
use crate::report::Report;
use crate::state::State;

/// How often the heartbeat is asked again while waiting for a relaunched php-fpm.
const VERIFY_INTERVAL: Duration = Duration::from_millis(200);

/// This machine, as one run of `config` sees it.
pub struct System<'a> {
    config: &'a Config,
    /// The php-fpm `inspect` found.
    instance: Option<Instance>,
    /// The log files of the replicas `failing_replicas` found.
    replica_logs: Vec<PathBuf>,
    /// The heartbeat's last answer was a timeout: a status page on the same socket would cost
    /// another one for nothing (every worker is busy), so /proc judges alone.
    probe_timed_out: bool,
    /// The pool `inspect` judged, when known: the only one whose stuck workers are killed.
    judged_pool: Option<String>,
}

/// `answer`, unless it cannot be php-fpm's (#18): the heartbeat goes through a web server to a
/// php-fpm whose pool sockets are another user's, or a link or other file stands at a pool's socket
/// path (then that user answered); or the php-fpm is known and no verified master of it runs (then
/// whoever holds its inherited listening socket answered, a program PHP started). Only a healthy
/// answer is looked at, so the hot path reads php-fpm's config, the socket tables and the pid file's
/// process, and starts nothing.
pub fn believed(config: &Config, verdict: Verdict) -> Answer {
    if !verdict.answer.is_healthy() {
        return verdict.answer;
    }
    Believer::new(config, None).believe(config, verdict)
}

/// What healthy answers of one php-fpm's pools are believed by (see [`believed`]), resolved once for
/// all of them: a `watch` run judges hundreds of pools of a few masters (#21), and reading a
/// master's config and /proc once per pool cost more than the probes. The verified master, the
/// sockets it holds and the table of listening unix sockets are looked at once, by the first
/// healthy answer that needs them; a socket not found in them is looked at again, fresh.
pub struct Believer {
    instance: Option<Instance>,
    /// The configuration of a php-fpm watched without being controlled (`watch`'s alert-only
    /// pools): its answers count only from a listening socket its master opened.
    watched: Option<PathBuf>,
    /// Its verified master.
    master: OnceLock<fpm::Verified>,
    /// The listening sockets the master holds, and those bound to each socket file.
    sockets: OnceLock<Sockets>,
}

/// Whose a listening socket that answered is, by the process that opened it.
enum Opened {
    /// This php-fpm's master's: believed.
    Ours,
    /// Another php-fpm's: not believed, and why.
    Foreign(String),
    /// Not told by its opener (systemd, an activator): the socket's path decides.
    Unknown,
}

/// The sockets a master holds, and the listening unix sockets bound to each socket file.
type Sockets = (
    HashSet<u64>,
    HashMap<listener::FileId, Vec<listener::Listener>>,
);

impl Believer {
    /// The php-fpm `config` controls, when it is known without scanning every process; else the
    /// php-fpm configuration `watched` names, when one does.
    pub fn new(config: &Config, watched: Option<&Path>) -> Believer {
        Believer {
            instance: fpm::known(&config.control, config.pid_file.as_deref()),
            watched: watched.map(|path| path.canonicalize().unwrap_or_else(|_| path.to_owned())),
            master: OnceLock::new(),
            sockets: OnceLock::new(),
        }
    }

    /// The answer of `config`'s target (a target of this php-fpm), or why it is not believed.
    pub fn believe(&self, config: &Config, verdict: Verdict) -> Answer {
        let answer = verdict.answer;
        if !answer.is_healthy() {
            return answer;
        }
        // The process that opened the unix listening socket that answered (its master, for a
        // pool's) says whose socket it is, whatever stands at the path now (#21: the pool user
        // can flip a link there between the answer and any look at the path).
        if let Some(pid) = verdict.listener {
            match self.opened_by(pid, config) {
                Opened::Ours => return answer,
                Opened::Foreign(reason) => return Answer::Untrusted(reason),
                Opened::Unknown => {}
            }
        }
        // What a FastCGI probe connected to: the socket file at its path, or at the end of a link
        // there (Debian's alternatives link /run/php/php-fpm.sock), which counts only if the
        // master is verified to listen on it (the pool user may link any socket in, #21).
        let reached = match &config.probe.target {
            Target::FastCgi {
                address: Address::Unix(path),
                ..
            } => match listener::socket_file_reached(path) {
                Some(reached) => Some((path, reached)),
                None => {
                    return Answer::Untrusted(format!(
                        "{} is not a socket file (replaced since it answered): not believed",
                        path.display()
                    ));
                }
            },
            _ => None,
        };
        let unverified = |answer: Answer| match reached {
            Some((path, (_, true))) => Answer::Untrusted(format!(
                "{} is a link, and no verified php-fpm master tells whose socket it leads to: not \
                 believed (probe the socket itself)",
                path.display()
            )),
            _ => answer,
        };
        let Some(instance) = &self.instance else {
            // A configuration watched alert-only: its master must run, unstopped (a TCP answer
            // says nothing of who opened its socket; a program PHP started may hold it, #21).
            if let Some(watched) = &self.watched
                && !matches!(
                    self.master.get_or_init(|| fpm::master_running(watched)
                        .map_or(fpm::Verified::None, fpm::Verified::Runs)),
                    fpm::Verified::Runs(_)
                )
            {
                return Answer::Untrusted(format!(
                    "no php-fpm master of '{}' runs (or it is stopped): not believed",
                    watched.display()
                ));
            }
            return unverified(answer);
        };
        // A FastCGI target's own listener was checked by the probe.
        let foreign = if config.probe.target.is_fastcgi() {
            None
        } else {
            fpm::sockets::pools_distrust(instance)
        };
        if let Some(reason) = foreign {
            return Answer::Untrusted(reason);
        }
        let master = match self.master.get_or_init(|| instance.running_master()) {
            // Nothing to verify a master by (a service of unknown binary).
            fpm::Verified::Unknown => return unverified(answer),
            fpm::Verified::None => return Answer::Untrusted(fpm::no_master(instance)),
            fpm::Verified::Stopped(pid) => return Answer::Untrusted(fpm::stopped(*pid)),
            fpm::Verified::Runs(pid) => *pid,
        };
        // The socket that answered must be one this master listens on (#21: the pool user can
        // link another master's socket, root's too, in place of a pool's); a pool's path behind a
        // web server may be empty (no claim).
        let not_held = match (&config.probe.target, reached) {
            (_, Some((path, (file, _)))) => {
                (!self.master_listens_on(master, file)).then(|| path.clone())
            }
            (Target::FastCgi { .. }, None) => None,
            (Target::Http(_), None) => instance.pool_socket_paths().into_iter().find(|path| {
                listener::socket_file(path)
                    .is_some_and(|file| !self.master_listens_on(master, file))
            }),
        };
        match not_held {
            Some(path) => Answer::Untrusted(format!(
                "the socket at {} is not one php-fpm's master (pid {master}) listens on: not \
                 believed",
                path.display()
            )),
            None => answer,
        }
    }

    /// Whose is the listening socket process `pid` opened: this php-fpm's master's, another php-fpm's,
    /// or it cannot be told here (systemd or an activator opened it: the path decides).
    fn opened_by(&self, pid: u32, config: &Config) -> Opened {
        if let Some(instance) = &self.instance {
            match self.master.get_or_init(|| instance.running_master()) {
                fpm::Verified::Runs(master) if *master == pid => return Opened::Ours,
                fpm::Verified::Stopped(master) if *master == pid => {
                    return Opened::Foreign(fpm::stopped(pid));
                }
                _ => {}
            }
        }
        match fpm::opener(pid) {
            fpm::Opener::Master(config)
                if self.instance.is_none() && self.watched.as_ref() == Some(&config) =>
            {
                Opened::Ours
            }
            fpm::Opener::Master(config) => Opened::Foreign(format!(
                "the socket that answered was opened by another php-fpm master (pid {pid}, '{}'): \
                 not believed",
                config.display()
            )),
            fpm::Opener::Stopped => Opened::Foreign(fpm::stopped(pid)),
            fpm::Opener::OtherFpm => Opened::Foreign(format!(
                "the socket that answered was opened by php-fpm process {pid}, no verified master \
                 of this php-fpm: not believed"
            )),
            fpm::Opener::Other => match &self.watched {
                // systemd or an activator opened it (an awake on-demand pool): it is this
                // configuration's when that configuration's master holds the socket the probe
                // reached.
                Some(watched) if self.watched_master_holds(pid, watched, config) => Opened::Ours,
                Some(watched) => Opened::Foreign(format!(
                    "the socket that answered was opened by pid {pid}, and no master of '{}' \
                     holds it: not believed",
                    watched.display()
                )),
                None => Opened::Unknown,
            },
        }
    }

    /// Whether the socket `opener` (one of root's, an activator) opened, the one at the target's
    /// path, is held by a root php-fpm master running `watched`.
    fn watched_master_holds(&self, opener: u32, watched: &Path, config: &Config) -> bool {
        let Target::FastCgi {
            address: Address::Unix(path),
            ..
        } = &config.probe.target
        else {
            return false;
        };
        if !fpm::sockets::trusted_process(opener) {
            return false;
        }
        let Some((file, _)) = listener::socket_file_reached(path) else {
            return false;
        };
        let master = self.master.get_or_init(|| {
            fpm::master_running(watched).map_or(fpm::Verified::None, fpm::Verified::Runs)
        });
        match master {
            fpm::Verified::Runs(master) => self.master_listens_on(*master, file),
            _ => false,
        }
    }

    /// Whether the socket file `file` is bound to a listening socket `master` holds.
    fn master_listens_on(&self, master: u32, file: listener::FileId) -> bool {
        let read = || (fpm::sockets::held(master), listener::unix_by_file());
        let holds = |(held, by_file): &Sockets| {
            by_file
                .get(&file)
                .is_some_and(|bound| bound.iter().any(|l| held.contains(&l.inode)))
        };
        // Not in the table read for the first answer (a socket made since): asked again, fresh.
        holds(self.sockets.get_or_init(read)) || holds(&read())
    }
}

impl<'a> System<'a> {
    pub fn new(config: &'a Config) -> System<'a> {
        System {
            config,
            instance: None,
            replica_logs: Vec::new(),
            probe_timed_out: false,
            judged_pool: None,
        }
    }

    /// Books what the heartbeat answered, when it was asked elsewhere (`watch`'s concurrent probes).
    pub fn probed(&mut self, answer: &Answer) {
        self.probe_timed_out = matches!(answer, Answer::Timeout);
    }

    /// The status page to read, if any: not one on the very socket whose heartbeat just timed out.
    fn status_page(&self) -> Option<&Target> {
        let status = self.config.status.as_ref()?;
        let same_socket = match (&self.config.probe.target, status) {
            (Target::FastCgi { address: a, .. }, Target::FastCgi { address: b, .. }) => a == b,
            _ => false,
        };
        (!(self.probe_timed_out && same_socket)).then_some(status)
    }

    fn believed(&self, verdict: Verdict) -> Answer {
        believed(self.config, verdict)
    }

    /// After a relaunch, a healthy answer counts only with a verified master running (#18: php-fpm
    /// may have failed to bind a port another user took meanwhile, and that user answers).
    fn master_verified(&self) -> bool {
        let Some(instance) = &self.instance else {
            return true;
        };
        if instance.binary().is_none() {
            // Nothing to verify a master by (a service of unknown binary).
            return true;
        }
        fpm::snapshot().is_ok_and(|procs| instance.master(&procs).is_some())
    }

    fn instance(&self) -> Result<&Instance> {
        self.instance
            .as_ref()
            .ok_or_else(|| anyhow!("no php-fpm was found to act on"))
    }
}

impl Host for System<'_> {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }

    fn dormancy(&mut self) -> Dormancy {
        self.config
            .on_demand
            .as_deref()
            .map_or(Dormancy::Awake, ondemand::dormancy)
    }

    fn probe(&mut self, state: &mut State) -> Verdict {
        let mut verdict = health::check(&self.config.probe, state);
        verdict.answer = self.believed(verdict.clone());
        self.probed(&verdict.answer);
        verdict
    }

    fn web_server_hangs(&mut self) -> bool {
        let probe::Target::Http(url) = &self.config.probe.target else {
            return false;
        };
        let page = outside_php(url);
        matches!(
            probe::probe(&probe::Target::Http(page), self.config.probe.timeout, None).answer,
            Answer::Timeout
        )
    }

    fn fpm_answers(&mut self) -> Option<String> {
        let config = self.config;
        fpm::answers_itself(
            &config.control,
            config.pid_file.as_deref(),
            config.probe.timeout,
        )
    }

    fn verify(&mut self) -> (bool, Answer) {
        let probe = &self.config.probe;
        let deadline = Instant::now() + self.config.restart_timeout;
        let answered = poll_until(deadline, VERIFY_INTERVAL, || {
            let verdict = probe::probe(&probe.target, probe.timeout, probe.expect.as_deref());
            let answer = self.believed(verdict);
            if !answer.is_healthy() {
                Err(answer)
            } else if self.master_verified() {
                Ok(answer)
            } else {
                Err(Answer::Untrusted(
                    "the heartbeat answers, but no verified php-fpm master runs".to_owned(),
                ))
            }
        });
        match answered {
            Ok(answer) => (true, answer),
            Err(answer) => (false, answer),
        }
    }

    fn paused(&self) -> bool {
        self.config.pause_file.exists()
    }

    fn inspect(&mut self) -> Result<Found> {
        let config = self.config;
        let procs = fpm::snapshot()?;
        let instance = Instance::resolve(&config.control, config.pid_file.as_deref(), &procs)?;
        let plan = instance.plan(&procs);
        let load = if plan == Plan::Restart {
            // A status page is a claim (its socket may be the pool user's); /proc is the fact, judged
            // for the pool in question alone (#19): the target's own pool, known from its config
            // (the pool listening at its socket or port, or a master's only pool). Never the pool
            // a page names (#21: the pool user can put another pool's page, or its own, at the
            // status socket's path, and a web server passes on whatever answers there).
            let pool = config
                .fpm_pool
                .clone()
                .or_else(|| match &config.probe.target {
                    Target::FastCgi {
                        address: Address::Unix(path),
                        ..
                    } => instance.pool_listening_at(Some(path), None),
                    Target::FastCgi {
                        address: Address::Tcp { port, .. },
                        ..
                    } => instance.pool_listening_at(None, Some(*port)),
                    Target::Http(_) => instance.only_pool(),
                });
            let page = self
                .status_page()
                .and_then(|status| {
                    load::from_status(status, config.probe.timeout, config.stuck_after)
                })
                // A page about another pool says nothing of this one (#21).
                .filter(|page| match (&page.pool, &pool) {
                    (Some(said), Some(pool)) => said == pool,
                    _ => true,
                });
            let seen = load::from_proc(&instance, &procs, pool.as_deref());
            self.judged_pool.clone_from(&pool);
            // No status page, or one that does not answer: /proc alone judges.
            match page {
                Some(page) => Some(load::believed(page, seen)),
                None => seen,
            }
        } else {
            None
        };
        let found = Found {
            master: instance.master(&procs).map(|p| p.pid),
            processes: instance.family(&procs).into_iter().cloned().collect(),
            plan,
            load,
        };
        self.instance = Some(instance);
        Ok(found)
    }

    fn kill_stuck(&mut self, pids: &[u32]) -> Result<StuckKill> {
        // Only workers of the pool judged, known from the target's config, never from a page.
        let Some(pool) = self.judged_pool.as_deref() else {
            bail!(
                "not killed: the pool the target is of is not known (a heartbeat through a web \
                 server in front of a master of several pools; a status page's pool is a claim)"
            );
        };
        self.instance()?.kill_stuck(pids, Some(pool))
    }

    fn test_config(&mut self) -> Result<()> {
        self.instance()?.test_config(self.config.restart_timeout)
    }

    fn take(&mut self, step: Step) -> Result<()> {
        self.instance()?.take(step, self.config.restart_timeout)
    }

    fn relaunch_cgi(&mut self, done: &mut Relaunch) {
        fpm::relaunch_cgi(
            self.config.cgi_service.as_deref(),
            self.config.restart_timeout,
            done,
        );
    }

    fn master_pid(&mut self) -> Option<u32> {
        let procs = fpm::snapshot().ok()?;
        self.instance.as_ref()?.master(&procs).map(|p| p.pid)
    }

    fn failing_replicas(&mut self) -> FoundReplicas {
        let mut found = FoundReplicas::default();
        let Some(pool) = &self.config.pool else {
            return found;
        };
        for replica in pool.replicas.iter().filter(|r| !pools::answers(r)) {
            if let Ok((processes, logs)) = pools::evidence_of(replica) {
                found.processes.extend(processes);
                self.replica_logs.extend(logs);
            }
            found.failing.push(replica.name.clone());
        }
        found
    }

    fn relaunch_replica(&mut self, name: &str) -> Result<Relaunch> {
        let replica = self
            .config
            .pool
            .iter()
            .flat_map(|pool| &pool.replicas)
            .find(|r| r.name == name)
            .with_context(|| format!("no replica {name}"))?;
        pools::relaunch_replica(replica, self.config.restart_timeout)
    }

    fn evidence(&mut self, report: &Report, status_page: Option<&str>) -> String {
        let logs = match &self.instance {
            Some(instance) => instance.log_files(),
            None => self.replica_logs.clone(),
        };
        let found = evidence::gather(status_page, &logs);
        evidence::record(&self.config.evidence_dir, report, &found)
    }

    fn hostname(&self) -> String {
        rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned()
    }

    fn send(&mut self, alert: &Alert) -> Result<()> {
        let config = self.config;
        let from = match &config.from {
            Some(from) => from.clone(),
            None => alert::default_sender(&self.hostname())?,
        };
        alert::send(&config.transport, &from, &config.recipients, alert)
    }
}

/// A page of the heartbeat's web server that no PHP serves: the same scheme and authority, a path
/// that names no script (nginx answers it itself, 404 or 403, while its workers run).
fn outside_php(heartbeat: &str) -> String {
    let after_scheme = heartbeat.find("://").map_or(0, |at| at + 3);
    let end = heartbeat[after_scheme..]
        .find('/')
        .map_or(heartbeat.len(), |at| after_scheme + at);
    format!(
        "{}/.well-known/php-relaunch-web-server-check",
        &heartbeat[..end]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_outside_php_is_on_the_heartbeats_server() {
        assert_eq!(
            outside_php("http://127.0.0.1:8889/php-heartbeat.php?x=1"),
            "http://127.0.0.1:8889/.well-known/php-relaunch-web-server-check"
        );
        assert_eq!(
            outside_php("http://[::1]"),
            "http://[::1]/.well-known/php-relaunch-web-server-check"
        );
    }
}
