"""Hooks: what runs when the daemon writes an event that a `[[hooks]]` table is `on`.

The event loop only hands an event over (`Hooks.notify`: a few microseconds, never
blocking). Each hook has one worker thread and a small bounded queue, so a hook that
hangs holds up nothing but its own later runs, and never the supervision of services.
Each hook is rate-limited (at most `max_runs` runs per `window` seconds, `admitted`):
a crash loop cannot fork a thousand hooks. Runs refused by the limit or by a full queue
are counted; the loop reports them, with failures and timeouts, as one event per hook
at each health check (`reports`).

A command hook gets the event as JSON on stdin, a URL hook as the body of a POST. A
command hook is a child of the daemon, which reaps every child itself (it is a
subreaper, and waits for any pid): so a worker never waits for its hook's process; the
loop tells it (`reaping` before it reaps a pid it does not know, `reaped` after), and a
hook past its timeout has its process group killed only while the loop has not begun to
reap it, so that the pid cannot have been reused. What hooks print goes to hooks.log in
the run directory. A URL is never shown whole: its path may be the secret (a webhook's),
and its user part may hold a password.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import queue
import signal
import subprocess
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from procorch.config import HookConfig
from procorch.redaction import scrub
from procorch.supervisor.process import _find_program

log = logging.getLogger("procorch.hooks")

QUEUE = 4  # runs of one hook waiting behind the one running; more are dropped
KILL_WAIT = 5.0  # seconds a killed hook's leader may take to be reaped before we move on
GRAVEYARD = 64  # pids the loop reaped before their worker knew them, kept this long...
GRAVEYARD_TTL = 5.0  # ...and at most this many seconds
HOOK_EVENTS_REPORTED = ("hook-dropped", "hook-failed")  # what `reports` returns


class Outcome(enum.Enum):
    """How one run of a hook ended."""

    OK = "ok"
    FAILED = "failed"  # a non-zero exit, an HTTP error, a refused connection
    TIMED_OUT = "timed out"  # killed (a command) or abandoned (a URL) after `timeout`


def admitted(
    recent: tuple[float, ...], now: float, max_runs: int, window: float
) -> tuple[bool, tuple[float, ...]]:
    """Whether a hook may run now, given when it last ran (`recent`); and the runs to
    remember from now on: those within `window` seconds, this one too if admitted."""
    kept = tuple(t for t in recent if now - t < window)
    if len(kept) >= max_runs:
        return False, kept
    return True, (*kept, now)


def describe(index: int, hook: HookConfig) -> str:
    """A hook for messages: `hooks[0] (command notify.sh)`, `hooks[1] (url https://host/…)`.

    Only the scheme and host of a URL: its user part may hold a password and its path
    the secret of a webhook."""
    if hook.command:
        return f"hooks[{index}] (command {os.path.basename(hook.command[0])})"
    from urllib.parse import urlsplit

    assert hook.url is not None
    parts = urlsplit(hook.url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    rest = "/…" if parts.path.strip("/") or parts.query else ""
    return f"hooks[{index}] (url {parts.scheme}://{host}{port}{rest})"


@dataclass
class _Child:
    """A command hook's process, as its worker and the loop both see it."""

    pid: int
    reaping: bool = False  # the loop is reaping it: its pid may be reused, never signal it
    status: int | None = None  # its wait status, once reaped
    done: threading.Event = field(default_factory=threading.Event)


class _Hook:
    """One configured hook: its limit, its queue, its worker and what to report."""

    def __init__(self, index: int, config: HookConfig) -> None:
        self.index = index
        self.config = config
        self.label = describe(index, config)
        self.queue: queue.Queue[dict[str, Any] | None] = queue.Queue(maxsize=QUEUE)
        self.recent: tuple[float, ...] = ()  # when it was last admitted (the loop's)
        self.dropped = 0  # the loop's alone
        self.failed = 0  # these three: the worker's, under Hooks._lock
        self.timed_out = 0
        self.problem = ""
        self.thread: threading.Thread | None = None


