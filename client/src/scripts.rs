//! The Lua scripts of the protocol. Each state change is one script, so it is
//! atomic: no reader ever sees a half-written task, and a crash between two
//! steps cannot happen inside one. Every script that ends a task starts with
//! the helpers of `scripts/finish.rs`, every one that claims with the claim
//! function of `scripts/claim.rs`.

use std::sync::{Arc, LazyLock};

use redis::{Script, ScriptInvocation};

use crate::broker::Carried;
use crate::keys;

mod batch;
mod claim;
mod finish;
mod lease;

pub(crate) use batch::{Finished, Then, claim_batch, finish_batch, held};
use claim::CLAIM;
use finish::FINISH;
pub(crate) use lease::{
    acquire_lease, forget_unchanged, heartbeats_of, release_lease, renew_lease,
};

/// Ends a task in this worker's processing list that it cannot even read
/// (its id or script is not UTF-8) as `error`, kind `invalid`, with the
/// reason — unless it is not this worker's to end (ended already, or
/// another worker's): then the id only leaves the processing list, as in
/// `CLAIM`. KEYS: processing list, stats. ARGV: id, details prefix, worker
/// id, now, ttl, reason. Returns 1 when it ended the task.
static END_UNREADABLE: LazyLock<Script> = LazyLock::new(|| {
    let finish = FINISH.as_str();
    Script::new(&format!(
        "{finish}
local dkey = ARGV[2] .. ARGV[1]
local h = read_task(dkey, 'status', 'workerId', 'replyTo', 'createdAt',
  'deliveredTtl', 'deadline', 'cancel')
if not h or h[1] == 'completed' or h[1] == 'error'
    or (h[1] == 'processing' and h[2] ~= ARGV[3]) then
  redis.call('LREM', KEYS[1], 1, ARGV[1])
  return 0
end
local fields = {{ 'status', 'error', 'errorKind', KIND_INVALID, 'error', ARGV[6] }}
if not h[4] then fields[#fields + 1] = 'createdAt'; fields[#fields + 1] = ARGV[4] end
-- As a claim would: the end writes a whole outcome of its own.
redis.call('HDEL', dkey, unpack(OUTCOME_FIELDS))
return counted(KEYS[2], function(stats)
  finish(dkey, ARGV[1], KEYS[1], stats, ARGV[4], ARGV[5], fields, nil, h[3],
    delivered_ttl(h[5], h[6], h[7], ARGV[4], ARGV[5]))
  return 1
end)"
    ))
});

/// Asks for a task to be cancelled: records the reason in its `cancel`
/// field (the first reason stays) while it is `pending` or `processing`.
/// KEYS: details. ARGV: reason. Returns the status found (`false`: no task).
static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local s = redis.call('HGET', KEYS[1], 'status')
if s == 'pending' or s == 'processing' then
  redis.call('HSETNX', KEYS[1], 'cancel', ARGV[1])
end
return s
"#,
    )
});

pub(crate) fn cancel(task_id: &str, reason: &str) -> ScriptInvocation<'static> {
    let mut inv = CANCEL.prepare_invoke();
    inv.key(keys::task_details(task_id)).arg(reason);
    inv
}

/// A submit sent again after its first try failed on a broken connection,
/// which may or may not have reached Redis: writes the task hash and pushes
/// its id only when the hash does not exist, so the task is queued once.
/// KEYS: details, queue. ARGV: id, then the hash's field/value pairs.
/// Returns 1 when it wrote, 0 when the first try had.
static SUBMIT_AGAIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
-- The push first: one a queue key of another type refuses leaves no hash
-- (a script's error undoes nothing it wrote), and no one sees the order.
redis.call('LPUSH', KEYS[2], ARGV[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
return 1
"#,
    )
});

pub(crate) fn submit_again(
    queue: &str,
    task_id: &str,
    hash: &[(&str, String)],
) -> ScriptInvocation<'static> {
    let mut inv = SUBMIT_AGAIN.prepare_invoke();
    inv.key(keys::task_details(task_id))
        .key(keys::tasks(queue))
        .arg(task_id);
    for (field, value) in hash {
        inv.arg(*field).arg(value.as_str());
    }
    inv
}

/// KEYS: processing list, stats, queue, owner key. ARGV: id, details
/// prefix, worker id, now, ttl, lease (`''`: none). A worker whose
/// lease was taken gives the id back (see `unclaim`).
static CLAIM_ONE: LazyLock<Script> = LazyLock::new(|| {
    let finish = FINISH.as_str();
    Script::new(&format!(
        "{finish}{CLAIM}
if fenced(KEYS[4], ARGV[6]) then return unclaim(ARGV[1], KEYS[1], KEYS[3], ARGV[2], ARGV[3]) end
return counted(KEYS[2], function(stats)
  return claim(ARGV[1], KEYS[1], stats, ARGV[2], ARGV[3], ARGV[4], ARGV[5])
end)"
    ))
});

