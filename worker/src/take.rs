//! The take loop: pop or claim a batch, run it in groups (see `group`),
//! one task at a time.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use client::broker::{BlockingPopper, Claim, ClaimedAt, WorkerBroker};

use crate::finished::Finished;
use client::FailureKind;
use engine::CircleEngine;
use tokio_util::sync::CancellationToken;

use crate::cancel::{Cancels, Cause};
use crate::lease::Held;
use crate::retry::Retry;
use crate::{WorkerConfig, WorkerOptions, WorkerStatus};

/// Everything the loop needs.
pub(crate) struct Taker<'a> {
    pub config: &'a WorkerConfig,
    pub options: &'a WorkerOptions,
    pub broker: &'a WorkerBroker,
    pub popper: &'a BlockingPopper,
    /// The circle's engine; scripts run inline on the circle thread.
    pub engine: &'a CircleEngine,
    /// The running script's cancel flag (shutdown, or its task's `cancel`
    /// field).
    pub cancels: &'a Cancels,
    pub status: &'a WorkerStatus,
    pub token: &'a CancellationToken,
    /// The queue's lease, when the worker has one: no task is taken while
    /// it is not held.
    pub held: Option<&'a Held>,
}

/// A request of the take loop, as an outage remembers which one Redis
/// refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Step {
    /// Reading this worker's processing list.
    Processing,
    /// Claiming one id of it.
    Claim,
    /// The non-blocking batch claim.
    Batch,
    /// The blocking pop.
    Pop,
    /// Writing a group's results.
    Finish,
}

/// Capped exponential backoff with one log line per outage.
pub(crate) struct Outage {
    backoff: Retry,
    since: Option<Instant>,
    /// The request that failed last, and whether Redis refused it (out of
    /// memory, an ACL, …) rather than being out of reach: only that request
    /// answering ends the outage. Redis may take one connection's requests
    /// and not the other's (at `maxclients` it closes each new connection
    /// at once; a refusal is of one command): the batch claim then succeeds
    /// between blocking pops that fail, which must not end the outage at
    /// every turn (a warning and an info line every 50 ms, the backoff
    /// never growing).
    failed: Option<(Step, bool)>,
    /// Set by every failed request; cleared once the processing list was read.
    pub(crate) check_own: bool,
    /// Tasks that ran but whose result Redis refused (a fault, logged): never
    /// run again, even though they stay in the processing list.
    pub(crate) unwritten: HashSet<String>,
    /// The latest results Redis acknowledged (see [`Finished`]).
    pub(crate) finished: Finished,
}

impl Outage {
    fn new(max_backoff: Duration) -> Outage {
        Outage {
            backoff: Retry::new(max_backoff),
            since: None,
            failed: None,
            check_own: false,
            unwritten: HashSet::new(),
            finished: Finished::default(),
        }
    }
}

/// What finishing a group learned about the next tasks.
pub(crate) enum Next {
    /// The next tasks, claimed in the same script that wrote the results.
    Claimed,
    /// The queue was empty when the result was written.
    Empty,
    /// Nothing was asked (shutdown, or the result could not be written).
    Unknown,
}

/// The wire kind of an engine failure: the one place the worker maps
/// kinds. A kind the engine adds and this match does not know yet goes on
/// the wire under the engine's name for it.
pub(crate) fn failure_kind(kind: engine::ErrorKind) -> FailureKind {
    use engine::ErrorKind as E;
    match kind {
        E::Syntax => FailureKind::Syntax,
        E::Runtime => FailureKind::Runtime,
        E::Database => FailureKind::Database,
        E::Value => FailureKind::Value,
        E::Limit => FailureKind::Limit,
        E::Timeout => FailureKind::Timeout,
        E::Cancelled => FailureKind::Cancelled,
        E::Forbidden => FailureKind::Forbidden,
        E::Internal => FailureKind::Internal,
        other => FailureKind::from_wire(other.as_str()),
    }
}

