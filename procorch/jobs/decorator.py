"""`@procorch.job`: a function registered as a job by name, with `.submit(...)`.

The registration itself is functions.py's (a worker finds the function there by name);
this module adds what a program uses to submit the function's jobs, through `Jobs`,
so the registry stays below the API that submits.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

from procorch.jobs.functions import register


def job(name: str | None = None, **policy: Any) -> Callable[[Callable[..., Any]], Any]:
    """Register a function as a job under `name` (default: its own name), with policy
    keys as in `[jobs.functions]` (max_attempts, backoff, timeout, queue, ...).

        @procorch.job(name="send", max_attempts=5, timeout=30)
        def send(to, subject): ...

        send.submit("a@example.com", subject="hi")            # a job id
        send.options(delay="10s", priority=5).submit("b@example.com", subject="hi")
    """

    def decorate(fn: Callable[..., Any]) -> Any:
        registered = name or fn.__name__
        register(registered, fn, policy)
        fn.submit = Submitter(registered).submit  # type: ignore[attr-defined]
        fn.options = functools.partial(Submitter, registered)  # type: ignore[attr-defined]
        fn.job_name = registered  # type: ignore[attr-defined]
        return fn

    return decorate


class Submitter:
    """`fn.submit(*args, **kwargs)` for a decorated function, with submission options."""

    def __init__(self, name: str, *, config: Path | None = None, **options: Any) -> None:
        self.name, self.config, self.options = name, config, options

    def submit(self, *args: Any, **kwargs: Any) -> int:
        from procorch.jobs.api import Jobs  # when submitting: a worker importing jobs needs none

        with Jobs.open(self.config) as jobs:
            return jobs.submit(self.name, args=list(args), kwargs=kwargs, **self.options)
