"""The gateway's automatic token: `[gateway] token = "auto"` (or `procorch up --token`).

The gateway makes a random token the first time it starts and keeps it in the run
directory as `gateway.token`, readable by its owner only (0600); later starts, restarts
and the other gateway processes read the same file, so a script holding the token keeps
working until the file is deleted. `procorch gateway-token` prints it. The token itself
goes nowhere else: not in the config the daemon shows, nor in status, events or logs.

Light on purpose (no Flask): the CLI imports it.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from procorch.config import AUTO_TOKEN, GatewaySettings

FILENAME = "gateway.token"


def path(run_dir: Path) -> Path:
    return Path(run_dir) / FILENAME


def resolve(settings: GatewaySettings, run_dir: Path) -> str | None:
    """The token requests must carry: the configured one, the automatic one (made now if
    there is none yet), or None for none."""
    if settings.token == AUTO_TOKEN:
        return load_or_create(run_dir)
    return settings.token


def read(run_dir: Path) -> str | None:
    """The automatic token, if one was made; OSError (not permitted, say) passes."""
    try:
        return path(run_dir).read_text().strip() or None
    except FileNotFoundError:
        return None


def load_or_create(run_dir: Path) -> str:
    """The token in `gateway.token`, or a new one written there (0600) if there is none.

    Several gateway processes may start at once: each writes its candidate to a file of
    its own and links it into place, which succeeds for one only (link never replaces);
    the others read the winner's, complete since it was written before being linked."""
    existing = read(run_dir)
    if existing:
        return existing
    target = path(run_dir)
    candidate = target.with_name(f".{FILENAME}.{os.getpid()}")
    token = secrets.token_urlsafe(32)  # 43 characters, all fit for a header
    fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, (token + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(candidate, target)
    except FileExistsError:
        token = target.read_text().strip()
    finally:
        candidate.unlink()
    return token
