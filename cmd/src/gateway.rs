//! The gateway beat of a process that serves circles' WebSocket endpoints
//! (`--role all` or `gateway`): one task for every circle of the process,
//! one Redis round trip per beat ([`client::Client::gateway_beat`]). Each
//! beat announces the process as a gateway of every circle it serves
//! (`rhai_gateway_heartbeat:<queue>:<gateway_id>` with the worker
//! heartbeat's TTL, and `rhai_gateways:<queue>`) and records in each
//! circle's [`server_ws::WorkerSight`] whether a worker of it is alive,
//! which `play` reads. Circles a reload removes or moves to another Redis,
//! and at shutdown all of them, are taken out of the sets and their keys
//! deleted, on the Redis they were announced on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use client::{Client, GatewayProcess};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::clients::Clients;
use crate::roster::Roster;
use crate::status::{CircleState, Phase, lock};

/// Bound on one beat's round trip, and on the goodbye at shutdown.
const BEAT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often a gateway beats, and how long each heartbeat lives.
#[derive(Debug, Clone, Copy)]
pub struct Beats {
    /// Time between two beats.
    pub every: Duration,
    /// The TTL of each heartbeat key.
    pub ttl: Duration,
}

/// Beats every `beats.every` with heartbeat TTL `beats.ttl` for the circles
/// of `roster` this process serves, each on its own Redis (one round trip
/// per Redis per beat), until `stop`; then leaves. `announced` is sent
/// after the first beat, answered or not.
pub async fn beat(
    clients: Clients,
    roster: Roster,
    gateway: GatewayProcess,
    Beats { every, ttl }: Beats,
    announced: tokio::sync::oneshot::Sender<()>,
    changed: Arc<Notify>,
    stop: CancellationToken,
) {
    log::info!(
        "gateway {} (pid {} on {}) announces its circles every {every:?}",
        gateway.id,
        gateway.pid,
        gateway.host
    );
    let mut first = Some(announced);
    // The beats under way, and the Redis URL of each.
    let mut beating = Beating::default();
    // The circles announced in the last round, each with its Redis' client
    // (kept: a reload that moves a circle off a Redis may close the
    // orchestrator's client there before this process leaves it).
    let mut announced: Vec<(Arc<CircleState>, Client)> = Vec::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = stop.cancelled() => break,
        }
        let served = served(&roster);
        let before: Vec<_> = served.iter().map(|s| live(s)).collect();
        // A sighting is no newer than the request that made it.
        let at = Instant::now();
        // Each Redis beats on its own task: one that stalls (up to
        // BEAT_TIMEOUT) holds up neither the beats on the others nor the
        // next round there, whose heartbeat keys would expire meanwhile. A
        // Redis whose previous beat is still under way is left out of this
        // round (its sights stand until that beat ends).
        beating.settle();
        let mut now_announced = Vec::with_capacity(served.len());
        for (client, members) in clients.groups(served.iter().map(|s| &s.config)) {
            let url = clients
                .url_of(&served[members[0]].config)
                .as_str()
                .to_owned();
            now_announced.extend(members.iter().map(|&i| (served[i].clone(), client.clone())));
            if beating.on(&url) {
                continue;
            }
            let states: Vec<Arc<CircleState>> =
                members.iter().map(|&i| served[i].clone()).collect();
            let gateway = gateway.clone();
            beating.spawn(url, async move {
                beat_on(&client, &gateway, &states, ttl, at).await;
            });
        }
        // The round waits for its beats at most one period; a slower one
        // goes on by itself.
        let _ = tokio::time::timeout(every, beating.ended()).await;
        if let Some(first) = first.take() {
            // The poller may be gone already (shutting down): nothing waits.
            let _ = first.send(());
        }
        if served.iter().zip(before).any(|(s, b)| live(s) != b) {
            changed.notify_one();
        }
        // Gone: a circle no longer served, or served on another Redis.
        let gone: Vec<_> = announced
            .into_iter()
            .filter(|(a, _)| {
                !served.iter().any(|s| {
                    s.queue == a.queue && clients.url_of(&s.config) == clients.url_of(&a.config)
                })
            })
            .collect();
        leave(&clients, &gateway, &gone).await;
        announced = now_announced;
    }
    // A beat still under way (each ends within BEAT_TIMEOUT) would write
    // the keys again after the leave deletes them.
    let _ = tokio::time::timeout(BEAT_TIMEOUT, beating.ended()).await;
    leave(&clients, &gateway, &announced).await;
}

