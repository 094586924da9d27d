//! Builds the sandboxed Rhai engine of one circle: every package of a stock
//! `rhai::Engine::new()`, minus what the sandbox refuses (see [`REFUSED`]),
//! every bound from [`Limits`], and callbacks that route `print`/`debug` and
//! the stop check to the current run.

use std::sync::{Arc, OnceLock};

use ourdb::OurDb;
use rhai::packages::{Package, StandardPackage};
use rhai::{Dynamic, Engine, EvalAltResult, FLOAT, INT, Module, Position};

use crate::{Limits, context, dbfns};

/// A symbol scripts may not use, refused when a script is compiled, and why.
pub struct Refused {
    /// The keyword or function name.
    pub symbol: &'static str,
    /// Why the sandbox refuses it; part of the error message.
    pub reason: &'static str,
}

/// What a stock Rhai engine offers and the sandbox refuses. `sleep` is
/// refused when called (see [`SLEEP_REFUSAL`]): it is a function, not a
/// symbol. The file system is reachable in stock Rhai only through `import`
/// (its file module resolver); no standard package touches files.
pub const REFUSED: &[Refused] = &[
    Refused {
        symbol: "eval",
        reason: "it compiles text made while the script runs, outside the script size \
                 limit, and a compilation cannot be stopped at the time limit",
    },
    Refused {
        symbol: "import",
        reason: "modules are read from the file system, which scripts may not touch",
    },
    // `f = f.curry(f)` doubles the memory a value holds on every call,
    // inside one operation and outside every size limit (Rhai counts
    // strings, arrays and maps, not curried arguments): 30 calls ask for
    // gigabytes. Closures still capture variables (the parser curries them
    // itself, sharing, not copying).
    Refused {
        symbol: "curry",
        reason: "it copies a function pointer's arguments outside every size limit \
                 (closures capture variables without it)",
    },
];

/// The error message of a refused symbol, or `None` when `symbol` is not
/// refused.
pub fn refusal_message(symbol: &str) -> Option<String> {
    REFUSED
        .iter()
        .find(|r| r.symbol == symbol)
        .map(|r| format!("'{}' is not available in scripts: {}", r.symbol, r.reason))
}

/// The error message of a call to `sleep`.
pub const SLEEP_REFUSAL: &str = "sleep is not available: a script may not block its worker";

/// The standard package of a stock engine, built once per process and shared
/// by every circle's engine.
fn standard_package() -> Arc<Module> {
    static PACKAGE: OnceLock<Arc<Module>> = OnceLock::new();
    PACKAGE
        .get_or_init(|| StandardPackage::new().as_shared_module())
        .clone()
}

fn no_sleep() -> Result<(), Box<EvalAltResult>> {
    Err(EvalAltResult::ErrorRuntime(SLEEP_REFUSAL.into(), Position::NONE).into())
}

/// The value Rhai's progress callback returns to stop a run. Out of line, so
/// the callback's every-operation path stays a few instructions.
#[cold]
#[inline(never)]
fn stop_token(token: &'static str) -> Dynamic {
    Dynamic::from(token)
}

/// Sets the Rhai bounds of the sandbox from `limits` on `engine`: call and
/// expression depth, string, array (blobs included: Rhai counts a blob's
/// bytes as array elements) and map sizes. The operation limit is not
/// Rhai's (it is left unbounded there): the sandbox counts operations itself
/// in its progress callback (see `context::tick`), because Rhai does not add
/// up the operations of closures called from native functions.
fn apply_bounds(engine: &mut Engine, limits: &Limits) {
    engine
        .set_max_operations(0)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size);
}

/// [`build`], with a variable callback that notes the cells closures share,
/// which each run empties at its end (see `cycles`); it resolves nothing
/// itself.
pub fn build_noting_cells(db: Arc<OurDb>, limits: &Limits) -> Engine {
    let mut engine = build(db, limits);
    #[allow(deprecated)] // "considered volatile", not deprecated
    engine.on_var(|name, index, context| {
        crate::cycles::note(name, index, context.scope());
        Ok(None)
    });
    engine
}

/// The engine for one circle bound to `db`.
pub fn build(db: Arc<OurDb>, limits: &Limits) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(standard_package());
    // The core package has a blocking `sleep`; the global namespace is
    // searched first, so these shadow it.
    crate::nesting::register(&mut engine);
    crate::natives::register(&mut engine);
    engine.register_fn("sleep", |_: INT| no_sleep());
    engine.register_fn("sleep", |_: FLOAT| no_sleep());

    for refused in REFUSED {
        engine.disable_symbol(refused.symbol);
    }
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.set_max_modules(0);

    apply_bounds(&mut engine, limits);
    // No optimizer: its constant propagation gives every use of a constant
    // array or map its own deep copy, inside the compilation, which no
    // limit interrupts (`const a = [..]` of k elements used m times is
    // k * m values: tens of GB within the script size limit).
    engine.set_optimization_level(rhai::OptimizationLevel::None);

    // Compilations stop at their run's deadline (see `compiling`).
    #[allow(deprecated)] // "considered volatile", not deprecated
    engine.on_parse_token(|token, _, _| crate::compiling::on_token(token));
    engine.on_progress(|_| context::tick().map(stop_token));
    engine.on_print(|text| {
        context::with(|state| state.capture(text));
    });
    engine.on_debug(|text, _source, _pos| {
        context::with(|state| state.capture(text));
    });

    dbfns::register_fault_type(&mut engine);
    crate::caller::register(&mut engine);
    // history(id, n) never returns more versions than an array may hold.
    let max_history = match limits.max_array_size {
        0 => usize::MAX,
        n => n,
    };
    let settings = dbfns::Settings {
        max_value_bytes: limits.max_value_bytes,
        max_history,
        // What one call may read of stored versions: the run's memory bound
        // (0: unbounded), checked only after the call returns.
        max_history_bytes: match limits.max_memory_bytes {
            0 => usize::MAX,
            n => n,
        },
        bounds: crate::value::Bounds {
            max_string: limits.max_string_size,
            max_array: limits.max_array_size,
            max_map: limits.max_map_size,
        },
    };
    engine.register_static_module("db", dbfns::module(db, settings).into());
    engine
}
