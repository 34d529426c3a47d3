//! The overall deadline of a run (`--run-timeout`, #13). Every step has a deadline of its own; this
//! one is the backstop for whatever was missed, so that nothing, however it hangs, holds the lock
//! for ever and keeps every later run from watching. One thread per process waits for whichever
//! deadline is armed; if the run is still going then, it calls that run's expiry action, which
//! records the fact and ends the process. The thread is started the first time a deadline is armed
//! (a healthy check, which arms none, starts none), and is the only one however many runs the
//! process makes: the long-lived hook makes one run per event (#18), and a thread or a handle kept
//! per run would grow until it hit a limit.

use crate::stdout::errln;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, Once, PoisonError};
use std::thread;
use std::time::Instant;

/// What runs when an armed deadline passes.
type Expire = Box<dyn FnOnce() + Send>;

/// The deadline armed now, with its run's expiry action.
struct Armed {
    /// Which watchdog armed it.
    owner: u64,
    until: Instant,
    expire: Expire,
}

/// The process's one deadline, shared with its waiting thread.
static ARMED: Mutex<Option<Armed>> = Mutex::new(None);
static CHANGED: Condvar = Condvar::new();
static STARTED: Once = Once::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

fn armed() -> MutexGuard<'static, Option<Armed>> {
    ARMED.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A run's deadline, armed and disarmed around each check. One run at a time per process: arming
/// one watchdog while another's deadline is armed replaces it.
pub struct Watchdog {
    id: u64,
    /// While disarmed: the expiry action, for the next `arm`.
    expire: Mutex<Option<Expire>>,
}

impl Watchdog {
    /// A disarmed watchdog. `expire` runs once, on the deadline thread, if an armed deadline passes.
    /// It is dropped with the watchdog, so nothing it holds (a log handle) outlives the run.
    pub fn new(expire: impl FnOnce() + Send + 'static) -> Watchdog {
        Watchdog {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            expire: Mutex::new(Some(Box::new(expire))),
        }
    }

    /// Sets the deadline to `until`, starting the process's deadline thread the first time.
    pub fn arm(&self, until: Instant) {
        STARTED.call_once(|| {
            // Should the thread not start (no memory, a task limit), the run goes on without its
            // backstop rather than not at all: every step still has its own deadline.
            if let Err(err) = thread::Builder::new()
                .name("run-deadline".into())
                .spawn(wait)
            {
                errln!("php-relaunch: starting the run's deadline thread: {err}");
            }
        });
        let mut armed = armed();
        let expire = match armed.take() {
            Some(mine) if mine.owner == self.id => Some(mine.expire),
            // Another run's deadline (there is none while runs follow one another): replaced.
            _ => self.own().take(),
        };
        if let Some(expire) = expire {
            *armed = Some(Armed {
                owner: self.id,
                until,
                expire,
            });
        }
        drop(armed);
        CHANGED.notify_one();
    }

    /// Clears the deadline: the check it guarded has ended. The expiry action comes back here, for
    /// the next `arm`.
    pub fn disarm(&self) {
        let mut armed = armed();
        if armed.as_ref().is_some_and(|a| a.owner == self.id)
            && let Some(mine) = armed.take()
        {
            *self.own() = Some(mine.expire);
        }
        drop(armed);
        CHANGED.notify_one();
    }

    fn own(&self) -> MutexGuard<'_, Option<Expire>> {
        self.expire.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for Watchdog {
    /// Disarms, and drops the expiry action with whatever it holds.
    fn drop(&mut self) {
        self.disarm();
    }
}

/// The deadline thread: for ever, waits until an armed deadline passes, then runs its expiry.
fn wait() {
    loop {
        let expire = {
            let mut armed = armed();
            loop {
                armed = match armed.as_ref().map(|a| a.until) {
                    None => CHANGED.wait(armed).unwrap_or_else(PoisonError::into_inner),
                    Some(at) if Instant::now() >= at => break,
                    Some(at) => {
                        CHANGED
                            .wait_timeout(armed, at.saturating_duration_since(Instant::now()))
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                };
            }
            armed.take().map(|a| a.expire)
        };
        if let Some(expire) = expire {
            expire();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    // One test: the deadline is the process's, so tests of it must not run side by side.
    #[test]
    fn fires_once_armed_and_past_not_when_disarmed_and_each_run_lets_go_of_its_action() {
        let (fired, heard) = mpsc::channel();
        let watchdog = Watchdog::new(move || fired.send(()).unwrap());
        watchdog.arm(Instant::now() + Duration::from_millis(50));
        watchdog.disarm();
        assert!(heard.recv_timeout(Duration::from_millis(200)).is_err());
        watchdog.arm(Instant::now() + Duration::from_millis(50));
        heard.recv_timeout(Duration::from_secs(5)).unwrap();

        // Many runs, each armed and dropped: each expiry action is dropped with its run, so what
        // it holds (the log's handle) is released.
        let held = std::sync::Arc::new(());
        for _ in 0..200 {
            let copy = std::sync::Arc::clone(&held);
            let run = Watchdog::new(move || drop(copy));
            run.arm(Instant::now() + Duration::from_mins(1));
            run.disarm();
            run.arm(Instant::now() + Duration::from_mins(1));
        }
        assert_eq!(std::sync::Arc::strong_count(&held), 1);
    }
}