class Hooks:
    """Every configured hook of a daemon; `notify` is called by the event loop."""

    def __init__(
        self, hooks: tuple[HookConfig, ...], output: Path, env: dict[str, str], max_bytes: int
    ) -> None:
        self._hooks = [_Hook(i, h) for i, h in enumerate(hooks)]
        self._by_event: dict[str, list[_Hook]] = {}
        for hook in self._hooks:
            for event in hook.config.on:
                self._by_event.setdefault(event, []).append(hook)
        self._output_path = output
        self._output_fd: int | None = None
        self._max_bytes = max_bytes
        self._env = env
        self._lock = threading.Lock()
        self._children: dict[int, _Child] = {}
        self._graveyard: OrderedDict[int, tuple[float, int | None]] = OrderedDict()
        self._closed = False

    def __bool__(self) -> bool:
        return bool(self._hooks)

    # -- the loop's side --------------------------------------------------------------

    def notify(self, entry: dict[str, Any], now: float) -> None:
        """An event was written: queue a run of each hook on it that its limit admits."""
        for hook in self._by_event.get(entry["event"], ()):
            ok, hook.recent = admitted(hook.recent, now, hook.config.max_runs, hook.config.window)
            if not ok:
                hook.dropped += 1
                continue
            try:
                hook.queue.put_nowait(entry)
            except queue.Full:
                hook.dropped += 1
                continue
            if hook.thread is None:
                hook.thread = threading.Thread(
                    target=self._work, args=(hook,), name=f"hook-{hook.index}", daemon=True
                )
                hook.thread.start()

    def reports(self) -> list[tuple[str, str]]:
        """(event, detail) for each hook with runs dropped, failed or timed out since the
        last call: one event per hook and kind, however many runs."""
        found = []
        for hook in self._hooks:
            with self._lock:
                failed, timed_out, problem = hook.failed, hook.timed_out, hook.problem
                hook.failed = hook.timed_out = 0
            if hook.dropped:
                limit = f"at most {hook.config.max_runs} per {hook.config.window:g}s"
                found.append(
                    ("hook-dropped", f"{hook.label}: {hook.dropped} runs dropped ({limit})")
                )
                hook.dropped = 0
            if failed or timed_out:
                parts = []
                if failed:
                    parts.append(f"{failed} failed (last: {problem})")
                if timed_out:
                    parts.append(f"{timed_out} killed after {hook.config.timeout:g}s")
                found.append(("hook-failed", f"{hook.label}: {', '.join(parts)}"))
        return found

    def reaping(self, pid: int) -> None:
        """The loop is about to reap `pid`, a child that is no replica (its zombie still
        holds the pid): from now on nobody signals it."""
        with self._lock:
            child = self._children.get(pid)
            if child is not None:
                child.reaping = True
                return
            now = time.monotonic()
            self._graveyard[pid] = (now, None)
            while self._graveyard and (
                len(self._graveyard) > GRAVEYARD
                or now - next(iter(self._graveyard.values()))[0] > GRAVEYARD_TTL
            ):
                self._graveyard.popitem(last=False)

    def reaped(self, pid: int, status: int) -> None:
        """The loop reaped `pid` (see `reaping`) with wait status `status`."""
        with self._lock:
            child = self._children.pop(pid, None)
            if child is not None:
                child.status = status
                child.done.set()
            elif pid in self._graveyard:
                self._graveyard[pid] = (self._graveyard[pid][0], status)

    def reopen(self) -> None:
        """hooks.log is opened again at its path on the next run (logrotate moved it)."""
        with self._lock:
            fd, self._output_fd = self._output_fd, None
        if fd is not None:
            os.close(fd)

    def close(self) -> None:
        """No more runs: workers end after the one they are in (their threads are daemon
        threads; the daemon's exit ends whatever hook process is left, with its tree)."""
        self._closed = True
        for hook in self._hooks:
            with contextlib.suppress(queue.Full):
                hook.queue.put_nowait(None)

    # -- a worker's side --------------------------------------------------------------

    def _work(self, hook: _Hook) -> None:
        while True:
            entry = hook.queue.get()
            if entry is None or self._closed:
                return
            try:
                if hook.config.command:
                    outcome, problem = self._run_command(hook.config, entry)
                else:
                    outcome, problem = _post(hook.config, entry)
            except Exception as exc:  # a bug here must not end the hook's worker
                log.exception("%s: error while running it", hook.label)
                outcome, problem = Outcome.FAILED, f"internal error: {exc}"
            if outcome is Outcome.OK:
                continue
            log.warning("%s on %s: %s", hook.label, entry["event"], problem)
            with self._lock:
                if outcome is Outcome.TIMED_OUT:
                    hook.timed_out += 1
                else:
                    hook.failed += 1
                    hook.problem = problem

    def _run_command(self, hook: HookConfig, entry: dict[str, Any]) -> tuple[Outcome, str]:
        assert hook.command is not None
        env = {**self._env, "PROCORCH_EVENT": entry["event"]}
        try:
            # Found first: Popen reaps a child whose exec failed itself, which would race
            # with the loop's reaping of every child.
            program = _find_program(hook.command[0], env.get("PATH"), None)
            output = self._output()
            try:
                proc = subprocess.Popen(
                    [program, *hook.command[1:]],
                    stdin=subprocess.PIPE,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env=env,
                    start_new_session=True,  # its own group: a timeout kills all it started
                    close_fds=True,
                )
            finally:
                if output >= 0:
                    os.close(output)
        except OSError as exc:
            return Outcome.FAILED, f"cannot execute {hook.command[0]}: {exc.strerror or exc}"
        # The loop reaps it; Popen must never wait for the pid (it could be reused).
        proc.returncode = 0
        child = self._register(proc.pid)
        assert proc.stdin is not None
        _send(proc.stdin.fileno(), json.dumps(entry).encode() + b"\n")
        proc.stdin.close()
        if not child.done.wait(hook.timeout):
            with self._lock:
                if not child.reaping:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(child.pid, signal.SIGKILL)
            child.done.wait(KILL_WAIT)
            return Outcome.TIMED_OUT, f"killed after {hook.timeout:g}s"
        status = child.status
        assert status is not None
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0:
            return Outcome.OK, ""
        if os.WIFSIGNALED(status):
            return Outcome.FAILED, f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        return Outcome.FAILED, f"exit status {os.WEXITSTATUS(status)}"

    def _register(self, pid: int) -> _Child:
        """Tell the loop's side about a new hook process (which may be reaped already)."""
        child = _Child(pid)
        with self._lock:
            if pid in self._graveyard:  # it died and the loop got to it first
                _, status = self._graveyard.pop(pid)
                child.reaping = True
                if status is not None:
                    child.status = status
                    child.done.set()
                    return child
            self._children[pid] = child
        return child

    def _output(self) -> int:
        """A descriptor of hooks.log of the caller's own (to close), rolled over to
        hooks.log.1 once it is past the logs' size; DEVNULL if it cannot be opened."""
        with self._lock:
            if self._output_fd is not None and os.fstat(self._output_fd).st_size > self._max_bytes:
                os.close(self._output_fd)
                self._output_fd = None
                with contextlib.suppress(OSError):
                    os.replace(self._output_path, f"{self._output_path}.1")
            if self._output_fd is None:
                try:
                    self._output_fd = os.open(
                        self._output_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600
                    )
                except OSError:
                    return subprocess.DEVNULL  # a full disk: the hook still runs
            # a copy: `reopen` may close the shared one while Popen still needs it
            return os.dup(self._output_fd)


