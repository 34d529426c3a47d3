//! The one way root creates or replaces a file (#18): the SVG chart, the metrics textfile, the state
//! file, evidence files and the hook's `--listen` socket. The directory must be one only root (or
//! the user running us) can change: it and every directory above it owned by root or us and not
//! writable by group or others, unless sticky (as /tmp: there others cannot rename or remove what is
//! ours). The file is made under an unpredictable temporary name in that directory (`O_CREAT|O_EXCL|
//! O_NOFOLLOW`, relative to the directory's descriptor), its mode and group set through its own
//! descriptor, and renamed over the name: a link at the name is refused, or if planted after the
//! check, replaced itself, never followed.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::hash::BuildHasher;
use std::io::Write as _;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, RenameFlags};

/// The sticky bit: in such a directory only an entry's owner (and root) may rename or remove it.
const STICKY: u32 = 0o1000;

/// A name in a directory only root (or we) can change, ready to be written.
#[derive(Debug)]
pub struct Place {
    /// The directory, open: every call below is relative to it, so a directory swapped after the
    /// checks changes nothing.
    dir: OwnedFd,
    /// Its canonical path, for what only takes a path (binding a socket).
    dir_path: PathBuf,
    /// Whether others may write the directory (it is sticky): an entry there must be ours.
    shared: bool,
    /// The name within it.
    name: OsString,
    /// The path as given, for messages.
    path: PathBuf,
    /// What the file is, for messages (`--svg`, `state file` …).
    what: String,
}

/// What is at the name now, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Existing {
    /// No entry by that name.
    Nothing,
    /// A regular file.
    File,
    /// A unix socket.
    Socket,
    /// A symbolic link, directory, FIFO or device.
    Other(FileType),
}

