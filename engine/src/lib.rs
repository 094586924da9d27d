//! A sandboxed Rhai engine bound to one circle's OurDB; each script runs as one
//! transaction.
//!
//! API CONTRACT STUB — the engine owner replaces the bodies; the worker codes
//! against these signatures. Rhai types never leave this crate.
//!
//! Fixed here:
//! - [`CircleEngine::run`] is synchronous and CPU-bound. Call it on a thread
//!   whose stack is at least [`SCRIPT_STACK_SIZE`] bytes (never on an async
//!   executor thread). It is `Send + Sync`; runs on one engine are serialised
//!   by the caller (one task at a time per circle) but must be safe if not.
//! - On success, every db write of the script is committed as one OurDB batch
//!   and durable before `run` returns. On any error nothing is written.
//! - `output` is the final value rendered with `to_string`; unit gives `""`.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

/// Stack size (bytes) a thread calling [`CircleEngine::run`] must have.
pub const SCRIPT_STACK_SIZE: usize = 16 << 20;

/// Bounds on one script run. Every field has a documented default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Wall-clock budget, compilation included.
    pub timeout: Duration,
    /// Rhai operations.
    pub max_operations: u64,
    /// Function call depth.
    pub max_call_depth: usize,
    /// Expression nesting depth.
    pub max_expr_depth: usize,
    /// Longest string, in bytes.
    pub max_string_size: usize,
    /// Largest array, in elements.
    pub max_array_size: usize,
    /// Largest object map, in entries.
    pub max_map_size: usize,
    /// Largest script source, in bytes.
    pub max_script_bytes: usize,
    /// Captured `print`/`debug` output and the rendered result, in bytes.
    pub max_output_bytes: usize,
    /// Largest encoded value written to the database, in bytes.
    pub max_value_bytes: usize,
    /// Database writes per script.
    pub max_writes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        unimplemented!()
    }
}

/// What may stop a run from outside: a deadline and a cancel flag.
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// Stop with [`ErrorKind::Timeout`] at this instant (in addition to `Limits::timeout`).
    pub deadline: Option<Instant>,
    /// Set to `true` to stop with [`ErrorKind::Cancelled`].
    pub cancel: Arc<AtomicBool>,
}

/// A successful run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The final value as text; unit gives `""`.
    pub output: String,
    /// What `print` and `debug` wrote, one line each, capped.
    pub printed: String,
    /// Whether `printed` was cut at the cap.
    pub printed_truncated: bool,
    /// Database writes committed.
    pub writes: usize,
    /// Time spent in the run.
    pub elapsed: Duration,
}

/// The kind of a script failure; `as_str` is the wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The script does not parse.
    Syntax,
    /// The script raised an error or misused a value.
    Runtime,
    /// The database refused or failed an operation.
    Database,
    /// A value cannot be stored (does not round-trip through JSON).
    Value,
    /// A sandbox bound was exceeded.
    Limit,
    /// The deadline passed.
    Timeout,
    /// Cancelled from outside.
    Cancelled,
    /// A fault of ours, not the script's.
    Internal,
}

impl ErrorKind {
    /// The wire name: "syntax", "runtime", "database", "value", "limit",
    /// "timeout", "cancelled", "internal".
    pub fn as_str(self) -> &'static str {
        unimplemented!()
    }
}

/// A failed run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{kind:?} error: {message}")]
pub struct ScriptError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// A precise, user-facing message.
    pub message: String,
    /// 1-based line where Rhai knows it.
    pub line: Option<u32>,
    /// 1-based column where Rhai knows it.
    pub column: Option<u32>,
}

/// One circle's engine.
pub struct CircleEngine {}

impl CircleEngine {
    /// An engine bound to `db` with `limits`.
    pub fn new(db: Arc<ourdb::OurDb>, limits: Limits) -> CircleEngine {
        let _ = (db, limits);
        unimplemented!()
    }
    /// Runs `script` as one transaction.
    pub fn run(&self, script: &str, control: &RunControl) -> Result<Outcome, ScriptError> {
        let _ = (script, control);
        unimplemented!()
    }
    /// The bound database.
    pub fn db(&self) -> &Arc<ourdb::OurDb> {
        unimplemented!()
    }
    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        unimplemented!()
    }
}
