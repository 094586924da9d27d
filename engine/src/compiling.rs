//! Makes a compilation stop at its run's deadline or cancel flag.
//!
//! Rhai's parser is not linear in every script: it looks each variable
//! reference up among every function defined so far, and each key of a map
//! literal among the keys before it, so a script within the size limit can
//! take many seconds to compile. Rhai offers no progress callback for
//! parsing, but it hands every token to the engine's token mapper
//! ([`on_token`]): while a [`Watch`] is active on the thread, every
//! [`CHECK_EVERY_TOKENS`] tokens it looks at the deadline and the cancel
//! flag, and once either has passed it turns this and every later token into
//! a lexing error, which ends the compilation; [`Watch::stopped`] says why.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rhai::{LexError, Token};

use crate::clock::{self, Instant};
use crate::context::Stop;

/// Tokens between two looks at the clock (a power of two).
const CHECK_EVERY_TOKENS: u32 = 256;

/// The message of the lexing error a stopped compilation fails with; never
/// shown (the run fails with its stop instead).
const STOPPED: &str = "circles-engine: compilation stopped";

struct State {
    deadline: Cell<Option<Instant>>,
    cancel: RefCell<Option<Arc<AtomicBool>>>,
    tokens: Cell<u32>,
    stopped: Cell<Option<Stop>>,
}

thread_local! {
    static STATE: State = const {
        State {
            deadline: Cell::new(None),
            cancel: RefCell::new(None),
            tokens: Cell::new(0),
            stopped: Cell::new(None),
        }
    };
}

/// The engine's token mapper: `token` itself, or a lexing error once the
/// watched compilation must stop.
pub fn on_token(token: Token) -> Token {
    STATE.with(|s| {
        if s.stopped.get().is_none() {
            let Some(deadline) = s.deadline.get() else {
                return token;
            };
            let n = s.tokens.get().wrapping_add(1);
            s.tokens.set(n);
            if n % CHECK_EVERY_TOKENS != 0 {
                return token;
            }
            let cancelled = s
                .cancel
                .borrow()
                .as_ref()
                .is_some_and(|c| c.load(Ordering::Relaxed));
            if cancelled {
                s.stopped.set(Some(Stop::Cancelled));
            } else if clock::now() >= deadline {
                s.stopped.set(Some(Stop::Timeout));
            } else {
                return token;
            }
        }
        Token::LexError(LexError::Runtime(STOPPED.into()).into())
    })
}

/// Watches the compilations of this thread until dropped.
pub struct Watch {
    _private: (),
}

impl Watch {
    /// Stops compilations at `deadline` or once `cancel` is set.
    pub fn start(deadline: Instant, cancel: &Arc<AtomicBool>) -> Watch {
        STATE.with(|s| {
            s.deadline.set(Some(deadline));
            *s.cancel.borrow_mut() = Some(cancel.clone());
            s.tokens.set(0);
            s.stopped.set(None);
        });
        Watch { _private: () }
    }

    /// Why the compilation was stopped, if it was.
    pub fn stopped(&self) -> Option<Stop> {
        STATE.with(|s| s.stopped.get())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = STATE.try_with(|s| {
            s.deadline.set(None);
            s.cancel.borrow_mut().take();
            s.stopped.set(None);
        });
    }
}
