//! The single-run lock: `flock(LOCK_EX|LOCK_NB)` through std's `File::try_lock` (stable since Rust 1.89;
//! the same lock fs2 and flock(1) take), on a file opened without following symlinks.

use std::fs::{File, TryLockError};
use std::path::Path;

use anyhow::{Result, bail};

use crate::secure_file::{self, Mode};

/// Holds the lock until dropped (closing the file releases it).
#[derive(Debug)]
pub struct Lock {
    _file: File,
}

/// Takes the lock, or returns `Ok(None)` when another run holds it.
pub fn try_acquire(path: &Path) -> Result<Option<Lock>> {
    let file = secure_file::open(path, "lock", Mode::Lock)?;
    match file.try_lock() {
        Ok(()) => Ok(Some(Lock { _file: file })),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(err)) => bail!("cannot lock '{}': {err}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_holder_is_turned_away_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let first = try_acquire(&path).unwrap().expect("free lock");
        assert!(try_acquire(&path).unwrap().is_none());
        drop(first);
        assert!(try_acquire(&path).unwrap().is_some());
    }
}
