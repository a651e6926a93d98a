"""The shared store: jobs in a Redis server, so daemons on several hosts share one queue.

Layout (every key under `procorch:`): a hash per job (`job:ID`), ids from INCR (never
reused), `ready:QUEUE` (a sorted set per queue of the due pending jobs, by priority then
id), `wake:QUEUE` (a short list idle workers BLPOP), a stream of the jobs in flight read
by the consumer group `workers` (its pending entries are the leases), a sorted set of
ids per status (for list and counts) and `all`, `delayed` (delayed jobs and retries, by
due time), `deps:ID` (the jobs waiting on ID), `expiring` (finished jobs by the time
their result_ttl ends: workers delete them), `finished` (the last minute's finish
times, for throughput) and `durations` (the duration histogram: a count per bucket
index, and the sum in seconds). Every change of a job is one Lua script, so it is
atomic and one round trip. A queue of the first version (one stream of every pending
job) is migrated on open, once (`version`).

Workers are consumers named after their host, run directory and replica, so a
replacement worker finds its predecessor's unacknowledged entries (XPENDING) and
takes them back at once. An entry is held under a lease: its idle time, reset by a
keeper thread (XCLAIM … JUSTID) while the job runs; XAUTOCLAIM hands the entries of
a dead or hung consumer (another host's, a killed daemon's) to a live one after
LEASE seconds. A job's attempts count its deliveries: past max_attempts it fails
instead of running again, so a job that kills its worker cannot loop. Entries are
acknowledged and deleted (XACK, XDEL) as soon as the job leaves them, which is the
stream's trimming: it holds only the jobs waiting or in flight, never a history.

A server at its `maxmemory` with `noeviction` refuses writes (OOM): a script refused
that way has written nothing (the refused command is its first write) and raises
`StoreFull`; the same call succeeds once memory is freed. The URL's password is in no
message: they show `redact(url)`, and a driver's error passes through `scrub`.
"""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import redis

from procorch.config import JobsSettings
from procorch.jobs.job import (
    DEFAULT_QUEUE,
    FIELDS,
    JobNotFound,
    Status,
    StoreFull,
    StoreUnavailable,
)
from procorch.jobs.store import (
    DURATION_BUCKETS,
    KEY_TTL,
    Claim,
    Durations,
    Key,
    NewJob,
    Store,
    Waiter,
    WorkerId,
)
from procorch.redaction import redact, scrub

PREFIX = "procorch:"
GROUP = "workers"
LEASE = 2.0  # seconds an entry may sit unrenewed before another consumer takes it
RENEW_EVERY = LEASE / 8
BLOCK_MAX = 0.25  # BLPOP cannot be cut short by a signal: a stop waits at most this
IDLE_FRESH = 0.05  # seconds a look that found nothing stands in for another before a block
FINISHED_WINDOW = 60.0  # seconds of finish times kept for throughput
_T = TypeVar("_T")

_INTEGERS = ("job_id", "input", "mod", "output", "attempts", "priority")
_FLOATS = ("init_time", "started_time", "finished_time", "run_at", "progress")
_NEW_JOB_FIELDS = tuple(f for f in NewJob.__dataclass_fields__ if f != "depends_on")
_DEFAULTS = {"priority": 0, "queue": DEFAULT_QUEUE, "run_after": 0.0}  # not stored: as if absent
_DEFAULTS.update({f: None for f in _NEW_JOB_FIELDS if f not in _DEFAULTS})

