"""The load generator of the gateway benchmark: wrk, found or installed, run for a fixed
time against one URL, its figures read back exactly.

Every run gets a Lua script written into the run's temporary directory: it sets the
method and JSON body (for POST endpoints) and, when wrk is done, prints one line of JSON
with the request count, the duration and the latency percentiles in microseconds, so
nothing is parsed from wrk's rounded text (which `--latency` still adds to the log).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MARK = "WRK-JSON "  # the line the Lua `done` hook prints

_DONE = """
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '%s{"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "non2xx": %d, '
    .. '"socket_errors": %d}\\n',
    "MARK", summary.requests, summary.duration, latency:percentile(50),
    latency:percentile(99), e.status, e.connect + e.read + e.write + e.timeout))
end
""".replace("MARK", MARK)


class WrkError(Exception):
    """wrk is missing or failed; str() is the one line to print."""


@dataclass(frozen=True)
class Load:
    """How hard and how long wrk pushes: its threads, connections and seconds."""

    threads: int
    connections: int
    seconds: int  # wrk takes whole seconds


@dataclass(frozen=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    non2xx: int  # answers with another status (wrk counts 2xx and 3xx as fine)
    socket_errors: int  # connect, read, write errors and timeouts

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def pooled(runs: list[WrkResult]) -> WrkResult:
    """Runs of one endpoint as one figure: requests/s over all of them together, their
    percentiles averaged (wrk gives no histogram to merge), their errors added up."""
    if len(runs) == 1:
        return runs[0]
    return WrkResult(
        requests=sum(r.requests for r in runs),
        seconds=sum(r.seconds for r in runs),
        p50_ms=sum(r.p50_ms for r in runs) / len(runs),
        p99_ms=sum(r.p99_ms for r in runs) / len(runs),
        non2xx=sum(r.non2xx for r in runs),
        socket_errors=sum(r.socket_errors for r in runs),
    )


def ensure_wrk() -> str:
    """The path of wrk; installs the Debian package when it is missing and this is root."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0:
        raise WrkError("wrk is missing: install it with `apt-get install -y wrk` (as root)")
    print("[bench] wrk is missing; apt-get install -y wrk", file=sys.stderr, flush=True)
    install = ["apt-get", "install", "-y", "wrk"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # The package lists may be missing or stale on a fresh machine: update once, retry.
    for step in (install, ["apt-get", "update"], install):
        try:
            subprocess.run(step, capture_output=True, check=False, timeout=300, env=env)
        except (OSError, subprocess.SubprocessError):
            break
        if shutil.which("wrk"):
            return shutil.which("wrk") or "wrk"
    raise WrkError("wrk is missing and `apt-get install -y wrk` did not install it")


def version(wrk: str) -> str:
    done = subprocess.run([wrk, "-v"], capture_output=True, text=True, check=False)
    words = (done.stdout + done.stderr).split()
    return words[1] if len(words) > 1 else "?"  # "wrk 4.1.0 [epoll] Copyright ..."


def lua_script(path: Path, method: str, body: dict[str, Any] | None) -> Path:
    """Write the script for one endpoint; JSON in a Lua long string needs no escaping."""
    lines = [f'wrk.method = "{method}"']
    if body is not None:
        lines += [
            f"wrk.body = [[{json.dumps(body)}]]",
            'wrk.headers["Content-Type"] = "application/json"',
        ]
    path.write_text("\n".join(lines) + "\n" + _DONE)
    return path


def run(wrk: str, url: str, script: Path, load: Load, log: Path) -> WrkResult:
    """One timed run against `url`; wrk's whole output is appended to `log`."""
    cmd = [wrk, "-t", str(load.threads), "-c", str(load.connections), "-d", f"{load.seconds}s"]
    cmd += ["--latency", "-s", str(script), url]
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, check=False, timeout=load.seconds + 30
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk against {url} did not finish") from exc
    with log.open("a") as f:
        f.write(f"$ {' '.join(cmd)}\n{done.stdout}{done.stderr}\n")
    for line in done.stdout.splitlines():
        if line.startswith(MARK):
            got = json.loads(line[len(MARK) :])
            return WrkResult(
                requests=got["requests"],
                seconds=got["duration_us"] / 1e6,
                p50_ms=got["p50_us"] / 1000,
                p99_ms=got["p99_us"] / 1000,
                non2xx=got["non2xx"],
                socket_errors=got["socket_errors"],
            )
    why = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    raise WrkError(f"wrk against {url} failed: {why[0]}")
