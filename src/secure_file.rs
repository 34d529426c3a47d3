//! Opening the files a root process writes (the lock and the log) without being tricked: never through
//! a symlink, only regular files we own, created with tight permissions, close-on-exec (std's default),
//! so php-fpm started by a relaunch never inherits them.

use std::fs::{File, OpenOptions};
use std::io;
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
    options
        .create(true)
        .custom_flags(OFlags::NOFOLLOW.bits().cast_signed());
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

/// O_NOFOLLOW on a symlink fails with ELOOP on Linux and EMLINK on FreeBSD; confirm with lstat.
fn is_symlink_refusal(err: &io::Error, path: &Path) -> bool {
    let errno = rustix::io::Errno::from_io_error(err);
    (errno == Some(rustix::io::Errno::LOOP) || errno == Some(rustix::io::Errno::MLINK))
        && path
            .symlink_metadata()
            .is_ok_and(|m| m.file_type().is_symlink())
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn refuses_directories() {
        let dir = tempfile::tempdir().unwrap();
        let err = open(dir.path(), "lock", Mode::Lock)
            .unwrap_err()
            .to_string();
        assert!(err.contains("lock"), "{err}");
    }
}
