//! What a companion command (`play`, `token`, `status`, `reload`) prints on
//! stdout, written and flushed with its failure checked, and what any
//! command tells its user on stderr: `println!` and `eprintln!` panic when
//! the write fails (exit 101), and a command's reader may go away
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

/// Writes `text` to stderr: what a command tells its user beside its output
/// (an error reply, where a fresh token goes, the error it exits with). A
/// stderr that fails has nowhere left to report to, so its failure is
/// dropped and the command keeps the exit code it would have had.
pub fn tell(text: &str) {
    let mut err = std::io::stderr().lock();
    let _ = err.write_all(text.as_bytes()).and_then(|()| err.flush());
}
