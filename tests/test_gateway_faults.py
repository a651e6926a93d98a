"""The gateway under faults and abuse: a hung service, slow clients, no token, huge integers.

Real stacks, real signals (SIGSTOP), real sockets: a hung UserService may hold only its
share of the gateway's threads while the rest keep their latency; clients that trickle
their request are dropped at the deadline while new clients are served; the token made
with one key or flag, never shown; and integers past Python's 4,300-digit conversion
limit refused with 400 in every integer slot the OpenAPI document has.
"""

from __future__ import annotations

import http.client
import json
import math
import os
import select
import signal
import socket
import statistics
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import PY, GatewayStack, wait_for
from tests.test_gateway_lifecycle import hang

BIG = "1" * 5000  # past int()'s 4,300-digit limit

# --- bulkheads: a hung service holds its share of the threads, no more ------------------

# The /users load runs in a process of its own: 16 busy client threads in the test's
# process would hold its GIL and add their turns to the latencies measured here.
USERS_LOAD = """
import http.client, json, sys, threading, time
port, seconds, clients = int(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
answers, stop = [], time.monotonic() + seconds
def client():
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    while time.monotonic() < stop:
        started = time.monotonic()
        conn.request("GET", "/users/1")
        response = conn.getresponse()
        body = json.loads(response.read())
        answers.append([response.status, body.get("message"), time.monotonic() - started])
        if response.will_close:
            conn.close()
threads = [threading.Thread(target=client) for _ in range(clients)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps(answers))
"""


