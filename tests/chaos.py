"""Chaos: kill -9 every role of a real stack while clients write through the gateway.

One engine for the suite's short run (tests/test_chaos.py) and `python bench/chaos`'s long
one. A stack (the built-in services, two job workers, the gateway) runs in a folder of
its own. Client threads create users, orders and jobs over HTTP, each write with an
`Idempotency-Key`, and retry it with the same key until it is answered. A killer
takes each role in turn (a service replica, a job worker mid-job, the gateway, the
daemon itself, followed by `procorch up`), kill -9s it, and times its recovery. At
the end every write is counted in the services' own lists: an acknowledged or retried
write must exist exactly once, every acknowledged job must finish, and `down` must
leave no process.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROLES = ("UserService", "OrderService", "NotificationService", "JobWorker", "Gateway", "daemon")
REQUEST_TIMEOUT = 5.0  # s, one HTTP attempt
WRITE_DEADLINE = 60.0  # s, a write retried this long without an answer is unanswered
RECOVERY_TIMEOUT = 30.0  # s, a role not back by then is reported as never recovered
STUCK_AFTER = 10.0  # s without a job finishing: the jobs still open are stuck


@dataclass
class Write:
    """One logical write: its kind, body and key, and how it ended."""

    kind: str  # "user", "order" or "job"
    path: str
    body: dict[str, Any] | None
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempts: int = 0
    status: int | None = None  # the answer's status, once answered
    reply: dict[str, Any] | None = None

    @property
    def answered(self) -> bool:
        return self.status is not None and self.status < 300

    @property
    def mark(self) -> str:
        """What identifies the record this write creates, in the service's list."""
        assert self.body is not None
        return str(self.body.get("username") or self.body.get("product"))


@dataclass
class Report:
    seconds: float
    writes: int = 0
    acknowledged: int = 0  # answered at the first attempt
    retried: int = 0  # answered after one or more retries
    unanswered: int = 0
    refused: int = 0  # answered 4xx: a retry refused as a duplicate, say
    lost: int = 0  # answered, but not in the service's list
    duplicated: int = 0  # in the list more than once
    responses_5xx: int = 0
    connection_errors: int = 0
    jobs: int = 0
    jobs_stuck: int = 0
    leftovers: int = 0  # processes left after `down`
    kills: Counter = field(default_factory=Counter)
    recovery: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    never_recovered: Counter = field(default_factory=Counter)
    refusals: Counter = field(default_factory=Counter)  # what the 4xx answers said

    def as_dict(self) -> dict[str, Any]:
        summary = {
            role: {
                "kills": self.kills[role],
                "median_s": round(statistics.median(times), 3) if times else None,
                "max_s": round(max(times), 3) if times else None,
                "never_recovered": self.never_recovered[role],
            }
            for role, times in sorted(self.recovery.items())
        }
        counts = {k: v for k, v in vars(self).items() if isinstance(v, int | float)}
        return {**counts, "roles": summary, "refusals": dict(self.refusals)}


