"""The shared store: jobs in a Redis server, so daemons on several hosts share one queue.

Layout (every key under `procorch:`): a hash per job (`job:ID`), ids from INCR (never
reused), a stream of the jobs to run read by the consumer group `workers`, a sorted
set of ids per status (for list and counts), `delayed` (retries waiting out their
backoff, by due time), `finished` (the last minute's finish times, for throughput) and
`durations` (the duration histogram: a count per bucket index, and the sum in seconds).
Every change of a job is one Lua script, so it is atomic and one round trip.

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
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import redis

from procorch.config import JobsSettings
from procorch.jobs.job import FIELDS, Status, StoreFull, StoreUnavailable, backoff
from procorch.jobs.store import (
    DURATION_BUCKETS,
    KEY_TTL,
    Claim,
    Durations,
    Key,
    Store,
    Waiter,
    WorkerId,
)
from procorch.redaction import redact, scrub

PREFIX = "procorch:"
GROUP = "workers"
LEASE = 2.0  # seconds an entry may sit unrenewed before another consumer takes it
RENEW_EVERY = LEASE / 8
BLOCK_MAX = 0.25  # XREADGROUP cannot be cut short by a signal: a stop waits at most this
FINISHED_WINDOW = 60.0  # seconds of finish times kept for throughput
_T = TypeVar("_T")

_INTEGERS = ("job_id", "input", "mod", "output", "attempts")
_TIMES = ("init_time", "started_time", "finished_time")

# KEYS: none (one server, no cluster). ARGV[1] is always the prefix. Inputs and moduli
# stay strings: Lua numbers are doubles, exact only up to 2**53.
_LIB = """
local p = ARGV[1]
local bounds = DURATION_BUCKETS
local function move(id, from, to)
  redis.call('ZREM', p .. 'status:' .. from, id)
  redis.call('ZADD', p .. 'status:' .. to, id, id)
end
local function enqueue(id)
  local entry = redis.call('XADD', p .. 'stream', '*', 'id', id)
  redis.call('HSET', p .. 'job:' .. id, 'entry', entry)
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
-- done or failed, never a retry or a cancel: each job passes here once
local function finished(id, now)
  redis.call('ZADD', p .. 'finished', now, id)
  redis.call('ZREMRANGEBYSCORE', p .. 'finished', '-inf', now - FINISHED_WINDOW)
  observe(id, now)
  announce(id)
end
-- run the job an entry delivered: {id, entry, function, input, mod, attempts}, or false
local function start(id, entry, now, label)
  local key = p .. 'job:' .. id
  local job = redis.call('HMGET', key, 'status', 'entry', 'function', 'input', 'mod')
  if job[1] ~= 'pending' or job[2] ~= entry then
    release(entry)  -- cancelled, or a stale entry of a job re-queued since
    return false
  end
  local attempts = redis.call('HINCRBY', key, 'attempts', 1)
  redis.call('HSET', key, 'status', 'running', 'started_time', now, 'worker', label)
  redis.call('HDEL', key, 'finished_time')
  move(id, 'pending', 'running')
  return {id, entry, job[3], job[4], job[5], attempts}
end
-- read (without blocking) and start the next runnable job, or false
local function take(consumer, now, label)
  for _ = 1, 16 do  -- past the entries of cancelled jobs
    local got = redis.call('XREADGROUP', 'GROUP', 'workers', consumer, 'COUNT', 1,
      'STREAMS', p .. 'stream', '>')
    if not got then return false end
    local message = got[1][2][1]
    local claim = start(message[2][2], message[1], now, label)
    if claim then return claim end
  end
  return false
end
""".replace("FINISHED_WINDOW", repr(FINISHED_WINDOW)).replace(
    "DURATION_BUCKETS",
    "{" + ", ".join(map(repr, DURATION_BUCKETS)) + "}",  # Python's list
)

# ARGV: prefix, now, key ('' for none), its digest, its ttl, then (function, n, mod) per
# job -> {first id, digest}: the first submission's under that key if there was one
_SUBMIT = (
    _LIB
    + """
local keyed = p .. 'key:' .. ARGV[3]
if ARGV[3] ~= '' then
  local seen = redis.call('HMGET', keyed, 'first', 'digest')
  if seen[1] then return {tonumber(seen[1]), seen[2]} end
