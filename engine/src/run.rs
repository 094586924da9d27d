//! One run: bounds checked before and after compilation, the per-run state
//! installed, the script evaluated, the result rendered and the transaction
//! committed (or dropped).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::MutexGuard;
use std::sync::atomic::Ordering;

use rhai::Dynamic;

use crate::cache::AstCache;
use crate::clock::{self, Instant};
use crate::context::{self, Stop};
use crate::txn::TxnError;
use crate::{CircleEngine, ErrorKind, Outcome, RunControl, ScriptError, errors};

/// Which deadline a run has: its own time limit, or the task's (from
/// [`RunControl::deadline`]) when that comes first.
#[derive(Clone, Copy)]
struct Deadline {
    at: Instant,
    from_task: bool,
}

impl Deadline {
    /// The deadline of a run started at `start`: its time limit, or the task's
    /// deadline `task` when that comes first.
    #[inline]
    fn new(start: Instant, timeout: std::time::Duration, task: Option<Instant>) -> Self {
        let own = Deadline {
            at: clock::add(start, timeout),
            from_task: false,
        };
        match task {
            None => own,
            Some(d) => own.or_task(start, d),
        }
    }

    fn or_task(self, start: Instant, task: Instant) -> Self {
        // A task deadline already past wins even over a zero time limit.
        if task < self.at || task <= start {
            Deadline {
                at: task,
                from_task: true,
            }
        } else {
            self
        }
    }

    /// The token a run stopped at this deadline fails with; its error
    /// message is [`Deadline::message`].
    fn token(self) -> &'static str {
        if self.from_task {
            context::TASK_DEADLINE_TOKEN
        } else {
            context::TIMEOUT_TOKEN
        }
    }

    fn message(self, engine: &CircleEngine) -> String {
        if self.from_task {
            errors::TASK_DEADLINE_MESSAGE.to_string()
        } else {
            errors::time_limit_message(&engine.limits)
        }
    }
}

#[cold]
fn stop_error(stop: Stop, engine: &CircleEngine, deadline: Deadline) -> ScriptError {
    match stop {
        Stop::Timeout => ScriptError::new(ErrorKind::Timeout, deadline.message(engine)),
        Stop::Cancelled => ScriptError::new(ErrorKind::Cancelled, "script was cancelled"),
    }
}

fn check_stop(
    engine: &CircleEngine,
    control: &RunControl,
    deadline: Deadline,
) -> Result<(), ScriptError> {
    if control.cancel.load(Ordering::Relaxed) {
        return Err(stop_error(Stop::Cancelled, engine, deadline));
    }
    if clock::now() >= deadline.at {
        return Err(stop_error(Stop::Timeout, engine, deadline));
    }
    Ok(())
}

/// Deepest nesting of a result that is rendered; rendering is recursive.
const MAX_RESULT_DEPTH: usize = crate::nesting::MAX_NESTING;

/// Rhai checks sizes when a value is passed to a function, not when a map
/// grows by `m[key] = v`; so the final value is checked here before it is
/// rendered, and its nesting is bounded so rendering cannot overflow the stack.
fn check_sizes(value: &Dynamic, limits: &crate::Limits, depth: usize) -> Result<(), ScriptError> {
    let over = |what: &str, len: usize, max: usize| {
        ScriptError::new(
            ErrorKind::Limit,
            format!("{what} of {len} in the result exceeds the limit of {max}"),
        )
    };
    // `depth` counts from 0 at the top: a result of MAX levels reaches
    // depth MAX - 1, as in `nesting::value_too_deep`.
    if depth >= MAX_RESULT_DEPTH {
        return Err(ScriptError::new(
            ErrorKind::Limit,
            format!("the result nests arrays or maps deeper than {MAX_RESULT_DEPTH} levels"),
        ));
    }
    if let Ok(a) = value.as_array_ref() {
        if limits.max_array_size > 0 && a.len() > limits.max_array_size {
            return Err(over("an array of size", a.len(), limits.max_array_size));
        }
        for item in a.iter().filter(|x| x.is_array() || x.is_map()) {
            check_sizes(item, limits, depth + 1)?;
        }
    } else if let Ok(m) = value.as_map_ref() {
        if limits.max_map_size > 0 && m.len() > limits.max_map_size {
            return Err(over("a map of size", m.len(), limits.max_map_size));
        }
        for item in m.values().filter(|x| x.is_array() || x.is_map()) {
            check_sizes(item, limits, depth + 1)?;
        }
    }
    Ok(())
}

