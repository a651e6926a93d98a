"""Test helpers: a real procorch stack in a temporary directory, driven through the real CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest

FIXTURES = Path(__file__).parent / "fixtures"
PY = sys.executable


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02) -> Any:
    """Poll until `predicate()` is truthy; fail the test after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {timeout}s")
        time.sleep(interval)


def epoch(stamp: str) -> float:
    """Seconds since the epoch of an ISO 8601 time as procorch writes them (UTC, `Z`)."""
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def events_log(run_dir: Path) -> list[dict[str, Any]]:
    """A run directory's events.log read directly (faster to poll than `procorch events`,
    and readable when the CLI cannot load the config); [] before it exists."""
    path = run_dir / "events.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def load_toml(folder: Path, text: str, **kwargs: Any) -> Any:
    """`text` (dedented) written to folder/procorch.toml and loaded as procorch would, with
    an empty environment unless `environ` is given: the Config."""
    from procorch.config import load_config

    path = folder / "procorch.toml"
    path.write_text(textwrap.dedent(text))
    kwargs.setdefault("environ", {})
    return load_config(path, **kwargs)


def config_error(folder: Path, text: str, **kwargs: Any) -> str:
    """The one-line ConfigError `load_toml` raises, without its leading "<path>: "."""
    from procorch.config import ConfigError

    with pytest.raises(ConfigError) as info:
        load_toml(folder, text, **kwargs)
    message = str(info.value)
    assert "\n" not in message, message
    prefix = f"{folder / 'procorch.toml'}: "
    assert message.startswith(prefix), message
    return message.removeprefix(prefix)


def processes_with_env(key: str, value: str) -> list[psutil.Process]:
    """Every live process whose environment has key=value (how we find a stack's processes)."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get(key) == value:
                found.append(proc)
        except psutil.Error:
            continue
    return found


class Stack:
    """A config file and run directory in tmp_path, and the `procorch` CLI to drive them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "procorch.toml"
        self.run_dir = root / ".procorch"

    def write(self, toml: str, settings: str = "") -> None:
        header = textwrap.dedent(
            """\
            [procorch]
            check_interval = 0.2
            """
        )
        self.config.write_text(header + textwrap.dedent(settings) + textwrap.dedent(toml))

    @staticmethod
    def _env(env: dict[str, str] | None = None) -> dict[str, str]:
        """The test's environment without PROCORCH_* variables, which would redirect the CLI."""
        return {k: v for k, v in (env or os.environ).items() if not k.startswith("PROCORCH_")}

    def cli(
        self, *args: str, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess:
        """Run a procorch command to completion."""
        return subprocess.run(
            [PY, "-m", "procorch", *args],
            cwd=self.root,
            env=self._env(env),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self, *args: str, **popen: Any) -> subprocess.Popen:
        """Start a procorch command in the background (text mode; pass stdout/stderr)."""
        return subprocess.Popen(
            [PY, "-m", "procorch", *args], cwd=self.root, env=self._env(), text=True, **popen
        )

    def up(self, *args: str) -> subprocess.CompletedProcess:
        result = self.cli("up", *args)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def status(self) -> dict[str, Any]:
        result = self.cli("status", "--json")
        assert result.returncode in (0, 3), result.stderr
        return json.loads(result.stdout)

    def replicas(self, name: str) -> list[dict[str, Any]]:
        return [s for s in self.status()["services"] if s["name"] == name]

    def pid_of(self, name: str) -> int:
        return self.replicas(name)[0]["pid"]

    def restarted(self, name: str, old_pid: int) -> bool:
        r = self.replicas(name)[0]
        return r["state"] == "running" and r["pid"] != old_pid

    def kill_under_load(
        self, name: str, load: Callable[[threading.Event], None], acknowledged: list[Any]
    ) -> None:
        """Run `load(stop)` in 4 threads; once 20 requests are acknowledged, kill -9 the
        service's first replica, wait for its replacement and 20 more acknowledgements."""
        time.sleep(1.2)  # past the crash-loop window: the restart comes at once
        old_pid = self.pid_of(name)
        stop = threading.Event()
        workers = [threading.Thread(target=load, args=(stop,)) for _ in range(4)]
        for w in workers:
            w.start()
        try:
            wait_for(lambda: len(acknowledged) > 20)
            os.kill(old_pid, signal.SIGKILL)
            wait_for(lambda: self.restarted(name, old_pid), timeout=10)
            count = len(acknowledged)
            wait_for(lambda: len(acknowledged) > count + 20, timeout=10)  # working again
        finally:
            stop.set()
            for w in workers:
                w.join()

    def events(self) -> list[dict[str, Any]]:
        return json.loads(self.cli("events", "--json", "-n", "1000").stdout)

    def daemon_pid(self) -> int | None:
        try:
            return int((self.run_dir / "procorch.pid").read_text())
        except (OSError, ValueError):
            return None

    def leftovers(self) -> list[psutil.Process]:
        return processes_with_env("PROCORCH_RUN_DIR", str(self.run_dir))

    def cleanup(self) -> None:
        if (self.run_dir / "control.sock").exists():
            self.cli("down", timeout=60)
        pid = self.daemon_pid()
        procs = self.leftovers()
        if pid and psutil.pid_exists(pid):
            try:
                procs.append(psutil.Process(pid))
            except psutil.Error:
                pass
        for proc in procs:
            try:
                proc.kill()
            except psutil.Error:
                pass


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[Stack]:
    s = Stack(tmp_path)
    yield s
    s.cleanup()


def python_service(name: str, cls: str = "Steady", replicas: int = 1, extra: str = "") -> str:
    return textwrap.dedent(
        f"""
        [services.{name}]
        module = "services:{cls}"
        cwd = "{FIXTURES}"
        replicas = {replicas}
        """
    ) + textwrap.dedent(extra)


def command_service(
    name: str, code: str, replicas: int = 1, extra: str = "", start_seconds: float = 0.3
) -> str:
    literal = code.replace("{", "{{").replace("}", "}}")  # Python's braces: no placeholders
    return textwrap.dedent(
        f"""
        [services.{name}]
        command = [{json.dumps(PY)}, "-c", {json.dumps(literal)}]
        replicas = {replicas}
        start_seconds = {start_seconds}
        """
    ) + textwrap.dedent(extra)


SLEEP_FOREVER = "import time; time.sleep(1e6)"


# --- jobs -------------------------------------------------------------------------


def jobs_table(**settings: Any) -> str:
    """A `[jobs]` table; tests run jobs with no simulated delay or failures unless told."""
    values = {"delay": 0, "failure_rate": 0, **settings}
    lines = [f"{key} = {_toml_value(value)}" for key, value in values.items()]
    return "\n[jobs]\n" + "\n".join(lines) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):  # an inline table: { key = "value", ... }
        return "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in value.items()) + " }"
    return json.dumps(value)


