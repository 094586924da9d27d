//! Reassembles fragmented WebSocket messages under the message size limit.
//!
//! The codec bounds single frames; this bounds a message sent as several
//! frames. An oversize message is read to its end and dropped so the
//! connection stays usable and the client gets an error reply.

use actix_ws::Item;

/// A complete message, or why there is none.
#[derive(Debug, PartialEq)]
pub enum Assembled {
    /// A whole text message.
    Text(String),
    /// A whole binary message (refused by the server, but read to its end).
    Binary,
    /// The message went over the limit; its bytes were dropped.
    Oversize,
    /// The text was not UTF-8.
    BadUtf8,
}

/// Reassembles the fragments of one message after another.
#[derive(Debug)]
pub struct Assembler {
    max: usize,
    buf: Vec<u8>,
    text: bool,
    overflowed: bool,
}

impl Assembler {
    /// An assembler for messages of at most `max` bytes.
    pub fn new(max: usize) -> Assembler {
        Assembler {
            max,
            buf: Vec::new(),
            text: true,
            overflowed: false,
        }
    }

    /// Feeds one fragment; returns the message when `item` was the last one.
    pub fn push(&mut self, item: Item) -> Option<Assembled> {
        match item {
            Item::FirstText(b) => {
                self.start(true);
                self.add(&b);
                None
            }
            Item::FirstBinary(b) => {
                self.start(false);
                self.add(&b);
                None
            }
            Item::Continue(b) => {
                self.add(&b);
                None
            }
            Item::Last(b) => {
                // The frame guard ended a message refused after some of its
                // fragments passed: never assemble what is left of it.
                if b == crate::frame_guard::TRUNCATED {
                    self.overflowed = true;
                }
                self.add(&b);
                let buf = std::mem::take(&mut self.buf);
                Some(if self.overflowed {
                    Assembled::Oversize
                } else if !self.text {
                    Assembled::Binary
                } else {
                    String::from_utf8(buf).map_or(Assembled::BadUtf8, Assembled::Text)
                })
            }
        }
    }

    fn start(&mut self, text: bool) {
        self.buf.clear();
        self.text = text;
        self.overflowed = false;
    }

    fn add(&mut self, bytes: &[u8]) {
        if self.overflowed {
            return;
        }
        if self.buf.len() + bytes.len() > self.max {
            self.overflowed = true;
            self.buf = Vec::new();
        } else {
            self.buf.extend_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::web::Bytes;

    use super::*;

    #[test]
    fn fragments_within_the_limit_make_one_text_message() {
        let mut a = Assembler::new(10);
        assert_eq!(a.push(Item::FirstText(Bytes::from_static(b"ab"))), None);
        assert_eq!(a.push(Item::Continue(Bytes::from_static(b"cd"))), None);
        assert_eq!(
            a.push(Item::Last(Bytes::from_static(b"ef"))),
            Some(Assembled::Text("abcdef".into()))
        );
    }

    #[test]
    fn fragments_over_the_limit_are_refused_and_the_next_message_still_works() {
        let mut a = Assembler::new(4);
        a.push(Item::FirstText(Bytes::from_static(b"abc")));
        a.push(Item::Continue(Bytes::from_static(b"def")));
        assert_eq!(
            a.push(Item::Last(Bytes::from_static(b"g"))),
            Some(Assembled::Oversize)
        );
        a.push(Item::FirstText(Bytes::from_static(b"ok")));
        assert_eq!(
            a.push(Item::Last(Bytes::new())),
            Some(Assembled::Text("ok".into()))
        );
    }

    #[test]
    fn binary_and_invalid_utf8_are_reported() {
        let mut a = Assembler::new(10);
        a.push(Item::FirstBinary(Bytes::from_static(b"\x00")));
        assert_eq!(a.push(Item::Last(Bytes::new())), Some(Assembled::Binary));
        a.push(Item::FirstText(Bytes::from_static(b"\xff")));
        assert_eq!(a.push(Item::Last(Bytes::new())), Some(Assembled::BadUtf8));
    }
}
