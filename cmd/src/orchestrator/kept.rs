//! The leases this process keeps for a circle a reload changes, from the
//! moment its old worker stops until its new worker takes the lease, and,
//! where the reload moved it (to another Redis, or another queue name), for
//! as long as the circle runs on here.
//!
//! A circle's lease lives on its Redis under its queue. Without this, a
//! `--standby` orchestrator configured with that Redis finds the lease free
//! once the old worker leaves, and takes the circle over (opening the same
//! database, on shared storage): in the drain of the reload's other
//! outgoing circles when the changed circle starts again where it was, for
//! good when it moved. So a changed circle's worker stops without giving
//! its lease up (`worker::WorkerConfig::keep_lease`), and a keeper takes it
//! over at once (the same database takes its own lease, with a fresh token)
//! and renews it each heartbeat interval, as a worker does: the standby goes
//! on waiting, its row naming this process.
//!
//! The lease is given up when the circle stops in this process (a reload
//! removes it, or it could not start again; shutdown), and handed to the
//! worker when the circle runs on that Redis and queue again ([`settle`]).
//! When this process dies it
//! expires like any lease and the standby takes over: nobody runs the circle
//! then. A lease another database holds at the change (this process was
//! standing by) is not taken: there is nothing to keep. A Redis that does
//! not answer is retried with a short backoff and logged once per outage;
//! a reload never waits for it.

use std::time::Duration;

use client::Lease;
use client::broker::{BrokerOptions, WorkerBroker};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::CircleConfig;
use crate::settings::Settings;

/// How long shutdown waits for the kept leases to be given up.
const RELEASE_BOUND: Duration = Duration::from_secs(2);

/// First pause after a request Redis did not answer; it doubles up to the
/// heartbeat interval (and `--worker-max-backoff`).
const FIRST_RETRY: Duration = Duration::from_millis(50);

/// One kept lease: circle `id`'s queue `queue` on the Redis `url`.
pub struct Kept {
    id: u32,
    url: client::RedisUrl,
    queue: String,
    /// Stops the keeper, which then gives the lease up.
    token: CancellationToken,
    handle: JoinHandle<()>,
}

/// Starts keeping the lease `holder` (this process, host and database
/// directory) of `circle` as it was configured before the reload changed
/// it: on its Redis, under its queue. `None` when its broker cannot be made (logged).
pub fn keep(settings: &Settings, circle: &CircleConfig, holder: &Lease) -> Option<Kept> {
    let url = settings.redis_of(circle).clone();
    let queue = circle.queue();
    let mut options = BrokerOptions::new(settings.result_ttl);
    options.max_backoff = settings.worker.max_backoff;
    options.redis_ca = settings.redis_ca.clone();
    let broker = match WorkerBroker::new(url.as_str(), &queue, "kept-lease", &options) {
        Ok(broker) => broker,
        Err(e) => {
            log::error!(
                circle = circle.name.as_str(), queue = queue.as_str();
                "circle \"{}\": cannot keep its lease of queue {queue} on redis {url}: {e}",
                circle.name
            );
            return None;
        }
    };
    let token = CancellationToken::new();
    let keeper = Keeper {
        broker,
        circle: circle.name.clone(),
        url: url.to_string(),
        holder: holder.clone(),
        interval: settings.worker.heartbeat_interval,
        ttl: settings.worker.heartbeat_ttl,
        max_retry: settings
            .worker
            .max_backoff
            .min(settings.worker.heartbeat_interval),
    };
    let handle = tokio::spawn(keeper.run(token.clone()));
    Some(Kept {
        id: circle.id,
        url,
        queue,
        token,
        handle,
    })
}

/// After a reload started its circles (`worked`: those whose worker runs
/// here): each kept lease whose circle runs here again on its Redis and
/// queue is handed to that circle's worker (which took it over as the same
/// database), each whose circle no longer runs its worker here is given up
/// (in the background), the rest are kept.
pub fn settle(kept: &mut Vec<Kept>, worked: &[CircleConfig], settings: &Settings) {
    for k in std::mem::take(kept) {
        match worked.iter().find(|c| c.id == k.id) {
            None => k.token.cancel(),
            Some(c) if *settings.redis_of(c) == k.url && c.queue() == k.queue => {
                log::info!(
                    circle = c.name.as_str(), queue = k.queue.as_str();
                    "circle \"{}\" runs on redis {} (queue {}) again: its worker takes the \
                     lease kept there",
                    c.name, k.url, k.queue
                );
                k.handle.abort();
            }
            Some(_) => kept.push(k),
        }
    }
}

/// Gives up the kept leases of a queue and Redis that another circle of
/// `configs` is about to take (two circles that swapped names), and waits
/// for them ([`RELEASE_BOUND`] at most): that circle's worker would find
/// the lease held by another database.
pub async fn release_taken(kept: &mut Vec<Kept>, configs: &[CircleConfig], settings: &Settings) {
    let (taken, still): (Vec<Kept>, Vec<Kept>) = std::mem::take(kept).into_iter().partition(|k| {
        configs
            .iter()
            .any(|c| c.id != k.id && *settings.redis_of(c) == k.url && c.queue() == k.queue)
    });
    *kept = still;
    release_all(taken).await;
}

