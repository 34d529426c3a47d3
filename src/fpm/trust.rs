//! What root may run and whom it may take for php-fpm (#13): a php-fpm binary is trusted only if
//! nobody but root (or the user running us) could have written it or swapped it: the file and every
//! directory above it owned by root or us and not writable by group or others (a sticky directory
//! such as /tmp is fine: others cannot rename what they do not own there). User names are looked up in
//! /etc/passwd, which only root writes.

use std::ffi::OsString;
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
/// root runs (a watch file, a pools file, a php-fpm configuration root starts a master with) is
/// held to what [`binary`] holds a program to. A link on the way counts as much as the file: one in
/// a directory others can write would let them choose which of root's files is read (and swap it
/// between this check and the read), so it is refused. Read the canonical path returned, not `path`.
pub fn root_file(path: &Path) -> Result<PathBuf> {
    links_only_root_placed(path)?;
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

/// `dir` made canonical, if only root (or we) could add a file to it: an `include` pattern's
/// directory, whose every matching file php-fpm reads. Unlike a directory above a file, a sticky
/// one will not do (others may add their own files to it).
pub fn root_dir(dir: &Path) -> Result<PathBuf> {
    links_only_root_placed(dir)?;
    let canonical = dir
        .canonicalize()
        .with_context(|| format!("cannot find '{}'", dir.display()))?;
    let meta = std::fs::metadata(&canonical)
        .with_context(|| format!("cannot read '{}'", canonical.display()))?;
    if !meta.is_dir() {
        bail!("'{}' is not a directory", canonical.display());
    }
    if meta.mode() & 0o022 != 0 {
        bail!(
            "directory '{}' is writable by group or others: not trusted to run as root",
            canonical.display()
        );
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

/// Most links followed on the way to a file, as the kernel allows (`ELOOP` past 40).
const MAX_LINKS: usize = 40;

/// Every link met resolving `path` is root's (or ours), in a directory only root (or we) could
/// write, as are all the directories above it. A path that does not resolve is left to the caller.
fn links_only_root_placed(path: &Path) -> Result<()> {
    let absolute = std::env::current_dir()
        .context("cannot read the current directory")?
        .join(path);
    // Components still to walk, the next one last.
    let mut pending: Vec<OsString> = absolute
        .components()
        .rev()
        .map(|c| c.as_os_str().to_owned())
        .collect();
    let mut at = PathBuf::new();
    let mut links = 0;
    while let Some(part) = pending.pop() {
        if part == "." {
            continue;
        }
        if part == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&part);
        let Ok(meta) = std::fs::symlink_metadata(&next) else {
            return Ok(());
        };
        if !meta.file_type().is_symlink() {
            at = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            bail!("'{}': too many links", path.display());
        }
        // A link's own mode means nothing (always 0777): its owner, and where it lies, do.
        let uid = meta.uid();
        let placed = if uid == 0 || uid == me() {
            Ok(())
        } else {
            Err(anyhow::anyhow!("it is owned by uid {uid}"))
        };
        let placed = placed.and_then(|()| {
            at.ancestors().try_for_each(|dir| {
                let meta = std::fs::metadata(dir)
                    .with_context(|| format!("cannot read directory '{}'", dir.display()))?;
                check_owner(dir, &meta, "directory")
            })
        });
        if let Err(err) = placed {
            bail!(
                "link '{}' could be replaced by another user ({err:#})",
                next.display()
            );
        }
        let target = std::fs::read_link(&next)
            .with_context(|| format!("cannot read link '{}'", next.display()))?;
        // An absolute target starts again from `/`; a relative one from the link's directory.
        pending.extend(target.components().rev().map(|c| c.as_os_str().to_owned()));
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
    fn links_count_where_they_lie() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let file = d.join("pools.toml");
        std::fs::write(&file, "").unwrap();
        let open = d.join("open");
        std::fs::create_dir(&open).unwrap();
        std::os::unix::fs::symlink("../pools.toml", open.join("link")).unwrap();
        // In a directory only we write, followed, `..` and all.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            root_file(&open.join("link")).unwrap(),
            file.canonicalize().unwrap()
        );
        // In one anyone writes: refused, though the file it names is ours.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = format!("{:#}", root_file(&open.join("link")).unwrap_err());
        assert!(err.contains("could be replaced by another user"), "{err}");
        // Sticky (as /tmp): others cannot rename our link there.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        root_file(&open.join("link")).unwrap();
        // A directory reached through such a link counts too.
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::os::unix::fs::symlink("..", open.join("up")).unwrap();
        let err = format!("{:#}", root_file(&open.join("up/pools.toml")).unwrap_err());
        assert!(err.contains("could be replaced by another user"), "{err}");
    }

    #[test]
    fn users_by_name_or_number() {
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(uid_of("33"), Some(33));
        assert_eq!(uid_of("no-such-user-here"), None);
    }
}
