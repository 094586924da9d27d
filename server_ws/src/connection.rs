//! One WebSocket connection: reads messages, runs `play` calls concurrently
//! (bounded), answers each with its id, pings, and closes.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_ws::{
    CloseCode, CloseReason, Item as Fragment, Message, MessageStream, ProtocolError, Session,
};
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};

use crate::circle::Shared;
use crate::fragments::{Assembled, Assembler};
use crate::rpc::{self, Incoming, Item};
use crate::status::ConnectionGuard;

/// How long the close frame may wait for room in the outgoing queue.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

/// Why the read loop ended.
enum End {
    /// The server is shutting down: drain, then close with 1001.
    Shutdown,
    /// Nothing from the client within the client timeout, or it stopped taking data.
    Dead,
    /// The client sent a close frame.
    ClientClosed(Option<CloseReason>),
    /// The client broke the WebSocket protocol.
    Protocol,
    /// The transport is gone; nothing can be sent.
    Gone,
}

/// What to do with one incoming frame.
enum Step {
    Handle(String),
    Reply(Value),
    Pong(actix_web::web::Bytes),
    Skip,
}

/// A request admitted to run, holding its in-flight permit.
struct Call {
    id: Value,
    script: String,
    permit: OwnedSemaphorePermit,
}

enum Admitted {
    Reply(Value),
    Silent,
    Call(Call),
    /// A notification to run, with its in-flight slot (`None`: the
    /// connection ended or the server is stopping while it waited for one;
    /// it runs all the same, as its sender was promised).
    Notify(String, Option<OwnedSemaphorePermit>),
}

/// One frame as the stream yields it.
type Frame = Result<Message, ProtocolError>;

/// The connection's read side and its calls. While a notification waits for
/// an in-flight slot, the connection is still read, up to a budget of
/// buffered data: pings are answered, its end is noticed (so the requests of
/// a client that left are cancelled, not left running behind the wait), and
/// data frames wait in `early` for the read loop, which handles them first,
/// in order.
struct Reader {
    stream: MessageStream,
    early: VecDeque<Frame>,
    /// What `early` holds, by [`frame_cost`].
    early_cost: usize,
    /// How the connection ended (or why it must: a send failed), once
    /// known; the read loop ends with it once `early` is handled. Nothing
    /// more is sent meanwhile, and no new request is started.
    ended: Option<End>,
    /// Requests in flight (their replies are awaited; aborting one cancels
    /// its task).
    requests: JoinSet<()>,
    /// Notifications whose tasks are queued, each holding its slot until the
    /// task ends (aborting one changes nothing for its task).
    waiters: JoinSet<()>,
    /// The close frame went out already (answering a close, or a protocol
    /// error, seen while reading ahead).
    close_sent: bool,
}

impl Reader {
    fn take_early(&mut self) -> Option<Frame> {
        let frame = self.early.pop_front()?;
        self.early_cost -= frame_cost(&frame);
        Some(frame)
    }

    fn keep_early(&mut self, frame: Frame) {
        self.early_cost += frame_cost(&frame);
        self.early.push_back(frame);
    }

    /// The connection ends (the first reason stays): nothing more is sent,
    /// no request starts, and the requests in flight are cancelled, which
    /// frees their slots for the notifications still to queue.
    fn mark_ended(&mut self, end: End) {
        if self.ended.is_none() {
            self.ended = Some(end);
        }
        self.requests.abort_all();
    }