def _send(fd: int, data: bytes) -> None:
    """Give a hook its event without ever blocking on it: one that does not read its
    stdin (or is gone) simply does not get it."""
    os.set_blocking(fd, False)
    with contextlib.suppress(OSError):  # BlockingIOError, BrokenPipeError
        os.write(fd, data)


def _post(hook: HookConfig, entry: dict[str, Any]) -> tuple[Outcome, str]:
    """POST the event as JSON; any 2xx answer is success."""
    import base64
    import urllib.error
    import urllib.request
    from urllib.parse import unquote, urlsplit, urlunsplit

    assert hook.url is not None
    parts = urlsplit(hook.url)
    headers = {"Content-Type": "application/json", "User-Agent": "procorch-hook"}
    url = hook.url
    if parts.username is not None:  # urllib takes no user part: it becomes a header
        secret = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
        headers["Authorization"] = "Basic " + base64.b64encode(secret.encode()).decode()
        url = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    body = json.dumps(entry).encode()
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=hook.timeout) as answer:
            answer.read(65536)
            code = answer.status
    except urllib.error.HTTPError as exc:
        return Outcome.FAILED, f"HTTP {exc.code}"
    except TimeoutError:
        return Outcome.TIMED_OUT, f"no answer within {hook.timeout:g}s"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, TimeoutError):
            return Outcome.TIMED_OUT, f"no answer within {hook.timeout:g}s"
        return Outcome.FAILED, scrub(str(reason), hook.url)
    if not 200 <= code < 300:
        return Outcome.FAILED, f"HTTP {code}"
    return Outcome.OK, ""