def latencies(port: int, path: str, count: int, budget: float = 2.0) -> list[float]:
    """Up to `count` sequential GETs of `path` on one kept-alive connection, each one's
    seconds; within `budget` seconds in all (a request that takes longer counts as inf)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=budget)
    seconds: list[float] = []
    deadline = time.monotonic() + budget
    try:
        while len(seconds) < count and time.monotonic() < deadline:
            started = time.monotonic()
            try:
                conn.request("GET", path)
                response = conn.getresponse()
                response.read()
            except TimeoutError:
                seconds.append(math.inf)
                break
            seconds.append(time.monotonic() - started)
            assert response.status == 200
    finally:
        conn.close()
    return seconds


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def test_a_hung_service_holds_only_its_share_of_the_gateways_threads(tmp_path: Path) -> None:
    """8 threads, so UserService may hold 4: 16 clients on /users get 504s (the 4 that
    waited) and instant 503s, while /job/ID and /health keep their latency."""
    gateway = GatewayStack(tmp_path)
    try:
        gateway.write_gateway("timeout = 2\n")  # the hang stays within heartbeat_timeout
        gateway.up()
        hung_gateway(gateway)
    finally:
        gateway.cleanup()


def hung_gateway(gateway: GatewayStack) -> None:
    assert gateway.post("/users", json={"username": "ann", "email": "ann@x.org"}).ok
    job_id = gateway.post("/job/10").json()["job_id"]
    wait_for(lambda: gateway.get(f"/job/{job_id}").json()["status"] == "done")
    pid = gateway.pid_of("UserService")
    hang(pid)
    try:
        load = subprocess.Popen(
            [PY, "-c", USERS_LOAD, str(gateway.port), "3", "16"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(1.0)  # past the bulkhead's patience (0.5 s): the steady state
        job = latencies(gateway.port, f"/job/{job_id}", 100)
        health = latencies(gateway.port, "/health", 100)
        out, _ = load.communicate(timeout=30)
    finally:
        os.kill(pid, signal.SIGCONT)  # within the 10 s heartbeat timeout: not restarted
    assert len(job) == len(health) == 100, (job[-3:], health[-3:])
    assert p99(job) < 0.1, sorted(job)[-5:]
    assert p99(health) < 0.1, sorted(health)[-5:]
    answers = json.loads(out)
    refused = [seconds for status, _, seconds in answers if status == 503]
    assert len(refused) > 100, answers[:20]  # the clients kept calling, refused at once
    assert p99(refused) < 0.1
    messages = {message for status, message, _ in answers if status == 503}
    assert messages == {"UserService is busy or hung: 4 requests already waiting"}
    assert {status for status, _, _ in answers} == {503, 504}  # the 4 waited for the timeout
    # SIGCONT: UserService answers again, and every thread with it
    assert gateway.pid_of("UserService") == pid
    wait_for(lambda: gateway.get("/users/1").status_code == 200)
    with requests.Session() as http_session:
        for _ in range(20):
            assert http_session.get(gateway.url + "/users/1", timeout=10).status_code == 200


# --- slow clients: a deadline for the whole request ------------------------------------


def test_trickling_clients_are_dropped_at_the_deadline_and_others_served(
    tmp_path: Path,
) -> None:
    """200 connections sending a byte every 0.25 s (never idle, so waitress's inactivity
    timeout never fires) are dropped at the 2 s deadline; meanwhile new clients are served."""
    gateway = GatewayStack(tmp_path)
    tricklers: list[socket.socket] = []
    try:
        gateway.write_gateway("request_deadline = 2\nconnection_limit = 250\n")
        gateway.up()
        opened = time.monotonic()
        for _ in range(200):
            s = socket.create_connection(("127.0.0.1", gateway.port), timeout=5)
            s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            tricklers.append(s)
        dropped: dict[socket.socket, tuple[float, bytes]] = {}
        served: list[float] = []
        http_session = requests.Session()
        while len(dropped) < len(tricklers) and time.monotonic() - opened < 6:
            for s in tricklers:
                if s not in dropped:
                    try:
                        s.send(b"X")
                    except OSError:
                        dropped[s] = (time.monotonic() - opened, b"")
            readable, _, _ = select.select([s for s in tricklers if s not in dropped], [], [], 0)
            for s in readable:
                try:
                    answer = s.recv(4096)
                except OSError:
                    answer = b""
                dropped[s] = (time.monotonic() - opened, answer)
            if time.monotonic() - opened < 1.5:  # a new client, while all 200 trickle
                started = time.monotonic()
                assert http_session.get(gateway.url + "/health", timeout=5).status_code == 200
                served.append(time.monotonic() - started)
            time.sleep(0.25)
        http_session.close()
        assert len(dropped) == 200, f"{200 - len(dropped)} tricklers still connected after 6 s"
        times = [seconds for seconds, _ in dropped.values()]
        assert min(times) >= 1.9 and max(times) < 4.5, (min(times), max(times))
        assert len(served) >= 4 and max(served) < 0.5, served
        for _, answer in dropped.values():
            if answer:  # the 408 came before the close (a reset may have overtaken it)
                head, _, body = answer.partition(b"\r\n\r\n")
                assert head.startswith(b"HTTP/1.1 408 "), head
                assert json.loads(body) == {
                    "status": "error",
                    "message": "the request was not complete within 2 s",
                    "code": "timeout",
                }
        assert any(answer for _, answer in dropped.values())
        assert gateway.get("/health").status_code == 200
    finally:
        for s in tricklers:
            s.close()
        gateway.cleanup()


def test_the_connection_limit_is_configurable(tmp_path: Path) -> None:
    """Past `connection_limit` open connections, a new one waits in the backlog until
    some close (with the old hard-coded 1,000, the 31st was served at once)."""
    gateway = GatewayStack(tmp_path)
    idle: list[socket.socket] = []
    try:
        # the limit is each gateway process's: one process here
        gateway.write_gateway("connection_limit = 20\nworkers = 1\n")
        gateway.up()
        idle = [socket.create_connection(("127.0.0.1", gateway.port)) for _ in range(30)]
        waiting = socket.create_connection(("127.0.0.1", gateway.port), timeout=1)
        waiting.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        with pytest.raises(TimeoutError):
            waiting.recv(100)  # not accepted: the gateway is at its limit
        while idle:
            idle.pop().close()
        waiting.settimeout(5)
        assert waiting.recv(100).startswith(b"HTTP/1.1 200 ")
        waiting.close()
    finally:
        for s in idle:
            s.close()
        gateway.cleanup()


# --- the token: one key or flag away, kept owner-only, never shown ----------------------

NO_TOKEN_LINE = (
    "procorch: the gateway at http://127.0.0.1:{port}/ takes requests without a token from "
    "any local user; `procorch up --gateway --token` makes one (see `procorch gateway-token`)"
)


def test_up_says_when_the_gateway_takes_requests_without_a_token(tmp_path: Path) -> None:
    gateway = GatewayStack(tmp_path)
    try:
        gateway.write_gateway()
        result = gateway.up()
        assert NO_TOKEN_LINE.format(port=gateway.port) in result.stderr.splitlines()
        assert gateway.get("/users").status_code == 200  # the originals' curl still works
        token = gateway.cli("gateway-token")
        assert (token.returncode, token.stdout) == (1, "")
        assert token.stderr.startswith("procorch: the gateway has no token")
        assert len(token.stderr.splitlines()) == 1
    finally:
        gateway.cleanup()


@pytest.mark.parametrize("how", ["config", "flag"])
def test_an_automatic_token_is_made_kept_owner_only_and_never_shown(
    tmp_path: Path, how: str
) -> None:
    gateway = GatewayStack(tmp_path)
    try:
        if how == "config":
            gateway.write_gateway('token = "auto"\n')
            up = gateway.up()
        else:
            gateway.write_gateway()
            up = gateway.up("--token")
        path = gateway.run_dir / "gateway.token"
        assert path.stat().st_mode & 0o777 == 0o600
        token = path.read_text().strip()
        assert len(token) >= 32 and token.isascii()
        printed = gateway.cli("gateway-token")
        assert (printed.returncode, printed.stdout, printed.stderr) == (0, token + "\n", "")
        assert "without a token" not in up.stderr
        assert "procorch gateway-token" in up.stderr  # where to find it, not the token

        refused = gateway.get("/users")
        assert refused.status_code == 401 and refused.json()["code"] == "unauthorized"
        bearer = {"Authorization": f"Bearer {token}"}
        assert gateway.get("/users", headers=bearer).status_code == 200
        assert gateway.get("/health").status_code == 200  # open, as ever

        # a restarted gateway keeps it: scripts holding it go on working
        assert gateway.cli("restart", "Gateway").returncode == 0
        wait_for(lambda: gateway.get("/users", headers=bearer).status_code == 200)

        shown = [up.stdout, up.stderr]
        for args in (["status", "--json"], ["status"], ["events", "--json"], ["logs", "-n", "500"]):
            result = gateway.cli(*args)
            shown += [result.stdout, result.stderr]
        shown += [gateway.get(p, headers=bearer).text for p in ("/services", "/openapi.json")]
        shown += [
            f.read_text(errors="replace")
            for f in gateway.run_dir.rglob("*")
            if f.is_file() and f != path and f.suffix in ("", ".log", ".json", ".txt")
        ]
        assert not [text for text in shown if token in text]
    finally:
        gateway.cleanup()


# --- integers past int()'s 4,300-digit limit --------------------------------------------


def integer_slots(doc: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any] | None]]:
    """(method, where, URL, JSON body) with BIG in one integer slot (where: path, query
    or body) of each operation of the OpenAPI document, the other slots valid."""

    def is_int(schema: dict[str, Any]) -> bool:
        kind = schema.get("type")
        return kind == "integer" or (isinstance(kind, list) and "integer" in kind)

    cases = []
    for path, item in doc["paths"].items():
        for method, op in item.items():
            params = op.get("parameters", [])
            for param in filter(lambda p: is_int(p["schema"]), params):
                url = path
                for other in params:
                    if other["in"] == "path":
                        value = BIG if other is param else "1"
                        url = url.replace("{" + other["name"] + "}", value)
                if param["in"] == "query":
                    url += f"?{param['name']}={BIG}"
                cases.append((method.upper(), param["in"], url, None))
            if "requestBody" in op:
                ref = op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                schema = doc["components"]["schemas"][ref.rsplit("/", 1)[1]]
                # a body of several shapes (POST /jobs: fib, or another function): each
                # shape's integers, with the constants that pick that shape
                for shape in schema.get("oneOf", [schema]):
                    fixed = {k: p["const"] for k, p in shape["properties"].items() if "const" in p}
                    for name, prop in shape["properties"].items():
                        if is_int(prop):
                            cases.append((method.upper(), "body", path, {**fixed, name: BIG}))
    return cases


def test_integers_past_the_conversion_limit_are_400_in_every_slot(
    gateway: GatewayStack,
) -> None:
    """Before, 8 operations answered 500 (GET /users, /orders, /notifications, /jobs,
    /info; POST, GET and DELETE /job/ID), and GET /users/BIG a 404 "no such endpoint"
    echoing the 5,000 digits."""
    # the dashboard's and control API's operations always want the (automatic) token
    token = (gateway.run_dir / "gateway.token").read_text().strip()
    gateway.http.headers["Authorization"] = f"Bearer {token}"
    doc = gateway.get("/openapi.json").json()
    cases = integer_slots(doc)
    assert len(cases) >= 20
    failures = []
    for method, _, url, body in cases:
        for sign in ("", "-"):
            data = None if body is None else json.dumps(body).replace(f'"{BIG}"', sign + BIG)
            target = url.replace(BIG, sign + BIG)
            response = gateway.request(
                method, target, data=data, headers={"Content-Type": "application/json"}
            )
            # a negative job id names no job (404), as /job/-1 does; elsewhere it is a 400
            expected = {400: "invalid", 404: "not_found"} if sign else {400: "invalid"}
            json_answer = response.headers["Content-Type"] == "application/json"
            answer = response.json() if json_answer else {}
            if (
                response.status_code not in expected
                or answer.get("code") != expected[response.status_code]
                or set(answer) != {"status", "message", "code"}
                or len(answer["message"]) > 200  # one line, not the number echoed back
            ):
                failures.append((method, target[:40], body and list(body), response.text[:120]))
    assert not failures, failures
    wrong_method = gateway.request("PUT", f"/job/{BIG}")  # the 405 names the path, cut short
    assert wrong_method.status_code == 405 and len(wrong_method.json()["message"]) < 200
    # leading zeros do not count towards the limit (int() counts them)
    zeros = "0" * 5000
    assert gateway.post("/users", json={"username": "ann", "email": "ann@x.org"}).ok
    assert gateway.get(f"/users?limit={zeros}1").json()["count"] == 1
    assert gateway.get(f"/users/{zeros}1").json()["user"]["username"] == "ann"


@pytest.mark.parametrize(
    ("number", "problem"),
    [
        (
            BIG,
            "the data has an integer too large for a double: 11111111111111111111… (5000 digits)",
        ),
        (
            "-" + BIG,
            "the data has an integer too large for a double: -1111111111111111111… (5000 digits)",
        ),
        (
            "1" * 400,
            "the data has an integer too large for a double: 11111111111111111111… (400 digits)",
        ),
        (
            "1" * 400 + ".0",
            "the data has a number too large for a double: 11111111111111111111… (402 characters)",
        ),
    ],
)
def test_cli_call_refuses_an_integer_json_cannot_carry_in_one_line(
    tmp_path: Path, number: str, problem: str
) -> None:
    """Refused before any service is asked (none runs here): the services read JSON with
    orjson, which cannot take an integer a double cannot hold."""
    result = subprocess.run(
        [PY, "-m", "procorch", "call", "OrderService", "create_order", f'{{"quantity": {number}}}'],
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("PROCORCH_")},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert (result.returncode, result.stdout, result.stderr) == (2, "", f"procorch: {problem}\n")
