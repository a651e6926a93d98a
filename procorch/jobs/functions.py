"""Job functions: which names can run, the code behind each, and each one's policy.

A job carries a registered name, never code. Names come from `[jobs.functions]`
(`send = "app.tasks:send"`, or a table with `target` and policy keys) and from the
`@procorch.job` decorator in the modules `[jobs] modules` lists; `fib`, the built-in
Fibonacci job, is always there. A function's policy (retries, backoff, timeout,
priority, result retention, queue) is its own where it says so, else `[jobs]`'s.
Decisions (the delay before a retry) are pure functions of the policy.
"""

from __future__ import annotations

import importlib
import random
import sys
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from procorch.config import FUNCTION_POLICY, Config, JobsSettings, parse_duration
from procorch.jobs.job import DEFAULT_FUNCTION, DEFAULT_QUEUE, InvalidJob


@dataclass(frozen=True)
class Policy:
    """How a function's jobs run: the settings a job carries from its submission."""

    max_attempts: int = 3
    backoff: str = "exponential"  # or "fixed"
    retry_delay: float = 0.1
    backoff_max: float = 10.0
    jitter: float = 0.0
    timeout: float = 60.0
    priority: int = 0
    result_ttl: float = 7 * 86400.0  # -1: forever
    queue: str = DEFAULT_QUEUE

    @classmethod
    def of(cls, settings: JobsSettings, **overrides: Any) -> Policy:
        base = {f.name: getattr(settings, f.name) for f in fields(cls)}
        return cls(**{**base, **overrides})

    def retry_in(self, attempts: int, rand: Callable[[], float] = random.random) -> float:
        """Seconds before the retry that follows failed attempt number `attempts` (from 1)."""
        delay = self.retry_delay
        if self.backoff == "exponential":
            delay *= 2 ** min(attempts - 1, 64)
        delay = min(delay, self.backoff_max)
        return delay + delay * self.jitter * rand()

    @property
    def retry(self) -> dict[str, Any]:
        """The retry schedule, as a job record keeps it (JSON)."""
        return {
            "backoff": self.backoff,
            "retry_delay": self.retry_delay,
            "backoff_max": self.backoff_max,
            "jitter": self.jitter,
        }

    def with_retry(self, retry: dict[str, Any] | None) -> Policy:
        return self if not retry else replace(self, **retry)


# name -> (function, policy keys): filled by @procorch.job as modules are imported
_DECORATED: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {}


def _check_policy(name: str, policy: dict[str, Any]) -> dict[str, Any]:
    """The decorator's policy keys, checked as the config's own are."""
    from procorch.config import _FUNCTION_PARSERS, ConfigError, _Where

    checked = {}
    for key, value in policy.items():
        if key not in FUNCTION_POLICY:
            raise TypeError(f"@procorch.job: unknown option {key!r} (one of {FUNCTION_POLICY})")
        try:
            checked[key] = _FUNCTION_PARSERS[key](value, _Where(f"@procorch.job({name!r})", key))
        except ConfigError as exc:
            raise TypeError(str(exc)) from None
    return checked


def register(name: str, fn: Callable[..., Any], policy: dict[str, Any]) -> None:
    """Make `fn` runnable as `name`, with its own policy keys (checked as the config's)."""
    if name == DEFAULT_FUNCTION:
        raise TypeError("@procorch.job: 'fib' is the built-in job; choose another name")
    _DECORATED[name] = (fn, _check_policy(name, policy))


def modules_base(config: Config) -> Path | None:
    """Where a config's `[jobs] modules` and function targets are found besides the
    usual import path: the config file's directory (None: the built-in config)."""
    return None if config.path is None else config.path.parent


class Registry:
    """The functions one configuration can run, by name.

    The decorated ones are found by importing `[jobs] modules`, which runs their code:
    only when a name is not in the config (submitting a decorated function's job, or a
    worker about to run one), from `base` (the config's directory) or the cwd.
    """

    def __init__(self, settings: JobsSettings, base: Path | None = None) -> None:
        self.settings = settings
        self.base = base
        self._imported = not settings.modules
        self._defaults = Policy.of(settings)
        self._calls: dict[str, Callable[..., Any]] = {}

    def import_modules(self) -> None:
        """Import `[jobs] modules` (once), so their decorated functions register."""
        if self._imported:
            return
        self._imported = True
        self._find_modules_in_base()
        for module in self.settings.modules:
            importlib.import_module(module)

    def _find_modules_in_base(self) -> None:
        """Modules are found beside the config too (the workers' cwd, usually), last."""
        if self.base is not None and str(self.base) not in sys.path:
            sys.path.append(str(self.base))

    def _decorated(self) -> dict[str, tuple[Callable[..., Any], dict[str, Any]]]:
        try:
            self.import_modules()
        except Exception as exc:  # a user's module: say which, in one line
            from procorch.services.base import exception_line

            raise InvalidJob(f"[jobs] modules: importing failed: {exception_line(exc)}") from None
        return _DECORATED

    def names(self) -> list[str]:
        return [DEFAULT_FUNCTION, *self.settings.functions, *self._decorated()]

    def registered(self, name: str) -> bool:
        return (
            name == DEFAULT_FUNCTION or name in self.settings.functions or name in self._decorated()
        )

    def known(self, name: Any) -> str:
        """`name` if it is a registered function, else InvalidJob listing the known ones."""
        if isinstance(name, str) and self.registered(name):
            return name
        from procorch.jobs.job import shown

        known = ", ".join(dict.fromkeys(self.names()))
        raise InvalidJob(f"unknown job function {shown(name)} (known: {known})")

    def policy(self, name: str) -> Policy:
        if name == DEFAULT_FUNCTION:
            return self._defaults
        entry = self.settings.functions.get(name)
        if entry is not None:
            overrides = {k: v for k, v in entry.items() if k != "target"}
        else:
            overrides = self._decorated()[self.known(name)][1]
        return replace(self._defaults, **overrides) if overrides else self._defaults

    def call(self, name: str) -> Callable[..., Any]:
        """The code behind a name (imported on first use); LookupError if none."""
        if name not in self._calls:
            if name == DEFAULT_FUNCTION:
                from procorch.jobs.fib import fib

                self._calls[name] = fib
            elif name in self.settings.functions:
                module, _, attr = self.settings.functions[name]["target"].partition(":")
                self._find_modules_in_base()
                self._calls[name] = getattr(importlib.import_module(module), attr)
            else:
                self.import_modules()
                if name not in _DECORATED:  # only the config can name code
                    raise LookupError(f"job function {name!r} is not registered")
                self._calls[name] = _DECORATED[name][0]
        return self._calls[name]


def seconds(value: Any, what: str) -> float:
    """A delay given as seconds or a duration string ("10s", "5m"), or InvalidJob."""
    result = parse_duration(value)
    if result is None:
        raise InvalidJob(f'{what} must be seconds or a duration like "10s", got {value!r}')
    return result
