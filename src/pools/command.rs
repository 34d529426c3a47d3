//! `php-relaunch pools …`: what each command prints and logs, and its exit code.

use anyhow::Result;

use super::{Pool, deploy, load, rolling_restart, select, start, status, stop};
use crate::cli::{PoolsArgs, PoolsCommand};
use crate::exit::Exit;
use crate::fpm;
use crate::journal::Journal;
use crate::lock;
use crate::stdout::{errln, outln};

/// `php-relaunch pools …`: exit 0 when all went well, 1 when a replica failed or a stop was refused,
/// 5 when another run holds the lock; errors (a bad pools file) are exit 2.
pub fn command(cli: &PoolsArgs) -> Result<Exit> {
    let all = load(&cli.config)?;
    let (pool, replica) = match &cli.command {
        PoolsCommand::List => return pools_list(&all, cli.json),
        PoolsCommand::Status(chosen) => {
            return pools_status(&all, chosen.pool.as_deref(), chosen.replica, cli.json);
        }
        PoolsCommand::Start(chosen)
        | PoolsCommand::Stop(chosen)
        | PoolsCommand::Restart(chosen) => (chosen.pool.clone(), chosen.replica),
        PoolsCommand::Deploy { pool, .. } => (Some(pool.clone()), None),
    };
    let selected = select(&all, pool.as_deref(), replica)?;
    // Each pool's own lock, the one its `--pool NAME` runs take; all of them before anything is done.
    let paths = match &cli.lock {
        Some(path) => vec![path.clone()],
        None => selected
            .iter()
            .map(|(pool, _)| lock::instance_path(&fpm::pool_key(&pool.name)))
            .collect(),
    };
    let mut locks = Vec::new();
    for path in &paths {
        match lock::try_acquire(path)? {
            Ok(lock) => locks.push(lock),
            Err(holder) => {
                errln!("php-relaunch: {}", lock::busy_message(path, &holder));
                return Ok(Exit::Busy);
            }
        }
    }
    for lock in &mut locks {
        lock.say_holder(&lock::holder("pools"));
    }
    let mut journal = Journal::open(&cli.log)?;
    let mut say = |line: String| {
        outln!("{line}");
        if let Err(err) = journal.append_step(&line) {
            errln!("php-relaunch: {err:#}");
        }
    };
    let mut failed = 0;
    for (pool, replicas) in selected {
        failed += match &cli.command {
            PoolsCommand::Restart(_) => rolling_restart(pool, &replicas, &mut say),
            PoolsCommand::Deploy { dir, .. } => deploy(pool, dir, &mut say)?,
            command => replicas
                .iter()
                .filter(|r| {
                    let done = match command {
                        PoolsCommand::Start(_) => start(pool, r, &mut say),
                        _ => stop(pool, r, &mut say),
                    };
                    done.map_err(|err| say(format!("{}: {err:#}", r.name)))
                        .is_err()
                })
                .count(),
        };
    }
    Ok(if failed == 0 {
        Exit::Healthy
    } else {
        Exit::Failing
    })
}

/// `pools list`.
fn pools_list(all: &[Pool], json: bool) -> Result<Exit> {
    if json {
        let list: Vec<_> = all
            .iter()
            .map(|p| {
                serde_json::json!({
                    "pool": p.name,
                    "balancer": p.balancer.name(),
                    "replicas": p.replicas.iter().map(|r| serde_json::json!({
                        "replica": r.name, "fpm_bin": r.fpm_bin, "fpm_config": r.fpm_config,
                        "ping": r.ping.to_string(),
                    })).collect::<Vec<_>>(),
                    "release_link": p.release_link,
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&list)?);
    } else {
        for p in all {
            outln!(
                "{}: {} replicas, balancer {}",
                p.name,
                p.replicas.len(),
                p.balancer.name()
            );
            for r in &p.replicas {
                outln!(
                    "  {}: {} {} ping {}",
                    r.name,
                    r.fpm_bin.display(),
                    r.fpm_config.display(),
                    r.ping
                );
            }
        }
    }
    Ok(Exit::Healthy)
}

/// `pools status [POOL [REPLICA]]`: exit 1 when a replica does not answer its ping.
fn pools_status(
    all: &[Pool],
    pool: Option<&str>,
    replica: Option<usize>,
    json: bool,
) -> Result<Exit> {
    let mut rows = Vec::new();
    for (pool, replicas) in select(all, pool, replica)? {
        rows.extend(status(pool, &replicas)?);
    }
    if json {
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for row in &rows {
            outln!(
                "{}: {}, ping {}, balancer {}{}",
                row.replica,
                row.master_pid
                    .map_or_else(|| "not running".to_owned(), |p| format!("master {p}")),
                row.ping,
                row.balancer,
                row.release
                    .as_deref()
                    .map(|r| format!(", release {r}"))
                    .unwrap_or_default()
            );
        }
    }
    let all_ok = rows.iter().all(|r| r.ping_ok);
    Ok(if all_ok { Exit::Healthy } else { Exit::Failing })
}