# KEYS: none (one server, no cluster). ARGV[1] is always the prefix. Inputs and moduli
# stay strings: Lua numbers are doubles, exact only up to 2**53.
_LIB = """
local p = ARGV[1]
local bounds = DURATION_BUCKETS
local function move(id, from, to)
  redis.call('ZREM', p .. 'status:' .. from, id)
  redis.call('ZADD', p .. 'status:' .. to, id, id)
end
-- the ready queues: a sorted set per queue, by -priority, then by id (padded: members
-- of one score sort as strings)
local function member(id) return string.format('%016d', tonumber(id)) end
-- wake up to `count` idle workers of a queue (a token each, at most 64 waiting)
local function wake(queue, count)
  local tokens = {}
  for i = 1, math.min(count, 64) do tokens[i] = 1 end
  redis.call('SADD', p .. 'queues', queue)
  redis.call('LPUSH', p .. 'wake:' .. queue, unpack(tokens))
  redis.call('LTRIM', p .. 'wake:' .. queue, 0, 63)
end
-- a due job joins its queue; `queue` and `priority` as the job has them, if known
local function ready(id, queue, priority, quiet)
  if not queue then
    local job = redis.call('HMGET', p .. 'job:' .. id, 'queue', 'priority')
    queue, priority = job[1] or 'default', job[2]
  end
  redis.call('ZADD', p .. 'ready:' .. queue, -(tonumber(priority) or 0), member(id))
  if not quiet then wake(queue, 1) end
end
local function unready(id)
  local queue = redis.call('HGET', p .. 'job:' .. id, 'queue') or 'default'
  redis.call('ZREM', p .. 'ready:' .. queue, member(id))
  redis.call('ZREM', p .. 'delayed', id)
end
local function release(entry)
  redis.call('XACK', p .. 'stream', 'workers', entry)
  redis.call('XDEL', p .. 'stream', entry)
end
-- tell waiters, with the job itself: a waiter needs no second round trip to read it
local function announce(id)
  redis.call('PUBLISH', p .. 'done', cjson.encode(redis.call('HGETALL', p .. 'job:' .. id)))
end
-- count a finished job's run into the duration histogram: its bucket is the number of
-- bounds below it, as store.duration_bucket (a clock stepped back counts as 0 s)
local function observe(id, now)
  local started = tonumber(redis.call('HGET', p .. 'job:' .. id, 'started_time'))
  if not started then return end
  local seconds = now - started
  local bucket = 0
  for _, bound in ipairs(bounds) do
    if bound < seconds then bucket = bucket + 1 end
  end
  redis.call('HINCRBY', p .. 'durations', bucket, 1)
  redis.call('HINCRBYFLOAT', p .. 'durations', 'sum', string.format('%.17g', math.max(seconds, 0)))
end
-- a finished job is deleted after its result_ttl (the job's, else the default; -1 never)
local function expire(id, now, ttl)
  local own = tonumber(redis.call('HGET', p .. 'job:' .. id, 'result_ttl'))
  ttl = own or tonumber(ttl)
  if ttl >= 0 then redis.call('ZADD', p .. 'expiring', now + ttl, id) end
end
local function add_error(id, err, now)
  local key = p .. 'job:' .. id
  local job = redis.call('HMGET', key, 'errors', 'attempts')
  local list = job[1] and cjson.decode(job[1]) or {}
  table.insert(list, {attempt = tonumber(job[2]), error = err, at = tonumber(now)})
  redis.call('HSET', key, 'errors', cjson.encode(list))
end
-- done or failed, never a retry or a cancel: each job passes here once
local function finished(id, now)
  redis.call('ZADD', p .. 'finished', now, id)
  redis.call('ZREMRANGEBYSCORE', p .. 'finished', '-inf', now - FINISHED_WINDOW)
  observe(id, now)
  announce(id)
end
local settle
-- cancel a waiting, pending or running job and the jobs waiting on it -> 1 if it was
local function cancel(id, why, now, ttl)
  local key = p .. 'job:' .. id
  local status = redis.call('HGET', key, 'status')
  if status ~= 'pending' and status ~= 'running' and status ~= 'waiting' then return 0 end
  redis.call('HSET', key, 'status', 'cancelled', 'finished_time', now)
  if why then redis.call('HSET', key, 'error', why) end
  move(id, status, 'cancelled')
  unready(id)
  expire(id, now, ttl)
  announce(id)
  settle(id, 'cancelled', now, ttl)
  return 1
end
-- a job finished: its children run once nothing else holds them, or are cancelled
settle = function(id, status, now, ttl)
  local children = redis.call('SMEMBERS', p .. 'deps:' .. id)
  if #children == 0 then return end
  redis.call('DEL', p .. 'deps:' .. id)
  for _, child in ipairs(children) do
    if status == 'done' then
      local key = p .. 'job:' .. child
      if redis.call('HINCRBY', key, 'waiting', -1) <= 0
          and redis.call('HGET', key, 'status') == 'waiting' then
        redis.call('HSET', key, 'status', 'pending')
        move(child, 'waiting', 'pending')
        local due = tonumber(redis.call('HGET', key, 'run_after')) or 0
        if due > now then redis.call('ZADD', p .. 'delayed', due, child) else ready(child) end
      end
    else
      cancel(child, 'job ' .. id .. ' it depends on was ' .. status, now, ttl)
    end
  end
end
-- delayed jobs and retries whose time has come join their ready queue
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', p .. 'delayed', '-inf', now, 'LIMIT', 0, 100)
  for _, id in ipairs(due) do
    redis.call('ZREM', p .. 'delayed', id)
    if redis.call('HGET', p .. 'job:' .. id, 'status') == 'pending' then ready(id) end
  end
end
local CLAIMED = {'status', 'attempts', 'function', 'input', 'mod', 'args', 'kwargs',
  'max_attempts', 'timeout', 'retry', 'result_ttl'}
-- run a job if it is pending: delivered through the stream to `consumer`, whose pending
-- entry is its lease -> {id, entry, attempts, CLAIMED[3...]...}, or false
local function start(id, consumer, now, label)
  local key = p .. 'job:' .. id
  local job = redis.call('HMGET', key, unpack(CLAIMED))
  if job[1] ~= 'pending' then return false end  -- cancelled meanwhile, say
  local entry = redis.call('XADD', p .. 'stream', '*', 'id', id)
  -- the stream holds only entries in flight, delivered as they are added: this one
  local read = {'XREADGROUP', 'GROUP', 'workers', consumer, 'COUNT', 1, 'STREAMS',
    p .. 'stream', '>'}
  if redis.pcall(unpack(read)).err then  -- flushed: the group went with the stream
    redis.call('XGROUP', 'CREATE', p .. 'stream', 'workers', '0', 'MKSTREAM')
    redis.call(unpack(read))
  end
  local attempts = tonumber(job[2] or 0) + 1
  redis.call('HSET', key, 'status', 'running', 'started_time', now, 'worker', label,
    'entry', entry, 'attempts', attempts)
  redis.call('HDEL', key, 'finished_time')
  move(id, 'pending', 'running')
  local claim = {id, entry, attempts}
  for i = 3, #CLAIMED do claim[1 + i] = job[i] or '' end
  return claim
end
-- nothing to take: what a worker needs to block until there is -> {0, the next delayed
-- job's due time or '', its queues...}, read here rather than in two more round trips
local function idle(names)
  local due = redis.call('ZRANGE', p .. 'delayed', 0, 0, 'WITHSCORES')
  return {0, due[2] or '', unpack(names)}
end
-- the next due job of `queues` (comma-separated, '*' all): highest priority, then oldest
-- -> a claim (see `start`), or `idle`'s answer
local function take(consumer, now, label, queues)
  promote(now)
  local names
  if queues == '*' then names = redis.call('SMEMBERS', p .. 'queues')
  else names = {} for q in string.gmatch(queues, '[^,]+') do table.insert(names, q) end end
  for _ = 1, 16 do  -- past the ids of jobs no longer pending
    local best, score, queue
    for _, q in ipairs(names) do
      local head = redis.call('ZRANGE', p .. 'ready:' .. q, 0, 0, 'WITHSCORES')
      if #head > 0 then
        local s = tonumber(head[2])
        if not best or s < score or (s == score and head[1] < best) then
          best, score, queue = head[1], s, q
        end
      end
    end
    if not best then return idle(names) end
    redis.call('ZREM', p .. 'ready:' .. queue, best)
    local claim = start(tostring(tonumber(best)), consumer, now, label)
    if claim then return claim end
  end
  return idle(names)
end
""".replace("FINISHED_WINDOW", repr(FINISHED_WINDOW)).replace(
    "DURATION_BUCKETS",
    "{" + ", ".join(map(repr, DURATION_BUCKETS)) + "}",  # Python's list
)

