//! What php-relaunch reads of a php-fpm configuration: the main file and the files it includes, for
//! the pid file, the logs worth showing in an alert, and the pools with their users (to recognise a
//! dead master's orphaned workers). Configuration is root's and may be linked, so links are
//! followed; every read is still non-blocking and bounded. The paths it names (pid, logs) lie where
//! others may write, and are opened by their readers with care (`secure_file`).

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::secure_file::{self, Links};

/// The most of one config file that is read.
const MAX_CONFIG: usize = 1 << 20;

/// How many included files are read at most.
const MAX_INCLUDES: usize = 1000;

/// A php-fpm configuration as far as php-relaunch cares.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FpmConf {
    /// The `pid` setting of `[global]`, when absolute.
    pub pid_file: Option<PathBuf>,
    /// The global `error_log` and the pools' `slowlog`s, absolute paths only.
    pub logs: Vec<PathBuf>,
    /// The pools defined.
    pub pools: Vec<PoolConf>,
}

/// One `[pool]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConf {
    /// Its name, as workers show it (`php-fpm: pool NAME`).
    pub name: String,
    /// Its `user` setting, if any.
    pub user: Option<String>,
    /// The file its section is in.
    pub file: PathBuf,
    /// The settings `doctor` looks at, as written (`listen`, `pm`, `ping.path`, `pm.status_path`,
    /// `pm.status_listen`).
    pub settings: BTreeMap<String, String>,
}

/// The pool settings kept in [`PoolConf::settings`].
const POOL_SETTINGS: [&str; 5] = [
    "listen",
    "pm",
    "ping.path",
    "pm.status_path",
    "pm.status_listen",
];

/// Reads `config` and what it includes. Unreadable files are skipped: this serves alerts and
/// orphan detection, never a decision to run or signal something on its own.
pub fn read(config: &Path) -> FpmConf {
    let mut conf = FpmConf::default();
    let Ok(main) = secure_file::read_text(config, Links::Follow, MAX_CONFIG) else {
        return conf;
    };
    let mut texts = vec![main];
    let includes: Vec<PathBuf> = texts[0]
        .lines()
        .filter_map(|l| setting(l, "include"))
        .flat_map(|pattern| expand(&pattern))
        .take(MAX_INCLUDES)
        .collect();
    let mut files = vec![config.to_owned()];
    for file in &includes {
        if let Ok(text) = secure_file::read_text(file, Links::Follow, MAX_CONFIG) {
            texts.push(text);
            files.push(file.clone());
        }
    }
    for (index, (text, file)) in texts.iter().zip(&files).enumerate() {
        // The main file begins in [global]; an included file in no section until it names one.
        let mut section = (index == 0).then(|| "global".to_owned());
        for line in text.lines() {
            if let Some(name) = section_name(line) {
                if name != "global" && !conf.pools.iter().any(|p| p.name == name) {
                    conf.pools.push(PoolConf {
                        name: name.clone(),
                        user: None,
                        file: file.clone(),
                        settings: BTreeMap::new(),
                    });
                }
                section = Some(name);
                continue;
            }
            let global = section.as_deref() == Some("global");
            if global && let Some(pid) = setting(line, "pid") {
                conf.pid_file = Some(PathBuf::from(pid)).filter(|p| p.is_absolute());
            }
            if let Some(pool) = section.as_deref().filter(|_| !global)
                && let Some(entry) = conf.pools.iter_mut().find(|p| p.name == pool)
            {
                if let Some(user) = setting(line, "user") {
                    entry.user = Some(user);
                }
                for key in POOL_SETTINGS {
                    if let Some(value) = setting(line, key) {
                        entry
                            .settings
                            .insert(key.to_owned(), value.replace("$pool", pool));
                    }
                }
            }
            for key in ["error_log", "slowlog"] {
                let Some(value) = setting(line, key) else {
                    continue;
                };
                let value = match &section {
                    Some(pool) if !global => value.replace("$pool", pool),
                    _ => value,
                };
                let path = PathBuf::from(value);
                if path.is_absolute() && !conf.logs.contains(&path) {
                    conf.logs.push(path);
                }
            }
        }
    }
    conf
}

/// `config` made canonical, if it and every file it includes, and every directory an `include`
/// pattern lists, are root's as [`super::root_file`] holds a file (#21): root starts a master with
/// it, and an included file says as much as the main one (`[global]` settings, pools, their
/// `user` and `listen`). Includes of included files are followed too, as php-fpm does; a relative
/// pattern, or one with a wildcard outside its last component, cannot be judged and is refused.
pub fn root_config(config: &Path) -> anyhow::Result<PathBuf> {
    use anyhow::{Context, bail};
    let canonical = super::root_file(config)?;
    let mut pending = vec![canonical.clone()];
    let mut read = 0;
    while let Some(file) = pending.pop() {
        read += 1;
        if read > MAX_INCLUDES {
            bail!("'{}' includes too many files", canonical.display());
        }
        let text = secure_file::read_text(&file, Links::Follow, MAX_CONFIG)
            .with_context(|| format!("cannot read '{}'", file.display()))?;
        for pattern in text.lines().filter_map(|l| setting(l, "include")) {
            let path = Path::new(&pattern);
            let dir = path.parent().unwrap_or(Path::new(""));
            if !path.is_absolute() || dir.to_string_lossy().contains(['*', '?', '[']) {
                bail!(
                    "'{}' includes '{pattern}', which cannot be judged (a relative path, or a \
                     wildcard in a directory): not trusted to run as root",
                    file.display()
                );
            }
            super::trust::root_dir(dir)
                .with_context(|| format!("'{}' includes '{pattern}'", file.display()))?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let matched = if name.starts_with('*') || !name.contains(['*', '?', '[']) {
                expand(&pattern)
            } else {
                // A pattern `expand` does not read: every file of its directory, to be safe.
                std::fs::read_dir(dir)
                    .with_context(|| format!("cannot read '{}'", dir.display()))?
                    .flatten()
                    .map(|e| e.path())
                    .collect()
            };
            // What does not exist is not read (php-fpm warns that nothing matches).
            for included in matched.iter().filter(|p| p.symlink_metadata().is_ok()) {
                let included = super::root_file(included)
                    .with_context(|| format!("'{}' includes '{pattern}'", file.display()))?;
                pending.push(included);
            }
        }
    }
    Ok(canonical)
}

