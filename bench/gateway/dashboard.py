"""Benchmark the web dashboard's cost: with 50 services and 100,000 jobs in the
store, the server time of one update of the overview's data (target < 5 ms) and of the
jobs page's query (< 20 ms); and what 20 open dashboards take from the API: `GET /users/1`
requests/s with 20 open must stay within 10 % of none open.

    python bench/gateway --parts dashboard            # full run, about 4 minutes
    python bench/gateway --parts dashboard --quick    # smoke run, under a minute: 10 services
    python bench/gateway --parts dashboard --age      # ... the history filled first

The gateway keeps a history of 600 points a series, one a second, for the charts; a page
polling gets each series' newest point whatever its length, so the API rounds do not
wait for it to fill unless asked (--age, ten minutes more); the in-process figures fill
it (600 untimed updates) and time a page's opening, the one cost that grows with it.

It starts a real stack with `procorch up` in a temporary directory: 50 command services
(`sleep`), UserService, JobWorker (SQLite) and the Gateway on a free loopback port; puts
the jobs in the store and lets the workers run them; times the gateway's own code for
the overview (`LiveView`) and the jobs page (`Jobs.list`) in this process against that
stack, and the same over HTTP; then runs wrk (`wrk.py`) against `GET /users/1` with no
dashboard open and with 20 simulated ones polling, alternating. Every process it started
is stopped at the end, on error and on Ctrl-C or SIGTERM too. Like the other benchmarks
it creates bench/.venv on first use and re-runs itself with that venv's python.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import json
import os
import random
import shutil
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from statistics import median
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from harness import child
from harness import venv as benchvenv
from harness.area import Figure, RunOutput, log

if TYPE_CHECKING:  # these need the venv's packages: imported after the re-exec
    from gateway.dashplan import Plan, Poll, Query, Results
    from gateway.wrk import Load, WrkResult
    from procorch.jobs.api import Jobs

PACKAGES = ("psutil",)  # flask and waitress come with procorch
DASHBOARDS = "dashboards"  # the simulated dashboards' process, in the CPU figures
HOST = "127.0.0.1"
PAGE = 50  # the jobs page's page size
JOB_CHUNK = 1000  # jobs per round of submissions: the kinds interleave, as in a real store
DELAYED = 86_400.0  # s: the jobs left pending are due tomorrow
POPULATE_TIMEOUT = 600.0  # s for the workers to run the store's jobs
DASHBOARDS_TIMEOUT = 60.0  # s for the simulated dashboards to load, or to report
AGE_TIMEOUT = 900.0  # s for the gateway's history to fill (600 points, one a second)
SUBMITTED_AS = (  # share of each chunk, how it is submitted
    (0.85, "fib"),
    (0.05, "fib, queue reports"),
    (0.05, "noop"),
    (0.05, "fib, due tomorrow"),
)


# -- the stack ---------------------------------------------------------------------------


def config_text(plan: Plan, port: int) -> str:
    """The stack: the gateway, a SQLite job store whose workers fail a tenth of the jobs at
    once (so the failed filter has something to find), UserService, and the sleepers."""
    from harness.venv import BENCH_DIR

    sleepers = "".join(
        f'[services.s{i:02d}]\ncommand = ["sleep", "1000000"]\n\n' for i in range(plan.sleepers)
    )
    return (
        "# written by bench/gateway/dashboard.py\n"
        # one gateway process: its time per update is what the figures measure
        f'[gateway]\nenabled = true\nhost = "{HOST}"\nport = {port}\nworkers = 1\n\n'
        '[jobs]\nbackend = "sqlite"\ndelay = 0\nfailure_rate = 0.1\nmax_attempts = 1\n\n'
        '[jobs.functions]\nnoop = "harness.jobnoop:noop"\n\n'
        '[services.UserService]\nmodule = "procorch.services.users:UserService"\n\n'
        '[services.JobWorker]\nmodule = "procorch.jobs.worker:JobWorker"\nreplicas = 2\n'
        f"env = {{ PYTHONPATH = {json.dumps(str(BENCH_DIR))} }}\n\n" + sleepers
    )


def start_stack(stack: Any, plan: Plan, root: Path) -> None:
    """`procorch up` of the stack in `root`; PeerError if it does not come up."""
    from harness.procs import free_port

    from gateway import peers as gwpeers

    stack.port = free_port()
    gwpeers.check_free(stack.port)
    stack.tmp = str(root / "p")  # short: the services' socket paths must fit 107 bytes
    Path(stack.tmp).mkdir()
    stack.run_dir, stack.conf = f"{stack.tmp}/run", f"{stack.tmp}/procorch.toml"
    Path(stack.conf).write_text(config_text(plan, stack.port))
    try:
        stack._cli("up", timeout=120)
    except Exception as exc:  # RuntimeError or a timeout: its last line says why
        last = str(exc).strip().splitlines()[-1:] or ["?"]
        raise gwpeers.PeerError(f"procorch did not start: {last[0]}") from None
    stack.wait_ready("/health", lambda: None)


def open_jobs(stack: Any) -> Jobs:
    from procorch.config import load_config
    from procorch.jobs.api import Jobs

    return Jobs.from_config(load_config(Path(stack.conf), run_dir=Path(stack.run_dir)))


def populate(jobs: Jobs, total: int) -> None:
    """Submit `total` jobs in interleaved chunks (see SUBMITTED_AS), and wait until the
    workers have run every due one."""
    from harness.jobnoop import arguments

    rng = random.Random(14)
    delayed = 0
    for start in range(0, total, JOB_CHUNK):
        size = min(JOB_CHUNK, total - start)
        sizes = [round(size * share) for share, _ in SUBMITTED_AS]
        sizes[0] += size - sum(sizes)
        fib, reports, noop, later = ([rng.randrange(1000) for _ in range(n)] for n in sizes)
        jobs.submit_many(fib)
        jobs.submit_many(reports, queue="reports")
        jobs.map("noop", [arguments(n) for n in noop])
        jobs.submit_many(later, delay=DELAYED)
        delayed += len(later)
    deadline = time.monotonic() + POPULATE_TIMEOUT
    while True:
        counts = jobs.stats()["counts"]
        if counts["pending"] <= delayed and not counts["running"]:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not finish the jobs: {counts}")
        time.sleep(0.2)


# -- timing ------------------------------------------------------------------------------


def timed(call: Callable[[], object]) -> float:
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def timed_rounds(
    calls: dict[str, Callable[[], object]], reps: int, warmup: int = 3
) -> dict[str, list[float]]:
    """Each call `reps` times, taking turns (so drift falls on all alike), after `warmup`
    untimed turns: the samples in seconds, by name."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    samples: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(reps):
        for name, call in calls.items():
            samples[name].append(timed(call))
    return samples


