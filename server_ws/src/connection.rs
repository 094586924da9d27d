//! One WebSocket connection: reads messages, runs `play` calls concurrently
//! (bounded), answers each with its id, pings, and closes.

use std::sync::Arc;

use actix_ws::{CloseCode, CloseReason, Message, MessageStream, ProtocolError, Session};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::fragments::{Assembled, Assembler};
use crate::rpc::{self, Incoming, Item};
use crate::server::Shared;
use crate::status::ConnectionGuard;

/// Why the read loop ended.
enum End {
    /// The server is shutting down: drain, then close with 1001.
    Shutdown,
    /// No frame from the client within the client timeout.
    Dead,
    /// The client sent a close frame.
    ClientClosed(Option<CloseReason>),
    /// The client broke the WebSocket protocol.
    Protocol,
    /// The transport is gone; nothing can be sent.
    Gone,
}

/// A request admitted to run, holding its in-flight permit.
struct Call {
    id: Option<Value>,
    script: String,
    permit: OwnedSemaphorePermit,
}

enum Admitted {
    Reply(Value),
    Silent,
    Call(Call),
}

pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut session: Session,
    mut stream: MessageStream,
    _slot: ConnectionGuard,
) {
    let circle = shared.config.circle_name.clone();
    let timing = shared.timing.clone();
    let permits = Arc::new(Semaphore::new(shared.config.max_in_flight));
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut fragments = Assembler::new(shared.config.max_message_bytes);
    let mut heartbeat = tokio::time::interval_at(
        Instant::now() + timing.heartbeat_interval,
        timing.heartbeat_interval,
    );
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    log::debug!("circle {circle}: client connected");

    let end = loop {
        let msg = tokio::select! {
            biased;
            () = shared.token.cancelled() => break End::Shutdown,
            Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    log::error!("circle {circle}: a request handler panicked: {e}");
                }
                continue;
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() >= timing.client_timeout {
                    break End::Dead;
                }
                if session.ping(b"").await.is_err() {
                    break End::Gone;
                }
                continue;
            }
            msg = stream.recv() => msg,
        };
        let Some(msg) = msg else { break End::Gone };
        last_seen = Instant::now();
        let text = match msg {
            Ok(Message::Text(text)) => text.to_string(),
            Ok(Message::Continuation(item)) => match fragments.push(item) {
                None => continue,
                Some(Assembled::Text(text)) => text,
                Some(Assembled::Binary) => {
                    send(&mut session, &binary_refused()).await;
                    continue;
                }
                Some(Assembled::Oversize) => {
                    send(&mut session, &oversize(&shared)).await;
                    continue;
                }
                Some(Assembled::BadUtf8) => {
                    send(&mut session, &bad_utf8()).await;
                    continue;
                }
            },
            Ok(Message::Binary(_)) => {
                send(&mut session, &binary_refused()).await;
                continue;
            }
            Ok(Message::Ping(bytes)) => {
                if session.pong(&bytes).await.is_err() {
                    break End::Gone;
                }
                continue;
            }
            Ok(Message::Pong(_) | Message::Nop) => continue,
            Ok(Message::Close(reason)) => break End::ClientClosed(reason),
            // The codec drops an oversize frame whole, so reading can go on.
            Err(ProtocolError::Overflow) => {
                send(&mut session, &oversize(&shared)).await;
                continue;
            }
            Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::InvalidData => {
                send(&mut session, &bad_utf8()).await;
                continue;
            }
            Err(e) => {
                log::debug!("circle {circle}: websocket protocol error: {e}");
                break End::Protocol;
            }
        };
        handle_text(&shared, &permits, &mut tasks, &mut session, &text).await;
    };

    let close = match end {
        End::Shutdown => {
            // Let requests already submitted get their replies, within bounds.
            let drain = async { while tasks.join_next().await.is_some() {} };
            if tokio::time::timeout(timing.drain_timeout, drain)
                .await
                .is_err()
            {
                log::warn!(
                    "circle {circle}: {} request(s) unanswered after {:?} of shutdown",
                    tasks.len(),
                    timing.drain_timeout
                );
            }
            Some(reason(CloseCode::Away, "server shutting down"))
        }
        End::Dead => {
            log::info!(
                "circle {circle}: dropping a client silent for {:?}",
                timing.client_timeout
            );
            Some(reason(CloseCode::Policy, "no pong received in time"))
        }
        End::ClientClosed(r) => Some(r.unwrap_or_else(|| reason(CloseCode::Normal, ""))),
        End::Protocol => Some(reason(CloseCode::Protocol, "websocket protocol error")),
        End::Gone => None,
    };
    if let Some(close) = close {
        // Fails only when the transport is already gone; nothing left to do then.
        let _ = session.close(Some(close)).await;
    }
    // Dropping `tasks` aborts requests whose client can no longer be answered.
    tasks.abort_all();
    log::debug!("circle {circle}: client disconnected");
}

