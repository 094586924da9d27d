//! A sandboxed Rhai engine bound to one circle's OurDB; each script runs as one
//! transaction.
//!
//! Place in the graph: `engine` → `ourdb`, `rhai`; the `worker` crate owns one
//! [`CircleEngine`] per circle and calls [`CircleEngine::run`] for each task.
//! Rhai types never leave this crate.
//!
//! Main types: [`CircleEngine`] (one per circle), [`Limits`] (every sandbox
//! bound, with defaults), [`RunControl`] (deadline and cancel flag of one run),
//! [`Outcome`] and [`ScriptError`] / [`ErrorKind`] (the result).
//!
//! Guarantees:
//! - [`CircleEngine::run`] is synchronous and CPU-bound. Call it on a thread
//!   whose stack is at least [`SCRIPT_STACK_SIZE`] bytes (never on an async
//!   executor thread). It is `Send + Sync`; runs on one engine are serialised
//!   internally, so concurrent callers wait their turn.
//! - On success, every db write of the script is committed as one OurDB batch
//!   and durable before `run` returns. On any error nothing is written, and ids
//!   handed out by `db::insert` in the failed script are never seen.
//! - Arrays and maps nested deeper than [`MAX_NESTING`] cannot be printed,
//!   compared or converted to text (a `limit` error), so a script cannot
//!   overflow the stack that way.
//! - Scripts have every standard package of a stock `rhai::Engine::new()`
//!   (time, blobs, maths, strings, ...) except what the sandbox refuses,
//!   each refusal with its reason in the error: `eval`, `import` (the only
//!   way to the file system), `curry` (refused when compiling), `switch`
//!   in a script that defines closures (refused when compiling, see
//!   `cycles::switch_beside_closures`) and `sleep` (when called). `export` at the top level of a script is accepted and,
//!   with no modules, has no effect.
//! - `output` is the final value rendered as the script's `to_string`
//!   renders it in stock Rhai; unit gives `""`. `print` and `debug` are
//!   captured (capped), never written to stdout.
//!
//! Scripts reach their circle's data through the `db` module:
//! `db::insert(v) -> id`, `db::get(id)` (`()` when absent), `db::update(id, v)`,
//! `db::delete(id) -> bool`, `db::exists(id)`, `db::history(id, n)` (newest
//! first) and `db::next_id()`. Values are unit, bool, int, float, string,
//! array and object map, stored as JSON; anything else (a timestamp, a blob,
//! a function pointer, ...) is refused when stored, with the path of the
//! offending part and its type.
//!
//! Each run has a [`Caller`] ([`RunControl::caller`]): `caller()` returns its
//! name (`""` for the trusted identity), and with [`Role::Read`] the writing
//! functions `db::insert`, `db::update` and `db::delete` fail with
//! [`ErrorKind::Forbidden`] before writing anything; the reads work. The
//! check reads the run's state, not anything a script can redefine.
//!
//! ```no_run
//! use std::sync::Arc;
//! use engine::{CircleEngine, Limits, RunControl, SCRIPT_STACK_SIZE};
//!
//! let db = Arc::new(ourdb::OurDb::open("/tmp/circle-1", ourdb::Config::default())?);
//! let engine = CircleEngine::new(db, Limits::default());
//! let outcome = std::thread::Builder::new()
//!     .stack_size(SCRIPT_STACK_SIZE)
//!     .spawn(move || engine.run(r#"let id = db::insert(#{ name: "Ada" }); db::get(id).name"#,
//!                               &RunControl::default()))?
//!     .join()
//!     .expect("script thread")?;
//! assert_eq!(outcome.output, "Ada");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cache;
mod caller;
pub mod clock;
mod compiling;
mod context;
mod cycles;
mod dbfns;
mod errors;
mod fault;
mod identity;
mod natives;
mod nesting;
mod run;
mod sandbox;
mod txn;
mod value;

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use identity::{Caller, Role};
pub use nesting::MAX_NESTING;
pub use value::MAX_VALUE_DEPTH;

/// Whether a script runs on the calling thread: a panic there (Rhai or std
/// panicking on what the script did) is caught and fails that script
/// alone, so a panic hook can tell it from a panic of the program.
pub fn script_running() -> bool {
    context::active()
}

