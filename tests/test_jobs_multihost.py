"""Two hosts sharing one Redis queue, each on a network stack of its own.

The test makes three network namespaces joined by a bridge on a private subnet
(SUBNET.1 holds Redis, SUBNET.2 and SUBNET.3 are the hosts), nothing in the machine's
own namespace. Each host is a procorch daemon with its own run directory, started in
its namespace and a UTS namespace of its own (so its workers name their host), and
reaches Redis only over its veth. Needs root (CAP_SYS_ADMIN), as CI has; skipped,
saying so, where namespaces cannot be made.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.conftest import FIXTURES, PY, events_log, processes_with_env, wait_for
from tests.test_jobs_schedules import FIRED

SUBNET = "10.213.7"
REDIS_PORT = 6379
TAG = f"pc{os.getpid() % 100000}"  # namespace names of this test run: never another's


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def _namespaces_unavailable() -> str | None:
    """Why namespaces cannot be made here (None: they can)."""
    probe = f"{TAG}probe"
    try:
        _ip("netns", "add", probe)
    except FileNotFoundError:
        return "no `ip` command (iproute2)"
    except subprocess.CalledProcessError as exc:
        return f"cannot make a network namespace ({exc.stderr.strip()}): needs root"
    _ip("netns", "del", probe)
    if subprocess.run(["unshare", "--uts", "true"], capture_output=True).returncode != 0:
        return "cannot make a UTS namespace (unshare --uts): needs root"
    return None


class Network:
    """The namespaces and their links; `delete` undoes all of it."""

    def __init__(self) -> None:
        self.redis, self.hosts = f"{TAG}r", [f"{TAG}a", f"{TAG}b"]
        self.made: list[str] = []

    def create(self) -> None:
        for ns in [self.redis, *self.hosts]:
            _ip("netns", "add", ns)
            self.made.append(ns)
            _ip("-n", ns, "link", "set", "lo", "up")
        _ip("-n", self.redis, "link", "add", "br0", "type", "bridge")
        _ip("-n", self.redis, "addr", "add", f"{SUBNET}.1/24", "dev", "br0")
        _ip("-n", self.redis, "link", "set", "br0", "up")
        for i, ns in enumerate(self.hosts, start=2):
            # the pair is made straight inside the two namespaces: the host's stays untouched
            end = f"veth{i}"
            _ip(*f"link add {end} netns {self.redis} type veth peer eth0 netns {ns}".split())
            _ip("-n", self.redis, "link", "set", end, "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{SUBNET}.{i}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")

    def delete(self) -> None:
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def in_ns(ns: str, *argv: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROCORCH_")}
    return subprocess.run(
        ["ip", "netns", "exec", ns, *argv], env=env, capture_output=True, text=True, timeout=timeout
    )


class Host:
    """One machine: a namespace, a hostname, a run directory and the CLI to drive it."""

    def __init__(self, ns: str, name: str, root: Path, redis_url: str, record: Path) -> None:
        self.ns, self.name, self.root, self.record = ns, name, root, record
        self.config, self.run_dir = root / "procorch.toml", root / ".procorch"
        root.mkdir()
        self.config.write_text(
            textwrap.dedent(
                f"""\
                [procorch]
                check_interval = 0.2

                [services.JobWorker]
                module = "procorch.jobs.worker:JobWorker"
                replicas = 2
                cwd = "{FIXTURES}"
                env = {{ HOSTJOBS_RECORD = "{record}" }}

                [jobs]
                backend = "{redis_url}"
                delay = 0
                failure_rate = 0

                [jobs.functions]
                slow = "hostjobs:slow"

                [jobs.schedules]
                tick = {{ function = "fib", every = "1s", args = [10] }}
                """
            )
        )

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess:
        return in_ns(self.ns, PY, "-m", "procorch", *args, "-c", str(self.config), timeout=timeout)

    def up(self) -> None:
        # its own hostname, in a UTS namespace the daemon and its workers inherit
        name_it = 'hostname "$0" && exec "$@"'
        argv = [PY, "-m", "procorch", "up", "-c", str(self.config)]
        result = in_ns(self.ns, "unshare", "--uts", "sh", "-c", name_it, self.name, *argv)
        assert result.returncode == 0, result.stdout + result.stderr

    def jobs(self) -> list[dict[str, Any]]:
        result = self.cli("job", "list", "--json", "--limit", "10000")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["jobs"]

    def events(self) -> list[dict[str, Any]]:
        return events_log(self.run_dir)

    def processes(self) -> list[psutil.Process]:
        found = processes_with_env("PROCORCH_RUN_DIR", str(self.run_dir))
        try:
            found.append(psutil.Process(int((self.run_dir / "procorch.pid").read_text())))
        except (OSError, ValueError, psutil.Error):
            pass
        return found

    def kill(self) -> None:
        """kill -9 the daemon and every process it runs, at once."""
        for proc in self.processes():
            try:
                proc.send_signal(signal.SIGKILL)
            except psutil.Error:
                pass

    def cleanup(self) -> None:
        if (self.run_dir / "control.sock").exists():
            self.cli("down", timeout=30)
        self.kill()


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Network, str]]:
    """The namespaces and a Redis server in the first one; its URL as the hosts see it."""
    why = _namespaces_unavailable()
    if why is not None:
        pytest.skip(f"multi-host test needs network namespaces: {why}")
    from tests.conftest import _redis_binary

    net = Network()
    redis = None
    try:
        net.create()
        root = tmp_path_factory.mktemp("redis")
        redis = subprocess.Popen(
            ["ip", "netns", "exec", net.redis, _redis_binary(), "--bind", f"{SUBNET}.1",
             "--port", str(REDIS_PORT), "--dir", str(root), "--save", "", "--appendonly", "no",
             "--protected-mode", "no"],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip
        url = f"redis://{SUBNET}.1:{REDIS_PORT}/0"
        # reachable from a host's namespace, over the bridge
        ping = textwrap.dedent(
            f"""\
            import redis, time
            for _ in range(200):
                try:
                    redis.Redis.from_url({url!r}).ping()
                    break
                except redis.ConnectionError:
                    time.sleep(0.05)
            else:
                raise SystemExit("no Redis")
            """
        )
        assert in_ns(net.hosts[0], PY, "-c", ping).returncode == 0, "Redis unreachable"
        yield net, url
    finally:
        if redis is not None:
            redis.kill()
            redis.wait()
        net.delete()


@pytest.fixture
def hosts(network, tmp_path) -> Iterator[list[Host]]:
    """Two hosts, up, on an emptied Redis; both stopped (or killed) afterwards."""
    net, url = network
    flush = f"import redis; redis.Redis.from_url({url!r}).flushall()"
    assert in_ns(net.hosts[0], PY, "-c", flush).returncode == 0
    record = tmp_path / "completed"
    made = [
        Host(ns, f"host-{letter}", tmp_path / letter, url, record)
        for ns, letter in zip(net.hosts, "ab", strict=True)
    ]
    try:
        for host in made:
            host.up()
        yield made
    finally:
        for host in made:
            host.cleanup()


def submit_slow(host: Host, ns: list[int]) -> list[int]:
    """Submit slow(n) for each n through `host`; the job ids."""
    result = host.cli("job", "submit", "--function", "slow", "--json", *map(str, ns))
    assert result.returncode == 0, result.stderr
    return [json.loads(line)["job_id"] for line in result.stdout.splitlines()]


def completions(host: Host) -> list[tuple[int, str]]:
    """(n, host name) for every run of slow(n) that went to completion, on either host."""
    lines = host.record.read_text().splitlines() if host.record.exists() else []
    return [(int(n), name) for n, name in (line.split() for line in lines)]


def slow_jobs(host: Host) -> list[dict[str, Any]]:
    return [job for job in host.jobs() if job["function"] == "slow"]


def test_jobs_submitted_on_one_host_are_run_by_both(hosts):
    a, b = hosts
    ns = [i * 1000 + 100 for i in range(1, 21)]  # 20 jobs of 0.1 s for 4 workers
    ids = submit_slow(a, ns)
    wait_for(lambda: all(j["status"] == "done" for j in slow_jobs(b)), timeout=20, interval=0.2)
    jobs = slow_jobs(b)
    assert sorted(j["job_id"] for j in jobs) == sorted(ids)
    ran_on = {j["worker"].split(":")[0] for j in jobs}
    assert ran_on == {"host-a", "host-b"}, [j["worker"] for j in jobs]
    assert sorted(n for n, _ in completions(a)) == ns  # each once


def test_a_host_killed_mid_job_leaves_its_jobs_to_the_other(hosts):
    a, b = hosts
    ns = [i * 1000 + 900 for i in range(1, 9)]  # 8 jobs of 0.9 s for 4 workers
    ids = submit_slow(b, ns)

    def running_on_a() -> bool:
        return any(
            j["status"] == "running" and j["worker"].startswith("host-a:") for j in slow_jobs(b)
        )

    wait_for(running_on_a, timeout=10, interval=0.05)
    a.kill()  # its daemon and its workers, mid-job
    wait_for(lambda: not a.processes(), timeout=5)
    wait_for(lambda: all(j["status"] == "done" for j in slow_jobs(b)), timeout=30, interval=0.2)
    jobs = slow_jobs(b)
    assert sorted(j["job_id"] for j in jobs) == sorted(ids)  # none lost
    assert sorted(n for n, _ in completions(a)) == ns  # none run to completion twice
    taken_over = [j for j in jobs if j["attempts"] > 1]
    assert taken_over, "no job of the killed host was run again"
    assert all(j["worker"].startswith("host-b:") for j in taken_over)


def test_each_schedule_tick_fires_once_across_the_two_daemons(hosts):
    a, b = hosts

    def ticks(host: Host) -> dict[int, int]:
        found = [FIRED.search(e["detail"]) for e in host.events() if e["event"] == "schedule-fired"]
        return {int(m["tick"]): int(m["job"]) for m in found if m}

    # both daemons fire the same ticks: at least three that each of them submitted
    wait_for(lambda: len(ticks(a).keys() & ticks(b).keys()) >= 3, timeout=15, interval=0.2)
    a.cli("down")
    b.cli("down")
    on_a, on_b = ticks(a), ticks(b)
    assert all(on_a[tick] == on_b[tick] for tick in on_a.keys() & on_b.keys())  # one job each
    fired = on_a | on_b
    fib_jobs = [j for j in b.jobs() if j["function"] == "fib"]
    assert sorted(j["job_id"] for j in fib_jobs) == sorted(set(fired.values()))
    assert len(fib_jobs) == len(fired)  # one job per tick, whichever daemon fired it
    assert sorted(fired) == list(range(min(fired), max(fired) + 1))
