//! The heartbeat and reaper task of a worker.
//!
//! Every `heartbeat_interval` the worker refreshes its heartbeat key (TTL
//! `heartbeat_ttl`); every `reap_interval`, and once at start, it resolves the
//! leftovers of dead workers of its queue (see `client::broker::WorkerBroker::beat`).
//! A beat that Redis did not answer is sent again after [`Retry`]'s short
//! backoff, not a whole interval later: after a Redis restart that lost the
//! key, the worker is seen as live again as soon as Redis answers, so no
//! gateway refuses its circle and no reaper takes its tasks meanwhile.

use std::sync::Arc;
use std::time::Instant;

use client::broker::WorkerBroker;
use tokio_util::sync::CancellationToken;

use crate::WorkerOptions;
use crate::retry::Retry;

/// Resolves the tasks of an earlier run of this worker's database, the
/// process `pid` whose lease this worker took over (see
/// `client::Lease::predecessor_of`), without waiting for its workers'
/// heartbeat TTL: reads their heartbeats, waits a beat interval and a half,
/// ends those that did not change (no beat: the process is gone, as after
/// kill -9 and a restart) and reaps at once, so their tasks end
/// `worker_lost` (or go back to the queue) about half the TTL after the
/// start, and no registration of theirs holds the lease back at a clean
/// stop. A worker that beat meanwhile is alive (another process whose data
/// directory only has the same name on this host) and is left alone. Redis
/// failing is only logged: the reaper resolves them after their TTL, as
/// without this.
pub(crate) async fn resolve_predecessor(
    broker: Arc<WorkerBroker>,
    options: WorkerOptions,
    circle: String,
    pid: u32,
    token: CancellationToken,
) {
    let (circle, queue) = (circle.as_str(), broker.queue());
    let beats = match broker.heartbeats_of(pid).await {
        Ok(beats) if beats.is_empty() => return,
        Ok(beats) => beats,
        Err(e) => {
            log::debug!(circle, queue; "queue {queue}: reading the heartbeats of pid {pid} failed: {e}");
            return;
        }
    };
    tokio::select! {
        _ = token.cancelled() => return,
        _ = tokio::time::sleep(options.heartbeat_interval * 3 / 2) => {}
    }
    match broker.forget_unchanged(&beats).await {
        Ok((ended, beaten)) => {
            if !ended.is_empty() {
                log::info!(
                    circle, queue;
                    "queue {queue}: the earlier run of this database (pid {pid}) is gone: \
                     {} worker(s) of it silent since this one started; their tasks are \
                     resolved now",
                    ended.len()
                );
                match broker.reap(&ended).await {
                    Ok((lost, _requeued)) => count_lost(&options, lost),
                    Err(e) => log::debug!(
                        circle, queue;
                        "queue {queue}: reaping the workers of pid {pid} failed: {e}; the \
                         next reap resolves their tasks"
                    ),
                }
            }
            if beaten > 0 {
                log::warn!(
                    circle, queue;
                    "queue {queue}: {beaten} worker(s) of pid {pid}, named in the lease as an \
                     earlier run of this database, still beat; they are left to their \
                     heartbeats (does another process see another directory under this data \
                     dir's path?)"
                );
            }
        }
        Err(e) => log::debug!(
            circle, queue;
            "queue {queue}: ending the heartbeats of pid {pid} failed: {e}; the reaper \
             resolves its tasks once they expire"
        ),
    }
}

/// One beat, plus a reap when `reap` is set (one round trip while no other
/// worker is registered for the queue). Errors are logged at debug: the take
/// loop reports outages.
pub(crate) async fn beat_once(broker: &WorkerBroker, options: &WorkerOptions, reap: bool) -> bool {
    match broker.beat(options.heartbeat_ttl, reap).await {
        Ok((lost, _requeued)) => {
            count_lost(options, lost);
            true
        }
        Err(e) => {
            log::debug!(
                "heartbeat/reap of worker {} failed: {e}",
                broker.worker_id()
            );
            false
        }
    }
}

/// Counts the tasks a reap ended `worker_lost`: they end here, not in a
/// take loop, and count with the circle's other finished tasks.
fn count_lost(options: &WorkerOptions, lost: u64) {
    if let (Some(metrics), true) = (&options.metrics, lost > 0) {
        metrics.failed_many(&client::FailureKind::WorkerLost, lost);
    }
}

/// Beats until `token` is cancelled (the queue's lease is renewed beside
/// it, see `lease.rs`).
pub(crate) async fn run(
    broker: Arc<WorkerBroker>,
    options: WorkerOptions,
    token: CancellationToken,
) {
    let interval = options.heartbeat_interval;
    let mut retry = Retry::within_beat(&options);
    let mut pause = interval;
    let mut last_reap = Instant::now();
    loop {
        tokio::select! {
            _ = token.cancelled() => return,
            _ = tokio::time::sleep(pause) => {}
        }
        // Reaps ride on beats; half a beat of slack keeps a reap interval
        // that is a multiple of the beat from slipping a whole beat.
        let reap = last_reap.elapsed() + interval / 2 >= options.reap_interval;
        if beat_once(&broker, &options, reap).await {
            retry.reset();
            pause = interval;
            if reap {
                last_reap = Instant::now();
            }
        } else {
            pause = retry.step();
        }
    }
}
