//! One run: bounds checked before and after compilation, the per-run state
//! installed, the script evaluated, the result rendered and the transaction
//! committed (or dropped).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rhai::{AST, Dynamic};

use crate::context::{self, RunState, Stop};
use crate::txn::{Txn, TxnError};
use crate::{CircleEngine, ErrorKind, Outcome, RunControl, ScriptError, errors};

/// A far-away instant for a timeout too large to add.
const FOREVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn stop_error(stop: Stop, engine: &CircleEngine) -> ScriptError {
    match stop {
        Stop::Timeout => ScriptError::new(
            ErrorKind::Timeout,
            format!(
                "script ran past its deadline (time limit {:?})",
                engine.limits.timeout
            ),
        ),
        Stop::Cancelled => ScriptError::new(ErrorKind::Cancelled, "script was cancelled"),
    }
}

fn check_stop(
    engine: &CircleEngine,
    control: &RunControl,
    deadline: Instant,
) -> Result<(), ScriptError> {
    if control.cancel.load(Ordering::Relaxed) {
        return Err(stop_error(Stop::Cancelled, engine));
    }
    if Instant::now() >= deadline {
        return Err(stop_error(Stop::Timeout, engine));
    }
    Ok(())
}

fn compiled(engine: &CircleEngine, script: &str) -> Result<Arc<AST>, ScriptError> {
    if let Some(ast) = engine.cache.get(script) {
        return Ok(ast);
    }
    let ast = engine
        .rhai
        .compile(script)
        .map_err(|e| errors::from_parse(&e, &engine.limits))?;
    let ast = Arc::new(ast);
    engine.cache.put(script, ast.clone());
    Ok(ast)
}

fn render(value: Dynamic, max: usize) -> Result<String, ScriptError> {
    let text = if value.is_unit() {
        String::new()
    } else if value.is_string() {
        value.into_string().expect("checked is_string")
    } else {
        value.to_string()
    };
    if text.len() > max {
        return Err(ScriptError::new(
            ErrorKind::Limit,
            format!(
                "result of {} bytes exceeds the output limit of {max} bytes",
                text.len()
            ),
        ));
    }
    Ok(text)
}

pub fn run(
    engine: &CircleEngine,
    script: &str,
    control: &RunControl,
) -> Result<Outcome, ScriptError> {
    let start = Instant::now();
    let limits = &engine.limits;
    let mut deadline = start
        .checked_add(limits.timeout)
        .unwrap_or_else(|| start + FOREVER);
    if let Some(d) = control.deadline {
        deadline = deadline.min(d);
    }
    if script.len() > limits.max_script_bytes {
        return Err(ScriptError::new(
            ErrorKind::Limit,
            format!(
                "script of {} bytes exceeds the limit of {} bytes",
                script.len(),
                limits.max_script_bytes
            ),
        ));
    }
    check_stop(engine, control, deadline)?;
    let _serial = engine.run_lock.lock().unwrap_or_else(|e| e.into_inner());
    check_stop(engine, control, deadline)?;

    // Compilation is not interruptible; its time is bounded by the script
    // size limit and counted against the deadline.
    let ast = compiled(engine, script)?;
    check_stop(engine, control, deadline)?;

    let installed = context::install(RunState {
        deadline,
        cancel: control.cancel.clone(),
        printed: String::new(),
        printed_truncated: false,
        max_printed: limits.max_output_bytes,
        txn: Txn::new(limits.max_writes),
    });
    let result = catch_unwind(AssertUnwindSafe(|| engine.rhai.eval_ast::<Dynamic>(&ast)));
    let state = installed.finish();

    let value = match result {
        Ok(Ok(value)) => value,
        Ok(Err(err)) => return Err(errors::from_eval(*err, limits)),
        Err(_) => {
            log::error!("the script engine panicked; the run's writes were discarded");
            return Err(ScriptError::new(
                ErrorKind::Internal,
                "internal error in the script engine",
            ));
        }
    };
    let output = render(value, limits.max_output_bytes)?;
    // A cancel that arrives after the script finished but before the commit
    // still wins: nothing is written.
    if control.cancel.load(Ordering::Relaxed) {
        return Err(stop_error(Stop::Cancelled, engine));
    }
    let writes = state.txn.commit(&engine.db).map_err(|e| match e {
        TxnError::Database(m) => ScriptError::new(ErrorKind::Database, m),
        TxnError::Limit(m) => ScriptError::new(ErrorKind::Limit, m),
    })?;
    Ok(Outcome {
        output,
        printed: state.printed,
        printed_truncated: state.printed_truncated,
        writes,
        elapsed: start.elapsed(),
    })
}