/// Gives up every kept lease (shutdown, once the workers stopped), waiting
/// [`RELEASE_BOUND`] at most.
pub async fn release_all(kept: Vec<Kept>) {
    if kept.is_empty() {
        return;
    }
    for k in &kept {
        k.token.cancel();
    }
    let all = futures_util::future::join_all(kept.into_iter().map(|k| k.handle));
    if tokio::time::timeout(RELEASE_BOUND, all).await.is_err() {
        log::warn!(
            "giving up the kept leases took longer than {RELEASE_BOUND:?}; those left expire \
             by themselves"
        );
    }
}

/// What one keeper works with.
struct Keeper {
    broker: WorkerBroker,
    circle: String,
    /// The Redis, as logged (credentials hidden).
    url: String,
    holder: Lease,
    interval: Duration,
    ttl: Duration,
    max_retry: Duration,
}

impl Keeper {
    /// Takes the lease (free, or this database's: the moved worker left it
    /// in place) and renews it every interval until `token` is cancelled,
    /// then gives it up. Ends early, keeping nothing, when another database
    /// holds it, or when this process's worker took it again (the circle
    /// came back).
    async fn run(self, token: CancellationToken) {
        let queue = self.broker.queue().to_owned();
        let (circle, url) = (self.circle.as_str(), self.url.as_str());
        let mut held: Option<Lease> = None;
        let mut pause = Duration::ZERO;
        let mut retry = Duration::ZERO;
        let mut failing = false;
        // The first acquisition is made even when the keeper is already
        // cancelled (a reload that gives the lease up at once, as when two
        // circles swap names): the lease the worker left in place is this
        // keeper's to give up, and it stays held until its TTL otherwise.
        let mut first = true;
        loop {
            if !std::mem::take(&mut first) {
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(pause) => {}
                }
            }
            let answer = match &held {
                None => self
                    .broker
                    .acquire_lease(&self.holder, self.ttl)
                    .await
                    .map(|r| r.map(Some).map_err(Some)),
                Some(lease) => self
                    .broker
                    .renew_lease(lease, self.ttl)
                    .await
                    .map(|r| r.map(|()| None)),
            };
            let answer = match answer {
                Ok(answer) => answer,
                Err(e) => {
                    if !failing {
                        failing = true;
                        log::warn!(
                            circle, queue = queue.as_str();
                            "circle \"{circle}\": cannot reach redis {url} to keep its lease of \
                             queue {queue} there: {e}; retrying"
                        );
                    }
                    retry = if retry.is_zero() {
                        FIRST_RETRY
                    } else {
                        (retry * 2).min(self.max_retry.max(FIRST_RETRY))
                    };
                    pause = retry;
                    continue;
                }
            };
            failing = false;
            retry = Duration::ZERO;
            pause = self.interval;
            match answer {
                Ok(Some(lease)) => {
                    log::info!(
                        circle, queue = queue.as_str();
                        "circle \"{circle}\" changed: this process keeps its lease of queue \
                         {queue} on redis {url} (token {}) while it runs the circle, so that no \
                         standby there takes it over",
                        lease.token
                    );
                    held = Some(lease);
                }
                Ok(None) => {}
                // Expired (not renewed in time, or lost in a Redis
                // restart): taken again at once if still free.
                Err(None) => {
                    held = None;
                    pause = Duration::ZERO;
                }
                Err(Some(other)) if other.same_database(&self.holder) => {
                    // This process's worker took it: the circle is back.
                    log::debug!(
                        circle, queue = queue.as_str();
                        "circle \"{circle}\": its worker holds the lease of queue {queue} on \
                         redis {url} again"
                    );
                    return;
                }
                Err(Some(other)) => {
                    let by = format!(
                        "held by pid {} on host {} (database {})",
                        other.pid, other.host, other.dir
                    );
                    if held.is_some() {
                        log::warn!(
                            circle, queue = queue.as_str();
                            "circle \"{circle}\" lost its kept lease of queue {queue} on redis \
                             {url}: {by}"
                        );
                    } else {
                        log::info!(
                            circle, queue = queue.as_str();
                            "circle \"{circle}\" keeps no lease of queue {queue} on redis {url}: \
                             {by}"
                        );
                    }
                    return;
                }
            }
        }
        let Some(lease) = held else {
            return;
        };
        match self.broker.release_lease(&lease).await {
            Ok(()) => log::info!(
                circle, queue = queue.as_str();
                "circle \"{circle}\": gave up its kept lease of queue {queue} on redis {url}"
            ),
            Err(e) => log::warn!(
                circle, queue = queue.as_str();
                "circle \"{circle}\": giving up its kept lease of queue {queue} on redis {url} \
                 failed: {e}; it expires in {:?}",
                self.ttl
            ),
        }
    }
}