/// The final value as the script's `to_string` would give it.
fn render(engine: &rhai::Engine, value: Dynamic, max: usize) -> Result<String, ScriptError> {
    let text = if value.is_unit() {
        String::new()
    } else if let Ok(i) = value.as_int() {
        // The same digits as `to_string`, without the formatting machinery.
        itoa::Buffer::new().format(i).to_owned()
    } else if value.is_string() {
        value.into_string().expect("checked is_string")
    } else if crate::nesting::text_surely_over(&value, max) {
        return Err(ScriptError::new(
            ErrorKind::Limit,
            format!("result of more than {max} bytes exceeds the output limit of {max} bytes"),
        ));
    } else if let Some(text) = crate::nesting::container_text(engine, &value) {
        // Nesting checked by `check_sizes`.
        text
    } else if let Some(fault) = value.read_lock::<crate::fault::DbFault>() {
        // What the script's `to_string` gives, not the type's name.
        fault.message.clone()
    } else {
        engine.map_type_name(&value.to_string()).to_string()
    };
    if text.len() > max {
        return Err(too_large("result", text.len(), "output limit", max));
    }
    Ok(text)
}

/// "`what` of `len` bytes exceeds the `limit` of `max` bytes".
#[cold]
fn too_large(what: &str, len: usize, limit: &str, max: usize) -> ScriptError {
    ScriptError::new(
        ErrorKind::Limit,
        format!("{what} of {len} bytes exceeds the {limit} of {max} bytes"),
    )
}

/// The error of a run whose evaluation did not end with a value: Rhai's
/// error, a stop marked by a function that could not fail itself (a
/// too-deep value printed as the last thing the script did), or a panic.
#[cold]
#[inline(never)]
fn eval_error(
    result: std::thread::Result<Result<Dynamic, Box<rhai::EvalAltResult>>>,
    limits: &crate::Limits,
) -> ScriptError {
    // A stop marked by such a function shows where its call is, not where
    // the operation that failed next is (or nowhere, at the end).
    let marked = context::stop_position().filter(|_| match &result {
        Ok(Err(err)) => is_stop(err),
        _ => true,
    });
    let err = match result {
        Ok(Err(err)) => *err,
        Ok(Ok(_)) => rhai::EvalAltResult::ErrorTerminated(
            context::stopped()
                .expect("a run that returned a value fails only when marked to stop")
                .into(),
            rhai::Position::NONE,
        ),
        Err(_) => {
            log::error!("the script engine panicked; the run's writes were discarded");
            return ScriptError::new(ErrorKind::Internal, "internal error in the script engine");
        }
    };
    let mut error = errors::from_eval(err, limits);
    if let Some(pos) = marked {
        (error.line, error.column) = crate::fault::place(pos);
    }
    error
}

/// Whether `err` is the run's marked stop failing an operation, inside
/// script functions or not.
fn is_stop(err: &rhai::EvalAltResult) -> bool {
    use rhai::EvalAltResult as E;
    match err {
        E::ErrorInFunctionCall(_, _, inner, _) | E::ErrorInModule(_, inner, _) => is_stop(inner),
        E::ErrorTerminated(token, _) => {
            token.clone().into_immutable_string().ok().as_deref() == context::stopped()
        }
        _ => false,
    }
}

/// Waits for the run lock held by another run, then re-checks the deadline
/// and the cancel flag.
#[cold]
#[inline(never)]
fn wait_turn<'a>(
    engine: &'a CircleEngine,
    control: &RunControl,
    deadline: Deadline,
) -> Result<MutexGuard<'a, AstCache>, ScriptError> {
    let guard = engine.run_lock.lock().unwrap_or_else(|e| e.into_inner());
    check_stop(engine, control, deadline)?;
    Ok(guard)
}

