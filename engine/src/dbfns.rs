//! The `db` module scripts use: `db::insert`, `get`, `update`, `delete`,
//! `exists`, `history`, `next_id` (DESIGN §5), working on the run's
//! transaction overlay. `insert`, `update` and `delete` first check the
//! run's role (see `caller`): with role read they fail with a catchable
//! [`ErrorKind::Forbidden`] fault before touching the transaction, so a
//! read-only run never has a write to commit.
//!
//! Errors are raised so the engine can report them precisely: database and
//! value errors as a catchable [`DbFault`] in `ErrorRuntime`; limit errors as
//! an uncatchable `ErrorTerminated` carrying a [`DbFault`], so a script cannot
//! swallow a bound. Rhai fills in the position of the `db::` call.

use std::sync::Arc;

use ourdb::OurDb;
use rhai::{
    Array, Dynamic, EvalAltResult, FuncRegistration, INT, Module, NativeCallContext, Position,
};

use crate::ErrorKind;
use crate::context;
use crate::txn::TxnError;
use crate::value;

use crate::fault::DbFault;

type Res<T> = Result<T, Box<EvalAltResult>>;

/// Rhai does not fill in the position of errors from module-qualified
/// native calls, so every fault carries the call's position itself.
/// A limit also stops the run (`context::stop_with_fault`): it is
/// uncatchable, and a native function that swallows a closure's error
/// (`sort`, `dedup`) must not let the run end well.
fn fault(kind: ErrorKind, message: String, pos: Position) -> Box<EvalAltResult> {
    let fault = DbFault { kind, message, pos };
    match kind {
        ErrorKind::Limit => {
            context::stop_with_fault(fault.clone());
            EvalAltResult::ErrorTerminated(Dynamic::from(fault), pos).into()
        }
        _ => EvalAltResult::ErrorRuntime(Dynamic::from(fault), pos).into(),
    }
}

fn from_txn(e: TxnError, pos: Position) -> Box<EvalAltResult> {
    match e {
        TxnError::Database(m) => fault(ErrorKind::Database, m, pos),
        TxnError::Limit(m) => fault(ErrorKind::Limit, m, pos),
    }
}

/// A record id as OurDB takes it: ids are given out from 1 to
/// `u32::MAX - 1`, so any other is a mistake of the script's, refused
/// alike by every `db::` function (never read as a record that does not
/// exist).
fn to_id(id: INT, pos: Position) -> Res<u32> {
    let given_out = u32::try_from(id)
        .ok()
        .filter(|id| (1..u32::MAX).contains(id));
    given_out.ok_or_else(|| {
        fault(
            ErrorKind::Database,
            format!(
                "invalid record id {id}: record ids run from 1 to {}",
                u32::MAX - 1
            ),
            pos,
        )
    })
}

/// What the `db` functions need besides the database.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Largest encoded value, in bytes.
    pub max_value_bytes: usize,
    /// Most versions `history` returns.
    pub max_history: usize,
    /// Most bytes of stored versions one `history` call reads.
    pub max_history_bytes: usize,
    /// Size bounds on stored values.
    pub bounds: value::Bounds,
}

fn encode(value: &Dynamic, settings: &Settings, pos: Position) -> Res<Vec<u8>> {
    let max = settings.max_value_bytes;
    let too_long = |len: String| {
        let message =
            format!("value of {len} bytes exceeds the limit of {max} bytes per database value");
        fault(ErrorKind::Limit, message, pos)
    };
    // Refused before its JSON is written, when that is sure to be too long.
    if crate::nesting::stored_surely_over(value, max) {
        return Err(too_long(format!("more than {max}")));
    }
    let bytes = value::encode(value, &settings.bounds).map_err(|r| {
        let kind = if r.over_limit {
            ErrorKind::Limit
        } else {
            ErrorKind::Value
        };
        fault(kind, r.to_string(), pos)
    })?;
    if bytes.len() > max {
        return Err(too_long(bytes.len().to_string()));
    }
    Ok(bytes)
}

fn decode(id: u32, bytes: &[u8], pos: Position) -> Res<Dynamic> {
    value::decode(bytes).map_err(|e| {
        fault(
            ErrorKind::Database,
            format!("record {id} does not hold a script value: {e}"),
            pos,
        )
    })
}

/// Fails with [`ErrorKind::Forbidden`] when the run's caller may not write.
fn check_write(function: &str, pos: Position) -> Res<()> {
    match crate::caller::write_refusal(function) {
        None => Ok(()),
        Some(message) => Err(fault(ErrorKind::Forbidden, message, pos)),
    }
}

/// Runs `f` on the current run's transaction.
fn in_txn<R>(pos: Position, f: impl FnOnce(&mut crate::txn::Txn) -> Result<R, TxnError>) -> Res<R> {
    match context::with(|state| f(&mut state.txn)) {
        Some(result) => result.map_err(|e| from_txn(e, pos)),
        None => Err(fault(
            ErrorKind::Internal,
            "db function called outside a script run".into(),
            pos,
        )),
    }
}