    /// Takes in a frame read ahead of the read loop (while it awaits a push
    /// or a slot): control frames are dealt with at once, data waits in
    /// `early`. A close or a protocol error is answered at once as well, so
    /// the client is not kept waiting for its close behind the notifications.
    async fn absorb(&mut self, frame: Option<Frame>, session: &Session, stall: Duration) {
        match frame {
            None => self.mark_ended(End::Gone),
            Some(Ok(Message::Close(reason))) => {
                let answer = reason
                    .clone()
                    .unwrap_or_else(|| self::reason(CloseCode::Normal, ""));
                self.mark_ended(End::ClientClosed(reason));
                self.close_now(session, answer).await;
            }
            Some(Ok(Message::Ping(bytes))) => {
                if let Err(end) = within(stall, session.clone().pong(&bytes)).await {
                    self.mark_ended(end);
                }
            }
            // A pong only says the client is alive; the frame guard's
            // stand-in for an oversize message is data, kept below.
            Some(Ok(Message::Pong(bytes))) if bytes != crate::frame_guard::OVERSIZE_PONG => {}
            Some(Ok(Message::Nop)) => {}
            Some(Err(e)) => {
                // An error the codec would report on every read is kept once
                // and reading stops: the connection ends with 1002.
                let repeats = !consumed(&e);
                self.keep_early(Err(e));
                if repeats {
                    self.mark_ended(End::Protocol);
                    let answer = self::reason(CloseCode::Protocol, "websocket protocol error");
                    self.close_now(session, answer).await;
                }
            }
            Some(frame) => self.keep_early(frame),
        }
    }

    async fn close_now(&mut self, session: &Session, answer: CloseReason) {
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.clone().close(Some(answer))).await;
        self.close_sent = true;
    }
}

/// What buffering a frame costs: its payload plus a fixed share for the
/// frame itself, so a flood of empty frames meets the budget too.
fn frame_cost(frame: &Frame) -> usize {
    const PER_FRAME: usize = 64;
    PER_FRAME
        + match frame {
            Ok(Message::Text(text)) => text.len(),
            Ok(Message::Binary(b) | Message::Ping(b) | Message::Pong(b)) => b.len(),
            Ok(Message::Continuation(
                Fragment::FirstText(b)
                | Fragment::FirstBinary(b)
                | Fragment::Continue(b)
                | Fragment::Last(b),
            )) => b.len(),
            _ => 0,
        }
}

/// Whether the stream has consumed the frame behind `error`, so reading on
/// yields the next frame: the end of the client's bytes, or a text frame
/// that is not UTF-8. Any other protocol error (a reserved bit set, an
/// unmasked frame, a bad opcode) leaves its frame in the codec's buffer and
/// comes back on every read.
fn consumed(error: &ProtocolError) -> bool {
    let ProtocolError::Io(e) = error else {
        return false;
    };
    client_side_ended(e)
        || (e.kind() == std::io::ErrorKind::InvalidData
            && e.get_ref()
                .is_some_and(|inner| inner.is::<std::str::Utf8Error>()))
}

/// The connection's bytes ended: the client closed or reset its side (the
/// frame guard's own refusal, `Overflow`, is a protocol error instead).
fn client_side_ended(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<PayloadError>())
        .is_some_and(|p| matches!(p, PayloadError::Incomplete(_) | PayloadError::Io(_)))
}

