//! The overall deadline of a run (`--run-timeout`, #13). Every step has a deadline of its own; this
//! one is the backstop for whatever was missed, so that nothing, however it hangs, holds the lock
//! for ever and keeps every later run from watching. A thread waits for the deadline; if the run is
//! still going then, it calls the expiry action, which records the fact and ends the process.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

/// The deadline shared with the waiting thread.
#[derive(Default)]
struct Shared {
    until: Mutex<Option<Instant>>,
    changed: Condvar,
}

/// A deadline that can be armed and disarmed around each check.
pub struct Watchdog {
    shared: Arc<Shared>,
}

impl Watchdog {
    /// Starts the waiting thread, disarmed. `expire` runs on it once, if an armed deadline passes.
    pub fn start(expire: impl FnOnce() + Send + 'static) -> Watchdog {
        let shared = Arc::new(Shared::default());
        let waiting = Arc::clone(&shared);
        thread::spawn(move || {
            let mut until = waiting.until.lock().unwrap_or_else(PoisonError::into_inner);
            loop {
                until = match *until {
                    None => waiting
                        .changed
                        .wait(until)
                        .unwrap_or_else(PoisonError::into_inner),
                    Some(at) if Instant::now() >= at => break,
                    Some(at) => {
                        waiting
                            .changed
                            .wait_timeout(until, at.saturating_duration_since(Instant::now()))
                            .unwrap_or_else(PoisonError::into_inner)
                            .0
                    }
                };
            }
            drop(until);
            expire();
        });
        Watchdog { shared }
    }

    /// Sets the deadline to `until`.
    pub fn arm(&self, until: Instant) {
        self.set(Some(until));
    }

    /// Clears the deadline: the check it guarded has ended.
    pub fn disarm(&self) {
        self.set(None);
    }

    fn set(&self, until: Option<Instant>) {
        *self
            .shared
            .until
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = until;
        self.shared.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn fires_once_armed_and_past_and_not_when_disarmed() {
        let (fired, heard) = mpsc::channel();
        let watchdog = Watchdog::start(move || fired.send(()).unwrap());
        watchdog.arm(Instant::now() + Duration::from_millis(50));
        watchdog.disarm();
        assert!(heard.recv_timeout(Duration::from_millis(200)).is_err());
        watchdog.arm(Instant::now() + Duration::from_millis(50));
        heard.recv_timeout(Duration::from_secs(5)).unwrap();
    }
}