/// Stack size (bytes) a thread calling [`CircleEngine::run`] must have.
///
/// 64 MiB: Rhai clones, drops and size-checks nested arrays and maps
/// recursively, and a script can nest them as deep as its time limit allows
/// (`engine/tests/nesting.rs` drives such scripts); in a debug build 16 MiB
/// is overflowed by that depth. Only the address space is reserved; memory is used only as
/// deep as a script actually recursed.
pub const SCRIPT_STACK_SIZE: usize = 64 << 20;

/// Bounds on one script run. Every field has a documented default (see
/// [`Limits::default`]). For the Rhai-enforced sizes (`max_operations`,
/// `max_string_size`, `max_array_size`, `max_map_size`) zero means unbounded,
/// as in Rhai.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Limits {
    /// Wall-clock budget, compilation included. Default 10 s.
    pub timeout: Duration,
    /// Rhai operations of the whole run, those of closures called from
    /// native functions (`map`, `filter`, `sort`, ...) included. Default
    /// 10,000,000 (about 0.5 s of simple work in a release build; fib(25)
    /// takes about 3.8 million).
    pub max_operations: u64,
    /// Function call depth. Default 64.
    pub max_call_depth: usize,
    /// Expression nesting depth (at top level and inside functions). Default 64.
    pub max_expr_depth: usize,
    /// Longest string, in bytes. Default 1 MiB.
    pub max_string_size: usize,
    /// Largest array, in elements, and largest blob, in bytes (Rhai counts
    /// a blob's bytes as array elements). Default 1,000,000.
    pub max_array_size: usize,
    /// Largest object map, in entries. Default 100,000.
    pub max_map_size: usize,
    /// Largest script source, in bytes. Default 256 KiB.
    pub max_script_bytes: usize,
    /// Captured `print`/`debug` output (cut at the cap, see
    /// [`Outcome::printed_truncated`]) and, separately, the rendered result (a
    /// larger result is a [`ErrorKind::Limit`] error), in bytes. Default 1 MiB.
    pub max_output_bytes: usize,
    /// Largest encoded value written to the database, in bytes. Default 256 KiB.
    pub max_value_bytes: usize,
    /// Database writes (inserts, updates, deletes of live records) per script.
    /// Default 1,000.
    pub max_writes: usize,
    /// Memory the run holds at once, in bytes: what its thread allocated
    /// and has not freed since the run started (values, output, the writes
    /// waiting for the commit). Counted where the process allocates through
    /// jemalloc, as the orchestrator does (elsewhere it reads nothing and
    /// bounds nothing), and checked at every operation, so a run stops at
    /// most one operation past it (one operation can allocate some tens of
    /// MiB under the other defaults: an array of 1,000,000 elements, each a
    /// short string of its own). 0 or `usize::MAX` for none. Default
    /// 256 MiB: room for 1,000 writes of 256 KiB values held until the
    /// commit.
    pub max_memory_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(10),
            max_operations: 10_000_000,
            max_call_depth: 64,
            max_expr_depth: 64,
            max_string_size: 1 << 20,
            max_array_size: 1_000_000,
            max_map_size: 100_000,
            max_script_bytes: 256 << 10,
            max_output_bytes: 1 << 20,
            max_value_bytes: 256 << 10,
            max_writes: 1_000,
            max_memory_bytes: 256 << 20,
        }
    }
}

/// What a run is given from outside: who runs it, and what may stop it (a
/// deadline and a cancel flag). The default runs as [`Caller::trusted`].
#[derive(Debug, Clone, Default)]
pub struct RunControl {
    /// Who runs the script: `caller()` returns its name, and with
    /// [`Role::Read`] every writing `db::` function fails with
    /// [`ErrorKind::Forbidden`].
    pub caller: Caller,
    /// Stop with [`ErrorKind::Timeout`] at this instant (in addition to
    /// `Limits::timeout`): an instant of the engine's [`clock`], e.g.
    /// `clock::after(time_left)` (converting a `std::time::Instant` inside
    /// every run cost an OS clock read).
    pub deadline: Option<clock::Instant>,
    /// Set to `true` to stop with [`ErrorKind::Cancelled`].
    pub cancel: Arc<AtomicBool>,
}

/// A successful run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The final value as text; unit gives `""`.
    pub output: String,
    /// What `print` and `debug` wrote, one line each, capped. A cut text
    /// ends with the line `[output truncated at N bytes]` (within the cap).
    pub printed: String,
    /// Whether `printed` was cut at the cap.
    pub printed_truncated: bool,
    /// Database writes committed.
    pub writes: usize,
    /// Time spent in the run.
    pub elapsed: Duration,
}

