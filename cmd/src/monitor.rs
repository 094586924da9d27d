//! Background watchers of a running orchestrator: the managed redis-server
//! (restarted if it dies) and the per-circle counters read from Redis for the
//! status table.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::roster::Roster;
use crate::status::lock;
use crate::{redis_setup, supervisor};

/// How often a managed redis-server is checked for life.
const REDIS_WATCH_EVERY: Duration = Duration::from_millis(500);
/// How long one batched stats read may take before the tick gives up.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);

/// Restarts a managed redis-server that died (capped backoff); queued tasks
/// come back from its append-only file and workers reconnect on their own.
pub async fn watch_redis(
    managed: Arc<Mutex<Option<redis_setup::ManagedRedis>>>,
    restarts: Arc<AtomicU32>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    let mut backoff = supervisor::BACKOFF_START;
    let mut wait = REDIS_WATCH_EVERY;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = stop.cancelled() => return,
        }
        let died = match lock(&managed).as_mut() {
            None => return,
            Some(m) => m.exit_status().map(|status| (status, m.log_tail())),
        };
        let Some((status, log)) = died else {
            wait = REDIS_WATCH_EVERY;
            continue;
        };
        log::error!("the managed redis-server exited ({status}); restarting it. Its log:\n{log}");
        // The restarted server may load its append-only file for minutes: a
        // stop makes the respawn give up, so the shutdown (which awaits this
        // watcher, then takes `managed` to stop the server) stays bounded.
        let (m, stopping) = (managed.clone(), Arc::new(AtomicBool::new(false)));
        let flag = stopping.clone();
        let mut respawn =
            tokio::task::spawn_blocking(move || lock(&m).as_mut().map(|m| m.respawn(&flag)));
        let respawned = tokio::select! {
            r = &mut respawn => r,
            () = stop.cancelled() => {
                stopping.store(true, Ordering::Release);
                let _ = respawn.await;
                return;
            }
        };
        match respawned {
            Ok(Some(Ok(()))) => {
                restarts.fetch_add(1, Ordering::Relaxed);
                log::warn!("the managed redis-server is back");
                backoff = supervisor::BACKOFF_START;
                wait = REDIS_WATCH_EVERY;
            }
            Ok(Some(Err(e))) => {
                log::error!(
                    "restarting the managed redis-server failed: {e:#}; retrying in {backoff:?}"
                );
                wait = backoff;
                backoff = (backoff * 2).min(supervisor::BACKOFF_MAX);
            }
            Ok(None) | Err(_) => return,
        }
        changed.notify_one();
    }
}

/// Reads every circle's counters every `every` in one batched call
/// (`Client::stats_many`: one Redis round trip per 256 queues, 2 s timeout)
/// and the gateways serving each (`Client::gateways_many`: one round trip),
/// and wakes the renderer when any changed (heartbeat age aside). The first
/// read waits for `announced` (the process's first gateway beat, when it
/// serves endpoints), so that it counts this process among the gateways;
/// after each round the roster is marked polled.
pub async fn poll_stats(
    clients: crate::clients::Clients,
    roster: Roster,
    every: Duration,
    announced: Option<tokio::sync::oneshot::Receiver<()>>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    if let Some(announced) = announced {
        tokio::select! {
            // Sent or dropped: either way the beat has had its first round.
            _ = announced => {}
            () = stop.cancelled() => return,
        }
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => return,
        }
        // A circle a reload could not start is not read: its own Redis may
        // be the one it could not reach, with no client connected.
        let states: Vec<_> = (roster.current().into_iter())
            .filter(|s| !s.never_started())
            .collect();
        // One batched read of each kind per Redis: a circle's counters and
        // gateways live on its own.
        let mut latest: Vec<Option<client::QueueStats>> = vec![None; states.len()];
        let mut gateways: Vec<Option<Vec<client::Gateway>>> = vec![None; states.len()];
        for (client, members) in clients.groups(states.iter().map(|s| &s.config)) {
            let queues: Vec<&str> = members.iter().map(|&i| states[i].queue.as_str()).collect();
            // Both reads go out together on the client's one multiplexed
            // connection: one round trip of waiting, not two.
            let (read, read_gateways) = tokio::join!(
                tokio::time::timeout(STATS_TIMEOUT, client.stats_many(&queues)),
                tokio::time::timeout(STATS_TIMEOUT, client.gateways_many(&queues)),
            );
            match read {
                Ok(Ok(all)) => {
                    for (&i, stats) in members.iter().zip(all) {
                        latest[i] = Some(stats);
                    }
                }
                Ok(Err(e)) => log::debug!("stats of {} queues: {e}", queues.len()),
                Err(_) => {}
            }
            match read_gateways {
                Ok(Ok(all)) => {
                    for (&i, serving) in members.iter().zip(all) {
                        gateways[i] = Some(serving);
                    }
                }
                Ok(Err(e)) => log::debug!("gateways of {} queues: {e}", queues.len()),
                Err(_) => {}
            }
        }
        // The heartbeat age moves on every read; it is not a change.
        let strip = |s: &Option<client::QueueStats>| {
            s.clone().map(|s| client::QueueStats {
                heartbeat_age: None,
                ..s
            })
        };
        let mut any_change = false;
        for ((state, latest), gateways) in states.iter().zip(latest).zip(gateways) {
            let mut slot = lock(&state.stats);
            any_change |= strip(&slot.latest) != strip(&latest);
            slot.read(latest);
            let mut slot = lock(&state.gateways);
            any_change |= *slot != gateways;
            *slot = gateways;
        }
        if !roster.polled() {
            roster.set_polled();
            any_change = true;
        }
        if any_change {
            changed.notify_one();
        }
    }
}
