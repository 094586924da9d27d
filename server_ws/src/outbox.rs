//! A connection's replies on their way out ([`Outbox`]): what is queued for
//! the socket and not yet taken by it stays within [`MAX_UNSENT_BYTES`].
//!
//! actix-ws queues what a `Session` sends in a channel of 32 messages,
//! whatever their size; the response body drains the channel into actix's
//! write buffer, and actix polls the body again only once that buffer holds
//! less than its write-buffer size (32 KiB). So before a reply goes into the
//! channel its sender reserves room for its frame, and the body ([`Drain`])
//! gives the room of a chunk back when it is polled after yielding it: by
//! then the chunk is in the kernel's socket buffer (all but its last 32 KiB
//! at most). A client that does not read fills the room, and then its
//! connection is not read either (see [`Outbox::is_full`]).
//!
//! The body also outlasts the close frame until the connection lets it end
//! ([`Release`]): actix closes the TCP connection when the body ends, and the
//! connection first reads what the client still sends (see
//! `Connection::finish`).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::web::Bytes;
use actix_ws::{Closed, Session};
use tokio::sync::{Notify, Semaphore, oneshot};

use crate::config::MAX_UNSENT_BYTES;
use crate::status::ServerStatus;

/// The sending side of one connection: its session and the room its replies
/// may take. Clones share both.
#[derive(Clone)]
pub(crate) struct Outbox {
    session: Session,
    ledger: Arc<Ledger>,
}

/// The room of one connection's queued replies, shared by its [`Outbox`]
/// clones and its [`Drain`].
struct Ledger {
    /// Free room, in bytes; closed once the body is gone.
    room: Semaphore,
    /// Bytes reserved and not yet given back: `MAX_UNSENT_BYTES` minus the
    /// free room.
    unsent: AtomicUsize,
    /// Senders waiting for room.
    waiting: AtomicUsize,
    /// Bytes of replies the socket has taken so far (pings and pongs not
    /// counted: they go out whether the client reads or not).
    taken: AtomicU64,
    /// Told whenever room is given back or a sender stops waiting.
    freed: Notify,
    status: Arc<ServerStatus>,
}

impl Outbox {
    /// An outbox for `session`; the response body to send in its place:
    /// `body` (actix-ws's), counting what the socket takes; and what lets
    /// that body end once `body` has.
    pub(crate) fn new(
        session: Session,
        body: BoxBody,
        status: Arc<ServerStatus>,
    ) -> (Outbox, Drain, Release) {
        let ledger = Arc::new(Ledger {
            room: Semaphore::new(MAX_UNSENT_BYTES),
            unsent: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            taken: AtomicU64::new(0),
            freed: Notify::new(),
            status,
        });
        let (release, released) = oneshot::channel();
        let drain = Drain {
            body,
            ledger: Arc::clone(&ledger),
            yielded: 0,
            body_ended: false,
            released: Some(released),
        };
        (
            Outbox { session, ledger },
            drain,
            Release { _sender: release },
        )
    }

    /// The session, for control frames (pings, pongs, the close): they are
    /// small and take no room.
    pub(crate) fn session(&self) -> &Session {
        &self.session
    }

    /// Queues `text` once there is room for it (all of the room for a reply
    /// larger than [`MAX_UNSENT_BYTES`]); `Closed` when the connection is gone.
    pub(crate) async fn text(&mut self, text: String) -> Result<(), Closed> {
        let cost = frame_len(text.len()).min(MAX_UNSENT_BYTES);
        let waiting = Waiting::new(&self.ledger);
        let permit = self
            .ledger
            .room
            .acquire_many(u32::try_from(cost).expect("MAX_UNSENT_BYTES fits in u32"))
            .await
            .map_err(|_| Closed)?;
        permit.forget();
        self.ledger.unsent.fetch_add(cost, Ordering::AcqRel);
        self.ledger.status.queued(cost);
        drop(waiting);
        // Given back if the send does not complete (the connection ends).
        let mut reserved = Reserved {
            ledger: &self.ledger,
            bytes: cost,
        };
        self.session.text(text).await?;
        reserved.bytes = 0;
        Ok(())
    }

    /// Whether a further message is to wait before it is read: a reply is
    /// waiting for room, or there is none left. Never once the connection is
    /// gone (reading then finds its end).
    pub(crate) fn is_full(&self) -> bool {
        let ledger = &self.ledger;
        !ledger.room.is_closed()
            && (ledger.waiting.load(Ordering::Acquire) > 0 || ledger.room.available_permits() == 0)
    }

