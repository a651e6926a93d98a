"""Chaos in the suite: about 20 s of kill -9 of every role while clients write and retry.

`python bench/chaos` runs the same engine (tests/chaos.py) for longer and prints its figures.
"""

from __future__ import annotations

from tests.chaos import ROLES, Chaos
from tests.conftest import free_port


def test_every_write_exactly_once_through_kills_of_every_role(tmp_path):
    report = Chaos(tmp_path, free_port(), clients=3).run(seconds=20, pause=(0.2, 0.6))
    figures = report.as_dict()
    assert set(report.kills) == set(ROLES), figures  # every role was killed at least once
    assert sum(report.never_recovered.values()) == 0, figures
    assert report.writes > 100, figures
    assert report.retried > 0, figures  # the kills were felt: some writes needed a retry
    assert (report.unanswered, report.refused) == (0, 0), figures
    assert (report.lost, report.duplicated) == (0, 0), figures
    assert report.jobs > 0 and report.jobs_stuck == 0, figures
    assert report.leftovers == 0, figures  # `down` left nothing
