//! Who holds a unix socket, from the kernel's own tables: the listening sockets bound to the very
//! file at a path (sock_diag, by the file's device and inode in our mount namespace, see
//! [`crate::listener`]) and the processes that have one of them open (/proc/PID/fd). A title, a pid
//! file or a path string says nothing here: /proc/net/unix lists names that a socket in another
//! mount namespace may share (#18), and a file may be left where nothing listens any more.

use std::collections::HashSet;
use std::fs;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::listener;

/// The inodes of the listening sockets bound to the socket file at `path` and owned by root (or
/// us): a socket activator's, or php-fpm's master's.
pub fn listening(path: &Path) -> Vec<u64> {
    listener::unix(path)
        .into_iter()
        .filter(listener::Listener::trusted)
        .map(|l| l.inode)
        .collect()
}

/// The processes of root (or ours: real and effective uid both) that have one of `inodes` open.
/// Another user's process holding root's listening socket inherited it (#18: php-fpm's workers keep
/// it without close-on-exec, so a program PHP starts has it) and is no activator: systemd and
/// `systemd-socket-activate` run as root.
pub fn holders(inodes: &[u64]) -> Vec<u32> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<u32> = procs
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| holds(pid, inodes))
        .filter(|&pid| trusted_process(pid))
        .collect();
    found.sort_unstable();
    found
}

/// Whether process `pid` is root's (or ours): real and effective uid both. Only such a holder of a
/// pool's listening socket is its activator (#18).
pub fn trusted_process(pid: u32) -> bool {
    super::procs::process(pid).is_some_and(|p| p.uid.is_some_and(listener::trusted_uid))
}

/// The inodes of the sockets process `pid` has open.
pub fn held(pid: u32) -> HashSet<u64> {
    let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let link = fs::read_link(fd.path()).ok()?;
            link.to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Whether process `pid` has one of the sockets `inodes` open.
pub fn holds(pid: u32, inodes: &[u64]) -> bool {
    if inodes.is_empty() {
        return false;
    }
    let held = held(pid);
    inodes.iter().any(|inode| held.contains(inode))
}

/// The listening sockets of a pool's `listen` setting (`/path`, `ADDR:PORT`, `[V6]:PORT`,
/// `NAME:PORT` or a bare `PORT`) that would take a connection meant for the pool, with their owners;
/// empty when nothing listens there. Judged by the socket php-fpm itself binds, never by any other
/// address of the same port (#18: `nobody` on 127.0.0.2:PORT takes no connection to a pool on
/// `localhost:PORT`, and must not make a healthy php-fpm look untrusted):
/// - a bare `PORT` or `[::]:PORT`: php-fpm binds the dual-stack wildcard, so every listener on the
///   port (one of a more specific address would take the connections to that address);
/// - `0.0.0.0:PORT` (or `*:PORT`): the IPv4 wildcard, so every IPv4 listener on the port (an IPv6
///   one takes no connection php-fpm could have served);
/// - an address: the listener bound to it, else the wildcard one that takes connections to it;
/// - a name: resolved as php-fpm resolves it (getaddrinfo, the first address: `localhost` is
///   127.0.0.1 here), then as that address.
pub fn pool_listeners(listen: &str) -> Vec<listener::Listener> {
    let listen = listen.trim();
    if listen.starts_with('/') {
        return listener::unix(Path::new(listen));
    }
    match tcp_listen(listen) {
        Some(TcpListen::Any(port)) => listener::tcp_on(None, port),
        Some(TcpListen::AnyV4(port)) => listener::tcp_on_v4(port),
        Some(TcpListen::At(addr)) => listener::tcp(addr),
        None => Vec::new(),
    }
}

/// Where a pool's TCP `listen` setting makes php-fpm bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TcpListen {
    /// Every address, IPv4 and IPv6, of this port.
    Any(u16),
    /// Every IPv4 address of this port.
    AnyV4(u16),
    /// One address.
    At(SocketAddr),
}