    /// Returns once [`Outbox::is_full`] no longer holds.
    pub(crate) async fn room(&self) {
        loop {
            let freed = self.ledger.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if !self.is_full() {
                return;
            }
            freed.await;
        }
    }

    /// Bytes of replies the socket has taken so far: when it grows, the
    /// client reads (up to actix's write buffer, 32 KiB, can be taken
    /// without it).
    pub(crate) fn taken(&self) -> u64 {
        self.ledger.taken.load(Ordering::Acquire)
    }
}

impl Ledger {
    /// Gives back up to `bytes` of the room reserved (never more than was);
    /// how much it gave back.
    fn give_back(&self, bytes: usize) -> usize {
        let mut back = 0;
        let _ = self
            .unsent
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |unsent| {
                back = unsent.min(bytes);
                Some(unsent - back)
            });
        if back > 0 {
            self.room.add_permits(back);
            self.status.taken(back);
        }
        self.freed.notify_waiters();
        back
    }
}

/// A sender counted as waiting for room while alive.
struct Waiting<'a>(&'a Ledger);

impl<'a> Waiting<'a> {
    fn new(ledger: &'a Ledger) -> Waiting<'a> {
        ledger.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(ledger)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_waiters();
    }
}

/// Room reserved for a reply not yet in the channel; given back if the send
/// is abandoned.
struct Reserved<'a> {
    ledger: &'a Ledger,
    bytes: usize,
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.bytes > 0 {
            let _ = self.ledger.give_back(self.bytes);
        }
    }
}

/// The bytes of a server's (unmasked) text frame of `payload` bytes.
fn frame_len(payload: usize) -> usize {
    let header = match payload {
        0..=125 => 2,
        126..=0xFFFF => 4,
        _ => 10,
    };
    header + payload
}

/// Dropped, lets the response body end after actix-ws's has (after the close
/// frame): actix then closes the TCP connection. Drop it after the
/// connection's `MessageStream`: actix closes only once nobody reads the
/// request's bytes, and it looks when the body ends.
pub(crate) struct Release {
    _sender: oneshot::Sender<()>,
}

/// The WebSocket response body: actix-ws's, giving the room of each chunk
/// back once actix asks for the next one (see the module's comment), and
/// ending once both it has and its [`Release`] is dropped. Control frames
/// take no room, so the room they free is at most their few bytes early.
pub(crate) struct Drain {
    body: BoxBody,
    ledger: Arc<Ledger>,
    /// The bytes of the chunk last handed to actix.
    yielded: usize,
    /// actix-ws's body has ended.
    body_ended: bool,
    /// Resolves when the [`Release`] is dropped; `None` once it has.
    released: Option<oneshot::Receiver<()>>,
}

impl MessageBody for Drain {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.get_mut();
        // Asked again: actix's write buffer is below its limit, so what was
        // yielded before has (all but that much) gone to the socket.
        let yielded = std::mem::take(&mut this.yielded);
        if yielded > 0 {
            let back = this.ledger.give_back(yielded);
            this.ledger.taken.fetch_add(back as u64, Ordering::AcqRel);
        }
        if !this.body_ended {
            let next = Pin::new(&mut this.body).poll_next(cx);
            match &next {
                Poll::Ready(None) => this.body_ended = true,
                Poll::Ready(Some(Ok(chunk))) => {
                    this.yielded = chunk.len();
                    return next;
                }
                _ => return next,
            }
        }
        // actix-ws's body has ended (the close frame is out): this one ends
        // once the connection lets it.
        if let Some(released) = &mut this.released {
            // Sent or dropped, it is the same: the connection is done.
            std::task::ready!(Pin::new(released).poll(cx)).ok();
            this.released = None;
        }
        Poll::Ready(None)
    }
}

impl Drop for Drain {
    /// The connection is gone: senders waiting for room fail, and what was
    /// queued no longer counts.
    fn drop(&mut self) {
        self.ledger.room.close();
        let _ = self.ledger.give_back(usize::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_frame_counts_its_header() {
        assert_eq!(frame_len(0), 2);
        assert_eq!(frame_len(125), 127);
        assert_eq!(frame_len(126), 130);
        assert_eq!(frame_len(0x1_0000), 0x1_0000 + 10);
    }
}
