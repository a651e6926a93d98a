"""The supervisors area: procorch vs supervisord and circus as process supervisors.

    python bench/supervisors                  # every part, 3 runs (about 40 minutes on 2 cores)
    python bench/supervisors --quick          # the `cli` part, 1 short run (about 75 s)
    python bench/supervisors --parts compare  # one part: cli, compare, live-reload,
                                              # live-rolling or hooks

Parts: `cli` (status table and --json at N = 4 and 50, idle CPU with health checks and
`down` at N = 50 and 200: supervisors/cli.py), `compare` (startup, crash to replacement,
status, shutdown, idle footprint: compare.py), `live-reload` and `live-rolling` (live.py),
`hooks` (hooks.py). bench/supervisors/spawnpaths.py is a separate micro-benchmark (as root).
"""

from __future__ import annotations

import argparse

from harness.area import Area, Part, RunOutput, Target

PACKAGES = ("supervisor", "circus", "psutil")
PEERS = ("supervisord", "circus", "procorch")


def _cli(args: argparse.Namespace) -> RunOutput:
    from supervisors import cli

    return cli.run(args)


def _compare(args: argparse.Namespace) -> RunOutput:
    from supervisors import compare

    return compare.run(args)


def _live(part: str):  # noqa: ANN202
    def run(args: argparse.Namespace) -> RunOutput:
        from supervisors import live

        return live.run(args, part)

    return run


def _hooks(args: argparse.Namespace) -> RunOutput:
    from supervisors import hooks  # imports tests/conftest.py: only when this part runs

    return hooks.run(args)


def _status_targets() -> tuple[Target, ...]:
    found = []
    for ours, bound in (("procorch status", 0.6), ("procorch status --json", 0.4)):
        for n in (4, 50):
            for when in ("warm", "cold"):
                key = f"{ours} ÷ supervisorctl status, N={n}, {when}"
                found.append(
                    Target(
                        f"`{ours}` ÷ `supervisorctl status` ≤ {bound}, N = {n}, {when}",
                        key,
                        "<=",
                        bound,
                    )
                )
    return tuple(found)


CLI_TARGETS = (
    *_status_targets(),
    *(
        Target(
            f"idle CPU procorch (default health checks) ÷ supervisord ≤ 1, N = {n}",
            f"idle CPU procorch ÷ supervisord, N={n}",
            "<=",
            1.0,
        )
        for n in (50, 200)
    ),
    *(
        Target(f"`down` procorch ÷ {peer} < 1, N = {n}", f"down procorch ÷ {peer}, N={n}", "<", 1.0)
        for n in (50, 200)
        for peer in ("supervisord", "circus")
    ),
)

AREA = Area(
    name="supervisors",
    title="Supervisors: procorch vs supervisord vs circus",
    doc=__doc__ or "",
    parts=(
        Part("cli", _cli, PACKAGES, PEERS, quick=True, targets=CLI_TARGETS),
        Part(
            "compare",
            _compare,
            PACKAGES,
            PEERS,
            quick=False,
            targets=(
                Target("crash to replacement < 20 ms (median)", "crash procorch", "<", 0.020),
                Target("`procorch status` < 100 ms (N = 4, warm)", "status procorch", "<", 0.100),
                Target(
                    "daemon RSS ≤ supervisord's (N = 50)", "rss procorch ÷ supervisord", "<=", 1.0
                ),
            ),
        ),
        Part(
            "live-reload",
            _live("reload"),
            PACKAGES,
            ("supervisord", "supervisord-group", "circus", "procorch"),
            quick=False,
        ),
        Part(
            "live-rolling",
            _live("rolling"),
            PACKAGES,
            ("supervisord", "supervisord-fcgi", "circus", "procorch"),
            quick=False,
            targets=(
                Target(
                    "no failed connection during procorch's rolling restart",
                    "rolling failed connections procorch",
                    "<=",
                    0,
                ),
            ),
        ),
        Part(
            "hooks",
            _hooks,
            ("psutil", "pytest"),
            quick=False,
            targets=(
                Target(
                    "kill to replacement < 5 ms with a hanging hook (median)",
                    "kill to replacement, hanging hook, median",
                    "<",
                    0.005,
                ),
            ),
        ),
    ),
)
