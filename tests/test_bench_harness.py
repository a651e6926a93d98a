"""bench/harness/area.py's arithmetic: medians and ranges over runs, ratios, target verdicts.

The areas themselves need bench/.venv and run for minutes; what every figure in
bench/RESULTS.md rests on is checked here: a figure over N runs is the median with its
range, and a target is met only when it holds in every run.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.fixture
def area(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(BENCH))
    yield importlib.import_module("harness.area")
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(BENCH)):
            del sys.modules[name]


def _run(area: ModuleType, status: float, ratio: float) -> dict:
    return {"p": area.RunOutput(figures={"status": area.Figure(status, "ms")}, ratios={"r": ratio})}


def test_figures_and_ratios_are_medians_with_their_range(area):
    targets = (
        area.Target("r at most 0.6", "r", "<=", 0.6),
        area.Target("status under 100 ms", "status", "<", 0.100),
    )
    part = area.Part("p", lambda args: area.RunOutput(), targets=targets)
    demo = area.Area("demo", "Demo", "", (part,))
    outputs = [_run(area, 0.081, 0.55), _run(area, 0.076, 0.51), _run(area, 0.090, 0.62)]
    args = argparse.Namespace(quick=False)
    data = area.aggregate(demo, [part], outputs, args, 1.0, "python bench/demo")
    status = data["figures"]["status"]
    assert (status["median"], status["min"], status["max"], status["n"]) == (0.081, 0.076, 0.090, 3)
    assert area.with_range(status, "ms") == "81.0 ms (76.0–90.0)"
    assert area.ratio_with_range(data["ratios"]["r"]) == "0.55× (0.51–0.62)"
    verdicts = {t["key"]: t["verdict"] for t in data["targets"]}
    # 0.62 in one run: met at the median, not in every run, so not met
    assert verdicts["r"] == "not met (met at the median, not in every run)"
    assert verdicts["status"] == "met"
    assert [run["figures"]["status"] for run in data["runs"]] == [0.081, 0.076, 0.090]
    text = area.render(demo, data)
    assert "target r at most 0.6: **not met (met at the median, not in every run)**" in text
    assert text.startswith("<!-- demo:begin -->") and text.rstrip().endswith("<!-- demo:end -->")


def test_a_target_missing_from_a_run_is_not_met(area):
    part = area.Part("p", lambda args: area.RunOutput(), targets=(area.Target("t", "r", "<=", 1),))
    demo = area.Area("demo", "Demo", "", (part,))
    outputs = [_run(area, 0.05, 0.5), {"p": area.RunOutput()}]
    data = area.aggregate(demo, [part], outputs, argparse.Namespace(quick=True), 1.0, "x")
    assert data["targets"][0]["verdict"] == "not measured in every run"


def test_areas_import_the_harness_and_no_other_area():
    """No import circles: the harness imports no area, an area no other area."""
    areas = {"supervisors", "jobs", "services", "gateway", "chaos"}
    for path in BENCH.glob("*/*.py"):
        owner = path.parent.name
        text = path.read_text()
        for other in areas | {"harness"}:
            if other == owner or (other == "harness" and owner != "harness"):
                continue
            for line in text.splitlines():
                stripped = line.strip()
                assert not stripped.startswith(
                    (f"from {other} ", f"from {other}.", f"import {other}")
                ), f"{path.relative_to(BENCH)} imports {other}: {stripped}"
