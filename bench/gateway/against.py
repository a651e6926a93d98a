"""This checkout's gateway against another checkout's (an older commit), side by side.

    git -C . archive 2bb900b | tar -x -C /tmp/old            # the commit to compare with
    python3 -m venv /tmp/old/.venv && /tmp/old/.venv/bin/pip install -e /tmp/old
    .venv/bin/python bench/gateway/against.py --against /tmp/old --rounds 3
    .venv/bin/python bench/gateway/against.py --against /tmp/old \
        --variant 'w2:workers=2' --variant 't4:threads=4' --endpoints /users/1

Each side is a whole `procorch up` stack of its own (the built-in services, two job
workers with no delay and no failures, the Gateway on a port of its own), run by its own
venv's python (`<checkout>/.venv/bin/python`; an editable install wins over PYTHONPATH,
so each checkout needs its venv). `--variant NAME:key=value,...` adds a stack of this
checkout with those `[gateway]` settings. The stacks sit idle but for the one under
load. Each round runs every endpoint on every stack, the order rotating from round to
round (the machine's load drifts); the table gives each stack's median requests/s and
p99 over the rounds, and the median and range of its ratio to the old stack's run of the
same round. Load: wrk as servers.py runs it (one thread, 8 keep-alive connections).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from servers import (  # noqa: E402 - a script beside servers.py
    ENDPOINTS,
    HOST,
    USER,
    Run,
    free_port,
    interleaved,
    log,
    request,
    wait_ready,
)

HERE = Path(__file__).resolve().parents[2]


def stack_config(root: Path, port: int, extra: dict[str, str]) -> Path:
    conf = root / "procorch.toml"
    gateway = "".join(f"{key} = {value}\n" for key, value in extra.items())
    conf.write_text(
        f'[gateway]\nenabled = true\nhost = "{HOST}"\nport = {port}\n{gateway}'
        "[jobs]\ndelay = 0\nfailure_rate = 0\n"
        '[services.UserService]\nmodule = "procorch.services.users:UserService"\n'
        "[services.NotificationService]\n"
        'module = "procorch.services.notifications:NotificationService"\n'
        '[services.OrderService]\nmodule = "procorch.services.orders:OrderService"\n'
        'depends_on = ["UserService"]\n'
    )
    return conf


def cli(checkout: Path, root: Path, *args: str, env: dict[str, str] | None = None) -> None:
    exe = checkout / ".venv" / "bin" / "procorch"
    done = subprocess.run(
        [str(exe), *args, "-c", str(root / "procorch.toml"), "--run-dir", str(root / "run")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=None if not env else {**os.environ, **env},
    )
    if done.returncode != 0:
        raise RuntimeError(f"procorch {args[0]}: {(done.stderr or done.stdout).strip()[-400:]}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--against", required=True, help="the other checkout (with .venv)")
    parser.add_argument("--variant", action="append", default=[], help="NAME:key=value,...")
    parser.add_argument("--no-new", action="store_true", help="only the variants")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--endpoints", help="comma-separated paths (default: all)")
    args = parser.parse_args(argv)
    endpoints = ENDPOINTS
    if args.endpoints:
        endpoints = tuple(ep for ep in ENDPOINTS if ep.path in args.endpoints.split(","))
    stacks: list[tuple[str, Path, dict[str, str]]] = [("old", Path(args.against), {})]
    if not args.no_new:
        stacks.append(("new", HERE, {}))
    for spec in args.variant:
        name, _, settings = spec.partition(":")
        extra = dict(item.split("=", 1) for item in settings.split(",") if item)
        stacks.append((name, HERE, extra))
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    base = Path(tempfile.mkdtemp(prefix="pga", dir="/tmp"))
    roots: dict[str, tuple[Path, Path]] = {}
    urls: dict[str, str] = {}
    results: dict[tuple[str, str], list[Run]] = {}
    try:
        for name, checkout, extra in stacks:
            root = base / name
            root.mkdir()
            port = free_port()
            roots[name] = (checkout, root)
            env = {k: v for k, v in extra.items() if k.isupper()}  # NAME=... : environment
            extra = {k: v for k, v in extra.items() if not k.isupper()}
            stack_config(root, port, extra)
            cli(checkout, root, "up", env=env)
            urls[name] = f"http://{HOST}:{port}"
        for url in urls.values():
            wait_ready(url + "/health")
            request(url + "/users", "POST", USER)
            request(url + "/job/100", "POST")
        for url in urls.values():
            for ep in endpoints:  # each answers 2xx, and warms up
                request(url + ep.path, ep.method, ep.body)
        names = [name for name, _, _ in stacks]
        ordered = {name: urls[name] for name in names}
        results.update(interleaved(ordered, endpoints, args.rounds, args.seconds, 1, base, "ab"))
    finally:
        for checkout, root in roots.values():
            try:
                cli(checkout, root, "down")
            except Exception as exc:  # noqa: BLE001 - report it, keep cleaning up
                log(f"[ab] procorch down: {exc}")
        shutil.rmtree(base, ignore_errors=True)

    def spread(values: list[float], fmt: str) -> str:
        lo, mid, hi = min(values), statistics.median(values), max(values)
        return f"{format(mid, fmt)} ({format(lo, fmt)}–{format(hi, fmt)})"

    print(f"{args.rounds} rounds, wrk -t1 -c8 -d{args.seconds}s per run; ratio: ÷ old")
    print("| endpoint | stack | req/s | ratio | p99 ms | errors |")
    print("| --- | --- | --- | --- | --- | --- |")
    for ep in endpoints:
        base_runs = results[(ep.label, "old")]
        for name in names:
            runs = results[(ep.label, name)]
            ratios = [r.rps / b.rps for r, b in zip(runs, base_runs, strict=True)]
            print(
                f"| {ep.label} | {name} | {spread([r.rps for r in runs], ',.0f')} | "
                f"{spread(ratios, '.2f')} | {spread([r.p99 for r in runs], '.1f')} | "
                f"{sum(r.errors for r in runs)} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
