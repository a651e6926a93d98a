"""The instruments of the rolling restart (bench/supervisors/live.py), on real processes
and sockets.

The benchmark itself needs bench/.venv with supervisord and circus and runs for minutes,
so it is not run here. What is checked instead is what its headline figure rests on: the
load generator counts a refused connection as a failure, and the HTTP server, handed a
socket the systemd way (LISTEN_FDS, fd 3), loses nothing when its copies are replaced one
at a time on a socket held throughout. The figures' arithmetic is checked alone.
"""

from __future__ import annotations

import importlib
import json
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

from tests.conftest import wait_for

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], ModuleType]]:
    """An importer of bench/supervisors' modules by their short names (bench/ holds the
    areas as packages: `supervisors.liveroll`), with bench/ on the path for this test only."""
    monkeypatch.syspath_prepend(str(BENCH))
    yield lambda name: importlib.import_module(f"supervisors.{name}")
    for name, module in list(sys.modules.items()):  # `supervisors`, `harness` freed again
        if str(getattr(module, "__file__", None) or "").startswith(str(BENCH)):
            del sys.modules[name]


def test_summarize_counts_failures_and_the_longest_gap(bench):
    liveroll = bench("liveroll")
    records = [
        (0.0, 0.1, 200),
        (0.3, 0.4, 200),
        (0.5, 0.6, "refused"),
        (1.0, 1.2, 503),
        (1.1, 1.5, 200),
        (1.2, 1.7, "reset"),
        (2.0, 2.1, 204),
    ]
    got = liveroll.summarize(records, start=1.0, returned=1.6, end=3.0)
    assert got["failures"] == {"refused": 1, "reset": 1}
    assert got["non_2xx"] == 1
    assert got["served"] == 1  # only the reply at 1.5 completed while the command ran
    assert got["total"] == 4
    assert got["longest_gap"] == pytest.approx(0.9)  # from 2.1 to the end at 3.0
    assert got["gap_before"] == pytest.approx(0.3)  # between the replies before the restart


def test_a_port_with_no_listener_counts_as_refused(bench):
    httpload = bench("httpload")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, never listening: connections are refused
        assert httpload.one_request(port, timeout=2.0) == "refused"


def _serve(listener: socket.socket) -> subprocess.Popen[bytes]:
    """bench/supervisors/httpserve.py with `listener` as its fd 3 and LISTEN_PID its own pid."""
    fd = listener.fileno()
    # A supervisor's child between fork and exec: the socket moved to fd 3, its own pid
    # named; execv keeps the pid.
    shim = (
        f"import os, sys; os.dup2({fd}, 3); os.environ.update(LISTEN_PID=str(os.getpid()), "
        "LISTEN_FDS='1'); os.execv(sys.executable, [sys.executable, 'httpserve.py', 'marker'])"
    )
    return subprocess.Popen([sys.executable, "-c", shim], cwd=BENCH / "supervisors", pass_fds=(fd,))


def _answering_pid(port: int) -> int | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as reply:
            return int(reply.read())
    except OSError:
        return None


def test_copies_replaced_one_at_a_time_on_a_held_socket_lose_nothing():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    servers = [_serve(listener), _serve(listener)]
    load = None
    try:
        wait_for(lambda: _answering_pid(port))
        load = subprocess.Popen(
            [sys.executable, "httpload.py", str(port)],
            cwd=BENCH / "supervisors",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        for i in range(len(servers)):
            new = _serve(listener)
            wait_for(lambda new=new: _answering_pid(port) == new.pid)  # it serves: ready
            servers[i].terminate()
            assert servers[i].wait(timeout=10) == 0  # a graceful exit, not a kill
            servers[i] = new
        load.stdin.close()
        records = json.loads(load.stdout.read())
        assert load.wait(timeout=10) == 0
        outcomes = {outcome for _, _, outcome in records}
        assert records and outcomes == {200}, outcomes
    finally:
        for proc in [*servers, *([load] if load else [])]:
            proc.kill()
            proc.wait()
        listener.close()


def test_the_live_report_sets_procorch_beside_each_peer(bench):
    livereport, metrics = bench("livereport"), bench("metrics")
    results = metrics.Results()
    for peer, live, done in (("procorch", 0.1, 0.3), ("supervisord", 0.4, 0.2), ("circus", 0.2, 0)):
        for scale in (1, 2, 3):  # medians: the middle run
            results.add("live", peer, live * scale / 2)
            results.add("done", peer, done * scale / 2)
    results.add("returned", "procorch", 0.05)
    peers = ["procorch", "supervisord", "circus"]
    text = livereport.render("reload", results, peers, 3, [(0.0, 0.0, 0.0)], "bench/live.py")
    assert "| procorch ÷ | change live | done | command(s) returned |" in text
    assert "| supervisord | 0.25× | 1.50× | n/a |" in text
    assert "| circus | 0.50× | ∞ | n/a |" in text
