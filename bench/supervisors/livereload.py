"""The reload measurement: one edit of a 50-program stack, applied live by one peer.

The stack is 50 sleepers, `s00` … `s49`, each its own program with one process and
`BENCH_GEN=1` in its environment. The edit changes `s00`'s environment to `BENCH_GEN=2`,
removes `s49` and adds `s50`; the other 48 are untouched. The clock starts as the peer's
reload command(s) are issued and the harness polls /proc every 5 ms for:

- live: an `s00` process started with `BENCH_GEN=2` (read from /proc/PID/environ) is
  alive, `s50` is alive, `s49` is gone;
- done: live, the old `s00` process gone too, and the command(s) returned.

A second after that, the pids of the 48 untouched programs are compared with theirs
before the reload: each program whose process changed counts as restarted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from harness import procs
from harness.venv import VENV_PYTHON

from supervisors.peers import SLEEPER, Peer, PeerError
from supervisors.programs import Program

SIZE = 50
CHANGED, REMOVED, ADDED = "s00", f"s{SIZE - 1:02d}", f"s{SIZE:02d}"
VAR = "BENCH_GEN"
SETTLE = 2.0  # s after start before the reload: past every peer's 1 s "start seconds"
AFTER = 1.0  # s after done before comparing pids: a late restart still counts
POLL = 0.005  # s
TIMEOUT = 60.0  # s for the reload to be done


@dataclass(frozen=True)
class Reload:
    live: float  # s from the first command until the change was live
    done: float  # s until also the old s00 was gone and the command(s) returned
    returned: float  # s until the last command returned
    restarted: int  # of the untouched programs, how many got a new process


def stack(marker: str, edited: bool) -> list[Program]:
    """The 50 programs before the edit, or after it."""
    names = [f"s{i:02d}" for i in range(SIZE)]
    if edited:
        names = [*names[:-1], ADDED]

    def gen(name: str) -> str:
        return "2" if edited and name == CHANGED else "1"

    return [
        Program(name, (str(VENV_PYTHON), str(SLEEPER), marker, name), env={VAR: gen(name)})
        for name in names
    ]


def processes(marker: str) -> dict[str, set[int]]:
    """Program name -> pids of its live processes (the name is the sleeper's last arg)."""
    found: dict[str, set[int]] = {}
    for pid, argv in procs.cmdlines_with_arg(marker).items():
        if argv and argv[-1] != marker:
            found.setdefault(argv[-1], set()).add(pid)
    return found


def is_live(now: dict[str, set[int]]) -> bool:
    """The edit shows: the new s00 running, s50 running, s49 gone."""
    new_s00 = any(procs.environ(pid).get(VAR) == "2" for pid in now.get(CHANGED, ()))
    return new_s00 and ADDED in now and REMOVED not in now


def restarted(before: dict[str, set[int]], after: dict[str, set[int]]) -> int:
    """How many of the untouched programs do not have the very processes they had."""
    untouched = set(before) - {CHANGED, REMOVED}
    return sum(1 for name in untouched if after.get(name) != before[name])


def measure(peer: Peer) -> Reload:
    """Start the stack, apply the edit live, and time it (the peer is left running)."""
    peer.write_stack(stack(peer.marker, edited=False))
    peer.launch(SIZE)
    time.sleep(SETTLE)
    before = processes(peer.marker)
    if sorted(len(pids) for pids in before.values()) != [1] * SIZE:
        raise PeerError(f"expected {SIZE} programs of one process each, found {before}")
    old_s00 = before[CHANGED]
    peer.write_stack(stack(peer.marker, edited=True))
    commands = peer.reload_cmds()
    log = peer.workdir / "reload.log"
    live = gone = returned = None
    with open(log, "ab") as out:
        t0 = time.perf_counter()
        running = peer.popen(commands.pop(0), out)
        while live is None or gone is None or returned is None:
            now = time.perf_counter() - t0
            if returned is None and running.poll() is not None:
                if running.returncode != 0:
                    raise PeerError(peer.failure("reload", running.returncode, log))
                if commands:
                    running = peer.popen(commands.pop(0), out)
                else:
                    returned = now
            seen = processes(peer.marker)
            if live is None and is_live(seen):
                live = now
            if gone is None and not old_s00 & seen.get(CHANGED, set()):
                gone = now
            if now > TIMEOUT:
                running.kill()
                raise PeerError(f"reload not done within {TIMEOUT:.0f} s")
            time.sleep(POLL)
    time.sleep(AFTER)
    return Reload(
        live, max(live, gone, returned), returned, restarted(before, processes(peer.marker))
    )