class Http:
    """One keep-alive connection to the gateway, as a browser or a script holds one."""

    def __init__(self, port: int, headers: dict[str, str]) -> None:
        self.port = port
        self.headers = headers
        self.conn = http.client.HTTPConnection(HOST, port, timeout=10)

    def get(self, path: str, headers: dict[str, str] | None = None) -> tuple[int, Any, bytes]:
        """(status, the response, its body); a broken connection is opened again next time."""
        try:
            self.conn.request("GET", path, headers={**self.headers, **(headers or {})})
            answer = self.conn.getresponse()
            return answer.status, answer, answer.read()
        except (OSError, http.client.HTTPException):
            self.close()
            self.conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
            raise

    def checked(self, path: str, headers: dict[str, str] | None = None) -> tuple[Any, bytes]:
        status, answer, body = self.get(path, headers)
        if status != 200:
            raise RuntimeError(f"GET {path} answered {status}: {body[:200]!r}")
        return answer, body

    def close(self) -> None:
        self.conn.close()


def bearer(stack: Any) -> dict[str, str]:
    from procorch.gateway import token

    return {"Authorization": f"Bearer {token.read(Path(stack.run_dir))}"}


# -- the overview ------------------------------------------------------------------------


def measure_overview(stack: Any, plan: Plan, results: Results) -> None:
    """The gateway's update of the overview's data, in this process: with its history full,
    as on a gateway whose dashboards have been open ten minutes (`POINTS` points a series,
    one a second), and empty, as on a fresh one; its parts; a poll between updates."""
    from procorch.config import load_config
    from procorch.gateway.backend import Backend
    from procorch.gateway.history import POINTS
    from procorch.gateway.live import LiveView
    from procorch.services.protocol import dumps
    from procorch.supervisor import control
    from procorch.supervisor.rundir import RunDir

    backend = Backend(load_config(Path(stack.conf), run_dir=Path(stack.run_dir)))
    socket = RunDir(backend.run_dir).socket
    try:
        # refresh 0: every call is an update, and adds a point to the history
        full = LiveView(backend, refresh=0)
        for _ in range(POINTS):
            full.current()
        fresh = LiveView(backend, refresh=0)
        fresh.current()
        assert full.data is not None
        results.overview_bytes = {
            "fresh": len(fresh.body(None)),
            "full": len(full.body(None)),  # what a page opening gets
            "poll": len(full.body(full.data["time"])),  # what a page polling gets
        }
        services = full.data["services"]
        results.services = len(services)
        results.replicas = sum(len(s["replicas"]) for s in services)

        def opening() -> None:  # a page opens: the whole history, built once per update
            full.current()
            full.body(None)

        results.overview.update(
            timed_rounds(
                {
                    "full": full.current,
                    "fresh": lambda: LiveView(backend, refresh=0).current(),
                    "status": lambda: control.request(socket, {"cmd": "status"}, timeout=5),
                    "stats": backend.jobs.stats,
                    "dumps": lambda: dumps(full.data),
                    "open": opening,
                },
                plan.refreshes,
            )
        )
        shared = LiveView(backend)  # as the gateway's: an update at most once a second
        shared.current()
        results.overview["cached"] = [timed(shared.current) for _ in range(plan.cached_calls)]
    finally:
        backend.jobs.close()
        backend.client.close()