# ARGV: prefix, now, key ('' for none), its digest, its ttl, default result_ttl, then per
# job: the number of its fields, and its fields and values (function, input, mod, args,
# ...; depends_on as JSON) -> {first id, digest}: the first submission's under that key
# if there was one; {-1, parent} for a depends_on naming no job (nothing written)
_SUBMIT = (
    _LIB
    + """
local keyed = p .. 'key:' .. ARGV[3]
if ARGV[3] ~= '' then
  local seen = redis.call('HMGET', keyed, 'first', 'digest')
  if seen[1] then return {tonumber(seen[1]), seen[2]} end
end
local jobs = {}
local i = 7
while i <= #ARGV do
  if ARGV[i] == 'P' then  -- a plain job: P, function, input, mod (the first version's)
    table.insert(jobs, {i, 0, {}})
    i = i + 4
  else
    local count = tonumber(ARGV[i])
    local fields = {}
    for j = 1, count do fields[ARGV[i + 2 * j - 1]] = ARGV[i + 2 * j] end
    for _, parent in ipairs(fields.depends_on and cjson.decode(fields.depends_on) or {}) do
      if redis.call('EXISTS', p .. 'job:' .. parent) == 0 then return {-1, tostring(parent)} end
    end
    table.insert(jobs, {i + 1, count, fields})
    i = i + 1 + 2 * count
  end
end
redis.call('SETNX', p .. 'version', 2)  -- a queue of this version: nothing to migrate
local last = redis.call('INCRBY', p .. 'next_id', #jobs)
local first = last - #jobs + 1
local now = tonumber(ARGV[2])
local woken = {}  -- queue -> jobs made ready: their workers are woken once, after
for n, job in ipairs(jobs) do
  local id = first + n - 1
  local key = p .. 'job:' .. id
  if job[2] == 0 then
    local at = job[1]
    redis.call('HSET', key, 'job_id', id, 'status', 'pending', 'attempts', 0,
      'init_time', ARGV[2], 'function', ARGV[at + 1], 'input', ARGV[at + 2], 'mod', ARGV[at + 3])
  else
    redis.call('HSET', key, 'job_id', id, 'status', 'pending', 'attempts', 0,
      'init_time', ARGV[2], unpack(ARGV, job[1], job[1] + 2 * job[2] - 1))
  end
  redis.call('ZADD', p .. 'all', id, id)
  local fields, waiting, why = job[3], 0, nil
  for _, parent in ipairs(fields.depends_on and cjson.decode(fields.depends_on) or {}) do
    local status = redis.call('HGET', p .. 'job:' .. parent, 'status')
    if status == 'failed' or status == 'cancelled' then
      why = 'job ' .. parent .. ' it depends on was ' .. status
    elseif status ~= 'done' then
      if redis.call('SADD', p .. 'deps:' .. parent, id) == 1 then waiting = waiting + 1 end
    end
  end
  if why then
    redis.call('ZADD', p .. 'status:pending', id, id)
    cancel(id, why, now, ARGV[6])
  elseif waiting > 0 then
    redis.call('HSET', key, 'status', 'waiting', 'waiting', waiting)
    redis.call('ZADD', p .. 'status:waiting', id, id)
  else
    redis.call('ZADD', p .. 'status:pending', id, id)
    local due = tonumber(fields.run_after) or 0
    if due > now then redis.call('ZADD', p .. 'delayed', due, id)
    else
      local queue = fields.queue or 'default'
      ready(id, queue, fields.priority, true)
      woken[queue] = (woken[queue] or 0) + 1
    end
  end
end
for queue, count in pairs(woken) do wake(queue, count) end
if ARGV[3] ~= '' then
  redis.call('HSET', keyed, 'first', first, 'digest', ARGV[4])
  redis.call('EXPIRE', keyed, ARGV[5])
end
return {first, ARGV[4]}
"""
)

