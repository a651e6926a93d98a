"""Every benchmark area, one after the other: `python bench [--quick] [--runs N] [--areas ...]`.

    python bench                     # every area, every part, 3 runs each (hours on 2 cores)
    python bench --quick             # every area's smoke run, 1 run each (about 5 minutes)
    python bench --areas jobs,chaos  # a subset of supervisors,jobs,services,gateway,chaos

Any Python 3.11+ can start it from a fresh clone: it brings bench/.venv up to date once
(every area's packages, procorch installed from this repository), then runs each area as
`bench/.venv/bin/python bench/<area> ...` with the same --quick, --runs, --no-write and
--keep-tmp. Each area writes its sections of bench/RESULTS.md and bench/results/<area>.json.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
from pathlib import Path

AREAS = ("supervisors", "jobs", "services", "gateway", "chaos")


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="each area's smoke run")
    parser.add_argument(
        "--runs", type=int, default=None, help="runs per area (default 3, 1 with --quick)"
    )
    parser.add_argument("--areas", default=",".join(AREAS), help=f"subset of {','.join(AREAS)}")
    parser.add_argument(
        "--no-write", action="store_true", help="leave RESULTS.md and results/ alone"
    )
    parser.add_argument("--keep-tmp", action="store_true", help="keep the temporary directories")
    args = parser.parse_args(argv)
    args.area_names = args.areas.split(",")
    unknown = set(args.area_names) - set(AREAS)
    if unknown:
        raise SystemExit(f"unknown area(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str]) -> int:
    from harness import venv

    args = parse_args(argv)
    packages: dict[str, None] = {}
    for name in args.area_names:
        area = importlib.import_module(f"{name}.area").AREA
        for part in area.parts:
            if part.quick or not args.quick:
                packages.update(dict.fromkeys(part.packages))
    venv.ensure_venv(tuple(packages))
    env = dict(os.environ, **{venv.READY: "1"})
    passed = [
        a for a in ("--quick", "--no-write", "--keep-tmp") if getattr(args, a[2:].replace("-", "_"))
    ]
    if args.runs is not None:
        passed += ["--runs", str(args.runs)]
    failed = []
    for name in args.area_names:
        cmd = [str(venv.VENV_PYTHON), str(venv.BENCH_DIR / name), *passed]
        print(f"[bench] {' '.join(cmd)}", file=sys.stderr, flush=True)
        try:
            code = subprocess.run(cmd, env=env, check=False).returncode
        except KeyboardInterrupt:
            print("[bench] interrupted", file=sys.stderr)
            return 130
        if code:
            failed.append(f"{name} (exit {code})")
    if failed:
        print(f"[bench] failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parent)  # bench/: also for `python -m bench`
    sys.exit(main(sys.argv[1:]))
