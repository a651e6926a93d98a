"""The no-op job every peer of `bench/jobs (part noop)` runs: what a queue costs around a job.

`noop(*args, **kwargs)` does nothing and returns 0 (every peer stores a result the same
size); `arguments(n)` are the JSON arguments each job carries, the same for every peer.
Workers import it by name, so it depends on nothing.
"""

from __future__ import annotations

from typing import Any


def noop(*args: Any, **kwargs: Any) -> int:
    return 0


def arguments(n: int) -> tuple[list[Any], dict[str, Any]]:
    """A small, typical payload: an id, an address, a flag, a list and a nested object."""
    args = [n, f"user-{n % 100_000}@example.org"]
    kwargs = {"template": "welcome", "urgent": False, "tags": ["a", "b"], "meta": {"try": 1}}
    return args, kwargs
