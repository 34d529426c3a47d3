//! What one run did, as data: the pipeline's last stage fills it in, and the log line (`journal`),
//! the alert mail (`alert`), the dry run's output and the exit code are all rendered from it.

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};

use crate::exit::Exit;
use crate::fpm::{Plan, Proc, Step};
use crate::probe::Answer;

/// One run, start to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// When the check started.
    pub time: DateTime<FixedOffset>,
    /// The heartbeat target, as written.
    pub target: String,
    /// `watch`: the php-fpm master the target belongs to (its instance key), when known (#21).
    pub master: Option<String>,
    /// `watch`: the php-fpm pool the target is, when known.
    pub pool: Option<String>,
    /// The first answer; `None` when the run ended before judging one (`--run-timeout`).
    pub answer: Option<Answer>,
    /// How long the first answer took.
    pub latency: Duration,
    /// Where the run ended.
    pub state: RunState,
    /// What was done.
    pub action: Action,
    /// The master before the relaunch.
    pub old_pid: Option<u32>,
    /// The master after it.
    pub new_pid: Option<u32>,
    /// How long the relaunch took, verification included.
    pub took: Option<Duration>,
    /// What became of the alert.
    pub mail: Mail,
    /// Why the alert could not be sent (`mail_error=`): apart from `error`, which tells of php-fpm.
    pub mail_error: Option<String>,
    /// What started the run.
    pub trigger: Trigger,
    /// What went wrong on the way, or what explains the state; one line in the log.
    pub error: Option<String>,
    /// Whether this run's alert is due (one per incident, plus its giving-up and its end).
    pub alert: bool,
    /// The php-fpm processes as they were before anything was done, for the alert.
    pub processes: Vec<Proc>,
    /// The evidence text, for the alert.
    pub evidence: Option<String>,
}

impl Report {
    /// A report of a run that has judged `answer` (`None`: it asked nothing, as for a sleeping
    /// on-demand pool) and done nothing yet: its error is the answer's own detail, until something
    /// more telling replaces it.
    pub fn new(
        time: DateTime<FixedOffset>,
        target: String,
        answer: Option<Answer>,
        latency: Duration,
    ) -> Report {
        Report {
            time,
            target,
            master: None,
            pool: None,
            error: answer.as_ref().and_then(Answer::detail).map(str::to_owned),
            answer,
            latency,
            state: RunState::Down,
            action: Action::None,
            old_pid: None,
            new_pid: None,
            took: None,
            mail: Mail::None,
            mail_error: None,
            trigger: Trigger::Cron,
            alert: false,
            processes: Vec::new(),
            evidence: None,
        }
    }

    /// A report of a run that was ended by its deadline (`--run-timeout`) after `took`, before it could
    /// say more.
    pub fn ended(
        time: DateTime<FixedOffset>,
        target: String,
        took: Duration,
        error: String,
    ) -> Report {
        Report {
            took: Some(took),
            error: Some(error),
            ..Report::new(time, target, None, Duration::ZERO)
        }
    }

    /// Adds `text` to what the line says went wrong, after what it says already.
    pub fn note(&mut self, text: impl Into<String>) {
        let text = text.into();
        self.error = Some(match self.error.take() {
            Some(earlier) => format!("{earlier}; {text}"),
            None => text,
        });
    }

    /// The `verdict=` token: the answer, or `-`.
    pub fn verdict(&self) -> String {
        self.answer
            .as_ref()
            .map_or_else(|| "-".to_owned(), ToString::to_string)
    }

    /// The process's exit code for this run.
    pub fn exit(&self) -> Exit {
        self.state.exit()
    }
}

/// Where a run ended: the log's `state=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Healthy, and the spent budget was restored.
    Healthy,
    /// Relaunched (or its stuck workers killed), and the heartbeat is healthy again.
    Relaunched,
    /// Healthy again after an incident.
    Recovered,
    /// Failing and not brought back.
    Down,
    /// The web server does not answer: php-fpm left alone.
    WebServerDown,
    /// The heartbeat timed out, but php-fpm answers on its own sockets: the web server is hung, php-fpm
    /// left alone.
    WebServerHung,
    /// A status no relaunch is for.
    UnexpectedStatus,
    /// php-fpm answered wrongly (`--expect`, a status threshold).
    Unhealthy,
    /// Below `--failures`.
    Failing,
    /// The pause file exists.
    Paused,
    /// The previous relaunch's recovery window is open.
    Cooldown,
    /// Every worker busy; not relaunched without `--relaunch-saturated`.
    Saturated,
    /// php-fpm's config test failed; the running master left alone.
    ConfigError,
    /// An on-demand pool sleeps with its socket held, or `idle-stop` put it to sleep.
    Idle,
    /// An on-demand pool sleeps and its socket is gone, stale or not listening: an outage.
    SocketLost,
}

