//! The one notification listener of a [`crate::Client`] and the waiters it
//! serves.
//!
//! Workers publish a finished task's fields (as a JSON object) on the reply
//! channel the submitter named. One pub/sub connection per `Client` receives
//! them and hands each to the waiter registered for that task id, so any
//! number of waiters share one connection. The listener reconnects with capped
//! backoff and publishes its health; waiters re-check the task hash whenever
//! health changes, which covers notifications lost during an outage.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{oneshot, watch};

use crate::target::{self, Target};
use crate::{Outcome, fields};

/// Whether the listener is subscribed. Every send wakes the waiters (a
/// `watch` marks each send as a change, equal or not), so a waiter re-checks
/// its task hash after each failed attempt and after each resubscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Health {
    pub up: bool,
}

/// Waiters by task id.
#[derive(Default)]
pub(crate) struct Registry {
    waiters: Mutex<HashMap<String, Vec<oneshot::Sender<Outcome>>>>,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<oneshot::Sender<Outcome>>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a waiter; it is removed when the returned guard drops.
    pub(crate) fn register(
        self: &Arc<Self>,
        task_id: &str,
    ) -> (WaiterGuard, oneshot::Receiver<Outcome>) {
        let (tx, rx) = oneshot::channel();
        self.lock().entry(task_id.to_owned()).or_default().push(tx);
        let guard = WaiterGuard {
            registry: Arc::clone(self),
            task_id: task_id.to_owned(),
        };
        (guard, rx)
    }

    fn deliver(&self, task_id: &str, outcome: Outcome) {
        let senders = self.lock().remove(task_id);
        for tx in senders.into_iter().flatten() {
            let _ = tx.send(outcome.clone());
        }
    }

    /// Number of registered task ids (`Client::waiting`).
    #[cfg(feature = "test-support")]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }
}

/// Removes a waiter's registration (and any closed siblings) on drop.
pub(crate) struct WaiterGuard {
    registry: Arc<Registry>,
    task_id: String,
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        let mut map = self.registry.lock();
        if let Some(list) = map.get_mut(&self.task_id) {
            list.retain(|tx| !tx.is_closed());
            if list.is_empty() {
                map.remove(&self.task_id);
            }
        }
    }
}

/// Settings of the listener loop.
pub(crate) struct ListenerSettings {
    pub channel: String,
    pub connect_timeout: Duration,
    pub max_backoff: Duration,
    pub url: String,
}

/// Subscribes once; used by `Client::connect` so a bad URL or a dead Redis
/// fails the connect instead of surfacing later.
pub(crate) async fn subscribe(
    target: &Target,
    settings: &ListenerSettings,
) -> Result<redis::aio::PubSub, String> {
    let attempt = async {
        // Resolved again on every subscription: after a failover the
        // listener follows the primary.
        let mut pubsub = target.resolve().await?.get_async_pubsub().await?;
        pubsub.subscribe(&settings.channel).await?;
        Ok::<_, redis::RedisError>(pubsub)
    };
    match tokio::time::timeout(settings.connect_timeout, attempt).await {
        Ok(Ok(pubsub)) => Ok(pubsub),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "subscribing took over {:?}",
            settings.connect_timeout
        )),
    }
}

/// Runs until aborted: reads notifications, reconnects after a loss.
pub(crate) async fn run(
    target: Arc<Target>,
    settings: ListenerSettings,
    mut first: Option<redis::aio::PubSub>,
    registry: Arc<Registry>,
    health: watch::Sender<Health>,
    command: crate::conn::Doubt,
) {
    let mut backoff = Duration::ZERO;
    let mut outage_logged = false;
    let mut switches = target.switches();
    loop {
        let pubsub = match first.take() {
            Some(p) => Ok(p),
            None => subscribe(&target, &settings).await,
        };
        match pubsub {
            Ok(pubsub) => {
                if outage_logged {
                    log::info!("reply listener resubscribed to redis at {}", settings.url);
                    outage_logged = false;
                }
                backoff = Duration::ZERO;
                if !health.borrow().up {
                    health.send_replace(Health { up: true });
                }
                // Keep the sink alive: dropping it may close the connection.
                let (_sink, mut stream) = pubsub.split();
                let switched = loop {
                    tokio::select! {
                        msg = stream.next() => match msg {
                            Some(msg) => handle(&registry, msg.get_payload_bytes()),
                            None => break false,
                        },
                        () = target::switched(&mut switches) => break true,
                    }
                };
                // Down, then up again: waiters re-read their task hashes,
                // covering what was published on the old primary.
                health.send_replace(Health { up: false });
                if !switched {
                    // The client's command connection to the same Redis may
                    // be dead too: a submit sent on it would fail without
                    // telling whether it went out. Its next request checks
                    // it first.
                    command.now();
                }
                if switched {
                    log::info!(
                        "the primary of redis at {} changed; the reply listener resubscribes",
                        settings.url
                    );
                } else if !outage_logged {
                    log::warn!(
                        "reply listener lost its connection to redis at {}; reconnecting",
                        settings.url
                    );
                    outage_logged = true;
                }
            }
            Err(reason) => {
                if !outage_logged {
                    log::warn!(
                        "reply listener cannot subscribe at redis {}: {reason}; retrying with backoff up to {:?}",
                        settings.url,
                        settings.max_backoff
                    );
                    outage_logged = true;
                }
                health.send_replace(Health { up: false });
                backoff = if backoff.is_zero() {
                    Duration::from_millis(50)
                } else {
                    (backoff * 2).min(settings.max_backoff)
                };
                tokio::time::sleep(backoff).await;
            }
        }
    }
}

fn handle(registry: &Registry, payload: &[u8]) {
    if let Some((task_id, outcome)) = read_notification(payload) {
        registry.deliver(&task_id, outcome);
    }
}

/// The task id and outcome a notification carries; `None` (logged) when it
/// is malformed or the task is not finished. A value is read as the hash
/// holds it: a string as it is, a number (another program's worker may
/// write `updatedAt`, `runTimeUs` or `errorLine` so) as its JSON text. A
/// field of any other JSON type is not what the hash holds (an output left
/// out would read as empty): such a notification is ignored, and the waiter
/// reads the hash.
pub(crate) fn read_notification(payload: &[u8]) -> Option<(String, Outcome)> {
    let values: HashMap<String, serde_json::Value> = match serde_json::from_slice(payload) {
        Ok(values) => values,
        Err(e) => {
            log::warn!("ignoring a malformed task notification: {e}");
            return None;
        }
    };
    let mut fields = HashMap::with_capacity(values.len());
    for (name, value) in values {
        let text = match value {
            serde_json::Value::String(text) => text,
            serde_json::Value::Number(number) => number.to_string(),
            _ => {
                log::warn!(
                    "ignoring a task notification whose field {name:?} is neither a string nor \
                     a number"
                );
                return None;
            }
        };
        fields.insert(name, text);
    }
    let Some(task_id) = fields.get(fields::ID).cloned() else {
        log::warn!("ignoring a task notification without an id");
        return None;
    };
    match fields::outcome(&task_id, &fields) {
        Ok(Some(outcome)) => Some((task_id, outcome)),
        Ok(None) => None,
        Err(e) => {
            log::warn!(task = task_id.as_str(); "ignoring a notification for task {task_id}: {e}");
            None
        }
    }
}
