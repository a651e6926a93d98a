"""The rolling-restart measurement: a 2-copy HTTP service restarted under continuous load.

The service is bench/supervisors/httpserve.py, 2 copies serving one port (`programs.Program.listen`
says how each peer hands it over). Once both answer, bench/supervisors/httpload.py runs its client
threads against it (a new connection per request); after a lead of 1 s the peer's restart
command is issued, and the load runs on for 2 s after the command returned and both
copies were replaced. From the load's records:

- failed connections (refused, reset, timeout, other) and non-2xx replies over the whole
  load run (lead and tail included: a failure anywhere counts);
- successful replies during the restart (from the command until it returned), and the
  longest stretch without a successful reply from the command until the end of the run
  (and, as the floor a busy machine sets, the longest one between replies before it);
- the restart's duration: the command's wall time, and until both copies were new.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import procs
from harness.venv import VENV_PYTHON

from supervisors.peers import Peer, PeerError
from supervisors.programs import Program

HERE = Path(__file__).resolve().parent
SERVER = HERE / "httpserve.py"
LOADER = HERE / "httpload.py"
REPLICAS = 2
SETTLE = 2.0  # s after both answer: past every peer's 1 s "start seconds"
LEAD = 1.0  # s of load before the restart command
TAIL = 2.0  # s of load after the restart is done
TIMEOUT = 60.0  # s for the restart
POLL = 0.005  # s

Record = tuple[float, float, int | str]  # start, end (CLOCK_MONOTONIC), status or failure


@dataclass(frozen=True)
class Rolling:
    failures: dict[str, int]  # kind -> count, over the whole load run
    non_2xx: int
    served: int  # 2xx replies completed during the restart command
    total: int  # 2xx replies over the whole load run
    longest_gap: float  # s without a 2xx reply, from the command to the end
    gap_before: float  # the same between 2xx replies before the command: the noise floor
    returned: float  # s, the restart command's wall time
    replaced: float  # s from the command until both copies were new


def web(marker: str, port: int) -> Program:
    return Program("web", (str(VENV_PYTHON), str(SERVER), marker), REPLICAS, listen=port)


def summarize(records: list[Record], start: float, returned: float, end: float) -> dict[str, Any]:
    """The figures of one load run, the restart command running from `start` to
    `returned` and the load from before `start` until `end` (all on one clock)."""
    failures = Counter(str(outcome) for _, _, outcome in records if not isinstance(outcome, int))
    non_2xx = sum(
        1 for _, _, outcome in records if isinstance(outcome, int) and outcome // 100 != 2
    )
    ok = sorted(
        done for _, done, outcome in records if isinstance(outcome, int) and outcome // 100 == 2
    )
    served = sum(1 for done in ok if start <= done <= returned)
    before = [done for done in ok if done < start]
    return {
        "failures": dict(failures),
        "non_2xx": non_2xx,
        "served": served,
        "total": len(ok),
        "longest_gap": _longest_gap([start, *(done for done in ok if start < done < end), end]),
        "gap_before": _longest_gap(before),
    }


def _longest_gap(marks: list[float]) -> float:
    return max((b - a for a, b in zip(marks, marks[1:], strict=False)), default=0.0)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1) as reply:
            return reply.status == 200
    except OSError:
        return False


class Load:
    """bench/supervisors/httpload.py running against a port until `stop` returns its records."""

    def __init__(self, port: int) -> None:
        self.proc = subprocess.Popen(
            [str(VENV_PYTHON), str(LOADER), str(port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            cwd=HERE,
        )

    def stop(self) -> list[Record]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.close()
        out = self.proc.stdout.read()
        self.proc.wait()
        return [tuple(record) for record in json.loads(out)]  # type: ignore[misc]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def measure(peer: Peer, port: int) -> Rolling:
    """Start the service, restart it under load, and return the figures (the peer is
    left running)."""
    service = web(peer.marker, port)
    peer.write_stack([service])
    peer.launch(REPLICAS)
    if not procs.wait_until(lambda: _answers(port), 15, 0.05):
        raise PeerError(f"the service does not answer on port {port}")
    time.sleep(SETTLE)
    old = peer.alive()
    load = Load(port)
    try:
        time.sleep(LEAD)
        log = peer.workdir / "restart.log"
        with open(log, "ab") as out:
            start = time.monotonic()
            cmd = peer.popen(peer.restart_cmd(service), out)
            replaced = returned = None
            while replaced is None or returned is None:
                now = time.monotonic()
                if returned is None and cmd.poll() is not None:
                    if cmd.returncode != 0:
                        raise PeerError(peer.failure("restart", cmd.returncode, log))
                    returned = now
                alive = peer.alive()
                if replaced is None and len(alive) >= REPLICAS and not alive & old:
                    replaced = now
                if now - start > TIMEOUT:
                    cmd.kill()
                    raise PeerError(f"restart not done within {TIMEOUT:.0f} s")
                time.sleep(POLL)
        time.sleep(TAIL)
        end = time.monotonic()
        records = load.stop()
    finally:
        load.kill()
    figures = summarize(records, start, returned, end)
    return Rolling(**figures, returned=returned - start, replaced=replaced - start)