/// Gives back a task this worker claimed but may not run (its lease was
/// lost before the script started; see `unclaim`). KEYS: processing list,
/// queue. ARGV: id, details prefix, worker id.
static GIVE_BACK: LazyLock<Script> = LazyLock::new(|| {
    let finish = FINISH.as_str();
    Script::new(&format!(
        "{finish}{CLAIM}return unclaim(ARGV[1], KEYS[1], KEYS[2], ARGV[2], ARGV[3])"
    ))
});

pub(crate) fn give_back(queue: &str, worker: &str, task_id: &str) -> ScriptInvocation<'static> {
    let mut inv = GIVE_BACK.prepare_invoke();
    inv.key(keys::processing(queue, worker))
        .key(keys::tasks(queue))
        .arg(task_id)
        .arg(keys::TASK_DETAILS_PREFIX)
        .arg(worker);
    inv
}

/// Claims the newest id of a processing list; sent pipelined right behind a
/// `BLMOVE` on the blocking connection, so the moved id is claimed without
/// another round trip. KEYS: processing list, stats, queue, owner key. ARGV:
/// details prefix, worker id, ttl, lease (`''`: none); the time is
/// Redis' own (`TIME`), as the pop may have blocked long. `false` when the
/// list is empty (the pop timed out) or its head is an id this worker
/// already holds: the only copy of that id stays (the pop timed out and the
/// head is a task in hand), a second copy leaves the list (the pop moved an
/// id pushed twice), so the task runs once. A worker whose lease was taken
/// gives the moved id back (see `unclaim`).
/// Sent by `EVALSHA` (the body is a few KiB); after `NOSCRIPT` (a Redis
/// restart or `SCRIPT FLUSH`) the claim is redone with [`claim_head`], which
/// loads it.
pub(crate) static CLAIM_HEAD: LazyLock<Script> = LazyLock::new(|| {
    let finish = FINISH.as_str();
    Script::new(&format!(
        "{finish}{CLAIM}
local id = redis.call('LINDEX', KEYS[1], 0)
if not id then return false end
-- The head is an id this worker holds: a copy of it beyond the first goes.
local function held()
  if #redis.call('LPOS', KEYS[1], id, 'COUNT', 2) > 1 then
    redis.call('LREM', KEYS[1], 1, id)
  end
  return false
end
if fenced(KEYS[4], ARGV[4]) then
  local h = read_task(ARGV[1] .. id, 'status', 'workerId') or {{}}
  if h[1] == 'processing' and h[2] == ARGV[2] then return held() end
  return unclaim(id, KEYS[1], KEYS[3], ARGV[1], ARGV[2])
end
-- The pop may have blocked a while since the worker sent this: take the
-- time now, from Redis' clock.
local t = redis.call('TIME')
local now = string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000))
return counted(KEYS[2], function(stats)
  return claim(id, KEYS[1], stats, ARGV[1], ARGV[2], now, ARGV[3], true) or held()
end)"
    ))
});

/// The keys and lease of a claim's lease check: the queue (where a fenced
/// worker gives an id back), the owner key, and the worker's lease as it was
/// when the claim was sent.
pub(crate) struct Fencing<'a> {
    pub(crate) tasks: &'a str,
    pub(crate) owner: &'a str,
    /// `None`: a worker without a fence (claims are not fenced); `Some(None)`:
    /// a fence that holds no lease (claims are refused).
    pub(crate) carried: Option<Option<Arc<Carried>>>,
}

impl Fencing<'_> {
    /// The lease argument of the claim scripts: the owner key's value the
    /// lease reads as; `''` without a fence; `0`, which no owner key holds
    /// (its values hold `|`), for a fence without a lease.
    pub(crate) fn lease(&self) -> &str {
        match &self.carried {
            None => "",
            Some(None) => "0",
            Some(Some(c)) => &c.value,
        }
    }

    /// The token of the lease the claim carried (0: none).
    pub(crate) fn token(&self) -> u64 {
        self.carried
            .as_ref()
            .and_then(Option::as_ref)
            .map_or(0, |c| c.lease.token)
    }
}

