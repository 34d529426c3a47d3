//! Whether php-fpm itself answers on its own pools' sockets (#18). A heartbeat through the web server
//! that times out blames php-fpm; but the web server's workers may be the ones hung (nginx's run as
//! the pool user, whose PHP can SIGSTOP them), and restarting a healthy php-fpm then drops every
//! pool's requests for nothing. So before a timeout is blamed on php-fpm, each of its pools is asked
//! directly: its `ping.path` when set, else a FastCGI GET_VALUES, on the socket its config names.

use std::path::Path;
use std::time::Duration;

use super::{Control, Instance, conf, snapshot, sockets};
use crate::probe::{self, Target};

/// The pools' sockets asked, when every pool of the verified running php-fpm answered on its own
/// socket; `None` when it cannot be told (no config, no verified master, a pool without `listen`, a
/// unix socket not held by php-fpm's own processes) or some pool did not answer: php-fpm is then
/// blamed as before.
pub fn answers_itself(
    control: &Control,
    pid_file: Option<&Path>,
    timeout: Duration,
) -> Option<String> {
    let procs = snapshot().ok()?;
    let instance = Instance::resolve(control, pid_file, &procs).ok()?;
    // A stopped master's sockets may be answered by anything its workers started (#21).
    instance.master(&procs).filter(|master| !master.stopped)?;
    let family: Vec<u32> = instance.family(&procs).iter().map(|p| p.pid).collect();
    let pools = conf::read(&instance.config.as_ref()?.path).pools;
    if pools.is_empty() {
        return None;
    }
    let mut asked = Vec::new();
    for pool in &pools {
        let listen = pool.settings.get("listen")?;
        let ping = pool.settings.get("ping.path").map_or("", String::as_str);
        let text = if listen.starts_with('/') {
            // An answer counts only from a socket php-fpm's own processes hold: the pool user can
            // put a listener of its own at that path.
            let holders = sockets::holders(&sockets::listening(Path::new(listen)));
            if !holders.iter().any(|pid| family.contains(pid)) {
                return None;
            }
            if ping.is_empty() {
                format!("unix://{listen}")
            } else {
                format!("unix://{listen};{ping}")
            }
        } else {
            format!("fcgi://{}{ping}", loopback(listen))
        };
        let target: Target = text.parse().ok()?;
        if !probe::probe(&target, timeout, None).answer.is_healthy() {
            return None;
        }
        asked.push(text);
    }
    Some(asked.join(", "))
}

/// A TCP `listen` as an address to connect to: a bare port, or a wildcard, is asked on loopback.
fn loopback(listen: &str) -> String {
    if listen.bytes().all(|b| b.is_ascii_digit()) {
        return format!("127.0.0.1:{listen}");
    }
    for (any, local) in [
        ("0.0.0.0:", "127.0.0.1:"),
        ("[::]:", "[::1]:"),
        ("*:", "127.0.0.1:"),
    ] {
        if let Some(port) = listen.strip_prefix(any) {
            return format!("{local}{port}");
        }
    }
    listen.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_listen_settings_are_asked_on_loopback() {
        assert_eq!(loopback("9000"), "127.0.0.1:9000");
        assert_eq!(loopback("0.0.0.0:9001"), "127.0.0.1:9001");
        assert_eq!(loopback("[::]:9002"), "[::1]:9002");
        assert_eq!(loopback("127.0.0.2:9003"), "127.0.0.2:9003");
    }
}
