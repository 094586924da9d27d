//! [`DbFault`]: the value a failing `db::` function raises, and [`place`]: the
//! line and column of a position, as far as Rhai counts them.
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

impl DbFault {
    /// Its `to_debug` text, also inside a printed array or map:
    /// `DbError(kind: message)`.
    pub fn debug_text(&self) -> String {
        format!("DbError({}: {})", self.kind.as_str(), self.message)
    }
}

/// The line and column of `pos`, as far as they are known. Rhai counts
/// both in 16 bits and stops at the most they hold: a script may have more
/// lines, or a line more characters, so a count that reached it says
/// nothing (a column on such a line neither).
pub fn place(pos: Position) -> (Option<u32>, Option<u32>) {
    let known = |n: Option<usize>| n.filter(|&n| n < usize::from(u16::MAX));
    match known(pos.line()) {
        Some(line) => (
            u32::try_from(line).ok(),
            known(pos.position()).and_then(|c| u32::try_from(c).ok()),
        ),
        None => (None, None),
    }
}
