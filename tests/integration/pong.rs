//! The attacker's FastCGI server for the trust tests (#18): a program of `www-data`'s or `nobody`'s
//! that answers every request "pong", on a TCP address or a unix socket path, ended by pid.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rustix::process::Signal;

use crate::common::{shared_tempdir, signal, wait_until};

pub use crate::pool_user::WWW_DATA;

/// A FastCGI server that answers every request "pong", 200.
pub const PONG: &str = r#"
import os, socket, struct, sys, threading
kind, where, mark = sys.argv[1:4]
if kind == "tcp":
    host, port = where.rsplit(":", 1)
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host.strip("[]"), int(port)))
else:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(where)
    os.chmod(where, 0o666)
s.listen(64)
open(mark, "w").close()
def record(kind, rid, data):
    pad = (8 - len(data) % 8) % 8
    return struct.pack(">BBHHBB", 1, kind, rid, len(data), pad, 0) + data + b"\0" * pad
def serve(c):
    try:
        while True:
            head = c.recv(8, socket.MSG_WAITALL)
            if len(head) < 8:
                return
            _, kind, rid, length, pad, _ = struct.unpack(">BBHHBB", head)
            if length + pad:
                c.recv(length + pad, socket.MSG_WAITALL)
            if kind == 9:
                c.sendall(record(10, 0, b""))
            elif kind == 5 and length == 0:
                out = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\npong"
                c.sendall(record(6, rid, out) + record(6, rid, b"") + record(3, rid, b"\0" * 8))
                return
    finally:
        c.close()
while True:
    c, _ = s.accept()
    threading.Thread(target=serve, args=(c,), daemon=True).start()
"#;

/// The part of [`PONG`] that listens and answers, after its socket is bound: for other servers
/// that bind their own way.
pub fn serving() -> &'static str {
    &PONG[PONG.find("s.listen(64)").expect("PONG listens")..]
}

/// The attacker's process, ended by pid when dropped.
pub struct Attacker {
    child: Child,
    mark: PathBuf,
    _dir: tempfile::TempDir,
}

impl Attacker {
    pub fn pong(uid: u32, kind: &str, at: &str) -> Attacker {
        let dir = shared_tempdir();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).unwrap();
        let mark = dir.path().join("bound");
        let child = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={uid}"))
            .arg("--clear-groups")
            .args(["/usr/bin/python3", "-c", PONG, kind, at])
            .arg(&mark)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let attacker = Attacker {
            child,
            mark,
            _dir: dir,
        };
        wait_until("the attacker's socket", Duration::from_secs(10), || {
            attacker.mark.exists()
        });
        attacker
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        signal(self.child.id(), Signal::KILL);
        let _ = self.child.wait();
    }
}
