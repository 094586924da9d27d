//! The WebSocket frame guard, actix's frame codec and the fragment
//! assembler, in the order a connection runs them, on an arbitrary byte
//! stream split at arbitrary points. Never a panic; no message over the
//! limit reaches the server; the same bytes split differently give the same
//! messages (the guard passes the frames before a bad one first; an error
//! the codec finds may drop the frames that came in the same read as the bad
//! one, so then one split's messages are a prefix of the byte-by-byte ones,
//! and both end with the error).
#![no_main]

use actix_http::ws::{Codec, Frame, Item};
use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use server_ws::fuzzing::{Assembled, Assembler, FrameGuard, OVERSIZE_PONG};
use tokio_util::codec::Decoder;

/// What the connection does with what it read.
#[derive(Debug, Clone, PartialEq)]
enum Event {
    /// A whole text message goes to the JSON-RPC layer.
    Text(String),
    /// A binary message is refused.
    Binary,
    /// An oversize message is refused (-32003).
    Oversize,
    /// A text message that is not UTF-8 is refused.
    NotUtf8,
    Ping(Vec<u8>),
    /// The client's close frame: the connection ends.
    Close,
}

/// How the stream ended: `true` for a protocol error (close 1002).
fn run(max: usize, input: &[u8], pieces: &[usize]) -> (Vec<Event>, bool) {
    let mut guard = FrameGuard::new(max);
    let mut codec = Codec::new().max_size(max.max(125));
    let mut assembler = Assembler::new(max);
    let mut buf = BytesMut::new();
    let mut events = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let n = pieces[i % pieces.len()].clamp(1, rest.len());
        i += 1;
        let (chunk, after) = rest.split_at(n);
        rest = after;
        // The frames before a bad one pass on first; the error ends the
        // stream once the codec had them.
        let (out, failed) = guard.feed(chunk);
        buf.extend_from_slice(&out);
        loop {
            let frame = match codec.decode(&mut buf) {
                Ok(Some(frame)) => frame,
                Ok(None) => break,
                Err(_) => return (events, true),
            };
            let event = match frame {
                Frame::Text(b) => match std::str::from_utf8(&b) {
                    Ok(s) => Some(Event::Text(s.to_owned())),
                    Err(_) => Some(Event::NotUtf8),
                },
                Frame::Binary(_) => Some(Event::Binary),
                Frame::Ping(b) => Some(Event::Ping(b.to_vec())),
                Frame::Pong(b) if b == OVERSIZE_PONG => Some(Event::Oversize),
                Frame::Pong(_) => None,
                Frame::Close(_) => Some(Event::Close),
                Frame::Continuation(item) => {
                    let last = matches!(item, Item::Last(_));
                    let got = assembler.push(item);
                    assert_eq!(got.is_some(), last, "a message ends with its last fragment");
                    got.map(|m| match m {
                        Assembled::Text(s) => Event::Text(s),
                        Assembled::Binary => Event::Binary,
                        Assembled::Oversize => Event::Oversize,
                        Assembled::BadUtf8 => Event::NotUtf8,
                    })
                }
            };
            if let Some(event) = event {
                if let Event::Text(s) = &event {
                    assert!(
                        s.len() <= max,
                        "a {}-byte message passed a {max}-byte limit",
                        s.len()
                    );
                }
                let close = event == Event::Close;
                events.push(event);
                if close {
                    return (events, false);
                }
            }
        }
        if failed.is_some() {
            return (events, true);
        }
    }
    (events, false)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    // Byte 0: the limit (0 to 510 bytes, around the 125-byte control limit
    // and the 126-byte two-byte-length threshold). Byte 1: the piece sizes of
    // the third split. The rest: the client's bytes.
    let max = usize::from(data[0]) * 2;
    let seed = data[1];
    let input = &data[2..];
    let pieces: Vec<usize> = (0..7u8)
        .map(|k| usize::from(seed.rotate_left(u32::from(k)) % 17) + 1)
        .collect();
    let (bytewise, bytewise_error) = run(max, input, &[1]);
    let bytewise_closed = bytewise.last() == Some(&Event::Close);
    for split in [&[input.len()][..], &pieces[..], &[2, 14, 3, 13, 15][..]] {
        let (events, error) = run(max, input, split);
        if error {
            // A broken frame may take the frames of its read with it, even a
            // close frame before it.
            assert!(bytewise_error || bytewise_closed, "split {split:?}");
            assert!(
                bytewise.starts_with(&events),
                "split {split:?}: {events:?} vs {bytewise:?}"
            );
        } else {
            assert_eq!(error, bytewise_error, "split {split:?}");
            assert_eq!(events, bytewise, "split {split:?}");
        }
    }
});
