//! Applying a re-read circles.json to the running set (one reload).
//!
//! Circles are matched by id (a circle's database lives under its id).
//! Same id and an equal element: untouched — its worker, host, connections
//! and running tasks carry on. Same id, any field changed: restarted. An id
//! only in the file: added; only running: removed.
//!
//! Order: (1) read and check the file, as at start (an invalid file changes
//! nothing); (2) prepare the added circles whose port and queue no outgoing
//! circle holds, and start them on a new host; (3) take the removed and changed circles out of their hosts
//! (see `set.rs`), drain them together and close the removed ones'
//! databases; (4) prepare the changed circles (each on its database, open
//! all along) and the added ones that take over an outgoing port or queue,
//! and start them on one more new host;
//! (5) hand over or give up the leases kept where moved circles were
//! (`kept.rs`): a changed circle that starts again on another Redis or
//! queue leaves its lease where it was, kept by this process while it runs
//! the circle. Each circle is prepared
//! on its own: one that cannot start (its port held by another program, its
//! queue's lease held by another database's worker, its own Redis away)
//! stays stopped and the reload says so, while the others are applied.

use std::collections::{HashMap, HashSet};

use super::kept;
use super::set::{CircleSet, Ctx};
use crate::circles;
use crate::config::{self, CircleConfig};
use crate::reload::{ReloadError, ReloadErrorKind, ReloadSummary, quoted};
use crate::status::CircleState;
use crate::{role, settings};

/// How the file differs from the running set.
#[derive(Debug, Default, PartialEq)]
struct Plan {
    added: Vec<CircleConfig>,
    removed: Vec<CircleConfig>,
    /// The new configuration of each changed circle.
    changed: Vec<CircleConfig>,
}

impl Plan {
    fn new(running: &[CircleConfig], file: &[CircleConfig]) -> Plan {
        let mut plan = Plan::default();
        for c in file {
            match running.iter().find(|r| r.id == c.id) {
                None => plan.added.push(c.clone()),
                Some(r) if r != c => plan.changed.push(c.clone()),
                Some(_) => {}
            }
        }
        plan.removed = running
            .iter()
            .filter(|r| !file.iter().any(|c| c.id == r.id))
            .cloned()
            .collect();
        plan
    }

    fn summary(&self) -> ReloadSummary {
        let names = |cs: &[CircleConfig]| cs.iter().map(|c| c.name.clone()).collect();
        ReloadSummary {
            added: names(&self.added),
            removed: names(&self.removed),
            changed: names(&self.changed),
        }
    }
}