pub(crate) fn claim_head(
    processing_key: &str,
    stats_key: &str,
    worker: &str,
    ttl_ms: u64,
    fencing: &Fencing<'_>,
) -> ScriptInvocation<'static> {
    let mut inv = CLAIM_HEAD.prepare_invoke();
    inv.key(processing_key)
        .key(stats_key)
        .key(fencing.tasks)
        .key(fencing.owner)
        .arg(keys::TASK_DETAILS_PREFIX)
        .arg(worker)
        .arg(ttl_ms)
        .arg(fencing.lease());
    inv
}

/// KEYS: workers set, queue, stats, dead worker's processing list, its heartbeat.
/// ARGV: dead worker id, details prefix, now, ttl, message.
/// Returns `{lost, requeued}`, or -1 when the worker is alive after all.
static REAP: LazyLock<Script> = LazyLock::new(|| {
    let finish = FINISH.as_str();
    Script::new(&format!(
        "{finish}
if redis.call('EXISTS', KEYS[5]) == 1 then return -1 end
return counted(KEYS[3], function(stats)
  local lost, requeued = 0, 0
  -- A processing key of another type (a third party's, or edited by hand)
  -- is none of ours to resolve or delete: it is left as it is, and the
  -- reap goes on to the queue's other workers.
  local ids = redis.pcall('LRANGE', KEYS[4], 0, -1)
  if ids.err then return {{ 0, 0 }} end
  for _, id in ipairs(ids) do
    local dkey = ARGV[2] .. id
    local h = read_task(dkey, 'status', 'workerId', 'retry', 'replyTo', 'deliveredTtl',
      'deadline', 'cancel') or {{}}
    if h[1] == 'processing' and h[2] == ARGV[1] then
      -- A retry task whose submitter cancelled it, or whose deadline has
      -- passed, is not run again: it ends as lost (it may have run), never
      -- as cancelled or expired 'before it ran'.
      local over = h[6] and tonumber(h[6]) and tonumber(ARGV[3]) > tonumber(h[6])
      if h[3] == '1' and not h[7] and not over then
        redis.call('HSET', dkey, 'status', 'pending', 'updatedAt', ARGV[3], 'lostAt', ARGV[3])
        redis.call('HDEL', dkey, 'workerId', 'workerQueue', 'startedAt')
        redis.call('RPUSH', KEYS[2], id)
        requeued = requeued + 1
      else
        finish(dkey, id, KEYS[4], stats, ARGV[3], ARGV[4], {{ 'status', 'error',
          'errorKind', KIND_WORKER_LOST, 'error', ARGV[5] }}, nil, h[4],
          delivered_ttl(h[5], h[6], h[7], ARGV[3], ARGV[4]))
        lost = lost + 1
      end
    elseif h[1] ~= 'completed' and h[1] ~= 'error' and not (h[1] == 'processing' and h[2]) then
      -- Taken off the queue but never claimed: it never ran, so it goes back
      -- to the head of the queue, as `unclaim` puts it back (an id without a
      -- hash, a `processing` without a worker or a status of its own too:
      -- its claim then ends it as `invalid`, saying why). One another worker
      -- holds is that worker's.
      redis.call('RPUSH', KEYS[2], id)
      requeued = requeued + 1
    end
  end
  redis.call('DEL', KEYS[4])
  redis.call('SREM', KEYS[1], ARGV[1])
  return {{ lost, requeued }}
end)"
    ))
});

/// The counters of queues, read in one script. KEYS: queue, stats, workers
/// set, owner key of each queue in turn. ARGV: processing-list prefix of
/// each queue. Returns `{queue length, processed, failed, in flight, last
/// heartbeat ms or false, lease or false}` per queue, in order.
static STATS_MANY: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- A stored number as a count: a value that is none, or is negative (an
-- operator's edit; the finish leaves such a counter as it is), reads as
-- `none`, never as a hole that would cut the row short.
local function count(v, none)
  local n = tonumber(v)
  if not n or n ~= n or n < 0 or n >= 2^53 then return none end
  return math.floor(n)
end
-- A key of another type than the protocol's (a third party's, or edited by
-- hand) reads as absent, so it too hides no other queue's row.
local function read(absent, ...)
  local r = redis.pcall(...)
  if type(r) == 'table' and r.err then return absent end
  return r
end
local out = {}
for i = 1, #ARGV do
  local q, st, ws, ow = KEYS[4 * i - 3], KEYS[4 * i - 2], KEYS[4 * i - 1], KEYS[4 * i]
  local s = read({}, 'HMGET', st, 'processed', 'failed', 'lastHeartbeat')
  local inflight = 0
  for _, w in ipairs(read({}, 'SMEMBERS', ws)) do
    inflight = inflight + read(0, 'LLEN', ARGV[i] .. w)
  end
  out[i] = { read(0, 'LLEN', q), count(s[1], 0), count(s[2], 0), inflight,
    count(s[3], false), read(false, 'GET', ow) }
end
return out
"#,
    )
});