def measure_overview_http(stack: Any, plan: Plan, results: Results) -> None:
    """`GET /api/overview` over HTTP, back to back (so mostly the shared data, an update
    at most once a second among them): whole, as a page opening asks, and with `since`,
    as a page polling asks."""
    client = Http(stack.port, bearer(stack))
    try:
        _, body = client.checked("/api/overview")
        results.overview_bytes["served"] = len(body)
        whole, polled = [], []
        for _ in range(plan.http_requests):
            whole.append(timed(lambda: client.checked("/api/overview")))
            since = json.loads(client.checked("/api/overview")[1])["time"]
            path = f"/api/overview?since={since}"
            polled.append(timed(partial(client.checked, path)))
        results.overview["http"], results.overview["http_since"] = whole, polled
    finally:
        client.close()


# -- the jobs page -----------------------------------------------------------------------


def jobs_queries(total: int) -> list[Query]:
    """What the jobs page asks for: its first page, each filter, and a page deep down."""
    from gateway.dashplan import Query

    return [
        Query("first page, no filter", {}),
        Query("status=failed", {"status": "failed"}),
        Query("status=done, function=fib", {"status": "done", "function": "fib"}),
        Query("function=noop", {"function": "noop"}),
        Query("queue=default", {"queue": "default"}),
        Query("status=pending", {"status": "pending"}),
        Query(f"deep page: offset {total // 2:,}, no filter", {"offset": str(total // 2)}),
    ]


def list_call(jobs: Jobs, params: dict[str, str]) -> Callable[[], dict[str, Any]]:
    """The page's query as `GET /api/jobs` makes it (procorch/gateway/jobs.py, list_jobs)."""
    return lambda: jobs.list(
        params.get("status") or None,
        PAGE,
        int(params.get("offset", 0)),
        params.get("function") or None,
        params.get("queue") or None,
    )


def statements(jobs: Jobs, call: Callable[[], object]) -> list[str]:
    """The SQL `call` runs on the store's connection, with its values bound in (the
    sqlite3 trace callback gives the expanded statement): to time and explain each
    alone. The store's connection is private to it; a benchmark may look."""
    seen: list[str] = []
    db = jobs._store.db
    db.set_trace_callback(seen.append)
    try:
        call()
    finally:
        db.set_trace_callback(None)
    return [s for s in seen if s.lstrip().upper().startswith("SELECT")]


def measure_jobs_page(stack: Any, jobs: Jobs, plan: Plan, results: Results) -> None:
    """Each query as the page makes it (`Jobs.list`), its two statements alone with their
    plans, and the whole `GET /api/jobs` over HTTP."""
    queries = jobs_queries(sum(results.counts.values()))
    calls = {q.label: list_call(jobs, q.params) for q in queries}
    for q in queries:
        q.matching = calls[q.label]()["total"]
    api = timed_rounds(calls, plan.query_reps)
    path = Path(stack.run_dir) / "jobs.db"
    mine = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        split: dict[str, Callable[[], object]] = {}
        for q in queries:
            q.api = api[q.label]
            select, count = statements(jobs, calls[q.label])
            q.plans = [(s, explain(mine, s)) for s in (select, count)]
            split[f"{q.label}/select"] = _runner(mine, select)
            split[f"{q.label}/count"] = _runner(mine, count)
        alone = timed_rounds(split, plan.query_reps)
        for q in queries:
            q.select, q.count = alone[f"{q.label}/select"], alone[f"{q.label}/count"]
    finally:
        mine.close()
    client = Http(stack.port, bearer(stack))
    try:
        paths = {q.label: "/api/jobs?" + urlencode({**q.params, "limit": PAGE}) for q in queries}
        for q in queries:  # each answers, and finds what Jobs.list found
            _, body = client.checked(paths[q.label])
            if json.loads(body)["total"] != q.matching:
                raise RuntimeError(f"GET {paths[q.label]} found another total than Jobs.list")
        over_http = timed_rounds(
            {q.label: (lambda p=paths[q.label]: client.checked(p)) for q in queries},
            plan.http_requests,
        )
        for q in queries:
            q.http = over_http[q.label]
    finally:
        client.close()
    results.queries = queries


def _runner(db: sqlite3.Connection, sql: str) -> Callable[[], object]:
    return lambda: db.execute(sql).fetchall()


def explain(db: sqlite3.Connection, sql: str) -> list[str]:
    """SQLite's plan for `sql`: one line per step (SCAN, SEARCH, USE TEMP B-TREE ...)."""
    return [row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql).fetchall()]


# -- open dashboards vs none -------------------------------------------------------------


def session_cookie(stack: Any) -> str:
    """The session a browser gets from the URL `procorch dashboard` prints."""
    from http.cookies import SimpleCookie

    from procorch.gateway import token
    from procorch.gateway.session import COOKIE

    client = Http(stack.port, {})
    try:
        query = urlencode({"token": token.read(Path(stack.run_dir))})
        status, answer, _ = client.get(f"/ui?{query}")
    finally:
        client.close()
    jar = SimpleCookie(answer.getheader("Set-Cookie") or "")
    if status != 303 or COOKIE not in jar:
        raise RuntimeError(f"GET /ui?token=… answered {status} without a session cookie")
    return jar[COOKIE].value


def overview_pages(port: int, cookie: str, count: int, conn: Any) -> None:
    """The child process: `count` open overview pages, each a thread with its own
    connection doing what the page's script does (see dashplan's notes). It says "ready"
    on `conn` once each page has had its first answer; then each "take" is answered with
    the polls completed since the last one, and "stop" (or the harness gone) closes the
    pages."""

    from procorch.gateway.session import COOKIE

    child.die_with_parent()
    lock = threading.Lock()
    polls: list[tuple[int, float]] = []
    loaded = [threading.Event() for _ in range(count)]
    stop = threading.Event()

    def page(index: int) -> None:
        stop.wait(index / count)  # opened one after another, not all in the same instant
        browser = Http(port, {"Cookie": f"{COOKIE}={cookie}", "Accept": "application/json"})
        since = None  # the newest point this page holds, as the page's script keeps it
        while not stop.is_set():
            started = time.perf_counter()
            try:
                path = "/api/overview" if since is None else f"/api/overview?since={since}"
                status, _, body = browser.get(path, None)
                if status == 200:
                    since = json.loads(body)["time"]
            except (OSError, http.client.HTTPException, ValueError):
                status = 0
            with lock:
                polls.append((status, time.perf_counter() - started))
            loaded[index].set()
            stop.wait(1.0)
        browser.close()

    pages = [threading.Thread(target=page, args=(i,)) for i in range(count)]
    for thread in pages:
        thread.start()
    for event in loaded:
        event.wait()
    conn.send("ready")
    while True:
        try:
            message = conn.recv()
        except EOFError:  # the harness is gone
            break
        if message != "take":
            break
        with lock:
            taken = polls[:]
            polls.clear()
        conn.send(taken)
    stop.set()
    for thread in pages:
        thread.join()


class Dashboards:
    """`count` open dashboards in a process of their own (spawned: a clean interpreter,
    not a fork of the harness), for a `with` block that starts once every page has loaded;
    the process is stopped at its end whatever happens."""

    def __init__(self, port: int, cookie: str, count: int) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, theirs = ctx.Pipe()
        self.proc = ctx.Process(
            target=overview_pages, args=(port, cookie, count, theirs), daemon=True
        )

    def __enter__(self) -> Dashboards:
        self.proc.start()
        try:
            self._expect("ready")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._conn.send("stop")
        except OSError:  # gone already
            pass
        self.proc.join(5)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join()
        self._conn.close()

    def _expect(self, what: str) -> Any:
        try:
            if self._conn.poll(DASHBOARDS_TIMEOUT):
                return self._conn.recv()
        except EOFError:  # the process is gone: its traceback went to stderr
            pass
        raise RuntimeError(f"the simulated dashboards did not report back ({what})")

    def take(self) -> list[Poll]:
        """The polls the pages completed since the last `take`."""
        from gateway.dashplan import Poll

        self._conn.send("take")
        return [Poll(status, seconds) for status, seconds in self._expect("their polls")]


def watched_pids(stack: Any) -> dict[str, list[int]]:
    """The processes whose CPU the API rounds report: the gateway, the service it calls,
    and the daemon."""
    from procorch.supervisor import control
    from procorch.supervisor.rundir import RunDir

    status = control.request(RunDir(Path(stack.run_dir)).socket, {"cmd": "status"}, timeout=10)
    found: dict[str, list[int]] = {"daemon": [status["supervisor"]["pid"]]}
    for replica in status["services"]:
        if replica["name"] in ("Gateway", "UserService") and replica["pid"]:
            found.setdefault(replica["name"], []).append(replica["pid"])
    return found


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes have used so far (gone ones count 0)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            times = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def loaded_run(
    wrk: str, url: str, script: Path, load: Load, wrk_log: Path, pids: dict[str, list[int]]
) -> tuple[WrkResult, dict[str, float]]:
    """One wrk run; with the cores each group of `pids` used meanwhile."""
    from gateway import wrk as gwwrk

    before = {name: cpu_seconds(group) for name, group in pids.items()}
    started = time.monotonic()
    got = gwwrk.run(wrk, url, script, load, wrk_log)
    wall = time.monotonic() - started
    return got, {name: (cpu_seconds(g) - before[name]) / wall for name, g in pids.items()}


def gateway_cores(pids: list[int], seconds: float) -> float:
    """The cores the gateway's processes use over the next `seconds`."""
    before = cpu_seconds(pids)
    time.sleep(seconds)
    return (cpu_seconds(pids) - before) / seconds


def history_points(stack: Any) -> int:
    """The points in the gateway's own history (its first service's series)."""
    client = Http(stack.port, bearer(stack))
    try:
        _, body = client.checked("/api/overview")
    finally:
        client.close()
    services = json.loads(body)["services"]
    return len(services[0]["series"]["t"]) if services else 0


def measure_idle(stack: Any, cookie: str, plan: Plan, results: Results) -> None:
    """What open dashboards cost a gateway with nothing else to do: its CPU with none
    open, then with `plan.dashboards` open, at once (a young history) and, unless
    `plan.age` is off, once they have kept it polling until its history is full (ten
    minutes). Without wrk's load these are quiet figures; the requests/s comparison
    after them is a noisy one."""
    from procorch.gateway.history import POINTS

    gateway = watched_pids(stack)["Gateway"]
    results.idle_cpu["none"] = gateway_cores(gateway, plan.idle_seconds)
    with Dashboards(stack.port, cookie, plan.dashboards) as pages:
        stages = ["young", "full"] if plan.age else ["young"]
        for stage in stages:
            if stage == "full":
                started = time.monotonic()
                deadline = started + AGE_TIMEOUT
                while (points := history_points(stack)) < POINTS:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"the gateway's history has {points} points only")
                    log(f"[bench]   the gateway's history: {points} of {POINTS} points")
                    time.sleep(min(30.0, POINTS - points + 1))
                results.aged_seconds = time.monotonic() - started
            results.history[stage] = history_points(stack)
            pages.take()
            results.idle_cpu[stage] = gateway_cores(gateway, plan.idle_seconds)
            results.idle_polls[stage] = len(pages.take())
    log(
        "[bench]   the gateway's cores without wrk: "
        + ", ".join(f"{stage} {used:.3f}" for stage, used in results.idle_cpu.items())
    )


def measure_api(stack: Any, wrk: str, plan: Plan, load: Load, root: Path, results: Results) -> None:
    """wrk against `GET /users/1` with none and `plan.dashboards` dashboards open, taking
    turns round by round."""
    from gateway import peers as gwpeers
    from gateway import wrk as gwwrk

    created = gwpeers.request(stack.url("/users"), "POST", gwpeers.USER)
    url = stack.url(f"/users/{gwpeers.find_id(created, ('id', 'user_id')) or 1}")
    gwpeers.request(url)  # it answers 2xx before it is measured
    script = gwwrk.lua_script(root / "users.lua", "GET", None)
    wrk_log = root / "wrk.log"
    cookie = session_cookie(stack)
    measure_idle(stack, cookie, plan, results)
    measure_overview_http(stack, plan, results)
    pids = watched_pids(stack)
    if plan.warmup:
        warm = gwwrk.Load(load.threads, load.connections, plan.warmup)
        gwwrk.run(wrk, url, script, warm, wrk_log)
    for round_ in range(plan.rounds):
        for count in (0, plan.dashboards):
            if count:
                with Dashboards(stack.port, cookie, count) as pages:
                    time.sleep(plan.settle)
                    pages.take()
                    watched = {**pids, DASHBOARDS: [pages.proc.pid]}
                    got, cpu = loaded_run(wrk, url, script, load, wrk_log, watched)
                    results.polls += pages.take()
            else:
                got, cpu = loaded_run(wrk, url, script, load, wrk_log, pids)
            results.api_runs.setdefault(count, []).append(got)
            results.cpu.setdefault(count, []).append(cpu)
            if got.non2xx or got.socket_errors:
                results.notes.append(
                    f"round {round_ + 1}, {count} open: {got.non2xx} non-2xx answers and "
                    f"{got.socket_errors} socket errors of {got.requests:,} requests"
                )
            log(
                f"[bench]   round {round_ + 1}, {count or 'no'} dashboards open: "
                f"{got.rps:,.0f} req/s, p99 {got.p99_ms:.2f} ms; cores: "
                + ", ".join(f"{name} {used:.2f}" for name, used in cpu.items())
            )


# -- the run -----------------------------------------------------------------------------


def measure(stack: Any, wrk: str, plan: Plan, load: Load, root: Path, results: Results) -> None:
    """Everything, in order: the stack, its jobs, the overview, the jobs page, the API."""
    log(f"[bench] procorch up: {plan.sleepers} sleepers, UserService, JobWorker, Gateway")
    start_stack(stack, plan, root)
    jobs = open_jobs(stack)
    try:
        log(f"[bench] {plan.jobs:,} jobs into the store; the workers run them")
        started = time.monotonic()
        populate(jobs, plan.jobs)
        results.populate_seconds = time.monotonic() - started
        results.counts = jobs.stats()["counts"]
        log(f"[bench]   {results.counts} in {results.populate_seconds:.0f} s")
        log(f"[bench] the overview's data: 600 untimed updates, then {plan.refreshes} timed")
        measure_overview(stack, plan, results)
        log("[bench] the jobs page's queries")
        measure_jobs_page(stack, jobs, plan, results)
    finally:
        jobs.close()
    log(f"[bench] GET /users/1 with none and {plan.dashboards} dashboards open")
    measure_api(stack, wrk, plan, load, root, results)


def run(args: argparse.Namespace) -> RunOutput:
    # Only importable inside bench/.venv (flask, waitress, psutil), hence imported here.
    from gateway import dashplan
    from gateway import hello as gwhello
    from gateway import peers as gwpeers
    from gateway import wrk as gwwrk

    plan = dashplan.QUICK if args.quick else dashplan.FULL
    if getattr(args, "age", False):
        plan = dataclasses.replace(plan, age=True)
    # as the endpoints part: one wrk thread, one keep-alive connection per waitress thread
    load = gwwrk.Load(threads=1, connections=gwhello.THREADS, seconds=plan.wrk_seconds)
    root = Path(tempfile.mkdtemp(prefix="pdb-", dir="/tmp"))
    gwpeers.Procorch.keep_tmp = args.keep_tmp
    gwpeers.Procorch.cli = str(benchvenv.BIN_DIR / "procorch")
    stack = gwpeers.Procorch()
    results = dashplan.Results(load=[os.getloadavg()[0]])
    started = time.monotonic()
    try:
        wrk = gwwrk.ensure_wrk()
        results.versions["wrk"] = gwwrk.version(wrk)
        measure(stack, wrk, plan, load, root, results)
    except (gwwrk.WrkError, gwpeers.PeerError, TimeoutError) as exc:
        raise RuntimeError(str(exc)) from exc
    finally:
        stack.stop()
        if args.keep_tmp:
            log(f"[bench] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    results.load.append(os.getloadavg()[0])
    log(f"[bench] done in {time.monotonic() - started:.0f} s")
    command = "python bench/gateway --parts dashboard" + (" --quick" if args.quick else "")
    section = dashplan.render(results, plan, load, command)
    out = RunOutput(sections={dashplan.SECTION: section})
    full = results.overview.get("full")
    if full:
        out.figures["overview update, history full (median)"] = Figure(median(full), "ms")
    timed = [median(q.api) for q in results.queries if q.api]
    if timed:
        out.figures["slowest jobs-page query (median)"] = Figure(max(timed), "ms")
    ratio = dashplan.api_ratio(results, plan)
    if ratio is not None:
        out.ratios[f"GET /users/1 req/s, {plan.dashboards} dashboards ÷ none"] = ratio
    out.notes += results.notes
    return out
