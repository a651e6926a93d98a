"""The gateway as a supervised process: failures behind it, its own death, its port, its host.

Real stacks, real signals, real HTTP: 503 at once while a service is down, 504 when one
hangs, kill -9 of UserService under load and of the gateway itself, a port in use, and
the warning for a gateway reachable from other machines without a token.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import GatewayStack, RedisServer, wait_for


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.monotonic()
    result = fn(*args, **kwargs)
    return result, time.monotonic() - started


def every_user(gateway: GatewayStack) -> list[dict[str, Any]]:
    users: list[dict[str, Any]] = []
    while page := gateway.get(f"/users?limit=1000&offset={len(users)}").json()["users"]:
        users += page
    return users


def hang(pid: int) -> None:
    """SIGSTOP `pid` and wait until every thread of it has stopped.

    A process's threads stop one by one, each as it next runs: until the last has, one
    may still take a request. (The gateway's accepting thread did: it took the next
    connection and froze holding it, 1 run in 10 under load.)"""
    os.kill(pid, signal.SIGSTOP)

    def stopped() -> bool:
        tasks = list(Path(f"/proc/{pid}/task").glob("*/stat"))
        # the state is the field after the command's closing parenthesis
        return bool(tasks) and all(
            t.read_text().rsplit(")", 1)[1].split()[0] in ("T", "t") for t in tasks
        )

    wait_for(stopped, timeout=5)


def assert_error(response: requests.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == "application/json"
    body = response.json()
    assert body["status"] == "error" and body["message"]
    return body


# --- the services behind it ------------------------------------------------------------


def test_stopped_service_answers_503_at_once(gateway: GatewayStack) -> None:
    created = gateway.post("/users", json={"username": "ann", "email": "ann@x.org"})
    assert created.status_code == 201
    assert gateway.cli("stop", "UserService").returncode == 0
    response, seconds = timed(gateway.get, "/users/1")
    assert_error(response, 503)
    assert seconds < 0.5  # no waiting for the timeout: nothing listens
    response, seconds = timed(
        gateway.post, "/orders", json={"user_id": 1, "product": "p", "quantity": 1}
    )
    assert_error(response, 503)  # OrderService cannot check the user
    assert seconds < 0.5
    assert gateway.get("/orders").json()["total"] == 0  # nothing created by a refused request
    health = gateway.get("/services/UserService/health").json()
    assert health["health"] == "dead"
    assert gateway.get("/health").json()["services"]["UserService"]["status"] == "stopped"
    assert gateway.cli("start", "UserService").returncode == 0
    assert gateway.get("/users/1").json()["user"]["username"] == "ann"


def test_health_is_degraded_while_a_service_is_dead_and_names_it(gateway: GatewayStack) -> None:
    def health() -> dict[str, Any]:
        response = gateway.get("/health")
        assert response.status_code == 200  # the gateway answers, and so do the others
        return response.json()

    assert (health()["status"], health()["dead"]) == ("healthy", [])
    for name in ("OrderService", "NotificationService"):
        assert gateway.cli("stop", name).returncode == 0
    body = health()
    assert body["status"] == "degraded"
    assert body["message"] == "Gateway is running; dead: NotificationService, OrderService"
    assert body["dead"] == ["NotificationService", "OrderService"]  # in start order
    assert body["services"]["OrderService"] == {"status": "stopped", "health": "dead"}
    assert body["services"]["UserService"]["health"] == "healthy"
    assert set(body) == {"status", "message", "version", "services", "dead"}

    assert gateway.cli("start", "NotificationService").returncode == 0
    assert health()["dead"] == ["OrderService"]
    assert gateway.cli("start", "OrderService").returncode == 0
    body = health()
    assert (body["status"], body["message"], body["dead"]) == (
        "healthy",
        "Gateway is running",
        [],
    )


def test_a_notification_needs_user_service_to_vouch_for_the_user(gateway: GatewayStack) -> None:
    created = gateway.post("/users", json={"username": "ann", "email": "ann@x.org"})
    assert created.status_code == 201
    assert gateway.cli("stop", "UserService").returncode == 0
    response, seconds = timed(gateway.post, "/notifications", json={"user_id": 1, "message": "hi"})
    body = assert_error(response, 503)
    assert body["code"] == "unavailable" and "cannot check the user" in body["message"]
    assert seconds < 0.5
    assert gateway.get("/notifications").json()["total"] == 0
    assert gateway.cli("start", "UserService").returncode == 0
    sent = gateway.post("/notifications", json={"user_id": 1, "message": "hi"})
    assert sent.status_code == 200 and sent.json()["notification"]["type"] == "email"


def test_hung_service_answers_504_within_the_timeout(tmp_path: Any) -> None:
    gateway = GatewayStack(tmp_path)
    try:
        gateway.write_gateway("timeout = 1.0\n")
        gateway.up()
        gateway.post("/users", json={"username": "ann", "email": "ann@x.org"})
        pid = gateway.pid_of("UserService")
        hang(pid)
        try:
            response, seconds = timed(gateway.get, "/users/1")
            body = assert_error(response, 504)
            assert body["code"] == "timeout"
            assert 1.0 <= seconds < 1.5
        finally:
            os.kill(pid, signal.SIGCONT)
        assert gateway.get("/users/1").status_code == 200
    finally:
        gateway.cleanup()


def test_user_service_killed_during_requests(gateway: GatewayStack) -> None:
    """503 while UserService is down, 2xx after its restart, every acknowledged user kept."""
    acknowledged: list[str] = []
    failures: list[tuple[int | str, float]] = []
    workers = itertools.count()

    def load(stop: threading.Event) -> None:
        worker = next(workers)
        with requests.Session() as http:
            for n in itertools.count():
                if stop.is_set():
                    return
                name = f"w{worker}-{n}"
                started = time.monotonic()
                r = http.post(
                    gateway.url + "/users",
                    json={"username": name, "email": f"{name}@x.org"},
                    timeout=10,
                )
                got = r.json()["user"]["username"] if r.status_code == 201 else None
                if got == name:
                    acknowledged.append(name)
                else:  # a 503, or (failing the test below) an answer to another request
                    failures.append((got or r.status_code, time.monotonic() - started))

    gateway.kill_under_load("UserService", load, acknowledged)
    assert failures, "the kill went unnoticed: no request failed"
    assert {status for status, _ in failures} == {503}
    assert max(seconds for _, seconds in failures) < 1.0  # fast, not the 5 s timeout
    stored = {u["username"] for u in every_user(gateway)}
    assert set(acknowledged) <= stored  # nothing acknowledged was lost


# --- the gateway itself ------------------------------------------------------------------


def test_gateway_killed_is_restarted_and_serves_again(gateway: GatewayStack) -> None:
    assert gateway.get("/health").status_code == 200
    time.sleep(1.2)  # past the crash-loop window
    old_pid = gateway.pid_of("Gateway")
    os.kill(old_pid, signal.SIGKILL)
    # The daemon keeps the port bound: a new connection waits in the backlog, not refused.
    # (The session's kept-alive connection died with the old process.)
    response = requests.get(gateway.url + "/health", timeout=10)
    assert response.status_code == 200
    assert response.json()["status"] == "healthy"
    wait_for(lambda: gateway.restarted("Gateway", old_pid))
    assert gateway.replicas("Gateway")[0]["restarts"] == 1


def new_connection_get(port: int, path: str) -> int | str:
    """GET on a connection of its own: the status, or the kind of failure."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
    except ConnectionRefusedError:
        return "refused"
    except ConnectionResetError:
        return "reset"
    except OSError as exc:
        return type(exc).__name__
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else "no answer"


