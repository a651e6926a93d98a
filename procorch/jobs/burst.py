"""Burst mode (`procorch job work --burst`): workers in the foreground, without a daemon.

For batch scripts and CI: N worker processes (forked from the command) take jobs of
their queues until none of those queues has a job waiting, pending or running, then
exit; the command's status is 0, or 1 if any job of those queues failed meanwhile.
Each worker is the service's loop without the supervisor: the same claims, leases,
timeouts (SIGALRM ends the process, as in the service) and retries. A worker that dies
(a job's timeout) is replaced, and the replacement takes its job back as the service's
would; one that fails (an error status) or is killed once too often is not, and the
status is 1, since its queues may not be drained. Without `burst`, the workers run
until interrupted.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import time
from collections.abc import Sequence
from enum import Enum
from multiprocessing.connection import wait

from procorch.config import Config
from procorch.jobs.backend import open_store
from procorch.jobs.batch import Batch
from procorch.jobs.functions import Registry, modules_base
from procorch.jobs.job import JobError, Status
from procorch.jobs.runner import Runner
from procorch.jobs.store import WorkerId
from procorch.jobs.worker import RECOVER_EVERY

SERVICE = "burst"  # the workers' service name in their labels: host:burst.N:pid
IDLE_BLOCK = 0.1  # seconds an idle worker sleeps before it looks again
MAX_REPLACEMENTS = 100  # dead workers replaced at most, in all (a job killing every one)
INTERRUPTED = 130  # a worker's status after Ctrl-C, which the command reports itself

log = logging.getLogger("procorch.jobs.burst")


def work(config: Config, queues: Sequence[str] | None, workers: int, burst: bool = True) -> int:
    """Run `workers` processes until the queues are empty (`burst`) or Ctrl-C; the exit
    status: 0, or 1 if any job of these queues failed since the start or a worker
    failed."""
    started = time.time()
    wanted = None if not queues else tuple(queues)
    context = multiprocessing.get_context("fork")
    running = {}
    for index in range(workers):
        running[index] = _start(context, config, wanted, index, burst)
    replaced, lost = 0, 0
    while running:
        wait([proc.sentinel for proc in running.values()])
        for index, proc in list(running.items()):
            if proc.exitcode is None:
                continue
            del running[index]
            end = ending(proc.exitcode, replaced)
            if end is Ending.REPLACE:
                replaced += 1
                running[index] = _start(context, config, wanted, index, burst)
            elif end is Ending.LOST:
                lost += 1
                log.warning(
                    "worker %d %s; the jobs it held wait for another worker",
                    index,
                    _exit_text(proc.exitcode),
                )
    return 1 if lost or _failed_since(config, wanted, started) else 0


class Ending(Enum):
    """What a worker process's end means to the command."""

    DONE = "done"  # its queues were empty (burst), or it was interrupted
    REPLACE = "replace"  # killed (a job's timeout): a new worker takes its job back
    LOST = "lost"  # failed, or killed once too often: the queues may not be drained


def ending(exitcode: int, replaced: int) -> Ending:
    """A worker's end by its exit status, after `replaced` replacements in all."""
    if exitcode in (0, INTERRUPTED):
        return Ending.DONE
    if exitcode < 0 and replaced < MAX_REPLACEMENTS:
        return Ending.REPLACE
    return Ending.LOST


def _exit_text(exitcode: int) -> str:
    if exitcode < 0:
        return f"was killed by {signal.Signals(-exitcode).name} once too often"
    return f"exited with status {exitcode}"


def _start(
    context: multiprocessing.context.BaseContext,
    config: Config,
    queues: tuple[str, ...] | None,
    index: int,
    burst: bool,
) -> multiprocessing.process.BaseProcess:
    proc = context.Process(target=_worker, args=(config, queues, index, burst), daemon=True)  # type: ignore[attr-defined]
    proc.start()
    return proc


def _worker(config: Config, queues: tuple[str, ...] | None, index: int, burst: bool) -> None:
    signal.signal(signal.SIGINT, lambda *_: os._exit(INTERRUPTED))  # the command says so once
    try:
        _work(config, queues, index, burst)
    except JobError as exc:  # the store's (unreachable, full): one line, not a traceback
        log.error("worker %d: %s", index, exc)
        os._exit(1)
    os._exit(0)  # a forked child: none of the command's exit handlers


def _work(config: Config, queues: tuple[str, ...] | None, index: int, burst: bool) -> None:
    settings = config.jobs
    me = WorkerId.current(SERVICE, index)
    runner = Runner(settings, Registry(settings, modules_base(config)), me)
    store = open_store(settings, config.settings.run_dir)
    store.queues = queues
    simulate = (lambda _: time.sleep(settings.delay) or True) if settings.delay else None
    batch, next_recover = Batch(runner), 0.0
    while True:
        if time.monotonic() >= next_recover:
            runner.disarm()  # a job's timer, kept for the next of its batch, ends no write
            store.recover(me)
            next_recover = time.monotonic() + RECOVER_EVERY
        batch.step(store, IDLE_BLOCK, False, simulate)
        if batch.empty and burst and not store.busy(queues):
            break
    store.close()


def _failed_since(config: Config, queues: tuple[str, ...] | None, since: float) -> bool:
    store = open_store(config.jobs, config.settings.run_dir)
    try:
        offset = 0
        while True:
            page, total = store.list(Status.FAILED, 1000, offset)
            for job in page:
                if (job["finished_time"] or 0) >= since and (
                    queues is None or job["queue"] in queues
                ):
                    return True
            offset += len(page)
            if not page or offset >= total:
                return False
    finally:
        store.close()
