"""The ways of doing request/reply between processes that `services.py` compares: the
issue's four (raw, queue, manager, procorch) and a reference (json).

Each peer has a server side, started by the harness (`Peer.start`), and a caller side,
built inside each caller process from the peer's picklable `endpoint` (`connect`). Every
peer echoes the same payload, `PAYLOAD`, and a caller checks every reply.

- raw: AF_UNIX stream ping-pong. The server echoes whatever bytes arrive; the caller
  sends the payload's JSON bytes (encoded once, so no JSON per call) and reads back as
  many. The floor: one send and one receive on each side, nothing else.
- json (a reference, not in the issue): the raw ping-pong carrying procorch's message
  format, length-prefixed JSON with request_id, action, data, sender and sent_at, and
  nothing else; with procorch's codec (orjson) when it is installed.
- queue: `multiprocessing.Queue`. The server reads one request queue and answers on the
  caller's own reply queue.
- manager: the original's approach. Requests go through a `Manager().Queue()`, the server
  stores each reply in a `Manager().dict()` under its request_id, and the caller polls
  the dict, sleeping 1 ms between polls (the original slept 100 ms).
- procorch: a real `procorch up` stack running `benchsvc:Echo`, called with the
  procorch client.

This module needs only the standard library (orjson is used if present); procorch is
imported lazily, in the callers.
"""

from __future__ import annotations

import importlib.util
import json
import multiprocessing as mp
import os
import shutil
import socket
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any, Protocol

from harness.child import die_with_parent  # noqa: F401  (callers and servers use it)
from harness.stack import ProcorchStack

PAYLOAD: dict[str, Any] = {"user_id": 42, "product": "Laptop"}
MAX_CALLERS = 4
BENCH_DIR = Path(__file__).resolve().parent
MANAGER_POLL = 0.001  # s between polls of the Manager dict
CALL_TIMEOUT = 5.0  # s, procorch client timeout per call
CTX = mp.get_context("spawn")  # callers and servers start clean, not as forks of the harness


def pin(pid: int, cpus: set[int]) -> None:
    """Run every thread of `pid` on `cpus` (threads it starts later inherit that)."""
    try:
        tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
    except OSError:
        tids = [pid]
    for tid in tids:
        try:
            os.sched_setaffinity(tid, cpus)
        except (ProcessLookupError, PermissionError):
            pass


class Caller(Protocol):
    """The caller side of one peer, in one caller process."""

    expected: object  # what every reply must equal

    def request(self) -> object: ...

    def close(self) -> None: ...


class Peer:
    """The server side of one peer, in the harness."""

    name = ""

    def __init__(self) -> None:
        self.processes: list[mp.process.BaseProcess] = []

    def available(self) -> str | None:
        """None if the peer can run here, else why not."""
        return None

    def start(self) -> None:
        """Start the server and return once it answers."""

    def endpoint(self) -> object:
        """What a caller process needs to connect (picklable)."""
        raise NotImplementedError

    def server_pids(self) -> list[int]:
        """Every process of the server side (pinned to the server's CPUs)."""
        return [proc.pid for proc in self.processes if proc.pid is not None]

    def stop(self) -> None:
        """Stop everything `start` started; also after a failed or partial start."""
        for proc in self.processes:
            if proc.is_alive():
                proc.kill()
            proc.join(5)
        self.processes.clear()

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        proc = CTX.Process(target=target, args=args, name=f"{self.name}-server", daemon=True)
        proc.start()
        self.processes.append(proc)

    def _wait_ready(self, ready: Any, what: str) -> None:
        if not ready.wait(10):
            raise RuntimeError(f"{self.name}: {what} did not start within 10 s")


# -- raw Unix-socket ping-pong ---------------------------------------------------------


