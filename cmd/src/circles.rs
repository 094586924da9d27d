//! Preparing every circle before anything serves: open its OurDB at
//! `<data-dir>/<id>/` and build its engine (when this process's role works
//! it; with `--standby` only later, once its worker holds the queue's
//! lease), bind its port (when the role serves it). Start is all or nothing: if
//! any circle cannot be prepared, every failure is reported (each naming its
//! circle) and nothing is started, so a user is never left with some circles
//! silently missing.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::bail;

use crate::config::CircleConfig;
use crate::role::Role;

/// A circle's open database and the engine bound to it.
pub struct Store {
    /// Its open database (also held by the engine).
    pub db: Arc<ourdb::OurDb>,
    /// Its engine.
    pub engine: Arc<engine::CircleEngine>,
}

/// A circle ready to start.
pub struct Prepared {
    /// Its configuration.
    pub config: CircleConfig,
    /// Its database and engine: `Some` when this process runs its worker
    /// (roles `all` and `worker`), except with `--standby`: then its worker
    /// opens them once it holds the lease ([`Prepared::works`]).
    pub store: Option<Store>,
    /// Whether this process runs its worker.
    pub works: bool,
    /// Its bound port, `Some` exactly when this process serves it (roles
    /// `all` and `gateway`); servers get clones, so a restarted server
    /// reuses it.
    pub listener: Option<TcpListener>,
    /// Who its worker takes the queue's lease as
    /// (`worker::WorkerConfig::lease`; token 0): this process, this host,
    /// the database directory.
    pub lease: client::Lease,
}

/// What [`close_all`] closes: a circle's database, once its engine is gone.
pub type Closing = (CircleConfig, Arc<ourdb::OurDb>, Arc<engine::CircleEngine>);

impl Prepared {
    /// The parts [`close_all`] needs, for a circle that will not start;
    /// `None` when this process opened no database for it.
    pub fn closing(self) -> Option<Closing> {
        let config = self.config;
        self.store.map(|s| (config, s.db, s.engine))
    }
}

/// This machine, for queue leases: its name, plus its machine id where
/// there is one (two machines both called `localhost` still differ).
pub fn hostname() -> String {
    let name = host_name();
    match read_trimmed("/etc/machine-id") {
        Some(id) => format!("{name}/{id}"),
        None => name,
    }
}

/// This machine's name, as the gateway heartbeats show it.
pub fn host_name() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
        .or_else(|| read_trimmed("/etc/hostname"))
        .unwrap_or_else(|| "unknown-host".to_string())
}

/// A file's text without surrounding white space; `None` when it cannot be
/// read or is empty.
fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
}

/// Which circles cannot start because another database's worker (another
/// orchestrator's, on this or another host, or a circle of the same queue
/// name) holds their queue's lease on this Redis: the circle's id and one
/// line each, naming the circle, the queue and the holder's pid, host and
/// database.
pub async fn foreign_queues(
    clients: &crate::clients::Clients,
    prepared: &[Prepared],
) -> anyhow::Result<Vec<(u32, String)>> {
    // Only a worker takes a lease; a gateway shares a queue with any worker.
    let prepared: Vec<&Prepared> = prepared.iter().filter(|p| p.works).collect();
    let queues: Vec<String> = prepared.iter().map(|p| p.config.queue()).collect();
    // Each queue is looked up on its circle's Redis, one round trip per Redis.
    let mut leases: Vec<Option<client::Lease>> = vec![None; prepared.len()];
    for (client, members) in clients.groups(prepared.iter().map(|p| &p.config)) {
        let names: Vec<&str> = members.iter().map(|&i| queues[i].as_str()).collect();
        for (i, lease) in members.into_iter().zip(client.queue_leases(&names).await?) {
            leases[i] = lease;
        }
    }
    let mut clashes = Vec::new();
    for ((p, queue), lease) in prepared.iter().zip(&queues).zip(leases) {
        if let Some(other) = lease
            && !other.same_database(&p.lease)
        {
            clashes.push((
                p.config.id,
                format!(
                    "{}: {}",
                    p.config.who(),
                    worker::refusal_message(queue, &other)
                ),
            ));
        }
    }
    Ok(clashes)
}

/// The database directory of a circle.
pub fn db_dir(data_dir: &Path, id: u32) -> PathBuf {
    data_dir.join(id.to_string())
}

