//! Frame lengths checked before actix's codec buffers a frame.
//!
//! actix's WebSocket codec refuses a frame over the size limit only once the
//! whole frame has arrived: until then it keeps every byte the client sends.
//! A client that declares a frame of 2^40 bytes and streams data makes the
//! server hold all of it (1.9 GB of memory after 2 GB sent, measured). A frame
//! whose length has its top bit set is refused without being consumed, so the
//! same error would come back forever; and after an oversize fragment the
//! codec's idea of the message in progress goes wrong.
//!
//! [`FrameGuard`] sits between the connection's bytes and the codec and reads
//! each frame header as it passes. A frame within the limit passes
//! unchanged. An oversize frame never reaches the codec: its payload is
//! dropped as it arrives, and so is the rest of its message (the
//! continuation frames up to the final one; control frames in between pass).
//! In its place the codec gets a small frame the connection recognises, in
//! the same position in the stream, so the -32003 goes out in order and as
//! soon as the oversize header is in:
//! - when the oversize frame starts a message: a pong carrying
//!   [`OVERSIZE_PONG`];
//! - when it continues a message whose first fragments already passed: a
//!   final continuation carrying [`TRUNCATED`] (not UTF-8), which ends that
//!   message in the codec and makes the assembler refuse it as oversize, so a
//!   truncated script is never run.
//!
//! A client's pong passes with its payload dropped, so that no client can
//! send the stand-in's; a client's last fragment with [`TRUNCATED`]'s bytes
//! passes with its first byte changed (still not UTF-8), for the same reason.
//!
//! A reserved bit set, an unmasked frame, a reserved opcode, a length with
//! the top bit set (RFC 6455 §5.2 forbids each), a control frame longer than
//! 125 bytes, a continuation with no message to continue, and a new message
//! while another (passed or refused) has not ended (§5.4) end the stream
//! with an error, which closes the connection with 1002, whatever length the
//! frame declares. So do a fragmented control frame (§5.4) and a close frame
//! the codec would refuse (one byte of payload, a code no endpoint may send,
//! a reason that is not UTF-8: §5.5.1, §7.4): the guard holds a close frame
//! (at most 125 bytes) until it has looked at it. The frames before the bad
//! one pass first: the error comes only once the codec has had them (the
//! codec would report its own error before the frames it decoded with it in
//! one read, and a notification right before a bad frame would be lost).

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

/// Longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// The payload of the pong that stands for a refused oversize message.
pub const OVERSIZE_PONG: &[u8] = b"circles:oversize";

/// The payload of the final fragment that ends a message refused after some
/// of its fragments passed; it is not UTF-8, so no text can end with it.
pub const TRUNCATED: &[u8] = b"\xff\xfecircles:oversize";

/// Where the guard is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a frame header (kept in `FrameGuard::header`).
    Header,
    /// Passing on this many more payload bytes.
    Pass(u64),
    /// Dropping this many more payload bytes of a refused message.
    Skip(u64),
    /// Holding this many more payload bytes of a close frame (in
    /// `FrameGuard::close`, after its header), to look at it whole.
    Close(u64),
}

/// See the module docs.
pub(crate) struct FrameGuard<S> {
    inner: S,
    max: usize,
    state: State,
    header: Vec<u8>,
    /// A data message whose first fragment passed has not ended yet.
    in_message: bool,
    /// The rest of a refused message is being dropped.
    dropping: bool,
    /// Bytes the client sent so far: it is alive while they grow, also in
    /// the middle of a frame, where it cannot answer a ping.
    received: Arc<AtomicU64>,
    /// A close frame being held: its header and the payload so far.
    close: Vec<u8>,
    /// What `close` holds is a message's last fragment of [`TRUNCATED`]'s
    /// length, not a close frame.
    last_held: bool,
    /// The error that ends the stream, held back while the bytes of the
    /// frames before it are handed on (`Some(false)`: not yet deferred once).
    failed: Option<(PayloadError, bool)>,
}

/// A masked frame (mask key 0, so the payload goes as it is) with `first`
/// (FIN, opcode) and `payload`, at most 125 bytes.
fn frame(out: &mut BytesMut, first: u8, payload: &[u8]) {
    out.extend_from_slice(&[first, 0x80 | payload.len() as u8, 0, 0, 0, 0]);
    out.extend_from_slice(payload);
}