/// What php-fpm binds for a TCP `listen` setting; `None` when it is not one (or its name does not
/// resolve, so php-fpm could not bind it either).
fn tcp_listen(listen: &str) -> Option<TcpListen> {
    let Some((host, port)) = listen.rsplit_once(':') else {
        return Some(TcpListen::Any(listen.parse().ok()?));
    };
    let port: u16 = port.parse().ok()?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "*" {
        return Some(TcpListen::AnyV4(port));
    }
    let ip: IpAddr = match host.parse() {
        Ok(ip) => ip,
        // The resolver php-fpm uses, and its first answer (php-fpm binds that one).
        Err(_) => (host, port).to_socket_addrs().ok()?.next()?.ip(),
    };
    Some(match ip {
        IpAddr::V6(v6) if v6.is_unspecified() => TcpListen::Any(port),
        IpAddr::V4(v4) if v4.is_unspecified() => TcpListen::AnyV4(port),
        ip => TcpListen::At(SocketAddr::new(ip, port)),
    })
}

/// A pool's `listen` setting with php-fpm's `$pool` replaced by its name.
pub(super) fn pool_listen(pool: &super::PoolConf) -> Option<String> {
    let listen = pool.settings.get("listen")?;
    Some(listen.replace("$pool", &pool.name))
}

/// Why `instance` does not serve its pools, if another user holds one of their listening sockets
/// (#18: php-fpm dead and its port or socket path taken, so the web server serves that user's
/// answers as the heartbeat). `None` when each socket found is root's (or ours). The pools are those
/// the instance read from its config when it was resolved: nothing is read twice.
pub fn pools_distrust(instance: &super::Instance) -> Option<String> {
    instance.pools.iter().find_map(|pool| {
        let listen = pool.listen.as_deref()?;
        let name = pool.title.trim_start_matches("php-fpm: pool ");
        let what = format!("php-fpm pool '{name}''s socket {listen}");
        let listeners = pool_listeners(listen);
        let path = Path::new(listen.trim());
        if path.is_absolute()
            && let Some(reason) = not_root_socket_file(path, &listeners, &what)
        {
            return Some(reason);
        }
        listener::distrust(&listeners, &what)
    })
}

/// Why the entry at a pool's socket path is not the socket file root's listener is bound to (#18):
/// a link (the web server follows it to a socket of the link's owner), any other kind of file, or a
/// socket file nothing listens on. `None` when nothing is there (no claim), or a listener is bound
/// to it (whose owner [`listener::distrust`] judges).
fn not_root_socket_file(
    path: &Path,
    listeners: &[listener::Listener],
    what: &str,
) -> Option<String> {
    let meta = fs::symlink_metadata(path).ok()?;
    if meta.file_type().is_symlink() {
        Some(format!(
            "{what} is a link, not php-fpm's socket: not believed"
        ))
    } else if !meta.file_type().is_socket() {
        Some(format!("{what} is not a socket file: not believed"))
    } else if listeners.is_empty() {
        Some(format!(
            "{what} is a socket file nothing listens on: not believed"
        ))
    } else {
        None
    }
}

