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
"""

from __future__ import annotations

import functools
import os
import signal
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
from procorch.services.protocol import ServiceError
from procorch.services.registry import socket_path
from procorch.stats import StatsTable

if TYPE_CHECKING:
    from procorch.services.client import Client

ActionFn = Callable[[Any, dict[str, Any]], Any]
F = TypeVar("F", bound=ActionFn)


def action(name: str | None = None) -> Callable[[F], F]:
    """Mark a method as the handler of action `name` (default: the method's name).

    The method takes the request's `data` (a dict) and returns the reply's data (any
    JSON value). To refuse, it raises a `ServiceError` (`Invalid`, `NotFound`,
    `Conflict`...); any other exception becomes an `internal` error reply, and the
    traceback goes to the replica's log.
    """

    def mark(fn: F) -> F:
        fn._procorch_action = name or fn.__name__  # type: ignore[attr-defined]
        return fn

    return mark


def exception_line(exc: BaseException) -> str:
    """An exception as its traceback's last line: 'RuntimeError: no database'."""
    text = str(exc).strip()
    line = f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__
    return line if len(line) <= 200 else line[:197] + "..."


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
            reply = protocol.success(request_id, fn(self, message["data"]))
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