class Chaos:
    """A stack in `root`, clients writing through its gateway, and a killer."""

    def __init__(self, root: Path, port: int, clients: int = 3, seed: int | None = None) -> None:
        self.root = root
        self.port = port
        self.clients = clients
        self.random = random.Random(seed)
        self.config = root / "procorch.toml"
        self.run_dir = root / ".procorch"
        self.writes: list[Write] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._users: list[int] = []  # ids of created users, for orders
        self._5xx = 0
        self._connection_errors = 0

    # -- the stack ---------------------------------------------------------------------

    def write_config(self) -> None:
        self.config.write_text(
            "[procorch]\ncheck_interval = 0.5\n"
            f"[gateway]\nenabled = true\nport = {self.port}\nthreads = 16\n"
            "[jobs]\nworkers = 2\ndelay = 0.02\nfailure_rate = 0\n"
        )

    def cli(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROCORCH_")}
        return subprocess.run(
            [sys.executable, "-m", "procorch", *args, "-c", str(self.config)],
            cwd=self.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def up(self) -> None:
        result = self.cli("up")
        if result.returncode != 0:
            raise RuntimeError(f"procorch up failed: {result.stderr.strip()[-2000:]}")

    def status(self) -> dict[str, Any] | None:
        from procorch.supervisor import control

        try:
            return control.request(self.run_dir / "control.sock", {"cmd": "status"}, timeout=5)
        except (OSError, control.DaemonNotRunning, control.ControlError, TimeoutError):
            return None

    def daemon_pid(self) -> int | None:
        try:
            return int((self.run_dir / "procorch.pid").read_text())
        except (OSError, ValueError):
            return None

    def leftovers(self) -> list[int]:
        import psutil

        found = []
        for proc in psutil.process_iter():
            try:
                if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(
                    "PROCORCH_RUN_DIR"
                ) == str(self.run_dir):
                    found.append(proc.pid)
            except psutil.Error:
                continue
        return found

    # -- HTTP ----------------------------------------------------------------------------

    def http(
        self, method: str, path: str, body: Any = None, key: str | None = None
    ) -> tuple[int, Any]:
        """One attempt; (status, JSON body). Raises OSError when no answer came."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT)
        try:
            headers = {"Content-Type": "application/json"}
            if key:
                headers["Idempotency-Key"] = key
            payload = None if body is None else json.dumps(body)
            conn.request(method, path, body=payload, headers=headers)
            response = conn.getresponse()
            raw = response.read()
        except (http.client.HTTPException, ValueError) as exc:  # a reply cut short
            raise OSError(str(exc)) from exc
        finally:
            conn.close()
        try:
            return response.status, json.loads(raw)
        except ValueError:
            return response.status, None

    def send(self, write: Write, deadline: float) -> None:
        """Until answered: the same request with the same key (a retry creates nothing)."""
        while time.monotonic() < deadline:
            write.attempts += 1
            try:
                status, reply = self.http("POST", write.path, write.body, write.key)
            except OSError:
                with self._lock:
                    self._connection_errors += 1
                time.sleep(0.05)
                continue
            if status >= 500:
                with self._lock:
                    self._5xx += 1
                time.sleep(0.05)
                continue
            write.status, write.reply = status, reply
            return

    # -- clients and killer --------------------------------------------------------------

    def _next_write(self, client: int, seq: int) -> Write:
        with self._lock:
            users = list(self._users)
        pick = self.random.random()
        if pick < 0.4 or not users:
            name = f"c{client}n{seq}x{self.random.randrange(10**6)}"
            body = {"username": name, "email": f"{name}@example.com"}
            return Write("user", "/users", body)
        if pick < 0.9:
            product = f"p-{uuid.uuid4().hex[:16]}"
            body = {"user_id": self.random.choice(users), "product": product, "quantity": 1}
            return Write("order", "/orders", body)
        return Write("job", f"/job/{self.random.randrange(1, 10_000)}", None)

    def _client(self, client: int) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            write = self._next_write(client, seq)
            with self._lock:
                self.writes.append(write)
            self.send(write, time.monotonic() + WRITE_DEADLINE)
            if write.kind == "user" and write.answered and write.reply:
                with self._lock:
                    self._users.append(write.reply["user"]["id"])

    def _healthy(self) -> bool:
        try:
            return self.http("GET", "/health")[0] == 200
        except OSError:
            return False

    def _replica_back(self, name: str, replica: int, old_pid: int) -> bool:
        status = self.status()
        if status is None:
            return False
        return any(
            s["name"] == name and s["replica"] == replica and s["state"] == "running"
            and s["pid"] not in (None, old_pid)
            for s in status["services"]
        )  # fmt: skip

    def kill(self, role: str, report: Report) -> None:
        """kill -9 one process of `role`; wait for its recovery and time it."""
        started = time.monotonic()
        if role == "daemon":
            pid = self.daemon_pid()
            if pid is None:
                return
            os.kill(pid, signal.SIGKILL)
            started = time.monotonic()
            self.up()  # as an operator would: the next `up` takes over what is left
            back = self._healthy
        else:
            status = self.status()
            replicas = [
                s for s in (status or {}).get("services", []) if s["name"] == role and s["pid"]
            ]
            if not replicas:
                return
            victim = self.random.choice(replicas)
            os.kill(victim["pid"], signal.SIGKILL)
            started = time.monotonic()

            def back() -> bool:
                return self._replica_back(role, victim["replica"], victim["pid"]) and (
                    role != "Gateway" or self._healthy()
                )

        report.kills[role] += 1
        deadline = started + RECOVERY_TIMEOUT
        while not back():
            if time.monotonic() > deadline:
                report.never_recovered[role] += 1
                return
            time.sleep(0.01)
        report.recovery[role].append(time.monotonic() - started)

    def _killer(self, report: Report, pause: tuple[float, float]) -> None:
        roles: list[str] = []
        while not self._stop.wait(self.random.uniform(*pause)):
            if not roles:
                roles = list(ROLES)
                self.random.shuffle(roles)
            self.kill(roles.pop(), report)

    # -- the run -------------------------------------------------------------------------

    def run(self, seconds: float, pause: tuple[float, float] = (0.3, 1.0)) -> Report:
        """Start the stack, write and kill for `seconds`, check every write, stop it."""
        report = Report(seconds=seconds)
        self.write_config()
        self.up()
        try:
            threads = [
                threading.Thread(target=self._client, args=(i,), daemon=True)
                for i in range(self.clients)
            ]
            killer = threading.Thread(target=self._killer, args=(report, pause), daemon=True)
            for t in [*threads, killer]:
                t.start()
            time.sleep(seconds)
            self._stop.set()
            killer.join()
            for t in threads:
                t.join(WRITE_DEADLINE + REQUEST_TIMEOUT)
            self._check(report)
        finally:
            self.cli("down")
            report.leftovers = len(self.leftovers())
        return report

    def _listed(self, path: str, key: str) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        while True:
            status, reply = self.http("GET", f"{path}?limit=1000&offset={len(records)}")
            if status != 200:
                raise RuntimeError(f"GET {path}: {status} {reply}")
            records += reply[key]
            if not reply[key]:
                return records

    def _check(self, report: Report) -> None:
        report.writes = len(self.writes)
        report.responses_5xx = self._5xx
        report.connection_errors = self._connection_errors
        users = Counter(u["username"] for u in self._listed("/users", "users"))
        orders = Counter(o["product"] for o in self._listed("/orders", "orders"))
        jobs = []
        for write in self.writes:
            if write.status is None:
                report.unanswered += 1
            elif not write.answered:
                report.refused += 1
            elif write.attempts == 1:
                report.acknowledged += 1
            else:
                report.retried += 1
            if write.kind == "job":
                if write.answered and write.reply:
                    jobs.append(write.reply["job_id"])
                continue
            stored = (users if write.kind == "user" else orders)[write.mark]
            if stored > 1:
                report.duplicated += 1
            elif stored == 0 and write.answered:
                report.lost += 1
        report.jobs = len(jobs)
        report.jobs_stuck = self._unfinished(jobs)
        # every job is one a client asked for once: a retry with its key made no other
        status, listed = self.http("GET", "/jobs?limit=0")
        if status != 200:
            raise RuntimeError(f"GET /jobs: {status} {listed}")
        report.duplicated += max(0, listed["total"] - len(set(jobs)))
        report.refusals = Counter(
            f"{w.status} {(w.reply or {}).get('message')}"
            for w in self.writes
            if w.status and w.status >= 300
        )

    def _open_jobs(self) -> set[int]:
        """The ids of every pending or running job."""
        found: set[int] = set()
        for status in ("pending", "running"):
            offset = 0
            while True:
                path = f"/jobs?status={status}&limit=10000&offset={offset}"
                code, reply = self.http("GET", path)
                if code != 200:
                    raise RuntimeError(f"GET {path}: {code} {reply}")
                found |= {job["job_id"] for job in reply["jobs"]}
                offset += len(reply["jobs"])
                if not reply["jobs"]:
                    break
        return found

    def _unfinished(self, job_ids: list[int], patience: float = STUCK_AFTER) -> int:
        """How many of the jobs are still not done, failed or cancelled once the queue
        has made no progress for `patience` seconds: a backlog drains, a stuck job stays."""
        waiting = set(job_ids)
        progress = time.monotonic()
        while waiting and time.monotonic() - progress < patience:
            still = waiting & self._open_jobs()
            if len(still) < len(waiting):
                progress = time.monotonic()
            waiting = still
            time.sleep(0.2)
        return len(waiting)