def _serve(path: str, ready: Any, echo: Callable[[socket.socket], None]) -> None:
    """Accept connections, each served by `echo` in a thread of its own."""
    die_with_parent()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    ready.set()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def _raw_server(path: str, ready: Any) -> None:
    """A thread per connection echoes whatever bytes arrive, with a blocking recv and
    sendall: two system calls per request, the least there is."""
    _serve(path, ready, _raw_echo)


def _raw_echo(conn: socket.socket) -> None:
    recv, sendall = conn.recv, conn.sendall
    try:
        while data := recv(65536):
            sendall(data)
    except OSError:  # the caller was killed (the harness is stopping)
        pass
    finally:
        conn.close()


class RawCaller:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.data = json.dumps(PAYLOAD).encode()
        self.expected = self.data

    def request(self) -> object:
        sock, size = self.sock, len(self.data)
        sock.sendall(self.data)
        got = sock.recv(65536)
        while len(got) < size:
            more = sock.recv(65536)
            if not more:
                raise ConnectionError("raw server closed the connection")
            got += more
        return got

    def close(self) -> None:
        self.sock.close()


class Raw(Peer):
    name = "raw socket"
    server = staticmethod(_raw_server)

    def start(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="pb", dir="/tmp")
        self.path = os.path.join(self.tmp, "echo.sock")
        ready = CTX.Event()
        self._spawn(self.server, self.path, ready)
        self._wait_ready(ready, "the echo server")

    def endpoint(self) -> object:
        return self.path

    def stop(self) -> None:
        super().stop()
        if getattr(self, "tmp", None):
            shutil.rmtree(self.tmp, ignore_errors=True)


# -- minimal JSON over a Unix socket (a reference) -------------------------------------------

_HEADER = struct.Struct("!I")  # 4-byte big-endian length before each JSON frame
try:  # the codec procorch uses (a dependency of procorch, so in bench/.venv)
    import orjson

    JSON_CODEC = f"orjson {orjson.__version__}"
    _dumps: Callable[[Any], bytes] = orjson.dumps
    _loads: Callable[[bytes], Any] = orjson.loads
except ImportError:
    JSON_CODEC = "the standard library's json"
    _std_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
    _std_loads = json.JSONDecoder().decode

    def _dumps(value: Any) -> bytes:
        return _std_dumps(value).encode()

    def _loads(body: bytes) -> Any:
        return _std_loads(body.decode())


def _json_server(path: str, ready: Any) -> None:
    """The raw server, speaking length-prefixed JSON (see `_json_echo`)."""
    _serve(path, ready, _json_echo)


def _json_echo(conn: socket.socket) -> None:
    """Decode each request, answer with its request_id, a status and its data. A frame is
    assumed to arrive in one read: always so for these few bytes on a local socket."""
    recv, sendall, pack = conn.recv, conn.sendall, _HEADER.pack
    try:
        while data := recv(65536):
            request = _loads(data[4:])
            body = _dumps(
                {"request_id": request["request_id"], "status": "success", "data": request["data"]}
            )
            sendall(pack(len(body)) + body)
    except OSError:  # the caller was killed (the harness is stopping)
        pass
    finally:
        conn.close()


class JsonCaller:
    """What any JSON request/reply protocol must do per call, and nothing more."""

    expected = PAYLOAD

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sender = f"bench.{os.getpid()}"
        self.next_id = 0

    def request(self) -> object:
        self.next_id += 1
        request_id = str(self.next_id)
        body = _dumps(
            {
                "request_id": request_id,
                "action": "echo",
                "data": PAYLOAD,
                "sender": self.sender,
                "sent_at": time.time(),
            }
        )
        self.sock.sendall(_HEADER.pack(len(body)) + body)
        got = self.sock.recv(65536)
        while len(got) < 4 or len(got) < 4 + _HEADER.unpack_from(got)[0]:
            more = self.sock.recv(65536)
            if not more:
                raise ConnectionError("json server closed the connection")
            got += more
        reply = _loads(got[4:])
        if reply["request_id"] != request_id:
            raise AssertionError(f"reply {reply['request_id']} to request {request_id}")
        return reply["data"]

    def close(self) -> None:
        self.sock.close()


