"""The gateway area: procorch's HTTP gateway vs a bare waitress hello and the original
design, and the web dashboard's cost.

    python bench/gateway                     # both parts, 3 runs (about 20 minutes)
    python bench/gateway --quick             # both parts, 1 short run (about a minute)
    python bench/gateway --parts endpoints   # one part: endpoints or dashboard

Parts: `endpoints` (runner.py, peers.py, report.py, plan.py, wrk.py; the servers hello.py and
original.py) and `dashboard` (dashboard.py, dashplan.py). Both need `wrk` (installed with
apt-get when missing, as root). `--age` lets the dashboards fill the gateway's history first.
"""

from __future__ import annotations

import argparse

from harness.area import Area, Part, RunOutput, Target

PACKAGES = ("psutil", "flask", "waitress", "requests")  # requests: the original's client
ONE_HOP = ("user", "job_get", "job_pending")


def _endpoints(args: argparse.Namespace) -> RunOutput:
    from gateway import runner

    return runner.run(args)


def _dashboard(args: argparse.Namespace) -> RunOutput:
    from gateway import dashboard

    return dashboard.run(args)


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--age",
        action="store_true",
        help="dashboard: let the dashboards fill the gateway's history first (10 min more)",
    )


AREA = Area(
    name="gateway",
    title="Gateway: procorch vs a bare waitress hello and the original design",
    doc=__doc__ or "",
    options=_options,
    parts=(
        Part(
            "endpoints",
            _endpoints,
            PACKAGES,
            ("hello", "procorch", "original"),
            quick=True,
            targets=tuple(
                Target(
                    f"{key}: ≥ 70 % of the hello's requests/s",
                    f"{key} req/s procorch ÷ hello",
                    ">=",
                    0.70,
                )
                for key in ONE_HOP
            ),
        ),
        Part(
            "dashboard",
            _dashboard,
            ("psutil",),
            ("procorch",),
            quick=True,
            targets=(
                Target(
                    "one update of the overview < 5 ms",
                    "overview update, history full (median)",
                    "<",
                    0.005,
                ),
                Target(
                    "the slowest jobs-page query < 20 ms",
                    "slowest jobs-page query (median)",
                    "<",
                    0.020,
                ),
            ),
        ),
    ),
)
