//! The locks that keep runs from overlapping: `flock(LOCK_EX|LOCK_NB)` through std's `File::try_lock`
//! (stable since Rust 1.89; the same lock fs2 and flock(1) take), on a file opened without following
//! symlinks. There is one lock per php-fpm instance (#19), under /run/php-relaunch/, so runs for
//! different masters never wait for each other; the holder writes who it is into the file, so a run
//! turned away can say which run holds it.

use std::fs::{File, TryLockError};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::poll::poll_until;
use crate::secure_file::{self, Mode};
use crate::state;

/// Where the per-instance locks live.
pub const DIR: &str = "/run/php-relaunch";

/// How often a run waiting for a lock asks for it again.
const RETRY: Duration = Duration::from_millis(100);

/// The most of a holder's description read back.
const MAX_HOLDER: u64 = 256;

/// Holds the lock until dropped (closing the file releases it).
#[derive(Debug)]
pub struct Lock {
    file: File,
}

impl Lock {
    /// Writes who holds the lock (pid, what started the run, since when) for runs turned away.
    pub fn say_holder(&mut self, holder: &str) {
        let file = &mut self.file;
        let _ = file
            .set_len(0)
            .and_then(|()| file.seek(SeekFrom::Start(0)))
            .and_then(|_| file.write_all(holder.as_bytes()));
    }
}

/// The lock of one php-fpm instance, named by `key` (its master's config, or its service):
/// `/run/php-relaunch/<key in safe characters>-<hash>.lock`.
pub fn instance_path(key: &str) -> PathBuf {
    Path::new(DIR).join(format!("{}.lock", state::file_stem(key)))
}

/// Takes the lock, or returns `Ok(Err(holder))` when another run holds it, with what that run said
/// of itself (empty when it said nothing). The directory of the default locks is made here (root's,
/// 0755), and refused if anyone else could write to it.
pub fn try_acquire(path: &Path) -> Result<Result<Lock, String>> {
    if path.parent() == Some(Path::new(DIR)) {
        lock_dir(Path::new(DIR))?;
    }
    let mut file = secure_file::open(path, "lock", Mode::Lock)?;
    match file.try_lock() {
        Ok(()) => Ok(Ok(Lock { file })),
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = (&mut file).take(MAX_HOLDER).read_to_string(&mut holder);
            Ok(Err(holder.trim().to_owned()))
        }
        Err(TryLockError::Error(err)) => bail!("cannot lock '{}': {err}", path.display()),
    }
}

/// The lock, asked for again every [`RETRY`] until `deadline` (a hook's run waits for the cron run
/// that holds it, a run booking its mail for the next); `None` when another run held it all that
/// time. A lock that cannot be taken at all (its file refused) is an error.
pub fn acquire_within(path: &Path, deadline: Instant) -> Option<Result<Lock>> {
    poll_until(deadline, RETRY, || match try_acquire(path) {
        Ok(Ok(lock)) => Ok(Ok(lock)),
        Ok(Err(_)) => Err(()),
        Err(err) => Ok(Err(err)),
    })
    .ok()
}

/// How a run describes itself to runs its lock turns away: "pid 12, cron, since 10:42:03".
pub fn holder(what: &str) -> String {
    format!(
        "pid {}, {what}, since {}",
        std::process::id(),
        chrono::Local::now().format("%H:%M:%S")
    )
}

/// What a busy lock says on stderr: "another run (pid 12, cron, since …) holds the lock 'PATH'".
pub fn busy_message(path: &Path, holder: &str) -> String {
    if holder.is_empty() {
        format!("another run holds the lock '{}'", path.display())
    } else {
        format!("another run ({holder}) holds the lock '{}'", path.display())
    }
}

/// Makes `dir` (0755) unless it is there, and checks it is a directory of ours that nobody else
/// can write to: a lock in a directory others can write could be swapped under us.
fn lock_dir(dir: &Path) -> Result<()> {
    match std::fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(err) => return Err(err).with_context(|| format!("creating '{}'", dir.display())),
    }
    let meta =
        std::fs::symlink_metadata(dir).with_context(|| format!("reading '{}'", dir.display()))?;
    let me = rustix::process::geteuid().as_raw();
    if !meta.is_dir() || meta.uid() != me || meta.mode() & 0o022 != 0 {
        bail!(
            "refusing lock directory '{}': not a directory of uid {me} that only it can write",
            dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_turned_away_until_the_first_lets_go_and_told_who_holds_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let mut first = try_acquire(&path).unwrap().expect("free lock");
        assert_eq!(try_acquire(&path).unwrap().unwrap_err(), "");
        first.say_holder("pid 7, cron, since 10:00:00");
        first.say_holder("pid 8, hook, since 10:00:01");
        assert_eq!(
            try_acquire(&path).unwrap().unwrap_err(),
            "pid 8, hook, since 10:00:01"
        );
        drop(first);
        assert!(try_acquire(&path).unwrap().is_ok());
    }

    #[test]
    fn instances_have_locks_of_their_own() {
        let a = instance_path("fpm:/etc/php/8.2/fpm/php-fpm.conf");
        let b = instance_path("fpm:/etc/php/8.1/fpm/php-fpm.conf");
        assert_ne!(a, b);
        assert_eq!(a.parent(), Some(Path::new(DIR)));
        assert_eq!(a, instance_path("fpm:/etc/php/8.2/fpm/php-fpm.conf"));
    }

    #[test]
    fn a_lock_directory_others_can_write_is_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        lock_dir(dir.path()).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(lock_dir(dir.path()).is_err());
    }
}
