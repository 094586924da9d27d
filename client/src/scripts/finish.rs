//! The Lua helpers every script that ends a task starts with: `read_task`
//! (a task's fields, or nothing when its key is not a hash), `delivered_ttl`,
//! `shown_reason` (a cancel reason fit for a message), `counted` (counters
//! written once per script) and `finish`.
//!
//! `finish` (prepended to the scripts that end a task; the
//! caller passes the task's `replyTo`, read in the same `HMGET` as the fields
//! it checks, so ending a task costs no extra `redis.call`): writes
//! the terminal fields plus `updatedAt`, removes the id from the processing
//! list (unless the caller passes none and removes it itself), counts it
//! `processed` or `failed` in the tally `stats` (see `counted`), publishes
//! the fields (plus `id`) as a
//! JSON object on the task's `replyTo` channel (if any), and sets the TTL:
//! the delivered TTL when the task asked for one (`delivered`, from
//! `delivered_ttl`) and the notification reached a subscriber, the result
//! TTL otherwise (see `fields::DELIVERED_TTL`). `fields` always starts with
//! `status`. The worker passes the JSON ready-made; the protocol's own
//! verdicts (expired, worker lost) build it with `cjson`.

use std::sync::LazyLock;

use crate::{FailureKind, Role, fields};

/// The failure kinds the scripts write, as Lua locals named after
/// [`FailureKind::as_str`] (the wire names live there alone), the role
/// names as [`Role::as_str`] gives them, the processing lists' key prefix
/// as `PROCESSING_PREFIX`, the outcome fields
/// ([`fields::OUTCOME`]) as `OUTCOME_FIELDS`, then the helper `finish`. Every
/// script that ends a task starts with this.
pub(super) static FINISH: LazyLock<String> = LazyLock::new(|| {
    let kinds = [
        ("KIND_INVALID", FailureKind::Invalid),
        ("KIND_CANCELLED", FailureKind::Cancelled),
        ("KIND_EXPIRED", FailureKind::Expired),
        ("KIND_WORKER_LOST", FailureKind::WorkerLost),
    ];
    let mut lua = String::new();
    for (local, kind) in kinds {
        lua.push_str(&format!("local {local} = '{}'\n", kind.as_str()));
    }
    for (local, role) in [("ROLE_READ", Role::Read), ("ROLE_WRITE", Role::Write)] {
        lua.push_str(&format!("local {local} = '{}'\n", role.as_str()));
    }
    // The message of a task lost with its worker, for a retry task that
    // does not run again (see `fields::LOST_AT`).
    lua.push_str(&format!(
        "local WORKER_LOST_MESSAGE = {:?}\n",
        crate::broker::WORKER_LOST_MESSAGE
    ));
    lua.push_str(&format!(
        "local PROCESSING_PREFIX = '{}'\n",
        crate::keys::PROCESSING_PREFIX
    ));
    let outcome: Vec<String> = fields::OUTCOME.iter().map(|f| format!("'{f}'")).collect();
    lua.push_str(&format!(
        "local OUTCOME_FIELDS = {{ {} }}\n",
        outcome.join(", ")
    ));
    lua + FINISH_FN
});

const FINISH_FN: &str = r#"
-- The fields of a task's hash (`HMGET`), or nil when its key holds another
-- type (a third party wrote it): such a task can neither run nor be written
-- to, and one bad key must not stop a worker's queue.
local function read_task(dkey, ...)
  local h = redis.pcall('HMGET', dkey, ...)
  if h.err then return nil end
  return h
end

-- The TTL a task that ends now gets if its notification reaches a
-- subscriber, from its `deliveredTtl`, `deadline` and `cancel` fields: nil
-- when it asked for none (or not a finite number of at least 1: `nan`
-- and `inf` read as numbers too), was cancelled (its waiter went away), or
-- ends at or after its deadline (its waiter gave up); never more than the result
-- TTL.
local function delivered_ttl(asked, deadline, cancel, now, ttl)
  local d = tonumber(asked)
  if not d or d ~= d or d < 1 or d == math.huge or cancel then return nil end
  if deadline and tonumber(deadline) and tonumber(now) >= tonumber(deadline) then return nil end
  return math.min(math.floor(d), tonumber(ttl))