/// Re-reads the file the orchestrator was started with and applies it.
pub async fn reload(set: &mut CircleSet, ctx: &Ctx) -> Result<ReloadSummary, ReloadError> {
    let path = ctx.settings.config_path.clone();
    // The start's hint (how to give a circles file) does not fit a file
    // that was there at start.
    if let Err(e) = std::fs::metadata(&path)
        && e.kind() == std::io::ErrorKind::NotFound
    {
        return Err(ReloadError::new(
            ReloadErrorKind::InvalidConfig,
            gone(&path),
        ));
    }
    let file = config::load(&path)
        .map_err(|e| ReloadError::new(ReloadErrorKind::InvalidConfig, e.to_string()))?;
    // The same `--circles` as at start: the circles they name, as the file says them now.
    let file = role::select(file, ctx.settings.only.as_deref()).map_err(|e| {
        ReloadError::new(
            ReloadErrorKind::InvalidConfig,
            format!("{}: {e}", path.display()),
        )
    })?;
    if ctx.settings.role.serves() {
        settings::check_served(
            &file,
            &ctx.settings.host,
            ctx.settings.allow_open,
            &ctx.settings.admin,
            ctx.settings.managed_redis.then_some(&ctx.settings.redis),
        )
        .map_err(|e| {
            ReloadError::new(
                ReloadErrorKind::InvalidConfig,
                format!("{}: {e}", path.display()),
            )
        })?;
    }
    let running = set.configs();
    let plan = Plan::new(&running, &file);
    // The added circles start before the removed ones are gone.
    // Refused whole, as an invalid file is: nothing changed, nothing stopped.
    if let Some(why) = super::descriptors::shortfall(running.len() + plan.added.len()) {
        return Err(ReloadError::new(
            ReloadErrorKind::InvalidConfig,
            format!(
                "{}: {why}, while this reload runs; nothing was reloaded. Fix: {}",
                path.display(),
                super::descriptors::SHORTFALL_FIX
            ),
        ));
    }
    let summary = plan.summary();
    let order: Vec<u32> = file.iter().map(|c| c.id).collect();
    if summary.is_empty() {
        // A circle an earlier reload could not start would be in the plan
        // again (added, as it is not running): none is in the file.
        set.not_started.clear();
        // The rows follow the file's order, also when only that changed.
        set.order(&order);
        return Ok(summary);
    }
    let outgoing: Vec<&CircleConfig> = plan
        .removed
        .iter()
        .chain(
            running
                .iter()
                .filter(|r| plan.changed.iter().any(|c| c.id == r.id)),
        )
        .collect();
    // An added circle that takes over an outgoing circle's port, or its
    // queue (whose lease the outgoing worker gives up as it drains), is
    // prepared once that circle is out.
    let held: HashSet<u16> = outgoing.iter().map(|c| c.port).collect();
    let held_queues: HashSet<String> = outgoing.iter().map(|c| c.queue()).collect();
    let (early, mut late): (Vec<CircleConfig>, Vec<CircleConfig>) = plan
        .added
        .iter()
        .cloned()
        .partition(|c| !held.contains(&c.port) && !held_queues.contains(&c.queue()));
    late.extend(plan.changed.iter().cloned());

    // Each circle that cannot start stays out alone: the others are applied.
    // A Redis URL that cannot be reached is tried once in the whole reload
    // (a connect that fails may take its whole timeout).
    let mut unreachable = HashMap::new();
    kept::release_taken(&mut set.kept, &early, &ctx.settings).await;
    let (early, mut failed) = prepare(
        ctx,
        early,
        &mut unreachable,
        HashMap::new(),
        &HashMap::new(),
    )
    .await;
    // They start at once, on a host of their own: no outgoing circle holds
    // their port or queue, so they need not wait for the drain.
    set.start(ctx, early);
    // They serve from now on: shown (status, metrics, gateway beat) beside
    // the outgoing circles, whose rows stay shown while they drain.
    ctx.roster.set(set.states());

    // A changed circle starts again (on its Redis and queue, or on others):
    // this process keeps its lease where it was until its new worker takes
    // it or the circle is out for good, so that no standby there takes it
    // over meanwhile (`kept.rs`).
    let changed: HashSet<u32> = plan.changed.iter().map(|c| c.id).collect();
    let ids: Vec<u32> = outgoing.iter().map(|c| c.id).collect();
    let out = set.take_out(ctx, &ids).await;
    // A changed circle starts again on the same database directory (its
    // id's under the same --data-dir), kept open or opened again: its lease
    // keeps the name it has, as the path the data dir resolves to now may
    // be another (the working directory of a relative --data-dir renamed).
    let named: HashMap<u32, String> = out
        .iter()
        .filter(|l| changed.contains(&l.state.config.id))
        .map(|l| (l.state.config.id, l.lease_dir().to_owned()))
        .collect();
    let bound = ctx.settings.shutdown_grace + super::DRAIN_MARGIN;
    let drained = futures_util::future::join_all(out.into_iter().map(|l| {
        let keeps = changed.contains(&l.state.config.id);
        // A changed circle that starts again on the same queue of the same
        // Redis: its new worker runs what is queued (other processes'
        // gateways go on submitting to it), so nothing is cancelled.
        let carries = plan.changed.iter().any(|c| {
            c.id == l.state.config.id
                && c.queue() == l.state.queue
                && ctx.settings.redis_of(c) == ctx.settings.redis_of(&l.state.config)
        });
        l.drain(ctx, bound, keeps, carries)
    }))
    .await;
    let (closing, kept): (Vec<_>, Vec<_>) = drained.into_iter().unzip();
    set.kept.extend(kept.into_iter().flatten());
    // A changed circle starts again on its database, open all along: closed
    // and opened again, it would be free for a moment, for another process
    // on this data dir to open (a `--standby` there takes the lease of its
    // own database at once). Not when its worker still holds its engine
    // (it did not stop in time), nor for a standby, which opens it once
    // its worker holds the lease, nor when it refuses writes (opened again,
    // it takes them) unless its directory is gone: opened again there, it
    // would be a new empty database, and closing it would close the only
    // way left to its deleted files.
    let (open, closing): (Vec<_>, Vec<_>) =
        closing
            .into_iter()
            .flatten()
            .partition(|(config, db, engine)| {
                changed.contains(&config.id)
                    && !ctx.settings.standby
                    && std::sync::Arc::strong_count(engine) == 1
                    && (db.write_failure().is_none()
                        || !circles::db_dir(&ctx.settings.data_dir, config.id).exists())
            });
    close_all(closing, "outgoing circles").await;
    let open = open.into_iter().map(|c| (c.0.id, c)).collect();
    kept::release_taken(&mut set.kept, &late, &ctx.settings).await;
    let (late, late_failed) = prepare(ctx, late, &mut unreachable, open, &named).await;
    failed.extend(late_failed);
    set.start(ctx, late);
    let worked = set.worked();
    kept::settle(&mut set.kept, &worked, &ctx.settings);
    // The rows of the circles an earlier reload could not start stay shown
    // while this one drains (but for those it started); from here on, those
    // of this one.
    set.not_started = (failed.iter())
        .map(|(c, why)| std::sync::Arc::new(not_started(ctx, c, why)))
        .collect();
    set.order(&order);
    ctx.clients.close_unused(&set.configs());
    // An outgoing circle whose name no running circle has now (removed,
    // renamed, or changed and not started again) leaves /metrics; a circle
    // of that name started later gets its series afresh, at 0.
    if let Some(metrics) = &ctx.metrics {
        let now = set.configs();
        for gone in outgoing
            .iter()
            .filter(|o| !now.iter().any(|c| c.name == o.name))
        {
            metrics.forget(&gone.name);
        }
    }
    if failed.is_empty() {
        return Ok(summary);
    }
    // A changed circle that did not start again counts as removed.
    let did_not = |configs: &[CircleConfig]| -> (Vec<String>, Vec<String>) {
        configs
            .iter()
            .map(|c| c.name.clone())
            .partition(|name| !failed.iter().any(|(f, _)| f.name == *name))
    };
    let (added, not_added) = did_not(&plan.added);
    let (changed, stopped) = did_not(&plan.changed);
    let mut what = Vec::new();
    if !stopped.is_empty() {
        what.push(format!(
            "{} (changed) could not start again and stopped",
            quoted(&stopped)
        ));
    }
    if !not_added.is_empty() {
        what.push(format!("{} (added) did not start", quoted(&not_added)));
    }
    let what = what.join("; ");
    let why: Vec<&str> = failed.iter().map(|(_, why)| why.as_str()).collect();
    let why = why.join("; ");
    // What went as asked, then what did not.
    let done = ReloadSummary {
        added,
        removed: summary.removed,
        changed,
    };
    let message = if done.is_empty() {
        format!("{what}: {why}. Fix the cause and reload again")
    } else {
        format!("{done}, but {what}: {why}. Fix the cause and reload again")
    };
    let mut applied = done;
    applied.removed.extend(stopped);
    let mut error = ReloadError::new(ReloadErrorKind::CannotStart, message);
    error.applied = Some(applied);
    Err(error)
}