/// Builds the `db` module bound to `db`.
pub fn module(db: Arc<OurDb>, settings: Settings) -> Module {
    let mut m = Module::new();
    // First: a real function registered after a fallback of its very
    // signature (all arguments `Dynamic`: `insert(value)`, `next_id()`)
    // replaces it.
    add_wrong_calls(&mut m);
    // Volatile: the optimizer must never fold a db call into a cached AST.
    let reg = |name: &str| FuncRegistration::new(name).with_volatility(true);

    let d = db.clone();
    reg("insert").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, value: Dynamic| -> Res<INT> {
            let pos = ctx.call_position();
            check_write("db::insert", pos)?;
            let bytes = encode(&value, &settings, pos)?;
            in_txn(pos, |t| t.insert(&d, bytes)).map(INT::from)
        },
    );

    let d = db.clone();
    reg("get").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, id: INT| -> Res<Dynamic> {
            let pos = ctx.call_position();
            let id = to_id(id, pos)?;
            match in_txn(pos, |t| t.get(&d, id))? {
                Some(bytes) => decode(id, &bytes, pos),
                None => Ok(Dynamic::UNIT),
            }
        },
    );

    let d = db.clone();
    reg("update").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, id: INT, value: Dynamic| -> Res<()> {
            let pos = ctx.call_position();
            check_write("db::update", pos)?;
            let id = to_id(id, pos)?;
            let bytes = encode(&value, &settings, pos)?;
            in_txn(pos, |t| t.update(&d, id, bytes))
        },
    );

    let d = db.clone();
    reg("delete").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, id: INT| -> Res<bool> {
            let pos = ctx.call_position();
            check_write("db::delete", pos)?;
            let id = to_id(id, pos)?;
            in_txn(pos, |t| t.delete(&d, id))
        },
    );

    let d = db.clone();
    reg("exists").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, id: INT| -> Res<bool> {
            let pos = ctx.call_position();
            let id = to_id(id, pos)?;
            in_txn(pos, |t| t.exists(&d, id))
        },
    );

    let d = db.clone();
    reg("history").set_into_module(
        &mut m,
        move |ctx: NativeCallContext, id: INT, n: INT| -> Res<Array> {
            let pos = ctx.call_position();
            let id = to_id(id, pos)?;
            if n < 0 {
                return Err(fault(
                    ErrorKind::Database,
                    format!("invalid history depth {n}: it must be 0 or more"),
                    pos,
                ));
            }
            let depth = usize::try_from(n)
                .unwrap_or(usize::MAX)
                .min(settings.max_history);
            let versions = in_txn(pos, |t| {
                t.history(&d, id, depth, settings.max_history_bytes)
            })?;
            // The stored bytes are bounded above; what they decode to can
            // be many times larger (`{"":0}` is a map of some hundreds of
            // bytes), so the run's memory is checked after each version.
            let mut out = Array::with_capacity(versions.len());
            // Rhai's size check of the array returned, counted version by
            // version: past a limit the call fails naming itself.
            let limits = [
                (ctx.engine().max_array_size(), "array elements"),
                (ctx.engine().max_map_size(), "map entries"),
                (ctx.engine().max_string_size(), "string bytes"),
            ];
            let mut held = [0usize; 3];
            for bytes in versions {
                let version = decode(id, &bytes, pos)?;
                drop(bytes);
                let (a, m, s) = crate::natives::sizes(std::iter::once(&version));
                for (n, more) in held.iter_mut().zip([a.saturating_add(1), m, s]) {
                    *n = n.saturating_add(more);
                }
                if let Some(((max, what), n)) =
                    (limits.iter().zip(held)).find(|((max, _), n)| *max > 0 && n > max)
                {
                    return Err(fault(
                        ErrorKind::Limit,
                        format!(
                            "db::history of record {id} holds {n} {what} or more once read, past \
                             the limit of {max} in one value; ask for fewer versions"
                        ),
                        pos,
                    ));
                }
                out.push(version);
                if context::over_memory() {
                    return Err(fault(
                        ErrorKind::Limit,
                        format!(
                            "db::history of record {id} holds more than the script's memory \
                             limit of {} bytes once read; ask for fewer versions",
                            settings.max_history_bytes
                        ),
                        pos,
                    ));
                }
            }
            Ok(out)
        },
    );

    let d = db;
    reg("next_id").set_into_module(&mut m, move |ctx: NativeCallContext| -> Res<INT> {
        in_txn(ctx.call_position(), |t| t.next_id(&d)).map(INT::from)
    });
    m
}

/// Most arguments a call [`add_wrong_calls`] answers has.
const MOST_WRONG_ARGS: usize = 3;

