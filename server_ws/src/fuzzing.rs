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

    /// The bytes the codec gets for `input`, or `Err` when the stream ends
    /// with a protocol error.
    pub fn feed(&mut self, input: &[u8]) -> Result<Bytes, String> {
        self.0
            .feed(input)
            .map(|out| out.freeze())
            .map_err(|e| e.to_string())
    }
}
