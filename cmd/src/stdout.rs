//! What a companion command (`play`, `token`, `status`, `reload`) prints on
//! stdout, written and flushed with its failure checked: `println!` panics
//! when the write fails (exit 101), and a command's reader may go away
//! (`… | head -c 10`) or its file fill up (`… > /dev/full`).

use std::io::{ErrorKind, Write};

/// Writes `text` to stdout and flushes it; `what` names it in the error
/// (`the result`, `the token`).
///
/// A reader that went away (EPIPE: Rust ignores SIGPIPE, so the failed
/// write is the only sign) is no failure of the command: the rest of `text`
/// is dropped quietly and this returns `Ok`, so the command exits with the
/// code it would have had, as `git log | head` does (0 for `play`'s result,
/// 1 for the error reply of `play --json`; 0 for an applied reload). Any
/// other failure (a full disk, `> /dev/full`) is an error naming `what` and
/// the cause on one line, which `main` prints before it exits 1.
pub fn write(what: &str, text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(anyhow::anyhow!("cannot write {what} to stdout: {e}")),
    }
}
