//! Relaunching: the plan, the steps, and the one escalation every relaunch follows (the first step;
//! if the heartbeat is not back, SIGKILL of the family and a start), written over two functions so
//! the same rule serves the service, a direct master and a pool's replica, and is tested without
//! any of them.

use std::ffi::OsStr;
use std::fmt;
use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use rustix::process::Signal;

use super::procs::{self, Sent};
use super::{service_command, service_exists, snapshot, trust};

/// What a relaunch will do first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// No master runs: start one.
    Start,
    /// A master runs: restart it through the service (or TERM and start it directly).
    Restart,
    /// A master or worker is stopped, so it would ignore QUIT and TERM and the init script would
    /// wait out its whole schedule: SIGKILL the family and start afresh.
    KillStart,
}

impl Plan {
    /// Its steps.
    pub fn steps(self) -> &'static [Step] {
        match self {
            Plan::Start => &[Step::Start],
            Plan::Restart => &[Step::Restart],
            Plan::KillStart => &[Step::Kill, Step::Start],
        }
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.steps().iter().map(|s| s.as_str()).collect();
        f.write_str(&names.join("+"))
    }
}

/// One step of a relaunch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Start a master.
    Start,
    /// Restart the running master (the service's restart, or TERM and start).
    Restart,
    /// SIGKILL the master and its workers.
    Kill,
    /// PHP_CGI=1: SIGKILL the php-cgi processes.
    CgiKill,
    /// PHP_CGI=1: start the php-cgi service.
    CgiStart,
}

impl Step {
    /// The log's name for it.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Start => "start",
            Step::Restart => "restart",
            Step::Kill => "kill",
            Step::CgiKill => "cgi-kill",
            Step::CgiStart => "cgi-start",
        }
    }
}

/// What a relaunch did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relaunch {
    /// The steps taken, in order.
    pub steps: Vec<Step>,
    /// Whether the heartbeat was healthy at the end.
    pub healthy: bool,
    /// What failed on the way.
    pub errors: Vec<String>,
}

impl Relaunch {
    /// Books a step taken and how it went; whether it went well.
    pub fn step(&mut self, step: Step, result: Result<()>) -> bool {
        self.steps.push(step);
        match result {
            Ok(()) => true,
            Err(err) => {
                let name = step.as_str();
                let error = format!("{name}: {err:#}");
                // A second start that fails like the first says so briefly; the line stays readable.
                if self.errors.contains(&error) {
                    self.errors
                        .push(format!("{name}: failed the same way again"));
                } else {
                    self.errors.push(error);
                }
                false
            }
        }
    }
}

/// What a relaunch acts through: the steps on one php-fpm, and the heartbeat that tells whether they
/// helped.
pub trait Levers {
    /// Takes one step.
    fn take(&mut self, step: Step) -> Result<()>;
    /// Whether the heartbeat is healthy (asked until it is, or its deadline passes).
    fn healthy(&mut self) -> bool;
}

/// Takes `plan`'s steps and checks the result; when that does not bring the heartbeat back,
/// escalates once: SIGKILL of the whole family, a start, and a check again.
pub fn relaunch(plan: Plan, levers: &mut dyn Levers) -> Relaunch {
    let mut done = Relaunch::default();
    let mut ok = true;
    for &step in plan.steps() {
        // A failed kill does not stop the start after it: the start tells whether it mattered.
        ok = done.step(step, levers.take(step)) || step == Step::Kill;
    }
    done.healthy = ok && levers.healthy();
    if !done.healthy {
        done.step(Step::Kill, levers.take(Step::Kill));
        done.healthy = done.step(Step::Start, levers.take(Step::Start)) && levers.healthy();
    }
    done
}

/// Whether an executable is a php-cgi binary (`php-cgi`, `php-cgi8.2`, `php5-cgi`).
fn is_php_cgi(exe: &Path) -> bool {
    exe.file_name()
        .and_then(OsStr::to_str)
        .is_some_and(|name| name.starts_with("php") && name.contains("-cgi"))
}

