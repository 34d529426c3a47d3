//! Asking the heartbeat once, with a hard deadline, and saying what came back: over HTTP through the
//! web server, or straight to php-fpm over FastCGI.

pub mod fastcgi;
mod http;
pub mod resolve;
pub mod status;
mod target;

pub use target::{Script, Target, split_host_port, valid_host};

use std::fmt;
use std::io::BufReader;
use std::time::{Duration, Instant};

use fastcgi::Address;

/// What the heartbeat answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A complete response with this status (a FastCGI reply's `Status:` header; absent means 200).
    Status(u16),
    /// No complete answer within the deadline.
    Timeout,
    /// Nothing listens at the address, with the detail (refused, no such socket).
    Refused(String),
    /// The host name does not resolve.
    Dns(String),
    /// Any other failure (reset, malformed reply …), with its description.
    Failed(String),
    /// A healthy status, but the body or the pool's status page failed a check: `--expect`, or a
    /// status threshold. The reason says which.
    Unhealthy(String),
    /// An answer from a listening socket root does not trust (another user's, #18): never healthy,
    /// whatever it said. The reason names the listener and its owner.
    Untrusted(String),
}

/// One probe: what came back, how long it took, and the body for later checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The answer.
    pub answer: Answer,
    /// Time from the start of the request to the answer (or the deadline).
    pub latency: Duration,
    /// The response body (at most [`fastcgi::MAX_REPLY`] bytes of it).
    pub body: Vec<u8>,
    /// What php-fpm wrote to the request's STDERR stream, trimmed and cut to [`MAX_STDERR`]
    /// characters (escaped where it is shown); `None` over HTTP or when it wrote nothing.
    pub stderr: Option<String>,
    /// Over a unix socket, the process that opened the listening socket that answered (see
    /// [`fastcgi::Connection::listener_pid`]): php-fpm's master, for its pools.
    pub listener: Option<u32>,
}

/// The most of php-fpm's STDERR kept for the log line and the mail.
pub const MAX_STDERR: usize = 300;

/// php-fpm's STDERR as kept: lossy text, trimmed, cut; `None` when empty.
fn said(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let text = text.trim();
    (!text.is_empty()).then(|| crate::escape::cut(text, MAX_STDERR))
}

impl Answer {
    /// Whether this is a healthy answer: a status from 200 to 399.
    pub fn is_healthy(&self) -> bool {
        matches!(self, Answer::Status(200..=399))
    }

    /// The detail of a failure, for the log's `error=` field.
    pub fn detail(&self) -> Option<&str> {
        match self {
            Answer::Refused(detail)
            | Answer::Dns(detail)
            | Answer::Failed(detail)
            | Answer::Unhealthy(detail)
            | Answer::Untrusted(detail) => Some(detail),
            Answer::Status(_) | Answer::Timeout => None,
        }
    }
}

/// The log's `verdict=` token: the status code, `timeout`, `refused`, `dns`, `error`, `unhealthy` or
/// `untrusted-listener`.
impl fmt::Display for Answer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Answer::Status(code) => write!(f, "{code}"),
            Answer::Timeout => f.write_str("timeout"),
            Answer::Refused(_) => f.write_str("refused"),
            Answer::Dns(_) => f.write_str("dns"),
            Answer::Failed(_) => f.write_str("error"),
            Answer::Unhealthy(_) => f.write_str("unhealthy"),
            Answer::Untrusted(_) => f.write_str("untrusted-listener"),
        }
    }
}

