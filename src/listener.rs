//! Who listens, from the kernel's own tables (#18), asked through sock_diag (netlink): the owner and
//! inode of the TCP listeners (the same as /proc/net/tcp{,6} shows, without formatting every
//! connection of the host, which took milliseconds with a few thousand in TIME_WAIT), and of the
//! unix listeners bound to one file, matched by the bound file's device and inode as this mount
//! namespace sees the path (never by the path string /proc/net/unix shows, which a socket in
//! another mount namespace may share). Root's php-fpm master, systemd and nginx's master bind as
//! root; a listener of any other uid is not theirs.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketType, netlink};

/// A listening socket: its inode (as `/proc/PID/fd` shows it, `socket:[INODE]`) and its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// The socket's inode.
    pub inode: u64,
    /// The uid that created it; `None` when the kernel did not say.
    pub uid: Option<u32>,
}

impl Listener {
    /// Whether root (or the user running us, for unprivileged container checks) owns it.
    pub fn trusted(&self) -> bool {
        self.uid.is_some_and(trusted_uid)
    }
}

/// Whether `uid` is root or the user running us.
pub fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

/// Why a set of listeners is not to be believed: `None` when each is trusted.
pub fn distrust(listeners: &[Listener], what: &str) -> Option<String> {
    let foreign = listeners.iter().find(|l| !l.trusted())?;
    distrust_owner(foreign.uid, what)
}

/// Why a listener of owner `uid` is not to be believed: `None` when it is root's or ours.
pub fn distrust_owner(uid: Option<u32>, what: &str) -> Option<String> {
    match uid {
        Some(uid) if trusted_uid(uid) => None,
        Some(uid) => Some(format!(
            "{what} is held by uid {uid}, not by root: not believed"
        )),
        None => Some(format!("{what} has no known owner: not believed")),
    }
}

/// The TCP listeners that would take a connection to `to`: the one bound to that very address, or
/// failing that, those bound to the wildcard address on its port (the kernel prefers the former).
/// Empty when nothing on this host listens there (so `to` is another host's, or nothing listens).
pub fn tcp(to: SocketAddr) -> Vec<Listener> {
    let all = tcp_table();
    let on_port = |l: &&(SocketAddr, Listener)| l.0.port() == to.port();
    let exact: Vec<Listener> = all
        .iter()
        .filter(on_port)
        .filter(|l| canonical(l.0.ip()) == canonical(to.ip()))
        .map(|l| l.1)
        .collect();
    if !exact.is_empty() || !local(to.ip()) {
        return exact;
    }
    all.iter()
        .filter(on_port)
        .filter(|l| l.0.ip().is_unspecified())
        .map(|l| l.1)
        .collect()
}

/// The TCP listeners on `port`, bound to `ip` (or the wildcard), or to any address when `ip` is
/// `None` (a name, or php-fpm's bare `listen = PORT`).
pub fn tcp_on(ip: Option<IpAddr>, port: u16) -> Vec<Listener> {
    match ip {
        Some(ip) => tcp(SocketAddr::new(ip, port)),
        None => tcp_table()
            .into_iter()
            .filter(|l| l.0.port() == port)
            .map(|l| l.1)
            .collect(),
    }
}

/// The TCP listeners on `port` that take IPv4 connections, as php-fpm's `listen = 0.0.0.0:PORT`
/// would: those bound to an IPv4 address (or an IPv4-mapped one), and the IPv6 wildcard only while
/// no IPv4 wildcard is bound (the two cannot both take IPv4: beside an IPv4 wildcard, an IPv6 one is
/// IPv6-only, and takes none of the connections php-fpm serves).
pub fn tcp_on_v4(port: u16) -> Vec<Listener> {
    let on_port: Vec<(SocketAddr, Listener)> = tcp_table()
        .into_iter()
        .filter(|l| l.0.port() == port)
        .collect();
    let v4_wildcard = on_port
        .iter()
        .any(|l| l.0.ip() == IpAddr::from([0, 0, 0, 0]));
    on_port
        .into_iter()
        .filter(|l| match canonical(l.0.ip()) {
            IpAddr::V4(_) => true,
            IpAddr::V6(v6) => v6.is_unspecified() && !v4_wildcard,
        })
        .map(|l| l.1)
        .collect()
}

/// Whether `ip` is an address of this host (one a socket can be bound to), so that a wildcard
/// listener here is the one that takes connections to it. Another host's address is not.
fn local(ip: IpAddr) -> bool {
    !ip.is_unspecified() && std::net::UdpSocket::bind(SocketAddr::new(canonical(ip), 0)).is_ok()
}

/// An IPv4-mapped IPv6 address as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        IpAddr::V4(_) => ip,
    }
}

/// Every TCP listener of this network namespace, IPv4 and IPv6, with its address.
fn tcp_table() -> Vec<(SocketAddr, Listener)> {
    [diag::AF_INET, diag::AF_INET6]
        .into_iter()
        .filter_map(|family| {
            let mut body = vec![family, diag::IPPROTO_TCP, 0, 0];
            body.extend_from_slice(&diag::LISTENING.to_ne_bytes());
            body.extend_from_slice(&[0; 48]); // inet_diag_sockid: any
            dump(&body).ok()
        })
        .flatten()
        .filter_map(|msg| inet_diag_msg(&msg))
        .collect()
}

