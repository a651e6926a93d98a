"""The HTTP servers the gateway benchmark measures, as the harness starts, prepares and
stops them, and the endpoints it measures on each.

- hello: `hello.py`, a Flask "hello" on waitress with the gateway's settings (the floor);
- procorch: `procorch up --gateway` with the built-in stack (harness.stack.ProcorchStack's start and
  stop, with a gateway config), `procorch down` afterwards;
- original: `original.py`, the originals' design on Flask's development server.

Each listens on a free loopback port. Before the runs, `prepare` creates user 1 and job 1
and checks every endpoint answers 2xx, so that wrk measures answers, not errors. `stop`
kills everything `start` started, also after a failed start.
"""

from __future__ import annotations

import importlib.util
import json
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

from harness import procs
from harness.procs import free_port
from harness.stack import ProcorchStack

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent  # bench/gateway: the servers run from here
READY_TIMEOUT = 30.0  # s for a server to answer its first request
USER = {"username": "u1", "email": "u1@example.com"}
ORDER = {"user_id": 1, "product": "p", "quantity": 1}
JOB_N = 100


class PeerError(Exception):
    """A server did not start or answer as it should; str() is the one line to print."""


@dataclass(frozen=True)
class Endpoint:
    key: str  # the row of the results
    label: str  # as the table shows it
    method: str
    path: str
    body: dict[str, Any] | None = None
    before: Callable[[], None] | None = None  # run before its runs (e.g. to restart workers)


HELLO = Endpoint("hello", "GET / (bare hello)", "GET", "/")


def gateway_endpoints(user_id: int = 1, job_id: int = 1) -> list[Endpoint]:
    """The five measured on procorch and on the original, in the order they run: the
    reads first, then the writes, whose side effects (orders, a job backlog) come last."""
    return [
        Endpoint("health", "GET /health", "GET", "/health"),
        Endpoint("user", "GET /users/1", "GET", f"/users/{user_id}"),
        Endpoint("job_get", "GET /job/1", "GET", f"/job/{job_id}"),
        Endpoint("order", "POST /orders (two hops)", "POST", "/orders", ORDER),
        Endpoint("job_post", f"POST /job/{JOB_N}", "POST", f"/job/{JOB_N}"),
    ]


