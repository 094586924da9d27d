//! The lease scripts of the protocol (see `keys::queue_owner`): take, renew
//! and give up a queue's lease. The fence every claim makes is in `claim`.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use crate::{Lease, keys};

/// Takes the queue's lease (see `keys::queue_owner`) when it is free
/// (absent or expired) or held by the same database (host and directory: a
/// restart; OurDB's own lock stops two processes on one directory), with a
/// fresh token from the fence counter and the TTL. KEYS: owner key, fence
/// key. ARGV: pid, `<host>|<dir>`, ttl ms. Returns `{1, lease, previous}`
/// when taken (`previous`: what the key held, the same database's lease of
/// an earlier run, or `''` when it was free), `{0, lease, ''}` with the
/// holder's lease otherwise.
///
/// A counter that is missing (a Redis that restarted empty) starts from
/// Redis' clock in milliseconds, not from 0: a worker cut off before the
/// restart may still hold a token of the lost counter, and a new holder
/// given the same token again could hold the same lease (a restart of the
/// same process id on the same database). The counter grows by one per change
/// of hands, far slower than the clock, so a restarted counter starts past
/// every token the lost one gave. (A counter restored behind, from an older
/// snapshot or a lagging replica promoted, is not missing: it can give a
/// token number again. The renewal, the release and every claim's fence
/// compare the whole lease, so that token gives the earlier holder nothing
/// unless the new holder has its pid, host and directory too, which the
/// acquisition already counts as the same database.)
static ACQUIRE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur and string.match(cur, '^[^|]*|[^|]*|(.*)$') ~= ARGV[2] then return { 0, cur, '' } end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local t = redis.call('TIME')
  redis.call('SET', KEYS[2], string.format('%d', t[1] * 1000 + math.floor(t[2] / 1000)))
end
local token = redis.call('INCR', KEYS[2])
local lease = string.format('%d', token) .. '|' .. ARGV[1] .. '|' .. ARGV[2]
redis.call('SET', KEYS[1], lease, 'PX', ARGV[3])
return { 1, lease, cur or '' }
"#,
    )
});

/// Renews the lease for the TTL only while the owner key holds this very
/// lease (compare-and-`PEXPIRE`; the whole value, see `ACQUIRE_LEASE`).
/// KEYS: owner key. ARGV: lease, ttl ms. Returns
/// `{1}` when renewed, `{0, lease}` with what the key holds otherwise (`''`
/// when it is gone).
static RENEW_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return { 1 }
end
return { 0, cur or '' }
"#,
    )
});

/// Deletes the lease if it is this very lease and no live worker of the
/// leaving worker's process is left registered for the queue (another
/// worker of the same database, in the same process, may still serve it;
/// called after the leaving worker deregistered). A registration whose
/// heartbeat key is gone (a worker killed, not yet reaped) serves nothing
/// and holds no lease back; nor does one of another process (an earlier
/// run of this database killed moments before this one took its lease
/// over, its heartbeat not yet expired: OurDB's lock kept it from the
/// database, and the lease is this one's). KEYS: owner key, workers set.
/// ARGV: lease, the queue's worker heartbeat key prefix, the process's
/// worker id prefix.
static RELEASE_LEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
for _, w in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if string.sub(w, 1, #ARGV[3]) == ARGV[3] and redis.call('EXISTS', ARGV[2] .. w) == 1 then
    return 0
  end
end
redis.call('DEL', KEYS[1])
return 1
"#,
    )
});

/// The live heartbeats of the workers a process registered for the queue
/// (ids `<pid>-…`, see the worker's ids): `{id, value, id, value, …}`, each
/// value the time of that worker's last beat. KEYS: workers set. ARGV:
/// `<pid>-`, the queue's worker heartbeat key prefix.
static HEARTBEATS_OF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  if string.sub(w, 1, #ARGV[1]) == ARGV[1] then
    local v = redis.call('GET', ARGV[2] .. w)
    if v then
      out[#out + 1] = w
      out[#out + 1] = v
    end
  end
end
return out
"#,
    )
});

/// Ends the heartbeats that still hold the value read before: workers that
/// did not beat since, so that the next reap resolves their tasks at once
/// instead of after the heartbeat TTL. ARGV: the queue's worker heartbeat
/// key prefix, then `id, value` pairs. Returns `{ended, beaten}`: the ids
/// whose heartbeat it ended, and how many hold another value (their worker
/// beat since; a key gone meanwhile counts in neither).
static FORGET_UNCHANGED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ended, beaten = {}, 0
for i = 2, #ARGV - 1, 2 do
  local key = ARGV[1] .. ARGV[i]
  local now = redis.call('GET', key)
  if now == ARGV[i + 1] then
    redis.call('DEL', key)
    ended[#ended + 1] = ARGV[i]
  elseif now then
    beaten = beaten + 1
  end
end
return { ended, beaten }
"#,
    )
});

pub(crate) fn heartbeats_of(queue: &str, pid: u32) -> ScriptInvocation<'static> {
    let mut inv = HEARTBEATS_OF.prepare_invoke();
    inv.key(keys::workers(queue))
        .arg(keys::worker_id_prefix(pid))
        .arg(keys::heartbeat(queue, ""));
    inv
}

pub(crate) fn forget_unchanged(
    queue: &str,
    beats: &[(String, String)],
) -> ScriptInvocation<'static> {
    let mut inv = FORGET_UNCHANGED.prepare_invoke();
    inv.arg(keys::heartbeat(queue, ""));
    for (id, value) in beats {
        inv.arg(id).arg(value);
    }
    inv
}

pub(crate) fn acquire_lease(
    queue: &str,
    pid: u32,
    host_dir: &str,
    ttl_ms: u64,
) -> ScriptInvocation<'static> {
    let mut inv = ACQUIRE_LEASE.prepare_invoke();
    inv.key(keys::queue_owner(queue))
        .key(keys::queue_fence(queue))
        .arg(pid)
        .arg(host_dir)
        .arg(ttl_ms);
    inv
}

pub(crate) fn renew_lease(queue: &str, lease: &Lease, ttl_ms: u64) -> ScriptInvocation<'static> {
    let mut inv = RENEW_LEASE.prepare_invoke();
    inv.key(keys::queue_owner(queue))
        .arg(lease.to_string())
        .arg(ttl_ms);
    inv
}

pub(crate) fn release_lease(
    queue: &str,
    lease: &Lease,
    process_prefix: &str,
) -> ScriptInvocation<'static> {
    let mut inv = RELEASE_LEASE.prepare_invoke();
    inv.key(keys::queue_owner(queue))
        .key(keys::workers(queue))
        .arg(lease.to_string())
        .arg(keys::heartbeat(queue, ""))
        .arg(process_prefix);
    inv
}
