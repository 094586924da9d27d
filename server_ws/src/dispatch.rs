//! JSON-RPC admission and dispatch of one text message: parses it, admits
//! each `play` against the script and in-flight limits, runs requests
//! concurrently and notifications without a reply, and sends each reply (a
//! batch's as one array, in item order).

use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Weak};

use serde_json::Value;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::circle::Shared;
use crate::end::End;
use crate::outbox::Outbox;
use crate::play;
use crate::reader::{Io, while_reading};
use crate::rpc::{self, Incoming, Item};

/// A request admitted to run, holding its in-flight permit.
struct Call {
    id: Value,
    script: String,
    permit: Slot,
    /// Its connection's [`Reader::abandoned`](crate::reader::Reader).
    abandoned: Arc<AtomicBool>,
}

/// What admission makes of one item.
enum Admitted {
    Reply(Value),
    Silent,
    Call(Call),
    /// A notification to run, with its in-flight slot (`None`: the
    /// connection ended or the server is stopping while it waited for one;
    /// it runs all the same, as its sender was promised).
    Notify(String, Option<Slot>),
}

/// An in-flight permit. One taken for an item of a batch goes back to its
/// batch when dropped while the batch's array is not yet sent: a request's
/// reply that waits in its batch for a slower batch-mate holds its slot, so
/// a connection never holds more finished, unsent replies than
/// `max_in_flight` (freeing it at once let the next batches run more,
/// each held in turn). Only a notification of the same batch may take it
/// meanwhile (it has no reply to hold; its own slot goes back to the batch
/// in turn), so the batch cannot wait on itself.
///
/// It refers to its batch weakly: a batch whose requests were all aborted
/// (its connection ended) is gone, and its slots with it.
struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    batch: Option<Weak<Batch>>,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, batch: Option<&Arc<Batch>>) -> Slot {
        Slot {
            permit: Some(permit),
            batch: batch.map(Arc::downgrade),
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let (Some(permit), Some(batch)) = (self.permit.take(), self.batch.take())
            && let Some(batch) = batch.upgrade()
        {
            batch.give_back(permit);
        }
    }
}

/// Parses one text message and answers or spawns what it asks for.
///
/// A request (with an id) that finds the connection's in-flight limit
/// reached gets -32003 at once (DESIGN §4). A notification cannot be told
/// "no", so it waits for a free slot instead of being dropped (see
/// [`wait_for_slot`]): the calls already running, batch-mates included, free
/// the slots. A notification's task is pushed before this returns, so a
/// close right behind it cannot lose it.
pub(crate) async fn handle_text(
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    io: &mut Io<'_>,
    text: &str,
) -> Result<(), End> {
    shared.status.received(text.len());
    match rpc::parse(text) {
        Incoming::Single(item) => match admit(shared, permits, item, io, None).await {
            Admitted::Reply(reply) => return io.send(reply).await,
            Admitted::Silent => {}
            Admitted::Call(call) => {
                let shared = Arc::clone(shared);
                let mut outbox = io.outbox.clone();
                io.reader.requests.spawn_local(async move {
                    let reply = run_call(&shared, call).await;
                    // Its slot is free again: a notification waiting for one
                    // must not wait for this client to read. What waits for
                    // room in the outbox is bounded all the same: while
                    // anything does, the connection is not read.
                    send(&shared, &mut outbox, reply).await;
                });
            }
            Admitted::Notify(script, permit) => notify(shared, io, &script, permit).await,
        },
        Incoming::Batch(items) => {
            // Each call starts as soon as it is admitted (a later
            // notification may wait for the slot an earlier item frees);
            // whoever settles the last item sends the array, in item order.
            let batch = Arc::new(Batch::new(items.len(), io.outbox.clone()));
            // At most one array is sent from here (the one the last item
            // settles); a failed send does not stop the items after it (a
            // notification among them must run).
            let mut sent = Ok(());
            for (index, item) in items.into_iter().enumerate() {
                let settled = match admit(shared, permits, item, io, Some(&batch)).await {
                    Admitted::Reply(reply) => batch.settle(index, Some(reply)),
                    Admitted::Silent => batch.settle(index, None),
                    Admitted::Notify(script, permit) => {
                        notify(shared, io, &script, permit).await;
                        batch.settle(index, None)
                    }
                    Admitted::Call(call) => {
                        let shared = Arc::clone(shared);
                        let batch = Arc::clone(&batch);
                        io.reader.requests.spawn_local(async move {
                            let reply = run_call(&shared, call).await;
                            if let Some(replies) = batch.settle(index, Some(reply)) {
                                send(&shared, &mut batch.outbox.clone(), replies).await;
                            }
                        });
                        None
                    }
                };
                if let Some(replies) = settled {
                    sent = io.send(replies).await;
                }
            }
            // A connection that ended leaves requests unsettled (aborted):
            // their slots go back to the connection now, not with the batch.
            if io.reader.ended.is_some() {
                batch.abandon();
            }
            return sent;
        }
    }
    Ok(())
}

