//! [`DbFault`]: the value a failing `db::` function raises.
//!
//! Layering: a leaf beside `lib.rs`'s types; `value` (which names it when
//! it is refused as a stored value), `dbfns` (which raises it), `errors`
//! and `run` use it.

use rhai::Position;

use crate::ErrorKind;

/// A failure raised by a `db::` function. Scripts that catch it can read
/// `e.kind` and `e.message`; printing it shows the message.
#[derive(Debug, Clone)]
pub struct DbFault {
    /// How the engine reports it.
    pub kind: ErrorKind,
    /// A user-facing message.
    pub message: String,
    /// Where the `db::` call is. Kept here because Rhai moves the position of
    /// an uncatchable error to the outermost function call.
    pub pos: Position,
}