def test_gateway_restarts_under_load_fail_no_request(gateway: GatewayStack) -> None:
    """Clients on new connections while the gateway process is replaced, again and again:
    each is answered 200, none refused, reset or closed unanswered. The old process stops
    accepting and answers what it was sent; the rest wait for the new one in the daemon's
    socket. (Closing connections it had accepted but not read lost 1 request in ~2,000
    at each restart.)"""
    outcomes: list[int | str] = []
    kept_alive: list[int | str] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            outcomes.append(new_connection_get(gateway.port, "/health"))

    def session_load() -> None:  # a kept-alive client: its connection is closed after
        with requests.Session() as session:  # an answer saying so, never under a request
            while not stop.is_set():
                try:
                    kept_alive.append(session.get(gateway.url + "/health", timeout=10).status_code)
                except requests.RequestException as exc:
                    kept_alive.append(type(exc).__name__)

    threads = [threading.Thread(target=load) for _ in range(4)]
    threads += [threading.Thread(target=session_load) for _ in range(2)]
    for thread in threads:
        thread.start()
    stops = []
    try:
        for _ in range(4):
            time.sleep(0.3)
            old_pid = gateway.pid_of("Gateway")
            started = time.monotonic()
            assert gateway.cli("restart", "Gateway").returncode == 0
            wait_for(lambda old_pid=old_pid: gateway.restarted("Gateway", old_pid))
            stops.append(time.monotonic() - started)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    failed = [outcome for outcome in outcomes if outcome != 200]
    assert len(outcomes) > 200 and not failed, (len(outcomes), failed[:10])
    failed = [outcome for outcome in kept_alive if outcome != 200]
    assert len(kept_alive) > 100 and not failed, (len(kept_alive), failed[:10])
    # the kept-alive clients do not hold the old process for its whole grace (5 s)
    assert max(stops) < 4.0, stops


