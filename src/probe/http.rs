//! The HTTP heartbeat probe: one GET through ureq with a total deadline over DNS, connect, headers and
//! body, no proxy, no redirects followed.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ureq::Agent;

use super::fastcgi::MAX_REPLY;
use super::{Answer, Verdict};

/// Requests `url` once; the whole exchange must finish within `timeout`.
pub fn probe_http(url: &str, timeout: Duration) -> Verdict {
    let agent: Agent = Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        // ureq honours HTTP_PROXY even for loopback; a watchdog must talk to the page itself.
        .proxy(None)
        .user_agent(concat!("php-relaunch/", env!("CARGO_PKG_VERSION")))
        .build()
        .into();
    let started = Instant::now();
    // The name is looked up within the deadline first: a resolver that fails or hangs is `dns`, never
    // a timeout blamed on php-fpm (#19).
    let Some((host, port)) = host_port(url) else {
        return Verdict {
            answer: Answer::Failed(format!("no host in '{url}'")),
            latency: started.elapsed(),
            body: Vec::new(),
            stderr: None,
            listener: None,
        };
    };
    let addrs = match super::resolve::resolve(host, port, started + timeout) {
        Ok(addrs) => addrs,
        Err(why) => {
            return Verdict {
                answer: Answer::Dns(why),
                latency: started.elapsed(),
                body: Vec::new(),
                stderr: None,
                listener: None,
            };
        }
    };
    let mut body = Vec::new();
    let answer = match agent.get(url).call() {
        Ok(mut response) => {
            // A status line alone is not an answer: the body must arrive in time too. The first
            // MAX_REPLY bytes are kept for --expect, the rest read and dropped.
            let mut reader = response.body_mut().as_reader();
            let read = (&mut reader)
                .take(MAX_REPLY as u64)
                .read_to_end(&mut body)
                .and_then(|_| io::copy(&mut reader, &mut io::sink()));
            match read {
                Ok(_) => Answer::Status(response.status().as_u16()),
                Err(err) => classify_io(&err),
            }
        }
        Err(err) => classify(err),
    };
    // A healthy answer counts only from a listener root trusts (#18).
    let answer = match answer.is_healthy().then(|| distrust(&addrs, host, port)) {
        Some(Some(reason)) => Answer::Untrusted(reason),
        _ => answer,
    };
    Verdict {
        answer,
        latency: started.elapsed(),
        body,
        stderr: None,
        listener: None,
    }
}

/// The host and port of an `http://` URL (80 unless given).
fn host_port(url: &str) -> Option<(&str, u16)> {
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = super::split_host_port(authority);
    Some((host, port.map_or(Some(80), |p| p.parse().ok())?))
}

/// Why the listener at `addrs` (`host`'s, port `port`) on this host is not to be believed, if it is
/// not (#18): the TCP listener that takes connections to them, when they are this host's. A URL of
/// another host cannot be checked so: `None`.
fn distrust(addrs: &[SocketAddr], host: &str, port: u16) -> Option<String> {
    let listeners: Vec<_> = addrs
        .iter()
        .copied()
        .flat_map(crate::listener::tcp)
        .collect();
    crate::listener::distrust(&listeners, &format!("the listener of {host}:{port}"))
}

fn classify(err: ureq::Error) -> Answer {
    match err {
        ureq::Error::Timeout(_) => Answer::Timeout,
        ureq::Error::HostNotFound => Answer::Dns("host not found".to_owned()),
        ureq::Error::Io(err) => classify_io(&err),
        other => Answer::Failed(other.to_string()),
    }
}

fn classify_io(err: &io::Error) -> Answer {
    // ureq wraps its own errors (a timeout while reading the body) into io::Error.
    if let Some(ureq::Error::Timeout(_)) =
        err.get_ref().and_then(|e| e.downcast_ref::<ureq::Error>())
    {
        return Answer::Timeout;
    }
    match err.kind() {
        io::ErrorKind::ConnectionRefused => Answer::Refused("connection refused".to_owned()),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => Answer::Timeout,
        // std reports a failed getaddrinfo as an uncategorized error with this message.
        _ if err.to_string().contains("failed to lookup address") => Answer::Dns(err.to_string()),
        _ => Answer::Failed(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;
    use std::thread;

    /// A canned server for what a real one cannot do on demand: a reply that never ends.
    fn serve_once(reply: &'static [u8], then_hang: bool) -> (String, thread::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hb.php", listener.local_addr().unwrap());
        let handle = thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = conn.read(&mut request);
            conn.write_all(reply).unwrap();
            if then_hang {
                thread::sleep(Duration::from_millis(1500));
            }
        });
        (url, handle)
    }

    #[test]
    fn status_is_read_with_the_body() {
        let (url, server) = serve_once(
            b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 3\r\n\r\nbad",
            false,
        );
        let verdict = probe_http(&url, Duration::from_secs(5));
        assert_eq!(verdict.answer, Answer::Status(502));
        assert_eq!(verdict.body, b"bad");
        server.join().unwrap();
    }

    #[test]
    fn a_body_that_never_finishes_is_a_timeout() {
        let (url, server) = serve_once(
            b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial",
            true,
        );
        let verdict = probe_http(&url, Duration::from_millis(300));
        assert_eq!(verdict.answer, Answer::Timeout);
        server.join().unwrap();
    }

    #[test]
    fn nothing_listening_is_refused() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let verdict = probe_http(&format!("http://127.0.0.1:{port}/"), Duration::from_secs(2));
        assert_eq!(
            verdict.answer,
            Answer::Refused("connection refused".to_owned())
        );
    }

    #[test]
    fn an_unresolvable_name_is_dns() {
        let verdict = probe_http("http://no-such-host.invalid/", Duration::from_secs(5));
        assert!(
            matches!(verdict.answer, Answer::Dns(_)),
            "{:?}",
            verdict.answer
        );
    }
}
