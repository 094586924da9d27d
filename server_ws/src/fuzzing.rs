//! What the fuzz targets in `fuzz/` drive: the pure code between a client's
//! bytes and a script (JSON-RPC parsing, the frame guard, fragment
//! reassembly). Not part of the crate's API; hidden from its docs.

use actix_web::web::Bytes;

pub use crate::fragments::{Assembled, Assembler};
pub use crate::frame_guard::{OVERSIZE_PONG, TRUNCATED};
pub use crate::rpc::{Incoming, Item, parse};

/// The frame guard on bytes fed by hand, without a stream under it.
pub struct FrameGuard(crate::frame_guard::FrameGuard<()>);

impl FrameGuard {
    /// A guard for frames of at most `max` payload bytes.
    pub fn new(max: usize) -> FrameGuard {
        FrameGuard(crate::frame_guard::FrameGuard::new((), max))
    }

    /// The bytes the codec gets for `input`, and the protocol error the
    /// stream ends with once the codec had them, if any.
    pub fn feed(&mut self, input: &[u8]) -> (Bytes, Option<String>) {
        match self.0.feed(input) {
            Ok(out) => (out.freeze(), self.0.held()),
            Err(e) => (Bytes::new(), Some(e.to_string())),
        }
    }
}
