//! One WebSocket connection's read loop ([`serve`]): takes each frame (read
//! ahead or fresh; none while the outbox is full), turns it into a step,
//! hands text to `dispatch`, pings the client, and on the way out closes
//! with the code that says why it ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use actix_ws::{CloseCode, CloseReason, Message, MessageStream, ProtocolError, Session};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::acked::Acked;
use crate::circle::Shared;
use crate::config::ServerTiming;
use crate::dispatch::handle_text;
use crate::end::{self, End, within};
use crate::fragments::{Assembled, Assembler};
use crate::frame_guard::OVERSIZE_PONG;
use crate::outbox::{Outbox, Release};
use crate::reader::{Frame, Io, Reader, client_side_ended, not_utf8};
use crate::rpc;
use crate::status::ConnectionGuard;

/// What to do with one incoming frame.
enum Step {
    Handle(String),
    Reply(Value),
    Pong(actix_web::web::Bytes),
    Skip,
}

/// Serves one upgraded socket of a circle until it ends, holding `_slot`
/// (one of the circle's connections) meanwhile; `release` lets the response
/// body end, and actix close the socket, once it has.
pub(crate) async fn serve(
    shared: Arc<Shared>,
    outbox: Outbox,
    (acked, received): (Acked, Arc<AtomicU64>),
    release: Release,
    stream: MessageStream,
    _slot: ConnectionGuard,
) {
    let mut connection = Connection::new(shared, outbox, acked, received, stream);
    log::debug!(circle:% = connection.circle; "circle {}: client connected", connection.circle);
    let end = connection.read_until_end().await;
    connection.finish(end).await;
    // After the stream (dropped by `finish`): actix closes the socket when the
    // body ends if nobody reads the request's bytes any more.
    drop(release);
}

/// Bytes the client's TCP stack acknowledges, counted from the last time
/// they counted, that make it heard from (`acked`): a reply's data, not the
/// pings the kernel of a client that hangs still acknowledges.
const ACKED_READING: u64 = 4096;

/// One connection's state, for the steps of [`serve`].
struct Connection {
    shared: Arc<Shared>,
    /// For control frames; replies go through `outbox`.
    session: Session,
    outbox: Outbox,
    /// What the socket had taken at the last heartbeat (see [`Outbox::taken`]).
    taken: u64,
    /// What the client's TCP stack has acknowledged, and its count when it
    /// last counted as the client reading ([`ACKED_READING`]).
    acked: Acked,
    acked_bytes: Option<u64>,
    /// The bytes the client has sent ([`crate::frame_guard`] counts them),
    /// and their count at the last heartbeat: a client whose bytes keep
    /// coming is alive, also in the middle of a large frame, where it
    /// cannot answer a ping.
    received: Arc<AtomicU64>,
    received_bytes: u64,
    reader: Reader,
    circle: String,
    timing: ServerTiming,
    /// The connection's in-flight slots (`max_in_flight`).
    permits: Arc<Semaphore>,
    fragments: Assembler,
    heartbeat: Interval,
    /// When the client was last heard from.
    last_seen: Instant,
    /// The client's bytes ended (FIN or reset) without a close frame.
    bytes_ended: bool,
    /// A send from the read loop that cannot complete within this long means
    /// the client stopped reading; treat it as dead rather than stall forever.
    stall: Duration,
}

impl Connection {
    fn new(
        shared: Arc<Shared>,
        outbox: Outbox,
        acked: Acked,
        received: Arc<AtomicU64>,
        stream: MessageStream,
    ) -> Connection {
        let timing = shared.timing.clone();
        let mut heartbeat = tokio::time::interval_at(
            Instant::now() + timing.heartbeat_interval,
            timing.heartbeat_interval,
        );
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Connection {
            circle: shared.config.circle_name.clone(),
            // tokio panics past MAX_PERMITS (2^61 - 1), which no connection
            // could hold in flight anyway.
            permits: Arc::new(Semaphore::new(
                shared.config.max_in_flight.min(Semaphore::MAX_PERMITS),
            )),
            fragments: Assembler::new(shared.config.max_message_bytes),
            heartbeat,
            last_seen: Instant::now(),
            bytes_ended: false,
            stall: timing.client_timeout,
            timing,
            reader: Reader::new(stream),
            session: outbox.session().clone(),
            outbox,
            taken: 0,
            acked,
            acked_bytes: None,
            received,
            received_bytes: 0,
            shared,
        }
    }

    /// Handles frame after frame until the connection ends; why it ended.
    async fn read_until_end(&mut self) -> End {
        loop {
            let frame = match self.next_frame().await {
                Ok(frame) => frame,
                Err(end) => return end,
            };
            let step = match self.step(frame) {
                Ok(step) => step,
                Err(end) => return end,
            };
            let done = self.act(step).await;
            // A failed send ends the connection, but what was read before is
            // still handled (a notification in it must run), without replies.
            if let Err(end) = done
                && self.reader.ended.is_none()
            {
                self.reader.mark_ended(end);
            }
            // The client was heard from. Set after handling, not on arrival: a
            // notification may have waited for an in-flight slot, which is the
            // server's doing.
            self.last_seen = Instant::now();
        }
    }

