//! The queue's lease (`client::keys::queue_owner`): taken before the first
//! task, renewed with each heartbeat, given up at a clean stop (left in
//! place instead with `WorkerConfig::keep_lease`).
//!
//! Who may run a circle's tasks is decided in Redis: the lease holds a
//! fencing token, and every claim of a worker with a lease carries its lease
//! and is refused by the claim script itself when the owner key holds
//! another value (`client::broker::Fence`). A worker cut off from Redis cannot
//! learn that its lease was taken, so it also stops by its own clock, before
//! the lease can expire (the partition rule):
//!
//! - It renews the lease every heartbeat interval; a renewal Redis did not
//!   answer (down, or the connection a restart cut) is sent again after a
//!   short backoff ([`Retry`]), not a beat later: it succeeds soon after
//!   Redis answers again, and an outage that ends before the self-stop
//!   below costs no lease.
//! - It records when it SENT each renewal that succeeded. The owner key
//!   expires no earlier than `ttl` after that (Redis set the TTL after
//!   receiving it).
//! - When no renewal has succeeded for `ttl - margin`, with `margin =
//!   max(heartbeat interval, ttl / 3)` ([`self_stop_after`]), it stops: the
//!   token is dropped (its claims are refused), the running script is cut
//!   (it keeps none of its writes; its task ends as `cancelled`, or as
//!   `worker_lost` by the next holder's reaper), and the status says why.
//!   The margin leaves at least one heartbeat interval (and a third of the
//!   TTL) between the worker's self-stop and the earliest expiry of the
//!   key, for clock drift between the two hosts' timers and for the
//!   script's cut to land.
//! - Then it tries to take the lease again (with each beat; after a request
//!   Redis did not answer, after the same short backoff): free (expired)
//!   or still its own database's, it resumes with a fresh token; held by
//!   another (a standby took over), it waits for it as a standby waits,
//!   its status saying who holds it. (Without `--standby` only the start
//!   refuses a lease held by another: a worker that held it goes on
//!   waiting, for a restart would only be refused again.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::Lease;
use client::broker::{Fence, WorkerBroker};
use tokio_util::sync::CancellationToken;

use crate::cancel::Cancels;
use crate::retry::Retry;
use crate::{WorkerOptions, WorkerState, WorkerStatus};

/// How long after the last successful renewal was sent a worker stops
/// taking tasks: `ttl - max(interval, ttl / 3)` (zero when the interval is
/// not shorter than the TTL: such a worker never holds the lease between
/// beats).
pub fn self_stop_after(options: &WorkerOptions) -> Duration {
    let ttl = options.heartbeat_ttl;
    ttl.saturating_sub(options.heartbeat_interval.max(ttl / 3))
}

/// Why a worker does not serve a queue whose lease another holds.
pub fn refusal_message(queue: &str, holder: &Lease) -> String {
    format!(
        "queue {queue} is held by the worker of another orchestrator: pid {} on host {}, \
         database {} (lease token {}); two workers of one circle must never run at once. Stop \
         that one, start this one with --standby to take over once its lease expires, or, if \
         it is another circle with the same queue name, rename one of them",
        holder.pid, holder.host, holder.dir, holder.token
    )
}

/// The status of a worker whose lease another took, waiting to take it back.
pub fn lost_to_message(queue: &str, holder: &Lease) -> String {
    format!(
        "lease of queue {queue} lost to pid {} on host {} (database {}); taking it back once \
         that one's lease expires",
        holder.pid, holder.host, holder.dir
    )
}

/// The status of a worker waiting for the lease.
pub fn standby_message(queue: &str, holder: &Lease) -> String {
    format!(
        "queue {queue} is held by pid {} on host {} (database {}); taking over once its lease \
         expires",
        holder.pid, holder.host, holder.dir
    )
}

/// The lease as this worker holds it, shared by the keeper, the take loop
/// and the claims' fence.
pub(crate) struct Held {
    queue: String,
    /// The circle's name, for the log lines.
    pub(crate) circle: String,
    /// The lease claims carry (none: not held); the keeper and the take
    /// loop wait on its changes.
    pub(crate) fence: Fence,
    /// When the last renewal (or the acquisition) that succeeded was sent.
    renewed: Mutex<Instant>,
}