impl<S> FrameGuard<S> {
    /// Guards `inner`, a client's bytes after the upgrade, for frames of at
    /// most `max` payload bytes.
    pub(crate) fn new(inner: S, max: usize) -> Self {
        FrameGuard {
            inner,
            max,
            state: State::Header,
            header: Vec::with_capacity(MAX_HEADER),
            in_message: false,
            dropping: false,
            received: Arc::default(),
            close: Vec::new(),
            last_held: false,
            failed: None,
        }
    }

    /// The count of bytes the client has sent, as it grows.
    pub(crate) fn received(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.received)
    }

    /// The error held after the frames of the last [`feed`](Self::feed)
    /// that passed: the stream ends with it once the codec had them.
    pub(crate) fn held(&self) -> Option<String> {
        self.failed.as_ref().map(|(e, _)| e.to_string())
    }

    /// The bytes to hand the codec for `input`: the same bytes, except for
    /// refused messages (see the module docs).
    /// An error ends the stream: when frames before it passed in this
    /// input, they come out first and the error is held (`failed`).
    pub(crate) fn feed(&mut self, input: &[u8]) -> Result<BytesMut, PayloadError> {
        if self.failed.is_some() {
            return Err(PayloadError::Overflow);
        }
        let mut out = BytesMut::with_capacity(input.len());
        match self.feed_into(input, &mut out) {
            Ok(()) => Ok(out),
            Err(e) if out.is_empty() => Err(e),
            Err(e) => {
                self.failed = Some((e, false));
                Ok(out)
            }
        }
    }

    fn feed_into(&mut self, mut input: &[u8], out: &mut BytesMut) -> Result<(), PayloadError> {
        while !input.is_empty() {
            match self.state {
                State::Close(n) => {
                    let k = usize::try_from(n).unwrap_or(usize::MAX).min(input.len());
                    self.close.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    let left = n - k as u64;
                    if left > 0 {
                        self.state = State::Close(left);
                    } else {
                        self.close_done(out)?;
                    }
                }
                State::Pass(n) | State::Skip(n) => {
                    let k = usize::try_from(n).unwrap_or(usize::MAX).min(input.len());
                    if matches!(self.state, State::Pass(_)) {
                        out.extend_from_slice(&input[..k]);
                    }
                    input = &input[k..];
                    let left = n - k as u64;
                    self.state = match (self.state, left) {
                        (_, 0) => State::Header,
                        (State::Pass(_), _) => State::Pass(left),
                        _ => State::Skip(left),
                    };
                }
                State::Header => {
                    let need = header_len(&self.header).unwrap_or(2);
                    let k = (need - self.header.len()).min(input.len());
                    self.header.extend_from_slice(&input[..k]);
                    input = &input[k..];
                    match header_len(&self.header) {
                        Some(total) if total == self.header.len() => self.header_done(out)?,
                        _ => {}
                    }
                }
            }
        }
        Ok(())
    }

    /// A whole close frame is in `self.close`: passes it on if the codec
    /// would take it.
    fn close_done(&mut self, out: &mut BytesMut) -> Result<(), PayloadError> {
        self.state = State::Header;
        let frame = std::mem::take(&mut self.close);
        let at = header_len(&frame).expect("a whole header");
        let mask = &frame[at - 4..at];
        let payload: Vec<u8> = frame[at..]
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ mask[i % 4])
            .collect();
        if std::mem::take(&mut self.last_held) {
            // Only the guard's own stand-in may end a message with
            // `TRUNCATED`: a client's is changed in its first byte (0xff to
            // 0xfe), still not UTF-8, so its message is refused as such.
            let mut frame = frame;
            if payload == TRUNCATED {
                frame[at] ^= 0x01;
            }
            out.extend_from_slice(&frame);
            return Ok(());
        }
        if !close_payload_ok(&payload) {
            return Err(PayloadError::Overflow);
        }
        out.extend_from_slice(&frame);
        Ok(())
    }

    /// A whole header is in `self.header`: passes its frame on, or refuses
    /// its message.
    fn header_done(&mut self, out: &mut BytesMut) -> Result<(), PayloadError> {
        let h = std::mem::take(&mut self.header);
        let len = payload_len(&h);
        let fin = h[0] & 0x80 != 0;
        let opcode = h[0] & 0x0f;
        let control = opcode >= 0x8;
        let continuation = opcode == 0x0;
        // The state after this header: `payload` (`State::Pass` or
        // `State::Skip`) of its `len` bytes, or the next header if it has none.
        let then = |payload: fn(u64) -> State| {
            if len == 0 {
                State::Header
            } else {
                payload(len)
            }
        };
        // What the codec would refuse with 1002 whatever the length is
        // refused here too, before the length decides anything: a reserved
        // bit set (no extension is negotiated), an unmasked client frame, a
        // reserved opcode.
        let known = matches!(opcode, 0x0..=0x2 | 0x8..=0xa);
        if h[0] & 0x70 != 0 || h[1] & 0x80 == 0 || !known {
            return Err(PayloadError::Overflow);
        }
        if len >> 63 != 0 || (control && (len > 125 || !fin)) {
            return Err(PayloadError::Overflow);
        }
        if opcode == 0x8 {
            // Held until it is whole and looked at (`close_done`).
            self.close.clear();
            self.close.extend_from_slice(&h);
            self.header = h;
            self.header.clear();
            self.state = State::Close(len);
            return if len == 0 {
                self.close_done(out)
            } else {
                Ok(())
            };
        }
        if opcode == 0xa {
            // A client's pong reaches the codec empty: its payload means
            // nothing here, and only the guard's own stand-in may carry
            // `OVERSIZE_PONG`.
            frame(out, h[0], b"");
            self.state = then(State::Skip);
        } else if control {
            out.extend_from_slice(&h);
            self.state = then(State::Pass);
        } else if self.dropping {
            // The rest of a refused message; a new message before its end
            // breaks the protocol.
            if !continuation {
                return Err(PayloadError::Overflow);
            }
            self.dropping = !fin;
            self.state = then(State::Skip);
        } else if continuation != self.in_message {
            // A continuation with no message to continue, or a new message
            // before the one in progress ended (RFC 6455 §5.4).
            return Err(PayloadError::Overflow);
        } else if len > self.max as u64 {
            if continuation {
                frame(out, 0x80, TRUNCATED);
            } else {
                frame(out, 0x8a, OVERSIZE_PONG);
            }
            self.in_message = false;
            self.dropping = !fin;
            self.state = then(State::Skip);
        } else if continuation && fin && len == TRUNCATED.len() as u64 {
            // A last fragment that may carry the stand-in's bytes: held
            // until it is whole and looked at (`close_done`).
            self.in_message = false;
            self.last_held = true;
            self.close.clear();
            self.close.extend_from_slice(&h);
            self.state = State::Close(len);
        } else {
            out.extend_from_slice(&h);
            self.in_message = !fin;
            self.state = then(State::Pass);
        }
        self.header = h;
        self.header.clear();
        Ok(())
    }
}