end
local count = (#ARGV - 5) / 3
local last = redis.call('INCRBY', p .. 'next_id', count)
local first = last - count + 1
for i = 0, count - 1 do
  local id = first + i
  redis.call('HSET', p .. 'job:' .. id, 'job_id', id, 'status', 'pending',
    'function', ARGV[6 + 3 * i], 'input', ARGV[7 + 3 * i], 'mod', ARGV[8 + 3 * i],
    'attempts', 0, 'init_time', ARGV[2])
  redis.call('ZADD', p .. 'status:pending', id, id)
  enqueue(id)
end
if ARGV[3] ~= '' then
  redis.call('HSET', keyed, 'first', first, 'digest', ARGV[4])
  redis.call('EXPIRE', keyed, ARGV[5])
end
return {first, ARGV[4]}
"""
)

# ARGV: prefix, job id, entry, now, worker label -> a claim (see `start`) or false
_START = _LIB + "return start(ARGV[2], ARGV[3], ARGV[4], ARGV[5])"

# ARGV: prefix, job id, entry, now, worker label, attempts, outcome, value, run_after,
# consumer. outcome: done (value = output), retry or failed (value = error). Records the
# attempt, then (if consumer is not empty) claims the next job in the same call.
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
    redis.call('HSET', key, 'status', 'done', 'output', ARGV[8], 'finished_time', ARGV[4])
    redis.call('HDEL', key, 'error')
    move(id, 'running', 'done')
    finished(id, now)
  elseif ARGV[7] == 'retry' then
    redis.call('HSET', key, 'status', 'pending', 'error', ARGV[8])
    move(id, 'running', 'pending')
    redis.call('ZADD', p .. 'delayed', ARGV[9], id)
  else
    redis.call('HSET', key, 'status', 'failed', 'error', ARGV[8], 'finished_time', ARGV[4])
    move(id, 'running', 'failed')
    finished(id, now)
  end
end
record()
if ARGV[10] == '' then return false end
return take(ARGV[10], ARGV[4], ARGV[5])
"""
)

# ARGV: prefix, job id, entry, now, max_attempts, timeout, taker label, what happened
# The entry's consumer is gone (or hung): put its job back, or fail it. -> 1 if taken back
_RECOVER = (
    _LIB
    + """
local id = ARGV[2]
local key = p .. 'job:' .. id
local job = redis.call('HMGET', key, 'status', 'entry', 'worker', 'attempts', 'started_time')
if job[2] ~= ARGV[3] then release(ARGV[3]) return 0 end  -- a stale entry
if job[1] ~= 'running' then  -- delivered, never started: deliver again
  release(ARGV[3])
  if job[1] == 'pending' then enqueue(id) end
  return 0
end
if job[3] == ARGV[7] then return 0 end  -- the taker's own job
release(ARGV[3])
local now = tonumber(ARGV[4])
local why = 'worker ' .. job[3] .. ' ' .. ARGV[8]
if now - tonumber(job[5]) >= tonumber(ARGV[6]) then
  why = 'timed out after ' .. ARGV[6] .. 's (worker killed)'
end
if tonumber(job[4]) < tonumber(ARGV[5]) then
  redis.call('HSET', key, 'status', 'pending', 'error', why)
  move(id, 'running', 'pending')
  enqueue(id)
else
  redis.call('HSET', key, 'status', 'failed', 'error', why, 'finished_time', ARGV[4])
  move(id, 'running', 'failed')
  finished(id, now)
end
return 1
"""
)

