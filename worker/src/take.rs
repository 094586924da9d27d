//! The take loop: pop, claim, run, finish; one task at a time.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use client::broker::{BlockingPopper, Claim, ClaimedTask, WorkerBroker};
use client::{FailureKind, Outcome, TaskFailure, TaskOutput};
use engine::{CircleEngine, RunControl};
use tokio_util::sync::CancellationToken;

use crate::cancel::{Cancels, Cause};
use crate::lease::Held;
use crate::runner;
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

/// Capped exponential backoff with one log line per outage.
struct Outage {
    backoff: Duration,
    since: Option<Instant>,
    /// Set by every failed request; cleared once the processing list was read.
    check_own: bool,
    /// Tasks that ran but whose result Redis refused (a fault, logged): never
    /// run again, even though they stay in the processing list.
    unwritten: HashSet<String>,
}

impl Outage {
    fn new() -> Outage {
        Outage {
            backoff: Duration::ZERO,
            since: None,
            check_own: false,
            unwritten: HashSet::new(),
        }
    }
}

/// What finishing a task learned about the next one.
enum Next {
    /// The next task, claimed in the same script that wrote the result.
    Claimed(Claim),
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
        let mut outage = Outage::new();
        // Claimed tasks waiting to run: one claimed together with the previous
        // task's result, or ids found in our processing list after an outage.
        // They run even after cancellation, so nothing stays claimed.
        let mut ready: VecDeque<Claim> = VecDeque::new();
        // Set after a blocking pop found nothing: the next pop blocks at once
        // instead of first trying the non-blocking one (one round trip less
        // per idle pop).
        let mut idle = false;
        loop {
            if let Some(claim) = ready.pop_front() {
                match self.handle(claim, &mut outage).await {
                    Next::Claimed(next) => ready.push_back(next),
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
            // refused anyway): wait until the keeper takes it again.
            if let Some(held) = self.held
                && held.token() == 0
            {
                held.wait(self.token).await;
                continue;
            }
            if outage.check_own {
                // A request whose reply was lost may have left ids in our
                // processing list (moved, perhaps claimed, never run).
                match self.broker.processing().await {
                    Ok(ids) => {
                        self.up(&mut outage);
                        outage.check_own = false;
                        for id in ids.into_iter().rev() {
                            if outage.unwritten.contains(&id) {
                                continue;
                            }
                            if let Some(claim) = self.claim(&id, &mut outage).await {
                                ready.push_back(claim);
                            }
                        }
                    }
                    Err(_) if self.token.is_cancelled() => return,
                    Err(e) => self.down(&mut outage, &e).await,
                }
                continue;
            }
            let polled = !idle;
            let quick = if idle {
                Ok(None)
            } else {
                self.broker.pop_and_claim().await
            };
            idle = false;
            // A quick pop that answered proves Redis is there: the worker is
            // Running now, not only after its blocking pop returns (which can
            // take the whole pop timeout on an idle queue).
            if polled && quick.is_ok() {
                self.up(&mut outage);
            }
            let claim = match quick {
                Ok(Some(claim)) => claim,
                Ok(None) => match self.popper.pop_and_claim(self.options.pop_timeout).await {
                    Ok(Some(claim)) => claim,
                    Ok(None) => {
                        self.up(&mut outage);
                        idle = true;
                        continue;
                    }
                    Err(e) => {
                        self.down(&mut outage, &e).await;
                        continue;
                    }
                },
                Err(e) => {
                    self.down(&mut outage, &e).await;
                    continue;
                }
            };
            self.up(&mut outage);
            ready.push_back(claim);
        }
    }

    fn up(&self, outage: &mut Outage) {
        if let Some(since) = outage.since.take() {
            log::info!(
                queue = self.config.queue.as_str();
                "worker for queue {} is connected to redis again after {:.1?}",
                self.config.queue,
                since.elapsed()
            );
        }
        outage.backoff = Duration::ZERO;
        self.status.set_running();
    }

    async fn down(&self, outage: &mut Outage, err: &client::Error) {
        if outage.since.is_none() {
            outage.since = Some(Instant::now());
            log::warn!(
                queue = self.config.queue.as_str();
                "worker for queue {} cannot reach redis: {err}; retrying with backoff up to {:?}",
                self.config.queue,
                self.options.max_backoff
            );
        }
        if !matches!(err, client::Error::Unavailable { .. }) {
            log::error!(queue = self.config.queue.as_str(); "worker for queue {}: {err}", self.config.queue);
        }
        self.status.set_reconnecting(err);
        outage.check_own = true;
        outage.backoff = if outage.backoff.is_zero() {
            Duration::from_millis(50)
        } else {
            (outage.backoff * 2).min(self.options.max_backoff)
        };
        log::debug!(
            "worker for queue {}: redis still unreachable ({err}); next attempt in {:?}",
            self.config.queue,
            outage.backoff
        );
        tokio::select! {
            _ = self.token.cancelled() => {}
            _ = tokio::time::sleep(outage.backoff) => {}
        }
    }

    /// Claims an id that is in our processing list, retrying through an
    /// outage. `None` on shutdown (the id stays for a reaper, which puts an
    /// unclaimed task back on the queue).
    async fn claim(&self, id: &str, outage: &mut Outage) -> Option<Claim> {
        loop {
            match self.broker.claim(id).await {
                Ok(claim) => return Some(claim),
                Err(e) => {
                    if self.token.is_cancelled() {
                        return None;
                    }
                    self.down(outage, &e).await;
                }
            }
        }
    }

    /// Runs or resolves a claim; returns the next task when finishing the
    /// run claimed one too.
    async fn handle(&self, claim: Claim, outage: &mut Outage) -> Next {
        match claim {
            Claim::Run(task) => return self.run_task(task, outage).await,
            Claim::Expired(id) => {
                log::info!(
                    task = id.as_str(), queue = self.config.queue.as_str();
                    "queue {}: task {id} expired before it ran",
                    self.config.queue
                );
                self.ended_unrun(&FailureKind::Expired);
            }
            Claim::Cancelled { task_id, reason } => {
                log::info!(
                    task = task_id.as_str(), queue = self.config.queue.as_str();
                    "queue {}: task {task_id} was cancelled before it ran: {reason}",
                    self.config.queue
                );
                self.ended_unrun(&FailureKind::Cancelled);
            }
            Claim::Invalid { task_id, reason } => {
                log::warn!(
                    task = task_id.as_str(), queue = self.config.queue.as_str();
                    "queue {}: task {task_id} cannot run: {reason}",
                    self.config.queue
                );
                self.ended_unrun(&FailureKind::Invalid);
            }
            Claim::Fenced(task_id) => {
                log::warn!(
                    queue = self.config.queue.as_str();
                    "queue {}: claim refused, the lease is another's (moved id {task_id:?} went back)",
                    self.config.queue
                );
                if let Some(held) = self.held {
                    held.refused(self.cancels, self.status);
                }
            }
            Claim::Skipped { task_id, reason } => {
                log::warn!(
                    task = task_id.as_str(), queue = self.config.queue.as_str();
                    "queue {}: skipped task {task_id}: {reason}",
                    self.config.queue
                );
            }
            _ => {}
        }
        Next::Unknown
    }

    /// Counts a task the claim ended without running it.
    fn ended_unrun(&self, kind: &FailureKind) {
        self.status.count(false);
        if let Some(metrics) = &self.options.metrics {
            metrics.failed(kind);
        }
    }

    async fn run_task(&self, mut task: ClaimedTask, outage: &mut Outage) -> Next {
        if let Some(held) = self.held
            && held.token() == 0
        {
            // Claimed under the lease (a request sent before it was lost),
            // which was lost before the script started: it does not run
            // here (another host may serve the queue now); it goes back to
            // the head of the queue, never run.
            self.give_back(&task.task_id, outage).await;
            return Next::Unknown;
        }
        let age = task.age();
        let started = Instant::now();
        if let (Some(metrics), Some(age)) = (&self.options.metrics, age) {
            metrics.queue_wait(age);
        }
        let control = RunControl {
            caller: run_as(task.caller.take()),
            // The deadline is wall-clock time, written by another process;
            // the engine counts on its own cheap clock.
            deadline: task.time_left().map(engine::clock::after),
            cancel: self.cancels.start(&task.task_id),
        };
        log::debug!(
            task = task.task_id.as_str(), queue = self.config.queue.as_str();
            "queue {}: task {} running ({} bytes)",
            self.config.queue,
            task.task_id,
            task.script.len()
        );
        let ran = runner::run_script(self.engine, &task.task_id, &task.script, &control);
        if let Some(metrics) = &self.options.metrics {
            metrics.run_time(started.elapsed());
        }
        let cause = self.cancels.end();
        let task_id = task.task_id;
        let outcome = match ran {
            Ok(out) => Outcome::Completed(TaskOutput {
                task_id,
                output: out.output,
                printed: out.printed,
                run_time: Some(out.elapsed),
            }),
            Err(e) => Outcome::Failed(TaskFailure {
                task_id,
                kind: failure_kind(e.kind),
                message: match cause {
                    Some(cause) if e.kind == engine::ErrorKind::Cancelled => {
                        self.cancel_message(&cause)
                    }
                    _ => e.message,
                },
                line: e.line,
                column: e.column,
            }),
        };
        match &outcome {
            Outcome::Completed(out) => log::debug!(
                task = out.task_id.as_str(), queue = self.config.queue.as_str();
                "queue {}: task {} completed in {:?}",
                self.config.queue,
                out.task_id,
                out.run_time.unwrap_or_default()
            ),
            Outcome::Failed(f) => log::debug!(
                task = f.task_id.as_str(), queue = self.config.queue.as_str(), kind = f.kind.as_str();
                "queue {}: task {} failed ({})",
                self.config.queue,
                f.task_id,
                f.kind
            ),
        }
        let next = self.finish(&outcome, outage).await;
        if let (Some(metrics), Some(age)) = (&self.options.metrics, age) {
            metrics.end_to_end(age + started.elapsed());
        }
        next
    }

    /// Gives back a claimed task that may not run, retrying through an
    /// outage; on shutdown it stays in the processing list for a reaper.
    async fn give_back(&self, task_id: &str, outage: &mut Outage) {
        loop {
            match self.broker.give_back(task_id).await {
                Ok(()) => {
                    log::warn!(
                        task = task_id, queue = self.config.queue.as_str();
                        "queue {}: task {task_id} went back to the queue: the lease was lost before it ran",
                        self.config.queue
                    );
                    return;
                }
                Err(_) if self.token.is_cancelled() => return,
                Err(e) => self.down(outage, &e).await,
            }
        }
    }

    /// Why a cancelled script stopped, as its task's error says.
    fn cancel_message(&self, cause: &Cause) -> String {
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

    /// Writes the result, retrying through an outage, and (unless shutting
    /// down) takes the next task in the same script. On shutdown it gives up
    /// after `shutdown_grace` more; the task then stays in the processing list
    /// and a reaper ends it as worker lost.
    async fn finish(&self, outcome: &Outcome, outage: &mut Outage) -> Next {
        let task_id = outcome.task_id();
        let mut give_up_at: Option<Instant> = None;
        loop {
            let took_next = !self.token.is_cancelled();
            let written = if took_next {
                self.broker.finish_and_next(outcome).await
            } else {
                self.broker.finish(outcome).await.map(|w| (w, None))
            };
            match written {
                Ok((written, next)) => {
                    self.up(outage);
                    if written {
                        self.status.count(matches!(outcome, Outcome::Completed(_)));
                        if let Some(metrics) = &self.options.metrics {
                            match outcome {
                                Outcome::Completed(_) => metrics.completed(),
                                Outcome::Failed(f) => metrics.failed(&f.kind),
                            }
                        }
                    } else {
                        log::warn!(
                            task = task_id, queue = self.config.queue.as_str();
                            "queue {}: task {task_id} was resolved elsewhere while it ran; its result is dropped",
                            self.config.queue
                        );
                    }
                    return match next {
                        Some(claim) => Next::Claimed(claim),
                        None if took_next => Next::Empty,
                        None => Next::Unknown,
                    };
                }
                Err(e @ client::Error::Unavailable { .. }) => {
                    if self.token.is_cancelled() {
                        let at = *give_up_at
                            .get_or_insert_with(|| Instant::now() + self.config.shutdown_grace);
                        if Instant::now() >= at {
                            log::error!(
                                task = task_id, queue = self.config.queue.as_str();
                                "queue {}: could not write the result of task {task_id} before shutdown: {e}",
                                self.config.queue
                            );
                            return Next::Unknown;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else {
                        self.down(outage, &e).await;
                    }
                }
                Err(e) => {
                    log::error!(
                        task = task_id, queue = self.config.queue.as_str();
                        "queue {}: writing the result of task {task_id} failed: {e}",
                        self.config.queue
                    );
                    outage.unwritten.insert(task_id.to_owned());
                    return Next::Unknown;
                }
            }
        }
    }
}