# ARGV: prefix, now, consumer, worker label, queues -> a claim (see `start`) or false
_CLAIM = _LIB + "return take(ARGV[3], ARGV[2], ARGV[4], ARGV[5])"

# ARGV: prefix, job id, entry, now, worker label, attempts, outcome, value, run_after,
# consumer, the result's field, default result_ttl, queues. outcome: done (value = the
# result), retry or failed (value = error). Records the attempt, then (if consumer is not
# empty) claims the next job in the same call.
_FINISH = (
    _LIB
    + """
local function record()
  local id = ARGV[2]
  local key = p .. 'job:' .. id
  local job = redis.call('HMGET', key, 'status', 'entry', 'worker', 'attempts')
  if job[1] ~= 'running' or job[2] ~= ARGV[3] or job[3] ~= ARGV[5] or job[4] ~= ARGV[6] then
    -- no longer this attempt's: leave the entry alone if another consumer runs it now
    if not (job[1] == 'running' and job[2] == ARGV[3]) then release(ARGV[3]) end
    return
  end
  release(ARGV[3])
  local now = tonumber(ARGV[4])
  if ARGV[7] == 'done' then
    redis.call('HSET', key, 'status', 'done', ARGV[11], ARGV[8], 'finished_time', ARGV[4])
    redis.call('HDEL', key, 'error')
    move(id, 'running', 'done')
    finished(id, now)
    expire(id, now, ARGV[12])
    settle(id, 'done', now, ARGV[12])
  elseif ARGV[7] == 'retry' then
    redis.call('HSET', key, 'status', 'pending', 'error', ARGV[8])
    add_error(id, ARGV[8], now)
    move(id, 'running', 'pending')
    redis.call('ZADD', p .. 'delayed', ARGV[9], id)
  else
    redis.call('HSET', key, 'status', 'failed', 'error', ARGV[8], 'finished_time', ARGV[4])
    add_error(id, ARGV[8], now)
    move(id, 'running', 'failed')
    finished(id, now)
    expire(id, now, ARGV[12])
    settle(id, 'failed', now, ARGV[12])
  end
end
record()
if ARGV[10] == '' then return false end
return take(ARGV[10], ARGV[4], ARGV[5], ARGV[13])
"""
)

# ARGV: prefix, job id, entry, now, max_attempts, timeout, taker label, what happened,
# default result_ttl. The entry's consumer is gone (or hung): put its job back, or fail
# it. -> 1 if taken back
_RECOVER = (
    _LIB
    + """
local id = ARGV[2]
local key = p .. 'job:' .. id
local job = redis.call('HMGET', key, 'status', 'entry', 'worker', 'attempts', 'started_time',
  'max_attempts', 'timeout')
if job[2] ~= ARGV[3] then release(ARGV[3]) return 0 end  -- a stale entry
if job[1] ~= 'running' then  -- the first version's: delivered, never started
  release(ARGV[3])
  if job[1] == 'pending' then ready(id) end
  return 0
end
if job[3] == ARGV[7] then return 0 end  -- the taker's own job
release(ARGV[3])
local now = tonumber(ARGV[4])
local timeout = job[7] or ARGV[6]
local why = 'worker ' .. job[3] .. ' ' .. ARGV[8]
if now - tonumber(job[5]) >= tonumber(timeout) then
  why = 'timed out after ' .. timeout .. 's (worker killed)'
end
if tonumber(job[4]) < tonumber(job[6] or ARGV[5]) then
  redis.call('HSET', key, 'status', 'pending', 'error', why)
  add_error(id, why, now)
  move(id, 'running', 'pending')
  ready(id)
else
  redis.call('HSET', key, 'status', 'failed', 'error', why, 'finished_time', ARGV[4])
  add_error(id, why, now)
  move(id, 'running', 'failed')
  finished(id, now)
  expire(id, now, ARGV[9])
  settle(id, 'failed', now, ARGV[9])
end
return 1
"""
)

# ARGV: prefix, job id, now, default result_ttl -> 1 if cancelled
_CANCEL = _LIB + "return cancel(ARGV[2], false, tonumber(ARGV[3]), ARGV[4])"

# ARGV: prefix, now, job ids -> the ids of failed jobs now pending again
_REQUEUE = (
    _LIB
    + """
local done = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local key = p .. 'job:' .. id
  if redis.call('HGET', key, 'status') == 'failed' then
    redis.call('HSET', key, 'status', 'pending', 'attempts', 0, 'run_after', ARGV[2])
    redis.call('HDEL', key, 'finished_time')
    redis.call('ZREM', p .. 'expiring', id)
    move(id, 'failed', 'pending')
    ready(id)
    table.insert(done, tonumber(id))
  end
end
return done
"""
)

# ARGV: prefix, now, job ids ('' : the expired ones, a batch) -> how many finished jobs
# were deleted
_DELETE = (
    _LIB
    + """
local ids = {}
for i = 3, #ARGV do table.insert(ids, ARGV[i]) end
if #ids == 0 then
  ids = redis.call('ZRANGEBYSCORE', p .. 'expiring', '-inf', ARGV[2], 'LIMIT', 0, 500)
end
local deleted = 0
for _, id in ipairs(ids) do
  local status = redis.call('HGET', p .. 'job:' .. id, 'status')
  redis.call('ZREM', p .. 'expiring', id)
  if status == 'done' or status == 'failed' or status == 'cancelled' then
    redis.call('DEL', p .. 'job:' .. id)
    redis.call('ZREM', p .. 'status:' .. status, id)
    redis.call('ZREM', p .. 'all', id)
    deleted = deleted + 1
  end
end
return deleted
"""
)

