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
}

/// Classifies `answer` given the statuses that call for a relaunch.
pub fn decide(answer: &Answer, relaunch_on: &[u16]) -> Decision {
    match answer {
        Answer::Status(code) if relaunch_on.contains(code) => Decision::Relaunch,
        answer if answer.is_healthy() => Decision::Healthy,
        Answer::Status(_) => Decision::UnexpectedStatus,
        Answer::Timeout => Decision::Relaunch,
        Answer::Refused | Answer::Dns(_) | Answer::Failed(_) => Decision::WebServerDown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification_table() {
        let default = [502, 504];
        let old_script = [500, 502, 503, 504];
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
            (Answer::Refused, &default, Decision::WebServerDown),
            (Answer::Dns("x".into()), &default, Decision::WebServerDown),
            (
                Answer::Failed("reset".into()),
                &default,
                Decision::WebServerDown,
            ),
        ];
        for (answer, relaunch_on, want) in cases {
            assert_eq!(
                decide(answer, relaunch_on),
                *want,
                "{answer:?} with {relaunch_on:?}"
            );
        }
    }
}
