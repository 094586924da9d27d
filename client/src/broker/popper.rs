//! [`BlockingPopper`]: a worker's dedicated connection for `BLMOVE`, with
//! the claim of the moved id pipelined behind it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;

use super::claim::{ClaimKeys, RawClaim};
use super::types::{BrokerOptions, Claim};
use crate::conn::Conn;
use crate::target;
use crate::{Result, keys, scripts};

/// The dedicated connection for `BLMOVE`.
pub struct BlockingPopper {
    conn: Conn,
    queue_key: String,
    keys: ClaimKeys,
    /// `CLIENT ID` of the connection and the connection generation it
    /// belongs to; read again after every reconnect.
    client_id: Mutex<Option<(u64, i64)>>,
    /// Set while a pop is in progress.
    popping: AtomicBool,
}

/// Clears [`BlockingPopper::popping`] however the pop ends.
struct Popping<'a>(&'a AtomicBool);

impl Drop for Popping<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl BlockingPopper {
    /// A popper for `worker_id` on `queue`. `pop_timeout` is the server-side
    /// block of one pop; the connection's response timeout allows for it.
    pub fn new(
        redis_url: &str,
        queue: &str,
        worker_id: &str,
        pop_timeout: Duration,
        options: &BrokerOptions,
    ) -> Result<Self> {
        let conn = Conn::new(
            redis_url,
            "worker blocking pop",
            options.conn_settings(pop_timeout),
        )?;
        Ok(BlockingPopper {
            conn,
            queue_key: keys::tasks(queue),
            keys: ClaimKeys::new(queue, worker_id, options),
            client_id: Mutex::new(None),
            popping: AtomicBool::new(false),
        })
    }

    /// Whether a pop is in progress (see [`super::WorkerBroker::wake`]).
    pub fn is_popping(&self) -> bool {
        self.popping.load(Ordering::SeqCst)
    }

    /// The Redis client id of the connection while a pop is in progress.
    pub(super) fn popping_client_id(&self) -> Option<i64> {
        if !self.is_popping() {
            return None;
        }
        self.client_id
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|(_, id)| id)
    }

    /// Marks a pop in progress and returns the connection, reading its
    /// `CLIENT ID` first after a (re)connect so
    /// [`super::WorkerBroker::wake`] can unblock it.
    async fn start_pop(&self) -> Result<(MultiplexedConnection, Popping<'_>)> {
        let popping = Popping(&self.popping);
        self.popping.store(true, Ordering::SeqCst);
        let (mut conn, generation) = self.conn.get_with_generation().await?;
        let known = matches!(
            *self.client_id.lock().unwrap_or_else(|e| e.into_inner()),
            Some((g, _)) if g == generation
        );
        if !known {
            let id: i64 = redis::cmd("CLIENT")
                .arg("ID")
                .query_async(&mut conn)
                .await
                .map_err(|e| self.conn.fail(e))?;
            *self.client_id.lock().unwrap_or_else(|e| e.into_inner()) = Some((generation, id));
        }
        Ok((conn, popping))
    }

    /// `BLMOVE rhai_tasks:<queue> <processing> RIGHT LEFT <timeout>`, the
    /// oldest id moved into this worker's processing list, with its claim
    /// pipelined right behind (Redis runs it as soon as the pop returns),
    /// saving a round trip. `None` after `timeout` with nothing queued, or
    /// when the moved id was a second copy of one this worker holds (pushed
    /// twice; the copy leaves the list).
    pub async fn pop_and_claim(&self, timeout: Duration) -> Result<Option<Claim>> {
        // Taken before the connection: a switch of the primary after it
        // was checked still ends the wait.
        let mut switches = self.conn.switches();
        // Connected first, so the claim carries the lease token as of the
        // moment it is sent, not as of before a reconnect.
        let (mut conn, _popping) = self.start_pop().await?;
        let fencing = self.keys.fencing();
        let claim_head = scripts::claim_head(
            &self.keys.processing,
            &self.keys.stats,
            &self.keys.worker_id,
            self.keys.ttl_ms,
            &fencing,
        );
        let mut pipe = redis::pipe();
        // Errors come back as values so a `NOSCRIPT` of the claim can be
        // told apart from a failed pop (whose error still surfaces).
        pipe.ignore_errors()
            .cmd("BLMOVE")
            .arg(&self.queue_key)
            .arg(&self.keys.processing)
            .arg("RIGHT")
            .arg("LEFT")
            .arg(timeout.as_secs_f64())
            .invoke_script(&claim_head);
        let popped = tokio::select! {
            popped = pipe.query_async(&mut conn) => popped,
            // The primary changed (a `redis+sentinel://` URL): the old one
            // keeps this wait open but gets no more pushes, and whatever it
            // still holds is discarded when it becomes a replica. Giving up
            // the pop loses nothing the new primary has; the next pop goes
            // there.
            () = target::switched(&mut switches) => return Ok(None),
        };
        let (popped, claim): (redis::Value, redis::Value) =
            popped.map_err(|e| self.conn.fail(e))?;
        popped.extract_error().map_err(|e| self.conn.fail(e))?;
        let claim: RawClaim = match self.conn.script_reply(claim)? {
            Some(claim) => claim,
            // Redis lost its script cache (restart, SCRIPT FLUSH): claim
            // again, loading the script. The claim reads the head of the
            // processing list, where the pop put the id.
            None => claim_head
                .invoke_async(&mut conn)
                .await
                .map_err(|e| self.conn.fail(e))?,
        };
        let mut claim = self.keys.settle(&self.conn, claim).await?;
        ClaimKeys::sent(claim.as_mut_slice(), &fencing);
        Ok(claim)
    }
}