def test_gateway_requests_show_in_status(gateway: GatewayStack) -> None:
    for _ in range(5):
        gateway.get("/health")
    gateway.get("/no-such-page")

    def totals() -> tuple[int, int]:  # over its replicas, one per CPU (`workers = "auto"`)
        replicas = gateway.replicas("Gateway")
        return sum(r["requests"] for r in replicas), sum(r["errors"] for r in replicas)

    wait_for(lambda: totals()[0] >= 6)
    assert totals()[1] >= 1


def test_down_frees_the_port(gateway: GatewayStack) -> None:
    assert gateway.cli("down").returncode == 0
    with pytest.raises(requests.ConnectionError):
        gateway.get("/health", timeout=2)
    gateway.up()  # and it can be bound again at once (SO_REUSEADDR)
    assert gateway.get("/health").status_code == 200


# --- its port and its host -------------------------------------------------------------


def test_port_in_use_fails_up_with_one_line(tmp_path: Any) -> None:
    gateway = GatewayStack(tmp_path)
    try:
        gateway.write_gateway()
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", gateway.port))
            squatter.listen()
            result = gateway.cli("up")
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert f"port {gateway.port} on 127.0.0.1 is already in use" in lines[0]
        assert "Traceback" not in result.stdout + result.stderr
        assert gateway.cli("status").returncode == 1  # no daemon was left behind
        assert not gateway.leftovers()
        gateway.up()  # the port is free again: the same run directory starts cleanly
        assert gateway.get("/health").status_code == 200
    finally:
        gateway.cleanup()


def test_second_up_says_already_running_not_port_in_use(gateway: GatewayStack) -> None:
    result = gateway.cli("up")
    assert result.returncode == 0
    assert "already running" in result.stderr
    assert "in use" not in result.stderr


def test_gateway_port_from_the_environment(tmp_path: Any) -> None:
    gateway = GatewayStack(tmp_path)
    try:
        gateway.write("[jobs]\ndelay = 0\n")  # no [gateway] table: all from the CLI and env
        env = {**os.environ, "GATEWAY_PORT": str(gateway.port)}
        result = gateway.cli("up", "--gateway", env=env)
        assert result.returncode == 0, result.stderr
        assert gateway.get("/").json()["message"] == "Process-Based Service Orchestration API"
    finally:
        gateway.cleanup()


@pytest.mark.parametrize("token", [None, "a-token-long-enough-0123"])
def test_exposed_gateway_without_token_warns(tmp_path: Any, token: str | None) -> None:
    gateway = GatewayStack(tmp_path, token=token)
    try:
        gateway.write_gateway('host = "0.0.0.0"\n')
        result = gateway.up()
        warned = "warning: the gateway listens on 0.0.0.0" in result.stderr
        assert warned is (token is None)
        assert gateway.get("/health").status_code == 200
    finally:
        gateway.cleanup()


def test_up_gateway_on_a_daemon_without_one_says_how(tmp_path: Any) -> None:
    gateway = GatewayStack(tmp_path)
    try:
        gateway.write("[jobs]\ndelay = 0\n")
        gateway.up()
        result = gateway.cli(
            "up", "--gateway", env={**os.environ, "GATEWAY_PORT": str(gateway.port)}
        )
        # the running stack differs from what was asked: said, and not a success
        assert result.returncode == 1
        assert "  added: Gateway" in result.stderr.splitlines()
        assert "`procorch down`, then `procorch up`" in result.stderr
        with pytest.raises(requests.ConnectionError):
            gateway.get("/health", timeout=2)
    finally:
        gateway.cleanup()


# --- jobs behind it ----------------------------------------------------------------------