/// Runs a notification: its task is pushed now; then, holding its slot (if
/// it got one), a task waits for it to end, so notifications count against
/// the in-flight limit as requests do. Aborting that wait (the connection
/// ended) leaves the task running: its sender asked for no reply, not for
/// nothing to happen.
async fn notify(shared: &Arc<Shared>, io: &mut Io<'_>, script: &str, permit: Option<Slot>) {
    let submitted = while_reading(shared, io, play::submit_notification(shared, script));
    let Some(watched) = submitted.await else {
        return;
    };
    if let Some(permit) = permit {
        let shared = Arc::clone(shared);
        io.reader.waiters.spawn_local(async move {
            let _counted = shared.status.call_started();
            play::await_notification(&shared, watched).await;
            drop(permit);
        });
    }
}

/// Waits for an in-flight slot for a notification while still reading the
/// connection (see [`Reader`](crate::reader::Reader)). Past the buffer budget (the message limit)
/// nothing more is read until a slot frees: backpressure on a client that
/// floods. Once the connection's end is known, its requests are cancelled
/// (nobody will read their replies), which frees their slots, and the
/// notifications it sent go on waiting for slots, so they stay within the
/// in-flight limit. `None` only when the server is stopping: the
/// notification is then queued without a slot (a bounded few: what was
/// already read).
async fn wait_for_slot(
    shared: &Shared,
    permits: &Arc<Semaphore>,
    io: &mut Io<'_>,
    batch: Option<&Arc<Batch>>,
) -> Option<Slot> {
    let acquire = async {
        loop {
            let freed = batch.map(|b| b.freed.notified());
            tokio::pin!(freed);
            if let Some(freed) = freed.as_mut().as_pin_mut() {
                freed.enable();
            }
            if let Some(permit) = batch.and_then(|b| b.take_freed()) {
                return Some(Slot::new(permit, batch));
            }
            tokio::select! {
                biased;
                permit = Arc::clone(permits).acquire_owned() => {
                    return permit.ok().map(|p| Slot::new(p, batch));
                }
                () = shared.token.cancelled() => return None,
                // A slot one of the batch's items freed (never, outside a batch).
                () = async {
                    match freed.as_mut().as_pin_mut() {
                        Some(freed) => freed.await,
                        None => std::future::pending().await,
                    }
                } => {}
            }
        }
    };
    while_reading(shared, io, acquire).await
}

/// The replies of one batch as its items settle, and the slots its items
/// freed before its array is sent (see [`Slot`]).
struct Batch {
    slots: std::sync::Mutex<Settling>,
    /// Told when a slot goes back to the batch.
    freed: Notify,
    outbox: Outbox,
}

struct Settling {
    replies: Vec<Option<Value>>,
    left: usize,
    /// Slots freed by the batch's items, held until its array is sent.
    freed: Vec<OwnedSemaphorePermit>,
    /// The array is made (or the batch abandoned): slots go back to the
    /// connection.
    done: bool,
}

