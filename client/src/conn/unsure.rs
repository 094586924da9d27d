//! Requests that went out and whose fate may stay unknown: a broken
//! connection or a reply that timed out, told apart from a refusal; and a
//! connection put in doubt before one goes out on it.

use std::sync::{Arc, Mutex};

use super::{Conn, State};
use crate::{Error, Result};

/// Puts a [`Conn`]'s connection in doubt: its next request first sends a
/// `PING` on it, and connects afresh when that finds it dead. A client's
/// listener calls it when its own connection to the same Redis ends:
/// Redis may have died or restarted, and a submit sent on a dead command
/// connection fails without telling whether it went out. A connection
/// still alive (only the listener's was cut) is kept.
#[derive(Clone)]
pub(crate) struct Doubt(Arc<Mutex<State>>);

impl Doubt {
    pub(crate) fn now(&self) {
        let mut state = self.0.lock().unwrap_or_else(|e| e.into_inner());
        state.in_doubt = state.conn.is_some();
    }
}

impl Conn {
    /// A handle that puts this connection in doubt when another one to the
    /// same Redis is lost (see [`Doubt`]).
    pub(crate) fn doubter(&self) -> Doubt {
        Doubt(Arc::clone(&self.state))
    }

    /// [`Conn::query_pipe`], telling apart a pipeline that went out and
    /// whose fate is unknown: `Ok(Err(_))`. Either the connection it went
    /// out on was broken (closed or reset under it, as when Redis restarted
    /// while the connection idled: it ran in Redis or never will, and the
    /// next request connects afresh), or its reply did not come within the
    /// response timeout (Redis stopped or paused: it may still run when
    /// Redis goes on).
    pub(crate) async fn query_pipe_or_broken<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<Result<T, Unsure>> {
        let mut conn = self.get().await?;
        self.unsure(pipe.query_async(&mut conn).await)
    }

    /// A reply, or why a request that went out has none: [`Unsure`] when
    /// its fate is unknown, else the error.
    fn unsure<T>(&self, reply: redis::RedisResult<T>) -> Result<Result<T, Unsure>> {
        match reply {
            Ok(value) => Ok(Ok(value)),
            Err(e) if e.is_timeout() => Ok(Err(Unsure::TimedOut(self.fail(e)))),
            Err(e) if e.is_connection_dropped() => Ok(Err(Unsure::Broken(self.fail(e)))),
            Err(e) => Err(self.fail(e)),
        }
    }

    /// [`Conn::invoke`], telling apart a script that went out and whose
    /// fate is unknown, as [`Conn::query_pipe_or_broken`] does.
    pub(crate) async fn invoke_or_broken<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<Result<T, Unsure>> {
        let mut conn = self.get().await?;
        self.unsure(invocation.invoke_async(&mut conn).await)
    }
}

/// A pipeline sent whose fate is unknown (see [`Conn::query_pipe_or_broken`]).
pub(crate) enum Unsure {
    /// The connection broke under it: it ran, or never will.
    Broken(Error),
    /// Its reply timed out: it may still run later.
    TimedOut(Error),
}
