//! Stopping the running script from outside: at shutdown, once the grace is
//! over, and when its task's `cancel` field is set (the client that sent it
//! went away, or someone called `client::Client::cancel`).
//!
//! Each run gets a cancel flag of its own, so a request meant for one task
//! can never stop the next. The take loop registers the run here before it
//! starts the script ([`Cancels::start`]) and takes it back after
//! ([`Cancels::end`]). The watcher ([`watch`]) runs on the caller's runtime,
//! beside the heartbeat, with the heartbeat's connection: the circle thread
//! is busy running the script and cannot ask Redis itself. It asks only
//! about a script that is still the running one a whole `cancel_poll` after
//! it first saw it, so short scripts cost no request at all. An idle
//! worker's watcher sleeps until a task starts; a busy one looks once per
//! `cancel_poll`, not once per script (a wake of the watcher is a wake of
//! another thread), so it first sees a run within one `cancel_poll` of its
//! start and asks about it one `cancel_poll` after that.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use client::broker::WorkerBroker;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Why a run was cancelled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Cause {
    /// The worker shut down and its grace for running scripts was over.
    Shutdown,
    /// The task's `cancel` field asked for it, with this reason.
    Requested(String),
    /// The worker lost the queue's lease (see `lease.rs`), for this reason.
    LeaseLost(String),
}

/// The run in progress, as the watcher and shutdown see it.
struct Current {
    /// Tells runs apart, so a late request cannot stop a later run.
    generation: u64,
    task_id: String,
    flag: Arc<AtomicBool>,
    requested: Option<String>,
    lease_lost: Option<String>,
}

#[derive(Default)]
struct State {
    shutdown: bool,
    generation: u64,
    running: Option<Current>,
}

/// The cancel flags of one worker's runs.
#[derive(Default)]
pub(crate) struct Cancels {
    state: Mutex<State>,
    /// Wakes the watcher when a run starts.
    started: Notify,
}

impl Cancels {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the run of `task_id` and returns its cancel flag; `None`,
    /// and the task must not start, when the worker is past its shutdown
    /// grace or `lease_lost()` says the queue's lease is lost. Both are
    /// decided under the lock that [`Cancels::shutdown`] and
    /// [`Cancels::lease_lost`] take (the lease's token is cleared before
    /// that lock is), so a loss that lands as a run starts either finds the
    /// run registered and cuts it, or keeps it from starting.
    pub(crate) fn start(
        &self,
        task_id: &str,
        lease_lost: impl FnOnce() -> bool,
    ) -> Option<Arc<AtomicBool>> {
        let mut state = self.lock();
        if state.shutdown || lease_lost() {
            return None;
        }
        let flag = Arc::new(AtomicBool::new(false));
        state.generation += 1;
        state.running = Some(Current {
            generation: state.generation,
            task_id: task_id.to_owned(),
            flag: Arc::clone(&flag),
            requested: None,
            lease_lost: None,
        });
        drop(state);
        self.started.notify_one();
        Some(flag)
    }

    /// Ends the registered run; why it was cancelled, if it was.
    pub(crate) fn end(&self) -> Option<Cause> {
        let mut state = self.lock();
        let current = state.running.take()?;
        if let Some(reason) = current.requested {
            return Some(Cause::Requested(reason));
        }
        if let Some(reason) = current.lease_lost {
            return Some(Cause::LeaseLost(reason));
        }
        (state.shutdown && current.flag.load(Ordering::Relaxed)).then_some(Cause::Shutdown)
    }

    /// The shutdown grace is over: cancels the running script; no other
    /// starts.
    pub(crate) fn shutdown(&self) {
        let mut state = self.lock();
        state.shutdown = true;
        if let Some(current) = &state.running {
            current.flag.store(true, Ordering::Relaxed);
        }
    }

    /// The lease is lost: cuts the running script, if one runs (the take
    /// loop starts no other until the lease is held again).
    pub(crate) fn lease_lost(&self, reason: &str) {
        let mut state = self.lock();
        if let Some(current) = state.running.as_mut() {
            current.flag.store(true, Ordering::Relaxed);
            current.lease_lost.get_or_insert_with(|| reason.to_owned());
        }
    }

    /// Whether the shutdown grace is over ([`Cancels::shutdown`] was called):
    /// no further script may start.
    pub(crate) fn is_shut_down(&self) -> bool {
        self.lock().shutdown
    }

    /// The running task (generation, id), unless none runs or its
    /// cancellation was already requested.
    fn running(&self) -> Option<(u64, String)> {
        let state = self.lock();
        let current = state.running.as_ref()?;
        current
            .requested
            .is_none()
            .then(|| (current.generation, current.task_id.clone()))
    }

    /// Cancels run `generation` for `reason`, if it is still running.
    fn request(&self, generation: u64, reason: String) {
        let mut state = self.lock();
        if let Some(current) = state.running.as_mut()
            && current.generation == generation
        {
            current.flag.store(true, Ordering::Relaxed);
            current.requested = Some(reason);
        }
    }
}