pub(crate) fn stats_many(queues: &[&str]) -> ScriptInvocation<'static> {
    let mut inv = STATS_MANY.prepare_invoke();
    for queue in queues {
        inv.key(keys::tasks(queue))
            .key(keys::stats(queue))
            .key(keys::workers(queue))
            .key(keys::queue_owner(queue))
            .arg(keys::processing(queue, ""));
    }
    inv
}

pub(crate) fn end_unreadable(
    processing_key: &str,
    stats_key: &str,
    worker: &str,
    raw_id: &[u8],
    now: u64,
    ttl_ms: u64,
    reason: &str,
) -> ScriptInvocation<'static> {
    let mut inv = END_UNREADABLE.prepare_invoke();
    inv.key(processing_key)
        .key(stats_key)
        .arg(raw_id)
        .arg(keys::TASK_DETAILS_PREFIX)
        .arg(worker)
        .arg(now)
        .arg(ttl_ms)
        .arg(reason);
    inv
}

pub(crate) fn claim_one(
    queue: &str,
    worker: &str,
    task_id: &str,
    now: u64,
    ttl_ms: u64,
    fencing: &Fencing<'_>,
) -> ScriptInvocation<'static> {
    let mut inv = CLAIM_ONE.prepare_invoke();
    inv.key(keys::processing(queue, worker))
        .key(keys::stats(queue))
        .key(fencing.tasks)
        .key(fencing.owner)
        .arg(task_id)
        .arg(keys::TASK_DETAILS_PREFIX)
        .arg(worker)
        .arg(now)
        .arg(ttl_ms)
        .arg(fencing.lease());
    inv
}

/// The notification of a finished task: its terminal fields plus id and
/// updatedAt, as the listener parses it (see `fields::outcome`).
fn notification(task_id: &str, now: u64, fields: &[(&str, String)]) -> String {
    let mut map = serde_json::Map::with_capacity(fields.len() + 2);
    map.insert(crate::fields::ID.to_owned(), task_id.into());
    map.insert(crate::fields::UPDATED_AT.to_owned(), now.to_string().into());
    for (name, value) in fields {
        map.insert((*name).to_owned(), value.as_str().into());
    }
    serde_json::Value::Object(map).to_string()
}

pub(crate) fn reap(
    queue: &str,
    dead: &str,
    now: u64,
    ttl_ms: u64,
    message: &str,
) -> ScriptInvocation<'static> {
    let mut inv = REAP.prepare_invoke();
    inv.key(keys::workers(queue))
        .key(keys::tasks(queue))
        .key(keys::stats(queue))
        .key(keys::processing(queue, dead))
        .key(keys::heartbeat(queue, dead))
        .arg(dead)
        .arg(keys::TASK_DETAILS_PREFIX)
        .arg(now)
        .arg(ttl_ms)
        .arg(message);
    inv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_submit_sent_again_writes_only_when_its_first_try_did_not() {
        let server = testkit::RedisServer::start();
        let mut conn = redis::Client::open(server.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let hash = [
            ("script", "40 + 2".to_string()),
            ("status", "pending".to_string()),
        ];
        let wrote: i64 = submit_again("q", "t1", &hash)
            .invoke_async(&mut conn)
            .await
            .expect("first");
        assert_eq!(wrote, 1, "the first try did not land: written");
        // A worker took the task meanwhile: trying again undoes nothing.
        let moved: Option<String> = redis::cmd("LMOVE")
            .arg(keys::tasks("q"))
            .arg("plist")
            .arg("RIGHT")
            .arg("LEFT")
            .query_async(&mut conn)
            .await
            .expect("lmove");
        assert_eq!(moved.as_deref(), Some("t1"));
        let _: () = redis::cmd("HSET")
            .arg(keys::task_details("t1"))
            .arg("status")
            .arg("processing")
            .query_async(&mut conn)
            .await
            .expect("hset");
        let wrote: i64 = submit_again("q", "t1", &hash)
            .invoke_async(&mut conn)
            .await
            .expect("again");
        assert_eq!(wrote, 0);
        let (status, queued): (String, i64) = redis::pipe()
            .cmd("HGET")
            .arg(keys::task_details("t1"))
            .arg("status")
            .cmd("LLEN")
            .arg(keys::tasks("q"))
            .query_async(&mut conn)
            .await
            .expect("read");
        assert_eq!((status.as_str(), queued), ("processing", 0));
    }
}