/// `create_dir_all` for `what` (e.g. "the data dir"), naming the path in
/// the way when one of `dir` or its parents is a file (the OS only says
/// "File exists" or "Not a directory"): a usage error, exit 2.
pub fn create_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    let Err(e) = std::fs::create_dir_all(dir) else {
        return Ok(());
    };
    let shown = dir.display();
    // `symlink_metadata`: a dangling link is in the way too (`exists` follows it).
    match dir
        .ancestors()
        .find(|p| p.symlink_metadata().is_ok() && !p.is_dir())
    {
        Some(link) if !link.exists() => Err(crate::UsageError(format!(
            "cannot create {what} {shown}: {} is a symbolic link to {}, which does not exist",
            link.display(),
            std::fs::read_link(link).map_or_else(|_| "?".into(), |t| t.display().to_string())
        ))
        .into()),
        Some(file) => Err(crate::UsageError(format!(
            "cannot create {what} {shown}: {} is a file, where a directory must be",
            file.display()
        ))
        .into()),
        None => Err(anyhow::anyhow!("cannot create {what} {shown}: {e}")),
    }
}

fn open_db(
    c: &CircleConfig,
    data_dir: &Path,
    durability: ourdb::Durability,
) -> anyhow::Result<Arc<ourdb::OurDb>> {
    let dir = db_dir(data_dir, c.id);
    create_dir(&dir, &format!("the data directory of {}", c.who()))?;
    let config = ourdb::Config {
        durability,
        ..ourdb::Config::default()
    };
    match ourdb::OurDb::open(&dir, config) {
        Ok(db) => Ok(Arc::new(db)),
        Err(ourdb::Error::Locked { dir }) => bail!(
            "{}: its database {} is locked by another process (is another \
             circles_orchestrator running with the same data dir? stop it, or pass another \
             --data-dir)",
            c.who(),
            dir.display()
        ),
        Err(e) => bail!(
            "{}: cannot open its database {}: {e}",
            c.who(),
            dir.display()
        ),
    }
}

fn bind(c: &CircleConfig, host: &str) -> anyhow::Result<TcpListener> {
    let listener = match TcpListener::bind((host, c.port)) {
        Ok(l) => l,
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "{}: port {} on {host} is already in use (by another program, or another \
             circles_orchestrator); stop it or give the circle another port in circles.json",
            c.who(),
            c.port
        ),
        Err(e) => bail!("{}: cannot listen on {host}:{}: {e}", c.who(), c.port),
    };
    // Right after the bind: the sockets the kernel accepts from now on
    // take the listener's options (the servers use the default timing).
    if let Err(e) = listener
        .set_nonblocking(true)
        .and_then(|()| server_ws::prepare_listener(&listener, &server_ws::ServerTiming::default()))
    {
        bail!("{}: cannot configure its socket: {e}", c.who());
    }
    Ok(listener)
}

/// Threads that open databases in parallel: creating a database waits on
/// fsync, not on the CPU, so a few threads shorten a first start of hundreds
/// of circles even on two cores.
const PREPARE_THREADS: usize = 8;

/// Opens a circle's database and builds its engine.
pub fn open_store(
    c: &CircleConfig,
    data_dir: &Path,
    limits: &engine::Limits,
    durability: ourdb::Durability,
) -> anyhow::Result<Store> {
    let db = open_db(c, data_dir, durability)?;
    let engine = Arc::new(engine::CircleEngine::new(db.clone(), limits.clone()));
    Ok(Store { db, engine })
}

/// How [`prepare_all`] prepares each circle.
#[derive(Debug, Clone, Copy)]
pub struct Plan<'a> {
    /// What this process runs.
    pub role: Role,
    /// The bind address of the servers.
    pub host: &'a str,
    /// Where the databases live.
    pub data_dir: &'a Path,
    /// The engines' limits.
    pub limits: &'a engine::Limits,
    /// The databases' durability.
    pub durability: ourdb::Durability,
    /// `--standby`: a worker's database is opened later, once its lease is
    /// held (its directory is still created now, for its name).
    pub standby: bool,
}

/// The databases a reload keeps open for the changed circles it starts
/// again, by circle id: each is taken by its circle's preparation.
pub type StillOpen = std::sync::Mutex<std::collections::HashMap<u32, Closing>>;

fn prepare_one(c: &CircleConfig, plan: Plan<'_>, open: &StillOpen) -> anyhow::Result<Prepared> {
    let kept = crate::status::lock(open).remove(&c.id);
    let listener = if plan.role.serves() {
        match bind(c, plan.host) {
            Ok(listener) => Some(listener),
            Err(e) => {
                close_all(kept.into_iter().collect());
                return Err(e);
            }
        }
    } else {
        None
    };
    let dir = db_dir(plan.data_dir, c.id);
    let works = plan.role.works();
    let store = if works && !plan.standby {
        Some(match kept {
            Some((_, db, engine)) => Store { db, engine },
            None => open_store(c, plan.data_dir, plan.limits, plan.durability)?,
        })
    } else {
        close_all(kept.into_iter().collect());
        if works {
            create_dir(&dir, &format!("the data directory of {}", c.who()))?;
        }
        None
    };
    let dir = std::fs::canonicalize(&dir).unwrap_or(dir);
    Ok(Prepared {
        config: c.clone(),
        store,
        works,
        listener,
        lease: client::Lease {
            token: 0,
            pid: std::process::id(),
            host: hostname(),
            dir: lease_dir(&dir),
        },
    })
}

