//! What root may run and whom it may take for php-fpm (#13): a php-fpm binary is trusted only if
//! nobody but root (or the user running us) could have written it or swapped it: the file and every
//! directory above it owned by root or us and not writable by group or others (a sticky directory
//! such as /tmp is fine: others cannot rename what they do not own there). User names are looked up in
//! /etc/passwd, which only root writes.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use crate::secure_file::{self, Links};

/// The sticky bit: in such a directory only an entry's owner may rename or remove it.
const STICKY: u32 = 0o1000;

/// The user this process runs as, whose files and processes it trusts besides root's.
pub fn me() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// `path` made canonical, if it is a program only root (or we) could have put there.
pub fn binary(path: &Path) -> Result<PathBuf> {
    let canonical = path
        .canonicalize()
        .with_context(|| format!("cannot find '{}'", path.display()))?;
    let meta = std::fs::metadata(&canonical)
        .with_context(|| format!("cannot read '{}'", canonical.display()))?;
    if !meta.is_file() || meta.mode() & 0o111 == 0 {
        bail!("'{}' is not an executable file", canonical.display());
    }
    only_root_could_write(&canonical, &meta)?;
    Ok(canonical)
}

/// `path` made canonical, if it is a file only root (or we) could have written: what decides what
/// root runs (a watch file, a php-fpm configuration root starts a master with) is held to what
/// [`binary`] holds a program to.
pub fn root_file(path: &Path) -> Result<PathBuf> {
    let canonical = path
        .canonicalize()
        .with_context(|| format!("cannot find '{}'", path.display()))?;
    let meta = std::fs::metadata(&canonical)
        .with_context(|| format!("cannot read '{}'", canonical.display()))?;
    if !meta.is_file() {
        bail!("'{}' is not a regular file", canonical.display());
    }
    only_root_could_write(&canonical, &meta)?;
    Ok(canonical)
}

/// The file and every directory above it owned by root (or us), not writable by group or others.
fn only_root_could_write(canonical: &Path, meta: &std::fs::Metadata) -> Result<()> {
    check_owner(canonical, meta, "file")?;
    for dir in canonical.ancestors().skip(1) {
        let meta = std::fs::metadata(dir)
            .with_context(|| format!("cannot read directory '{}'", dir.display()))?;
        check_owner(dir, &meta, "directory")?;
    }
    Ok(())
}

fn check_owner(path: &Path, meta: &std::fs::Metadata, what: &str) -> Result<()> {
    let uid = meta.uid();
    if uid != 0 && uid != me() {
        bail!(
            "{what} '{}' is owned by uid {uid}, not by root: not trusted to run as root",
            path.display()
        );
    }
    let sticky_dir = meta.is_dir() && meta.mode() & STICKY != 0;
    if meta.mode() & 0o022 != 0 && !sticky_dir {
        bail!(
            "{what} '{}' is writable by group or others: not trusted to run as root",
            path.display()
        );
    }
    Ok(())
}

/// The uid of a user named in a php-fpm config (a name, or a number as php-fpm also takes).
pub fn uid_of(user: &str) -> Option<u32> {
    id_in(Path::new("/etc/passwd"), user)
}

/// The gid of a group (a name, or a number).
pub fn gid_of(group: &str) -> Option<u32> {
    id_in(Path::new("/etc/group"), group)
}

/// The id of `name` in a file of `name:password:id:…` lines (/etc/passwd, /etc/group).
fn id_in(file: &Path, name: &str) -> Option<u32> {
    if let Ok(id) = name.parse() {
        return Some(id);
    }
    let text = secure_file::read_text(file, Links::Follow, 4 << 20).ok()?;
    text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next()? == name).then_some(())?;
        fields.nth(1)?.parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn system_binaries_are_trusted() {
        assert_eq!(
            binary(Path::new("/bin/sh")).unwrap(),
            Path::new("/bin/sh").canonicalize().unwrap()
        );
    }

    #[test]
    fn writable_files_and_directories_are_not() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("php-fpm");
        std::fs::copy("/bin/true", &bin).unwrap();
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        binary(&bin).unwrap();

        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o757)).unwrap();
        let err = binary(&bin).unwrap_err().to_string();
        assert!(err.contains("writable by group or others"), "{err}");

        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = binary(&bin).unwrap_err().to_string();
        assert!(err.starts_with("directory '"), "{err}");

        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(
            binary(&bin)
                .unwrap_err()
                .to_string()
                .contains("not an executable")
        );
    }

    #[test]
    fn users_by_name_or_number() {
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(uid_of("33"), Some(33));
        assert_eq!(uid_of("no-such-user-here"), None);
    }
}
