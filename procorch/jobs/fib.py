"""The built-in job: F(n) mod m by fast doubling, O(log n) multiplications for any n."""

from __future__ import annotations


def fib(n: int, mod: int) -> int:
    """F(n) mod `mod`, with F(0) = 0 and F(1) = 1.

    Fast doubling: from (F(k), F(k+1)), F(2k) = F(k)(2F(k+1) - F(k)) and
    F(2k+1) = F(k)^2 + F(k+1)^2; walking n's bits from the top gives F(n) in
    about 60 steps for n up to 10**18, every intermediate reduced mod m.
    """
    if n < 0:
        raise ValueError(f"n must be ≥ 0, got {n}")
    a, b = 0, 1 % mod  # F(0), F(1)
    for bit in bin(n)[2:]:
        c = a * ((2 * b - a) % mod) % mod  # F(2k)
        d = (a * a + b * b) % mod  # F(2k+1)
        a, b = (d, (c + d) % mod) if bit == "1" else (c, d)
    return a