/// Who a claimed task runs as: its submitter's name and role, or the
/// trusted identity (role write, no name) for a task without a role.
pub(crate) fn run_as(caller: Option<client::Caller>) -> engine::Caller {
    match caller {
        None => engine::Caller::trusted(),
        Some(client::Caller { name, role }) => engine::Caller {
            name,
            role: match role {
                client::Role::Read => engine::Role::Read,
                client::Role::Write => engine::Role::Write,
            },
        },
    }
}

impl Taker<'_> {
    /// Runs until the token is cancelled.
    pub(crate) async fn run(&self) {
        let mut outage = Outage::new(self.options.max_backoff);
        // Claimed tasks waiting to run: one claimed together with the previous
        // task's result, or ids found in our processing list after an outage.
        // They run even after cancellation, so nothing stays claimed.
        let mut ready: VecDeque<Claim> = VecDeque::new();
        // Set after a blocking pop found nothing: the next pop blocks at once
        // instead of first trying the non-blocking one (one round trip less
        // per idle pop).
        let mut idle = false;
        loop {
            if !ready.is_empty() {
                match self.run_group(&mut ready, &mut outage).await {
                    Next::Claimed => {}
                    // The finishing script just found the queue empty: the
                    // next pop blocks at once instead of asking again.
                    Next::Empty => idle = ready.is_empty(),
                    Next::Unknown => {}
                }
                continue;
            }
            // On shutdown, one last look at our own list if a reply may have
            // been lost, so nothing stays claimed (then stop, even if Redis
            // cannot be reached).
            if self.token.is_cancelled() && !outage.check_own {
                return;
            }
            // Without the lease nothing is taken (the claims would be
            // refused anyway): wait until the keeper takes it again. A look
            // at its own list that an outage left due is made first: its
            // claims are refused, which gives back to the queue what never
            // ran here, and a result kept here is written again. The next
            // holder cannot settle that list: its reaper leaves alone the
            // list of a worker that beats, as this one does while it waits.
            // Stopped meanwhile, it stops at once, even with that look due.
            if let Some(held) = self.held
                && held.token() == 0
                && (!outage.check_own || self.token.is_cancelled())
            {
                if !held.wait(self.token).await {
                    return;
                }
                continue;
            }
            if outage.check_own {
                // A request whose reply was lost may have left ids in our
                // processing list (moved, perhaps claimed, never run).
                match self.broker.processing().await {
                    Ok(ids) => {
                        self.up(&mut outage, Step::Processing);
                        outage.check_own = false;
                        // Each id once (see `processing`): a second claim
                        // would find it `processing` by this worker and run
                        // it again. One whose finish Redis acknowledged and
                        // then lost ran already: its result is written again.
                        let ids: Vec<String> = ids
                            .into_iter()
                            .rev()
                            .filter(|id| !outage.unwritten.contains(id))
                            .collect();
                        let again = match self.ran_here(&ids, &mut outage).await {
                            Ok(again) => again,
                            Err(_) if self.token.is_cancelled() => return,
                            Err(e) => {
                                self.down(&mut outage, &e, Step::Processing).await;
                                continue;
                            }
                        };
                        for (id, ran) in ids.iter().zip(&again) {
                            if ran.is_none()
                                && let Some(claim) = self.claim(id, &mut outage).await
                            {
                                ready.push_back(claim);
                            }
                        }
                        let again: Vec<_> = again.into_iter().flatten().collect();
                        if !again.is_empty() {
                            self.finish_again(again, &mut ready, &mut outage).await;
                        }
                    }
                    Err(_) if self.token.is_cancelled() => return,
                    Err(e) => self.down(&mut outage, &e, Step::Processing).await,
                }
                continue;
            }
            let polled = !idle;
            let quick = if idle {
                Ok(Vec::new())
            } else {
                self.broker.claim_batch(self.options.claim_batch).await
            };
            idle = false;
            // A quick pop that answered proves Redis is there: the worker is
            // Running now, not only after its blocking pop returns (which can
            // take the whole pop timeout on an idle queue).
            if polled && let Ok(claims) = &quick {
                self.answered(&mut outage, Step::Batch, !claims.is_empty());
            }
            match quick {
                Ok(claims) if !claims.is_empty() => ready.extend(claims),
                // After a failed pop, a short one first: on an idle queue
                // the blocking pop answers only at its timeout, and only a
                // pop that answers ends an outage the pop met.
                Ok(_) => match self
                    .popper
                    .pop_and_claim(
                        if outage.failed.is_some_and(|(step, _)| step == Step::Pop) {
                            self.options.pop_timeout.min(Duration::from_millis(100))
                        } else {
                            self.options.pop_timeout
                        },
                    )
                    .await
                {
                    Ok(Some(claim)) => {
                        self.up(&mut outage, Step::Pop);
                        ready.push_back(claim);
                    }
                    Ok(None) => {
                        self.up(&mut outage, Step::Pop);
                        idle = true;
                    }
                    Err(e) => self.down(&mut outage, &e, Step::Pop).await,
                },
                Err(e) => self.down(&mut outage, &e, Step::Batch).await,
            }
        }
    }

    /// For each of `ids` (found in this worker's processing list after an
    /// outage), whether it is a claim of a task that ran here and whose
    /// acknowledged finish Redis lost (that run's own claim, or an earlier
    /// one of the same push whose reply a failover cut, see
    /// `Finished::again_claimed`): then its kept result (or `worker_lost`)
    /// with the `createdAt` and `startedAt` found, to be written again. An
    /// id that ran here whose hash holds a claim of another push, or one
    /// later than its runs here, was claimed again (a task pushed again
    /// under that id, its claim's reply lost in the outage): it is
    /// forgotten and claimed as any id. One whose hash holds no `startedAt`
    /// was moved into the list but not claimed (a restored Redis kept the
    /// pop, not its claim): it is claimed as any id too, and its claim
    /// tells the run by `createdAt` (`Finished::again_queued`).
    async fn ran_here(
        &self,
        ids: &[String],
        outage: &mut Outage,
    ) -> client::Result<Vec<Option<(client::Outcome, ClaimedAt)>>> {
        let known: Vec<&str> = ids
            .iter()
            .filter(|id| outage.finished.get(id).is_some())
            .map(String::as_str)
            .collect();
        if known.is_empty() {
            return Ok(vec![None; ids.len()]);
        }
        let claimed = self.broker.claimed_at(&known).await?;
        let claimed: HashMap<&str, ClaimedAt> = known.iter().copied().zip(claimed).collect();
        Ok(ids
            .iter()
            .map(|id| {
                let at = *claimed.get(id.as_str())?;
                let Some(outcome) = outage.finished.again_claimed(id, at) else {
                    if at.started_ms.is_some() {
                        outage.finished.forget(id);
                    }
                    return None;
                };
                Some((outcome, at))
            })
            .collect())
    }

    /// `step` answered, and `brought` tasks from Redis: then the worker
    /// takes tasks again, and an outage another request met (one not
    /// refused) ends even before that one is sent again. A busy queue is
    /// taken by batch claims and the claims finishes make: the failed pop
    /// is not tried until it empties.
    pub(crate) fn answered(&self, outage: &mut Outage, step: Step, brought: bool) {
        if brought && outage.failed.is_some_and(|(_, refused)| !refused) {
            outage.failed = None;
        }
        self.up(outage, step);
    }

    pub(crate) fn up(&self, outage: &mut Outage, step: Step) {
        if outage.failed.is_some_and(|(failed, _)| failed != step) {
            return;
        }
        let refused = outage.failed.take().is_some_and(|(_, refused)| refused);
        if let Some(since) = outage.since.take() {
            let again = if refused {
                "redis accepts its requests again"
            } else {
                "is connected to redis again"
            };
            log::info!(
                circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                "worker for queue {} {again} after {:.1?}",
                self.config.queue,
                since.elapsed()
            );
        }
        outage.backoff.reset();
        self.status.set_running();
    }

    pub(crate) async fn down(&self, outage: &mut Outage, err: &client::Error, step: Step) {
        let refused = err.is_refusal();
        outage.failed = Some((step, refused));
        let starts = outage.since.is_none();
        if starts {
            outage.since = Some(Instant::now());
            let what = if refused {
                "is refused by redis"
            } else {
                "cannot reach redis"
            };
            log::warn!(
                circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                "worker for queue {} {what}: {err}; retrying with backoff up to {:?}",
                self.config.queue,
                self.options.max_backoff
            );
        }
        // Once per outage, as the warning: a refusal that lasts (a queue
        // key of another type) must not log an error at every retry.
        if starts && !matches!(err, client::Error::Unavailable { .. }) {
            log::error!(circle = self.config.circle.as_str(), queue = self.config.queue.as_str(); "worker for queue {}: {err}", self.config.queue);
        }
        self.status.set_reconnecting(err);
        outage.check_own = true;
        let pause = outage.backoff.step();
        log::debug!(
            circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
            "worker for queue {}: redis still unreachable ({err}); next attempt in {pause:?}",
            self.config.queue,
        );
        tokio::select! {
            _ = self.token.cancelled() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }

    /// Claims an id that is in our processing list, retrying through an
    /// outage. `None` on shutdown (the id stays for a reaper, which puts an
    /// unclaimed task back on the queue).
    pub(crate) async fn claim(&self, id: &str, outage: &mut Outage) -> Option<Claim> {
        loop {
            match self.broker.claim(id).await {
                Ok(claim) => {
                    self.up(outage, Step::Claim);
                    return Some(claim);
                }
                Err(e) => {
                    if self.token.is_cancelled() {
                        return None;
                    }
                    self.down(outage, &e, Step::Claim).await;
                }
            }
        }
    }

    /// Reports a claim the claim script ended (or dropped) without running.
    pub(crate) fn report_unrun(&self, claim: Claim) {
        match claim {
            Claim::Run(_) => {}
            Claim::Expired(id) => {
                log::info!(
                    task = id.as_str(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                    "queue {}: task {id} expired before it ran",
                    self.config.queue
                );
                self.ended_unrun(&FailureKind::Expired);
            }
            Claim::Cancelled { task_id, reason } => {
                log::info!(
                    task = task_id.as_str(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                    "queue {}: task {task_id} was cancelled before it ran: {reason}",
                    self.config.queue
                );
                self.ended_unrun(&FailureKind::Cancelled);
            }
            Claim::Lost { task_id, reason } => {
                log::info!(
                    task = task_id.as_str(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                    "queue {}: task {task_id} does not run again: {reason}",
                    self.config.queue
                );
                self.ended_unrun(&FailureKind::WorkerLost);
            }
            Claim::Invalid { task_id, reason } => {
                log::warn!(
                    task = task_id.as_str(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                    "queue {}: task {task_id} cannot run: {reason}",
                    self.config.queue
                );
                self.ended_unrun(&FailureKind::Invalid);
            }
            Claim::Fenced { task_id, token } => {
                let moved = if task_id.is_empty() {
                    String::from("nothing was taken")
                } else {
                    format!("task {task_id} went back to the queue")
                };
                log::warn!(
                    circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                    "queue {}: claim with lease token {token} refused, the lease is another's \
                     ({moved})",
                    self.config.queue
                );
                if let Some(held) = self.held {
                    held.refused(token, self.cancels, self.status);
                }
            }
            Claim::Skipped { task_id, reason } => {
                log::warn!(
                    task = task_id.as_str(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                    "queue {}: skipped task {task_id}: {reason}",
                    self.config.queue
                );
            }
            _ => {}
        }
    }

    /// Counts a task the claim ended without running it.
    pub(crate) fn ended_unrun(&self, kind: &FailureKind) {
        self.status.count(false);
        if let Some(metrics) = &self.options.metrics {
            metrics.failed(kind);
        }
    }

    /// Why a cancelled script stopped, as its task's error says.
    pub(crate) fn cancel_message(&self, cause: &Cause) -> String {
        match cause {
            Cause::Shutdown => format!(
                "cancelled: the worker shut down and its {:?} grace for running scripts is over",
                self.config.shutdown_grace
            ),
            Cause::Requested(reason) => {
                format!("cancelled while it ran: {reason}; none of its writes were kept")
            }
            Cause::LeaseLost(reason) => {
                format!("cancelled while it ran: {reason}; none of its writes were kept")
            }
        }
    }
}
