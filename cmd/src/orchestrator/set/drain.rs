//! The drain of a circle a reload takes out: its connections answered and
//! closed, its queue worked off (while its worker holds the lease) and then
//! cancelled, its worker stopped, its lease kept when it starts again.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{Ctx, Live};
use crate::circles;
use crate::orchestrator::kept::{self, Kept};
use crate::status::lock;

/// How often a draining circle's connections and queue are looked at.
const DRAIN_POLL: Duration = Duration::from_millis(100);

impl Live {
    /// Drains a circle taken out of the set and stops it: its connections
    /// answer what they asked and close with 1001 and, where this process
    /// runs its worker, its queue is worked off, for up to `bound`; tasks
    /// still queued then are cancelled with [`REMOVED`] as the reason (the
    /// worker ends each without running it, kind `cancelled`); then its
    /// worker stops (a running script gets the shutdown grace). A gateway
    /// leaves the queue alone: other gateways may still submit to it and a
    /// worker elsewhere works it off; so does a worker whose database does
    /// not hold the queue's lease (a `--standby` while another process runs
    /// the circle). With `keeps` (a changed circle, which starts again) its
    /// worker leaves its lease in place and a keeper takes it over once the
    /// worker stopped, until the new worker takes it (`kept.rs`). With
    /// `carries` (a changed circle that starts again on the same queue and
    /// Redis) only the tasks its worker holds are waited for, and nothing
    /// queued is cancelled: the circle's new worker runs it, also what
    /// other processes' gateways go on sending. Returns what closes its
    /// database, and the kept lease.
    pub async fn drain(
        self,
        ctx: &Ctx,
        bound: Duration,
        keeps: bool,
        carries: bool,
    ) -> (Option<circles::Closing>, Option<Kept>) {
        let name = self.state.config.name.clone();
        let queue = self.state.queue.clone();
        let start = tokio::time::Instant::now();
        let mut cancelled = std::collections::HashSet::new();
        loop {
            let connections = lock(&self.state.server)
                .server
                .as_ref()
                .map_or(0, |s| s.connections());
            let (queued, busy) = if self.worker.is_some() {
                // Only while this database's worker holds the queue's lease
                // is the queue this process's to work off: a `--standby`
                // whose circle another process's worker runs leaves it alone,
                // as a gateway does. The counters carry the lease: one read.
                let stats = self.client.stats_many(&[queue.as_str()]).await;
                match stats.as_deref() {
                    Ok([s])
                        if s.lease
                            .as_ref()
                            .is_some_and(|l| l.same_database(&self.lease)) =>
                    {
                        if carries {
                            (0, s.in_flight)
                        } else {
                            (s.queue_len, s.queue_len + s.in_flight)
                        }
                    }
                    Ok([_]) => (0, 0),
                    _ => (1, 1),
                }
            } else {
                (0, 0)
            };
            if connections == 0 && busy == 0 {
                break;
            }
            let waited = start.elapsed();
            if waited >= bound + CANCEL_BOUND || ctx.hurry.is_cancelled() {
                break;
            }
            // Past the bound with nothing queued and at most the running
            // task: nothing is left for the worker to end, it stops now (the
            // running script gets the grace). A carried queue is never
            // cancelled: the worker stops now too, its held tasks go back
            // for the circle's new worker.
            if waited >= bound && (carries || (queued == 0 && busy <= 1)) {
                break;
            }
            // Held tasks (claimed in a batch, not started) count as queued
            // but not in `queued`: look while anything is in flight.
            if waited >= bound && (queued > 0 || busy > 1) && !carries {
                cancel_queued(&self.client, &queue, &mut cancelled).await;
            }
            tokio::select! {
                () = tokio::time::sleep(DRAIN_POLL) => {}
                () = ctx.hurry.cancelled() => {}
            }
        }
        if !cancelled.is_empty() {
            let cancelled = cancelled.len();
            log::warn!(
                circle = name.as_str(), queue = queue.as_str();
                "circle \"{name}\": {cancelled} task(s) still queued after {bound:?} were \
                 cancelled: {REMOVED}"
            );
        }
        if keeps {
            self.keep_lease.store(true, Ordering::Release);
        }
        self.worker_token.cancel();
        let grace = ctx.settings.shutdown_grace + crate::orchestrator::DRAIN_MARGIN;
        let Some(worker) = self.worker else {
            return (lock(&self.closing).take(), None);
        };
        tokio::select! {
            stopped = tokio::time::timeout(grace, worker) => if stopped.is_err() {
                log::error!(
                    circle = name.as_str();
                    "circle \"{name}\": its worker did not stop within {grace:?}"
                );
            },
            () = ctx.hurry.cancelled() => log::warn!(
                circle = name.as_str();
                "circle \"{name}\": stopped without waiting for its worker (a second stop signal)"
            ),
        }
        let kept = keeps
            .then(|| kept::keep(&ctx.settings, &self.state.config, &self.lease))
            .flatten();
        drop(self.listener);
        (lock(&self.closing).take(), kept)
    }
}

/// Why the tasks left in a removed or changed circle's queue end.
pub const REMOVED: &str = "its circle was removed or changed by a reload of circles.json";

/// How long the worker of an outgoing circle gets to end its cancelled tasks.
const CANCEL_BOUND: Duration = Duration::from_secs(10);

/// Tasks cancelled per look at the queue.
const CANCEL_BATCH: usize = 1000;

/// Cancels the oldest queued tasks of `queue` not in `done` yet, and adds
/// those that were still pending to it.
/// Tasks a worker claimed in a batch and has not started count as queued.
async fn cancel_queued(
    client: &client::Client,
    queue: &str,
    done: &mut std::collections::HashSet<String>,
) {
    let read = async {
        let mut ids = client.held(queue, CANCEL_BATCH).await?;
        ids.extend(client.queued(queue, CANCEL_BATCH).await?);
        Ok::<_, client::Error>(ids)
    };
    let ids = match read.await {
        Ok(ids) => ids,
        Err(e) => {
            log::warn!(queue; "reading the queue {queue} failed: {e}");
            return;
        }
    };
    for id in ids {
        if done.contains(&id) {
            continue;
        }
        match client.cancel(&id, REMOVED).await {
            Ok(true) => {
                log::info!(task = id.as_str(), queue; "task {id} cancelled: {REMOVED}");
                done.insert(id);
            }
            Ok(false) => {}
            Err(e) => log::warn!(task = id.as_str(), queue; "cancelling task {id} failed: {e}"),
        }
    }
}
