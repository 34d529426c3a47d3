//! "Ask again every N ms until a deadline": the one loop every wait in php-relaunch is made of.

use std::thread;
use std::time::{Duration, Instant};

/// Calls `attempt` until it returns `Ok`, pausing `every` between calls, for as long as `deadline`
/// has not passed. It is called at least once, and once more at the deadline if a pause would
/// overshoot it, so a slow start is never given less than its full time. At the deadline the last
/// `Err` is returned, so the caller can say what was still wrong.
pub fn poll_until<T, E>(
    deadline: Instant,
    every: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> Result<T, E> {
    loop {
        let last = attempt();
        let now = Instant::now();
        if last.is_ok() || now >= deadline {
            return last;
        }
        thread::sleep(every.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_success() {
        let mut calls = 0;
        let got: Result<u32, u32> = poll_until(
            Instant::now() + Duration::from_secs(5),
            Duration::ZERO,
            || {
                calls += 1;
                if calls == 3 { Ok(calls) } else { Err(calls) }
            },
        );
        assert_eq!(got, Ok(3));
    }

    #[test]
    fn gives_the_last_error_at_the_deadline_after_trying_at_least_once() {
        let mut calls = 0;
        let got: Result<(), u32> = poll_until(Instant::now(), Duration::from_mins(1), || {
            calls += 1;
            Err(calls)
        });
        assert_eq!(got, Err(1));

        let deadline = Instant::now() + Duration::from_millis(30);
        let got: Result<(), Instant> =
            poll_until(deadline, Duration::from_millis(5), || Err(Instant::now()));
        assert!(
            got.unwrap_err() >= deadline,
            "asked once more at the deadline"
        );
    }
}