class Json(Raw):
    """Not in the issue, a reference: the least a Python request/reply protocol of
    length-prefixed JSON costs (procorch's framing and fields; no validation, no
    statistics, no timeouts), to show how much of procorch's time is its own."""

    name = "json socket"
    server = staticmethod(_json_server)


# -- multiprocessing.Queue -------------------------------------------------------------


def _queue_server(requests: Any, replies: list[Any], ready: Any) -> None:
    die_with_parent()
    ready.set()
    while True:
        caller, request_id, data = requests.get()
        replies[caller].put((request_id, data))


class QueueCaller:
    expected = PAYLOAD

    def __init__(self, endpoint: tuple[Any, list[Any]], caller: int) -> None:
        self.requests, replies = endpoint
        self.replies = replies[caller]
        self.caller = caller
        self.next_id = 0

    def request(self) -> object:
        self.next_id += 1
        self.requests.put((self.caller, self.next_id, PAYLOAD))
        request_id, data = self.replies.get()
        if request_id != self.next_id:
            raise AssertionError(f"reply {request_id} to request {self.next_id}")
        return data

    def close(self) -> None:
        pass


class Queue(Peer):
    name = "mp.Queue"

    def start(self) -> None:
        self.requests = CTX.Queue()
        self.replies = [CTX.Queue() for _ in range(MAX_CALLERS)]
        ready = CTX.Event()
        self._spawn(_queue_server, self.requests, self.replies, ready)
        self._wait_ready(ready, "the queue server")

    def endpoint(self) -> object:
        return (self.requests, self.replies)


# -- multiprocessing.Manager (the original's approach) ----------------------------------


def _manager_server(requests: Any, replies: Any, ready: Any) -> None:
    die_with_parent()
    ready.set()
    while True:
        message = requests.get()
        replies[message["request_id"]] = message["data"]


class ManagerCaller:
    expected = PAYLOAD

    def __init__(self, endpoint: tuple[Any, Any], caller: int) -> None:
        self.requests, self.replies = endpoint
        self.prefix = f"{os.getpid()}-{caller}-"
        self.next_id = 0
        self.sleeps = 0  # polls that found no reply yet

    def request(self) -> object:
        self.next_id += 1
        request_id = f"{self.prefix}{self.next_id}"
        self.requests.put({"request_id": request_id, "action": "echo", "data": PAYLOAD})
        while True:
            reply = self.replies.pop(request_id, None)  # one round trip to the manager
            if reply is not None:
                return reply
            self.sleeps += 1
            time.sleep(MANAGER_POLL)

    def close(self) -> None:
        pass


class Manager(Peer):
    name = "mp.Manager"
    manager: SyncManager | None = None

    def start(self) -> None:
        self.manager = SyncManager(ctx=CTX)  # what multiprocessing.Manager() starts
        self.manager.start(die_with_parent)  # the initializer runs in the manager process
        self.requests = self.manager.Queue()
        self.replies = self.manager.dict()
        ready = CTX.Event()
        self._spawn(_manager_server, self.requests, self.replies, ready)
        self._wait_ready(ready, "the manager server")

    def endpoint(self) -> object:
        return (self.requests, self.replies)

    def server_pids(self) -> list[int]:
        process = getattr(self.manager, "_process", None)  # the manager's own process
        return super().server_pids() + ([process.pid] if process is not None else [])

    def stop(self) -> None:
        super().stop()
        manager = getattr(self, "manager", None)
        if manager is not None:
            manager.shutdown()
            self.manager = None


# -- procorch --------------------------------------------------------------------------


class ProcorchCaller:
    expected = PAYLOAD

    def __init__(self, run_dir: str) -> None:
        from procorch.services.client import Client

        self.client = Client(run_dir)

    def request(self) -> object:
        return self.client.call("Echo", "echo", PAYLOAD, timeout=CALL_TIMEOUT)

    def close(self) -> None:
        self.client.close()