/// The length of the header that starts with `h`, once its first two bytes
/// are known.
fn header_len(h: &[u8]) -> Option<usize> {
    let second = *h.get(1)?;
    let ext = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    Some(2 + ext + mask)
}

/// Whether the codec takes a close frame's (unmasked) payload: empty, or a
/// code an endpoint may send (RFC 6455 §7.4) and a UTF-8 reason.
fn close_payload_ok(payload: &[u8]) -> bool {
    match payload {
        [] => true,
        [_] => false,
        [hi, lo, reason @ ..] => {
            matches!(u16::from_be_bytes([*hi, *lo]), 1000..=1003 | 1007..=1014 | 3000..=4999)
                && std::str::from_utf8(reason).is_ok()
        }
    }
}

/// The payload length a whole header declares.
fn payload_len(h: &[u8]) -> u64 {
    match h[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([h[2], h[3]])),
        127 => u64::from_be_bytes(h[2..10].try_into().expect("an 8-byte length")),
        n => u64::from(n),
    }
}

impl<S> Stream for FrameGuard<S>
where
    S: Stream<Item = Result<Bytes, PayloadError>> + Unpin,
{
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The bytes before an error went out: the codec decodes them once
        // its read finds nothing more (it reads on until then, and would
        // report the error before them); the error comes on the poll after.
        if let Some((_, deferred)) = &mut self.failed {
            if !*deferred {
                *deferred = true;
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            let (e, _) = self.failed.take().expect("just seen");
            self.failed = Some((PayloadError::Overflow, true));
            return Poll::Ready(Some(Err(e)));
        }
        loop {
            let chunk = match self.inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(chunk))) => chunk,
            };
            self.received
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            match self.feed(&chunk) {
                Err(e) => return Poll::Ready(Some(Err(e))),
                // All of it was dropped payload or a partial header: read on.
                Ok(out) if out.is_empty() => continue,
                Ok(out) => return Poll::Ready(Some(Ok(out.freeze()))),
            }
        }
    }
}

#[cfg(test)]
mod tests;