#[cold]
fn txn_error(e: TxnError) -> ScriptError {
    match e {
        TxnError::Database(m) => ScriptError::new(ErrorKind::Database, m),
        TxnError::Limit(m) => ScriptError::new(ErrorKind::Limit, m),
    }
}

/// Runs `script`; `sync` false commits its writes without the fsync of
/// `Durability::Sync` (see `CircleEngine::run_unsynced`).
pub fn run(
    engine: &CircleEngine,
    script: &str,
    control: &RunControl,
    sync: bool,
) -> Result<Outcome, ScriptError> {
    let start = clock::now();
    let limits = &engine.limits;
    if script.len() > limits.max_script_bytes {
        return Err(too_large(
            "script",
            script.len(),
            "limit",
            limits.max_script_bytes,
        ));
    }
    let deadline = Deadline::new(start, limits.timeout, control.deadline);
    // `start` is fresh: no second clock read needed for this check.
    if control.cancel.load(Ordering::Relaxed) {
        return Err(stop_error(Stop::Cancelled, engine, deadline));
    }
    if start >= deadline.at {
        return Err(stop_error(Stop::Timeout, engine, deadline));
    }
    // Runs are serialised; a run that had to wait re-checks its deadline.
    let mut cache = match engine.run_lock.try_lock() {
        Ok(guard) => guard,
        Err(_) => wait_turn(engine, control, deadline)?,
    };

    // Compilation stops at the deadline and the cancel flag too (see
    // `compiling`): some scripts within the size limit compile for seconds.
    let (ast, compiled) = cache.get_or_compile(script, || {
        let watch = crate::compiling::Watch::start(deadline.at, &control.cancel);
        let ast = engine
            .rhai
            .compile(script)
            .map_err(|e| match watch.stopped() {
                Some(stop) => stop_error(stop, engine, deadline),
                None => errors::from_parse(&e, script, &engine.limits),
            })?;
        match crate::cycles::switch_beside_closures(&ast) {
            Some(pos) => Err(errors::refused(crate::cycles::SWITCH_REFUSAL, pos)),
            None => Ok(ast),
        }
    })?;
    if compiled {
        check_stop(engine, control, deadline)?;
    }

    let installed = context::install(
        &control.caller,
        deadline.at,
        deadline.token(),
        &control.cancel,
        limits,
    );
    // Only the engine that notes shared cells has any to empty. The guard is
    // declared after `installed`, so dropped before it: the cells are
    // emptied once the result is rendered, on every way out of this run.
    let closures = crate::cycles::defines_closures(ast);
    let rhai = if closures {
        &engine.rhai_closures
    } else {
        &engine.rhai
    };
    let _cycles = closures.then(crate::cycles::Guard::start);
    let result = catch_unwind(AssertUnwindSafe(|| rhai.eval_ast::<Dynamic>(ast)));
    // A `db::` limit ends the run as itself, whatever the script did after
    // (a native function may have swallowed it).
    if let Some(fault) = context::take_fault() {
        let pos = fault.pos;
        let stopped = rhai::EvalAltResult::ErrorTerminated(Dynamic::from(fault), pos);
        return Err(errors::from_eval(stopped, limits));
    }
    let value = match result {
        Ok(Ok(value)) if context::stopped().is_none() => value,
        other => return Err(eval_error(other, limits)),
    };
    if value.is_array() || value.is_map() {
        check_sizes(&value, limits, 0)?;
    }
    let output = render(&engine.rhai, value, limits.max_output_bytes)?;
    // A cancel that arrives after the script finished but before the commit
    // still wins, and so does the deadline, which the script's operations
    // look at only every so often (one native call, a sort of a long array,
    // can run well past it): nothing is written.
    check_stop(engine, control, deadline)?;
    let finished = installed.finish(&engine.db, sync).map_err(txn_error)?;
    Ok(Outcome {
        output,
        printed: finished.printed,
        printed_truncated: finished.printed_truncated,
        writes: finished.writes,
        elapsed: clock::now().saturating_duration_since(start),
    })
}
