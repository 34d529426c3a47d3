//! On-demand pools: php-fpm started by its socket (systemd holds it, `FPM_SOCKETS` hands it over),
//! stopped by `idle-stop` when idle, and watched by `--on-demand` runs without waking it.

pub mod idle_stop;

use std::path::Path;

use crate::fpm::{self, sockets};

/// What an on-demand pool's socket says, without connecting to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dormancy {
    /// A php-fpm holds the socket: probe it as usual.
    Awake,
    /// No php-fpm runs, and the socket waits for the first request: healthy.
    Asleep,
    /// No php-fpm runs and nothing would start one: why, and what to restart.
    Lost(String),
}

/// Looks at `socket` from the kernel's tables: who holds its listening socket, and whether the path
/// is still the socket file. Both are needed: a name stays listed after its file is removed. Only
/// root's holders count (#18): a program PHP started inherits the socket from php-fpm's workers and
/// outlives them, and is no activator.
pub fn dormancy(socket: &Path) -> Dormancy {
    let inodes = sockets::listening(socket);
    let holders = sockets::holders(&inodes);
    let php_fpm = holders.iter().any(|pid| {
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| fpm::is_php_fpm(&exe))
    });
    if php_fpm {
        return Dormancy::Awake;
    }
    let why = if !sockets::is_socket_file(socket) {
        format!(
            "no php-fpm runs and its socket {} is gone",
            socket.display()
        )
    } else if holders.is_empty() {
        format!(
            "no php-fpm runs and no process of root's holds its socket {} (a stale file, or one \
             only another user's process holds)",
            socket.display()
        )
    } else {
        return Dormancy::Asleep;
    };
    Dormancy::Lost(format!("{why}: {}", restart_hint(socket)))
}

/// What to restart to bring a lost socket back: the shipped unit when the path is its.
fn restart_hint(socket: &Path) -> String {
    let unit = socket
        .strip_prefix("/run/php-fpm-ondemand")
        .ok()
        .and_then(|name| name.to_str()?.strip_suffix(".sock").map(str::to_owned))
        .filter(|name| !name.contains('/'));
    match unit {
        Some(name) => format!("systemctl restart php-fpm-ondemand@{name}.socket"),
        None => "restart the socket unit (or activator) that holds it".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_socket_held_by_another_process_sleeps_and_a_gone_or_stale_one_is_lost() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("www.sock");
        assert!(matches!(dormancy(&path), Dormancy::Lost(why) if why.contains("is gone")));
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(
            dormancy(&path),
            Dormancy::Asleep,
            "held by this test, not php-fpm"
        );
        drop(listener);
        assert!(matches!(dormancy(&path), Dormancy::Lost(why) if why.contains("stale")));
    }

    #[test]
    fn the_shipped_layout_names_its_unit() {
        assert_eq!(
            restart_hint(Path::new("/run/php-fpm-ondemand/shop.sock")),
            "systemctl restart php-fpm-ondemand@shop.socket"
        );
        assert!(restart_hint(Path::new("/run/php/x.sock")).starts_with("restart the socket unit"));
    }
}