pub(crate) async fn serve(
    shared: Arc<Shared>,
    mut session: Session,
    stream: MessageStream,
    _slot: ConnectionGuard,
) {
    let mut reader = Reader {
        stream,
        early: VecDeque::new(),
        early_cost: 0,
        ended: None,
        requests: JoinSet::new(),
        waiters: JoinSet::new(),
        close_sent: false,
    };
    let circle = shared.config.circle_name.clone();
    let timing = shared.timing.clone();
    let permits = Arc::new(Semaphore::new(shared.config.max_in_flight));
    let mut fragments = Assembler::new(shared.config.max_message_bytes);
    let mut heartbeat = tokio::time::interval_at(
        Instant::now() + timing.heartbeat_interval,
        timing.heartbeat_interval,
    );
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last_seen = Instant::now();
    // The client's bytes ended (FIN or reset) without a close frame.
    let mut bytes_ended = false;
    // A send from the read loop that cannot complete within this long means
    // the client stopped reading; treat it as dead rather than stall forever.
    let stall = timing.client_timeout;
    log::debug!("circle {circle}: client connected");

    let end = loop {
        let msg = if let Some(frame) = reader.take_early() {
            Some(frame)
        } else if let Some(end) = reader.ended.take() {
            break end;
        } else {
            tokio::select! {
            biased;
            () = shared.token.cancelled() => break End::Shutdown,
            Some(done) = reader.requests.join_next(), if !reader.requests.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    log::error!("circle {circle}: a request handler panicked: {e}");
                }
                continue;
            }
            Some(done) = reader.waiters.join_next(), if !reader.waiters.is_empty() => {
                if let Err(e) = done
                    && e.is_panic()
                {
                    log::error!("circle {circle}: a notification's waiter panicked: {e}");
                }
                continue;
            }
            _ = heartbeat.tick() => {
                if last_seen.elapsed() >= timing.client_timeout {
                    break End::Dead;
                }
                match within(stall, session.ping(b"")).await {
                    Ok(()) => continue,
                    Err(end) => break end,
                }
            }
            msg = reader.stream.recv() => msg,
            }
        };
        let Some(msg) = msg else { break End::Gone };
        let step = match msg {
            Ok(Message::Text(text)) => Step::Handle(text.to_string()),
            Ok(Message::Continuation(item)) => match fragments.push(item) {
                None => Step::Skip,
                Some(Assembled::Text(text)) => Step::Handle(text),
                Some(Assembled::Binary) => Step::Reply(binary_refused()),
                Some(Assembled::Oversize) => Step::Reply(oversize(&shared)),
                Some(Assembled::BadUtf8) => Step::Reply(bad_utf8()),
            },
            Ok(Message::Binary(_)) => Step::Reply(binary_refused()),
            Ok(Message::Ping(bytes)) => Step::Pong(bytes),
            // The frame guard's stand-in for a refused oversize message.
            Ok(Message::Pong(bytes)) if bytes == crate::frame_guard::OVERSIZE_PONG => {
                Step::Reply(oversize(&shared))
            }
            Ok(Message::Pong(_) | Message::Nop) => Step::Skip,
            Ok(Message::Close(reason)) => break End::ClientClosed(reason),
            // The connection's bytes ended (the client closed or reset its
            // side of it). actix-ws reports that before the frames that
            // arrived with the last bytes; it yields them next, then `None`
            // (`End::Gone`): a notification sent right before a close still
            // runs, and a close frame still gets its answer.
            Err(ProtocolError::Io(e)) if client_side_ended(&e) => {
                log::debug!("circle {circle}: the client's side of the connection ended: {e}");
                bytes_ended = true;
                Step::Skip
            }
            // A text frame that is not UTF-8: the stream consumed it, so the
            // connection can go on. Other `InvalidData` errors (a reserved
            // bit set) leave the frame in the codec's buffer: answering them
            // would answer the same frame forever, so they close (below).
            Err(ProtocolError::Io(e))
                if e.kind() == std::io::ErrorKind::InvalidData
                    && e.get_ref()
                        .is_some_and(|inner| inner.is::<std::str::Utf8Error>()) =>
            {
                Step::Reply(bad_utf8())
            }
            Err(e) => {
                log::debug!("circle {circle}: websocket protocol error: {e}");
                break End::Protocol;
            }
        };
        let done = match step {
            Step::Handle(text) => {
                let mut io = Io {
                    session: &mut session,
                    reader: &mut reader,
                    stall,
                };
                handle_text(&shared, &permits, &mut io, &text).await
            }
            // Once the end is known nothing more is sent.
            _ if reader.ended.is_some() => Ok(()),
            Step::Reply(reply) => within(stall, session.text(reply.to_string())).await,
            Step::Pong(bytes) => within(stall, session.pong(&bytes)).await,
            Step::Skip => Ok(()),
        };
        // A failed send ends the connection, but what was read before is
        // still handled (a notification in it must run), without replies.
        if let Err(end) = done
            && reader.ended.is_none()
        {
            reader.mark_ended(end);
        }
        // The client was heard from. Set after handling, not on arrival: a
        // notification may have waited for an in-flight slot, which is the
        // server's doing.
        last_seen = Instant::now();
    };

    let close = match end {
        End::Shutdown => {
            // Let requests already submitted get their replies, within bounds
            // (notifications need none: their tasks are queued already).
            let drain = async { while reader.requests.join_next().await.is_some() {} };
            if tokio::time::timeout(timing.drain_timeout, drain)
                .await
                .is_err()
            {
                log::warn!(
                    "circle {circle}: {} request(s) unanswered after {:?} of shutdown",
                    reader.requests.len(),
                    timing.drain_timeout
                );
            }
            Some(reason(CloseCode::Away, "server shutting down"))
        }
        End::Dead => {
            log::info!(
                "circle {circle}: dropping a client that answered nothing (not even a pong) for {:?}",
                timing.client_timeout
            );
            Some(reason(CloseCode::Policy, "no pong received in time"))
        }
        End::ClientClosed(r) => Some(r.unwrap_or_else(|| reason(CloseCode::Normal, ""))),
        End::Protocol => Some(reason(CloseCode::Protocol, "websocket protocol error")),
        // A client that only half-closed may still read: it is told the
        // connection is over (a write to a reset one fails at once).
        End::Gone if bytes_ended => Some(reason(
            CloseCode::Normal,
            "the client ended its side of the connection",
        )),
        End::Gone => None,
    };
    if let Some(close) = close
        && !reader.close_sent
    {
        // Fails when the transport is gone, times out when the client stopped
        // reading; either way there is nothing left to do.
        let _ = tokio::time::timeout(CLOSE_TIMEOUT, session.close(Some(close))).await;
    }
    // Aborting a request whose client can no longer be answered cancels its
    // task (unless the server is shutting down); a notification's waiter
    // leaves its task alone.
    reader.requests.abort_all();
    reader.waiters.abort_all();
    log::debug!("circle {circle}: client disconnected");
}

