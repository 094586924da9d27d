//! The run's caller as scripts meet it: the `caller()` function, and the
//! role check every writing `db::` function makes.
//!
//! Enforcement reads the run's state (see `context`), never the Rhai-visible
//! `caller()`: a script that defines its own `fn caller()` only changes what
//! its own calls to `caller()` return.

use rhai::{Engine, FuncRegistration, ImmutableString};

use crate::context;
use crate::identity::Role;

/// Why `function` (e.g. `db::insert`) may not run for the current run's
/// caller, or `None` when it may. Outside a run nothing is refused here (the
/// `db::` function then fails on its own, as called outside a run).
pub fn write_refusal(function: &str) -> Option<String> {
    context::with(|state| match state.role {
        Role::Write => None,
        Role::Read => Some(format!(
            "{function} is not allowed: principal '{}' has role read; writes need role write",
            state.caller
        )),
    })
    .flatten()
}

/// Registers `caller()`: the current run's caller name (`""` outside a run).
pub fn register(engine: &mut Engine) {
    // Volatile: the optimizer must never fold it into a cached AST.
    FuncRegistration::new("caller")
        .with_volatility(true)
        .register_into_engine(engine, || -> ImmutableString {
            context::with(|state| ImmutableString::from(state.caller.as_str())).unwrap_or_default()
        });
}