/// inet_diag_msg: family, state, timer, retrans, the socket id (ports and addresses in network
/// order), expires, queues, uid, inode.
fn inet_diag_msg(msg: &[u8]) -> Option<(SocketAddr, Listener)> {
    let port = u16::from_be_bytes(msg.get(4..6)?.try_into().ok()?);
    let ip = match *msg.first()? {
        diag::AF_INET => IpAddr::from(<[u8; 4]>::try_from(msg.get(8..12)?).ok()?),
        diag::AF_INET6 => IpAddr::from(<[u8; 16]>::try_from(msg.get(8..24)?).ok()?),
        _ => return None,
    };
    let listener = Listener {
        uid: u32_at(msg, 64),
        inode: u64::from(u32_at(msg, 68)?),
    };
    Some((SocketAddr::new(ip, port), listener))
}

/// The unix listeners bound to the socket file at `path` in this mount namespace: matched by the
/// file's device and inode. Empty when `path` is not a socket file, or nothing listens on it.
pub fn unix(path: &Path) -> Vec<Listener> {
    let Some(want) = socket_file(path) else {
        return Vec::new();
    };
    unix_table()
        .into_iter()
        .filter(|(vfs, _)| *vfs == Some(want))
        .map(|(_, listener)| listener)
        .collect()
}

/// The socket file at `path` (not following a link), as sock_diag names a bound file.
pub fn socket_file(path: &Path) -> Option<FileId> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.file_type().is_socket() {
        return None;
    }
    let dev = meta.dev();
    Some((rustix::fs::major(dev), rustix::fs::minor(dev), meta.ino()))
}

/// The socket file at `path` or, when `path` is a link, at the end of its links: what a connect to
/// `path` reaches. Whether it was reached through a link is said too.
pub fn socket_file_reached(path: &Path) -> Option<(FileId, bool)> {
    if let Some(file) = socket_file(path) {
        return Some((file, false));
    }
    let meta = std::fs::metadata(path).ok()?;
    if !meta.file_type().is_socket() {
        return None;
    }
    let dev = meta.dev();
    Some((
        (rustix::fs::major(dev), rustix::fs::minor(dev), meta.ino()),
        true,
    ))
}

/// The listening unix sockets bound to each socket file, all at once: for judging many paths
/// against one table.
pub fn unix_by_file() -> HashMap<FileId, Vec<Listener>> {
    let mut by_file: HashMap<FileId, Vec<Listener>> = HashMap::new();
    for (vfs, listener) in unix_table() {
        if let Some(vfs) = vfs {
            by_file.entry(vfs).or_default().push(listener);
        }
    }
    by_file
}

/// A bound file's (major, minor, inode).
pub type FileId = (u32, u32, u64);

/// A listening unix socket: the file it is bound to, if it has one, and the socket.
type Bound = (Option<FileId>, Listener);

/// Netlink and sock_diag constants (linux/netlink.h, linux/sock_diag.h, linux/unix_diag.h).
mod diag {
    pub const SOCK_DIAG_BY_FAMILY: u16 = 20;
    pub const NLM_F_REQUEST: u16 = 0x1;
    pub const NLM_F_DUMP: u16 = 0x300;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const AF_UNIX: u8 = 1;
    pub const AF_INET: u8 = 2;
    pub const AF_INET6: u8 = 10;
    pub const IPPROTO_TCP: u8 = 6;
    /// `1 << TCP_LISTEN`.
    pub const LISTENING: u32 = 1 << 10;
    pub const UDIAG_SHOW_VFS: u32 = 0x2;
    pub const UDIAG_SHOW_UID: u32 = 0x40;
    pub const UNIX_DIAG_VFS: u16 = 1;
    pub const UNIX_DIAG_UID: u16 = 7;
}

/// Every listening unix socket of this network namespace: the bound file's (major, minor, inode)
/// if it has one, and the socket. Empty when sock_diag cannot be asked.
fn unix_table() -> Vec<Bound> {
    let mut body = vec![diag::AF_UNIX, 0, 0, 0];
    body.extend_from_slice(&diag::LISTENING.to_ne_bytes());
    body.extend_from_slice(&0u32.to_ne_bytes()); // inode: any
    body.extend_from_slice(&(diag::UDIAG_SHOW_VFS | diag::UDIAG_SHOW_UID).to_ne_bytes());
    body.extend_from_slice(&[0xff; 8]); // cookie: none
    dump(&body)
        .unwrap_or_default()
        .iter()
        .filter_map(|msg| unix_diag_msg(msg))
        .collect()
}