def request(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    """One request; the decoded JSON answer, or PeerError on a non-2xx status."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return json.loads(answer.read() or b"null")
    except urllib.error.HTTPError as exc:
        text = exc.read().decode(errors="replace").strip()[:200]
        raise PeerError(f"{method} {url} answered {exc.code}: {text}") from None
    except (OSError, ValueError) as exc:
        raise PeerError(f"{method} {url} failed: {exc}") from None


def find_id(answer: Any, keys: tuple[str, ...]) -> int | None:
    """The first integer under one of `keys`, anywhere in a JSON answer: the gateways
    wrap their objects differently ({"user": {"id": 1}}, {"data": {"user_id": 1}})."""
    if isinstance(answer, dict):
        for key in keys:
            if isinstance(answer.get(key), int):
                return answer[key]
        answer = list(answer.values())
    if isinstance(answer, list):
        for item in answer:
            if (found := find_id(item, keys)) is not None:
                return found
    return None


def check_free(port: int) -> None:
    with socket.socket() as sock:
        try:
            sock.bind((HOST, port))
        except OSError:
            raise PeerError(f"port {HOST}:{port} is busy") from None


class HttpPeer:
    """What every server shares: its URL, its readiness, its preparation."""

    name: ClassVar[str]
    label: ClassVar[str]
    port = 0
    notes: list[str]

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def available(self) -> str | None:
        return None

    def wait_ready(self, path: str, exited: Any) -> None:
        """Poll `path` until it answers 2xx; `exited()` says why the server is gone, if it is."""
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            try:
                request(self.url(path))
                return
            except PeerError as exc:
                why = exited()
                if why or time.monotonic() > deadline:
                    raise PeerError(f"{self.name} did not start: {why or exc}") from None
            time.sleep(0.05)

    def endpoints(self) -> list[Endpoint]:
        """Create user 1 and job 1, check every endpoint once; the endpoints to measure."""
        self.notes = []
        user_id = find_id(request(self.url("/users"), "POST", USER), ("id", "user_id")) or 1
        job_id = find_id(request(self.url(f"/job/{JOB_N}"), "POST"), ("job_id", "id")) or 1
        if (user_id, job_id) != (1, 1):
            self.notes.append(f"the user created is {user_id}, the job {job_id}: used as such")
        found = gateway_endpoints(user_id, job_id)
        for ep in found:
            request(self.url(ep.path), ep.method, ep.body)
        return found


class ServerPeer(HttpPeer):
    """A bench server script run with the bench venv's python, in a session of its own (so
    one killpg stops it and every process it started)."""

    script: ClassVar[str]
    extra_ports: ClassVar[int] = 0  # more ports the script takes after its own
    ready_path: ClassVar[str] = "/"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = Path()

    def start(self, root: Path) -> None:
        self.port = free_port()
        ports = [self.port] + [free_port() for _ in range(self.extra_ports)]
        for port in ports:
            check_free(port)
        self.log = root / f"{self.name}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, str(HERE / self.script), *map(str, ports)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=HERE,
                start_new_session=True,
            )
        self.wait_ready(self.ready_path, self._exited)

    def _exited(self) -> str | None:
        if self.proc is None or self.proc.poll() is None:
            return None
        text = self.log.read_text(errors="replace")
        if "Address already in use" in text:
            return f"port {HOST}:{self.port} is busy"
        last = text.strip().splitlines()[-1:] or ["no output"]
        return f"exited with status {self.proc.returncode}: {last[0]}"

    def stop(self) -> None:
        if self.proc is not None:
            procs.kill_group(self.proc)
            self.proc = None


class Hello(ServerPeer):
    name = "hello"
    label = "bare waitress hello"
    script = "hello.py"

    def endpoints(self) -> list[Endpoint]:
        self.notes = []
        return [HELLO]


class Original(ServerPeer):
    name = "original"
    label = "original design"
    script = "original.py"
    extra_ports = 1  # its job worker's
    ready_path = "/health"


class Procorch(HttpPeer, ProcorchStack):
    """The built-in stack (no [services] table) with its gateway, jobs without delay or
    failures; started and stopped with its CLI (harness.stack), as the services area's
    procorch peer is."""

    name = "procorch"
    label = "procorch"

    def available(self) -> str | None:
        if importlib.util.find_spec("procorch.gateway") is None:
            return "this checkout of procorch has no gateway (procorch/gateway/) yet"
        return ProcorchStack.available(self)

    def start(self, root: Path) -> None:  # type: ignore[override]
        self.port = free_port()
        check_free(self.port)
        self.tmp = str(root / "procorch")
        Path(self.tmp).mkdir()
        self.run_dir, self.conf = f"{self.tmp}/run", f"{self.tmp}/procorch.toml"
        Path(self.conf).write_text(
            "# written by bench/gateway/runner.py: the built-in stack, its gateway, quick jobs\n"
            # one gateway process, as the bare hello it is compared with
            f'[gateway]\nhost = "{HOST}"\nport = {self.port}\nworkers = 1\n\n'
            "[jobs]\ndelay = 0\nfailure_rate = 0\n"
        )
        try:
            self._cli("up", "--gateway", timeout=60)
        except (RuntimeError, subprocess.SubprocessError) as exc:
            last = str(exc).strip().splitlines()[-1:] or ["?"]
            raise PeerError(f"procorch did not start: {last[0]}") from None
        self.wait_ready("/health", lambda: None)

    def endpoints(self) -> list[Endpoint]:
        """The five, and a job that stays pending while it is read: its workers are stopped
        for the reads and started again before the writes. A finished job is answered from
        the gateway's cache of finished jobs; an unfinished one is read from the store."""
        found = super().endpoints()
        self._cli("stop", "JobWorker", timeout=60)
        pending = find_id(request(self.url(f"/job/{JOB_N}"), "POST"), ("job_id",))
        read = Endpoint("job_pending", "GET /job/ID of a pending job", "GET", f"/job/{pending}")
        request(self.url(read.path))
        at = [ep.key for ep in found].index("job_get") + 1
        first_write = replace(found[at], before=lambda: self._cli("start", "JobWorker", timeout=60))
        return [*found[:at], read, first_write, *found[at + 1 :]]
