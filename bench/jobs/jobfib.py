"""The benchmark's job function for RQ: F(n) mod m by fast doubling, as procorch's jobs.

RQ workers import it by name (`jobfib.fib`), so it lives in a module of its own with no
dependencies; bench/jobs/runner.py puts bench/ on the workers' PYTHONPATH.
"""

from __future__ import annotations

DEFAULT_MOD = 1_000_000_007


def fib(n: int, mod: int = DEFAULT_MOD) -> int:
    """F(n) mod `mod` with F(0) = 0, F(1) = 1, in O(log n) steps."""
    a, b = 0, 1  # F(k), F(k + 1) for k = the bits of n read so far
    for bit in bin(n)[2:]:
        c = a * ((2 * b - a) % mod) % mod  # F(2k)
        d = (a * a + b * b) % mod  # F(2k + 1)
        a, b = (d, (c + d) % mod) if bit == "1" else (c, d)
    return a