/// Whether `path` is a socket file (not followed through a link).
pub fn is_socket_file(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixListener};

    #[test]
    fn only_a_socket_file_a_listener_is_bound_to_stands_at_a_pool_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("www.sock");
        let judged = |path: &Path| {
            not_root_socket_file(path, &pool_listeners(&path.display().to_string()), "x")
        };
        assert_eq!(judged(&path), None, "nothing there: no claim");
        let listener = UnixListener::bind(&path).unwrap();
        assert_eq!(judged(&path), None);
        let link = dir.path().join("link.sock");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(judged(&link).unwrap().contains("is a link"));
        drop(listener);
        assert!(judged(&path).unwrap().contains("nothing listens"));
        fs::remove_file(&path).unwrap();
        fs::write(&path, "").unwrap();
        assert!(judged(&path).unwrap().contains("not a socket file"));
    }

    #[test]
    fn a_listening_socket_and_its_holder_are_found_by_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let inodes = listening(&path);
        assert_eq!(inodes.len(), 1);
        assert_eq!(holders(&inodes), [std::process::id()]);
        assert!(is_socket_file(&path));

        // /proc/net/unix keeps the name after its file is gone; the file is what counts.
        fs::remove_file(&path).unwrap();
        assert!(listening(&path).is_empty());
        assert!(!is_socket_file(&path));
        drop(listener);

        // A datagram socket does not listen.
        let _datagram = UnixDatagram::bind(&path).unwrap();
        assert!(listening(&path).is_empty());
    }

    #[test]
    fn a_tcp_listen_setting_is_where_php_fpm_binds() {
        let at = |s: &str| Some(TcpListen::At(s.parse().unwrap()));
        assert_eq!(tcp_listen("9000"), Some(TcpListen::Any(9000)));
        assert_eq!(tcp_listen("[::]:9000"), Some(TcpListen::Any(9000)));
        assert_eq!(tcp_listen("0.0.0.0:9000"), Some(TcpListen::AnyV4(9000)));
        assert_eq!(tcp_listen("*:9000"), Some(TcpListen::AnyV4(9000)));
        assert_eq!(tcp_listen("127.0.0.1:9000"), at("127.0.0.1:9000"));
        assert_eq!(tcp_listen("[::1]:9000"), at("[::1]:9000"));
        // A name is its resolver's first address, as php-fpm binds it (/etc/hosts here).
        assert_eq!(tcp_listen("localhost:9000"), at("127.0.0.1:9000"));
        assert_eq!(tcp_listen("no-such-host.invalid:9000"), None);
        assert_eq!(tcp_listen("localhost:port"), None);
        assert_eq!(tcp_listen("nine"), None);
    }

    #[test]
    fn only_the_listeners_that_take_the_pools_connections_are_the_pools() {
        // Another address of the port: not a pool on 127.0.0.1 or localhost, but one on every
        // address (a bare port, 0.0.0.0) would lose connections to it.
        let other = std::net::TcpListener::bind("127.0.0.2:0").unwrap();
        let port = other.local_addr().unwrap().port();
        assert!(pool_listeners(&format!("127.0.0.1:{port}")).is_empty());
        assert!(pool_listeners(&format!("localhost:{port}")).is_empty());
        assert!(pool_listeners(&format!("[::1]:{port}")).is_empty());
        assert_eq!(pool_listeners(&format!("{port}")).len(), 1);
        assert_eq!(pool_listeners(&format!("0.0.0.0:{port}")).len(), 1);
        assert_eq!(pool_listeners(&format!("127.0.0.2:{port}")).len(), 1);
        drop(other);

        // The pool's own address, by number or by name.
        let own = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = own.local_addr().unwrap().port();
        let found = pool_listeners(&format!("localhost:{port}"));
        assert_eq!(found.len(), 1);
        assert_eq!(pool_listeners(&format!("127.0.0.1:{port}")), found);
        drop(own);

        // An IPv4 wildcard: an IPv6-only listener beside it takes none of its connections.
        let v4 = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = v4.local_addr().unwrap().port();
        let v6 = std::net::TcpListener::bind(format!("[::1]:{port}"));
        assert_eq!(pool_listeners(&format!("0.0.0.0:{port}")).len(), 1);
        // A pool on 127.0.0.1 of the port is served by the wildcard.
        assert_eq!(pool_listeners(&format!("127.0.0.1:{port}")).len(), 1);
        if v6.is_ok() {
            assert_eq!(pool_listeners(&format!("{port}")).len(), 2);
            assert_eq!(pool_listeners(&format!("[::1]:{port}")).len(), 1);
        }
    }
}
