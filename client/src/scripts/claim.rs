//! The claim function of the protocol's Lua scripts (prepended, after
//! `finish` and the kind and role names, to every script that claims), and
//! the lease check (fencing) every claim of a worker with a lease makes.

/// Claims a task already moved into the processing list.
/// Returns `{'run', id, script, deadline, caller, role, created, ended, started}`
/// (`''` for an absent deadline, caller or role; `created` is the task's
/// `createdAt`; a present role is `read` or `write`; `ended` is `'1'` when
/// the hash held an earlier run's outcome, else `''`; `started` is the
/// `startedAt` this claim wrote),
/// `{'invalid', id, reason}`, `{'foreign', id, reason}` (its key is not a
/// hash: the id only leaves the processing list, counted as failed, the key
/// untouched),
/// `{'cancelled', id, reason}`, `{'lost', id, message}` (a task a reaper put
/// back, `lostAt`, cancelled or past its deadline before it started again:
/// ended `worker_lost`), `{'skipped', id, status}` or
/// `{'expired'|'missing', id}`. Writes
/// `createdAt` (DESIGN §3: a field the system writes) when the submitter did
/// not, as a third-party submitter may not. A `role` other than `read` and
/// `write` ends the task as invalid (fail closed: it never runs), and so
/// does a `processing` task without `workerId`, or whose `workerId` names a
/// worker whose processing list does not hold it (no worker holds it). A task
/// that runs or ends here loses the outcome fields (`OUTCOME_FIELDS`) it
/// holds from an earlier run of its id or from its submitter. A task
/// found `completed` or `error` without an expiry gets the result TTL.
/// `fenced(okey, lease)`: whether a worker that holds a lease (`lease`, the
/// owner key's value as it took it, not `''`) has lost it: the owner key
/// `okey` is gone or holds another value. The whole value is compared, not
/// the token alone: a fence counter restored behind can give a token again,
/// but to another holder (see `Fence`).
/// `unclaim(id, plist, queue, prefix, worker)`: a fenced worker gives back an
/// id it moved: out of its processing list and, unless another worker or
/// program resolved it, back to the head of the queue (a claim of its own
/// whose reply was lost goes back to `pending`; it never ran). Returns
/// `{'fenced', id}`.
pub(super) const CLAIM: &str = r#"
local function fenced(okey, lease)
  if lease == '' then return false end
  return redis.call('GET', okey) ~= lease
end

local function unclaim(id, plist, queue, prefix, worker)
  local dkey = prefix .. id
  local h = read_task(dkey, 'status', 'workerId') or {}
  redis.call('LREM', plist, 1, id)
  if h[1] == 'processing' and h[2] == worker then
    redis.call('HSET', dkey, 'status', 'pending')
    redis.call('HDEL', dkey, 'workerId', 'workerQueue', 'startedAt')
    redis.call('RPUSH', queue, id)
  elseif not h[1] or h[1] == 'pending' or (h[1] == 'processing' and not h[2]) then
    -- Not claimed by anyone (a `processing` without `workerId` included):
    -- back to the queue, for the lease's holder to claim or end.
    redis.call('RPUSH', queue, id)
  end
  return { 'fenced', id }
end

-- A field's value fit for a message: quoted (its first 200 bytes) when it
-- is printable ASCII or empty, else said to be neither.
local function shown_field(v)
  if v == '' or string.find(v, '^[%w%p ]+$') then return '"' .. string.sub(v, 1, 200) .. '"' end
  return '(not printable text)'
end

