//! The run's alert: composed by the pipeline, pending in the state while the run sends it without
//! the lock (#19), delivered, and its outcome said in the report.

use super::Host;
use crate::alert;
use crate::config::Config;
use crate::policy::{self, Course};
use crate::report::{Mail, Report};
use crate::state::{Incident, PendingMail, State};
use crate::stdout::errln;

/// An alert composed by a run, to be sent once the run has let go of the lock (#19), and booked
/// with [`policy::mail_outcome`] once it is known whether it went.
#[derive(Debug)]
pub struct Outgoing {
    /// The mail.
    pub alert: alert::Alert,
    /// As it stands in the state meanwhile.
    pub pending: PendingMail,
}

/// What the run's alert is about, for booking it.
pub(super) struct Alert {
    giving_up: bool,
    /// The incident open before the control acted.
    incident: Option<Incident>,
    /// The start of the incident the alert tells of.
    about: Option<i64>,
}

impl Alert {
    /// Taken before the control acts: the incident open now, or the one that just ended.
    pub(super) fn of(course: &Course, state: &State) -> Alert {
        let incident = state.incident.clone();
        let about = match course {
            Course::Recovered(ended) => Some(ended.since),
            _ => incident.as_ref().map(|i| i.since),
        };
        Alert {
            giving_up: matches!(course, Course::Held(policy::Hold::GiveUp { .. })),
            incident,
            about,
        }
    }
}

/// Composes the run's alert, booked only once it is sent (or nobody is to get it): a failed one is
/// due again on the next run of the incident, the giving-up one included (#19). The run sends it
/// without the lock, so meanwhile it stands in the state as pending: a run that comes before the
/// outcome is booked does not send that incident's alert again.
pub(super) fn tell(
    config: &Config,
    state: &mut State,
    host: &mut impl Host,
    report: &Report,
    alert: Alert,
    now: i64,
) -> Option<Outgoing> {
    if config.recipients.is_empty() {
        policy::alert_sent(state);
        if alert.giving_up {
            state.give_up_unmailed = false;
        }
        return None;
    }
    if policy::mail_on_its_way(state, alert.about, now) {
        return None;
    }
    // A relaunch that healed the incident ended it (or, a hook's, marked it healed): if its mail
    // fails, the incident is kept open as healed and untold, so the next healthy run mails its end.
    let healed = state.incident.as_ref().is_none_or(|i| i.healed);
    let reopen = alert.incident.filter(|_| healed).map(|mut i| {
        i.healed = true;
        i
    });
    let until = now.saturating_add(i64::try_from(config.run_timeout.as_secs()).unwrap_or(i64::MAX));
    let pending = PendingMail {
        at: now,
        until: until.saturating_add(1),
        incident: alert.about,
        giving_up: alert.giving_up,
        reopen,
    };
    state.mails_pending.push(pending.clone());
    Some(Outgoing {
        alert: alert::compose(&host.hostname(), report),
        pending,
    })
}

/// Sends the alert; whether it went. A failure is told in the report's own `mail_error=` (not in
/// `error=`, which tells of php-fpm: `state=healthy … error="mail: …"` read as a contradiction) and
/// on stderr, never fatal.
pub fn deliver(host: &mut impl Host, report: &mut Report, alert: &alert::Alert) -> bool {
    match host.send(alert) {
        Ok(()) => {
            report.mail = Mail::Sent;
            true
        }
        Err(err) => {
            // The mail server's words: escaped here for stderr, by the renderers for the log.
            let err = format!("{err:#}");
            errln!("php-relaunch: mail: {}", crate::escape::field(&err));
            report.mail = Mail::Failed;
            report.mail_error = Some(err);
            false
        }
    }
}