/// For every function of the module, a fallback of each arity up to
/// [`MOST_WRONG_ARGS`] that takes anything and fails with how the function
/// is called, as a [`DbFault`] of kind `runtime`: a script that catches it
/// reads the same message as one that does not (Rhai's own "function not
/// found" carries only the signature). Rhai tries these last, once no
/// function takes the arguments' types; the right call never reaches one.
/// Registered before the real functions, which replace the fallbacks of
/// their exact signatures.
/// A call with more arguments, or through a function pointer, still gets
/// Rhai's error, worded by [`not_found_message`] when uncaught.
fn add_wrong_calls(m: &mut Module) {
    let reg = |name: &str| FuncRegistration::new(name).with_volatility(true);
    for (name, form) in FORMS {
        let wrong = move |ctx: &NativeCallContext, args: &[Dynamic]| -> Box<EvalAltResult> {
            let types: Vec<String> = args.iter().map(|a| type_name(ctx, a)).collect();
            let message = usage(name, form, &format!("({})", types.join(", ")));
            fault(ErrorKind::Runtime, message, ctx.call_position())
        };
        for arity in 0..=MOST_WRONG_ARGS {
            match arity {
                0 => reg(name).set_into_module(m, move |ctx: NativeCallContext| -> Res<()> {
                    Err(wrong(&ctx, &[]))
                }),
                1 => reg(name)
                    .set_into_module(m, move |ctx: NativeCallContext, a: Dynamic| -> Res<()> {
                        Err(wrong(&ctx, &[a]))
                    }),
                2 => reg(name).set_into_module(
                    m,
                    move |ctx: NativeCallContext, a: Dynamic, b: Dynamic| -> Res<()> {
                        Err(wrong(&ctx, &[a, b]))
                    },
                ),
                _ => reg(name).set_into_module(
                    m,
                    move |ctx: NativeCallContext, a: Dynamic, b: Dynamic, c: Dynamic| -> Res<()> {
                        Err(wrong(&ctx, &[a, b, c]))
                    },
                ),
            };
        }
    }
}

/// A value's type as the messages name it (`string`, `integer`, `float`,
/// `map`…).
fn type_name(ctx: &NativeCallContext, value: &Dynamic) -> String {
    word(ctx.engine().map_type_name(value.type_name())).to_string()
}

/// A Rhai type name as the messages say it: `integer` for `i64`, `float`
/// for `f64`, `string` for any of Rhai's string types; others as they are.
fn word(rhai_type: &str) -> &str {
    match rhai_type {
        "i64" => "integer",
        "f64" => "float",
        "&str" | "ImmutableString" | "String" | "&str | ImmutableString | String" => "string",
        other => other,
    }
}

/// Every function of the module as a script calls it, for the message of a
/// call Rhai found no function for.
const FORMS: [(&str, &str); 7] = [
    ("insert", "db::insert(value)"),
    ("get", "db::get(id), id an integer"),
    ("update", "db::update(id, value), id an integer"),
    ("delete", "db::delete(id), id an integer"),
    ("exists", "db::exists(id), id an integer"),
    ("history", "db::history(id, n), id and n integers"),
    ("next_id", "db::next_id(), without arguments"),
];

/// What to say for Rhai's "function not found" of `signature` (`db::get
/// (&str | ImmutableString | String)`: the name, then the argument types)
/// when the name is in the `db` module: how it is called. `None` for any
/// other function.
pub(crate) fn not_found_message(signature: &str) -> Option<String> {
    let rest = signature.strip_prefix("db::")?;
    let (name, args) = match rest.split_once(' ') {
        Some((name, args)) => (name, Some(args)),
        None => (rest, None),
    };
    let Some((_, form)) = FORMS.iter().find(|(n, _)| *n == name) else {
        let names: Vec<&str> = FORMS.iter().map(|(n, _)| *n).collect();
        return Some(format!(
            "db::{name} does not exist; the db module has {}",
            names.join(", ")
        ));
    };
    // No argument types: the name was called by a function pointer
    // (`Fn("db::insert").call(…)`), which cannot reach a module's functions.
    let Some(args) = args else {
        return Some(format!(
            "db::{name} cannot be called through a function pointer; call it by name: {form}"
        ));
    };
    let inner = args.trim_start_matches('(').trim_end_matches(')');
    let words: Vec<&str> = inner
        .split(", ")
        .filter(|t| !t.is_empty())
        .map(word)
        .collect();
    Some(usage(name, form, &format!("({})", words.join(", "))))
}

/// `db::NAME called with ARGS; it takes FORM`, for a function of the module.
fn usage(name: &str, form: &str, args: &str) -> String {
    format!("db::{name} called with {args}; it takes {form}")
}

/// Registers [`DbFault`] so a script that catches one can read it: its
/// `kind`, `message`, and, as in the map Rhai gives for its own errors,
/// `line` and `position` (the column) of the `db::` call.
pub fn register_fault_type(engine: &mut rhai::Engine) {
    let shown = |at: Option<u32>| at.map_or(Dynamic::UNIT, |n| Dynamic::from(INT::from(n)));
    engine
        .register_type_with_name::<DbFault>("DbError")
        .register_get("kind", |f: &mut DbFault| f.kind.as_str().to_string())
        .register_get("message", |f: &mut DbFault| f.message.clone())
        .register_get("line", move |f: &mut DbFault| {
            shown(crate::fault::place(f.pos).0)
        })
        .register_get("position", move |f: &mut DbFault| {
            shown(crate::fault::place(f.pos).1)
        })
        .register_fn("to_string", |f: &mut DbFault| f.message.clone())
        .register_fn("to_debug", |f: &mut DbFault| f.debug_text());
}