    /// The next frame to handle: those read ahead first, in order; once they
    /// are handled, the end already known; otherwise the client's next frame,
    /// while shutdown, finished calls and the heartbeat are seen to. While
    /// the outbox is full nothing is taken (backpressure on a client that
    /// does not read its replies); the heartbeat goes on, so such a client is
    /// dropped once it has neither read nor been heard from for the client
    /// timeout.
    async fn next_frame(&mut self) -> Result<Frame, End> {
        loop {
            let held = self.reader.ended.is_none() && self.outbox.is_full();
            if !held {
                if let Some(frame) = self.reader.take_early() {
                    return Ok(frame);
                } else if let Some(end) = self.reader.ended.take() {
                    return Err(end);
                }
            }
            let circle = &self.circle;
            tokio::select! {
                biased;
                () = self.shared.token.cancelled() => return self.ending(End::Shutdown),
                Some(done) = self.reader.requests.join_next(), if !self.reader.requests.is_empty() => {
                    log_panic(circle, "a request handler", done);
                    continue;
                }
                Some(done) = self.reader.waiters.join_next(), if !self.reader.waiters.is_empty() => {
                    log_panic(circle, "a notification's waiter", done);
                    continue;
                }
                _ = self.heartbeat.tick() => {
                    // A client that takes its replies is alive, even if what it
                    // sent meanwhile is not read yet (the outbox was full), and
                    // so is one whose TCP stack acknowledges more of what the
                    // kernel holds for it: it reads a large reply, the pings
                    // waiting behind it (`acked`).
                    let taken = self.outbox.taken();
                    let acked = self.acked.bytes();
                    // Pings alone (a few bytes each, which the kernel of a
                    // client that hangs still acknowledges) never add up to it.
                    let reading = matches!((acked, self.acked_bytes),
                        (Some(now), Some(then)) if now >= then.saturating_add(ACKED_READING));
                    if reading || self.acked_bytes.is_none() {
                        self.acked_bytes = acked;
                    }
                    let received = self.received.load(Ordering::Relaxed);
                    if taken != self.taken || reading || received != self.received_bytes {
                        self.taken = taken;
                        self.received_bytes = received;
                        self.last_seen = Instant::now();
                    }
                    if self.last_seen.elapsed() >= self.timing.client_timeout {
                        return self.ending(End::Dead);
                    }
                    match within(self.stall, self.session.ping(b"")).await {
                        Ok(()) => continue,
                        Err(end) => return Err(end),
                    }
                }
                () = self.outbox.room(), if held => continue,
                msg = self.reader.stream.recv(), if !held => return msg.ok_or(End::Gone),
            }
        }
    }

    /// The connection ends with `end`, after the frames read ahead while
    /// the outbox was full: they are handled first, without replies (their
    /// notifications queue, their requests start no more), as after a failed
    /// send, so that every notification the server read is queued.
    fn ending(&mut self, end: End) -> Result<Frame, End> {
        if !self.reader.has_early() {
            return Err(end);
        }
        self.reader.ended = Some(end);
        match self.reader.take_early() {
            Some(frame) => Ok(frame),
            None => Err(self.reader.ended.take().expect("just set")),
        }
    }

    /// What to do with `msg`, or how it ends the connection.
    fn step(&mut self, msg: Frame) -> Result<Step, End> {
        let circle = &self.circle;
        let step = match msg {
            Ok(Message::Text(text)) => Step::Handle(text.to_string()),
            Ok(Message::Continuation(item)) => match self.fragments.push(item) {
                None => Step::Skip,
                Some(Assembled::Text(text)) => Step::Handle(text),
                Some(Assembled::Binary) => Step::Reply(rpc::binary_refused()),
                Some(Assembled::Oversize) => Step::Reply(self.oversize()),
                Some(Assembled::BadUtf8) => Step::Reply(rpc::not_utf8()),
            },
            Ok(Message::Binary(_)) => Step::Reply(rpc::binary_refused()),
            Ok(Message::Ping(bytes)) => Step::Pong(bytes),
            // The frame guard's stand-in for a refused oversize message.
            Ok(Message::Pong(bytes)) if bytes == OVERSIZE_PONG => Step::Reply(self.oversize()),
            Ok(Message::Pong(_) | Message::Nop) => Step::Skip,
            Ok(Message::Close(reason)) => return Err(End::ClientClosed(reason)),
            // The connection's bytes ended (the client closed or reset its
            // side of it). actix-ws reports that before the frames that
            // arrived with the last bytes; it yields them next, then `None`
            // (`End::Gone`): a notification sent right before a close still
            // runs, and a close frame still gets its answer.
            Err(ProtocolError::Io(e)) if client_side_ended(&e) => {
                log::debug!(circle:%; "circle {circle}: the client's side of the connection ended: {e}");
                self.bytes_ended = true;
                Step::Skip
            }
            // A text frame that is not UTF-8: the stream consumed it, so the
            // connection can go on. Other `InvalidData` errors (a reserved
            // bit set) leave the frame in the codec's buffer: answering them
            // would answer the same frame forever, so they close (below).
            Err(ProtocolError::Io(e)) if not_utf8(&e) => Step::Reply(rpc::not_utf8()),
            Err(e) => {
                log::debug!(circle:%; "circle {circle}: websocket protocol error: {e}");
                return Err(End::Protocol);
            }
        };
        Ok(step)
    }