/// One sock_diag dump: sends `body` (a unix_diag_req or inet_diag_req_v2) and returns the payload
/// of every message answered, up to the end of the dump.
fn dump(body: &[u8]) -> rustix::io::Result<Vec<Vec<u8>>> {
    use diag::{NLM_F_DUMP, NLM_F_REQUEST, SOCK_DIAG_BY_FAMILY};
    // Close-on-exec, as every fd we open: nothing a run starts (php-fpm, `service`) inherits one.
    let fd = rustix::net::socket_with(
        AddressFamily::NETLINK,
        SocketType::RAW,
        rustix::net::SocketFlags::CLOEXEC,
        Some(netlink::SOCK_DIAG),
    )?;
    let len = u32::try_from(16 + body.len()).map_err(|_| rustix::io::Errno::INVAL)?;
    let mut req = Vec::with_capacity(16 + body.len());
    req.extend_from_slice(&len.to_ne_bytes());
    req.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    req.extend_from_slice(&(NLM_F_REQUEST | NLM_F_DUMP).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // sequence
    req.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel fills it in
    req.extend_from_slice(body);
    rustix::net::send(&fd, &req, SendFlags::empty())?;
    let mut found = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let (_, len) = rustix::net::recv(&fd, &mut buf[..], RecvFlags::empty())?;
        match parse_messages(&buf[..len.min(buf.len())], &mut found) {
            Some(true) => return Ok(found),
            Some(false) => {}
            None => return Err(rustix::io::Errno::PROTO),
        }
    }
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

/// Reads the payloads of one datagram's messages into `found`: `Some(true)` at the end of the dump,
/// `None` on an error message or a malformed one.
fn parse_messages(mut bytes: &[u8], found: &mut Vec<Vec<u8>>) -> Option<bool> {
    while bytes.len() >= 16 {
        let len = usize::try_from(u32_at(bytes, 0)?).ok()?;
        let kind = u16_at(bytes, 4)?;
        if len < 16 || len > bytes.len() {
            return None;
        }
        match kind {
            diag::NLMSG_DONE => return Some(true),
            diag::NLMSG_ERROR => return None,
            _ => found.push(bytes[16..len].to_vec()),
        }
        bytes = &bytes[(len + 3) & !3..];
    }
    Some(false)
}

/// unix_diag_msg (family, type, state, pad, inode, cookie) and its attributes.
fn unix_diag_msg(msg: &[u8]) -> Option<Bound> {
    let inode = u64::from(u32_at(msg, 4)?);
    let mut attrs = msg.get(16..)?;
    let (mut vfs, mut uid) = (None, None);
    while attrs.len() >= 4 {
        let len = usize::from(u16_at(attrs, 0)?);
        let kind = u16_at(attrs, 2)?;
        let value = attrs.get(4..len)?;
        match kind {
            diag::UNIX_DIAG_VFS => {
                // struct unix_diag_vfs { u32 inode; u32 dev } with the kernel's own dev_t:
                // major in the top 12 bits, minor in the low 20.
                let (ino, dev) = (u32_at(value, 0)?, u32_at(value, 4)?);
                vfs = Some((dev >> 20, dev & 0xf_ffff, u64::from(ino)));
            }
            diag::UNIX_DIAG_UID => uid = u32_at(value, 0),
            _ => {}
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or_default();
    }
    Some((vfs, Listener { inode, uid }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;
    use std::os::unix::net::UnixListener;

    #[test]
    fn a_tcp_listener_is_found_with_its_owner_and_inode() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let found = tcp(addr);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].trusted());
        assert_eq!(tcp_on(None, addr.port()), found);
        drop(listener);
        assert!(tcp(addr).is_empty());

        let wildcard = TcpListener::bind("[::]:0").unwrap();
        let port = wildcard.local_addr().unwrap().port();
        let to = SocketAddr::from(([127, 0, 0, 1], port));
        assert_eq!(tcp(to).len(), 1, "a wildcard listener takes loopback");
        let elsewhere = SocketAddr::from(([192, 0, 2, 1], port));
        assert!(tcp(elsewhere).is_empty(), "not another host's address");
    }

    #[test]
    fn only_root_and_we_are_trusted() {
        let theirs = Listener {
            inode: 12345,
            uid: Some(33),
        };
        assert!(!theirs.trusted());
        assert!(distrust(&[theirs], "x").unwrap().contains("uid 33"));
        let root = Listener {
            inode: 1,
            uid: Some(0),
        };
        assert!(root.trusted());
        assert_eq!(distrust(&[root], "x"), None);
        assert!(distrust_owner(None, "x").is_some());
    }

    #[test]
    fn a_unix_listener_is_found_by_its_file_not_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let found = unix(&path);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].trusted());

        // Another socket bound at the same name (its file replaced) is another listener.
        std::fs::remove_file(&path).unwrap();
        assert!(unix(&path).is_empty(), "the name alone holds nothing");
        let other = UnixListener::bind(&path).unwrap();
        let again = unix(&path);
        assert_eq!(again.len(), 1);
        assert_ne!(again[0].inode, found[0].inode);
        drop((listener, other));
        assert!(unix(&path).is_empty(), "a stale file");
    }
}
