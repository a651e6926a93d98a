"""The services area: a procorch service call vs a raw socket, mp.Queue and mp.Manager.

    python bench/services            # 3 runs (under 10 minutes)
    python bench/services --quick    # 1 short run (about 30 s)

One part, `calls` (runner.py, peers.py, report.py; the echo service is benchsvc.py).
"""

from __future__ import annotations

import argparse

from harness.area import Area, Part, RunOutput, Target

PEERS = ("raw", "json", "queue", "manager", "procorch")


def _calls(args: argparse.Namespace) -> RunOutput:
    from services import runner

    return runner.run(args)


AREA = Area(
    name="services",
    title="Service calls: procorch vs raw socket, mp.Queue, mp.Manager",
    doc=__doc__ or "",
    parts=(
        Part(
            "calls",
            _calls,
            ("psutil",),
            PEERS,
            quick=True,
            targets=tuple(
                t
                for where, place in (("same", "one core"), ("split", "two cores"))
                for t in (
                    Target(
                        f"procorch p50 ≤ 3× the raw socket's, {place}",
                        f"p50_{where} procorch ÷ raw socket",
                        "<=",
                        3.0,
                    ),
                    Target(
                        f"procorch p50 ≤ 1/10 of mp.Manager's, {place}",
                        f"p50_{where} procorch ÷ mp.Manager",
                        "<=",
                        0.1,
                    ),
                )
            ),
        ),
    ),
)
