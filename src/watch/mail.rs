//! The run's one mail per set of recipients (#21): every pool with a problem and what was done, sent
//! after every master's lock is let go, and each pool's alert booked afterwards in its state, under
//! its master's lock, as a classic run books its own (#19).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use lettre::Address;

use super::run::Done;
use crate::alert::{self, Alert};
use crate::config::watch::{Target, WatchConfig};
use crate::health;
use crate::lock;
use crate::policy;
use crate::report::{Mail, Report};
use crate::state::PendingMail;
use crate::stdout::errln;

/// One mail per run per set of recipients, listing every pool with a problem and what was done. A
/// mail that fails is said in each line's `mail=` and on stderr; each alert's outcome is then booked
/// in its target's state, so a failed one is sent again by the next run (#19).
pub fn send(config: &WatchConfig, targets: &[Target], done: &mut [Done]) {
    let mut by_recipients: BTreeMap<Vec<String>, (Vec<Address>, Vec<usize>)> = BTreeMap::new();
    for (at, d) in done.iter().enumerate() {
        let recipients = &targets[d.index].config.recipients;
        if !d.alert || recipients.is_empty() || d.report.is_none() {
            continue;
        }
        let mut key: Vec<String> = recipients.iter().map(ToString::to_string).collect();
        key.sort();
        by_recipients
            .entry(key)
            .or_insert_with(|| (recipients.clone(), Vec::new()))
            .1
            .push(at);
    }
    // Whether each one's alert went; an alert in no mail did not.
    let mut outcome = vec![false; done.len()];
    let host = rustix::system::uname()
        .nodename()
        .to_string_lossy()
        .into_owned();
    for (recipients, members) in by_recipients.into_values() {
        let reports: Vec<&Report> = members
            .iter()
            .filter_map(|&at| done[at].report.as_ref())
            .collect();
        let alert = compose(&host, &reports);
        let sent = match &config.from {
            Some(from) => Ok(from.clone()),
            None => alert::default_sender(&host),
        }
        .and_then(|from| alert::send(&config.transport, &from, &recipients, &alert));
        let said = match &sent {
            Ok(()) => Mail::Sent,
            Err(err) => {
                errln!(
                    "php-relaunch: {}",
                    crate::escape::field(&format!("mail: {err:#}"))
                );
                Mail::Failed
            }
        };
        for &at in &members {
            outcome[at] = sent.is_ok();
            if let Some(report) = done[at].report.as_mut() {
                report.mail = said;
                if let Err(err) = &sent {
                    // In its own field, as a classic run's (#19): `error=` tells of php-fpm.
                    report.mail_error = Some(format!("{err:#}"));
                }
            }
        }
    }
    let booked: Vec<(usize, &PendingMail, bool)> = done
        .iter()
        .zip(outcome)
        .filter_map(|(d, sent)| Some((d.index, d.pending.as_ref()?, sent)))
        .collect();
    book(targets, &booked);
}

/// One mail of several reports: the subject counts them, the body has each one's alert text.
fn compose(host: &str, reports: &[&Report]) -> Alert {
    let one: Vec<Alert> = reports.iter().map(|r| alert::compose(host, r)).collect();
    if let [only] = one.as_slice() {
        return only.clone();
    }
    let pools: Vec<String> = reports
        .iter()
        .map(|r| r.pool.clone().unwrap_or_else(|| r.target.clone()))
        .collect();
    let mut body = format!(
        "{} pools had a problem in this run: {}\n",
        reports.len(),
        pools.join(", ")
    );
    for (report, alert) in reports.iter().zip(&one) {
        let _ = write!(
            body,
            "\n==== {} ====\n{}\n",
            report.pool.as_deref().unwrap_or(&report.target),
            alert.subject
        );
        body.push_str(&alert.body);
    }
    Alert {
        subject: crate::escape::field(&format!(
            "php-relaunch on {host}: {} pools with a problem ({})",
            reports.len(),
            pools.join(", ")
        )),
        body,
    }
}

/// How long booking a mail's outcome waits for a master's lock that another run holds.
const BOOKING_WAIT: Duration = Duration::from_secs(5);

/// Books the outcome of the run's mails in each target's state, under its master's lock (waited
/// for at most [`BOOKING_WAIT`]): a sent alert is the incident's, a failed one is due again on the
/// next run, an incident the relaunch healed kept open as healed and untold (#19). A state whose
/// lock stays busy keeps the alert pending: the next run counts it as failed and sends it again.
fn book(targets: &[Target], booked: &[(usize, &PendingMail, bool)]) {
    let mut by_lock: BTreeMap<&Path, Vec<(usize, &PendingMail, bool)>> = BTreeMap::new();
    for &(index, pending, sent) in booked {
        by_lock
            .entry(&targets[index].config.lock)
            .or_default()
            .push((index, pending, sent));
    }
    for (lock_path, members) in by_lock {
        let Some(Ok(mut lock)) = lock::acquire_within(lock_path, Instant::now() + BOOKING_WAIT)
        else {
            errln!(
                "php-relaunch: could not take the lock '{}' again to book the alert's outcome: it \
                 counts as failed on the next run",
                lock_path.display()
            );
            continue;
        };
        lock.say_holder(&lock::holder("booking a mail"));
        for (index, pending, sent) in members {
            let path = &targets[index].config.probe.state;
            let (mut state, before) = health::load_state(path);
            policy::mail_outcome(&mut state, pending, sent);
            health::save_state(path, &state, &before);
        }
    }
}