impl Batch {
    fn new(len: usize, outbox: Outbox) -> Batch {
        Batch {
            slots: std::sync::Mutex::new(Settling {
                replies: vec![None; len],
                left: len,
                freed: Vec::new(),
                done: false,
            }),
            freed: Notify::new(),
            outbox,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Settling> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A slot an item freed: kept until the array is sent.
    fn give_back(&self, permit: OwnedSemaphorePermit) {
        let mut guard = self.lock();
        if guard.done {
            drop(guard);
            drop(permit);
            return;
        }
        guard.freed.push(permit);
        drop(guard);
        self.freed.notify_waiters();
    }

    /// A slot freed by one of the batch's items, for its notification.
    fn take_freed(&self) -> Option<OwnedSemaphorePermit> {
        self.lock().freed.pop()
    }

    /// Gives the slots held back to the connection; later ones go at once.
    fn abandon(&self) {
        let freed = {
            let mut guard = self.lock();
            guard.done = true;
            std::mem::take(&mut guard.freed)
        };
        drop(freed);
    }

    /// Records item `index`'s reply (`None`: a notification, no reply); when
    /// it was the last item to settle, the array to send, if any reply is in
    /// it (a batch of notifications gets none).
    fn settle(&self, index: usize, reply: Option<Value>) -> Option<Value> {
        let mut guard = self.lock();
        guard.replies[index] = reply;
        guard.left -= 1;
        if guard.left > 0 {
            return None;
        }
        let replies: Vec<Value> = guard.replies.iter_mut().filter_map(Option::take).collect();
        // The array is made: its slots are free again (it waits for room in
        // the outbox as a single request's reply does).
        guard.done = true;
        let freed = std::mem::take(&mut guard.freed);
        drop(guard);
        drop(freed);
        (!replies.is_empty()).then_some(Value::Array(replies))
    }
}

/// Takes an in-flight permit for a `play`: a request that finds none gets
/// -32003; a notification waits for one (see [`handle_text`]).
async fn admit(
    shared: &Shared,
    permits: &Arc<Semaphore>,
    item: Item,
    io: &mut Io<'_>,
    batch: Option<&Arc<Batch>>,
) -> Admitted {
    match item {
        Item::Reply(v) => Admitted::Reply(v),
        Item::Silent => Admitted::Silent,
        Item::Play { id, script } if script.len() > shared.config.max_script_bytes => {
            let max = shared.config.max_script_bytes;
            match id {
                Some(id) => Admitted::Reply(rpc::limit_exceeded(
                    &id,
                    &format!(
                        "script of {} bytes exceeds the limit of {max} bytes",
                        script.len()
                    ),
                    "max_script_bytes",
                    max,
                )),
                None => {
                    // Per message, so not at warn: one client could flood the log.
                    log::debug!(circle:% = shared.config.circle_name;
                        "circle {}: a notification's script of {} bytes exceeds the limit of \
                         {max} bytes; not run",
                        shared.config.circle_name,
                        script.len()
                    );
                    Admitted::Silent
                }
            }
        }
        // The client is gone (or must be let go): nobody would read a reply.
        Item::Play { id: Some(_), .. } if io.reader.ended.is_some() => Admitted::Silent,
        Item::Play { id, script } => match (id, Arc::clone(permits).try_acquire_owned()) {
            (Some(id), Ok(permit)) => Admitted::Call(Call {
                id,
                script,
                permit: Slot::new(permit, batch),
                abandoned: Arc::clone(&io.reader.abandoned),
            }),
            (Some(id), Err(_)) => {
                let max = shared.config.max_in_flight;
                Admitted::Reply(rpc::limit_exceeded(
                    &id,
                    &format!("too many requests in flight on this connection (limit {max})"),
                    "max_in_flight",
                    max,
                ))
            }
            (None, Ok(permit)) => Admitted::Notify(script, Some(Slot::new(permit, batch))),
            (None, Err(_)) => {
                Admitted::Notify(script, wait_for_slot(shared, permits, io, batch).await)
            }
        },
    }
}

/// Runs one admitted request; its reply. Its slot is freed once the reply
/// is made, before it is queued for the client (a batch item's goes back to
/// its batch until the batch's array is made, see [`Slot`]).
async fn run_call(shared: &Shared, call: Call) -> Value {
    let _counted = shared.status.call_started();
    let reply = play::play(shared, &call.id, &call.script, &call.abandoned).await;
    drop(call.permit);
    reply
}

/// A reply from a request task, once the outbox has room for it; the read
/// loop watches the connection's health. The reply waits as its text only:
/// the value it was made from goes first (both would hold the output and
/// what the script printed, twice the memory per waiting reply).
async fn send(shared: &Shared, outbox: &mut Outbox, reply: Value) {
    let text = reply.to_string();
    drop(reply);
    shared.status.sent(text.len());
    // A failed send means the client is gone; the read loop notices on its own.
    let _ = outbox.text(text).await;
}
