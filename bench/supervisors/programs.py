"""What a benchmark asks a supervisor to run, before any one supervisor's config format.

A stack is a sequence of `Program`s; each peer in `peers.py` writes it as its own config
(supervisord's `[program:x]`, circus' `[watcher:x]`, procorch's `[services.x]`), so every
peer runs exactly the same processes with the same environment.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Program:
    """One supervised program: its argv, how many copies, and what they are given.

    `listen` is a TCP port on 127.0.0.1 for the copies to serve together. How a program
    gets it is each supervisor's own way, and the program (bench/supervisors/httpserve.py) takes all
    three: procorch binds it and hands it over as fd 3 (LISTEN_FDS); circus binds it and
    passes `--fd N`; supervisord holds no sockets for its programs, so each copy gets
    `--port P` and binds the port itself with SO_REUSEPORT.
    """

    name: str
    argv: tuple[str, ...]
    replicas: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    listen: int | None = None
    health_tcp: int | None = None  # procorch only: a `[services.X.health] tcp` check
