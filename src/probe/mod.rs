//! Asking the heartbeat once, with a hard deadline, and saying what came back.

mod http;

use std::fmt;
use std::time::Duration;

pub use http::probe_http;

/// What the heartbeat answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A complete HTTP response with this status.
    Status(u16),
    /// No complete answer within the deadline.
    Timeout,
    /// Nothing listens at the address.
    Refused,
    /// The host name does not resolve.
    Dns(String),
    /// Any other network failure (reset, malformed reply …), with its description.
    Failed(String),
}

/// One heartbeat request: what came back and how long it took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The answer.
    pub answer: Answer,
    /// Time from the start of the request to the answer (or the deadline).
    pub latency: Duration,
}

impl Answer {
    /// Whether this is a healthy answer: a status from 200 to 399.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Answer::Status(200..=399))
    }

    /// The detail of a failure, for the log's `error=` field.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Answer::Dns(detail) | Answer::Failed(detail) => Some(detail),
            _ => None,
        }
    }
}

/// The log's `verdict=` token: the status code, `timeout`, `refused`, `dns` or `error`.
impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Status(code) => write!(f, "{code}"),
            Answer::Timeout => f.write_str("timeout"),
            Answer::Refused => f.write_str("refused"),
            Answer::Dns(_) => f.write_str("dns"),
            Answer::Failed(_) => f.write_str("error"),
        }
    }
}

/// Probes the target once within `timeout`.
pub fn probe(url: &str, timeout: Duration) -> Verdict {
    probe_http(url, timeout)
}
