//! Builds the sandboxed Rhai engine of one circle: only the packages scripts
//! need, no `eval`, no `import`, no `sleep`, every bound from [`Limits`], and
//! callbacks that route `print`/`debug` and the stop check to the current run.

use std::sync::{Arc, OnceLock};

use ourdb::OurDb;
use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicFnPackage, BasicIteratorPackage, BasicMapPackage,
    BasicMathPackage, BasicStringPackage, BitFieldPackage, LanguageCorePackage, LogicPackage,
    MoreStringPackage, Package,
};
use rhai::{Dynamic, Engine, EvalAltResult, FLOAT, INT, Module, Position};

type SharedModule = Arc<Module>;

use crate::{Limits, context, dbfns};

/// Symbols a script may not use, refused when it is compiled. `curry`
/// copies a function pointer's arguments into a new one, so `f =
/// f.curry(f)` doubles the memory a value holds on every call, inside one
/// operation and outside every size limit (Rhai counts strings, arrays and
/// maps, not curried arguments): 30 calls ask for gigabytes. Closures still
/// capture variables (the parser curries them itself, sharing, not copying).
pub const DISABLED_SYMBOLS: &[&str] = &["eval", "import", "export", "curry"];

/// The packages, built once per process and shared by every circle's engine.
/// Left out: blobs (not storable), timestamps (not storable) and the
/// standard `print`/`debug` to stdout.
fn packages() -> &'static [SharedModule] {
    static PACKAGES: OnceLock<Vec<SharedModule>> = OnceLock::new();
    PACKAGES.get_or_init(|| {
        vec![
            LanguageCorePackage::new().as_shared_module(),
            ArithmeticPackage::new().as_shared_module(),
            BasicStringPackage::new().as_shared_module(),
            BasicIteratorPackage::new().as_shared_module(),
            BasicFnPackage::new().as_shared_module(),
            LogicPackage::new().as_shared_module(),
            BitFieldPackage::new().as_shared_module(),
            BasicMathPackage::new().as_shared_module(),
            BasicArrayPackage::new().as_shared_module(),
            BasicMapPackage::new().as_shared_module(),
            MoreStringPackage::new().as_shared_module(),
        ]
    })
}

fn no_sleep() -> Result<(), Box<EvalAltResult>> {
    Err(EvalAltResult::ErrorRuntime(
        "sleep is not available: a script may not block its worker".into(),
        Position::NONE,
    )
    .into())
}

/// The value Rhai's progress callback returns to stop a run. Out of line, so
/// the callback's every-operation path stays a few instructions.
#[cold]
#[inline(never)]
fn stop_token(token: &'static str) -> Dynamic {
    Dynamic::from(token)
}

/// Sets the Rhai bounds of the sandbox from `limits` on `engine`: call and
/// expression depth, string, array and map sizes. The operation limit is not
/// Rhai's (it is left unbounded there): the sandbox counts operations itself
/// in its progress callback (see `context::tick`), because Rhai does not add
/// up the operations of closures called from native functions. Public so a
/// benchmark can give a bare engine the same bounds.
pub fn apply_bounds(engine: &mut Engine, limits: &Limits) {
    engine
        .set_max_operations(0)
        .set_max_call_levels(limits.max_call_depth)
        .set_max_expr_depths(limits.max_expr_depth, limits.max_expr_depth)
        .set_max_string_size(limits.max_string_size)
        .set_max_array_size(limits.max_array_size)
        .set_max_map_size(limits.max_map_size);
}

/// The engine for one circle bound to `db`.
pub fn build(db: Arc<OurDb>, limits: &Limits) -> Engine {
    let mut engine = Engine::new_raw();
    for package in packages() {
        engine.register_global_module(package.clone());
    }
    // The core package has a blocking `sleep`; the global namespace is
    // searched first, so these shadow it.
    crate::nesting::register(&mut engine);
    engine.register_fn("sleep", |_: INT| no_sleep());
    engine.register_fn("sleep", |_: FLOAT| no_sleep());

    for symbol in DISABLED_SYMBOLS {
        engine.disable_symbol(*symbol);
    }
    engine.set_module_resolver(rhai::module_resolvers::DummyModuleResolver::new());
    engine.set_max_modules(0);

    apply_bounds(&mut engine, limits);

    engine.on_progress(|_| context::tick().map(stop_token));
    engine.on_print(|text| {
        context::with(|state| state.capture(text));
    });
    engine.on_debug(|text, _source, _pos| {
        context::with(|state| state.capture(text));
    });

    dbfns::register_fault_type(&mut engine);
    // history(id, n) never returns more versions than an array may hold.
    let max_history = match limits.max_array_size {
        0 => usize::MAX,
        n => n,
    };
    let settings = dbfns::Settings {
        max_value_bytes: limits.max_value_bytes,
        max_history,
        bounds: crate::value::Bounds {
            max_string: limits.max_string_size,
            max_array: limits.max_array_size,
            max_map: limits.max_map_size,
        },
    };
    engine.register_static_module("db", dbfns::module(db, settings).into());
    engine
}