class RedisServer:
    """A real Redis server on a free loopback port, in a temporary directory."""

    def __init__(self, root: Path, binary: str) -> None:
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(root),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        import redis

        self.client = redis.Redis(port=self.port)
        try:
            wait_for(self._answers, timeout=10)
        except BaseException:  # not left running behind a failed start
            self.stop()
            raise

    def _answers(self) -> bool:
        import redis

        if self.proc.poll() is not None:
            pytest.fail(f"the Redis server exited with status {self.proc.returncode}")
        try:
            return bool(self.client.ping())
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        self.client.close()
        self.proc.kill()
        self.proc.wait()


def _redis_binary() -> str:
    """The Redis server binary (tests/redis_binary.py); one clear failure if there is none."""
    from tests.redis_binary import RedisBinaryNotFound, redis_server_binary

    try:
        return redis_server_binary()
    except RedisBinaryNotFound as exc:
        problem = str(exc)
    pytest.fail(problem, pytrace=False)  # outside the except: no chained traceback


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), _redis_binary())
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The shared server, emptied for this test."""
    redis_server.client.flushall()
    return redis_server.url


@pytest.fixture
def new_redis_server(tmp_path: Path) -> Iterator[Callable[[], RedisServer]]:
    """A factory of Redis servers of the test's own (to stop, say), all killed at the end."""
    binary = _redis_binary()
    started: list[RedisServer] = []

    def start() -> RedisServer:
        root = tmp_path / f"redis{len(started)}"
        root.mkdir()
        started.append(RedisServer(root, binary))
        return started[-1]

    yield start
    for server in started:
        server.stop()


# --- the HTTP gateway ----------------------------------------------------------------


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class GatewayStack(Stack):
    """The built-in stack plus the gateway on a free loopback port, and an HTTP client."""

    def __init__(self, root: Path, token: str | None = None) -> None:
        import requests

        super().__init__(root)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.token = token
        self.http = requests.Session()
        if token:
            self.http.headers["Authorization"] = f"Bearer {token}"

    def write_gateway(self, gateway: str = "", extra: str = "", **jobs: Any) -> None:
        table = f"\n[gateway]\nenabled = true\nport = {self.port}\n" + textwrap.dedent(gateway)
        if self.token:
            table += f'token = "{self.token}"\n'
        self.write(jobs_table(**jobs) + table + textwrap.dedent(extra))

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """A real HTTP request (requests.Response); `timeout` defaults to 10 s."""
        kwargs.setdefault("timeout", 10)
        return self.http.request(method, self.url + path, **kwargs)

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> Any:
        return self.request("POST", path, **kwargs)

    def delete(self, path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", path, **kwargs)

    def cleanup(self) -> None:
        self.http.close()
        super().cleanup()


JSON = "application/json"


def ok(response: Any, status: int = 200) -> Any:
    """The JSON of a successful answer, after checking its status and Content-Type."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == JSON
    return response.json()


def error(response: Any, status: int) -> str:
    """The message of an error answer, after checking it is the gateway's JSON error."""
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"] == JSON, response.text
    body = response.json()
    assert set(body) == {"status", "message", "code"}, body
    assert body["status"] == "error"
    assert isinstance(body["message"], str) and body["message"]
    return body["message"]


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayStack]:
    """A running stack with the gateway (no token; jobs without delay or failures)."""
    s = GatewayStack(tmp_path)
    s.write_gateway()
    s.up()
    yield s
    s.cleanup()
