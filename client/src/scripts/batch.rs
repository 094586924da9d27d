//! The batched scripts of the worker: claim up to N queued tasks in one
//! round trip, and finish a group of tasks (each with its own status,
//! result, TTL and notification) in one, re-checking the tasks still
//! claimed and, when asked, claiming the next batch in the same script.

use std::sync::LazyLock;

use redis::{Script, ScriptInvocation};

use super::FINISH;
use super::claim::CLAIM;
use crate::keys;

/// Moves up to `n` ids from the right end of `queue` into `plist` (oldest
/// first) and claims each; appends the claim replies to `out`. An id moved
/// that is already `processing` by this worker while `plist` holds another
/// copy of it (pushed twice, by a submitter whose first push's reply was
/// lost) is a second copy: it leaves `plist` again and gets no reply, so the
/// task runs once; with no other copy listed, this worker never claimed it
/// (a third party wrote the hash so) and it ends `invalid`. A worker
/// whose lease (owner key `okey`, its value `lease`) is no longer its own moves
/// nothing and gets `{'fenced', ''}`.
const TAKE: &str = r#"
local function take(queue, plist, stats, prefix, worker, now, ttl, n, out, okey, lease)
  if n < 1 then return end
  if fenced(okey, lease) then
    out[#out + 1] = { 'fenced', '' }
    return
  end
  -- One id (the finish's next claim with a batch of 1): one call, not three.
  local function take_one(id)
    local c = claim(id, plist, stats, prefix, worker, now, ttl, 'moved')
    if c then out[#out + 1] = c else redis.call('LREM', plist, 1, id) end
  end
  if n == 1 then
    local id = redis.call('LMOVE', queue, plist, 'RIGHT', 'LEFT')
    if id then take_one(id) end
    return
  end
  -- The n oldest (the right end), moved in three calls, not n: the same
  -- lists as n LMOVEs (the oldest deepest in plist, the newest at its head).
  local newest = redis.call('LRANGE', queue, -n, -1)
  if #newest == 0 then return end
  redis.call('LTRIM', queue, 0, -(#newest + 1))
  local ids = {}
  for j = #newest, 1, -1 do ids[#ids + 1] = newest[j] end
  redis.call('LPUSH', plist, unpack(ids))
  for _, id in ipairs(ids) do take_one(id) end
end
"#;

/// Removes a finished group's ids (in the order they ran) from `plist`,
/// once their results are written. A worker's batch lies oldest first at the
/// list's right end, so a group is usually that end, first-run rightmost:
/// then one `LTRIM` takes it. A group of one, or a list a reaper or a third
/// party changed, goes one `LREM` per id, each from the right.
const UNLIST: &str = r#"
local function unlist(plist, ids)
  local n = #ids
  if n > 1 then
    local tail = redis.call('LRANGE', plist, -n, -1)
    local whole = true
    for t = 1, n do
      if tail[n + 1 - t] ~= ids[t] then whole = false break end
    end
    if whole then
      redis.call('LTRIM', plist, 0, -(n + 1))
      return
    end
  end
  for _, id in ipairs(ids) do redis.call('LREM', plist, -1, id) end
end
"#;

/// `unrun(why)`: the fields of a held task cancelled before it ran, for
/// reason `why`. `holds(dkey, worker, fields)`: whether task `dkey` holds,
/// with this worker's id, exactly the terminal `fields` (`{name, value, …}`)
/// a finish writes: then an earlier try of the same finish, whose reply was
/// lost, wrote them. A reaper's verdict, a run cut by a cancel and a third
/// party's write (short of one that copies these very fields) differ in
/// status, output or message.
const HOLDS: &str = r#"
local function unrun(why, lost)
  if lost then
    return { 'status', 'error', 'errorKind', KIND_WORKER_LOST, 'error', WORKER_LOST_MESSAGE ..
      '; put back on the queue to run again (retry), it was cancelled before it started again: ' .. why }
  end
  return { 'status', 'error', 'errorKind', KIND_CANCELLED, 'error',
    'cancelled before it ran: ' .. why }
end

local function holds(dkey, worker, fields)
  local names = { 'workerId' }
  for j = 1, #fields, 2 do names[#names + 1] = fields[j] end
  local h = read_task(dkey, unpack(names))
  if not h or h[1] ~= worker then return false end
  for j = 2, #names do
    if h[j] ~= fields[2 * j - 2] then return false end
  end
  return true
end
"#;

/// KEYS: queue, processing list, stats, owner (lease) key. ARGV: details
/// prefix, worker id, now, ttl, n, lease (`''` without one). Non-blocking: takes and claims up to `n` queued tasks,
/// oldest first, each as `CLAIM` does (cancelled-while-queued, expired,
/// unreadable and role checks included); an empty array when the queue is
/// empty. Returns the claim replies in the order the tasks were queued.
static CLAIM_BATCH: LazyLock<Script> = LazyLock::new(|| {
    let finish = FINISH.as_str();
    Script::new(&format!(
        "{finish}{CLAIM}{TAKE}
return counted(KEYS[3], function(stats)
  local out = {{}}
  take(KEYS[1], KEYS[2], stats, ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5]), out,
    KEYS[4], ARGV[6])
  return out
end)"
    ))
});

/// KEYS: processing list, stats, queue, owner (lease) key. ARGV: worker id,
/// now, ttl, details prefix, n (claim up to n next tasks when the tasks in
/// hand are all done; 0 for none; fenced as `CLAIM_BATCH` is), release
/// (`1`: put the held tasks back, see below), count of finished tasks,
/// lease (`''` without one), then per finished task: id,
/// notification JSON, number of field values, field pairs…; then the ids of
/// the tasks this worker still holds claimed and has not run.
///
/// Each finished task gets its terminal fields, `updatedAt`, TTL,
/// notification and count (`finish`), only if it is still `processing` by
/// this worker; else its processing entry alone goes (a reaper ended it),
/// and it counts as written when its hash holds this very result (`holds`:
/// an earlier try of this script whose reply was lost wrote it). An id
/// given twice counts once.
/// The group's ids leave the processing list after their results are written
/// (`unlist`). Each held task whose `cancel` field is set by now
/// ends as `error`, kind `cancelled`, without running, as the claim ends one
/// cancelled while queued; with release, every other held task goes back
/// to `pending` at the head of the queue, in order (a worker shutting down
/// gives back what it never started). Returns `{written flags, cancelled
/// ids, reasons and kinds (`worker_lost` for a task with `lostAt`), gone
/// ids, claim…}`: a held task no longer `processing`
/// by this worker leaves its processing list, so that a retried finish
/// never lets the worker run it; it is reported cancelled when its hash
/// holds the cancel this script writes (an earlier run of this very script
/// whose reply was lost ended it), gone otherwise (put back by such a run,
/// or ended or put back by a reaper, or finished in this same run).
static FINISH_BATCH: LazyLock<Script> = LazyLock::new(|| {
    let finish = FINISH.as_str();
    Script::new(&format!(
        "{finish}{CLAIM}{TAKE}{UNLIST}{HOLDS}
return counted(KEYS[2], function(stats)
  local written, cancelled, gone = {{}}, {{}}, {{}}
  local worker, now, ttl, prefix = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
  -- The ids finished by this run: a second copy of one is not written again.
  local i, group, done = 9, {{}}, {{}}
  for t = 1, tonumber(ARGV[7]) do
    local id, note, n = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
    local fields = {{}}
    for j = i + 3, i + 2 + n do fields[#fields + 1] = ARGV[j] end
    i = i + 3 + n
    group[t] = id
    local dkey = prefix .. id
    local h = read_task(dkey, 'status', 'workerId', 'replyTo', 'deliveredTtl',
      'deadline', 'cancel') or {{}}
    written[t] = 0
    if not done[id] then
      if h[1] == 'processing' and h[2] == worker then
        finish(dkey, id, nil, stats, now, ttl, fields, note, h[3],
          delivered_ttl(h[4], h[5], h[6], now, ttl))
        written[t] = 1
      elseif holds(dkey, worker, fields) then
        written[t] = 1
      end
      done[id] = true
    end
  end
  unlist(KEYS[1], group)
  -- Newest first, so that released ones end up oldest at the queue's head.
  for j = #ARGV, i, -1 do
    local id = ARGV[j]
    local dkey = prefix .. id
    local h = read_task(dkey, 'status', 'workerId', 'replyTo', 'deliveredTtl',
      'deadline', 'cancel', 'lostAt') or {{}}
    local ours = h[1] == 'processing' and h[2] == worker
    if ours and not h[6] and ARGV[6] == '1' then
      redis.call('HSET', dkey, 'status', 'pending', 'updatedAt', now)
      redis.call('HDEL', dkey, 'workerId', 'workerQueue', 'startedAt')
      redis.call('LREM', KEYS[1], 1, id)
      redis.call('RPUSH', KEYS[3], id)
    elseif not ours then
      redis.call('LREM', KEYS[1], 1, id)
      local why = h[6] and shown_reason(h[6])
      if why and not done[id] and holds(dkey, worker, unrun(why, h[7])) then
        cancelled[#cancelled + 1] = id
        cancelled[#cancelled + 1] = why
        cancelled[#cancelled + 1] = h[7] and KIND_WORKER_LOST or KIND_CANCELLED
      else
        gone[#gone + 1] = id
      end
    elseif ours and h[6] then
      local why = shown_reason(h[6])
      finish(dkey, id, KEYS[1], stats, now, ttl, unrun(why, h[7]), nil, h[3],
        delivered_ttl(h[4], h[5], h[6], now, ttl))
      cancelled[#cancelled + 1] = id
      cancelled[#cancelled + 1] = why
      cancelled[#cancelled + 1] = h[7] and KIND_WORKER_LOST or KIND_CANCELLED
    end
  end
  local out = {{ written, cancelled, gone }}
  take(KEYS[3], KEYS[1], stats, prefix, worker, now, ttl, tonumber(ARGV[5]), out, KEYS[4],
    ARGV[8])
  return out
end)"
    ))
});

pub(crate) fn claim_batch(
    queue: &str,
    worker: &str,
    now: u64,
    ttl_ms: u64,
    n: usize,
    fencing: &super::Fencing<'_>,
) -> ScriptInvocation<'static> {
    let mut inv = CLAIM_BATCH.prepare_invoke();
    inv.key(keys::tasks(queue))
        .key(keys::processing(queue, worker))
        .key(keys::stats(queue))
        .key(fencing.owner)
        .arg(keys::TASK_DETAILS_PREFIX)
        .arg(worker)
        .arg(now)
        .arg(ttl_ms)
        .arg(n)
        .arg(fencing.lease());
    inv
}

/// One finished task of a [`finish_batch`]: its id and terminal fields.
pub(crate) struct Finished<'a> {
    pub(crate) task_id: &'a str,
    pub(crate) fields: Vec<(&'static str, String)>,
}

/// What a [`finish_batch`] does after writing the results: the tasks still
/// held, whether to release them, how many to claim next.
pub(crate) struct Then<'a> {
    pub(crate) held: &'a [&'a str],
    pub(crate) release: bool,
    pub(crate) take_next: usize,
}

pub(crate) fn finish_batch(
    queue: &str,
    worker: &str,
    now: u64,
    ttl_ms: u64,
    finished: &[Finished<'_>],
    then: &Then<'_>,
    fencing: &super::Fencing<'_>,
) -> ScriptInvocation<'static> {
    let mut inv = FINISH_BATCH.prepare_invoke();
    inv.key(keys::processing(queue, worker))
        .key(keys::stats(queue))
        .key(keys::tasks(queue))
        .key(fencing.owner)
        .arg(worker)
        .arg(now)
        .arg(ttl_ms)
        .arg(keys::TASK_DETAILS_PREFIX)
        .arg(then.take_next)
        .arg(if then.release { "1" } else { "0" })
        .arg(finished.len())
        .arg(fencing.lease());
    for task in finished {
        inv.arg(task.task_id)
            .arg(super::notification(task.task_id, now, &task.fields))
            .arg(task.fields.len() * 2);
        for (name, value) in &task.fields {
            inv.arg(*name).arg(value.as_str());
        }
    }
    for id in then.held {
        inv.arg(*id);
    }
    inv
}

/// KEYS: workers set of a queue. ARGV: processing-list prefix, max.
/// The ids each registered worker holds behind the oldest one in its
/// processing list (the right end: it runs its batch oldest first), up to
/// `max` in all: tasks claimed in a batch and, unless a group of it is in
/// flight, not started.
static HELD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
local max = tonumber(ARGV[2])
for _, w in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  for _, id in ipairs(redis.call('LRANGE', ARGV[1] .. w, 0, -2)) do
    if #out >= max then return out end
    out[#out + 1] = id
  end
end
return out
"#,
    )
});

pub(crate) fn held(queue: &str, max: usize) -> ScriptInvocation<'static> {
    let mut inv = HELD.prepare_invoke();
    inv.key(keys::workers(queue))
        .arg(keys::processing(queue, ""))
        .arg(max);
    inv
}
