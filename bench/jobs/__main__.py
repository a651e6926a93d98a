"""`python bench/jobs [--quick] [--runs N] [--parts ...]`: see area.py."""

import sys
from pathlib import Path

if __name__ == "__main__":  # not again in a process started with multiprocessing's spawn
    sys.path[0] = str(Path(__file__).resolve().parents[1])  # bench/: the areas, the harness
    from harness.area import launch

    launch("jobs.area", __file__)