/// The first `key = value` setting of a php-fpm config file (its main file only).
pub fn setting_of(config: &Path, key: &str) -> Option<String> {
    secure_file::read_text(config, Links::Follow, MAX_CONFIG)
        .ok()?
        .lines()
        .find_map(|line| setting(line, key))
}

/// `[name]` → `name`.
fn section_name(line: &str) -> Option<String> {
    let name = line.trim().strip_prefix('[')?.strip_suffix(']')?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

/// `key = value` in a php-fpm config line, comments and quotes removed.
fn setting(line: &str, key: &str) -> Option<String> {
    let (k, v) = line.split_once('=')?;
    (k.trim() == key).then(|| {
        v.split(';')
            .next()
            .unwrap_or_default()
            .trim()
            .trim_matches('"')
            .to_owned()
    })
}

/// An `include` pattern: a path, or `DIR/*SUFFIX` as php-fpm's configs use.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let path = Path::new(pattern);
    let name = path.file_name().and_then(OsStr::to_str).unwrap_or_default();
    let Some(suffix) = name.strip_prefix('*') else {
        return vec![path.to_owned()];
    };
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.ends_with(suffix))
        })
        .collect();
    found.sort();
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid_file_pools_users_and_logs_across_includes() {
        let dir = tempfile::tempdir().unwrap();
        let pools = dir.path().join("pool.d");
        std::fs::create_dir(&pools).unwrap();
        let conf = dir.path().join("php-fpm.conf");
        std::fs::write(
            &conf,
            format!(
                "[global]\n; pid = /nope\npid = /run/x.pid ; comment\nerror_log = /var/log/fpm.log\n\
                 include = {}/*.conf\n",
                pools.display()
            ),
        )
        .unwrap();
        std::fs::write(
            pools.join("www.conf"),
            "[www]\nuser = www-data\npid = /not-global\nslowlog = /var/log/$pool.slow\n",
        )
        .unwrap();
        std::fs::write(pools.join("api.conf"), "[api]\nuser = \"api\"\n").unwrap();
        std::fs::write(pools.join("skipped.txt"), "[nope]\n").unwrap();
        let read = read(&conf);
        assert_eq!(read.pid_file, Some(PathBuf::from("/run/x.pid")));
        assert_eq!(
            read.logs,
            [
                PathBuf::from("/var/log/fpm.log"),
                PathBuf::from("/var/log/www.slow")
            ]
        );
        let pools: Vec<(&str, Option<&str>)> = read
            .pools
            .iter()
            .map(|p| (p.name.as_str(), p.user.as_deref()))
            .collect();
        assert_eq!(pools, [("api", Some("api")), ("www", Some("www-data"))]);
    }

    #[test]
    fn a_root_configuration_includes_only_what_root_could_write() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pools = d.join("pool.d");
        std::fs::create_dir(&pools).unwrap();
        std::fs::set_permissions(&pools, std::fs::Permissions::from_mode(0o755)).unwrap();
        let conf = d.join("php-fpm.conf");
        std::fs::write(&conf, format!("include = {}/*.conf\n", pools.display())).unwrap();
        std::fs::write(pools.join("www.conf"), "[www]\n").unwrap();
        root_config(&conf).unwrap();
        let mode = |path: &Path, mode| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        mode(&pools.join("www.conf"), 0o666);
        let err = format!("{:#}", root_config(&conf).unwrap_err());
        assert!(err.contains("www.conf' is writable by group"), "{err}");
        mode(&pools.join("www.conf"), 0o644);
        // Sticky will not do: others may add a file there.
        mode(&pools, 0o1777);
        let err = format!("{:#}", root_config(&conf).unwrap_err());
        assert!(err.contains("pool.d' is writable by group"), "{err}");
        mode(&pools, 0o755);
        std::fs::write(&conf, "include = pool.d/*.conf\n").unwrap();
        let err = format!("{:#}", root_config(&conf).unwrap_err());
        assert!(err.contains("cannot be judged"), "{err}");
    }

    #[test]
    fn a_pid_setting_outside_global_is_not_the_pid_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("php-fpm.conf");
        std::fs::write(&conf, "[www]\npid = /bad\n").unwrap();
        assert_eq!(read(&conf).pid_file, None);
    }
}
