//! Shared fixtures: a circle (temp dir, OurDB, engine) and running scripts on
//! a thread with the stack size the engine requires, as the worker does.
#![allow(dead_code)]

use std::sync::Arc;

use engine::{
    CircleEngine, ErrorKind, Limits, Outcome, RunControl, SCRIPT_STACK_SIZE, ScriptError,
};
use ourdb::{Config, Durability, OurDb};

/// A circle in a temp dir.
pub struct Circle {
    pub dir: tempfile::TempDir,
    pub engine: CircleEngine,
}

impl Circle {
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        Self::with(limits, Durability::Flush)
    }

    pub fn with(limits: Limits, durability: Durability) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = CircleEngine::new(open(dir.path(), durability), limits);
        Circle { dir, engine }
    }

    pub fn run(&self, script: &str) -> Result<Outcome, ScriptError> {
        run_with(&self.engine, script, &RunControl::default())
    }

    /// Runs `script` and expects success.
    pub fn ok(&self, script: &str) -> Outcome {
        self.run(script)
            .unwrap_or_else(|e| panic!("script failed: {e:?}\n{script}"))
    }

    /// Runs `script` and expects a failure of `kind`.
    pub fn fails(&self, script: &str, kind: ErrorKind) -> ScriptError {
        match self.run(script) {
            Ok(o) => panic!(
                "script succeeded with {:?}, expected {kind:?}\n{script}",
                o.output
            ),
            Err(e) => {
                assert_eq!(e.kind, kind, "wrong kind for {script}: {e:?}");
                e
            }
        }
    }

    /// The engine still runs an ordinary script.
    pub fn still_works(&self) {
        assert_eq!(self.ok("let x = 40; x + 2").output, "42");
    }
}

pub fn open(dir: &std::path::Path, durability: Durability) -> Arc<OurDb> {
    let config = Config {
        durability,
        ..Config::default()
    };
    Arc::new(OurDb::open(dir, config).expect("open ourdb"))
}

/// Runs on a fresh thread with [`SCRIPT_STACK_SIZE`], like the worker.
pub fn run_with(
    engine: &CircleEngine,
    script: &str,
    control: &RunControl,
) -> Result<Outcome, ScriptError> {
    std::thread::scope(|s| {
        std::thread::Builder::new()
            .stack_size(SCRIPT_STACK_SIZE)
            .spawn_scoped(s, || engine.run(script, control))
            .expect("spawn script thread")
            .join()
            .expect("script thread must not panic")
    })
}

impl Circle {
    /// A circle with no operation limit and a 600 s time limit: only a
    /// cancel stops an endless script in time.
    pub fn unbounded() -> Self {
        Self::with_limits(Limits {
            max_operations: 0,
            timeout: std::time::Duration::from_secs(600),
            ..Limits::default()
        })
    }

    /// Runs `script` on a script thread, sets the cancel flag from this
    /// thread once the run has started, and returns the run's error.
    pub fn run_and_cancel(&self, script: &str) -> ScriptError {
        use std::sync::atomic::{AtomicBool, Ordering};
        let control = RunControl::default();
        let started = AtomicBool::new(false);
        std::thread::scope(|s| {
            let runner = s.spawn(|| {
                started.store(true, Ordering::SeqCst);
                run_with(&self.engine, script, &control)
            });
            testkit::wait_for(
                "the script thread to start",
                std::time::Duration::from_secs(10),
                || started.load(Ordering::SeqCst).then_some(()),
            );
            control.cancel.store(true, Ordering::SeqCst);
            runner
                .join()
                .expect("runner")
                .expect_err("a cancelled script fails")
        })
    }
}
