//! The [`Host`] of one target in a `watch` run: the real machine (`System`), except that the first
//! probe is the answer already got by the concurrent probes, mail is collected for the run's one
//! mail, and an alert-only target's php-fpm is never touched.

use std::time::SystemTime;

use anyhow::{Result, bail};

use crate::alert::Alert;
use crate::config::Config;
use crate::fpm::{Relaunch, Step, StuckKill};
use crate::ondemand::Dormancy;
use crate::probe::{Answer, Verdict};
use crate::report::Report;
use crate::run::host::{Found, FoundReplicas, Host};
use crate::run::system::System;
use crate::state::State;

/// One target's view of the machine during a `watch` run.
pub struct WatchHost<'a> {
    inner: System<'a>,
    /// The answer of the concurrent probe, used by the pipeline's first probe.
    first: Option<Verdict>,
    dormancy: Dormancy,
    /// Why this target's php-fpm is not to be relaunched, if so.
    alert_only: Option<String>,
    /// The alerts the pipeline asked to send: they go out in the run's one mail.
    pub alerts: Vec<Alert>,
}

impl<'a> WatchHost<'a> {
    /// `first` is what the concurrent probe got (`None`: probe when asked).
    pub fn new(
        config: &'a Config,
        first: Option<Verdict>,
        dormancy: Dormancy,
        alert_only: Option<String>,
    ) -> WatchHost<'a> {
        WatchHost {
            inner: System::new(config),
            first,
            dormancy,
            alert_only,
            alerts: Vec::new(),
        }
    }
}

impl Host for WatchHost<'_> {
    fn now(&self) -> SystemTime {
        self.inner.now()
    }

    fn dormancy(&mut self) -> Dormancy {
        self.dormancy.clone()
    }

    fn probe(&mut self, state: &mut State) -> Verdict {
        match self.first.take() {
            Some(verdict) => {
                self.inner.probed(&verdict.answer);
                verdict
            }
            None => self.inner.probe(state),
        }
    }

    fn web_server_hangs(&mut self) -> bool {
        self.inner.web_server_hangs()
    }

    fn fpm_answers(&mut self) -> Option<String> {
        self.inner.fpm_answers()
    }

    fn verify(&mut self) -> (bool, Answer) {
        self.inner.verify()
    }

    fn paused(&self) -> bool {
        self.inner.paused()
    }

    fn inspect(&mut self) -> Result<Found> {
        if let Some(why) = &self.alert_only {
            bail!("alert only, php-fpm left alone: {why}");
        }
        self.inner.inspect()
    }

    fn kill_stuck(&mut self, pids: &[u32]) -> Result<StuckKill> {
        self.inner.kill_stuck(pids)
    }

    fn test_config(&mut self) -> Result<()> {
        self.inner.test_config()
    }

    fn take(&mut self, step: Step) -> Result<()> {
        self.inner.take(step)
    }

    fn relaunch_cgi(&mut self, done: &mut Relaunch) {
        self.inner.relaunch_cgi(done);
    }

    fn master_pid(&mut self) -> Option<u32> {
        self.inner.master_pid()
    }

    fn failing_replicas(&mut self) -> FoundReplicas {
        self.inner.failing_replicas()
    }

    fn relaunch_replica(&mut self, name: &str) -> Result<Relaunch> {
        self.inner.relaunch_replica(name)
    }

    fn evidence(&mut self, report: &Report, status_page: Option<&str>) -> String {
        self.inner.evidence(report, status_page)
    }

    fn hostname(&self) -> String {
        self.inner.hostname()
    }

    fn send(&mut self, alert: &Alert) -> Result<()> {
        self.alerts.push(alert.clone());
        Ok(())
    }
}
