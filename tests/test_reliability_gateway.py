"""The gateway's port when no gateway runs, and the gateway before a corrupt registry.

Real stacks with the real gateway on a free loopback port: a FATAL or stopped gateway
is answered 503 at once by the daemon (which still holds the port), and serves again
after `procorch start Gateway`.
"""

from __future__ import annotations

import os
import signal
import socket
import textwrap
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import GatewayStack, jobs_table, wait_for


def timed_get(url: str) -> tuple[requests.Response, float]:
    started = time.monotonic()
    response = requests.get(url, timeout=2)  # a black hole fails the test in 2 s
    return response, time.monotonic() - started


def assert_unavailable_fast(gateway: GatewayStack) -> requests.Response:
    for _ in range(5):  # each a new connection
        response, seconds = timed_get(gateway.url + "/health")
        assert seconds < 0.1, seconds
        assert response.status_code == 503
        assert response.headers["Content-Type"] == "application/json"
        body = response.json()
        assert body["status"] == "error" and body["code"] == "unavailable"
        assert body["message"].startswith("the gateway is not running")
    return response


def port_is_held(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def test_stopped_gateway_answers_503_at_once_and_start_serves_again(
    gateway: GatewayStack,
) -> None:
    assert gateway.get("/health").status_code == 200
    assert gateway.cli("stop", "Gateway").returncode == 0
    response = assert_unavailable_fast(gateway)
    assert "stopped" in response.json()["message"]
    assert "Retry-After" not in response.headers
    assert port_is_held(gateway.port)  # nothing else can take it meanwhile
    assert gateway.cli("start", "Gateway").returncode == 0
    assert requests.get(gateway.url + "/health", timeout=5).json()["status"] == "healthy"


def test_fatal_gateway_answers_503_at_once_and_start_serves_again(
    gateway: GatewayStack,
) -> None:
    def kill_current() -> bool:
        replicas = gateway.replicas("Gateway")  # one per CPU (`workers = "auto"`)
        for replica in replicas:
            if replica["state"] != "fatal" and replica["pid"]:
                try:
                    os.kill(replica["pid"], signal.SIGKILL)
                except ProcessLookupError:
                    pass
        return all(replica["state"] == "fatal" for replica in replicas)

    wait_for(kill_current, timeout=30, interval=0.05)  # a crash loop: 6 quick deaths
    assert any(e["event"] == "fatal" for e in gateway.events())
    response = assert_unavailable_fast(gateway)
    assert "fatal" in response.json()["message"]
    assert 1 <= int(response.headers["Retry-After"]) <= 60  # fatal_retry's cool-off
    assert port_is_held(gateway.port)
    assert gateway.cli("start", "Gateway").returncode == 0
    assert requests.get(gateway.url + "/health", timeout=5).json()["status"] == "healthy"
    assert all(r["state"] == "running" for r in gateway.replicas("Gateway"))


def test_a_request_that_arrives_while_the_gateway_restarts_is_served(
    gateway: GatewayStack,
) -> None:
    """Not 503: a crashed gateway's replacement is coming, so the backlog waits for it."""
    time.sleep(1.2)  # past the crash-loop window: restarted at once
    for _ in range(3):
        old = gateway.pid_of("Gateway")
        os.kill(old, signal.SIGKILL)
        response = requests.get(gateway.url + "/health", timeout=10)
        assert response.status_code == 200
        wait_for(lambda o=old: gateway.restarted("Gateway", o))
        time.sleep(1.1)


@pytest.mark.parametrize("content", ["garbage{", '{"token": "0123", "processes": [1]}'])
def test_corrupt_registry_is_a_503_from_the_gateway(tmp_path: Path, content: str) -> None:
    gateway = GatewayStack(tmp_path)
    try:
        # a long check interval: the daemon leaves the corrupt file alone for a while
        gateway.config.write_text(
            "[procorch]\ncheck_interval = 30\n"
            + jobs_table()
            + textwrap.dedent(f"\n[gateway]\nenabled = true\nport = {gateway.port}\n")
        )
        gateway.up()
        (gateway.run_dir / "state.json").write_text(content)
        response = gateway.get("/services")
        assert response.status_code == 503, response.text
        body = response.json()
        assert body["code"] == "unavailable"
        assert "state.json is corrupt" in body["message"]
    finally:
        gateway.cleanup()
