"""What `user`/`group`/`rlimits` cost the daemon per spawn, by the way they are applied.

The daemon's event loop blocks in Popen() while a replica is spawned. Through exec
wrappers (setpriv, prlimit) Popen keeps its vfork path; Popen(user=, group=) or a
preexec_fn make it fork, which copies the page tables of the daemon's heap. The parent
here carries a ~100 MB heap, as a long-running daemon with many replicas may. Prints
the median Popen() time (the loop's cost) and the time until the child has exited
(the replica's start latency) over N spawns of /bin/true, as root (for setuid).

    python bench/supervisors/spawnpaths.py [N]    (as root; standard library only)
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from typing import Any

SETPRIV = shutil.which("setpriv") or "setpriv"
PRLIMIT = shutil.which("prlimit") or "prlimit"
NOBODY = ["--reuid", "65534", "--init-groups", "--regid", "65534"]


def measure(label: str, argv: list[str], n: int, **popen: Any) -> None:
    calls, totals = [], []
    for _ in range(n):
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, start_new_session=True, **popen)
        spawned = time.perf_counter()
        proc.wait()
        calls.append(spawned - start)
        totals.append(time.perf_counter() - start)
    print(
        f"| {label} | {statistics.median(calls) * 1e3:.2f} ms "
        f"| {statistics.median(totals) * 1e3:.2f} ms |"
    )


def main() -> None:
    if os.geteuid() != 0:
        sys.exit("run as root: switching user needs it")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    ballast = [bytearray(1024) for _ in range(100_000)]  # noqa: F841 (the daemon's heap)
    setpriv = [SETPRIV, "--pdeathsig", "TERM"]
    print("| spawn path | Popen() (event loop) | until the child exited |\n|---|---|---|")
    measure("setpriv --pdeathsig (any command)", [*setpriv, "--", "/bin/true"], n)
    measure("+ --reuid/--regid/--init-groups", [*setpriv, *NOBODY, "--", "/bin/true"], n)
    limits = [PRLIMIT, "--nofile=1024:", "--core=0:", "--"]
    measure("prlimit + setpriv + user", [*limits, *setpriv, *NOBODY, "--", "/bin/true"], n)
    ids = {"user": 65534, "group": 65534, "extra_groups": []}
    measure("Popen(user=, group=, extra_groups=)", ["/bin/true"], n, **ids)
    measure("Popen(preexec_fn=...)", ["/bin/true"], n, preexec_fn=lambda: None)


if __name__ == "__main__":
    main()