# ARGV: prefix, job id, worker label, attempts, progress, meta ('' none) -> 1 if recorded
_PROGRESS = (
    _LIB
    + """
local key = p .. 'job:' .. ARGV[2]
local job = redis.call('HMGET', key, 'status', 'worker', 'attempts')
if job[1] ~= 'running' or job[2] ~= ARGV[3] or job[3] ~= ARGV[4] then return 0 end
redis.call('HSET', key, 'progress', ARGV[5])
if ARGV[6] == '' then redis.call('HDEL', key, 'meta')
else redis.call('HSET', key, 'meta', ARGV[6]) end
return 1
"""
)

# ARGV: prefix, entry, consumer: reset the entry's idle time if `consumer` still holds it
_RENEW = (
    _LIB
    + """
local held = redis.call('XPENDING', p .. 'stream', 'workers', ARGV[2], ARGV[2], 1)
if #held == 1 and held[1][2] == ARGV[3] then
  redis.call('XCLAIM', p .. 'stream', 'workers', ARGV[3], 0, ARGV[2], 'JUSTID')
  return 1
end
return 0
"""
)

# ARGV: prefix. The first version's queue (a stream of every pending job, read in order)
# becomes this one's: pending jobs join the default ready queue, their undelivered or
# never started entries leave the stream (running jobs keep theirs: their leases), and
# the index of all jobs is made. Once: `version` says it is done. -> 1 if it migrated
_MIGRATE = (
    _LIB
    + """
if redis.call('GET', p .. 'version') then return 0 end
redis.call('SET', p .. 'version', 2)
if not redis.call('GET', p .. 'next_id') then return 0 end
for _, entry in ipairs(redis.call('XRANGE', p .. 'stream', '-', '+')) do
  local id = entry[2][2]
  local job = redis.call('HMGET', p .. 'job:' .. id, 'status', 'entry')
  if job[1] ~= 'running' or job[2] ~= entry[1] then release(entry[1]) end
end
for _, id in ipairs(redis.call('ZRANGE', p .. 'status:pending', 0, -1)) do
  if not redis.call('ZSCORE', p .. 'delayed', id) then
    redis.call('ZADD', p .. 'ready:default', 0, member(id))
  end
end
redis.call('SADD', p .. 'queues', 'default')
local sets = {}
for _, status in ipairs({'pending', 'running', 'done', 'failed', 'cancelled'}) do
  table.insert(sets, p .. 'status:' .. status)
end
redis.call('ZUNIONSTORE', p .. 'all', #sets, unpack(sets))
return 1
"""
)


def _out_of_memory(exc: redis.RedisError) -> bool:
    """Whether Redis refused a write for its maxmemory: a command's own OOM error
    (redis.OutOfMemoryError), or a script's, which arrives wrapped in an ERR."""
    return isinstance(exc, redis.OutOfMemoryError) or "OOM command not allowed" in str(exc)


def _record(raw: dict[bytes, bytes]) -> dict[str, Any] | None:
    if not raw:
        return None
    data = {k.decode(): v.decode() for k, v in raw.items()}
    data["run_at"] = data.get("run_after")
    record: dict[str, Any] = {name: data.get(name) for name in FIELDS}
    for name in _INTEGERS:
        if record[name] is not None:
            record[name] = int(record[name])
    for name in _FLOATS:
        if record[name] is not None:
            record[name] = float(record[name])
    record["queue"] = record["queue"] or DEFAULT_QUEUE  # not stored: the default's
    return record


def _announced(data: bytes) -> dict[str, Any] | None:
    """The job in a `done` message (HGETALL's [field, value, ...] as JSON), if it is one."""
    try:
        flat = json.loads(data)
    except ValueError:
        return None
    if not isinstance(flat, list) or len(flat) % 2:
        return None
    return _record(
        {str(k).encode(): str(v).encode() for k, v in zip(flat[::2], flat[1::2], strict=True)}
    )


class _RedisWaiter(Waiter):
    def __init__(self, client: redis.Redis) -> None:
        self.pubsub = client.pubsub()
        self.pubsub.subscribe(PREFIX + "done")
        # the subscription is live once confirmed: from then on, no finish goes unheard
        while self.pubsub.get_message(timeout=1.0) is None:
            pass

    def wait(self, timeout: float) -> dict[int, dict[str, Any]]:
        heard: dict[int, dict[str, Any]] = {}
        message = self.pubsub.get_message(timeout=timeout)
        while message is not None:
            if message["type"] == "message":
                record = _announced(message["data"])
                if record is not None:
                    heard[record["job_id"]] = record
            message = self.pubsub.get_message(timeout=0)
        return heard

    def close(self) -> None:
        self.pubsub.close()


@dataclass(frozen=True)
class Idle:
    """What a claim that found nothing read for the worker to block on: the next delayed
    job's due time (None: none), and every queue (a worker of all of them waits on each)."""

    due: float | None
    queues: list[str]

    @classmethod
    def of(cls, got: Sequence[Any]) -> Idle:
        """From the scripts' answer {0, due or '', queue...}."""
        due = got[1].decode() if isinstance(got[1], bytes) else str(got[1])
        names = sorted(q.decode() if isinstance(q, bytes) else str(q) for q in got[2:])
        return cls(float(due) if due else None, names)