/// PHP_CGI=1: SIGKILL every process whose executable is a php-cgi binary that only root could have
/// installed (a user's own copy elsewhere is not the system's php-cgi), then start the php-cgi
/// service (`service` given, else the first of php-cgi, php-fastcgi, spawn-fcgi that exists).
pub fn relaunch_cgi(service: Option<&str>, deadline: Duration, done: &mut Relaunch) {
    let killed = snapshot().and_then(|procs| {
        let mut killed = 0;
        let mut failed = None;
        for p in procs.iter().filter(|p| {
            !p.gone
                && p.exe.as_deref().is_some_and(|exe| {
                    is_php_cgi(exe) && trust::binary(exe).is_ok_and(|trusted| trusted == exe)
                })
        }) {
            // One that cannot be signalled does not spare the others.
            match procs::signal(p, Signal::KILL) {
                Ok(Sent::Delivered) => killed += 1,
                Ok(Sent::Gone | Sent::Changed) => {}
                Err(err) => failed = Some(err),
            }
        }
        failed.map_or(Ok(killed), Err)
    });
    if !matches!(killed, Ok(0)) {
        done.step(Step::CgiKill, killed.map(drop));
    }
    let service = service.map(str::to_owned).or_else(|| {
        ["php-cgi", "php-fastcgi", "spawn-fcgi"]
            .into_iter()
            .find(|name| service_exists(name))
            .map(str::to_owned)
    });
    if let Some(service) = service {
        done.step(Step::CgiStart, service_command(&service, "start", deadline));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::bail;

    /// Steps that fail as `failing` says and a heartbeat that answers as `answers` says, one
    /// check after another.
    struct Script<'a> {
        failing: &'a [Step],
        answers: std::slice::Iter<'a, bool>,
        taken: Vec<Step>,
    }

    impl Levers for Script<'_> {
        fn take(&mut self, step: Step) -> Result<()> {
            self.taken.push(step);
            if self.failing.contains(&step) {
                bail!("no");
            }
            Ok(())
        }

        fn healthy(&mut self) -> bool {
            self.answers.next().copied().unwrap_or(false)
        }
    }

    fn run(plan: Plan, failing: &[Step], answers: &[bool]) -> (Relaunch, Vec<Step>) {
        let mut script = Script {
            failing,
            answers: answers.iter(),
            taken: Vec::new(),
        };
        let done = relaunch(plan, &mut script);
        (done, script.taken)
    }

    #[test]
    fn escalation_table() {
        use Step::{Kill, Restart, Start};
        /// Plan, failing steps, heartbeat answers; steps taken, healthy, errors.
        type Case = (
            Plan,
            &'static [Step],
            &'static [bool],
            &'static [Step],
            bool,
            usize,
        );
        let cases: &[Case] = &[
            (Plan::Restart, &[], &[true], &[Restart], true, 0),
            (Plan::Start, &[], &[true], &[Start], true, 0),
            (Plan::KillStart, &[], &[true], &[Kill, Start], true, 0),
            (
                Plan::Restart,
                &[],
                &[false, true],
                &[Restart, Kill, Start],
                true,
                0,
            ),
            (
                Plan::Restart,
                &[Restart],
                &[true],
                &[Restart, Kill, Start],
                true,
                1,
            ),
            (Plan::KillStart, &[Kill], &[true], &[Kill, Start], true, 1),
            (Plan::Start, &[Start], &[], &[Start, Kill, Start], false, 2),
            (
                Plan::Restart,
                &[],
                &[false, false],
                &[Restart, Kill, Start],
                false,
                0,
            ),
        ];
        for &(plan, failing, answers, want_steps, want_healthy, errors) in cases {
            let (done, taken) = run(plan, failing, answers);
            assert_eq!(taken, want_steps, "{plan:?} {failing:?} {answers:?}");
            assert_eq!(done.steps, want_steps);
            assert_eq!(
                done.healthy, want_healthy,
                "{plan:?} {failing:?} {answers:?}"
            );
            assert_eq!(done.errors.len(), errors, "{:?}", done.errors);
        }
        let (done, _) = run(Plan::Start, &[Start], &[]);
        assert_eq!(
            done.errors,
            ["start: no", "start: failed the same way again"]
        );
    }

    #[test]
    fn php_cgi_binaries() {
        for yes in [
            "/usr/bin/php-cgi",
            "/usr/bin/php-cgi8.2",
            "/usr/bin/php5-cgi",
        ] {
            assert!(is_php_cgi(Path::new(yes)), "{yes}");
        }
        for no in ["/usr/sbin/php-fpm8.2", "/usr/bin/php", "/usr/bin/cgi-fcgi"] {
            assert!(!is_php_cgi(Path::new(no)), "{no}");
        }
    }
}