def test_finished_jobs_are_not_kept_when_ids_can_be_reused(tmp_path: Any, redis_url: str) -> None:
    """On Redis a FLUSHALL restarts the ids: job 1 afterwards is another job, and the
    gateway must say so (its cache of finished jobs is for stores that never reuse ids)."""
    import redis

    gateway = GatewayStack(tmp_path)
    try:
        gateway.write_gateway(backend=redis_url)
        gateway.up()
        assert gateway.post("/job/10").json()["job_id"] == 1
        wait_for(lambda: gateway.get("/job/1").json()["status"] == "done")
        assert gateway.get("/job/1").json()["output"] == 55
        redis.Redis.from_url(redis_url).flushall()
        assert gateway.post("/job/20").json()["job_id"] == 1
        wait_for(lambda: gateway.get("/job/1").json()["output"] == 6765)
    finally:
        gateway.cleanup()


def test_finished_job_answers_stay_exact(gateway: GatewayStack) -> None:
    job_id = gateway.post("/job/100?mod=1000").json()["job_id"]
    done = wait_for(lambda: (j := gateway.get(f"/job/{job_id}").json())["status"] == "done" and j)
    assert done["output"] == 75
    assert gateway.get(f"/job/{job_id}").json() == done  # served again (from the cache)
    assert gateway.get(f"/info?id={job_id}").json() == done
    assert gateway.delete(f"/job/{job_id}").status_code == 409  # finished: nothing to cancel


def test_workers_share_the_port_and_cover_for_each_other(tmp_path: Any) -> None:
    gateway = GatewayStack(tmp_path)
    try:
        gateway.write_gateway("workers = 2\n")
        gateway.up()
        replicas = gateway.replicas("Gateway")
        assert [r["state"] for r in replicas] == ["running", "running"]
        hang(replicas[0]["pid"])  # one hangs: the other answers
        try:
            for _ in range(20):  # new connections each time, so the kernel spreads them
                assert requests.get(gateway.url + "/health", timeout=10).status_code == 200
            served = {r["replica"]: r["requests"] for r in gateway.replicas("Gateway")}
            assert served[1] >= 20
        finally:
            os.kill(replicas[0]["pid"], signal.SIGCONT)
    finally:
        gateway.cleanup()


def thread_cpus(pid: int) -> list[set[int]]:
    """The CPUs each thread of `pid` may run on, from the kernel's Cpus_allowed_list."""
    found = []
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        for line in status.read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                cpus: set[int] = set()
                for part in line.split(":", 1)[1].strip().split(","):
                    first, _, last = part.partition("-")
                    cpus.update(range(int(first), int(last or first) + 1))
                found.append(cpus)
    return found


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="pinning needs 2 CPUs to show")
@pytest.mark.parametrize("pin", [True, False])
def test_each_gateway_process_is_pinned_to_one_cpu(tmp_path: Any, pin: bool) -> None:
    gateway = GatewayStack(tmp_path)
    try:
        gateway.write_gateway(f"workers = 2\npin_cpu = {str(pin).lower()}\n")
        gateway.up()
        per_process = [thread_cpus(r["pid"]) for r in gateway.replicas("Gateway")]
        assert all(len(threads) > 8 for threads in per_process)  # waitress's threads too
        if pin:  # every thread of a process on one CPU, and each process on another
            chosen = [threads[0] for threads in per_process]
            assert all(all(cpus == threads[0] for cpus in threads) for threads in per_process)
            assert all(len(cpus) == 1 for cpus in chosen) and chosen[0] != chosen[1]
        else:
            everywhere = os.sched_getaffinity(0)
            assert all(cpus == everywhere for threads in per_process for cpus in threads)
        assert gateway.get("/health").status_code == 200
    finally:
        gateway.cleanup()


def test_job_store_down_is_503_and_the_rest_still_answers(
    tmp_path: Any, new_redis_server: Callable[[], RedisServer]
) -> None:
    (tmp_path / "stack").mkdir()
    server = new_redis_server()
    gateway = GatewayStack(tmp_path / "stack")
    try:
        gateway.write_gateway(backend=server.url)
        gateway.up()
        first = gateway.post("/job/10").json()["job_id"]
        wait_for(lambda: gateway.get(f"/job/{first}").json()["status"] == "done")
        server.stop()
        for method, path in [("POST", "/job/10"), ("GET", f"/job/{first}"), ("GET", "/jobs")]:
            response, seconds = timed(gateway.request, method, path)
            assert "cannot reach redis" in assert_error(response, 503)["message"]
            assert seconds < 1.0
        assert gateway.get("/health").status_code == 200
        metrics = gateway.get("/metrics")
        assert metrics.status_code == 200
        assert "procorch_job_store_up 0.0" in metrics.text
        assert 'procorch_process_state{replica="0",service="UserService",state="running"} 1.0' in (
            metrics.text
        )
    finally:
        gateway.cleanup()