/// Probes `target` once within `timeout`; a healthy answer whose body lacks `expect` is unhealthy,
/// and one from a listener on this host that root does not trust is [`Answer::Untrusted`].
pub fn probe(target: &Target, timeout: Duration, expect: Option<&str>) -> Verdict {
    let mut verdict = match target {
        Target::Http(url) => http::probe_http(url, timeout),
        Target::FastCgi {
            address, script, ..
        } => probe_fastcgi(address, script.as_ref(), timeout),
    };
    if let Some(text) = expect
        && verdict.answer.is_healthy()
        && !contains(&verdict.body, text.as_bytes())
    {
        verdict.answer = Answer::Unhealthy(format!("the reply lacks '{text}'"));
    }
    verdict
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

fn probe_fastcgi(address: &Address, script: Option<&Script>, timeout: Duration) -> Verdict {
    let started = Instant::now();
    let result = exchange(address, script, started + timeout);
    let latency = started.elapsed();
    let listener = result.as_ref().ok().and_then(|e| e.listener);
    let (answer, body, stderr) = match result {
        Ok(Exchanged {
            status,
            distrust: Some(reason),
            ..
        }) if Answer::Status(status).is_healthy() => {
            (Answer::Untrusted(reason), Vec::new(), Vec::new())
        }
        Ok(Exchanged {
            status,
            body,
            stderr,
            ..
        }) => (Answer::Status(status), body, stderr),
        Err(fastcgi::Error::Timeout) => (Answer::Timeout, Vec::new(), Vec::new()),
        Err(fastcgi::Error::Refused(detail)) => (Answer::Refused(detail), Vec::new(), Vec::new()),
        Err(fastcgi::Error::Dns(detail)) => (Answer::Dns(detail), Vec::new(), Vec::new()),
        Err(err @ (fastcgi::Error::Io(_) | fastcgi::Error::Protocol(_))) => {
            (Answer::Failed(err.to_string()), Vec::new(), Vec::new())
        }
    };
    Verdict {
        answer,
        latency,
        body,
        stderr: said(&stderr),
        listener,
    }
}

/// What one FastCGI exchange brought back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchanged {
    /// The reply's status (a `Status:` header; absent means 200).
    pub status: u16,
    /// The reply's body.
    pub body: Vec<u8>,
    /// What php-fpm wrote to the request's STDERR stream ("Primary script unknown", PHP warnings).
    pub stderr: Vec<u8>,
    /// Why the listener that answered is not to be believed, if it is not (#18).
    pub distrust: Option<String>,
    /// The process that opened the unix listening socket that answered.
    pub listener: Option<u32>,
}

/// One FastCGI exchange: GET_VALUES without a script, a GET request with one.
pub fn exchange(
    address: &Address,
    script: Option<&Script>,
    deadline: Instant,
) -> Result<Exchanged, fastcgi::Error> {
    let mut conn = fastcgi::Connection::open(address, deadline)?;
    let distrust = conn.distrust();
    let listener = conn.listener_pid();
    let Some(script) = script else {
        conn.send(&fastcgi::get_values_request())?;
        fastcgi::read_get_values_result(&mut conn)?;
        return Ok(Exchanged {
            status: 200,
            body: Vec::new(),
            stderr: Vec::new(),
            distrust,
            listener,
        });
    };
    let params = params(address, script);
    let params: Vec<(&str, &str)> = params.iter().map(|(n, v)| (*n, v.as_str())).collect();
    conn.send(&fastcgi::request(&params))?;
    // Records arrive together; read them in as few system calls as the kernel allows. (Not for
    // GET_VALUES above: php-fpm keeps that connection open, and only its one record is wanted.)
    let reply = fastcgi::read_reply(&mut BufReader::with_capacity(16 * 1024, conn))?;
    let (status, body) = fastcgi::parse_cgi(&reply.stdout)?;
    Ok(Exchanged {
        status,
        body: body.to_vec(),
        stderr: reply.stderr,
        distrust,
        listener,
    })
}

/// The CGI parameters php-fpm needs to run a script (or answer its ping and status paths).
fn params(address: &Address, script: &Script) -> Vec<(&'static str, String)> {
    let (server_addr, server_port) = match address {
        Address::Tcp { host, port } => (host.clone(), port.to_string()),
        Address::Unix(_) => ("127.0.0.1".to_owned(), "0".to_owned()),
    };
    let uri = if script.query.is_empty() {
        script.path.clone()
    } else {
        format!("{}?{}", script.path, script.query)
    };
    vec![
        ("GATEWAY_INTERFACE", "CGI/1.1".to_owned()),
        (
            "SERVER_SOFTWARE",
            concat!("php-relaunch/", env!("CARGO_PKG_VERSION")).to_owned(),
        ),
        ("SERVER_PROTOCOL", "HTTP/1.1".to_owned()),
        ("SERVER_NAME", "localhost".to_owned()),
        ("SERVER_ADDR", server_addr),
        ("SERVER_PORT", server_port),
        ("REMOTE_ADDR", "127.0.0.1".to_owned()),
        ("REQUEST_METHOD", "GET".to_owned()),
        ("SCRIPT_NAME", script.path.clone()),
        ("SCRIPT_FILENAME", script.path.clone()),
        ("DOCUMENT_URI", script.path.clone()),
        ("REQUEST_URI", uri),
        ("QUERY_STRING", script.query.clone()),
        ("CONTENT_LENGTH", "0".to_owned()),
        ("HTTP_HOST", "localhost".to_owned()),
    ]
}