/// The row of circle `c`, which could not start for `why` (which may begin
/// with the circle's name, which the row shows already).
fn not_started(ctx: &Ctx, c: &CircleConfig, why: &str) -> CircleState {
    let who = format!("{}: ", c.who());
    CircleState::new_not_started(
        c.clone(),
        ctx.settings.ws_scheme(),
        &ctx.settings.host,
        why.strip_prefix(&who).unwrap_or(why),
    )
}

/// Why the circles file at `path` is not found: gone, or, for a relative
/// path, read in a working directory that was deleted since the start (a
/// directory made again at its path is another one).
fn gone(path: &std::path::Path) -> String {
    let cwd = std::fs::read_link("/proc/self/cwd").unwrap_or_default();
    let deleted = cwd.to_str().and_then(|c| c.strip_suffix(" (deleted)"));
    match deleted {
        Some(cwd) if path.is_relative() => format!(
            "{}: the circles file this orchestrator was started with is gone: a relative path \
             is read in the working directory it started in, {cwd}, which was deleted (a \
             directory made again there is another one); nothing was reloaded (restart it, \
             or give CONFIG as an absolute path)",
            path.display()
        ),
        _ => format!(
            "{}: the circles file this orchestrator was started with is gone; nothing was \
             reloaded (put it back, then reload again)",
            path.display()
        ),
    }
}

