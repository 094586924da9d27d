//! Running a batch of claimed tasks as groups: each script of a group runs
//! in turn (it sees the writes of those before it) and commits without
//! waiting for the disk; then one fsync covers the group's writes, and one
//! script reports every result of the group (each task keeps its own
//! status, result, TTL and notification), re-checks the tasks still held,
//! and claims the next batch when none is left.
//!
//! Rules (see also the crate docs):
//! - No task of a group is reported `completed` before the fsync covering
//!   its writes (`Durability::Sync`); when that fsync fails, every task of
//!   the group from its first write on (those that wrote, and those that
//!   may have read those writes) ends as `error` (kind `database`).
//! - A group is cut once it has run for [`WorkerOptions::group_window`]:
//!   its results are held back no longer than that plus the run time of the
//!   script that crossed it (a long script after short ones delays their
//!   replies by its own length). The tasks left wait for the next group.
//! - Every claimed task is `processing` by this worker from its claim on.
//!   Before it runs, its `cancel` field is read again in the same script that
//!   ends the group before it, so a task claimed and cancelled before it
//!   starts ends `cancelled` without running (a cancel that arrives within
//!   the group window of its start counts as a cancel while running: the
//!   watcher stops a long script, a short one completes). A task whose
//!   deadline has passed by its turn ends with the timeout error without
//!   running (the engine refuses it).
//! - A worker that stops (shutdown) claims nothing more and runs what it
//!   holds within its shutdown grace; once the grace is over it starts no
//!   more held task: the script that writes its last group's results puts
//!   them back at the head of the queue as `pending`, in order. A worker
//!   whose lease is lost does the same at once (and its running script is
//!   cut, see `lease.rs`); every batched claim is fenced by the lease token
//!   in Redis as the single claims are.
//! - A worker that dies holding a batch: every task of it not yet reported
//!   — the running one, those already run in the open group, and those not
//!   started — ends `worker_lost` when the reaper finds it (or goes back on
//!   the queue if it opted in to retry). Telling an unstarted task from a
//!   started one would cost a round trip per task, and the ones already run
//!   may have committed writes, so none is put back on the queue.

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use client::broker::{Claim, ClaimedAt, ClaimedTask};
use client::{FailureKind, Outcome, TaskFailure, TaskOutput};
use engine::RunControl;

use crate::runner;
use crate::take::{Next, Outage, Step, Taker, failure_kind, run_as};

/// A task of the open group, run and waiting for its result to be written.
struct Ran {
    outcome: Outcome,
    /// Whether it committed writes (they need the group's fsync).
    wrote: bool,
    /// Queue wait at its start, and when it started (for end-to-end time).
    age: Option<Duration>,
    started: Instant,
    /// Its `createdAt` as its claim read it and the `startedAt` the claim
    /// wrote (see `Finished`).
    at: ClaimedAt,
    /// A result written again, not run now (counted when first written,
    /// or now when its first finish found it resolved elsewhere).
    again: bool,
}

impl Ran {
    /// A result written again for a task that ran here before: it runs
    /// nothing now and is counted when first written.
    fn again(outcome: Outcome, at: ClaimedAt) -> Ran {
        Ran {
            outcome,
            wrote: false,
            age: None,
            started: Instant::now(),
            at,
            again: true,
        }
    }
}