impl RunState {
    /// The exit code a run ending here has.
    pub fn exit(self) -> Exit {
        match self {
            RunState::Healthy | RunState::Recovered | RunState::Idle => Exit::Healthy,
            RunState::Relaunched => Exit::Recovered,
            RunState::WebServerDown
            | RunState::WebServerHung
            | RunState::UnexpectedStatus
            | RunState::Unhealthy
            | RunState::Saturated
            | RunState::SocketLost => Exit::Alerted,
            RunState::Down
            | RunState::Failing
            | RunState::Paused
            | RunState::Cooldown
            | RunState::ConfigError => Exit::Failing,
        }
    }
}

impl fmt::Display for RunState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RunState::Healthy | RunState::Relaunched => "healthy",
            RunState::Recovered => "recovered",
            RunState::Down => "down",
            RunState::WebServerDown => "web-server-down",
            RunState::WebServerHung => "web-server-hung",
            RunState::UnexpectedStatus => "unexpected-status",
            RunState::Unhealthy => "unhealthy",
            RunState::Failing => "failing",
            RunState::Paused => "paused",
            RunState::Cooldown => "cooldown",
            RunState::Saturated => "saturated",
            RunState::ConfigError => "config-error",
            RunState::Idle => "idle",
            RunState::SocketLost => "socket-lost",
        })
    }
}

/// What a run did: the log's `action=`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Nothing.
    None,
    /// Healthy runs restored the spent budget.
    BudgetRestored,
    /// The budget is spent: this run gave up relaunching.
    GaveUp,
    /// Workers stuck in one request were killed.
    KillStuck,
    /// php-fpm was relaunched in these steps (`restart`, `kill+start`, … `+cgi-kill+cgi-start`).
    Relaunch(Vec<Step>),
    /// These replicas of a pool were relaunched, each in its steps.
    Replicas(Vec<(String, Vec<Step>)>),
    /// Dry run: the relaunch that would be done.
    Would(Plan),
    /// Dry run, pool: the replicas that would be relaunched.
    WouldReplicas(Vec<String>),
    /// `idle-stop` stopped an idle on-demand pool.
    IdleStop,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let joined = |steps: &[Step]| {
            steps
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("+")
        };
        match self {
            Action::None => f.write_str("none"),
            Action::BudgetRestored => f.write_str("budget-restored"),
            Action::GaveUp => f.write_str("gave-up"),
            Action::KillStuck => f.write_str("kill-stuck"),
            Action::Relaunch(steps) if steps.is_empty() => f.write_str("none"),
            Action::Relaunch(steps) => f.write_str(&joined(steps)),
            Action::Replicas(replicas) if replicas.is_empty() => f.write_str("none"),
            Action::Replicas(replicas) => {
                let each: Vec<String> = replicas
                    .iter()
                    .map(|(name, steps)| format!("{name}:{}", joined(steps)))
                    .collect();
                f.write_str(&each.join(","))
            }
            Action::Would(plan) => write!(f, "would-{plan}"),
            Action::WouldReplicas(names) => write!(f, "would-relaunch:{}", names.join(",")),
            Action::IdleStop => f.write_str("idle-stop"),
        }
    }
}

/// What became of a run's alert: the log's `mail=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mail {
    /// None was due, or nobody is to get it.
    None,
    /// Sent.
    Sent,
    /// Sending failed (the error says why).
    Failed,
}

impl fmt::Display for Mail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mail::None => "none",
            Mail::Sent => "sent",
            Mail::Failed => "failed",
        })
    }
}

/// What started a run: the log's `trigger=`, `events=` and `ignored=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// Cron, mcron or a person: the run was started to look.
    Cron,
    /// `hook`: nginx (or Apache) served 502s or 504s.
    Hook {
        /// The events this run answers.
        events: u64,
        /// What arrived since the hook's previous line and was not an event.
        ignored: u64,
    },
}

impl Trigger {
    /// Whether a run so started may change policy's memory beyond its own relaunch: restore a spent
    /// budget, count toward `--recover-after`, end an incident, move the status counters' baseline.
    /// A hook run's datagram can come from anyone in the socket's group (#18), so only cron's (or a
    /// person's) runs do.
    pub fn is_trusted(self) -> bool {
        self == Trigger::Cron
    }
}

impl fmt::Display for Trigger {
    /// `trigger=… events=N`, and ` ignored=N` when something was ignored.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Cron => f.write_str("trigger=cron events=0"),
            Trigger::Hook { events, ignored: 0 } => write!(f, "trigger=hook events={events}"),
            Trigger::Hook { events, ignored } => {
                write!(f, "trigger=hook events={events} ignored={ignored}")
            }
        }
    }
}