    fn oversize(&self) -> Value {
        rpc::message_too_large(self.shared.config.max_message_bytes)
    }

    /// Carries out `step`: a text message goes to `dispatch`; a reply or a
    /// pong goes out unless the connection's end is known.
    async fn act(&mut self, step: Step) -> Result<(), End> {
        match step {
            Step::Handle(text) => {
                let mut io = Io {
                    session: &mut self.session,
                    outbox: &mut self.outbox,
                    reader: &mut self.reader,
                    stall: self.stall,
                    status: &self.shared.status,
                };
                handle_text(&self.shared, &self.permits, &mut io, &text).await
            }
            // Once the end is known nothing more is sent.
            _ if self.reader.ended.is_some() => Ok(()),
            Step::Reply(reply) => {
                let text = reply.to_string();
                self.shared.status.sent(text.len());
                within(self.stall, self.outbox.text(text)).await
            }
            Step::Pong(bytes) => within(self.stall, self.session.pong(&bytes)).await,
            Step::Skip => Ok(()),
        }
    }

    /// Closes the connection with the frame that says why it `end`ed (unless
    /// one went out already), then lets go of what still runs for it.
    async fn finish(mut self, end: End) {
        // A client may be sending when the server closes; it stops once it
        // reads the close frame, and answers it. Until then what it sends is
        // read and dropped: a socket closed with unread bytes is reset by the
        // kernel, and a reset throws away what the client has not yet
        // received (replies to tasks that ran, the close frame itself).
        let lingers = matches!(end, End::Shutdown);
        self.reader.note_end(&end);
        if let Some(close) = self.close_reason(end).await
            && !self.reader.close_sent
        {
            end::close(self.session, close).await;
            if lingers {
                self.reader.drop_until_close(end::LINGER).await;
            }
        }
        // Aborting a request whose client can no longer be answered cancels its
        // task (unless the server is shutting down and it may still be, see
        // `close_reason`); a notification's waiter leaves its task alone.
        self.reader.requests.abort_all();
        self.reader.waiters.abort_all();
        log::debug!(circle:% = self.circle; "circle {}: client disconnected", self.circle);
    }

    /// The close frame for `end` (none when nothing can be sent); on
    /// shutdown, once the requests in flight were answered.
    async fn close_reason(&mut self, end: End) -> Option<CloseReason> {
        let circle = &self.circle;
        let timing = &self.timing;
        match end {
            End::Shutdown => {
                // Let requests already submitted get their replies, within bounds
                // (notifications need none: their tasks are queued already).
                let drain = async { while self.reader.requests.join_next().await.is_some() {} };
                if tokio::time::timeout(timing.drain_timeout, drain)
                    .await
                    .is_err()
                {
                    // Their replies cannot be sent any more: their tasks are
                    // cancelled when `finish` aborts them, so a client told
                    // nothing can count on none of them running later.
                    self.reader.abandoned.store(true, Ordering::Release);
                    log::warn!(circle:%;
                        "circle {circle}: {} request(s) unanswered after {:?} of shutdown; \
                         their tasks are cancelled",
                        self.reader.requests.len(),
                        timing.drain_timeout
                    );
                }
                Some(end::reason(
                    CloseCode::Away,
                    "the circle's server is stopping (a shutdown, or a reload that changed or removed the circle)",
                ))
            }
            End::Dead => {
                log::info!(circle:%;
                    "circle {circle}: dropping a client that answered nothing (not even a pong) for {:?}",
                    timing.client_timeout
                );
                Some(end::reason(CloseCode::Policy, "no pong received in time"))
            }
            End::ClientClosed(r) => Some(end::echo(r)),
            End::Protocol => Some(end::protocol_error()),
            // A client that only half-closed may still read: it is told the
            // connection is over (a write to a reset one fails at once).
            End::Gone if self.bytes_ended => Some(end::reason(
                CloseCode::Normal,
                "the client ended its side of the connection",
            )),
            End::Gone => None,
        }
    }
}

/// Logs a call's task that panicked (`what`: whose task it was).
fn log_panic(circle: &str, what: &str, done: Result<(), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        log::error!(circle:%; "circle {circle}: {what} panicked: {e}");
    }
}
