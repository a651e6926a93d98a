"""The full procorch gateway on three WSGI servers side by side: waitress (the built-in
Gateway service), gunicorn (gthread) and granian, in one procorch stack, measured
endpoint by endpoint in interleaved rounds.

    .venv/bin/python bench/gateway/servers.py                 # 3 rounds of 5 s per run
    .venv/bin/python bench/gateway/servers.py --rounds 5 --seconds 3 --servers waitress,granian

Run it with the python of a venv where procorch is installed with gunicorn and granian
(`pip install -e '.[test]' granian`). One `procorch up` runs the built-in services
(users, orders, notifications, two job workers with no delay and no failures) and three
gateways on three ports, each on a listening socket the daemon binds and hands down:

- waitress: `[gateway]`, the built-in Gateway service, as `procorch up --gateway` runs it;
- gunicorn: a command service with `listen`, `gunicorn` reading the socket from
  LISTEN_FDS (its systemd activation), one gthread worker with `[gateway] threads`;
- granian: a command service with `listen`, granian's WSGI worker on fd 3 in this
  process, `[gateway] threads` Python threads (granian's CLI cannot take an open socket;
  its worker class can, see `serve_granian`).

All three serve the same app (`create_app(config)` with the same config and the same
per-request counting wrapper) and are pinned to the same CPU as the Gateway pins itself
(`[gateway] pin_cpu`). Load: wrk, one thread, one keep-alive connection per server
thread, `--seconds` per run. Each round runs every endpoint on every server, the servers'
order rotating from round to round (the machine's load drifts); the first round is
preceded by a warm-up of each pair. The table gives each server's median over the
rounds and the range (min–max), and the median and range of its requests/s ÷ waitress's
in the same round (the two runs closest in time).

Then, unless `--no-promises`, what each server keeps of the gateway's promises, with
`request_deadline = 2`: 50 clients trickling a request head (a byte every 0.25 s), then
50 trickling a POST body, while a new client asks GET /health every 0.25 s (are the
tricklers dropped, are new clients served?); and `procorch restart` of the server's
service under a load of new connections (does any request fail?).

Everything it starts is stopped at the end (`procorch down`), on error and Ctrl-C too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
SERVERS = ("waitress", "gunicorn", "granian")
USER = {"username": "u1", "email": "u1@example.com"}
ORDER = {"user_id": 1, "product": "p", "quantity": 1}
THREADS = 8  # [gateway] threads' default: also wrk's connections


@dataclass(frozen=True)
class Endpoint:
    label: str
    method: str
    path: str
    body: dict[str, Any] | None = None


ENDPOINTS = (
    Endpoint("GET /health", "GET", "/health"),
    Endpoint("GET /users/1", "GET", "/users/1"),
    Endpoint("GET /job/1", "GET", "/job/1"),
    Endpoint("POST /orders", "POST", "/orders", ORDER),
    Endpoint("POST /job/100", "POST", "/job/100"),
)


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --- the servers, as command services --------------------------------------------------


def gateway_app(conf: str, run_dir: str) -> tuple[Any, Any]:
    """The gateway's app, as the Gateway service builds it, and its settings."""
    from procorch.config import load_config
    from procorch.gateway.app import create_app
    from procorch.gateway.server import counted

    config = load_config(Path(conf), run_dir=Path(run_dir))
    lock = threading.Lock()
    totals = [0, 0.0, 0]

    def count(seconds: float, failed: bool) -> None:  # as Service.count_request: a lock
        with lock:
            totals[0] += 1
            totals[1] += seconds
            totals[2] += failed

    return counted(create_app(config), count), config.gateway


def serve_granian(conf: str, run_dir: str) -> None:
    """granian's WSGI worker on the inherited fd 3, as granian's own server runs it in a
    worker (granian.server.mt/mp `_spawn_wsgi_worker`), until SIGTERM."""
    from granian._futures import _new_cbscheduler
    from granian._granian import MetricsAggregator, SocketHolder, WorkerSignal, WSGIWorker
    from granian._loops import loops
    from granian.http import HTTP1Settings
    from granian.wsgi import _callback_wrapper

    from procorch.gateway.service import pin_to_one_cpu

    app, settings = gateway_app(conf, run_dir)
    pin_to_one_cpu(0)  # before the worker starts its threads, which inherit it
    # granian's own listeners have TCP_NODELAY, which accepted sockets inherit (Linux);
    # without it, Nagle and delayed ACKs put 40 ms on some answers
    with socket.socket(fileno=os.dup(3)) as listener:
        listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    holder = SocketHolder(3, False, 1024)
    stop = WorkerSignal()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    loop = loops.get("asyncio")
    worker = WSGIWorker(
        1,
        (None, holder),
        None,  # no IPC
        1,  # runtime threads (Rust)
        512,  # runtime blocking threads (Rust)
        settings.threads,  # Python threads running the app
        30,  # their idle timeout
        # backpressure: connections served at once (granian accepts no more until one
        # closes), so the equivalent of waitress's connection_limit
        settings.connection_limit,
        "1",  # HTTP/1.1 only, as waitress
        HTTP1Settings(header_read_timeout=int(settings.request_deadline * 1000)),
        None,
        None,  # no static files
        False,  # no TLS ...
        None,
        None,
        None,
        "tls13",
        None,
        [],
        False,
        (None, MetricsAggregator(1)),
    )
    scheduler = _new_cbscheduler(loop, _callback_wrapper(app, {}, None), impl_asyncio=True)
    worker.serve_mtr(scheduler, loop, stop)  # returns at once: the runtime has its threads
    done.wait()
    stop.set()
    time.sleep(0.5)  # granian's worker has no handle to wait for its connections on