/// The gateway beats under way, one task per Redis, each known by its URL.
#[derive(Default)]
struct Beating {
    tasks: tokio::task::JoinSet<()>,
    urls: std::collections::HashMap<tokio::task::Id, String>,
}

impl Beating {
    /// Whether a beat on the Redis at `url` is under way.
    fn on(&self, url: &str) -> bool {
        self.urls.values().any(|u| u == url)
    }

    fn spawn(&mut self, url: String, beat: impl Future<Output = ()> + Send + 'static) {
        let id = self.tasks.spawn(beat).id();
        self.urls.insert(id, url);
    }

    /// Forgets the beats that ended (a panicked one too).
    fn settle(&mut self) {
        while let Some(ended) = self.tasks.try_join_next_with_id() {
            self.urls
                .remove(&ended.map_or_else(|e| e.id(), |(id, ())| id));
        }
    }

    /// Waits for every beat to end.
    async fn ended(&mut self) {
        while let Some(ended) = self.tasks.join_next_with_id().await {
            self.urls
                .remove(&ended.map_or_else(|e| e.id(), |(id, ())| id));
        }
    }
}

/// One beat of `gateway` for `states` on `client`'s Redis, recorded in
/// each one's sight (as seen at `at`), or the failure.
async fn beat_on(
    client: &Client,
    gateway: &GatewayProcess,
    states: &[Arc<CircleState>],
    ttl: Duration,
    at: Instant,
) {
    let circles: Vec<(&str, &str)> = states
        .iter()
        .map(|s| (s.queue.as_str(), s.url.as_str()))
        .collect();
    let beat = client.gateway_beat(gateway, &circles, ttl);
    let why = match tokio::time::timeout(BEAT_TIMEOUT, beat).await {
        Ok(Ok(heartbeats)) => {
            for (state, heartbeat) in states.iter().zip(heartbeats) {
                if let Some(sight) = &state.sight {
                    sight.record(heartbeat, at);
                }
            }
            return;
        }
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer within {BEAT_TIMEOUT:?}"),
    };
    log::debug!("gateway beat of {} circles: {why}", circles.len());
    for state in states {
        if let Some(sight) = &state.sight {
            sight.record_failure(why.clone());
        }
    }
}

/// The circles of `roster` whose endpoint this process serves (a circle
/// a reload is taking out is left out).
fn served(roster: &Roster) -> Vec<Arc<CircleState>> {
    roster
        .current()
        .into_iter()
        .filter(|s| s.sight.is_some() && lock(&s.server).phase != Phase::Stopped)
        .collect()
}

/// What the table shows of a circle's workers: whether one is live,
/// whether one was seen at all, and why the latest beat failed (see
/// `CircleState::row`).
fn live(state: &CircleState) -> (Option<bool>, bool, Option<String>) {
    state.sight.as_ref().map_or((None, false, None), |s| {
        (s.live(), s.seen_any(), s.failure())
    })
}

/// Takes the gateway out of the circles of `announced`, each on the Redis
/// of the client beside it (logged when Redis refuses: the keys then
/// expire by their TTL, and readers prune the sets).
async fn leave(
    clients: &Clients,
    gateway: &GatewayProcess,
    announced: &[(Arc<CircleState>, Client)],
) {
    let mut by_redis: Vec<(&client::RedisUrl, &Client, Vec<&str>)> = Vec::new();
    for (state, client) in announced {
        let url = clients.url_of(&state.config);
        match by_redis.iter_mut().find(|(u, ..)| *u == url) {
            Some((.., queues)) => queues.push(&state.queue),
            None => by_redis.push((url, client, vec![&state.queue])),
        }
    }
    for (_, client, queues) in by_redis {
        leave_queues(client, gateway, &queues).await;
    }
}

/// Takes the gateway out of `queues` on `client`'s Redis.
async fn leave_queues(client: &Client, gateway: &GatewayProcess, queues: &[&str]) {
    if queues.is_empty() {
        return;
    }
    match tokio::time::timeout(BEAT_TIMEOUT, client.gateway_leave(gateway, queues)).await {
        Ok(Ok(())) => log::debug!("gateway {} left {} circle(s)", gateway.id, queues.len()),
        Ok(Err(e)) => log::warn!(
            "gateway {} could not leave {} circle(s): {e}; their keys expire by their TTL",
            gateway.id,
            queues.len()
        ),
        Err(_) => log::warn!(
            "gateway {} could not leave {} circle(s) within {BEAT_TIMEOUT:?}; their keys \
             expire by their TTL",
            gateway.id,
            queues.len()
        ),
    }
}