/// Opens the directory of `path` as a [`Place`], refusing a directory others could change.
pub fn place(path: &Path, what: &str) -> Result<Place> {
    let Some(name) = path.file_name() else {
        bail!("{what} '{}': not a file name", path.display());
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let canonical = dir.canonicalize().with_context(|| {
        format!(
            "{what} '{}': no directory '{}'",
            path.display(),
            dir.display()
        )
    })?;
    let refuse = |at: &Path, why: String| -> anyhow::Error {
        anyhow::anyhow!(
            "{what} '{}': refusing to write in '{}': {why}: choose a directory only root can write",
            path.display(),
            if at == canonical { dir } else { at }.display()
        )
    };
    for ancestor in canonical.ancestors() {
        let meta = std::fs::metadata(ancestor)
            .with_context(|| format!("{what}: cannot read '{}'", ancestor.display()))?;
        if let Some(why) = untrusted(meta.uid(), meta.mode()) {
            return Err(refuse(ancestor, why));
        }
    }
    let fd = rustix::fs::open(
        &canonical,
        OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .with_context(|| format!("{what}: opening '{}'", canonical.display()))?;
    // The directory as opened, checked again: it is the one written in.
    let stat = rustix::fs::fstat(&fd)?;
    if let Some(why) = untrusted(stat.st_uid, stat.st_mode) {
        return Err(refuse(&canonical, why));
    }
    Ok(Place {
        dir: fd,
        dir_path: canonical.clone(),
        shared: stat.st_mode & 0o022 != 0,
        name: name.to_owned(),
        path: path.to_owned(),
        what: what.to_owned(),
    })
}

/// Why a directory with this owner and mode is one others could change, if it is.
fn untrusted(uid: u32, mode: u32) -> Option<String> {
    let me = rustix::process::geteuid().as_raw();
    if uid != 0 && uid != me {
        return Some(format!("it is owned by uid {uid}, not by root"));
    }
    if mode & 0o022 != 0 && mode & STICKY == 0 {
        return Some(format!(
            "group or others can write it (mode {:04o}) and it is not sticky",
            mode & 0o7777
        ));
    }
    None
}

impl Place {
    /// What is at the name now (a link is not followed).
    pub fn existing(&self) -> Result<Existing> {
        match rustix::fs::statat(&self.dir, &self.name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) => {
                let me = rustix::process::geteuid().as_raw();
                let kind = FileType::from_raw_mode(stat.st_mode);
                if self.shared && stat.st_uid != me && kind != FileType::Symlink {
                    bail!(
                        "{} '{}' belongs to uid {} in a directory others can write: not replaced",
                        self.what,
                        self.path.display(),
                        stat.st_uid
                    );
                }
                Ok(match kind {
                    FileType::RegularFile => Existing::File,
                    FileType::Socket => Existing::Socket,
                    other => Existing::Other(other),
                })
            }
            Err(rustix::io::Errno::NOENT) => Ok(Existing::Nothing),
            Err(err) => {
                Err(err).with_context(|| format!("{} '{}'", self.what, self.path.display()))
            }
        }
    }

    /// Refuses anything at the name but a regular file (a link is left as it is).
    fn refuse_all_but_files(&self) -> Result<()> {
        match self.existing()? {
            Existing::Nothing | Existing::File => Ok(()),
            Existing::Other(FileType::Symlink) => bail!(
                "{} '{}' is a symlink: not written, left as it is",
                self.what,
                self.path.display()
            ),
            _ => bail!(
                "{} '{}' exists and is not a regular file: not replaced",
                self.what,
                self.path.display()
            ),
        }
    }

    /// Writes `bytes` as the file, mode `mode`: replacing the one there, or with `keep` refusing to.
    pub fn write(&self, bytes: &[u8], mode: u32, keep: bool) -> Result<()> {
        self.refuse_all_but_files()?;
        let context = || format!("{} '{}'", self.what, self.path.display());
        let (temp, fd) = self.create_temp()?;
        let written = (|| -> Result<()> {
            let mut file = std::fs::File::from(fd);
            file.write_all(bytes)?;
            rustix::fs::fchmod(&file, Mode::from_raw_mode(mode))?;
            file.sync_all()?;
            let flags = if keep {
                RenameFlags::NOREPLACE
            } else {
                RenameFlags::empty()
            };
            rustix::fs::renameat_with(&self.dir, &temp, &self.dir, &self.name, flags)?;
            Ok(())
        })();
        if let Err(err) = written {
            let _ = rustix::fs::unlinkat(&self.dir, &temp, AtFlags::empty());
            return Err(err).with_context(context);
        }
        rustix::fs::fsync(&self.dir).with_context(context)?;
        Ok(())
    }

    /// A new file under a name nobody can guess, made in the directory without following anything.
    fn create_temp(&self) -> Result<(OsString, OwnedFd)> {
        for _ in 0..8 {
            let temp = self.temp_name();
            match rustix::fs::openat(
                &self.dir,
                &temp,
                OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::WRONLY | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => return Ok((temp, fd)),
                Err(rustix::io::Errno::EXIST) => {}
                Err(err) => {
                    return Err(err).with_context(|| {
                        format!(
                            "{}: a temporary file beside '{}'",
                            self.what,
                            self.path.display()
                        )
                    });
                }
            }
        }
        bail!(
            "{}: no free temporary name beside '{}'",
            self.what,
            self.path.display()
        )
    }

    /// `.NAME.XXXXXXXXXXXXXXXX`: the name (cut so the whole stays a valid name) and 64 random bits
    /// (std's hasher keys come from the OS's random source).
    fn temp_name(&self) -> OsString {
        let random = RandomState::new().hash_one(std::time::SystemTime::now());
        let stem = &self.name.as_bytes()[..self.name.len().min(200)];
        let mut temp = OsString::from(".");
        temp.push(std::ffi::OsStr::from_bytes(stem));
        temp.push(format!(".{random:016x}"));
        temp
    }

    /// Binds a datagram socket at the name, mode 0660, group `gid`: bound under a temporary name
    /// (never an existing entry), its group set there without following a link, then renamed over
    /// the name (a stale socket the caller found dead is replaced in the same step). A unix socket's
    /// own descriptor cannot do it: fchown on it changes the socket, not the file.
    pub fn bind_datagram(&self, gid: u32) -> Result<UnixDatagram> {
        let context = || format!("{} '{}'", self.what, self.path.display());
        let temp = self.temp_name();
        // Created 0660 from the start: no moment in which others may send.
        let umask = rustix::process::umask(Mode::from_raw_mode(0o117));
        let bound = UnixDatagram::bind(self.dir_path.join(&temp));
        rustix::process::umask(umask);
        let socket = bound.with_context(|| format!("{}: binding", context()))?;
        let placed = (|| -> Result<()> {
            rustix::fs::chownat(
                &self.dir,
                &temp,
                None,
                Some(Gid::from_raw(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
            rustix::fs::renameat(&self.dir, &temp, &self.dir, &self.name)?;
            Ok(())
        })();
        if let Err(err) = placed {
            let _ = rustix::fs::unlinkat(&self.dir, &temp, AtFlags::empty());
            return Err(err).with_context(context);
        }
        Ok(socket)
    }
}

/// Replaces the file at `path` with `bytes`, mode `mode`, as [`Place::write`] does.
pub fn replace(path: &Path, what: &str, bytes: &[u8], mode: u32) -> Result<()> {
    place(path, what)?.write(bytes, mode, false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_by_rename_with_the_mode_asked_and_leaves_links() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chart.svg");
        replace(&path, "--svg", b"one", 0o644).unwrap();
        replace(&path, "--svg", b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o644);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left");

        let target = dir.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = replace(&link, "--svg", b"x", 0o644).unwrap_err();
        assert!(err.to_string().contains("is a symlink"), "{err}");
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");

        let kept = place(&path, "evidence")
            .unwrap()
            .write(b"three", 0o600, true);
        assert!(kept.is_err(), "an existing file is kept");
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
    }

    #[test]
    fn refuses_directories_others_can_write_unless_sticky() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = replace(&open.join("f"), "--svg", b"x", 0o644).unwrap_err();
        assert!(err.to_string().contains("not sticky"), "{err}");
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).unwrap();
        replace(&open.join("f"), "--svg", b"x", 0o644).unwrap();
    }
}