impl Held {
    pub(crate) fn new(queue: &str, circle: &str) -> Held {
        Held {
            queue: queue.to_owned(),
            circle: circle.to_owned(),
            fence: Fence::new(),
            renewed: Mutex::new(Instant::now()),
        }
    }

    pub(crate) fn token(&self) -> u64 {
        self.fence.token()
    }

    /// `lease` is ours, as of a request sent at `sent`.
    pub(crate) fn take(&self, lease: &Lease, sent: Instant) {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) = sent;
        self.fence.set(Some(lease));
    }

    fn renewed(&self, sent: Instant) {
        let mut at = self.renewed.lock().unwrap_or_else(|e| e.into_inner());
        if sent > *at {
            *at = sent;
        }
    }

    /// Whether no renewal succeeded for `after` (see [`self_stop_after`]).
    pub(crate) fn overdue(&self, after: Duration) -> bool {
        Instant::now() >= self.deadline(after)
    }

    fn deadline(&self, after: Duration) -> Instant {
        *self.renewed.lock().unwrap_or_else(|e| e.into_inner()) + after
    }

    /// Stops serving the queue: no lease (claims are refused), the running
    /// script cut, the status saying `reason`.
    pub(crate) fn lose(&self, reason: String, cancels: &Cancels, status: &WorkerStatus) {
        self.lose_token(0, reason, cancels, status);
    }

    /// [`Held::lose`], only if the lease held is the one of `token` (0: any).
    fn lose_token(&self, token: u64, reason: String, cancels: &Cancels, status: &WorkerStatus) {
        if !self.fence.clear(token) {
            return;
        }
        log::error!(circle = self.circle.as_str(), queue = self.queue.as_str(); "{reason}");
        cancels.lease_lost(&reason);
        status.set(WorkerState::LeaseLost(reason));
    }

    /// A claim carrying the lease of `token` was refused in Redis: the owner
    /// key holds another lease, or is gone (expired, or lost in a Redis restart; the
    /// keeper then takes the lease again at once). A refusal of a token this worker no longer holds (the
    /// keeper took the lease again while the claim was on its way) says
    /// nothing of the lease it holds now.
    pub(crate) fn refused(&self, token: u64, cancels: &Cancels, status: &WorkerStatus) {
        if token == 0 {
            return;
        }
        let reason = format!(
            "lease of queue {} lost: a claim was refused, the lease key holding another \
             worker's token or gone (expired, or lost in a Redis restart); stopped taking its \
             tasks until it is this worker's again",
            self.queue
        );
        self.lose_token(token, reason, cancels, status);
    }

    /// Waits until the lease is held; `false` when `token` was cancelled
    /// first.
    pub(crate) async fn wait(&self, token: &CancellationToken) -> bool {
        let mut rx = self.fence.subscribe();
        tokio::select! {
            held = rx.wait_for(Option::is_some) => held.is_ok(),
            _ = token.cancelled() => false,
        }
    }
}

/// A lease [`acquire`] took.
pub(crate) struct Acquired {
    pub lease: Lease,
    /// When its request was sent.
    pub sent: Instant,
    /// The pid of an earlier run of the same database in another process
    /// whose lease this one replaced (see [`Lease::predecessor_of`]).
    pub predecessor: Option<u32>,
}

/// Takes the lease for `holder`, waiting while another holds it when
/// `standby` (polling each heartbeat interval, the status saying who holds
/// it) and retrying while Redis cannot be reached. `Ok(None)` when `token`
/// is cancelled first; `Err(refusal)` when another holds it and not
/// `standby`.
pub(crate) async fn acquire(
    broker: &WorkerBroker,
    circle: &str,
    holder: &Lease,
    standby: bool,
    options: &WorkerOptions,
    status: &WorkerStatus,
    token: &CancellationToken,
) -> Result<Option<Acquired>, String> {
    loop {
        let sent = Instant::now();
        match broker
            .acquire_lease_after(holder, options.heartbeat_ttl)
            .await
        {
            Ok(Ok((lease, previous))) => {
                return Ok(Some(Acquired {
                    lease,
                    sent,
                    predecessor: previous.filter(|p| p.predecessor_of(holder)).map(|p| p.pid),
                }));
            }
            Ok(Err(other)) if !standby => return Err(refusal_message(broker.queue(), &other)),
            Ok(Err(other)) => status.set(WorkerState::Standby(standby_message(
                broker.queue(),
                &other,
            ))),
            Err(e) => {
                log::debug!(
                    circle, queue = broker.queue();
                    "queue {}: taking the lease failed: {e}", broker.queue()
                );
                status.set_reconnecting(&e);
            }
        }
        tokio::select! {
            _ = token.cancelled() => return Ok(None),
            _ = tokio::time::sleep(options.heartbeat_interval) => {}
        }
    }
}

