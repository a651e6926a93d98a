"""The job record: its states, the transitions between them, its fields and its errors.

Every store keeps the same fields and follows this one transition table; the job a
user sees is always the dict `public()` returns.
"""

from __future__ import annotations

import enum
import json
import math
import time
from typing import Any

FIELDS = (
    "job_id",
    "status",
    "function",
    "args",
    "kwargs",
    "input",  # the Fibonacci-shaped jobs' n and m (f(n, mod) -> int), else null
    "mod",
    "result",
    "output",  # the Fibonacci-shaped jobs' result, else null
    "error",
    "errors",  # every failed attempt: [{"attempt", "error", "at"}, ...]
    "progress",
    "meta",
    "priority",
    "queue",
    "depends_on",
    "attempts",
    "run_at",
    "init_time",
    "started_time",
    "finished_time",
    "worker",
)
TIME_FIELDS = ("init_time", "started_time", "finished_time", "run_at")
JSON_FIELDS = ("args", "kwargs", "result", "meta", "errors", "depends_on")
DEFAULT_FUNCTION = "fib"
DEFAULT_QUEUE = "default"
MAX_PAYLOAD = 1024 * 1024  # bytes of a job's JSON args and kwargs together
MAX_META = 64 * 1024  # bytes of a progress report's JSON meta


class Status(enum.StrEnum):
    WAITING = "waiting"  # for the jobs it depends on
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED})

# running -> pending is a retry (a failed attempt with attempts left, or a dead worker's job);
# waiting -> pending when the last job it depends on is done (cancelled if one is not);
# failed -> pending is a requeue (`job requeue`): the dead letters go back.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.WAITING: frozenset({Status.PENDING, Status.CANCELLED}),
    Status.PENDING: frozenset({Status.RUNNING, Status.CANCELLED}),
    Status.RUNNING: frozenset({Status.DONE, Status.FAILED, Status.PENDING, Status.CANCELLED}),
    Status.DONE: frozenset(),
    Status.FAILED: frozenset({Status.PENDING}),
    Status.CANCELLED: frozenset(),
}


# The states a job can be cancelled from, as the stores' cancel statements spell them.
CANCELLABLE = tuple(s.value for s in Status if Status.CANCELLED in TRANSITIONS[s])


class JobError(Exception):
    """A job request that cannot be served; str() is one line for the user."""


class JobNotFound(JobError):
    def __init__(self, job_id: int, what: str = "") -> None:
        super().__init__(f"{what}no job with id {job_id}")
        self.job_id = job_id


class InvalidJob(JobError):
    """Bad input: n or mod out of range, not an integer, an unknown function or status."""


class JobConflict(JobError):
    """The job's state does not allow it: cancelling a job that has finished."""


class StoreUnavailable(JobError):
    """The job store cannot serve: Redis unreachable or refusing, the database unusable."""


class StoreFull(StoreUnavailable):
    """The job store has no room to write: the run directory's disk is full, or Redis is
    at its `maxmemory` (with `noeviction`). Nothing was written; reads still work where
    the store allows, and writes succeed again once room is made, without a restart.
    A StoreUnavailable too, so code that handles an unusable store handles this."""


class JobTimeout(JobError, TimeoutError):
    """`wait` gave up before the job finished."""