class RedisStore(Store):
    permanent_ids = False  # INCR starts again after a FLUSHALL

    def __init__(self, settings: JobsSettings, run_dir: Path) -> None:
        super().__init__(settings, run_dir)
        assert settings.redis_url is not None
        self.url = settings.redis_url
        self.shown_url = redact(self.url)  # the URL for messages: no password
        self.client = redis.Redis.from_url(self.url, socket_connect_timeout=5)
        self._scripts = {
            name: self.client.register_script(body)
            for name, body in (
                ("submit", _SUBMIT),
                ("claim", _CLAIM),
                ("finish", _FINISH),
                ("recover", _RECOVER),
                ("cancel", _CANCEL),
                ("requeue", _REQUEUE),
                ("delete", _DELETE),
                ("progress", _PROGRESS),
                ("renew", _RENEW),
                ("migrate", _MIGRATE),
            )
        }
        try:
            self._guard(self._create_group)
            self._guard(lambda: self._run("migrate"))
        except StoreUnavailable:
            self.client.close()  # a worker tries again and again while Redis is full
            raise
        digest = hashlib.sha1(str(run_dir).encode()).hexdigest()[:8]
        self._consumer_prefix = f"{socket.gethostname()}:{digest}:"
        self._held: tuple[str, str] | None = None  # (entry, consumer) of the running job
        self._idle: tuple[Idle, float] | None = None  # the last look's, and when (monotonic)
        self._keeper: threading.Thread | None = None
        self._recovered_own = False
        self._closed = threading.Event()

    def _guard(self, action: Callable[[], _T]) -> _T:
        """Run a Redis call; an unreachable server is one clear line, not a traceback."""
        try:
            return action()
        except redis.RedisError as exc:
            if _out_of_memory(exc):
                raise self._full() from None
            # the driver's words, in case a version of it ever quotes the URL
            why = scrub(str(exc), self.url)
            if isinstance(exc, redis.ConnectionError):
                raise StoreUnavailable(f"cannot reach redis at {self.shown_url}: {why}") from None
            raise StoreUnavailable(f"redis at {self.shown_url}: {why}") from None

    def _full(self) -> StoreFull:
        return StoreFull(
            f"the job store is full: redis at {self.shown_url} is at its maxmemory;"
            " free memory there (or raise maxmemory)"
        )

    def _create_group(self) -> None:
        try:
            # from id 0: entries added before the group existed are read too
            self.client.xgroup_create(PREFIX + "stream", GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if _out_of_memory(exc):
                raise self._full() from None
            if "BUSYGROUP" not in str(exc):
                raise

    def _run(self, name: str, *args: Any, client: Any = None) -> Any:
        """Run a script. Every write is one, so every refused write is StoreFull here:
        clients' (through `_guard`) and workers' alike."""
        try:
            return self._scripts[name](args=[PREFIX, *args], client=client)
        except redis.ResponseError as exc:
            if _out_of_memory(exc):
                raise self._full() from None
            raise

    def close(self) -> None:
        self._closed.set()
        if self._keeper is not None:
            self._keeper.join()
        self.client.close()

    # -- clients ---------------------------------------------------------------------

    def submit_many(self, jobs: list[NewJob], key: Key | None = None) -> list[int]:
        args = [repr(time.time())]
        args += [key.name, key.digest, str(KEY_TTL)] if key else ["", "", "0"]
        args.append(repr(self.settings.result_ttl))
        for job in jobs:
            if job.plain:
                args += ["P", job.function, str(job.input), str(job.mod)]
                continue
            fields: list[str] = []
            for name in _NEW_JOB_FIELDS:
                value = getattr(job, name)
                if value is not None and value != _DEFAULTS[name]:
                    fields += [name, repr(value) if isinstance(value, float) else str(value)]
            if job.depends_on:
                fields += ["depends_on", json.dumps(list(job.depends_on))]
            args += [str(len(fields) // 2), *fields]
        first, digest = self._guard(lambda: self._run("submit", *args))
        if int(first) < 0:
            raise JobNotFound(int(digest), "depends_on: ")
        ids = list(range(int(first), int(first) + len(jobs)))
        # the same digest means the same jobs, so as many of them as asked now
        return key.replay(digest.decode(), ids) if key else ids

    def get(self, job_id: int) -> dict[str, Any] | None:
        raw = self._guard(lambda: self.client.hgetall(f"{PREFIX}job:{job_id}"))
        # past its result_ttl a job is gone, as on SQLite, also before a worker deletes it
        return None if self._expired(raw, time.time()) else _record(raw)

    def _expired(self, raw: dict[bytes, bytes], now: float) -> bool:
        finished = raw.get(b"finished_time")
        if not finished:
            return False
        own = raw.get(b"result_ttl")
        ttl = float(own) if own else self.settings.result_ttl
        return ttl >= 0 and float(finished) + ttl <= now

    def _many(self, ids: list[int]) -> list[dict[str, Any]]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(f"{PREFIX}job:{job_id}")
        return [r for r in map(_record, self._guard(pipe.execute)) if r is not None]

    def list(
        self,
        status: Status | None,
        limit: int,
        offset: int,
        function: str | None = None,
        queue: str | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        key = PREFIX + ("all" if status is None else f"status:{status.value}")
        if function is None and queue is None:
            total = self._guard(lambda: self.client.zcard(key))
            raw = self._guard(lambda: self.client.zrange(key, offset, offset + limit - 1))
            return self._many([int(i) for i in raw] if limit else []), total
        # no index by function or queue: the jobs of the status, read a batch at a time
        matching: list[dict[str, Any]] = []
        total, start = 0, 0
        while batch := self._guard(lambda s=start: self.client.zrange(key, s, s + 999)):
            start += len(batch)
            for record in self._many([int(i) for i in batch]):
                if function is not None and record["function"] != function:
                    continue
                if queue is not None and record["queue"] != queue:
                    continue
                if offset <= total < offset + limit:
                    matching.append(record)
                total += 1
        return matching, total

    def cancel(self, job_id: int) -> dict[str, Any] | None:
        ttl = repr(self.settings.result_ttl)
        self._guard(lambda: self._run("cancel", job_id, repr(time.time()), ttl))
        return self.get(job_id)

    def requeue(self, job_ids: Sequence[int]) -> list[int]:
        if not job_ids:
            return []
        done = self._guard(lambda: self._run("requeue", repr(time.time()), *job_ids))
        return [int(i) for i in done]

    def failed_ids(self) -> list[int]:
        raw = self._guard(lambda: self.client.zrange(PREFIX + "status:failed", 0, -1))
        return [int(i) for i in raw]

    def purge(self, status: Status, before: float) -> int:
        ids = [
            int(i)
            for i in self._guard(
                lambda: self.client.zrange(f"{PREFIX}status:{status.value}", 0, -1)
            )
        ]
        deleted = 0
        for start in range(0, len(ids), 1000):
            old = [
                r["job_id"]
                for r in self._many(ids[start : start + 1000])
                if r["finished_time"] is not None and r["finished_time"] < before
            ]
            if old:
                deleted += self._guard(lambda old=old: self._run("delete", "0", *old))
        return deleted

    def purge_expired(self, now: float) -> int:
        return self._run("delete", repr(now))

    def busy(self, queues: Sequence[str] | None) -> bool:
        unfinished = [f"{PREFIX}status:{status}" for status in ("waiting", "pending", "running")]
        if queues is None:
            pipe = self.client.pipeline(transaction=False)
            for key in unfinished:
                pipe.zcard(key)
            return any(self._guard(pipe.execute))
        for key in unfinished:  # no index by queue: a batch at a time, to the first found
            start = 0
            while batch := self._guard(lambda k=key, s=start: self.client.zrange(k, s, s + 999)):
                start += len(batch)
                if any(r["queue"] in queues for r in self._many(list(map(int, batch)))):
                    return True
        return False

    def counts(self) -> dict[str, int]:
        pipe = self.client.pipeline(transaction=False)
        for status in Status:
            pipe.zcard(f"{PREFIX}status:{status.value}")
        return dict(zip((s.value for s in Status), self._guard(pipe.execute), strict=True))

    def finished_since(self, since: float) -> int:
        return self._guard(lambda: self.client.zcount(PREFIX + "finished", since, "+inf"))

    def durations(self) -> Durations:
        raw = self._guard(lambda: self.client.hgetall(PREFIX + "durations"))
        buckets = range(len(DURATION_BUCKETS) + 1)
        counts = [int(raw.get(str(bucket).encode(), 0)) for bucket in buckets]
        return Durations.from_counts(counts, float(raw.get(b"sum", 0.0)))

    def waiter(self) -> Waiter:
        return self._guard(lambda: _RedisWaiter(self.client))

    # -- workers -----------------------------------------------------------------------

    def _consumer(self, worker: WorkerId) -> str:
        return self._consumer_prefix + worker.replica

    @property
    def _queue_list(self) -> str:
        return "*" if self.queues is None else ",".join(self.queues)

    def _claim(self, worker: WorkerId, got: Any, now: float) -> Claim | None:
        """The claim a `start` (Lua) returned, now held under a renewed lease; None for
        `idle`'s answer (kept for the next `claim`, which then blocks at once)."""
        if not got:
            return None
        if isinstance(got[0], int):
            self._idle = (Idle.of(got), time.monotonic())
            return None
        job_id, entry, attempts, function, n, mod, args, kwargs, *policy = (
            value.decode() if isinstance(value, bytes) else value for value in got
        )
        self._hold(entry, self._consumer(worker))
        max_attempts, timeout, retry, result_ttl = (value or None for value in policy)
        return Claim(
            int(job_id),
            function,
            int(n) if n else None,
            int(mod) if mod else None,
            int(attempts),
            now,
            entry,
            args or None,
            kwargs or None,
            int(max_attempts) if max_attempts else None,
            float(timeout) if timeout else None,
            retry,
            float(result_ttl) if result_ttl else None,
        )

    def claim(self, worker: WorkerId, block: float) -> Claim | None:
        consumer = self._consumer(worker)
        # nothing was left to take when the last claim or finish looked, just now: block
        # at once (a submit since then left a wake-up token, which BLPOP takes at once)
        idle = self._fresh_idle()
        for _ in range(2):  # before sleeping, and once woken
            if idle is None:
                now = time.time()
                try:
                    got = self._run("claim", repr(now), consumer, worker.label, self._queue_list)
                except redis.ResponseError as exc:
                    self._lost_group(exc)
                    return None
                claim = self._claim(worker, got, now)
                if claim is not None:
                    return claim
                idle = self._fresh_idle()
            if not self._sleep(block, idle):
                return None
            idle = None
        return None

    def _fresh_idle(self) -> Idle | None:
        """What the last look found to block on, if it was just now (IDLE_FRESH)."""
        kept, self._idle = self._idle, None
        if kept is None or time.monotonic() - kept[1] > IDLE_FRESH:
            return None
        return kept[0]

    def _sleep(self, block: float, idle: Idle | None) -> bool:
        """Wait for a submit to one of our queues, or a delayed job's time; True if woken."""
        if idle is None:  # the look failed oddly (a flushed server): look again shortly
            time.sleep(min(block, 0.01))
            return True
        block = min(block, BLOCK_MAX)
        if idle.due is not None:
            block = min(block, max(0.0, idle.due - time.time()))
        if block <= 0.001:
            return True
        queues = idle.queues if self.queues is None else list(self.queues)
        keys = [f"{PREFIX}wake:{q}" for q in queues or [DEFAULT_QUEUE]]
        return self.client.blpop(keys, timeout=block) is not None

    def interrupt(self) -> None:
        """Nothing to do: a blocking read lasts at most BLOCK_MAX."""

    def finish(
        self,
        worker: WorkerId,
        claim: Claim,
        output: int | str | None,
        error: str | None,
        claim_next: bool,
        retry_in: float | None = None,
    ) -> Claim | None:
        now = time.time()
        if error is None:
            outcome, value, run_after = "done", str(output), 0.0
        elif retry_in is not None:
            outcome, value, run_after = "retry", error, now + retry_in
        else:
            outcome, value, run_after = "failed", error, 0.0
        self._held = None
        consumer = self._consumer(worker) if claim_next else ""
        try:
            # the result recorded and the next job claimed in one call, one round trip
            got = self._run(
                "finish",
                claim.job_id,
                claim.entry,
                repr(now),
                worker.label,
                claim.attempts,
                outcome,
                value,
                repr(run_after),
                consumer,
                "output" if claim.args is None else "result",
                repr(self.settings.result_ttl),
                self._queue_list,
            )
        except redis.ResponseError as exc:  # the result is recorded: the read failed after
            self._lost_group(exc)
            return None
        return self._claim(worker, got, now)

    def progress(self, worker: WorkerId, claim: Claim, fraction: float, meta: str | None) -> bool:
        args = (claim.job_id, worker.label, claim.attempts, repr(fraction), meta or "")
        return bool(self._run("progress", *args))

    def _lost_group(self, exc: redis.ResponseError) -> None:
        """The stream and its group are gone (FLUSHDB, say): create them again."""
        # NOGROUP: found missing; UNBLOCKED: deleted while we were blocked reading it
        if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
            raise exc
        self._create_group()

    def recover(self, worker: WorkerId) -> int:
        try:
            self.purge_expired(time.time())
            return self._recover(worker)
        except redis.ResponseError as exc:
            self._lost_group(exc)
            return 0

    def _recover(self, worker: WorkerId) -> int:
        stream, consumer = PREFIX + "stream", self._consumer(worker)
        entries: list[tuple[str, int, str]] = []  # (entry, job id or 0, what happened)
        if not self._recovered_own:
            # our predecessor's entries: it is dead, since we replace it
            self._recovered_own = True
            for item in self.client.xpending_range(stream, GROUP, "-", "+", 1000, consumer):
                entries.append((item["message_id"].decode(), 0, "died"))
        # entries of consumers silent longer than a lease: dead, or hung
        _next, claimed, *_ = self.client.xautoclaim(
            stream, GROUP, consumer, int(LEASE * 1000), "0-0", count=100
        )
        for entry_id, fields in claimed:
            if fields:  # a deleted entry comes back empty
                entries.append(
                    (entry_id.decode(), int(fields[b"id"]), "died or hung (lease lapsed)")
                )
        taken = 0
        for entry, job_id, what in entries:
            if job_id == 0:
                raw = self.client.xrange(stream, entry, entry)
                if not raw:
                    self.client.xack(stream, GROUP, entry)
                    continue
                job_id = int(raw[0][1][b"id"])
            taken += self._run(
                "recover",
                job_id,
                entry,
                repr(time.time()),
                self.settings.max_attempts,
                repr(self.settings.timeout),
                worker.label,
                what,
                repr(self.settings.result_ttl),
            )
        return taken

    def cancelled(self, claim: Claim) -> bool:
        status = self.client.hget(f"{PREFIX}job:{claim.job_id}", "status")
        return status == Status.CANCELLED.value.encode()

    # -- the lease keeper --------------------------------------------------------------

    def _hold(self, entry: str, consumer: str) -> None:
        self._held = (entry, consumer)
        if self._keeper is None:
            # a thread, so the lease holds while a job runs long in the main thread; a
            # hung (stopped) process stops it too, and then its lease lapses as it should
            self._keeper = threading.Thread(target=self._keep, name="lease-keeper", daemon=True)
            self._keeper.start()

    def _keep(self) -> None:
        """Reset the held entry's idle time every RENEW_EVERY s, so no one takes it."""
        client = redis.Redis.from_url(self.url, socket_connect_timeout=5)
        try:
            while not self._closed.wait(RENEW_EVERY):
                held = self._held
                if held is not None:
                    self._run("renew", *held, client=client)
        finally:
            client.close()
