//! Opening files without being tricked (#13). What root writes (the lock and the log): never through a
//! symlink, only regular files we own, created with tight permissions, close-on-exec (std's default),
//! so php-fpm started by a relaunch never inherits them. What others can write or replace (pid files,
//! php-fpm's logs, configs): opened without blocking, regular files only, and read up to a bound, so a
//! FIFO, a device or `/dev/zero` behind a name can neither hang a run nor fill its memory. What root
//! creates or replaces goes through [`write`].

mod write;

pub use write::{Existing, place, replace};

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{Result, bail};
use rustix::fs::OFlags;

/// How a private file is opened.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Read-write, for a lock; created 0600.
    Lock,
    /// Append-only, for the log; created 0640.
    Append,
}

/// Opens `path` as `what` (`"lock"` or `"log"`), refusing symlinks, non-regular files and files owned by
/// another user.
pub fn open(path: &Path, what: &str, mode: Mode) -> Result<File> {
    let mut options = OpenOptions::new();
    // O_NONBLOCK: opening a FIFO for writing would otherwise wait for a reader.
    options
        .create(true)
        .custom_flags((OFlags::NOFOLLOW | OFlags::NONBLOCK).bits().cast_signed());
    match mode {
        Mode::Lock => options.read(true).write(true).truncate(false).mode(0o600),
        Mode::Append => options.append(true).mode(0o640),
    };
    let file = match options.open(path) {
        Ok(file) => file,
        Err(err) if is_symlink_refusal(&err, path) => {
            bail!(
                "refusing {what} '{}': it is a symbolic link",
                path.display()
            )
        }
        Err(err) => bail!("cannot open {what} '{}': {err}", path.display()),
    };
    let meta = file.metadata()?;
    if !meta.file_type().is_file() {
        bail!("refusing {what} '{}': not a regular file", path.display());
    }
    let me = rustix::process::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "refusing {what} '{}': owned by uid {}, not by this user (uid {me})",
            path.display(),
            meta.uid()
        );
    }
    Ok(file)
}

/// Whether the last component of a path may be a symbolic link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// Refused: the file sits where others can write (pid files, php-fpm's logs).
    Refuse,
    /// Followed: root's own configuration, which admins do link.
    Follow,
}

/// Opens an existing regular file for reading without blocking: a FIFO, socket or device is an
/// error at once, never a wait.
pub fn open_regular(path: &Path, links: Links) -> io::Result<File> {
    let mut flags = OFlags::NONBLOCK;
    if links == Links::Refuse {
        flags |= OFlags::NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits().cast_signed())
        .open(path)?;
    if !file.metadata()?.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    Ok(file)
}

/// The first `limit` bytes of a regular file; more is an error, not a bigger buffer.
pub fn read_bounded(path: &Path, links: Links, limit: usize) -> io::Result<Vec<u8>> {
    let file = open_regular(path, links)?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1).read_to_end(&mut bytes)?;
    if bytes.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes"),
        ));
    }
    Ok(bytes)
}

/// [`read_bounded`] as text (invalid UTF-8 replaced).
pub fn read_text(path: &Path, links: Links, limit: usize) -> io::Result<String> {
    read_bounded(path, links, limit).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// The last `bytes` bytes of a regular file, whatever its size; `None` if it is empty or not a
/// regular file.
pub fn tail(path: &Path, links: Links, bytes: u64) -> Option<(Vec<u8>, bool)> {
    let mut file = open_regular(path, links).ok()?;
    let len = file.metadata().ok()?.len();
    if len == 0 {
        return None;
    }
    let start = len.saturating_sub(bytes);
    file.seek(SeekFrom::Start(start)).ok()?;
    let mut tail = Vec::new();
    file.take(bytes).read_to_end(&mut tail).ok()?;
    Some((tail, start > 0))
}

/// O_NOFOLLOW on a symlink fails with ELOOP on Linux and EMLINK on FreeBSD; confirm with lstat.
fn is_symlink_refusal(err: &io::Error, path: &Path) -> bool {
    let errno = rustix::io::Errno::from_io_error(err);
    (errno == Some(rustix::io::Errno::LOOP) || errno == Some(rustix::io::Errno::MLINK))
        && path
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
}

#[cfg(test)]
pub mod tests {
    use super::*;

    #[test]
    fn refuses_symlinks_and_leaves_the_target_alone() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "precious\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();

        let err = open(&link, "log", Mode::Append).unwrap_err().to_string();
        assert_eq!(
            err,
            format!("refusing log '{}': it is a symbolic link", link.display())
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "precious\n");
    }

    #[test]
    fn creates_with_tight_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("log");
        let lock = dir.path().join("lock");
        open(&log, "log", Mode::Append).unwrap();
        open(&lock, "lock", Mode::Lock).unwrap();
        let perms = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        // The umask may only take bits away.
        assert_eq!(perms(&log) & !0o640, 0);
        assert_eq!(perms(&lock) & !0o600, 0);
    }

    /// What others may put where a file is expected: a FIFO, and a link to /dev/zero, in `dir`.
    pub fn traps(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
        let fifo = dir.join("fifo");
        assert!(
            std::process::Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        let zero = dir.join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        (fifo, zero)
    }

    #[test]
    fn fifos_devices_and_links_are_refused_without_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let (fifo, zero) = traps(dir.path());
        // Each returns at once: a blocking open of the FIFO would hang this test.
        assert!(read_bounded(&fifo, Links::Follow, 64).is_err());
        assert!(read_bounded(&zero, Links::Refuse, 64).is_err());
        assert!(read_bounded(&zero, Links::Follow, 64).is_err(), "a device");
        assert!(tail(&fifo, Links::Refuse, 64).is_none());
        assert!(open(&fifo, "log", Mode::Append).is_err());
    }

    #[test]
    fn reads_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pid");
        std::fs::write(&file, "1234\n").unwrap();
        assert_eq!(read_text(&file, Links::Refuse, 16).unwrap(), "1234\n");
        std::fs::write(&file, "1".repeat(17)).unwrap();
        assert!(read_bounded(&file, Links::Refuse, 16).is_err());
        let (end, cut) = tail(&file, Links::Refuse, 4).unwrap();
        assert_eq!((end.as_slice(), cut), (&b"1111"[..], true));
    }

    #[test]
    fn refuses_directories() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(dir.path(), "lock", Mode::Lock)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lock"), "{err}");
    }
}
