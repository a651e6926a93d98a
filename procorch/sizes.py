"""Sizes in bytes, as people write them ("300M", "2G") and as they read them ("1.5 GiB").

Pure functions, shared by the config (`max_rss`, `rlimits`) and whatever shows a size.
Suffixes are binary, as in `ulimit`, `prlimit` and pm2's `max_memory_restart`: K is
1024 bytes, M 1024², G 1024³, T 1024⁴.
"""

from __future__ import annotations

import re

_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
# compiled at first use (re caches it): every CLI start imports this module via the config
_SIZE = r"(?P<number>\d+(?:\.\d+)?)\s*(?P<unit>[KMGT]?)(?:I?B)?"


def parse_size(value: int | str) -> int:
    """Bytes in `value`: an integer, or a number with an optional K/M/G/T suffix ("300M",
    "1.5G", "512KiB", "64kb"). Raises ValueError on anything else, or a negative size."""
    if isinstance(value, bool):  # an int subclass, but never meant as a size
        raise ValueError(f"not a size: {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"negative size: {value}")
        return value
    match = re.fullmatch(_SIZE, value.strip(), re.IGNORECASE) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"not a size: {value!r}")
    return int(float(match["number"]) * _UNITS[match["unit"].upper()])


def format_size(n: int) -> str:
    """Bytes for a human: 512 B, 3.4 KiB, 1.2 MiB, 2.0 GiB."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