/// What handling a message may use of the connection.
struct Io<'a> {
    session: &'a mut Session,
    reader: &'a mut Reader,
    stall: Duration,
}

impl Io<'_> {
    /// Sends `reply` from the read loop, unless the connection's end is
    /// known (then nothing more is sent).
    async fn send(&mut self, reply: &Value) -> Result<(), End> {
        if self.reader.ended.is_some() {
            return Ok(());
        }
        within(self.stall, self.session.text(reply.to_string())).await
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
async fn handle_text(
    shared: &Arc<Shared>,
    permits: &Arc<Semaphore>,
    io: &mut Io<'_>,
    text: &str,
) -> Result<(), End> {
    match rpc::parse(text) {
        Incoming::Single(item) => match admit(shared, permits, item, io).await {
            Admitted::Reply(reply) => return io.send(&reply).await,
            Admitted::Silent => {}
            Admitted::Call(call) => {
                let shared = Arc::clone(shared);
                let mut session = io.session.clone();
                io.reader.requests.spawn_local(async move {
                    let reply = run_call(&shared, call).await;
                    send(&mut session, &reply).await;
                });
            }
            Admitted::Notify(script, permit) => notify(shared, io, &script, permit).await,
        },
        Incoming::Batch(items) => {
            // Each call starts as soon as it is admitted (a later
            // notification may wait for the slot an earlier item frees);
            // whoever settles the last item sends the array, in item order.
            let batch = Arc::new(Batch::new(items.len(), io.session.clone()));
            // At most one array is sent from here (the one the last item
            // settles); a failed send does not stop the items after it (a
            // notification among them must run).
            let mut sent = Ok(());
            for (index, item) in items.into_iter().enumerate() {
                let settled = match admit(shared, permits, item, io).await {
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
                                send(&mut batch.session.clone(), &replies).await;
                            }
                        });
                        None
                    }
                };
                if let Some(replies) = settled {
                    sent = io.send(&replies).await;
                }
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
async fn notify(
    shared: &Arc<Shared>,
    io: &mut Io<'_>,
    script: &str,
    permit: Option<OwnedSemaphorePermit>,
) {
    let submitted = while_reading(shared, io, crate::play::submit_notification(shared, script));
    let Some(watched) = submitted.await else {
        return;
    };
    if let Some(permit) = permit {
        let shared = Arc::clone(shared);
        io.reader.waiters.spawn_local(async move {
            let _counted = shared.status.call_started();
            crate::play::await_notification(&shared, watched).await;
            drop(permit);
        });
    }
}

/// Waits for an in-flight slot for a notification while still reading the
/// connection (see [`Reader`]). Past the buffer budget (the message limit)
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
) -> Option<OwnedSemaphorePermit> {
    let acquire = async {
        tokio::select! {
            biased;
            permit = Arc::clone(permits).acquire_owned() => permit.ok(),
            () = shared.token.cancelled() => None,
        }
    };
    while_reading(shared, io, acquire).await
}