/// Watches the running task's `cancel` field every `poll` while a script
/// runs, until `token` is cancelled. Redis errors are logged at debug and
/// the next poll tries again (the take loop reports outages).
pub(crate) async fn watch(
    broker: Arc<WorkerBroker>,
    cancels: Arc<Cancels>,
    poll: Duration,
    token: CancellationToken,
) {
    // A zero poll would ask Redis without pause.
    let poll = poll.max(Duration::from_millis(1));
    // The run seen at the previous look: asked about only when it is still
    // running one poll later.
    let mut seen: Option<u64> = None;
    loop {
        match cancels.running() {
            None => {
                tokio::select! {
                    _ = token.cancelled() => return,
                    _ = cancels.started.notified() => {}
                }
                // Woken by a start: the run it names (already over, if it
                // was short) is seen now and asked about one poll later. The
                // watcher sleeps that poll whatever it finds, so a stream of
                // short scripts wakes it once per poll, not once per script.
                seen = cancels.running().map(|(generation, _)| generation);
            }
            Some((generation, task_id)) => {
                if seen == Some(generation) {
                    ask(&broker, &cancels, generation, &task_id).await;
                }
                seen = Some(generation);
            }
        }
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(poll) => {}
        }
    }
}

/// Asks Redis whether run `generation` (task `task_id`) was cancelled, and
/// cancels it if so.
async fn ask(broker: &WorkerBroker, cancels: &Cancels, generation: u64, task_id: &str) {
    match broker.cancel_requested(task_id).await {
        Ok(Some(reason)) => {
            log::info!(
                task = task_id, worker = broker.worker_id();
                "worker {}: cancelling the script of task {task_id}: {reason}",
                broker.worker_id()
            );
            cancels.request(generation, reason);
        }
        Ok(None) => {}
        Err(e) => log::debug!(
            task = task_id, worker = broker.worker_id();
            "worker {}: looking for a cancel of task {task_id} failed: {e}",
            broker.worker_id()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_stops_only_the_run_it_names() {
        let cancels = Cancels::default();
        let first = cancels.start("a", || false).expect("started");
        let (generation, id) = cancels.running().expect("running");
        assert_eq!(id, "a");
        assert_eq!(cancels.end(), None);
        assert!(!first.load(Ordering::Relaxed));
        // A request that arrives after its run ended leaves the next alone.
        let second = cancels.start("b", || false).expect("started");
        cancels.request(generation, "gone".into());
        assert!(!second.load(Ordering::Relaxed));
        let (generation, _) = cancels.running().expect("running");
        cancels.request(generation, "gone".into());
        assert!(second.load(Ordering::Relaxed));
        assert!(cancels.running().is_none(), "asked once, not again");
        assert_eq!(cancels.end(), Some(Cause::Requested("gone".into())));
        assert_eq!(cancels.end(), None, "nothing registered any more");
    }

    #[test]
    fn a_lost_lease_cuts_only_the_running_script() {
        let cancels = Cancels::default();
        let running = cancels.start("a", || false).expect("started");
        cancels.lease_lost("lease lost");
        assert!(running.load(Ordering::Relaxed));
        assert_eq!(cancels.end(), Some(Cause::LeaseLost("lease lost".into())));
        let later = cancels.start("b", || false).expect("started");
        assert!(!later.load(Ordering::Relaxed));
        assert_eq!(cancels.end(), None);
    }

    #[test]
    fn no_run_starts_while_the_lease_is_lost() {
        let cancels = Cancels::default();
        // The loss as the run registers: its token is already cleared, and
        // its `lease_lost` call, which would find no run, has not come yet.
        assert!(cancels.start("a", || true).is_none());
        cancels.lease_lost("lease lost");
        assert!(cancels.running().is_none(), "nothing registered");
        assert_eq!(cancels.end(), None);
        // Held again, runs start.
        let again = cancels.start("a", || false).expect("started");
        assert!(!again.load(Ordering::Relaxed));
    }

    #[test]
    fn shutdown_stops_the_running_script_and_starts_no_other() {
        let cancels = Cancels::default();
        let running = cancels.start("a", || false).expect("started");
        cancels.shutdown();
        assert!(running.load(Ordering::Relaxed));
        assert_eq!(cancels.end(), Some(Cause::Shutdown));
        assert!(cancels.start("b", || false).is_none());
        assert_eq!(cancels.end(), None);
    }

    #[test]
    fn a_requested_cancel_keeps_its_reason_through_a_later_shutdown() {
        let cancels = Cancels::default();
        let _flag = cancels.start("a", || false).expect("started");
        let (generation, _) = cancels.running().expect("running");
        cancels.request(generation, "the client went away".into());
        cancels.shutdown();
        assert_eq!(
            cancels.end(),
            Some(Cause::Requested("the client went away".into()))
        );
    }
}
