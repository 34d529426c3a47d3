//! The overall deadline of a run (`--run-timeout`, #13). Every step has a deadline of its own; this
//! one is the backstop for whatever was missed, so that nothing, however it hangs, holds the lock
//! for ever and keeps every later run from watching. A thread waits for the deadline; if the run is
//! still going then, it calls the expiry action, which records the fact and ends the process. The
//! thread is started the first time a deadline is armed: a healthy check, which arms none, starts no
//! thread.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread;
use std::time::Instant;

/// The deadline shared with the waiting thread.
#[derive(Default)]
struct Shared {
    until: Mutex<Option<Instant>>,
    changed: Condvar,
}

/// What runs when an armed deadline passes.
type Expire = Box<dyn FnOnce() + Send>;

/// A deadline that can be armed and disarmed around each check.
pub struct Watchdog {
    shared: Arc<Shared>,
    /// Until the first `arm`: the expiry action, for the thread that `arm` starts.
    expire: Mutex<Option<Expire>>,
}

impl Watchdog {
    /// A disarmed watchdog. `expire` runs once, on its own thread, if an armed deadline passes.
    pub fn new(expire: impl FnOnce() + Send + 'static) -> Watchdog {
        Watchdog {
            shared: Arc::new(Shared::default()),
            expire: Mutex::new(Some(Box::new(expire))),
        }
    }

    /// Sets the deadline to `until`, starting the waiting thread the first time.
    pub fn arm(&self, until: Instant) {
        self.set(Some(until));
        let expire = self
            .expire
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(expire) = expire {
            let waiting = Arc::clone(&self.shared);
            thread::spawn(move || wait(&waiting, expire));
        }
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

/// Waits, on its own thread, until an armed deadline passes; then runs `expire`.
fn wait(waiting: &Shared, expire: Expire) {
    {
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
    }
    expire();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Duration;

    #[test]
    fn fires_once_armed_and_past_and_not_when_disarmed() {
        let (fired, heard) = mpsc::channel();
        let watchdog = Watchdog::new(move || fired.send(()).unwrap());
        watchdog.arm(Instant::now() + Duration::from_millis(50));
        watchdog.disarm();
        assert!(heard.recv_timeout(Duration::from_millis(200)).is_err());
        watchdog.arm(Instant::now() + Duration::from_millis(50));
        heard.recv_timeout(Duration::from_secs(5)).unwrap();
    }
}
