"""The base class of a Python service, and the context the supervisor hands it.

A service subclasses `Service`, declares its actions with `@action("name")`, and
overrides `setup`, `tick` and `teardown` as it needs. The supervisor runs each replica
in its own process (see `__main__`). A service with actions listens on its replica's
socket (see `server`) from just after `setup` on; each request is counted in the
replica's slot of the shared statistics. The main loop heartbeats between ticks, so a
replica whose loop hangs stops heartbeating and is restarted: the heartbeat proves the
loop runs, not just the process.

    class Greeter(Service):
        @action("greet")
        def greet(self, data: dict) -> dict:
            return {"greeting": f"hello, {data.get('name', 'world')}"}

An action that creates something is declared `idempotent=True` and writes through
`self.commit`, so that a request sent again with the same idempotency key (its reply was
lost: the caller cannot know whether it committed) creates nothing and gets the first
reply. The key and the reply are stored in the same transaction as the record, in the
service's own database (`self.db`):

    @action("create_note", idempotent=True)
    def create_note(self, data: dict) -> dict:
        text = fields.text(data, "text")             # validate, ask other services...
        return self.commit(lambda db: {"note": db.execute(
            "INSERT INTO notes (text) VALUES (?) RETURNING *", (text,)).fetchone()})
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import signal
import sqlite3
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from procorch.config import Config
from procorch.services import protocol
from procorch.services.database import FIND_KEY, KEEP_KEY, PURGE_KEYS, Database, Row
from procorch.services.protocol import Invalid, KeyReused, ServiceError
from procorch.services.registry import socket_path
from procorch.stats import StatsTable

if TYPE_CHECKING:
    from procorch.services.client import Client

ActionFn = Callable[[Any, dict[str, Any]], Any]
F = TypeVar("F", bound=ActionFn)
T = TypeVar("T")

IDEMPOTENCY_RETENTION = float(protocol.KEY_RETENTION)
PURGE_INTERVAL = 60.0  # seconds between purges of expired keys, per process
_UNSET: Any = object()


def action(name: str | None = None, *, idempotent: bool = False) -> Callable[[F], F]:
    """Mark a method as the handler of action `name` (default: the method's name).

    The method takes the request's `data` (a dict) and returns the reply's data (any
    JSON value). To refuse, it raises a `ServiceError` (`Invalid`, `NotFound`,
    `Conflict`...); any other exception becomes an `internal` error reply, and the
    traceback goes to the replica's log.

    `idempotent`: the action takes an idempotency key; it writes with `Service.commit`
    and returns what that returned (see the module's docstring). Any other action
    refuses a request with a key, rather than let the caller believe it is protected.
    """

    def mark(fn: F) -> F:
        fn._procorch_action = name or fn.__name__  # type: ignore[attr-defined]
        fn._procorch_idempotent = idempotent  # type: ignore[attr-defined]
        return fn

    return mark


def exception_line(exc: BaseException) -> str:
    """An exception as its traceback's last line: 'RuntimeError: no database'."""
    text = str(exc).strip()
    line = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


@dataclass
class _Keyed:
    """The idempotency key of the request a thread is handling, and what it committed."""

    scope: str
    key: str
    action: str
    request_hash: str
    reply: Any = _UNSET  # the reply `commit` stored with the key, once it has


class _Replay(BaseException):
    """`commit` found the key stored by a request that committed first (they raced): the
    action stops there and the stored reply is the answer. A BaseException, so that an
    action's `except Exception` cannot catch it and carry on as if it had written."""

    def __init__(self, reply: Any) -> None:
        super().__init__()
        self.reply = reply


def request_hash(action: str, data: dict[str, Any]) -> str:
    """A digest of a request: the same key with another digest is another request."""
    canonical = json.dumps([action, data], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def key_scope(sender: Any) -> str:
    """Whose keys a request's key is among: its sender's name without the replica number
    (`OrderService.1` -> `OrderService`), so a service's replicas share their keys and
    an HTTP client (whose requests the gateway sends) cannot take one of a service's."""
    if type(sender) is not str:
        return ""
    name, dot, replica = sender.rpartition(".")
    return name if dot and replica.isdigit() else sender


@dataclass(frozen=True)
class ServiceContext:
    """Where a replica is: handed over by the supervisor through the environment."""

    name: str
    replica: int
    run_dir: Path
    slot: int
    heartbeat_interval: float

    @classmethod
    def from_environ(cls) -> ServiceContext:
        env = os.environ
        return cls(
            name=env["PROCORCH_SERVICE"],
            replica=int(env.get("PROCORCH_REPLICA", "0")),
            run_dir=Path(env["PROCORCH_RUN_DIR"]),
            slot=int(env["PROCORCH_SLOT"]),
            heartbeat_interval=float(env.get("PROCORCH_HEARTBEAT_INTERVAL", "1.0")),
        )

    @functools.cached_property
    def config(self) -> Config:
        """The daemon's resolved configuration (it writes `config.json` before any start)."""
        return Config.from_json((self.run_dir / "config.json").read_text())


class Service:
    """Subclass me. `tick` runs every `tick_interval` seconds (None: only heartbeats)."""

    tick_interval: float | None = None
    actions: ClassVar[dict[str, ActionFn]] = {}
    # Where an idempotent action's records and keys go: set in `setup`.
    db: Database | None = None
    idempotency_retention: float = IDEMPOTENCY_RETENTION  # seconds a key is kept, at least
    idempotency_purge_interval: float = PURGE_INTERVAL  # seconds between purges of old keys

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        found: dict[str, ActionFn] = {}
        for klass in reversed(cls.__mro__):  # a subclass's handler wins over its base's
            for fn in vars(klass).values():
                name = getattr(fn, "_procorch_action", None)
                if name is not None:
                    found[name] = fn
        cls.actions = found

    def __init__(self, context: ServiceContext) -> None:
        self.context = context
        self.stats = StatsTable(context.run_dir / "stats.bin")
        self._stopping = threading.Event()
        self._stats_lock = threading.Lock()  # a counter update is read-modify-write
        self._server = None
        self._request = threading.local()  # .keyed: the key of the request being handled
        self._purged_at = 0.0

    def open_database(self, name: str, schema: str) -> Database:
        """The service's own SQLite file, `data/NAME.db`, as durable as the config says
        (`[procorch] synchronous`)."""
        return Database(
            self.context.run_dir, name, schema, self.context.config.settings.synchronous
        )

    @functools.cached_property
    def client(self) -> Client:
        """A client to call other services, named after this replica in its requests."""
        from procorch.services.client import Client

        ctx = self.context
        return Client(ctx.run_dir, sender=f"{ctx.name}.{ctx.replica}")

    # -- for subclasses ------------------------------------------------------------

    def setup(self) -> None:
        """Open resources; runs once before the first heartbeat (the replica is not ready yet)."""

    def tick(self) -> None:
        """Periodic work."""

    def teardown(self) -> None:
        """Close resources; runs once after a stop signal."""

    # -- the loop --------------------------------------------------------------------

    def stop(self) -> None:
        self._stopping.set()

    def heartbeat(self) -> None:
        self.stats.heartbeat(self.context.slot)

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def serve(self) -> None:
        """Run until SIGTERM or SIGINT; the first heartbeat tells the supervisor we are ready."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stop())
        self.setup()
        try:
            self._check_idempotent_actions()
            if self.actions:
                from procorch.services.server import RequestServer

                path = socket_path(self.context.run_dir, self.context.name, self.context.replica)
                self._server = RequestServer(path, self.handle)
                self._server.start()
            self.run()
        finally:
            if self._server is not None:
                self._server.close()
            self.teardown()

    def handle(self, body: bytes) -> bytes | None:
        """One request frame's body in, its reply frame out (None for a notification)."""
        started = time.perf_counter()
        request_id = None
        wanted = True  # a frame we cannot read is answered, whatever it asked
        try:
            message = protocol.parse_request(body)
            request_id = message["request_id"]
            wanted = message.get("reply", True) is not False
            fn = self.actions.get(message["action"])
            if fn is None:  # in the original's words, which scripts may match
                raise ServiceError("unknown_action", f"Unknown action: {message['action']}")
            if message.get("idempotency_key") is None:
                reply = protocol.success(request_id, fn(self, message["data"]))
            else:
                reply = protocol.success(request_id, self._run_keyed(fn, message))
        except ServiceError as exc:
            reply = protocol.error(request_id, exc.code, exc.message)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            reply = protocol.error(request_id, "internal", f"{type(exc).__name__}: {exc}")
        self.count_request(time.perf_counter() - started, reply["status"] == "error")
        if not wanted:
            return None
        try:
            return protocol.frame(reply)
        except (TypeError, ValueError) as exc:  # the action returned something unsendable
            return protocol.frame(protocol.error(request_id, "internal", str(exc)))

    # -- idempotency keys ----------------------------------------------------------------

    def commit(self, write: Callable[[sqlite3.Connection], T]) -> T:
        """Run `write(db)` in a transaction of `self.db` and return what it returned.

        In an idempotent action handling a request with a key, that is the reply: it is
        stored with the key in the same transaction, and the action must return it as it
        is. If a request with the same key committed first (they raced), `write` is not run
        and the action stops here: the reply is that request's. Once per request."""
        keyed: _Keyed | None = getattr(self._request, "keyed", None)
        db = self._database()
        if keyed is None:
            with db.transaction() as conn:
                return write(conn)
        if keyed.reply is not _UNSET:
            raise RuntimeError(f"{keyed.action}: commit runs once per request")
        now = time.time()
        with db.transaction() as conn:
            stored = conn.execute(FIND_KEY, self._find_args(keyed, now)).fetchone()
            if stored is None:
                reply = write(conn)
                row = (keyed.scope, keyed.key, keyed.action, keyed.request_hash)
                conn.execute(KEEP_KEY, (*row, protocol.dumps(reply).decode(), now))
                # lazily, by the writes that add keys: no thread of its own, no cost without
                if now - self._purged_at >= self.idempotency_purge_interval:
                    conn.execute(PURGE_KEYS, (now - self.idempotency_retention,))
                    self._purged_at = now
        if stored is not None:
            raise _Replay(self._replay(keyed, stored))
        keyed.reply = reply
        return reply

    def _run_keyed(self, fn: ActionFn, message: dict[str, Any]) -> Any:
        """The reply to a request with an idempotency key: the stored one if the key is
        known (nothing runs), else the action's, stored by its `commit`."""
        action, data = message["action"], message["data"]
        if (problem := protocol.key_problem(message["idempotency_key"])) is not None:
            raise Invalid(f"`idempotency_key` {problem}")  # here: the reply has its request_id
        if not getattr(fn, "_procorch_idempotent", False):
            raise Invalid(f"{action} takes no idempotency key (it creates nothing)")
        keyed = _Keyed(
            key_scope(message.get("sender")),
            message["idempotency_key"],
            action,
            request_hash(action, data),
        )
        now = time.time()
        stored = self._database().one(FIND_KEY, self._find_args(keyed, now))
        try:
            if stored is not None:
                raise _Replay(self._replay(keyed, stored))
            self._request.keyed = keyed
            try:
                result = fn(self, data)
            finally:
                self._request.keyed = None
        except _Replay as replay:  # what ran after its commit the first time does not rerun
            return replay.reply
        if keyed.reply is not _UNSET and result is not keyed.reply:
            # committed: a retry would get the stored reply, not this one
            raise RuntimeError(f"{action} must return what self.commit returned")
        return result

    def _find_args(self, keyed: _Keyed, now: float) -> tuple[str, str, float]:
        return keyed.scope, keyed.key, now - self.idempotency_retention

    @staticmethod
    def _replay(keyed: _Keyed, stored: Row) -> Any:
        """The stored reply, if the request is the one that stored it (as Stripe, a key
        sent again with another request is refused: most likely a client's bug)."""
        if stored["request_hash"] != keyed.request_hash:
            raise KeyReused(
                f"the idempotency key {keyed.key!r} was already used for another request"
                f" ({stored['action']}); a new request needs a new key"
            )
        return protocol.loads(stored["reply"])

    def _database(self) -> Database:
        if self.db is None:
            raise RuntimeError(f"{type(self).__name__} has no database: set self.db in setup")
        return self.db

    def _check_idempotent_actions(self) -> None:
        """Refuse to start a service whose idempotent actions would have nowhere to store
        their keys: better a crash loop at once than the first keyed request failing."""
        if any(getattr(fn, "_procorch_idempotent", False) for fn in self.actions.values()):
            if not isinstance(self.db, Database):
                raise RuntimeError(
                    f"{type(self).__name__} has idempotent actions: set self.db in setup"
                )

    def count_request(self, latency: float, failed: bool) -> None:
        """Count one request (of `latency` seconds) in this replica's statistics."""
        with self._stats_lock:
            self.stats.count_request(self.context.slot, latency, failed)

    def run(self) -> None:
        """The main loop: heartbeat and tick until stopped.

        A subclass with a loop of its own overrides this; it must call `heartbeat()` at
        least every `context.heartbeat_interval` seconds and return once `stopping`.
        """
        interval = self.context.heartbeat_interval
        if self.tick_interval is not None:
            interval = min(interval, self.tick_interval)
        while not self._stopping.is_set():
            self.heartbeat()
            if self.tick_interval is not None:
                self.tick()
            self._stopping.wait(interval)