/// Parses one text message and answers or spawns what it asks for.
async fn handle_text(
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    tasks: &mut JoinSet<()>,
    session: &mut Session,
    text: &str,
) {
    match rpc::parse(text) {
        Incoming::Single(item) => match admit(shared, permits, item) {
            Admitted::Reply(reply) => send(session, &reply).await,
            Admitted::Silent => {}
            Admitted::Call(call) => {
                let shared = Arc::clone(shared);
                let mut session = session.clone();
                tasks.spawn_local(async move {
                    if let Some(reply) = run_call(&shared, call).await {
                        send(&mut session, &reply).await;
                    }
                });
            }
        },
        Incoming::Batch(items) => {
            let admitted: Vec<Admitted> = items
                .into_iter()
                .map(|i| admit(shared, permits, i))
                .collect();
            if !admitted.iter().any(|a| matches!(a, Admitted::Call(_))) {
                let replies: Vec<Value> = admitted
                    .into_iter()
                    .filter_map(|a| match a {
                        Admitted::Reply(v) => Some(v),
                        _ => None,
                    })
                    .collect();
                if !replies.is_empty() {
                    send(session, &Value::Array(replies)).await;
                }
                return;
            }
            let shared = Arc::clone(shared);
            let mut session = session.clone();
            tasks.spawn_local(async move {
                let replies = futures_util::future::join_all(admitted.into_iter().map(|a| {
                    let shared = &shared;
                    async move {
                        match a {
                            Admitted::Reply(v) => Some(v),
                            Admitted::Silent => None,
                            Admitted::Call(call) => run_call(shared, call).await,
                        }
                    }
                }))
                .await;
                let replies: Vec<Value> = replies.into_iter().flatten().collect();
                if !replies.is_empty() {
                    send(&mut session, &Value::Array(replies)).await;
                }
            });
        }
    }
}

/// Takes an in-flight permit for a `play`, or refuses it with -32003.
fn admit(shared: &Shared, permits: &Arc<Semaphore>, item: Item) -> Admitted {
    match item {
        Item::Reply(v) => Admitted::Reply(v),
        Item::Silent => Admitted::Silent,
        Item::Play { id, script } => match Arc::clone(permits).try_acquire_owned() {
            Ok(permit) => Admitted::Call(Call { id, script, permit }),
            Err(_) => {
                let max = shared.config.max_in_flight;
                match id {
                    Some(id) => Admitted::Reply(rpc::error(
                        &id,
                        rpc::LIMIT_EXCEEDED,
                        &format!("too many requests in flight on this connection (limit {max})"),
                        Some(json!({ "limit": "max_in_flight", "max": max })),
                    )),
                    None => {
                        log::debug!(
                            "circle {}: notification dropped: {max} requests already in flight",
                            shared.config.circle_name
                        );
                        Admitted::Silent
                    }
                }
            }
        },
    }
}

/// Runs one admitted call; the reply, or `None` for a notification.
async fn run_call(shared: &Shared, call: Call) -> Option<Value> {
    let _counted = shared.status.call_started();
    let id = call.id.clone().unwrap_or(Value::Null);
    let reply = crate::play::play(
        &shared.client,
        &shared.config.circle_name,
        &shared.config.queue,
        &shared.submit,
        &id,
        &call.script,
    )
    .await;
    drop(call.permit);
    call.id.map(|_| reply)
}

async fn send(session: &mut Session, reply: &Value) {
    // A failed send means the client is gone; the read loop notices on its own.
    let _ = session.text(reply.to_string()).await;
}

fn reason(code: CloseCode, description: &str) -> CloseReason {
    CloseReason {
        code,
        description: (!description.is_empty()).then(|| description.to_string()),
    }
}

fn oversize(shared: &Shared) -> Value {
    let max = shared.config.max_message_bytes;
    rpc::error(
        &Value::Null,
        rpc::LIMIT_EXCEEDED,
        &format!("message too large (limit {max} bytes)"),
        Some(json!({ "limit": "max_message_bytes", "max": max })),
    )
}

fn binary_refused() -> Value {
    rpc::error(
        &Value::Null,
        rpc::INVALID_REQUEST,
        "invalid request: binary frames are not supported; send JSON-RPC as text",
        None,
    )
}

fn bad_utf8() -> Value {
    rpc::error(
        &Value::Null,
        rpc::PARSE_ERROR,
        "parse error: text frame is not valid UTF-8",
        None,
    )
}