class Procorch(ProcorchStack, Peer):
    """`procorch up` with one replica of `benchsvc:Echo`; `procorch down` at the end."""

    name = "procorch"

    def available(self) -> str | None:
        if importlib.util.find_spec("procorch.services.client") is None:
            return "not available (no procorch.services.client in this checkout yet)"
        return ProcorchStack.available(self)

    def start(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix="pb", dir="/tmp")  # short: socket paths ≤ 107 bytes
        self.run_dir = os.path.join(self.tmp, "run")
        self.conf = os.path.join(self.tmp, "procorch.toml")
        Path(self.conf).write_text(
            f'[services.Echo]\nmodule = "benchsvc:Echo"\ncwd = {json.dumps(str(BENCH_DIR))}\n'
        )
        self._cli("up", timeout=60)
        caller = ProcorchCaller(self.run_dir)  # answers once the replica serves
        try:
            deadline = time.monotonic() + 15
            while True:
                try:
                    if caller.request() == PAYLOAD:
                        break
                except Exception as exc:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"procorch: Echo does not answer: {exc}") from exc
                time.sleep(0.05)
        finally:
            caller.close()

    def endpoint(self) -> object:
        return self.run_dir

    def server_pids(self) -> list[int]:
        return ProcorchStack.server_pids(self)

    def stop(self) -> None:
        ProcorchStack.stop(self)


ALL_PEERS: tuple[type[Peer], ...] = (Raw, Json, Queue, Manager, Procorch)
FLOOR, JSON, ORIGINAL, OURS = Raw.name, Json.name, Manager.name, Procorch.name


def connect(peer: str, endpoint: Any, caller: int) -> Caller:
    """Build the caller side of `peer`, inside a caller process."""
    if peer == Raw.name:
        return RawCaller(endpoint)
    if peer == Json.name:
        return JsonCaller(endpoint)
    if peer == Queue.name:
        return QueueCaller(endpoint, caller)
    if peer == Manager.name:
        return ManagerCaller(endpoint, caller)
    if peer == Procorch.name:
        return ProcorchCaller(endpoint)
    raise ValueError(f"unknown peer {peer!r}")


# -- the caller process ----------------------------------------------------------------


def caller_main(
    peer: str, endpoint: Any, caller: int, job: dict[str, Any], conn: Connection
) -> None:
    """One caller process. Warm up, then either time `calls` sequential calls (job
    "latency": sends back the round trips in ns) or, once the harness gives the common
    start and end (perf_counter_ns, the same clock in every process), count the calls
    completed in that window (job "throughput")."""
    die_with_parent()
    try:
        if job.get("cpus"):
            os.sched_setaffinity(0, job["cpus"])
        client = connect(peer, endpoint, caller)
        expected = client.expected
        for _ in range(job["warmup"]):
            if client.request() != expected:
                raise AssertionError("wrong reply during warm-up")
        clock = time.perf_counter_ns
        if job["kind"] == "latency":
            samples = []
            slept = getattr(client, "sleeps", 0)  # (only the Manager's caller sleeps)
            for _ in range(job["calls"]):
                t0 = clock()
                reply = client.request()
                t1 = clock()
                if reply != expected:
                    raise AssertionError(f"wrong reply {reply!r}")
                samples.append(t1 - t0)
            slept = getattr(client, "sleeps", 0) - slept
            conn.send(("samples", (samples, slept / len(samples))))
        else:
            conn.send(("ready", None))
            start, end = conn.recv()
            time.sleep(max(0, start - clock()) / 1e9)  # sleep, not spin: 2 shared cores
            count = 0
            while True:
                reply = client.request()
                if clock() > end:
                    break
                if reply != expected:
                    raise AssertionError(f"wrong reply {reply!r}")
                count += 1
            conn.send(("count", count))
        client.close()
    except BaseException as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