/// Awaits `fut` while reading the connection ahead of the read loop (see
/// [`Reader`], [`Reader::absorb`]), up to the budget of the message limit;
/// once the connection's end is known nothing more is read. Reading on
/// while a notification is pushed or waits keeps actix's buffer drained:
/// actix drops the bytes it has not yet handed over when the client's FIN
/// comes, so a client that pipelines and then half-closes would lose the
/// tail of what it sent.
async fn while_reading<F: Future>(shared: &Shared, io: &mut Io<'_>, fut: F) -> F::Output {
    tokio::pin!(fut);
    let budget = shared.config.max_message_bytes;
    loop {
        let reading = io.reader.ended.is_none() && io.reader.early_cost < budget;
        tokio::select! {
            biased;
            out = &mut fut => return out,
            frame = io.reader.stream.recv(), if reading => {
                io.reader.absorb(frame, io.session, io.stall).await;
            }
        }
    }
}

/// The replies of one batch as its items settle.
struct Batch {
    slots: std::sync::Mutex<(Vec<Option<Value>>, usize)>,
    session: Session,
}

impl Batch {
    fn new(len: usize, session: Session) -> Batch {
        Batch {
            slots: std::sync::Mutex::new((vec![None; len], len)),
            session,
        }
    }

    /// Records item `index`'s reply (`None`: a notification, no reply); when
    /// it was the last item to settle, the array to send, if any reply is in
    /// it (a batch of notifications gets none).
    fn settle(&self, index: usize, reply: Option<Value>) -> Option<Value> {
        let mut guard = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let (slots, left) = &mut *guard;
        slots[index] = reply;
        *left -= 1;
        if *left > 0 {
            return None;
        }
        let replies: Vec<Value> = slots.iter_mut().filter_map(Option::take).collect();
        (!replies.is_empty()).then_some(Value::Array(replies))
    }
}

/// Takes an in-flight permit for a `play`: a request that finds none gets
/// -32003; a notification waits for one (see [`handle_text`]).
async fn admit(shared: &Shared, permits: &Arc<Semaphore>, item: Item, io: &mut Io<'_>) -> Admitted {
    match item {
        Item::Reply(v) => Admitted::Reply(v),
        Item::Silent => Admitted::Silent,
        Item::Play { id, script } if script.len() > shared.config.max_script_bytes => {
            let max = shared.config.max_script_bytes;
            match id {
                Some(id) => Admitted::Reply(rpc::error(
                    &id,
                    rpc::LIMIT_EXCEEDED,
                    &format!(
                        "script of {} bytes exceeds the limit of {max} bytes",
                        script.len()
                    ),
                    Some(json!({ "limit": "max_script_bytes", "max": max })),
                )),
                None => {
                    // Per message, so not at warn: one client could flood the log.
                    log::debug!(
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
            (Some(id), Ok(permit)) => Admitted::Call(Call { id, script, permit }),
            (Some(id), Err(_)) => {
                let max = shared.config.max_in_flight;
                Admitted::Reply(rpc::error(
                    &id,
                    rpc::LIMIT_EXCEEDED,
                    &format!("too many requests in flight on this connection (limit {max})"),
                    Some(json!({ "limit": "max_in_flight", "max": max })),
                ))
            }
            (None, Ok(permit)) => Admitted::Notify(script, Some(permit)),
            (None, Err(_)) => Admitted::Notify(script, wait_for_slot(shared, permits, io).await),
        },
    }
}

/// Runs one admitted request; its reply.
async fn run_call(shared: &Shared, call: Call) -> Value {
    let _counted = shared.status.call_started();
    let reply = crate::play::play(shared, &call.id, &call.script).await;
    drop(call.permit);
    reply
}

/// Awaits a send from the read loop: `Gone` when the session is closed,
/// `Dead` when the client has not taken the data within `limit`.
async fn within(
    limit: Duration,
    sending: impl Future<Output = Result<(), actix_ws::Closed>>,
) -> Result<(), End> {
    match tokio::time::timeout(limit, sending).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(actix_ws::Closed)) => Err(End::Gone),
        Err(_) => Err(End::Dead),
    }
}

/// A reply from a request task; the read loop watches the connection's health.
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
