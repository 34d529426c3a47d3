//! Pure decisions: what an answer of the heartbeat calls for. No I/O.

use crate::probe::Answer;

/// What to do about one answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// 200–399: nothing.
    Healthy,
    /// php-fpm is dead or hung (a `--relaunch-on` status, or no complete answer in time): relaunch it.
    Relaunch,
    /// The web server itself is not answering (refused, DNS, broken connection): alert, leave php-fpm alone.
    WebServerDown,
    /// Any other status: alert only; a restart would hide an application error.
    UnexpectedStatus,
    /// php-fpm answered, but wrongly (`--expect`, a status threshold, a broken FastCGI reply): alert only.
    Unhealthy,
}

/// Classifies `answer` given the statuses that call for a relaunch. `fastcgi` says the probe went
/// straight to php-fpm, so nothing listening means php-fpm is down, not the web server.
pub fn decide(answer: &Answer, relaunch_on: &[u16], fastcgi: bool) -> Decision {
    match answer {
        Answer::Status(code) if relaunch_on.contains(code) => Decision::Relaunch,
        answer if answer.is_healthy() => Decision::Healthy,
        Answer::Status(_) => Decision::UnexpectedStatus,
        Answer::Timeout => Decision::Relaunch,
        Answer::Refused(_) if fastcgi => Decision::Relaunch,
        Answer::Unhealthy(_) => Decision::Unhealthy,
        Answer::Dns(_) | Answer::Failed(_) if fastcgi => Decision::Unhealthy,
        Answer::Refused(_) | Answer::Dns(_) | Answer::Failed(_) => Decision::WebServerDown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let default = [502, 504];
        let old_script = [500, 502, 503, 504];
        let refused = || Answer::Refused("connection refused".into());
        let cases: &[(Answer, &[u16], Decision)] = &[
            (Answer::Status(200), &default, Decision::Healthy),
            (Answer::Status(204), &default, Decision::Healthy),
            (Answer::Status(301), &default, Decision::Healthy),
            (Answer::Status(399), &default, Decision::Healthy),
            (Answer::Status(502), &default, Decision::Relaunch),
            (Answer::Status(504), &default, Decision::Relaunch),
            (Answer::Timeout, &default, Decision::Relaunch),
            (Answer::Status(500), &default, Decision::UnexpectedStatus),
            (Answer::Status(503), &default, Decision::UnexpectedStatus),
            (Answer::Status(404), &default, Decision::UnexpectedStatus),
            (Answer::Status(101), &default, Decision::UnexpectedStatus),
            (Answer::Status(500), &old_script, Decision::Relaunch),
            (Answer::Status(503), &old_script, Decision::Relaunch),
            (refused(), &default, Decision::WebServerDown),
            (Answer::Dns("x".into()), &default, Decision::WebServerDown),
            (
                Answer::Failed("reset".into()),
                &default,
                Decision::WebServerDown,
            ),
            (
                Answer::Unhealthy("lacks pong".into()),
                &default,
                Decision::Unhealthy,
            ),
        ];
        for (answer, relaunch_on, want) in cases {
            assert_eq!(
                decide(answer, relaunch_on, false),
                *want,
                "http: {answer:?} with {relaunch_on:?}"
            );
        }
    }

    #[test]
    fn over_fastcgi_nothing_listening_means_php_fpm_is_down() {
        let cases = [
            (Answer::Status(200), Decision::Healthy),
            (Answer::Status(404), Decision::UnexpectedStatus),
            (Answer::Timeout, Decision::Relaunch),
            (Answer::Refused("no such socket".into()), Decision::Relaunch),
            (
                Answer::Refused("connection refused".into()),
                Decision::Relaunch,
            ),
            (
                Answer::Failed("bad FastCGI reply".into()),
                Decision::Unhealthy,
            ),
            (Answer::Dns("x".into()), Decision::Unhealthy),
            (
                Answer::Unhealthy("listen queue 3 > 2".into()),
                Decision::Unhealthy,
            ),
        ];
        for (answer, want) in cases {
            assert_eq!(
                decide(&answer, &[502, 504], true),
                want,
                "fastcgi: {answer:?}"
            );
        }
    }
}
