"""Entry point of the detached daemon: `python -m procorch.supervisor < config.json`.

`procorch up` validates the config, starts this in a new session and writes the
resolved config to its stdin as JSON (`Config.to_json`), so the daemon runs exactly
what the CLI checked and needs no TOML parsing. The daemon answers with one line on
stdout, "ok" once its control socket listens or "error: ..." if it cannot start,
then points stdout and stderr at daemon.log for good.
"""

from __future__ import annotations

import os
import sys

from procorch.config import Config
from procorch.supervisor.daemon import serve
from procorch.supervisor.diskfull import why


def _report(message: str, log_path: str | None) -> None:
    os.write(1, (message + "\n").encode())
    if log_path is not None:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def main() -> int:
    try:
        config = Config.from_json(sys.stdin.read())
    except (ValueError, KeyError, TypeError) as exc:
        _report(f"error: unreadable config on stdin ({exc})", None)
        return 2
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    log_path = str(config.settings.run_dir / "daemon.log")

    def ready(error: str | None) -> None:
        _report(f"error: {error}" if error else "ok", None if error else log_path)

    try:
        return serve(config, ready=ready, log_fd=2)  # fd 2 is daemon.log once ready
    except OSError as exc:  # e.g. no room for the pid file: "...: disk full"
        _report(f"error: {config.settings.run_dir}: {why(exc)}", None)
        return 1


if __name__ == "__main__":
    sys.exit(main())
