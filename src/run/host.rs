//! The seam between a run's decisions and the machine: everything a run reads from or does to the
//! host goes through [`Host`]. `System` is the real one; the pipeline's tests script a fake.

use std::time::SystemTime;

use anyhow::Result;

use crate::alert::Alert;
use crate::fpm::{Plan, Proc, Relaunch, Step, StuckKill};
use crate::load::Load;
use crate::ondemand::Dormancy;
use crate::probe::{Answer, Verdict};
use crate::report::Report;
use crate::state::State;

/// The php-fpm a relaunch is about, as found before anything is done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Its verified master, if one runs.
    pub master: Option<u32>,
    /// Its processes (master and workers), for the alert.
    pub processes: Vec<Proc>,
    /// What a relaunch would do first.
    pub plan: Plan,
    /// How busy its workers are, when a master runs: from the status page (if `--status` and
    /// believed) or from /proc.
    pub load: Option<Load>,
}

/// A pool's replicas that fail their own ping, as found before anything is done.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FoundReplicas {
    /// Their names, `POOL/N`.
    pub failing: Vec<String>,
    /// Their processes, for the alert.
    pub processes: Vec<Proc>,
}

/// What a run needs of the machine.
pub trait Host {
    /// The wall clock.
    fn now(&self) -> SystemTime;
    /// `--on-demand`: whether a php-fpm holds the pool's socket, and if not, whether the socket still
    /// waits for requests; asked without connecting.
    fn dormancy(&mut self) -> Dormancy;
    /// Probes the heartbeat once, judging a status page against the counters in `state`.
    fn probe(&mut self, state: &mut State) -> Verdict;
    /// After the heartbeat through the web server timed out: whether the web server also gives no
    /// answer in time for a page outside PHP (any status, even 404, says it is not hung).
    fn web_server_hangs(&mut self) -> bool;
    /// After the heartbeat through the web server timed out: the php-fpm sockets asked, when every
    /// pool of the verified php-fpm answers on its own socket (the web server is the one hung).
    fn fpm_answers(&mut self) -> Option<String>;
    /// Asks the heartbeat again until it is healthy or `--restart-timeout` passes: whether it is,
    /// and its last answer.
    fn verify(&mut self) -> (bool, Answer);
    /// Whether the pause file exists.
    fn paused(&self) -> bool;
    /// Finds the php-fpm to relaunch.
    fn inspect(&mut self) -> Result<Found>;
    /// Kills the workers named stuck that are verified workers of the found master.
    fn kill_stuck(&mut self, pids: &[u32]) -> Result<StuckKill>;
    /// Runs php-fpm's own config test.
    fn test_config(&mut self) -> Result<()>;
    /// Takes one step of a relaunch on the found php-fpm.
    fn take(&mut self, step: Step) -> Result<()>;
    /// PHP_CGI=1: kills the php-cgi processes and starts their service, booking it in `done`.
    fn relaunch_cgi(&mut self, done: &mut Relaunch);
    /// The found php-fpm's master now.
    fn master_pid(&mut self) -> Option<u32>;
    /// `--pool`: the replicas that fail their own ping.
    fn failing_replicas(&mut self) -> FoundReplicas;
    /// `--pool`: relaunches one replica, checked by its own ping.
    fn relaunch_replica(&mut self, name: &str) -> Result<Relaunch>;
    /// Keeps the evidence of the run so far (with the status page as read, if any); the text for
    /// the alert.
    fn evidence(&mut self, report: &Report, status_page: Option<&str>) -> String;
    /// This host's name, for the alert.
    fn hostname(&self) -> String;
    /// Sends the alert.
    fn send(&mut self, alert: &Alert) -> Result<()>;
}
