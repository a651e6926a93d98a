"""Where a stack lives: its config file's default name, its run directory, its control socket.

The bottom of the package: the standard library only, so the CLI's hot path
(`status`, `down`) can find a running daemon without loading and validating the whole
config, and `config` states the same rule by importing it from here.
"""

from __future__ import annotations

import os
from pathlib import Path

CONFIG_FILENAME = "procorch.toml"
DEFAULT_RUN_DIRNAME = ".procorch"
SOCKET_NAME = "control.sock"  # in the run directory


def default_config() -> Path | None:
    """The config file a command uses when none is named: `procorch.toml` here, if any."""
    return Path(CONFIG_FILENAME) if Path(CONFIG_FILENAME).exists() else None


def config_base(path: Path | None) -> Path:
    """The folder the config's relative paths start from: the file's (absolute, not
    symlink-resolved: where the user sees it), or here when there is no file."""
    return Path(os.path.abspath(path)).parent if path is not None else Path.cwd()


def run_dir(cli: Path | None, configured: str | None, base: Path) -> Path:
    """The run directory: --run-dir (relative to here), else the file's `run_dir` (relative
    to the file), else `.procorch` beside the file."""
    if cli is not None:
        chosen = Path(cli).expanduser()
    elif configured is not None:
        chosen = base / Path(configured).expanduser()
    else:
        chosen = base / DEFAULT_RUN_DIRNAME
    return chosen.resolve()