impl Taker<'_> {
    /// Runs one group from the front of `ready`, writes its results, and
    /// puts what the finish claimed at the back of `ready`.
    pub(crate) async fn run_group(&self, ready: &mut VecDeque<Claim>, outage: &mut Outage) -> Next {
        let start = Instant::now();
        let mut ran: Vec<Ran> = Vec::new();
        while let Some(claim) = ready.pop_front() {
            let again = match &claim {
                Claim::Run(task) if task.created_ms.is_some() && !task.ended_before => {
                    outage.finished.again_queued(&task.task_id, task.created_ms)
                }
                _ => None,
            };
            match (claim, again) {
                // Ran here already, its finish acknowledged, and queued
                // again by a Redis that lost both its claim and its finish
                // (a restart from an older snapshot, a failover): its kept
                // result is written again; it does not run a second time.
                // (An id pushed again after it ended holds that end's
                // outcome, and runs.)
                (Claim::Run(task), Some(outcome)) => {
                    log::warn!(
                        task = task.task_id.as_str(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                        "queue {}: task {} ran here, but redis lost its claim and its acknowledged \
                         result; written again, not run again",
                        self.config.queue,
                        task.task_id
                    );
                    ran.push(Ran::again(outcome, task.claimed_at()));
                }
                (Claim::Run(task), None) => match self.run_task(task) {
                    Ok(task) => ran.push(task),
                    // A worker past its shutdown grace, or whose lease is
                    // lost, starts nothing more: what it holds goes back to
                    // the queue with this group's results.
                    Err(task) => {
                        ready.push_front(Claim::Run(*task));
                        break;
                    }
                },
                (other, _) => self.report_unrun(other),
            }
            if !ran.is_empty() && start.elapsed() >= self.options.group_window {
                break;
            }
        }
        let releasing = self.stops_starting() && ready.iter().any(is_run);
        if ran.is_empty() && !releasing {
            return Next::Unknown;
        }
        self.make_durable(&mut ran);
        if let Some(failure) = self.engine.db().write_failure() {
            self.status.set_writes_refused(&failure);
        }
        let next = self.finish_group(&ran, ready, outage, true).await;
        if let Some(metrics) = &self.options.metrics {
            for task in &ran {
                if let Some(age) = task.age {
                    metrics.end_to_end(age + task.started.elapsed());
                }
            }
        }
        next
    }

    /// Writes again the results of tasks that ran here and whose finish
    /// Redis acknowledged and then lost (see `finished::Finished`); they do not
    /// run again. Their writes were made durable before the first finish.
    pub(crate) async fn finish_again(
        &self,
        outcomes: Vec<(Outcome, ClaimedAt)>,
        ready: &mut VecDeque<Claim>,
        outage: &mut Outage,
    ) -> Next {
        for (outcome, _) in &outcomes {
            log::warn!(
                task = outcome.task_id(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                "queue {}: task {} ran here, but redis lost its acknowledged result; written again, \
                 not run again",
                self.config.queue,
                outcome.task_id()
            );
        }
        let ran: Vec<Ran> = outcomes
            .into_iter()
            .map(|(outcome, at)| Ran::again(outcome, at))
            .collect();
        // Counted when first written (or, first found resolved elsewhere,
        // now): one task, one count.
        self.finish_group(&ran, ready, outage, false).await
    }

    /// One fsync for the group's writes. A failed one turns into a database
    /// error every task from the group's first write on: those that wrote
    /// (their writes may not be on disk) and those that ran after them (they
    /// may have read those writes, and a reply must not show what the disk
    /// may have lost).
    fn make_durable(&self, ran: &mut [Ran]) {
        let Some(first_write) = ran.iter().position(|t| t.wrote) else {
            return;
        };
        let Err(e) = self.engine.sync() else { return };
        log::error!(
            circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
            "queue {}: {}", self.config.queue, e.message
        );
        // A result written again did not run in this group: it read
        // nothing of it, and its own writes were durable before its first
        // finish.
        for task in ran[first_write..].iter_mut().filter(|t| !t.again) {
            let message = if task.wrote {
                e.message.clone()
            } else {
                format!(
                    "the script may have read writes of its group that could not be made durable: {}",
                    e.message
                )
            };
            task.outcome = Outcome::Failed(TaskFailure {
                task_id: task.outcome.task_id().to_owned(),
                kind: FailureKind::Database,
                message,
                line: None,
                column: None,
            });
        }
    }

    /// Runs `task`, unless the worker may start no task (see
    /// [`Cancels::start`](crate::cancel::Cancels::start)): then it is
    /// handed back.
    fn run_task(&self, mut task: ClaimedTask) -> Result<Ran, Box<ClaimedTask>> {
        let Some(cancel) = self.cancels.start(&task.task_id, || self.lease_lost()) else {
            return Err(Box::new(task));
        };
        let age = task.age();
        let at = task.claimed_at();
        let started = Instant::now();
        if let (Some(metrics), Some(waited)) = (&self.options.metrics, task.queue_wait()) {
            metrics.queue_wait(waited);
        }
        let control = RunControl {
            caller: run_as(task.caller.take()),
            // The deadline is wall-clock time, written by another process;
            // the engine counts on its own cheap clock. One already passed
            // (the task waited in the batch) is refused before the script
            // starts, with the timeout error.
            deadline: task.time_left().map(engine::clock::after),
            cancel,
        };
        log::debug!(
            task = task.task_id.as_str(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
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
        let (outcome, wrote) = match ran {
            Ok(out) => (
                Outcome::Completed(TaskOutput {
                    task_id,
                    output: out.output,
                    printed: out.printed,
                    run_time: Some(out.elapsed),
                }),
                out.writes > 0,
            ),
            Err(e) => (
                Outcome::Failed(TaskFailure {
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
                false,
            ),
        };
        match &outcome {
            Outcome::Completed(out) => log::debug!(
                task = out.task_id.as_str(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                "queue {}: task {} completed in {:?}",
                self.config.queue,
                out.task_id,
                out.run_time.unwrap_or_default()
            ),
            Outcome::Failed(f) => log::debug!(
                task = f.task_id.as_str(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str(), kind = f.kind.as_str();
                "queue {}: task {} failed ({})",
                self.config.queue,
                f.task_id,
                f.kind
            ),
        }
        Ok(Ran {
            outcome,
            wrote,
            age,
            started,
            at,
            again: false,
        })
    }

    /// Writes the group's results, retrying through an outage; re-checks
    /// the tasks still held (dropping those found cancelled from `ready`)
    /// and, when none is held and the worker is not shutting down, claims
    /// the next batch in the same script. Past the shutdown grace the held
    /// tasks go back to the queue in the same script; on shutdown it gives up after
    /// `shutdown_grace` more, and the tasks then stay in the processing
    /// list for a reaper (which ends them as worker lost).
    async fn finish_group(
        &self,
        ran: &[Ran],
        ready: &mut VecDeque<Claim>,
        outage: &mut Outage,
        count: bool,
    ) -> Next {
        let outcomes: Vec<Outcome> = ran.iter().map(|t| t.outcome.clone()).collect();
        let mut give_up_at: Option<Instant> = None;
        loop {
            let held: Vec<&str> = ready
                .iter()
                .filter_map(|c| match c {
                    Claim::Run(task) => Some(task.task_id.as_str()),
                    _ => None,
                })
                .collect();
            let release = self.stops_starting();
            // After a lost reply (`check_own`) nothing more is claimed until
            // the worker has looked at its own list: a finish that ran
            // unseen may have claimed a batch that waits there.
            let take_next =
                if held.is_empty() && !self.token.is_cancelled() && !release && !outage.check_own {
                    self.options.claim_batch
                } else {
                    0
                };
            let finished = self
                .broker
                .finish_batch(&outcomes, &held, take_next, release)
                .await;
            match finished {
                Ok(done) => {
                    self.answered(outage, Step::Finish, !done.next.is_empty());
                    // A result written again that Redis refused: the id is
                    // not the run it remembers (a new task under the same
                    // id, pending in the list), so it is claimed as any id.
                    let mut not_again = Vec::new();
                    for ((outcome, written), task) in outcomes.iter().zip(&done.written).zip(ran) {
                        if count && !task.again {
                            self.count_written(outcome, *written);
                        } else if !*written {
                            not_again.push(outcome.task_id().to_owned());
                        } else if outage.finished.count_once(outcome.task_id(), task.at) {
                            // It ran here, its finish found it resolved
                            // elsewhere (uncounted), and its result is
                            // written now: one task, one count.
                            self.count_written(outcome, true);
                        }
                        // Also one resolved elsewhere (a replica lacked its
                        // claim): it ran here, and is never run again.
                        if *written || !task.again {
                            outage.finished.push(outcome, task.at, *written);
                        }
                    }
                    for id in not_again {
                        outage.finished.forget(&id);
                        if let Some(claim) = self.claim(&id, outage).await {
                            ready.push_back(claim);
                        }
                    }
                    for (task_id, reason, kind) in &done.cancelled {
                        // `worker_lost`: a reaper had put it back after its
                        // worker died while it ran; it may have run then.
                        let again = if *kind == FailureKind::WorkerLost {
                            " again, after its worker died while it ran"
                        } else {
                            ""
                        };
                        log::info!(
                            task = task_id.as_str(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                            "queue {}: task {task_id} was cancelled before it ran{again}: {reason}",
                            self.config.queue
                        );
                        self.ended_unrun(kind);
                    }
                    for task_id in &done.gone {
                        log::info!(
                            task = task_id.as_str(), circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                            "queue {}: held task {task_id} is no longer this worker's (put back \
                             while a reply was lost, or ended or put back by a reaper); it does \
                             not run here",
                            self.config.queue
                        );
                    }
                    // What the finish ended or found gone never runs here;
                    // with release, no held task does.
                    let unrun: HashSet<&str> = (done.cancelled.iter().map(|(id, ..)| id))
                        .chain(&done.gone)
                        .map(String::as_str)
                        .collect();
                    ready.retain(|c| {
                        !matches!(c, Claim::Run(t) if release || unrun.contains(t.task_id.as_str()))
                    });
                    let claimed = !done.next.is_empty();
                    ready.extend(done.next);
                    return match () {
                        () if claimed => Next::Claimed,
                        () if take_next > 0 => Next::Empty,
                        () => Next::Unknown,
                    };
                }
                Err(e @ client::Error::Unavailable { .. }) => {
                    if self.token.is_cancelled() {
                        let at = *give_up_at
                            .get_or_insert_with(|| Instant::now() + self.config.shutdown_grace);
                        if Instant::now() >= at {
                            log::error!(
                                circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                                "queue {}: could not write the results of {} task(s) before shutdown: {e}",
                                self.config.queue,
                                outcomes.len()
                            );
                            // They ran: a last look at the processing list
                            // (due after an earlier failure) must not claim
                            // them again, nor give them back as never run.
                            for outcome in &outcomes {
                                outage.unwritten.insert(outcome.task_id().to_owned());
                            }
                            ready.retain(|c| !is_run(c));
                            return Next::Unknown;
                        }
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    } else {
                        self.down(outage, &e, Step::Finish).await;
                    }
                }
                Err(e) => {
                    log::error!(
                        circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                        "queue {}: writing the results of {} task(s) failed: {e}",
                        self.config.queue,
                        outcomes.len()
                    );
                    for outcome in &outcomes {
                        outage.unwritten.insert(outcome.task_id().to_owned());
                    }
                    // The script may have failed after it claimed the next
                    // batch: those tasks wait in this worker's list, to be
                    // claimed from there (the unwritten ones are not run
                    // again).
                    outage.check_own = true;
                    if release {
                        ready.retain(|c| !is_run(c));
                    }
                    return Next::Unknown;
                }
            }
        }
    }

    /// Whether no held task may start: the shutdown grace is over, or the
    /// queue's lease is lost (another host may serve the queue now; the
    /// tasks go back to its head, never run here).
    fn stops_starting(&self) -> bool {
        self.cancels.is_shut_down() || self.lease_lost()
    }

    /// The lease is lost: dropped by the keeper, or not renewed in time by
    /// this worker's own clock (the keeper, on another runtime, may not
    /// have run since: a process stopped past its lease and continued runs
    /// this thread and the keeper's in either order).
    fn lease_lost(&self) -> bool {
        self.held.is_some_and(|h| {
            h.token() == 0 || h.overdue(crate::lease::self_stop_after(self.options))
        })
    }

    fn count_written(&self, outcome: &Outcome, written: bool) {
        let task_id = outcome.task_id();
        if !written {
            log::warn!(
                task = task_id, circle = self.config.circle.as_str(), queue = self.config.queue.as_str();
                "queue {}: task {task_id} was resolved elsewhere while it ran; its result is dropped",
                self.config.queue
            );
            return;
        }
        self.status.count(matches!(outcome, Outcome::Completed(_)));
        if let Some(metrics) = &self.options.metrics {
            match outcome {
                Outcome::Completed(_) => metrics.completed(),
                Outcome::Failed(f) => metrics.failed(&f.kind),
            }
        }
    }
}

fn is_run(claim: &Claim) -> bool {
    matches!(claim, Claim::Run(_))
}