/// Binds, opens and builds `configs` (as far as the role runs them) on a
/// blocking thread, each on its own, and keeps out those whose queue the
/// worker of another database holds (as at start, unless `--standby`):
/// the circles ready to start, and each other one with why it cannot. A
/// circle whose own Redis cannot be connected cannot start; a URL in
/// `unreachable` (URL → the name of the circle that found it so) is not
/// tried again. A circle whose database `open` holds starts on it; what
/// `open` holds for a circle that does not get that far is closed. A
/// circle's lease names the directory `named` gives for it, if any.
async fn prepare(
    ctx: &Ctx,
    configs: Vec<CircleConfig>,
    unreachable: &mut HashMap<String, String>,
    open: HashMap<u32, circles::Closing>,
    named: &HashMap<u32, String>,
) -> (Vec<circles::Prepared>, Vec<(CircleConfig, String)>) {
    let mut failed = Vec::new();
    let mut reachable = Vec::with_capacity(configs.len());
    for c in configs {
        let url = ctx.clients.url_of(&c).to_string();
        if let Some(first) = unreachable.get(&url) {
            let why = format!(
                "{}: its redis at {url} cannot be reached either (circle \"{first}\")",
                c.who()
            );
            failed.push((c, why));
            continue;
        }
        match ctx.clients.connect_for(std::slice::from_ref(&c)).await {
            Ok(()) => reachable.push(c),
            Err(e) => {
                unreachable.insert(url, c.name.clone());
                failed.push((c, format!("{e:#}")));
            }
        }
    }
    let settings = ctx.settings.clone();
    let configs = reachable.clone();
    let prepared = tokio::task::spawn_blocking(move || {
        let open = circles::StillOpen::new(open);
        let results = circles::prepare_each(&configs, settings.plan(), &open);
        // Those of circles that did not get this far.
        let left = crate::status::lock(&open).drain().map(|(_, c)| c).collect();
        circles::close_all(left);
        results
    })
    .await;
    let results = match prepared {
        Ok(results) => results,
        Err(e) => {
            let why = format!("preparing the circles panicked: {e}");
            failed.extend(reachable.into_iter().map(|c| (c, why.clone())));
            return (Vec::new(), failed);
        }
    };
    let mut ready = Vec::with_capacity(results.len());
    for (c, result) in reachable.into_iter().zip(results) {
        match result {
            Ok(mut p) => {
                if let Some(dir) = named.get(&p.config.id) {
                    p.lease.dir.clone_from(dir);
                }
                ready.push(p);
            }
            Err(e) => failed.push((c, e.to_string())),
        }
    }
    if ctx.settings.standby || ready.is_empty() {
        return (ready, failed);
    }
    let clashes = match circles::foreign_queues(&ctx.clients, &ready).await {
        Ok(clashes) => clashes,
        Err(e) => {
            // Unknown whose the queues are: none of them starts.
            let why = format!("cannot read the queue leases from redis: {e:#}");
            failed.extend(ready.iter().map(|p| (p.config.clone(), why.clone())));
            close_all(closing(ready), "circles not started").await;
            return (Vec::new(), failed);
        }
    };
    if clashes.is_empty() {
        return (ready, failed);
    }
    let mut clashes: HashMap<u32, String> = clashes.into_iter().collect();
    let (clashing, ready): (Vec<_>, Vec<_>) = ready
        .into_iter()
        .partition(|p| clashes.contains_key(&p.config.id));
    for p in &clashing {
        if let Some(why) = clashes.remove(&p.config.id) {
            failed.push((p.config.clone(), why));
        }
    }
    close_all(closing(clashing), "circles not started").await;
    (ready, failed)
}

/// The databases of prepared circles, to close.
fn closing(prepared: Vec<circles::Prepared>) -> Vec<circles::Closing> {
    prepared
        .into_iter()
        .filter_map(circles::Prepared::closing)
        .collect()
}

/// Closes `closing` on a blocking thread; `what` names them in the log.
async fn close_all(closing: Vec<circles::Closing>, what: &str) {
    if let Err(e) = tokio::task::spawn_blocking(move || circles::close_all(closing)).await {
        log::error!("closing the databases of {what} panicked: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u32, name: &str, port: u16) -> CircleConfig {
        CircleConfig {
            id,
            name: name.into(),
            port,
            principals: Vec::new(),
            redis: None,
        }
    }

    #[test]
    fn circles_are_matched_by_id_and_any_changed_field_restarts_one() {
        let running = [c(1, "A", 1), c(2, "B", 2), c(3, "C", 3)];
        let file = [c(1, "A", 1), c(2, "B", 22), c(4, "D", 4), c(3, "C2", 3)];
        let plan = Plan::new(&running, &file);
        assert_eq!(
            plan.summary(),
            ReloadSummary {
                added: vec!["D".into()],
                removed: vec![],
                changed: vec!["B".into(), "C2".into()],
            }
        );
        let plan = Plan::new(&running, &running[..1]);
        assert_eq!(plan.summary().removed, ["B", "C"]);
        assert!(Plan::new(&running, &running).summary().is_empty());
    }
}
