//! A reconnecting multiplexed Redis connection.
//!
//! Requests share one multiplexed connection (pipelined, cheap to clone). When
//! a request fails at the connection level the connection is dropped; the next
//! request reconnects, but not before a capped exponential backoff has passed,
//! so an outage costs one connection attempt per backoff step, not one per
//! request. The outage is logged once when it starts and once when it ends.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, RedisError};

use crate::clock::RedisClock;
use crate::target::Target;
use crate::{Error, RedisUrl, Result};

mod closed;
mod first;
mod states;
mod unsure;

pub(crate) use unsure::{Doubt, Unsure};

pub(crate) use closed::MAXCLIENTS;
pub use states::Refusal;
pub(crate) use states::{
    KEY_TYPE_REFUSAL, is_connection_error, names_a_demoted_primary, names_a_passing_state,
    refusing_state,
};

/// Timeouts and backoff of a [`Conn`].
#[derive(Debug, Clone)]
pub(crate) struct ConnSettings {
    pub connect_timeout: Duration,
    /// `None`: requests never time out (only for blocking commands whose own
    /// timeout bounds them).
    pub response_timeout: Option<Duration>,
    pub max_backoff: Duration,
    /// `Some`: a `rediss://` URL trusts this CA instead of the system's roots.
    pub ca: Option<crate::RedisCa>,
}

const FIRST_BACKOFF: Duration = Duration::from_millis(50);

/// Connections of this process made again after one was lost or an attempt
/// failed (see [`reconnects`]).
static RECONNECTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many times, process-wide, a connection to Redis was made again after
/// an earlier one of the same connection was lost or an attempt failed: task
/// clients, workers and blocking pops alike. For metrics.
pub fn reconnects() -> u64 {
    RECONNECTS.load(std::sync::atomic::Ordering::Relaxed)
}

#[derive(Default)]
struct State {
    conn: Option<MultiplexedConnection>,
    /// While set, no new connection is attempted before this instant.
    retry_at: Option<Instant>,
    backoff: Duration,
    /// Set while an outage is in progress (logged once).
    down_since: Option<Instant>,
    /// Bumped on every new connection, so a caller can tell a reconnect.
    generation: u64,
    /// The target's switch count when the connection was made: a
    /// connection made before a switch of the primary is not used again.
    switches: u64,
    /// Set by [`Doubt`]: the next request checks the connection first.
    in_doubt: bool,
    /// Why the last attempt failed, while it backs off: each request
    /// refused meanwhile names it (a wrong password, a refused connection),
    /// so the status table and `/readyz` say why, not only that it waits.
    last_failure: Option<String>,
}

/// A connection that reconnects on demand. See the module docs.
pub(crate) struct Conn {
    /// Resolved again at every connect (a Sentinel URL follows a failover).
    target: Arc<Target>,
    /// URL without credentials, for messages.
    url: String,
    /// What the connection is for, for log lines.
    role: &'static str,
    settings: ConnSettings,
    /// Shared with [`closed`]'s list of this process's connections.
    state: Arc<Mutex<State>>,
    /// Serialises connection attempts.
    connecting: tokio::sync::Mutex<()>,
    /// The Redis' clock, measured at every connect.
    clock: Arc<RedisClock>,
}

impl Conn {
    pub(crate) fn new(url: &str, role: &'static str, settings: ConnSettings) -> Result<Conn> {
        let url = RedisUrl::parse(url).map_err(|e| match e {
            Error::InvalidUrl { url, reason } => Error::Unavailable {
                url,
                reason: format!("invalid redis url: {reason}"),
            },
            other => other,
        })?;
        let target =
            Target::shared(&url, settings.ca.as_ref()).map_err(|e| Error::Unavailable {
                url: url.to_string(),
                reason: format!("invalid redis url: {e}"),
            })?;
        Ok(Conn::to(target, url.to_string(), role, settings))
    }