/// The database directory as a lease names it: the path itself when it is
/// UTF-8, else its quoted, escaped form (`"/data/x\xFF/1"`). Two
/// directories never share a name, so a second worker on a different
/// directory is never taken for a restart of the first; a quoted name
/// cannot be a canonical path's, which starts with `/`.
fn lease_dir(dir: &Path) -> String {
    dir.to_str()
        .map_or_else(|| format!("{dir:?}"), str::to_owned)
}

/// Prepares every circle as `plan` says, or reports every circle that
/// failed.
pub fn prepare_all(circles: &[CircleConfig], plan: Plan<'_>) -> anyhow::Result<Vec<Prepared>> {
    let results = prepare_each(circles, plan, &StillOpen::default());
    let mut ready = Vec::with_capacity(circles.len());
    let mut failures = Vec::new();
    // Whether every failure is one of usage (exit 2), e.g. a file in the way.
    let mut usage = true;
    for result in results {
        match result {
            Ok(p) => ready.push(p),
            Err(e) => {
                usage &= e.is::<crate::UsageError>();
                failures.push(e.to_string());
            }
        }
    }
    if failures.is_empty() {
        return Ok(ready);
    }
    // Release what was opened before reporting, so a retry finds nothing locked.
    close_prepared(ready);
    let message = format!(
        "{} of {} circles cannot start, so none was started:\n  {}",
        failures.len(),
        circles.len(),
        failures.join("\n  ")
    );
    if usage {
        return Err(crate::UsageError(message).into());
    }
    Err(anyhow::anyhow!(message))
}

/// Prepares each of `circles` on its own, in parallel as [`prepare_all`]
/// does: one result per circle, in order, each failure naming its circle.
/// What is ready stays open (the caller starts or closes it). A circle
/// whose database `open` holds starts on it instead of opening it again;
/// one that cannot start closes it.
pub fn prepare_each(
    circles: &[CircleConfig],
    plan: Plan<'_>,
    open: &StillOpen,
) -> Vec<anyhow::Result<Prepared>> {
    let chunk = circles.len().div_ceil(PREPARE_THREADS).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = circles
            .chunks(chunk)
            .map(|part| {
                scope.spawn(move || {
                    part.iter()
                        .map(|c| prepare_one(c, plan, open))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        parts
            .into_iter()
            .zip(circles.chunks(chunk))
            .flat_map(|(part, configs)| match part.join() {
                Ok(results) => results,
                Err(_) => configs
                    .iter()
                    .map(|c| {
                        Err(anyhow::anyhow!(
                            "{}: preparing it panicked (see the log)",
                            c.who()
                        ))
                    })
                    .collect(),
            })
            .collect()
    })
}

/// Closes the databases of prepared circles that are not started (see
/// [`close_all`]).
pub fn close_prepared(prepared: Vec<Prepared>) -> Vec<String> {
    close_all(prepared.into_iter().filter_map(Prepared::closing).collect())
}

/// Closes every database once its engine is gone; logs what cannot be
/// closed. Returns what may have lost writes: each database that could not
/// be synced (`OurDb::close` fails only then).
pub fn close_all(dbs: Vec<Closing>) -> Vec<String> {
    let mut unsynced = Vec::new();
    for (config, db, engine) in dbs {
        drop(engine);
        let synced = match Arc::try_unwrap(db) {
            Ok(db) => db.close(),
            Err(db) => {
                // Still referenced by a task that did not drain: at least durable.
                log::warn!(
                    circle = config.name.as_str();
                    "{}: database still in use at exit; syncing it",
                    config.who()
                );
                db.sync()
            }
        };
        if let Err(e) = synced {
            let failure = format!("{}: syncing its database failed: {e}", config.who());
            log::error!(circle = config.name.as_str(); "{failure}");
            unsynced.push(failure);
        }
    }
    unsynced
}

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt as _;

    use super::*;

    #[test]
    fn a_lease_names_each_directory_apart_even_when_it_is_not_utf8() {
        assert_eq!(lease_dir(Path::new("/data/a b|c/1")), "/data/a b|c/1");
        let ff = Path::new(OsStr::from_bytes(b"/data/bad\xffname/1"));
        let fe = Path::new(OsStr::from_bytes(b"/data/bad\xfename/1"));
        assert_eq!(lease_dir(ff), r#""/data/bad\xFFname/1""#);
        assert_ne!(lease_dir(ff), lease_dir(fe));
        // The lossy form both would have had names neither.
        assert_ne!(lease_dir(ff), ff.to_string_lossy());
    }
}
