"""A procorch stack started and stopped with its CLI (`procorch up`, `procorch down`), as
the services and gateway areas start theirs: the part both share, so neither imports the
other. Subclasses write `self.conf` and call `_cli("up")` in their `start`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any


class ProcorchStack:
    cli = ""  # set by the harness: bench/.venv/bin/procorch
    keep_tmp = False  # leave the config, run directory and logs behind (--keep-tmp)
    tmp = ""
    run_dir = ""
    conf = ""

    def available(self) -> str | None:
        if not self.cli or not Path(self.cli).exists():
            return f"not available (no procorch CLI at {self.cli or '?'})"
        return None

    def server_pids(self) -> list[int]:
        return [proc.pid for proc in process_tree(Path(self.run_dir) / "procorch.pid")]

    def _cli(self, *args: str, timeout: float) -> None:
        done = subprocess.run(
            [self.cli, *args, "-c", self.conf, "--run-dir", self.run_dir],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(
                f"procorch {args[0]} exited {done.returncode}: "
                f"{(done.stderr or done.stdout).strip()[-500:]}"
            )

    def stop(self) -> None:
        if not getattr(self, "tmp", None):
            return
        tree = process_tree(Path(self.run_dir) / "procorch.pid")
        try:
            self._cli("down", timeout=60)
        except (RuntimeError, subprocess.SubprocessError, OSError):
            pass
        for proc in tree:  # anything `down` left behind (or all of it, if down failed)
            try:
                if proc.is_running():  # the same process, not a reused pid
                    proc.kill()
            except Exception:  # psutil.Error: gone, or not ours
                pass
        if not self.keep_tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)
        self.tmp = ""


def process_tree(pid_file: Path) -> list[Any]:
    """The daemon named in `pid_file` and its descendants, as psutil.Process objects
    (psutil is in bench/.venv); none if there is no daemon (yet)."""
    try:
        import psutil

        daemon = psutil.Process(int(pid_file.read_text().split()[0]))
        return [daemon, *daemon.children(recursive=True)]
    except Exception:  # no pid file, a bad one, a daemon gone, or no psutil
        return []