end

-- A third party's cancel reason as a message shows it: printable ASCII cut
-- at 200 bytes, so that the error field and the notification stay valid
-- UTF-8 (and JSON).
local function shown_reason(r)
  if r == '' then return '(no reason given)' end
  if string.find(r, '^[%w%p ]+$') then return string.sub(r, 1, 200) end
  return '(a reason that is not printable text)'
end

-- A script that ends tasks counts them in a tally and writes it once:
-- `counted(key, body)` runs `body(tally)` and then adds the tally to the
-- stats hash `key`, even when the body fails partway (the tasks it ended
-- before the failure stay ended, so they stay counted); the failure then
-- goes on to the caller. A counter that is not an integer (edited by hand)
-- is left as it is: the tasks' own ends are written, and a failed count
-- must not undo the script's answer about them.
local function counted(key, body)
  local t = { processed = 0, failed = 0 }
  local ok, r = pcall(body, t)
  if t.processed > 0 then redis.pcall('HINCRBY', key, 'processed', t.processed) end
  if t.failed > 0 then redis.pcall('HINCRBY', key, 'failed', t.failed) end
  if not ok then error(r, 0) end
  return r
end

local function finish(dkey, id, plist, stats, now, ttl, fields, note, reply, delivered)
  redis.call('HSET', dkey, 'updatedAt', now, unpack(fields))
  -- From the right end: a worker runs its batch oldest first, and the
  -- oldest ids are there, so a finish's scan stops at once instead of
  -- crossing the batch (a reap or a claim that ends a task may scan the
  -- whole list, which holds at most a batch). No list: the caller removes
  -- the id itself (the batched finish removes its group at once: `unlist`).
  if plist then redis.call('LREM', plist, -1, id) end
  if fields[2] == 'completed' then
    stats.processed = stats.processed + 1
  else
    stats.failed = stats.failed + 1
  end
  local refused
  if reply then
    if not note then
      local t = { id = id, updatedAt = now }
      for i = 1, #fields, 2 do t[fields[i]] = fields[i + 1] end
      note = cjson.encode(t)
    end
    -- The number of subscribers that got it: 0 while the submitter's
    -- listener is away, and then its waiter reads the hash instead. A
    -- refusal (an ACL without the channel) fails the script only once this
    -- task is written whole, its TTL included: a retry goes on from the
    -- next task.
    local n = redis.pcall('PUBLISH', reply, note)
    if type(n) == 'table' then refused = n
    elseif n > 0 and delivered then ttl = delivered end
  end
  redis.call('PEXPIRE', dkey, ttl)
  if refused then error(refused) end
end
"#;

#[cfg(test)]
mod tests {
    use super::FINISH;

    /// `delivered_ttl` at the edges, run by a real Redis: a task that ends
    /// at the very ms of its deadline ended no earlier than its waiter gave
    /// up, so it keeps the result TTL, as one that ends later does.
    #[tokio::test]
    async fn a_task_ending_at_its_deadline_keeps_the_result_ttl() {
        let server = testkit::RedisServer::start();
        let mut conn = redis::Client::open(server.url())
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let ttl_at = |now: &str, cancel: &str| {
            format!(
                "{}\nreturn delivered_ttl('2000', '1000', {cancel}, '{now}', '60000') or -1",
                FINISH.as_str()
            )
        };
        let mut got = Vec::new();
        for (now, cancel) in [
            ("999", "nil"),
            ("1000", "nil"),
            ("1001", "nil"),
            ("999", "'gone'"),
        ] {
            let ttl: i64 = redis::cmd("EVAL")
                .arg(ttl_at(now, cancel))
                .arg(0)
                .query_async(&mut conn)
                .await
                .expect("eval");
            got.push(ttl);
        }
        assert_eq!(
            got,
            [2000, -1, -1, -1],
            "ending at 999, 1000, 1001 ms, cancelled"
        );
    }
}
