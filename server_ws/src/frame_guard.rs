//! Frame lengths checked before actix's codec buffers a frame.
//!
//! actix's WebSocket codec refuses a frame over the size limit only once the
//! whole frame has arrived: until then it keeps every byte the client sends.
//! A client that declares a frame of 2^40 bytes and streams data makes the
//! server hold all of it (1.9 GB of memory after 2 GB sent, measured). And a
//! frame whose length has its top bit set is refused without being consumed,
//! so the same error would come back forever.
//!
//! [`FrameGuard`] sits between the connection's bytes and the codec and reads
//! each frame header as it passes. A frame within the limit passes unchanged.
//! A frame over it is replaced by a frame of exactly `max + 1` zero bytes
//! (same opcode, flags and mask), which the codec refuses at once with
//! `Overflow` as it always did, so the client gets its -32003 before it has
//! sent the body; the declared payload is then read and dropped as it comes,
//! never kept. A length with the top bit set (RFC 6455 §5.2 forbids it) ends
//! the stream with an error, which closes the connection with 1002.

use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::error::PayloadError;
use actix_web::web::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};

/// Longest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// Where the guard is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading a frame header (kept in `FrameGuard::header`).
    Header,
    /// Passing on this many more payload bytes.
    Pass(u64),
    /// Dropping this many more payload bytes of an oversize frame.
    Skip(u64),
}

/// See the module docs.
pub(crate) struct FrameGuard<S> {
    inner: S,
    max: usize,
    state: State,
    header: Vec<u8>,
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
        }
    }

    /// The bytes to hand the codec for `input`: the same bytes, except that
    /// oversize frames are replaced and their payload dropped.
    fn feed(&mut self, mut input: &[u8]) -> Result<BytesMut, PayloadError> {
        let mut out = BytesMut::with_capacity(input.len());
        while !input.is_empty() {
            match self.state {
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
                        Some(total) if total == self.header.len() => self.header_done(&mut out)?,
                        _ => {}
                    }
                }
            }
        }
        Ok(out)
    }

    /// A whole header is in `self.header`: passes it on or replaces its frame.
    fn header_done(&mut self, out: &mut BytesMut) -> Result<(), PayloadError> {
        let h = &self.header;
        let len = payload_len(h);
        if len >> 63 != 0 {
            return Err(PayloadError::Overflow);
        }
        if len > self.max as u64 {
            let masked = h[1] & 0x80 != 0;
            out.extend_from_slice(&[h[0], (h[1] & 0x80) | 127]);
            out.extend_from_slice(&(self.max as u64 + 1).to_be_bytes());
            if masked {
                out.extend_from_slice(&h[h.len() - 4..]);
            }
            out.resize(out.len() + self.max + 1, 0);
            self.state = State::Skip(len);
        } else {
            out.extend_from_slice(h);
            self.state = if len == 0 {
                State::Header
            } else {
                State::Pass(len)
            };
        }
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
        loop {
            let chunk = match self.inner.poll_next_unpin(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => return Poll::Ready(None),
                Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(e))),
                Poll::Ready(Some(Ok(chunk))) => chunk,
            };
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
mod tests {
    use super::*;

    /// A masked frame header for `len` payload bytes, in the shortest form.
    fn header(first: u8, len: u64) -> Vec<u8> {
        let mut h = vec![first];
        if len < 126 {
            h.push(0x80 | len as u8);
        } else if len <= u64::from(u16::MAX) {
            h.push(0x80 | 126);
            h.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            h.push(0x80 | 127);
            h.extend_from_slice(&len.to_be_bytes());
        }
        h.extend_from_slice(&[1, 2, 3, 4]);
        h
    }

    /// Feeds `input` in pieces of `step` bytes; returns everything passed on.
    fn run(max: usize, input: &[u8], step: usize) -> Result<Vec<u8>, PayloadError> {
        let mut guard = FrameGuard::new(
            futures_util::stream::empty::<Result<Bytes, PayloadError>>(),
            max,
        );
        let mut out = Vec::new();
        for piece in input.chunks(step) {
            out.extend_from_slice(&guard.feed(piece)?);
        }
        Ok(out)
    }

    #[test]
    fn frames_within_the_limit_pass_unchanged_however_the_bytes_are_split() {
        let mut input = header(0x81, 5);
        input.extend_from_slice(b"hello");
        input.extend(header(0x01, 300));
        input.extend(vec![7u8; 300]);
        input.extend(header(0x80, 300));
        input.extend(vec![8u8; 300]);
        input.extend(header(0x89, 0));
        for step in [1, 2, 3, 13, 14, 15, 1000] {
            assert_eq!(
                run(300, &input, step).expect("passes"),
                input,
                "step {step}"
            );
        }
    }

    #[test]
    fn an_oversize_frame_becomes_max_plus_one_zeros_and_its_payload_is_dropped() {
        let mut input = header(0x81, 70_000);
        input.extend(vec![9u8; 70_000]);
        let mut after = header(0x81, 2);
        after.extend_from_slice(b"ok");
        input.extend_from_slice(&after);
        let mut expected = vec![0x81, 0x80 | 127];
        expected.extend_from_slice(&101u64.to_be_bytes());
        expected.extend_from_slice(&[1, 2, 3, 4]);
        expected.extend(vec![0u8; 101]);
        expected.extend_from_slice(&after);
        for step in [1, 5, 14, 4096, 100_000] {
            assert_eq!(
                run(100, &input, step).expect("passes"),
                expected,
                "step {step}"
            );
        }
    }

    #[test]
    fn the_replacement_goes_out_as_soon_as_the_header_is_in() {
        let mut guard = FrameGuard::new(
            futures_util::stream::empty::<Result<Bytes, PayloadError>>(),
            10,
        );
        let out = guard.feed(&header(0x81, 1 << 40)).expect("header");
        assert_eq!(
            out.len(),
            14 + 11,
            "header and max + 1 zeros, no body needed"
        );
        // Gigabytes of declared payload are dropped as they come.
        for _ in 0..100 {
            assert!(guard.feed(&[0u8; 65536]).expect("body").is_empty());
        }
        assert_eq!(guard.state, State::Skip((1 << 40) - 100 * 65536));
    }

    #[test]
    fn a_length_with_the_top_bit_set_ends_the_stream_with_an_error() {
        let mut h = vec![0x81, 0x80 | 127];
        h.extend_from_slice(&(1u64 << 63).to_be_bytes());
        h.extend_from_slice(&[1, 2, 3, 4]);
        assert!(matches!(run(100, &h, 3), Err(PayloadError::Overflow)));
    }
}
