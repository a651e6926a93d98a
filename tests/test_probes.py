"""tcp probes on the daemon's event loop (`health.Prober`): real sockets, a real selector.

A probe of an address in numbers is a non-blocking connect made on the loop, with no
thread; a name to resolve goes to the pool. Either way the answer is worded as before.
"""

from __future__ import annotations

import selectors
import socket
import threading
import time
from dataclasses import replace

from procorch.config import HealthCheck
from procorch.supervisor.health import Prober, numeric_family
from procorch.supervisor.process import Replica
from tests.conftest import load_toml


def _replica(tmp_path, port: int, host: str = "127.0.0.1") -> Replica:
    config = load_toml(tmp_path, '[services.web]\ncommand = "sleep 1"\n')
    svc = replace(config.services[0], health=HealthCheck(tcp=port, host=host))
    replica = Replica(svc, 0, slot=0)
    replica.pid = 4242
    return replica


class Loop:
    """Just enough of the daemon's loop: a selector, and the answers as they come."""

    def __init__(self) -> None:
        self.selector = selectors.DefaultSelector()
        self.answers: list[tuple[int | None, str | None, bool]] = []
        self.prober = Prober(self.done, self.selector)

    def done(self, replica: Replica, pid: int | None, problem: str | None) -> None:
        on_loop = threading.current_thread() is threading.main_thread()
        self.answers.append((pid, problem, on_loop))

    def turn_until_answered(self, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.answers and time.monotonic() < deadline:
            for key, _ in self.selector.select(0.05):
                key.data(key)
            self.prober.expire(time.monotonic())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_listening_port_is_healthy_answered_on_the_loop(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as server:
        loop = Loop()
        loop.prober.submit(_replica(tmp_path, server.getsockname()[1]))
        loop.turn_until_answered()
    assert loop.answers == [(4242, None, True)]
    assert loop.prober._pool is None  # no thread was needed
    assert not loop.selector.get_map()  # nothing left registered


def test_a_closed_port_says_refused_as_before(tmp_path):
    loop = Loop()
    loop.prober.submit(_replica(tmp_path, _free_port()))
    loop.turn_until_answered()
    ((pid, problem, on_loop),) = loop.answers
    assert pid == 4242 and on_loop
    assert problem == "probe failed: [Errno 111] Connection refused"


def test_one_probe_at_a_time_per_replica(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as server:
        loop = Loop()
        replica = _replica(tmp_path, server.getsockname()[1])
        loop.prober.submit(replica)
        loop.prober.submit(replica)  # still under way (or answered but not yet taken)
        loop.turn_until_answered()
        time.sleep(0.1)
        loop.turn_until_answered(0.1)
    assert len(loop.answers) == 1


def test_a_name_is_resolved_on_the_pool_not_the_loop(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as server:
        loop = Loop()
        loop.prober.submit(_replica(tmp_path, server.getsockname()[1], host="localhost"))
        deadline = time.monotonic() + 5
        while not loop.answers and time.monotonic() < deadline:
            time.sleep(0.01)
    loop.prober.shutdown()
    # answered by `probe` on the pool (its callback may run here, if it finished first)
    assert [(pid, problem) for pid, problem, _ in loop.answers] == [(4242, None)]
    assert loop.prober._pool is not None


def test_numbers_and_names():
    assert numeric_family("127.0.0.1") == socket.AF_INET
    assert numeric_family("::1") == socket.AF_INET6
    assert numeric_family("localhost") is None
    assert numeric_family("db.internal") is None
