//! Who runs a script and what they may do: the run's [`Caller`], the
//! `caller()` function scripts read it with, and the check every writing
//! `db::` function makes.
//!
//! Enforcement reads the run's state (see `context`), never the Rhai-visible
//! `caller()`: a script that defines its own `fn caller()` only changes what
//! its own calls to `caller()` return.

use rhai::{Engine, FuncRegistration, ImmutableString};

use crate::context;

/// What a caller may do with the circle's database.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `db::get`, `exists`, `history` and `next_id` work; `db::insert`,
    /// `update` and `delete` fail with [`crate::ErrorKind::Forbidden`].
    Read,
    /// Every `db::` function works.
    Write,
}

impl Role {
    /// The role's name in messages: `read`, `write`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
        }
    }
}

/// Who runs a script: the name `caller()` returns and the role the `db::`
/// functions enforce.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller {
    /// The principal's name; `""` for an open circle and for the trusted
    /// identity.
    pub name: String,
    /// What the script may do.
    pub role: Role,
}

impl Caller {
    /// The trusted identity: no name (`caller()` gives `""`), role write.
    /// What [`crate::RunControl::default`] runs as.
    pub fn trusted() -> Caller {
        Caller {
            name: String::new(),
            role: Role::Write,
        }
    }
}

impl Default for Caller {
    fn default() -> Self {
        Caller::trusted()
    }
}

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
