//! The circle's script thread: one std thread with [`engine::SCRIPT_STACK_SIZE`]
//! stack runs the circle's scripts one at a time, never on a tokio thread.

use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use engine::{CircleEngine, RunControl, ScriptError};
use tokio::sync::oneshot;

/// The result of one run as the thread reports it.
pub(crate) type RunResult = Result<engine::Outcome, ScriptError>;

struct Job {
    script: String,
    control: RunControl,
    reply: oneshot::Sender<RunResult>,
}

/// Handle to the script thread. Dropping it ends the thread after the
/// current script.
pub(crate) struct ScriptThread {
    jobs: Option<mpsc::Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl ScriptThread {
    pub(crate) fn spawn(queue: &str, engine: Arc<CircleEngine>) -> std::io::Result<ScriptThread> {
        let (tx, rx) = mpsc::channel::<Job>();
        let handle = std::thread::Builder::new()
            .name(format!("script-{queue}"))
            .stack_size(engine::SCRIPT_STACK_SIZE)
            .spawn(move || {
                for job in rx {
                    let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        engine.run(&job.script, &job.control)
                    }));
                    let result = run.unwrap_or_else(|_| {
                        log::error!("the engine panicked while running a script");
                        Err(ScriptError {
                            kind: engine::ErrorKind::Internal,
                            message: "internal error while running the script".to_owned(),
                            line: None,
                            column: None,
                        })
                    });
                    let _ = job.reply.send(result);
                }
            })?;
        Ok(ScriptThread {
            jobs: Some(tx),
            handle: Some(handle),
        })
    }

    /// Queues `script`; the receiver yields its result.
    pub(crate) fn submit(
        &self,
        script: String,
        control: RunControl,
    ) -> oneshot::Receiver<RunResult> {
        let (reply, rx) = oneshot::channel();
        if let Some(jobs) = &self.jobs {
            // A send error means the thread died; the dropped reply tells the caller.
            let _ = jobs.send(Job {
                script,
                control,
                reply,
            });
        }
        rx
    }

    /// Ends the thread (after its current script) and waits for it.
    pub(crate) fn join(mut self) {
        self.jobs.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
