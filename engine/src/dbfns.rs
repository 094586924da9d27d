//! The `db` module scripts use: `db::insert`, `get`, `update`, `delete`,
//! `exists`, `history`, `next_id` (DESIGN §5), working on the run's
//! transaction overlay.
//!
//! Errors are raised so the engine can report them precisely: database and
//! value errors as a catchable [`DbFault`] in `ErrorRuntime`; limit errors as
//! an uncatchable `ErrorTerminated` carrying a [`DbFault`], so a script cannot
//! swallow a bound. Rhai fills in the position of the `db::` call.

use std::sync::Arc;

use ourdb::OurDb;
use rhai::{Array, Dynamic, EvalAltResult, FuncRegistration, INT, Module, Position};

use crate::ErrorKind;
use crate::context;
use crate::txn::TxnError;
use crate::value;

/// A failure raised by a `db::` function. Scripts that catch it can read
/// `e.kind` and `e.message`; printing it shows the message.
#[derive(Debug, Clone)]
pub struct DbFault {
    /// How the engine reports it.
    pub kind: ErrorKind,
    /// A user-facing message.
    pub message: String,
}

type Res<T> = Result<T, Box<EvalAltResult>>;

fn fault(kind: ErrorKind, message: String) -> Box<EvalAltResult> {
    let value = Dynamic::from(DbFault { kind, message });
    match kind {
        ErrorKind::Limit => EvalAltResult::ErrorTerminated(value, Position::NONE).into(),
        _ => EvalAltResult::ErrorRuntime(value, Position::NONE).into(),
    }
}

fn from_txn(e: TxnError) -> Box<EvalAltResult> {
    match e {
        TxnError::Database(m) => fault(ErrorKind::Database, m),
        TxnError::Limit(m) => fault(ErrorKind::Limit, m),
    }
}

fn to_id(id: INT) -> Res<u32> {
    u32::try_from(id).map_err(|_| {
        fault(
            ErrorKind::Database,
            format!("invalid record id {id}: ids range from 0 to {}", u32::MAX),
        )
    })
}

fn encode(value: &Dynamic, max_value_bytes: usize) -> Res<Vec<u8>> {
    let bytes = value::encode(value).map_err(|r| fault(ErrorKind::Value, r.to_string()))?;
    if bytes.len() > max_value_bytes {
        return Err(fault(
            ErrorKind::Limit,
            format!(
                "value of {} bytes exceeds the limit of {max_value_bytes} bytes per database value",
                bytes.len()
            ),
        ));
    }
    Ok(bytes)
}

fn decode(id: u32, bytes: &[u8]) -> Res<Dynamic> {
    value::decode(bytes).map_err(|e| {
        fault(
            ErrorKind::Database,
            format!("record {id} does not hold a script value: {e}"),
        )
    })
}

/// Runs `f` on the current run's transaction.
fn in_txn<R>(f: impl FnOnce(&mut crate::txn::Txn) -> Res<R>) -> Res<R> {
    context::with(|state| f(&mut state.txn)).unwrap_or_else(|| {
        Err(fault(
            ErrorKind::Internal,
            "db function called outside a script run".into(),
        ))
    })
}

/// Builds the `db` module bound to `db`.
pub fn module(db: Arc<OurDb>, max_value_bytes: usize, max_history: usize) -> Module {
    let mut m = Module::new();
    // Volatile: the optimizer must never fold a db call into a cached AST.
    let reg = |name: &str| FuncRegistration::new(name).with_volatility(true);

    let d = db.clone();
    reg("insert").set_into_module(&mut m, move |value: Dynamic| -> Res<INT> {
        let bytes = encode(&value, max_value_bytes)?;
        in_txn(|t| t.insert(&d, bytes).map(INT::from).map_err(from_txn))
    });

    let d = db.clone();
    reg("get").set_into_module(&mut m, move |id: INT| -> Res<Dynamic> {
        let id = to_id(id)?;
        match in_txn(|t| t.get(&d, id).map_err(from_txn))? {
            Some(bytes) => decode(id, &bytes),
            None => Ok(Dynamic::UNIT),
        }
    });

    let d = db.clone();
    reg("update").set_into_module(&mut m, move |id: INT, value: Dynamic| -> Res<()> {
        let id = to_id(id)?;
        let bytes = encode(&value, max_value_bytes)?;
        in_txn(|t| t.update(&d, id, bytes).map_err(from_txn))
    });

    let d = db.clone();
    reg("delete").set_into_module(&mut m, move |id: INT| -> Res<bool> {
        let id = to_id(id)?;
        in_txn(|t| t.delete(&d, id).map_err(from_txn))
    });

    let d = db.clone();
    reg("exists").set_into_module(&mut m, move |id: INT| -> Res<bool> {
        let id = to_id(id)?;
        in_txn(|t| t.exists(&d, id).map_err(from_txn))
    });

    let d = db.clone();
    reg("history").set_into_module(&mut m, move |id: INT, n: INT| -> Res<Array> {
        let id = to_id(id)?;
        if n < 0 {
            return Err(fault(
                ErrorKind::Database,
                format!("invalid history depth {n}: it must be 0 or more"),
            ));
        }
        let depth = usize::try_from(n).unwrap_or(usize::MAX).min(max_history);
        let versions = in_txn(|t| t.history(&d, id, depth).map_err(from_txn))?;
        versions.iter().map(|bytes| decode(id, bytes)).collect()
    });

    let d = db;
    reg("next_id").set_into_module(&mut m, move || -> Res<INT> {
        in_txn(|t| t.next_id(&d).map(INT::from).map_err(from_txn))
    });

    m
}

/// Registers [`DbFault`] so a script that catches one can read it.
pub fn register_fault_type(engine: &mut rhai::Engine) {
    engine
        .register_type_with_name::<DbFault>("DbError")
        .register_get("kind", |f: &mut DbFault| f.kind.as_str().to_string())
        .register_get("message", |f: &mut DbFault| f.message.clone())
        .register_fn("to_string", |f: &mut DbFault| f.message.clone())
        .register_fn("to_debug", |f: &mut DbFault| {
            format!("DbError({}: {})", f.kind.as_str(), f.message)
        });
}
