//! The circle thread: one std thread per worker, with
//! [`engine::SCRIPT_STACK_SIZE`] of stack, running the take loop on a
//! single-threaded tokio runtime of its own and the circle's scripts inline,
//! one at a time.
//!
//! Running the script on the thread that also reads the pop's reply and
//! writes the result removes two thread hand-offs per task (async thread →
//! script thread → async thread) and keeps the take side's Redis connections
//! on one thread. The process's shared runtime never runs a script: this
//! thread serves only its own circle, whose tasks run one at a time anyway,
//! so a long script delays nothing but that circle's next pop. The heartbeat
//! stays on the shared runtime with its own connection, so a long script
//! never silences it.

use std::future::Future;
use std::thread::JoinHandle;

use engine::{CircleEngine, RunControl, ScriptError};
use tokio::sync::oneshot;

/// The result of one run.
pub(crate) type RunResult = Result<engine::Outcome, ScriptError>;

/// Yields `Ok` once the circle thread's future completed, or why its runtime
/// could not be built; closed if the thread panicked.
pub(crate) type Done = oneshot::Receiver<Result<(), String>>;

/// Runs the script of task `task_id` on this thread, turning an engine
/// panic into an internal error (the engine has already discarded the run's
/// writes). Its writes are committed without an fsync: the group it belongs
/// to syncs once before any result of the group is reported.
pub(crate) fn run_script(
    engine: &CircleEngine,
    task_id: &str,
    script: &str,
    control: &RunControl,
) -> RunResult {
    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        engine.run_unsynced(script, control)
    }));
    run.unwrap_or_else(|_| {
        log::error!(task = task_id; "the engine panicked while running the script of task {task_id}");
        Err(ScriptError {
            kind: engine::ErrorKind::Internal,
            message: "internal error while running the script".to_owned(),
            line: None,
            column: None,
        })
    })
}

/// Starts the circle thread, which builds its runtime and runs the future
/// `make` returns to completion (see [`Done`]).
pub(crate) fn spawn<F, Fut>(queue: &str, make: F) -> std::io::Result<(JoinHandle<()>, Done)>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let (done, done_rx) = oneshot::channel();
    let handle = std::thread::Builder::new()
        .name(format!("circle-{queue}"))
        .stack_size(engine::SCRIPT_STACK_SIZE)
        .spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(e) => {
                    let _ = done.send(Err(format!("cannot start the circle's runtime: {e}")));
                    return;
                }
            };
            runtime.block_on(make());
            // Dropping the runtime closes the take side's connections.
            drop(runtime);
            let _ = done.send(Ok(()));
        })?;
    Ok((handle, done_rx))
}
