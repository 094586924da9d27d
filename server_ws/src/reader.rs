//! A connection's read side ([`Reader`]): what is read ahead of the read
//! loop while it awaits a notification's push or an in-flight slot (control
//! frames answered at once, data frames kept in order up to a budget), how
//! the connection ended once known, and the calls it has in flight.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use actix_web::error::PayloadError;
use actix_ws::{CloseReason, Item as Fragment, Message, MessageStream, ProtocolError, Session};
use serde_json::Value;
use tokio::task::JoinSet;

use crate::circle::Shared;
use crate::end::{self, End, within};
use crate::frame_guard::OVERSIZE_PONG;
use crate::outbox::Outbox;
use crate::status::ServerStatus;

/// One frame as the stream yields it.
pub(crate) type Frame = Result<Message, ProtocolError>;

/// The connection's read side and its calls. While a notification waits for
/// an in-flight slot, the connection is still read, up to a budget of
/// buffered data: pings are answered, its end is noticed (so the requests of
/// a client that left are cancelled, not left running behind the wait), and
/// data frames wait in `early` for the read loop, which handles them first,
/// in order.
pub(crate) struct Reader {
    pub(crate) stream: MessageStream,
    early: VecDeque<Frame>,
    /// What `early` holds, by [`frame_cost`].
    early_cost: usize,
    /// How the connection ended (or why it must: a send failed), once
    /// known; the read loop ends with it once `early` is handled. Nothing
    /// more is sent meanwhile, and no new request is started.
    pub(crate) ended: Option<End>,
    /// Requests in flight (their replies are awaited; aborting one cancels
    /// its task, unless the server is shutting down and `abandoned` is not
    /// set).
    pub(crate) requests: JoinSet<()>,
    /// Set when the shutdown's drain ends with requests unanswered: their
    /// replies can no longer be sent, so aborting them cancels their tasks
    /// as for a client that went away (none runs later, unseen).
    pub(crate) abandoned: Arc<AtomicBool>,
    /// Notifications whose tasks are queued, each holding its slot until the
    /// task ends (aborting one changes nothing for its task).
    pub(crate) waiters: JoinSet<()>,
    /// The close frame went out already (answering a close, or a protocol
    /// error, seen while reading ahead).
    pub(crate) close_sent: bool,
}

impl Reader {
    /// A reader of `stream` with nothing read ahead and no calls.
    pub(crate) fn new(stream: MessageStream) -> Reader {
        Reader {
            stream,
            early: VecDeque::new(),
            early_cost: 0,
            ended: None,
            requests: JoinSet::new(),
            abandoned: Arc::default(),
            waiters: JoinSet::new(),
            close_sent: false,
        }
    }

    /// Whether frames read ahead wait for the read loop.
    pub(crate) fn has_early(&self) -> bool {
        !self.early.is_empty()
    }

    /// The oldest frame read ahead, if any.
    pub(crate) fn take_early(&mut self) -> Option<Frame> {
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
    /// frees their slots for the notifications still to queue (their tasks
    /// cancelled unless the server shuts down, see [`Reader::note_end`]).
    pub(crate) fn mark_ended(&mut self, end: End) {
        self.note_end(&end);
        if self.ended.is_none() {
            self.ended = Some(end);
        }
        self.requests.abort_all();
    }

    /// An end other than the server's shutdown can answer no request in
    /// flight, also while the server shuts down: aborting them cancels their
    /// tasks (`abandoned`).
    pub(crate) fn note_end(&self, end: &End) {
        if !matches!(end, End::Shutdown) {
            self.abandoned.store(true, Ordering::Release);
        }
    }

    /// Takes in a frame read ahead of the read loop (while it awaits a push
    /// or a slot): control frames are dealt with at once, data waits in
    /// `early`. A close or a protocol error is answered at once as well, so
    /// the client is not kept waiting for its close behind the notifications.
    async fn absorb(&mut self, frame: Option<Frame>, session: &Session, stall: Duration) {
        match frame {
            None => self.mark_ended(End::Gone),
            Some(Ok(Message::Close(reason))) => {
                let answer = end::echo(reason.clone());
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
            Some(Ok(Message::Pong(bytes))) if bytes != OVERSIZE_PONG => {}
            Some(Ok(Message::Nop)) => {}
            Some(Err(e)) => {
                // An error the codec would report on every read is kept once
                // and reading stops: the connection ends with 1002.
                let repeats = !consumed(&e);
                self.keep_early(Err(e));
                if repeats {
                    self.mark_ended(End::Protocol);
                    self.close_now(session, end::protocol_error()).await;
                }
            }
            Some(frame) => self.keep_early(frame),
        }
    }

    /// After the server's close frame: reads and drops what the client
    /// still sends until its close frame, the end of its bytes, a protocol
    /// error or `limit`.
    pub(crate) async fn drop_until_close(&mut self, limit: Duration) {
        let reading = async {
            while let Some(frame) = self.stream.recv().await {
                match frame {
                    Ok(Message::Close(_)) => return,
                    Ok(_) => {}
                    Err(e) if consumed(&e) => {}
                    Err(_) => return,
                }
            }
        };
        let _ = tokio::time::timeout(limit, reading).await;
    }

    async fn close_now(&mut self, session: &Session, answer: CloseReason) {
        end::close(session.clone(), answer).await;
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
    client_side_ended(e) || not_utf8(e)
}

/// The connection's bytes ended: the client closed or reset its side (the
/// frame guard's own refusal, `Overflow`, is a protocol error instead).
pub(crate) fn client_side_ended(e: &std::io::Error) -> bool {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<PayloadError>())
        .is_some_and(|p| matches!(p, PayloadError::Incomplete(_) | PayloadError::Io(_)))
}

/// A text frame that is not UTF-8 (the stream consumed it). Other
/// `InvalidData` errors (a reserved bit set) leave their frame in the codec's
/// buffer.
pub(crate) fn not_utf8(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::InvalidData
        && e.get_ref()
            .is_some_and(|inner| inner.is::<std::str::Utf8Error>())
}

/// What handling a message may use of the connection.
pub(crate) struct Io<'a> {
    /// For control frames while reading ahead.
    pub(crate) session: &'a mut Session,
    /// For replies.
    pub(crate) outbox: &'a mut Outbox,
    pub(crate) reader: &'a mut Reader,
    pub(crate) stall: Duration,
    /// Where the bytes of replies sent are counted.
    pub(crate) status: &'a ServerStatus,
}

impl Io<'_> {
    /// Sends `reply` from the read loop, unless the connection's end is
    /// known (then nothing more is sent).
    pub(crate) async fn send(&mut self, reply: Value) -> Result<(), End> {
        if self.reader.ended.is_some() {
            return Ok(());
        }
        // Held as text only while it waits for room (see `dispatch::send`).
        let text = reply.to_string();
        drop(reply);
        self.status.sent(text.len());
        within(self.stall, self.outbox.text(text)).await
    }
}

/// Awaits `fut` while reading the connection ahead of the read loop (see
/// [`Reader`], [`Reader::absorb`]), up to the budget of the message limit;
/// once the connection's end is known nothing more is read. Reading on
/// while a notification is pushed or waits keeps actix's buffer drained:
/// actix drops the bytes it has not yet handed over when the client's FIN
/// comes, so a client that pipelines and then half-closes would lose the
/// tail of what it sent.
pub(crate) async fn while_reading<F: Future>(
    shared: &Shared,
    io: &mut Io<'_>,
    fut: F,
) -> F::Output {
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