def iso(t: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC with milliseconds, e.g. 2026-01-02T03:04:05.678Z."""
    if t is None:
        return None
    ms = int(round(t * 1000))
    seconds, ms = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ms:03d}Z"


def public(record: dict[str, Any]) -> dict[str, Any]:
    """The job as users see it: exactly FIELDS, times as ISO 8601 strings, JSON decoded.

    A Fibonacci-shaped job (n, mod; no JSON args) shows them as args [n, mod] and its
    output as its result, so every job reads the same way."""
    job = {name: record.get(name) for name in FIELDS}
    for name in JSON_FIELDS:
        if isinstance(job[name], str | bytes):
            job[name] = json.loads(job[name])
    if job["args"] is None and job["input"] is not None:
        job["args"], job["kwargs"], job["result"] = [job["input"], job["mod"]], {}, job["output"]
    job["kwargs"] = job["kwargs"] or {}
    job["errors"] = job["errors"] or []
    job["depends_on"] = job["depends_on"] or []
    job["priority"] = job["priority"] or 0
    if job["run_at"] is not None and job["run_at"] <= (job["init_time"] or 0):
        job["run_at"] = None  # due at once: no time to show
    for name in TIME_FIELDS:
        job[name] = iso(job[name])
    return job


SHOWN_MAX = 40  # characters of a bad value an error message repeats


def _digits(value: int) -> str:
    """How many decimal digits an int has, without str(): past 4300 digits Python refuses
    that conversion (and it is quadratic before). Exact up to 100,000 digits."""
    magnitude = abs(value)
    digits = int(magnitude.bit_length() * math.log10(2)) + 1  # the count, or one more
    if digits > 100_000:
        return f"about {digits}"
    return str(digits - 1 if magnitude < 10 ** (digits - 1) else digits)


def shown(value: Any) -> str:
    """A bad value for a one-line error message: as typed if short, else cut or described."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {_digits(value)} digits"
    text = repr(value)
    if len(text) <= SHOWN_MAX:
        return text
    return f"{text[: SHOWN_MAX - 4]}...{text[-1]} ({len(text)} characters)"


def check_key(key: Any) -> str:
    """An idempotency key, as the services take them (`protocol.key_problem`), or InvalidJob."""
    from procorch.services.protocol import key_problem

    problem = key_problem(key)
    if problem is not None:
        raise InvalidJob(f"an idempotency key {problem}, got {shown(key)}")
    return key


def check_integer(value: Any, what: str, minimum: int, maximum: int) -> int:
    """`value` as an int within [minimum, maximum], or InvalidJob saying why not."""
    if isinstance(value, str):
        digits = value.strip().lstrip("+-").replace("_", "").lstrip("0")
        widest = max(len(str(abs(minimum))), len(str(maximum)))
        if digits.isdecimal() and len(digits) > widest:
            # out of range whatever its value: say so without int(), which refuses
            # strings over 4300 digits (sys.get_int_max_str_digits) and is slow before
            raise InvalidJob(
                f"{what} must be from {minimum} to {maximum}, got an integer of"
                f" {len(digits)} digits"
            )
        try:
            value = int(value.strip())
        except ValueError:
            raise InvalidJob(f"{what} must be an integer, got {shown(value)}") from None
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJob(f"{what} must be an integer, got {shown(value)}")
    if not minimum <= value <= maximum:
        raise InvalidJob(f"{what} must be from {minimum} to {maximum}, got {shown(value)}")
    return value


def check_status(value: str | None) -> Status | None:
    if value is None:
        return None
    try:
        return Status(value.lower())
    except ValueError:
        known = ", ".join(s.value for s in Status)
        raise InvalidJob(f"unknown status {value!r} (one of {known})") from None


def backoff(attempts: int) -> float:
    """Seconds before retry number `attempts` (1, 2, ...): 0.1, 0.2, 0.4 ... at most 10."""
    return min(10.0, 0.1 * 2 ** (attempts - 1))


_COMPACT = json.JSONEncoder(separators=(",", ":"), allow_nan=False)  # one, not one per call


def encoded(value: Any, what: str, limit: int = MAX_PAYLOAD) -> str:
    """`value` as compact JSON, or InvalidJob if it is not JSON or longer than `limit` bytes."""
    try:
        text = _COMPACT.encode(value)
    except (TypeError, ValueError) as exc:
        raise InvalidJob(f"{what} must be JSON: {exc}") from None
    if len(text) > limit:  # characters <= bytes: a cheap first look
        size = len(text.encode())
        if size > limit:
            raise InvalidJob(f"{what} is {size} bytes encoded, more than {limit}")
    return text


def call_text(function: str, args: list[Any] | None, kwargs: dict[str, Any] | None) -> str:
    """A call as Python reads: send("a@b", subject="hi")."""
    parts = [json.dumps(a) for a in args or []]
    parts += [f"{k}={json.dumps(v)}" for k, v in (kwargs or {}).items()]
    return f"{function}({', '.join(parts)})"
