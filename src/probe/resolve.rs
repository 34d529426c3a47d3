//! Name resolution within a probe's deadline (#19). getaddrinfo has no timeout of its own, so a host
//! that is not an address literal is looked up on a thread of its own and waited for until the
//! deadline. A lookup that fails, or does not answer in time, is a DNS failure — never a timeout,
//! which would blame php-fpm for a resolver outage. A lookup still hanging at the deadline keeps its
//! thread until the resolver gives up (glibc: its `timeout` × `attempts`); nothing waits for it.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::sync::mpsc;
use std::thread;
use std::time::Instant;

/// The addresses of `host` (a name, or an address literal, IPv6 bracketed or not), by `deadline`;
/// otherwise why not, in words for the log.
pub fn resolve(host: &str, port: u16, deadline: Instant) -> Result<Vec<SocketAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(vec![SocketAddr::new(ip, port)]);
    }
    let (found, heard) = mpsc::channel();
    let name = bare.to_owned();
    thread::Builder::new()
        .name("resolve".to_owned())
        .spawn(move || {
            let addrs = (name.as_str(), port)
                .to_socket_addrs()
                .map(Iterator::collect::<Vec<_>>);
            let _ = found.send(addrs);
        })
        .map_err(|err| format!("cannot look up '{bare}': {err}"))?;
    match heard.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        Ok(Ok(addrs)) if !addrs.is_empty() => Ok(addrs),
        Ok(Ok(_)) => Err(format!("'{bare}' has no address")),
        Ok(Err(err)) => Err(format!("'{bare}': {err}")),
        Err(_) => Err(format!(
            "the resolver did not answer for '{bare}' within the deadline"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn literals_need_no_lookup_and_bad_names_are_dns_failures() {
        let soon = Instant::now() + Duration::from_secs(5);
        assert_eq!(
            resolve("127.0.0.1", 9000, soon).unwrap(),
            ["127.0.0.1:9000".parse().unwrap()]
        );
        assert_eq!(
            resolve("[::1]", 80, soon).unwrap(),
            ["[::1]:80".parse().unwrap()]
        );
        assert!(!resolve("localhost", 80, soon).unwrap().is_empty());
        let err = resolve("php-relaunch-test.invalid", 80, soon).unwrap_err();
        assert!(err.contains("php-relaunch-test.invalid"), "{err}");
        // A deadline already past: nothing is waited for.
        let err = resolve("localhost", 80, Instant::now()).unwrap_err();
        assert!(err.contains("did not answer"), "{err}");
    }
}