/// The kind of a script failure.
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
    /// The caller's role does not allow it: a `db::insert`, `db::update` or
    /// `db::delete` in a run whose caller has [`Role::Read`]. A script may
    /// catch it (its `kind` reads `"forbidden"`) and go on; nothing it tried
    /// to write is written either way.
    Forbidden,
    /// A fault of ours, not the script's.
    Internal,
}

impl ErrorKind {
    /// The name a script reads as a caught `DbError`'s `kind`: "syntax",
    /// "runtime", "database", "value", "limit", "timeout", "cancelled",
    /// "forbidden", "internal". The worker maps each kind to its wire kind
    /// (`client::FailureKind`, the same words) itself.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Syntax => "syntax",
            ErrorKind::Runtime => "runtime",
            ErrorKind::Database => "database",
            ErrorKind::Value => "value",
            ErrorKind::Limit => "limit",
            ErrorKind::Timeout => "timeout",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Forbidden => "forbidden",
            ErrorKind::Internal => "internal",
        }
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

impl ScriptError {
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        ScriptError {
            kind,
            message: message.into(),
            line: None,
            column: None,
        }
    }
}

/// One circle's engine: a Rhai engine built once, bound to the circle's
/// database, with a cache of compiled scripts.
pub struct CircleEngine {
    rhai: rhai::Engine,
    /// The same engine, also noting the cells closures share (see
    /// `cycles`); it runs the scripts that define closures, as noting costs
    /// every variable read.
    rhai_closures: rhai::Engine,
    db: Arc<ourdb::OurDb>,
    limits: Limits,
    /// Serialises runs so each script sees a stable database (see the crate
    /// docs); holds the compiled-script cache, which only runs touch.
    run_lock: Mutex<cache::AstCache>,
}

impl CircleEngine {
    /// An engine bound to `db` with `limits`.
    pub fn new(db: Arc<ourdb::OurDb>, limits: Limits) -> CircleEngine {
        // Calibrated here (once per process) so that no run pays for it.
        clock::get();
        let rhai = sandbox::build(db.clone(), &limits);
        let rhai_closures = sandbox::build_noting_cells(db.clone(), &limits);
        CircleEngine {
            rhai,
            rhai_closures,
            db,
            run_lock: Mutex::new(cache::AstCache::new(fingerprint(&limits))),
            limits,
        }
    }

    /// Runs `script` as one transaction.
    pub fn run(&self, script: &str, control: &RunControl) -> Result<Outcome, ScriptError> {
        run::run(self, script, control, true)
    }

    /// [`CircleEngine::run`], but a successful run's writes are committed
    /// without waiting for the disk (`Durability::Sync` fsyncs each commit
    /// otherwise): later runs see them at once; they are durable only after
    /// [`CircleEngine::sync`]. Group commit: run several scripts this way,
    /// then one `sync`, and only then report any of them done.
    pub fn run_unsynced(&self, script: &str, control: &RunControl) -> Result<Outcome, ScriptError> {
        run::run(self, script, control, false)
    }

    /// Makes every committed write durable (one fsync), when the database
    /// syncs its commits (`Durability::Sync`); a no-op otherwise, as such a
    /// database never promised durability at commit.
    pub fn sync(&self) -> Result<(), ScriptError> {
        if self.db.config().durability != ourdb::Durability::Sync {
            return Ok(());
        }
        self.db.sync().map_err(|e| {
            ScriptError::new(
                ErrorKind::Database,
                format!(
                    "the database could not make the writes durable: {}",
                    txn::told(&self.db, &e)
                ),
            )
        })
    }

    /// The bound database.
    pub fn db(&self) -> &Arc<ourdb::OurDb> {
        &self.db
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of compiled scripts currently cached. Waits for a running
    /// script to finish.
    pub fn cached_scripts(&self) -> usize {
        self.run_lock
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }
}

/// Everything a compiled AST depends on: the limits and the sandbox's
/// disabled symbols, plus the crate version in case the sandbox changes.
fn fingerprint(limits: &Limits) -> u64 {
    let mut h = DefaultHasher::new();
    env!("CARGO_PKG_VERSION").hash(&mut h);
    for refused in sandbox::REFUSED {
        refused.symbol.hash(&mut h);
    }
    limits.hash(&mut h);
    h.finish()
}