    /// A connection to `target`, not connected yet.
    fn to(target: Arc<Target>, url: String, role: &'static str, settings: ConnSettings) -> Conn {
        let state = Arc::new(Mutex::new(State::default()));
        closed::join(&url, &state);
        Conn {
            target,
            clock: RedisClock::of(&url),
            url,
            role,
            settings,
            state,
            connecting: tokio::sync::Mutex::new(()),
        }
    }

    /// Another connection to the same place with the same settings (the
    /// target, and so a Sentinel URL's failover watch, is shared); it
    /// connects on first use.
    pub(crate) fn sibling(&self) -> Conn {
        Conn::to(
            Arc::clone(&self.target),
            self.url.clone(),
            self.role,
            self.settings.clone(),
        )
    }

    /// The URL without credentials.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// Where this connection goes, for another connection to the same place.
    pub(crate) fn target(&self) -> &Arc<Target> {
        &self.target
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock leaves plain data behind; keep going.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live connection, connecting if needed. Fails fast with
    /// `Unavailable` while a backoff is running.
    /// Ms since the Unix epoch by this Redis' clock (see [`RedisClock`]):
    /// what every time written into a task or compared with its deadline
    /// is read from.
    pub(crate) fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// Measures this Redis' clock again with a `TIME` of its own (a
    /// beat's transaction sends it beside, not inside: a user the ACL
    /// refuses `TIME` would have the whole transaction aborted). Refused
    /// or failed, the clock keeps its last measure; the request sent
    /// beside it reports the failure.
    pub(crate) async fn measure_clock(&self) {
        if let Ok(mut conn) = self.get().await {
            self.clock.measure(&mut conn).await;
        }
    }

    pub(crate) async fn get(&self) -> Result<MultiplexedConnection> {
        Ok(self.get_with_generation().await?.0)
    }

    /// [`Conn::get`] plus the connection's generation, which changes with
    /// every reconnect.
    pub(crate) async fn get_with_generation(&self) -> Result<(MultiplexedConnection, u64)> {
        if let Some((live, in_doubt)) = self.live() {
            if !in_doubt {
                return Ok(live);
            }
            // Only a connection found gone is dropped: a refusal or a
            // timeout says nothing new of it (the request meets the same).
            let mut probe = live.0.clone();
            match redis::cmd("PING").query_async::<()>(&mut probe).await {
                Err(e) if e.is_connection_dropped() => {
                    let _gone = self.fail(e);
                }
                _ => return Ok(live),
            }
        }
        let _connecting = self.connecting.lock().await;
        // Made by another request meanwhile (so not in doubt).
        if let Some((live, _)) = self.live() {
            return Ok(live);
        }
        let switches = self.target.switch_count();
        {
            let state = self.lock();
            if let Some(at) = state.retry_at
                && Instant::now() < at
            {
                let why = state.last_failure.as_deref().unwrap_or("unknown");
                return Err(self.unavailable(&format!(
                    "reconnecting after a failure (backing off); it failed with: {why}"
                )));
            }
        }
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(self.settings.response_timeout);
        let attempt = tokio::time::timeout(
            self.settings.connect_timeout + Duration::from_millis(100),
            async {
                let client = self.target.resolve().await.map_err(|e| e.to_string())?;
                let made = async {
                    let mut conn = client
                        .get_multiplexed_async_connection_with_config(&config)
                        .await
                        .map_err(|e| e.to_string())?;
                    first::run(&mut conn, &self.clock).await?;
                    Ok::<_, String>(conn)
                };
                match made.await {
                    Ok(conn) => Ok(conn),
                    Err(reason) => Err(closed::explain(&client, &self.url, reason).await),
                }
            },
        )
        .await;
        let mut state = self.lock();
        match attempt {
            Ok(Ok(conn)) => {
                if state.generation > 0 || state.down_since.is_some() {
                    RECONNECTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                if let Some(since) = state.down_since.take() {
                    log::info!(
                        "redis at {} is reachable again ({}), after {:.1?}",
                        self.url,
                        self.role,
                        since.elapsed()
                    );
                }
                state.retry_at = None;
                state.backoff = Duration::ZERO;
                state.last_failure = None;
                state.generation += 1;
                state.switches = switches;
                state.conn = Some(conn.clone());
                state.in_doubt = false;
                Ok((conn, state.generation))
            }
            Ok(Err(reason)) => {
                self.note_down(&mut state, &reason);
                Err(self.unavailable(&reason))
            }
            Err(_) => {
                let reason = format!("connecting took over {:?}", self.settings.connect_timeout);
                self.note_down(&mut state, &reason);
                Err(self.unavailable(&reason))
            }
        }
    }

    /// The connection, unless there is none or it was made before the
    /// latest switch of the primary (then it is dropped); and whether it is
    /// in doubt (see [`Doubt`]), taken under the same lock, so one request
    /// checks it.
    fn live(&self) -> Option<((MultiplexedConnection, u64), bool)> {
        let mut state = self.lock();
        let conn = state.conn.clone()?;
        if state.switches == self.target.switch_count() {
            let in_doubt = std::mem::take(&mut state.in_doubt);
            return Some(((conn, state.generation), in_doubt));
        }
        // One info line per event is logged by the target; one per
        // connection would be hundreds.
        log::debug!(
            "the primary of redis at {} changed; reconnecting ({})",
            self.url,
            self.role
        );
        state.conn = None;
        None
    }

    /// A receiver that sees every later switch of the primary (`None` for
    /// a plain URL); see [`crate::target::switched`].
    pub(crate) fn switches(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.target.switches()
    }

    fn note_down(&self, state: &mut State, reason: &str) {
        state.conn = None;
        state.backoff = if state.backoff.is_zero() {
            FIRST_BACKOFF
        } else {
            (state.backoff * 2).min(self.settings.max_backoff)
        };
        state.retry_at = Some(Instant::now() + state.backoff);
        state.last_failure = Some(reason.to_owned());
        if state.down_since.is_none() {
            state.down_since = Some(Instant::now());
            log::warn!(
                "redis at {} is unavailable ({}): {reason}; retrying with backoff up to {:?}",
                self.url,
                self.role,
                self.settings.max_backoff
            );
        } else {
            log::debug!(
                "redis at {} is still unavailable ({}): {reason}; next attempt in {:?}",
                self.url,
                self.role,
                state.backoff
            );
        }
    }

    /// Turns a failed request into our error, dropping the connection when the
    /// failure was at the connection level.
    pub(crate) fn fail(&self, err: RedisError) -> Error {
        if names_a_demoted_primary(&err.to_string()) && !is_connection_error(&err) {
            // The server is (or is turning into) a replica: connect again,
            // asking the sentinels, after a short backoff; a promotion takes
            // a moment, and a retry at once would be refused again.
            // Only the first refusal on a connection counts: the requests in
            // flight with it are refused together.
            let reason = err.to_string();
            let mut state = self.lock();
            if state.conn.is_some() {
                self.note_down(&mut state, &reason);
            }
            self.unavailable(&reason)
        } else if is_connection_error(&err) {
            let reason = err.to_string();
            let mut state = self.lock();
            if state.conn.is_some() {
                // The first failure after a good connection retries at once.
                state.conn = None;
                state.backoff = Duration::ZERO;
                state.retry_at = None;
                if state.down_since.is_none() {
                    state.down_since = Some(Instant::now());
                    log::warn!(
                        "lost the connection to redis at {} ({}): {reason}; reconnecting",
                        self.url,
                        self.role
                    );
                }
            }
            self.unavailable(&reason)
        } else if matches!(
            err.retry_method(),
            redis::RetryMethod::WaitAndRetry | redis::RetryMethod::RetryImmediately
        ) || names_a_passing_state(&err.to_string())
            || refusing_state(&err.to_string()).is_some()
        {
            // For example LOADING while a restarted Redis reads its AOF,
            // also when it comes nested in an aborted MULTI/EXEC; or writes
            // refused until its operator frees memory or disk.
            self.unavailable(&err.to_string())
        } else {
            Error::Protocol(format!("redis refused a request: {err}"))
        }
    }

    pub(crate) fn unavailable(&self, reason: &str) -> Error {
        Error::Unavailable {
            url: self.url.clone(),
            reason: reason.to_owned(),
        }
    }

    /// Runs `f` on the connection, mapping errors.
    pub(crate) async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T> {
        let mut conn = self.get().await?;
        cmd.query_async(&mut conn).await.map_err(|e| self.fail(e))
    }

    /// [`Conn::query`] for a request that may run twice (a read, or a write
    /// that changes nothing the second time): one that failed on a
    /// connection that broke under it (Redis restarted while it idled) is
    /// sent once more, on a fresh connection, so a caller does not get an
    /// error from a Redis that is up.
    pub(crate) async fn query_idempotent<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T> {
        self.once_more(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Sends a request by `send` on the connection, and once more on a
    /// fresh one when the first broke under it (see
    /// [`Conn::query_idempotent`]).
    async fn once_more<T, F, Fut>(&self, send: F) -> Result<T>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        match send(self.get().await?).await {
            Err(e) if e.is_connection_dropped() => {
                let _broken = self.fail(e);
                send(self.get().await?).await.map_err(|e| self.fail(e))
            }
            other => other.map_err(|e| self.fail(e)),
        }
    }

    /// Runs a pipeline on the connection, mapping errors.
    pub(crate) async fn query_pipe<T: redis::FromRedisValue>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T> {
        let mut conn = self.get().await?;
        pipe.query_async(&mut conn).await.map_err(|e| self.fail(e))
    }

    /// [`Conn::invoke`] for a script that publishes notifications, so that
    /// they leave Redis before its own reply does. Redis writes its replies
    /// at the end of an event-loop turn, to the clients in the reverse order
    /// in which each first got one during the turn: the subscribers of a
    /// script's `PUBLISH` would get theirs after the script's caller. A
    /// `PING` pipelined in front gives this connection its first reply
    /// before the script runs, so the notifications go out first and a
    /// waiter on another connection is not kept waiting behind this reply.
    pub(crate) async fn invoke_publishing<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.get().await?;
        let mut pipe = redis::pipe();
        // Errors come back as values, so that a `NOSCRIPT` is told apart.
        pipe.ignore_errors().cmd("PING").invoke_script(invocation);
        // The `PING`'s own answer does not matter: refused (an ACL without
        // it), it still ran first, and the script's reply decides.
        let (_pong, reply): (redis::Value, redis::Value) = pipe
            .query_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))?;
        match self.script_reply(reply)? {
            Some(value) => Ok(value),
            // The script did not run: this loads it and runs it.
            None => invocation
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.fail(e)),
        }
    }

    /// The reply of a script sent by `EVALSHA` in a pipeline whose errors
    /// come back as values: `None` for `NOSCRIPT` (Redis lost its script
    /// cache, a restart or `SCRIPT FLUSH`, and the script did not run; the
    /// caller runs it again with `invoke_async`, which loads it), else the
    /// value or the error.
    pub(crate) fn script_reply<T: redis::FromRedisValue>(
        &self,
        reply: redis::Value,
    ) -> Result<Option<T>> {
        let value = match reply {
            redis::Value::ServerError(e) if e.kind() == Some(redis::ServerErrorKind::NoScript) => {
                return Ok(None);
            }
            other => other.extract_error().map_err(|e| self.fail(e))?,
        };
        redis::from_redis_value(value)
            .map(Some)
            .map_err(|e| self.fail(e.into()))
    }

    /// [`Conn::invoke`] for a script that may run twice; see
    /// [`Conn::query_idempotent`].
    pub(crate) async fn invoke_idempotent<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        self.once_more(|mut conn| async move { invocation.invoke_async(&mut conn).await })
            .await
    }

    /// Invokes a Lua script (EVALSHA, loading it after a Redis restart).
    pub(crate) async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        let mut conn = self.get().await?;
        invocation
            .invoke_async(&mut conn)
            .await
            .map_err(|e| self.fail(e))
    }
}
