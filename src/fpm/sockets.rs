//! Who holds a unix socket, from the kernel's own tables: the listening sockets bound to a path
//! (/proc/net/unix) and the processes that have one of them open (/proc/PID/fd). A title, a pid
//! file or the socket file itself says nothing here: /proc/net/unix keeps listing a name after its
//! file was removed, and a file may be left where nothing listens any more.

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use crate::secure_file::{self, Links};

/// /proc/net/unix's flag of a listening socket (`__SO_ACCEPTCON`).
const ACCEPTING: u32 = 0x0001_0000;

/// The most of /proc/net/unix read: a host with a million sockets has bigger problems.
const MAX_TABLE: usize = 256 << 20;

/// The inodes of the listening sockets bound to `path`.
pub fn listening(path: &Path) -> Vec<u64> {
    let Ok(table) =
        secure_file::read_bounded(Path::new("/proc/net/unix"), Links::Follow, MAX_TABLE)
    else {
        return Vec::new();
    };
    let wanted = path.as_os_str().as_encoded_bytes();
    String::from_utf8_lossy(&table)
        .lines()
        .skip(1)
        .filter_map(|line| {
            // Num RefCount Protocol Flags Type St Inode Path
            let fields: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(fields.get(3)?, 16).ok()?;
            let bound = fields.get(7)?;
            (flags & ACCEPTING != 0 && bound.as_bytes() == wanted)
                .then(|| fields.get(6)?.parse().ok())
                .flatten()
        })
        .collect()
}

/// The processes that have one of `inodes` open.
pub fn holders(inodes: &[u64]) -> Vec<u32> {
    if inodes.is_empty() {
        return Vec::new();
    }
    let names: Vec<String> = inodes.iter().map(|i| format!("socket:[{i}]")).collect();
    let Ok(procs) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<u32> = procs
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
                fds.flatten().any(|fd| {
                    fs::read_link(fd.path())
                        .is_ok_and(|link| names.iter().any(|n| link.as_os_str() == n.as_str()))
                })
            })
        })
        .collect();
    found.sort_unstable();
    found
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
    fn a_listening_socket_and_its_holder_are_found_by_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pool.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let inodes = listening(&path);
        assert_eq!(inodes.len(), 1);
        assert_eq!(holders(&inodes), [std::process::id()]);
        assert!(is_socket_file(&path));

        // The name stays listed after its file is gone: the file is checked apart.
        fs::remove_file(&path).unwrap();
        assert_eq!(listening(&path), inodes);
        assert!(!is_socket_file(&path));
        drop(listener);
        assert!(listening(&path).is_empty());

        // A datagram socket does not listen.
        let _datagram = UnixDatagram::bind(&path).unwrap();
        assert!(listening(&path).is_empty());
    }
}
