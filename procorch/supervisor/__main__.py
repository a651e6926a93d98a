"""Entry point of the detached daemon: `python -m procorch.supervisor --run-dir DIR [--config F]`.

`procorch up` starts this in a new session with stdout on a pipe. The daemon
writes one line there, "ok" once its control socket listens or "error: ..." if
it cannot start, then points stdout and stderr at daemon.log for good.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from procorch.config import ConfigError, load_config
from procorch.supervisor.daemon import serve


def _report(message: str, log_path: Path | None) -> None:
    os.write(1, (message + "\n").encode())
    if log_path is not None:
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="procorch-daemon")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--run-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        config = load_config(args.config, run_dir=args.run_dir)
    except ConfigError as exc:
        _report(f"error: {exc}", None)
        return 2
    log_path = config.settings.run_dir / "daemon.log"

    def ready(error: str | None) -> None:
        _report(f"error: {error}" if error else "ok", None if error else log_path)
        logging.basicConfig(
            level=config.settings.log_level,
            format="%(asctime)s %(levelname)s %(message)s",
            stream=sys.stderr,
        )

    try:
        return serve(config, ready=ready)
    except OSError as exc:
        _report(f"error: {exc}", None)
        return 1


if __name__ == "__main__":
    sys.exit(main())
