"""What every area's report shares: the header lines (date, machine, load, versions, the
command that reproduces it), the section skeleton with its markers, small formatters, and
writing a section into bench/RESULTS.md.

Each section of RESULTS.md sits between BEGIN and END markers, so every area keeps its own
sections in the same file; rerunning replaces only those. Standard library only.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from harness.venv import BENCH_DIR, REPO_ROOT

RESULTS_FILE = BENCH_DIR / "RESULTS.md"
FILE_HEADER = """# procorch benchmark results

Each section below is written by one area of `bench/` (`python bench/<area>`); rerunning an
area replaces only its own sections. See `bench/README.md` for what is measured.
"""


def markers(name: str) -> tuple[str, str]:
    """The comments around section `name` of RESULTS.md."""
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def met(ok: bool | None) -> str:
    """A target's "met" cell: ✓ or ✗, or n/a where it could not be measured."""
    return "n/a" if ok is None else "✓" if ok else "✗"


def table_row(cells: Sequence[str]) -> str:
    """One row of a markdown table."""
    return "| " + " | ".join(cells) + " |"


def div(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def times(x: float | None) -> str:
    """A ratio, as 0.55× or 12.3×."""
    if x is None:
        return "n/a"
    return f"{x:.2f}×" if x < 10 else f"{x:.1f}×" if x < 100 else f"{x:.0f}×"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine() -> str:
    """The machine, for a results header: cores, CPU model, memory, kernel."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} cores ({_cpu_model()}), {mem:.0f} GiB RAM, Linux {platform.release()}"


def machine_info() -> dict[str, object]:
    """The machine, for the JSON results."""
    return {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "procorch_git": git_rev(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def git_rev() -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    rev = git("rev-parse", "--short", "HEAD") or "unknown"
    return rev + ("+dirty" if git("status", "--porcelain", "--", "procorch") else "")


_git_rev = git_rev  # the name the areas' reports used


def header(
    command: str,
    *,
    machine_note: str = "",
    loads: str = "",
    versions: str = "",
    method: Sequence[str] = (),
) -> list[str]:
    """The bullet lines every section opens with; `method` adds the area's own."""
    lines = [
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {machine()}" + (f"; {machine_note}" if machine_note else ""),
    ]
    if loads:
        lines.append(f"- load average (1 min) at the start and the end: {loads}")
    lines.append(f"- python: {platform.python_version()}" + (f"; {versions}" if versions else ""))
    lines.append(f"- reproduce: `{command}`")
    return lines + [f"- {text}" for text in method]


def section(
    name: str, title: str, head: Sequence[str], body: Sequence[str], notes: Sequence[str] = ()
) -> str:
    """A whole section: markers, title, header, body, and the notes if there are any."""
    begin, end = markers(name)
    lines = [begin, f"## {title}", "", *head, "", *body]
    if notes:
        lines += ["### Notes", "", *notes, ""]
    lines.append(end)
    return "\n".join(lines) + "\n"


def write_section(path: Path, text: str, name: str) -> None:
    """Put `text` (which starts and ends with `name`'s markers) into `path`, replacing
    an earlier one of the same name and keeping everything else."""
    begin, end_marker = markers(name)
    old = path.read_text() if path.exists() else FILE_HEADER
    start, end = old.find(begin), old.find(end_marker)
    if start != -1 and end > start:
        new = old[:start] + text.rstrip("\n") + old[end + len(end_marker) :]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    path.write_text(new if new.endswith("\n") else new + "\n")


def publish(text: str, name: str, write: bool = True) -> None:
    """Print a section and, unless told not to (--no-write), put it into bench/RESULTS.md."""
    print(text)
    if write:
        write_section(RESULTS_FILE, text, name)
        print(f"[bench] wrote {RESULTS_FILE} ({name})", file=sys.stderr, flush=True)