# ARGV: prefix, job id, now -> 1 if cancelled
_CANCEL = (
    _LIB
    + """
local id = ARGV[2]
local key = p .. 'job:' .. id
local status = redis.call('HGET', key, 'status')
if status ~= 'pending' and status ~= 'running' then return 0 end  -- job.CANCELLABLE
redis.call('HSET', key, 'status', 'cancelled', 'finished_time', ARGV[3])
move(id, status, 'cancelled')
redis.call('ZREM', p .. 'delayed', id)
announce(id)
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

# ARGV: prefix, now -> seconds until the next delayed job is due (-1: none)
_PROMOTE = (
    _LIB
    + """
local due = redis.call('ZRANGEBYSCORE', p .. 'delayed', '-inf', ARGV[2], 'LIMIT', 0, 100)
for _, id in ipairs(due) do
  redis.call('ZREM', p .. 'delayed', id)
  if redis.call('HGET', p .. 'job:' .. id, 'status') == 'pending' then enqueue(id) end
end
local next = redis.call('ZRANGE', p .. 'delayed', 0, 0, 'WITHSCORES')
if #next == 0 then return '-1' end
return tostring(tonumber(next[2]) - tonumber(ARGV[2]))
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
    record: dict[str, Any] = {name: data.get(name) for name in FIELDS}
    for name in _INTEGERS:
        if record[name] is not None:
            record[name] = int(record[name])
    for name in _TIMES:
        if record[name] is not None:
            record[name] = float(record[name])
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
                ("start", _START),
                ("finish", _FINISH),
                ("recover", _RECOVER),
                ("cancel", _CANCEL),
                ("promote", _PROMOTE),
                ("renew", _RENEW),
            )
        }
        try:
            self._guard(self._create_group)
        except StoreUnavailable:
            self.client.close()  # a worker tries again and again while Redis is full
            raise
        digest = hashlib.sha1(str(run_dir).encode()).hexdigest()[:8]
        self._consumer_prefix = f"{socket.gethostname()}:{digest}:"
        self._held: tuple[str, str] | None = None  # (entry, consumer) of the running job
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

    def submit_many(self, jobs: list[tuple[str, int, int]], key: Key | None = None) -> list[int]:
        args = [repr(time.time())]
        args += [key.name, key.digest, str(KEY_TTL)] if key else ["", "", "0"]
        for function, n, mod in jobs:
            args += [function, str(n), str(mod)]
        first, digest = self._guard(lambda: self._run("submit", *args))
        ids = list(range(int(first), int(first) + len(jobs)))
        # the same digest means the same jobs, so as many of them as asked now
        return key.replay(digest.decode(), ids) if key else ids

    def get(self, job_id: int) -> dict[str, Any] | None:
        return _record(self._guard(lambda: self.client.hgetall(f"{PREFIX}job:{job_id}")))

    def _many(self, ids: list[int]) -> list[dict[str, Any]]:
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(f"{PREFIX}job:{job_id}")
        return [r for r in map(_record, self._guard(pipe.execute)) if r is not None]

    def list(
        self, status: Status | None, limit: int, offset: int
    ) -> tuple[list[dict[str, Any]], int]:
        if status is None:  # ids run from 1 with none missing: no index needed
            total = int(self._guard(lambda: self.client.get(PREFIX + "next_id")) or 0)
            ids = list(range(offset + 1, min(total, offset + limit) + 1))
        else:
            key = f"{PREFIX}status:{status.value}"
            total = self._guard(lambda: self.client.zcard(key))
            raw = self._guard(lambda: self.client.zrange(key, offset, offset + limit - 1))
            ids = [int(i) for i in raw] if limit else []
        return self._many(ids), total

    def cancel(self, job_id: int) -> dict[str, Any] | None:
        self._guard(lambda: self._run("cancel", job_id, repr(time.time())))
        return self.get(job_id)

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

    def _claim(self, worker: WorkerId, got: Any, now: float) -> Claim | None:
        """The claim a `start` (Lua) returned, now held under a renewed lease."""
        if not got:
            return None
        job_id, entry, function, n, mod, attempts = got
        entry = entry.decode()
        self._hold(entry, self._consumer(worker))
        return Claim(int(job_id), function.decode(), int(n), int(mod), int(attempts), now, entry)

    def claim(self, worker: WorkerId, block: float) -> Claim | None:
        due = float(self._run("promote", repr(time.time())))
        block = min(block, BLOCK_MAX) if due < 0 else min(block, BLOCK_MAX, due)
        try:
            entries = self.client.xreadgroup(
                GROUP,
                self._consumer(worker),
                {PREFIX + "stream": ">"},
                count=1,
                block=max(1, int(block * 1000)),
            )
        except redis.ResponseError as exc:
            self._lost_group(exc)
            return None
        if not entries or not entries[0][1]:
            return None
        entry, fields = entries[0][1][0]
        now = time.time()
        got = self._run("start", int(fields[b"id"]), entry.decode(), repr(now), worker.label)
        return self._claim(worker, got, now)

    def interrupt(self) -> None:
        """Nothing to do: a blocking read lasts at most BLOCK_MAX."""

    def finish(
        self,
        worker: WorkerId,
        claim: Claim,
        output: int | None,
        error: str | None,
        claim_next: bool,
    ) -> Claim | None:
        now = time.time()
        if error is None:
            outcome, value, run_after = "done", str(output), 0.0
        elif claim.attempts < self.settings.max_attempts:
            outcome, value, run_after = "retry", error, now + backoff(claim.attempts)
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
            )
        except redis.ResponseError as exc:  # the result is recorded: the read failed after
            self._lost_group(exc)
            return None
        return self._claim(worker, got, now)

    def _lost_group(self, exc: redis.ResponseError) -> None:
        """The stream and its group are gone (FLUSHDB, say): create them again."""
        # NOGROUP: found missing; UNBLOCKED: deleted while we were blocked reading it
        if "NOGROUP" not in str(exc) and "UNBLOCKED" not in str(exc):
            raise exc
        self._create_group()

    def recover(self, worker: WorkerId) -> int:
        try:
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