local function claim(id, plist, stats, prefix, worker, now, ttl, fresh)
  local dkey = prefix .. id
  local h = read_task(dkey, 'status', 'script', 'deadline', 'workerId', 'replyTo',
    'createdAt', 'cancel', 'caller', 'role', 'deliveredTtl', 'lostAt', 'workerQueue',
    unpack(OUTCOME_FIELDS))
  if not h then
    -- Its key is no hash: nothing can be written there, so the id only
    -- leaves the processing list, counted as failed; the key stays as is.
    redis.call('LREM', plist, 1, id)
    stats.failed = stats.failed + 1
    return { 'foreign', id, 'its details key ' .. dkey .. ' holds a ' ..
      redis.call('TYPE', dkey).ok .. ', not the hash the protocol asks for' }
  end
  local status, script, deadline = h[1], h[2], h[3]
  -- A hash with a status or a script exists: only ask when both are absent.
  if not status and not script and redis.call('EXISTS', dkey) == 0 then
    -- Pushed without its hash (or the hash expired while queued): the id
    -- still ends as error, in a hash made for it, so whoever waits sees why.
    finish(dkey, id, plist, stats, now, ttl, { 'status', 'error', 'errorKind', KIND_INVALID,
      'error', 'task details hash ' .. dkey .. ' did not exist when a worker took the id' ..
      ' (a submitter must write the hash before pushing the id)', 'createdAt', now }, nil, nil)
    return { 'missing', id }
  end
  -- 'processing' by this very worker: claimed, but the reply was lost before
  -- the script ran (the worker runs one task at a time), so it runs now --
  -- unless the caller only wanted an id it has just moved (`fresh`): then
  -- this is an older id of ours (one whose result could not be written) or
  -- a second copy of one it holds (an id pushed twice), and it is left
  -- alone, as if nothing had been taken. But when `fresh` is 'moved' (the
  -- caller moved this very id just now) and the list holds no other copy,
  -- this worker never claimed it (a claim keeps its id listed until the
  -- end): a third party wrote the hash naming it, and it ends as invalid
  -- below, as one naming a worker that does not hold it does.
  local unheld = false
  if fresh and status == 'processing' and h[4] == worker then
    if fresh ~= 'moved' or #redis.call('LPOS', plist, id, 'COUNT', 2) > 1 then
      return false
    end
    unheld = true
  end
  -- Ended already: not run again, not rewritten; but a finished hash pushed
  -- without an expiry (a third party wrote it so) gets the result TTL, so
  -- it does not stay in Redis for good.
  if status == 'completed' or status == 'error' then
    redis.call('LREM', plist, 1, id)
    if redis.call('PTTL', dkey) == -1 then redis.call('PEXPIRE', dkey, ttl) end
    return { 'skipped', id, status }
  end
  -- Another worker's: not ours to touch, while that worker's processing
  -- list holds it: it runs it, or a reaper resolves it. Its list is named
  -- by its queue (`workerQueue`; a worker of another queue when the id was
  -- pushed onto two queues), or as ours is when the hash names none.
  -- One no such list holds (a third party wrote the hash so) no worker
  -- ever will: it ends below as invalid, as one without `workerId` does.
  local ourqueue = string.sub(plist, #PROCESSING_PREFIX + 1, #plist - #worker - 1)
  if status == 'processing' and h[4] and h[4] ~= worker then
    local theirs = PROCESSING_PREFIX .. (h[12] or ourqueue) .. ':' .. h[4]
    local at = redis.pcall('LPOS', theirs, id)
    if type(at) == 'table' or at then
      redis.call('LREM', plist, 1, id)
      return { 'skipped', id, status }
    end
    unheld = true
  end
  -- From here on the task ends or runs here; the fields the system writes
  -- get written, createdAt included when the submitter left it out, and
  -- the outcome fields an earlier run of the same id (or the submitter)
  -- left go, so the end writes a whole outcome of its own.
  local stale = {}
  for i, field in ipairs(OUTCOME_FIELDS) do
    if h[12 + i] then stale[#stale + 1] = field end
  end
  -- A reaper put it back after its worker died while it ran (`lostAt`),
  -- unless that mark is of an earlier life of the id (it ended since).
  local lost = h[11] and #stale == 0
  if #stale > 0 and h[11] then stale[#stale + 1] = 'lostAt' end
  if #stale > 0 then redis.call('HDEL', dkey, unpack(stale)) end
  -- Its message when it does not run again: it may have run.
  local function lost_message(why)
    return WORKER_LOST_MESSAGE .. '; put back on the queue to run again (retry), ' .. why
  end
  local created = {}
  if not h[6] then created = { 'createdAt', now } end
  local function failed(kind, message)
    local fields = { 'status', 'error', 'errorKind', kind, 'error', message }
    for _, v in ipairs(created) do fields[#fields + 1] = v end
    finish(dkey, id, plist, stats, now, ttl, fields, nil, h[5],
      delivered_ttl(h[10], deadline, h[7], now, ttl))
  end
  if status and status ~= 'pending' and status ~= 'processing' then
    local why = 'unknown status ' .. shown_field(status) .. ' (a task is submitted as "pending")'
    failed(KIND_INVALID, why)
    return { 'invalid', id, why }
  end
  -- Our claim writes workerId with `processing`: without it, no worker
  -- holds the task (a third party submitted it so), and none ever would.
  if status == 'processing' and (not h[4] or unheld) then
    local why = 'status "processing" but no worker holds it (a task is submitted as "pending")'
    failed(KIND_INVALID, why)
    return { 'invalid', id, why }
  end
  if not script then
    failed(KIND_INVALID, 'task has no script field')
    return { 'invalid', id, 'it has no script' }
  end
  local role = h[9]
  if role and role ~= ROLE_READ and role ~= ROLE_WRITE then
    local why = 'unknown role ' .. shown_field(role) .. ' (a task\'s role is "' .. ROLE_READ .. '" or "' ..
      ROLE_WRITE .. '"; without a role field it runs as the trusted identity)'
    failed(KIND_INVALID, why)
    return { 'invalid', id, why }
  end
  -- A deadline is ms since the Unix epoch in digits, as the client writes
  -- it (and as the worker reads it): anything else would run unbounded.
  if deadline and not string.find(deadline, '^%d+$') then
    local why = 'deadline ' .. shown_field(deadline) .. ' is not a time (a task\'s deadline is ms since the ' ..
      'Unix epoch, in digits; without a deadline field it has none)'
    failed(KIND_INVALID, why)
    return { 'invalid', id, why }
  end
  if h[7] then
    local why = shown_reason(h[7])
    if lost then
      local message = lost_message('it was cancelled before it started again: ' .. why)
      failed(KIND_WORKER_LOST, message)
      return { 'lost', id, message }
    end
    failed(KIND_CANCELLED, 'cancelled before it ran: ' .. why)
    return { 'cancelled', id, why }
  end
  if deadline and tonumber(deadline) and tonumber(now) > tonumber(deadline) then
    if lost then
      local message = lost_message('its deadline passed before it started again')
      failed(KIND_WORKER_LOST, message)
      return { 'lost', id, message }
    end
    failed(KIND_EXPIRED, 'task expired before it ran: its deadline passed while it waited in the queue')
    return { 'expired', id }
  end
  -- The system owns the hash from its claim on: a submitter's expiry on
  -- it (say, for a task nobody takes) must not drop it while it runs; the
  -- end sets the result TTL.
  redis.call('PERSIST', dkey)
  redis.call('HSET', dkey, 'status', 'processing', 'workerId', worker, 'workerQueue', ourqueue,
    'startedAt', now, 'updatedAt', now, unpack(created))
  -- Whether an earlier run of this id ended (its outcome fields were
  -- there): an id pushed again after it ended, not one a Redis restored
  -- from before its claim. And this claim's `startedAt`: what tells this
  -- run from an earlier one of the id when an outage cuts the reply.
  return { 'run', id, script, deadline or '', h[8] or '', role or '', h[6] or now,
    #stale > 0 and '1' or '', now }
end
"#;