def serve_gunicorn(conf: str, run_dir: str) -> None:
    """gunicorn's arbiter and one gthread worker on the socket in LISTEN_FDS."""
    from gunicorn.app.base import BaseApplication

    from procorch.gateway.service import pin_to_one_cpu

    app, settings = gateway_app(conf, run_dir)

    class Gunicorn(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("worker_class", "gthread")
            self.cfg.set("workers", 1)
            self.cfg.set("threads", settings.threads)
            self.cfg.set("worker_connections", settings.connection_limit)
            self.cfg.set("post_fork", lambda server, worker: pin_to_one_cpu(0))

        def load(self) -> Any:
            return app

    Gunicorn().run()


# --- the harness -----------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def write_config(root: Path, ports: dict[str, int]) -> tuple[Path, Path]:
    conf, run_dir = root / "procorch.toml", root / "run"
    text = [
        "# written by bench/gateway/servers.py: the built-in stack, three gateways",
        f'[gateway]\nenabled = true\nhost = "{HOST}"\nport = {ports["waitress"]}\n'
        # one process, as gunicorn's one worker and granian's
        f"request_deadline = {DEADLINE}\nworkers = 1\n",
        "[jobs]\ndelay = 0\nfailure_rate = 0\n",
        '[services.UserService]\nmodule = "procorch.services.users:UserService"\n',
        "[services.NotificationService]\n"
        'module = "procorch.services.notifications:NotificationService"\n',
        '[services.OrderService]\nmodule = "procorch.services.orders:OrderService"\n'
        'depends_on = ["UserService"]\n',
    ]
    for name in ("gunicorn", "granian"):
        if name in ports:
            argv = [sys.executable, "-u", str(Path(__file__).resolve()), "serve", name]
            argv += [str(conf), str(run_dir)]
            text.append(
                f"[services.gw-{name}]\ncommand = {json.dumps(argv)}\n"
                f'listen = ["tcp://{HOST}:{ports[name]}"]\nstop_timeout = 5\n'
            )
    conf.write_text("\n".join(text))
    return conf, run_dir


def cli(root: Path, *args: str, timeout: float = 60) -> None:
    conf, run_dir = root / "procorch.toml", root / "run"
    exe = str(Path(sys.executable).with_name("procorch"))
    done = subprocess.run(
        [exe, *args, "-c", str(conf), "--run-dir", str(run_dir)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"procorch {args[0]}: {(done.stderr or done.stdout).strip()[-400:]}")


def request(url: str, method: str = "GET", body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=10) as answer:
        return json.loads(answer.read() or b"null")


def wait_ready(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            request(url)
            return
        except (OSError, ValueError) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} did not answer: {exc}") from None
            time.sleep(0.1)


DONE_LUA = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK-JSON {"requests": %d, "duration_us": %d, "p50_us": %d, '
    .. '"p99_us": %d, "non2xx": %d, "socket_errors": %d}\\n', summary.requests,
    summary.duration, latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
"""


@dataclass(frozen=True)
class Run:
    rps: float
    p50: float  # ms
    p99: float  # ms
    errors: int  # non-2xx answers and socket errors


def wrk(url: str, ep: Endpoint, seconds: int, root: Path) -> Run:
    script = root / f"{ep.method}-{ep.path.replace('/', '_')}.lua"
    lines = [f'wrk.method = "{ep.method}"']
    if ep.body is not None:
        lines += [
            f"wrk.body = [[{json.dumps(ep.body)}]]",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    script.write_text("\n".join(lines) + "\n" + DONE_LUA)
    cmd = ["wrk", "-t1", f"-c{THREADS}", f"-d{seconds}s", "-s", str(script), url + ep.path]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 30, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("WRK-JSON "):
            got = json.loads(line[len("WRK-JSON ") :])
            return Run(
                rps=got["requests"] / (got["duration_us"] / 1e6),
                p50=got["p50_us"] / 1000,
                p99=got["p99_us"] / 1000,
                errors=got["non2xx"] + got["socket_errors"],
            )
    raise RuntimeError(f"wrk failed: {(done.stderr or done.stdout).strip()[-300:]}")


def interleaved(
    urls: dict[str, str],
    endpoints: list[Endpoint],
    rounds: int,
    seconds: int,
    warmup: int,
    root: Path,
    tag: str = "bench",
) -> dict[tuple[str, str], list[Run]]:
    """Each endpoint on each server, round after round; the servers' order rotates with
    the round and the endpoint, so the machine's drift hits them alike."""
    names = list(urls)
    results: dict[tuple[str, str], list[Run]] = {}
    for rnd in range(rounds):
        for i, ep in enumerate(endpoints):
            shift = (rnd + i) % len(names)
            for name in names[shift:] + names[:shift]:
                if rnd == 0 and warmup:
                    wrk(urls[name], ep, warmup, root)
                got = wrk(urls[name], ep, seconds, root)
                results.setdefault((ep.label, name), []).append(got)
                log(
                    f"[{tag}] round {rnd + 1} {ep.label:14} {name:9} {got.rps:7,.0f} req/s "
                    f"p50 {got.p50:6.2f} ms p99 {got.p99:6.2f} ms"
                    + (f" {got.errors} errors" if got.errors else "")
                )
    return results


def measure(args: argparse.Namespace, root: Path) -> dict[tuple[str, str], list[Run]]:
    servers = args.servers.split(",")
    ports = {name: free_port() for name in servers}
    ports.setdefault("waitress", free_port())  # the built-in gateway runs anyway
    write_config(root, ports)
    cli(root, "up")
    urls = {name: f"http://{HOST}:{ports[name]}" for name in servers}
    for url in urls.values():
        wait_ready(url + "/health")
    first = next(iter(urls.values()))
    request(first + "/users", "POST", USER)
    request(first + "/job/100", "POST")
    for url in urls.values():  # every endpoint answers 2xx on every server
        for ep in ENDPOINTS:
            request(url + ep.path, ep.method, ep.body)
    results = interleaved(urls, ENDPOINTS, args.rounds, args.seconds, args.warmup, root)
    if args.promises:
        for name in servers:
            promises[name] = check_promises(name, ports[name], root)
    return results


# --- what each server keeps of the gateway's promises ------------------------------------

DEADLINE = 2  # [gateway] request_deadline in this run's config (the default is 10 s)
TRICKLERS = 50


def trickle(port: int, head: bytes, seconds: float) -> tuple[int, float]:
    """`TRICKLERS` connections that send `head`, then a byte every 0.25 s; meanwhile a new
    client asks GET /health every 0.25 s. How many tricklers were dropped (closed, with
    or without an answer) within `seconds`, and the new clients' slowest answer (s)."""
    import socket as sockets

    conns = []
    for _ in range(TRICKLERS):
        conn = sockets.create_connection((HOST, port), timeout=5)
        conn.sendall(head)
        conn.setblocking(False)
        conns.append(conn)
    dropped: set[int] = set()
    slowest = 0.0
    failures: list[str] = []
    started = time.monotonic()
    try:
        while time.monotonic() - started < seconds and len(dropped) < len(conns):
            for i, conn in enumerate(conns):
                if i in dropped:
                    continue
                try:
                    conn.recv(4096)  # an answer (408) or EOF: it was dropped
                    dropped.add(i)
                except BlockingIOError:
                    try:
                        conn.send(b"x")
                    except OSError:
                        dropped.add(i)
                except OSError:
                    dropped.add(i)
            asked = time.monotonic()
            try:
                request(f"http://{HOST}:{port}/health")
                slowest = max(slowest, time.monotonic() - asked)
            except (OSError, ValueError) as exc:
                slowest = max(slowest, float("inf"))
                failures.append(f"{type(exc).__name__}: {exc}"[:80])
            time.sleep(0.25)
    finally:
        for conn in conns:
            conn.close()
    if failures:
        log(f"[bench]   {len(failures)} new clients failed, e.g. {failures[0]}")
    return len(dropped), slowest


def refused_during_restart(port: int, service: str, root: Path) -> tuple[int, int]:
    """GET /health on a new connection each time, from 4 threads, while `procorch restart
    SERVICE` replaces the gateway process: (answered, failed: refused, reset, timeout)."""
    outcomes: list[bool] = []
    failures: list[str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            try:
                request(f"http://{HOST}:{port}/health")
                outcomes.append(True)
            except (OSError, ValueError) as exc:
                outcomes.append(False)
                failures.append(f"{type(exc).__name__}: {exc}"[:80])
                time.sleep(0.01)

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        cli(root, "restart", service)
        time.sleep(1.0)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if failures:
        log(f"[bench]   {service}: {len(failures)} failed, e.g. {', '.join(set(failures))}")
    return sum(outcomes), len(outcomes) - sum(outcomes)


def check_promises(name: str, port: int, root: Path) -> dict[str, str]:
    heads = {
        "trickling head": b"GET /health HTTP/1.1\r\nHost: x\r\n",
        "trickling body": b"POST /orders HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        b"\r\nContent-Length: 100000\r\n\r\n{",
    }
    got = {}
    for what, head in heads.items():
        dropped, slowest = trickle(port, head, DEADLINE * 2 + 1.5)
        got[what] = f"{dropped}/{TRICKLERS} dropped in {DEADLINE * 2 + 1.5:g} s, " + (
            f"new clients' slowest {slowest * 1000:,.0f} ms"
        )
        log(f"[bench] {name}: {what}: {got[what]}")
        wait_ready(f"http://{HOST}:{port}/health")
    service = "Gateway" if name == "waitress" else f"gw-{name}"
    answered, failed = refused_during_restart(port, service, root)
    got["restart"] = f"{failed} of {answered + failed} requests failed during a restart"
    log(f"[bench] {name}: restart: {got['restart']}")
    wait_ready(f"http://{HOST}:{port}/health")
    return got


promises: dict[str, dict[str, str]] = {}


def table(results: dict[tuple[str, str], list[Run]], servers: list[str]) -> str:
    def spread(values: list[float], fmt: str) -> str:
        return f"{format(statistics.median(values), fmt)} ({format(min(values), fmt)}–" + (
            f"{format(max(values), fmt)})"
        )

    head = "| endpoint | " + " | ".join(f"{s} req/s | {s} p99 ms" for s in servers) + " |"
    rows = [head, "|" + " --- |" * (1 + 2 * len(servers))]
    for ep in ENDPOINTS:
        cells = [ep.label]
        base = results.get((ep.label, "waitress"))
        for name in servers:
            runs = results[(ep.label, name)]
            rps = [r.rps for r in runs]
            p99 = [r.p99 for r in runs]
            rps_cell, p99_cell = spread(rps, ",.0f"), spread(p99, ".1f")
            if base is not None and name != "waitress":
                # each round's ratio to waitress's run of the same round (next in time)
                ratios = [r.rps / b.rps for r, b in zip(runs, base, strict=True)]
                rps_cell += f" **{spread(ratios, '.2f')}×**"
            if sum(r.errors for r in runs):
                rps_cell += f" [{sum(r.errors for r in runs)} errors]"
            cells += [rps_cell, p99_cell]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    if argv[:1] == ["serve"]:
        {"granian": serve_granian, "gunicorn": serve_gunicorn}[argv[1]](argv[2], argv[3])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", default=",".join(SERVERS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="per wrk run")
    parser.add_argument("--warmup", type=int, default=1, help="s per pair before round 1")
    parser.add_argument("--endpoints", help="comma-separated labels' paths (default: all)")
    parser.add_argument(
        "--no-promises",
        dest="promises",
        action="store_false",
        help="skip the slow-client and restart checks",
    )
    parser.add_argument("--keep-tmp", action="store_true")
    args = parser.parse_args(argv)
    if args.endpoints:
        global ENDPOINTS
        wanted = args.endpoints.split(",")
        ENDPOINTS = tuple(ep for ep in ENDPOINTS if ep.path in wanted)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is missing: apt-get install -y wrk")
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    root = Path(tempfile.mkdtemp(prefix="pgs", dir="/tmp"))  # short: socket paths
    try:
        results = measure(args, root)
    finally:
        try:
            cli(root, "down")
        except Exception as exc:  # noqa: BLE001 - report it, keep cleaning up
            log(f"[bench] procorch down: {exc}")
        if args.keep_tmp:
            log(f"[bench] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    versions = []
    for module in ("waitress", "gunicorn", "granian", "flask"):
        try:
            from importlib.metadata import version

            versions.append(f"{module} {version(module)}")
        except Exception:  # noqa: BLE001
            pass
    print(
        f"{args.rounds} rounds, wrk -t1 -c{THREADS} -d{args.seconds}s per run, "
        f"{os.cpu_count()} CPUs; {', '.join(versions)}\n"
    )
    print(table(results, args.servers.split(",")))
    if promises:
        print(f"\nrequest_deadline = {DEADLINE} s, {TRICKLERS} clients sending a byte / 0.25 s:\n")
        kinds = list(next(iter(promises.values())))
        print("| server | " + " | ".join(kinds) + " |")
        print("|" + " --- |" * (1 + len(kinds)))
        for name, got in promises.items():
            print(f"| {name} | " + " | ".join(got[kind] for kind in kinds) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