/// What the keeper works with.
pub(crate) struct Keeper {
    pub broker: Arc<WorkerBroker>,
    pub holder: Lease,
    pub standby: bool,
    pub options: WorkerOptions,
    pub held: Arc<Held>,
    pub cancels: Arc<Cancels>,
    pub status: Arc<WorkerStatus>,
}

impl Keeper {
    /// Renews the lease each heartbeat interval until `token` is cancelled;
    /// stops serving by the partition rule (see the module docs) and takes
    /// the lease again when it can, waiting while another holds it.
    ///
    /// A renewal or acquisition that Redis did not answer is retried after
    /// [`Retry`]'s short backoff, not a heartbeat later: one failed renewal
    /// (a request that met the connection a Redis restart had cut) followed
    /// by a whole interval's wait would let the self-stop deadline pass
    /// with Redis long reachable again.
    pub(crate) async fn run(self, token: CancellationToken) {
        let Keeper {
            broker,
            holder,
            standby,
            options,
            held,
            cancels,
            status,
        } = self;
        let ttl = options.heartbeat_ttl;
        let interval = options.heartbeat_interval;
        let after = self_stop_after(&options);
        let queue = broker.queue().to_owned();
        let circle = held.circle.clone();
        // Why Redis did not renew it, when a renewal failed (a wrong
        // password, maxclients, …), as the status table words an outage.
        let mut failing: Option<String> = None;
        let overdue = |failing: &Option<String>| {
            let why = failing.as_deref().unwrap_or("redis unreachable?");
            format!(
                "lease of queue {queue} lost: not renewed for {after:?} ({why}); \
                 stopped taking its tasks before the lease can expire ({ttl:?} after its last \
                 renewal), so no other host runs them at the same time"
            )
        };
        let mut retry = Retry::within_beat(&options);
        // When the next renewal or acquisition is sent: a heartbeat after
        // the last one that Redis answered, sooner after one it did not.
        let mut next = Instant::now() + interval;
        let mut leases = held.fence.subscribe();
        // The token of the other holder last logged, so a wait is logged
        // once per holder, not at every beat.
        let mut logged_holder = None;
        loop {
            let carried = held.fence.current();
            let mine = carried.as_ref().map_or(0, |c| c.lease.token);
            let deadline = held.deadline(after);
            tokio::select! {
                biased;
                _ = token.cancelled() => return,
                _ = tokio::time::sleep_until(deadline.into()), if mine != 0 => {
                    held.lose(overdue(&failing), &cancels, &status);
                    continue;
                }
                // A claim was refused (`Held::refused`): the key is gone (a
                // Redis restart that lost it) or another's. Asked at once,
                // Redis gives it back when it is free, and names the holder
                // otherwise.
                _ = leases.wait_for(|l| l.as_ref().map_or(0, |c| c.lease.token) != mine), if mine != 0 => {
                    next = Instant::now();
                    continue;
                }
                _ = tokio::time::sleep_until(next.into()) => {}
            }
            let sent = Instant::now();
            next = sent + interval;
            if let Some(carried) = carried {
                tokio::select! {
                    renewed = broker.renew_lease(&carried.lease, ttl) => match renewed {
                        Ok(Ok(())) => {
                            retry.reset();
                            failing = None;
                            held.renewed(sent);
                        }
                        Ok(Err(other)) => {
                            retry.reset();
                            let why = match other {
                                Some(o) => format!(
                                    "taken by pid {} on host {} (database {})",
                                    o.pid, o.host, o.dir
                                ),
                                None => {
                                    // It expired, or Redis lost it in a
                                    // restart: taken again at once, not a
                                    // beat later, if it is still free.
                                    next = sent;
                                    "it expired".to_owned()
                                }
                            };
                            held.lose(
                                format!(
                                    "lease of queue {queue} lost: {why}; stopped taking its tasks"
                                ),
                                &cancels,
                                &status,
                            );
                        }
                        Err(e) => {
                            next = Instant::now() + retry.step();
                            failing = Some(crate::status::outage_reason(&e));
                            log::debug!(
                                circle = circle.as_str(), queue = queue.as_str();
                                "queue {queue}: renewing the lease failed: {e}"
                            );
                        }
                    },
                    _ = tokio::time::sleep_until(deadline.into()) => {
                        held.lose(overdue(&failing), &cancels, &status);
                    }
                    _ = token.cancelled() => return,
                }
                continue;
            }
            let acquired = tokio::select! {
                acquired = broker.acquire_lease(&holder, ttl) => acquired,
                _ = token.cancelled() => return,
            };
            match acquired {
                Ok(Ok(lease)) => {
                    retry.reset();
                    failing = None;
                    log::info!(
                        circle = circle.as_str(), queue = queue.as_str();
                        "queue {queue}: lease taken (token {}); taking tasks again",
                        lease.token
                    );
                    status.set(WorkerState::Running);
                    held.take(&lease, sent);
                }
                Ok(Err(other)) => {
                    retry.reset();
                    let (message, waiting): (_, fn(String) -> WorkerState) = if standby {
                        (standby_message(&queue, &other), WorkerState::Standby)
                    } else {
                        (lost_to_message(&queue, &other), WorkerState::LeaseLost)
                    };
                    if logged_holder != Some(other.token) {
                        logged_holder = Some(other.token);
                        log::warn!(circle = circle.as_str(), queue = queue.as_str(); "{message}");
                    }
                    status.set(waiting(message));
                }
                Err(e) => {
                    next = Instant::now() + retry.step();
                    log::debug!(
                        circle = circle.as_str(), queue = queue.as_str();
                        "queue {queue}: taking the lease again failed: {e}"
                    );
                    // The row says what keeps it from the lease now (Redis
                    // back with another password, say), not only how it
                    // was lost. A `Standby` row gives way to `Reconnecting`,
                    // which says it, and says it again at each failure (a
                    // Redis down, then back refusing the password): the
                    // take loop, parked until the lease is held, sends
                    // nothing that would.
                    match status.state() {
                        WorkerState::LeaseLost(_) => status.set(WorkerState::LeaseLost(format!(
                            "lease of queue {queue} lost; taking it again fails ({}); \
                             it takes no tasks until then",
                            crate::status::outage_reason(&e)
                        ))),
                        WorkerState::Standby(_) | WorkerState::Reconnecting(_) => {
                            status.set_reconnecting(&e);
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_stops_at_least_one_beat_before_its_lease_can_expire() {
        let mut options = WorkerOptions::default();
        assert_eq!(self_stop_after(&options), Duration::from_secs(10));
        options.heartbeat_interval = Duration::from_secs(1);
        options.heartbeat_ttl = Duration::from_secs(9);
        assert_eq!(self_stop_after(&options), Duration::from_secs(6));
        options.heartbeat_interval = Duration::from_secs(9);
        assert_eq!(self_stop_after(&options), Duration::ZERO);
    }

    #[test]
    fn a_refusal_of_a_token_no_longer_held_keeps_the_lease_held_now() {
        let held = Held::new("q", "Q");
        let (cancels, status) = (Cancels::default(), WorkerStatus::default());
        let lease = Lease {
            token: 7,
            pid: 1,
            host: "h".into(),
            dir: "/d".into(),
        };
        held.take(&lease, Instant::now());
        held.refused(6, &cancels, &status);
        assert_eq!(
            (held.token(), held.fence.token()),
            (7, 7),
            "an older token's refusal"
        );
        held.refused(0, &cancels, &status);
        assert_eq!(held.token(), 7, "a claim sent while the lease was lost");
        held.refused(7, &cancels, &status);
        assert_eq!((held.token(), held.fence.token()), (0, 0));
        assert!(matches!(status.state(), WorkerState::LeaseLost(_)));
    }
}
