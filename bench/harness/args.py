"""What every benchmark script's command line shares: `--quick`, `--peers`, `--no-write`
(and `--keep-tmp` where there is a directory worth keeping), the check of the peer names,
and SIGTERM turned into KeyboardInterrupt so a killed run still cleans up. Standard
library only: it runs before the bench venv exists."""

from __future__ import annotations

import argparse
import signal
from collections.abc import Callable, Sequence
from types import FrameType


def parse(
    doc: str,
    argv: list[str],
    *,
    quick: str,
    peers: Sequence[str],
    optional_peers: str = "",
    keep_tmp: bool = True,
    extra: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The arguments; `quick` says what --quick does, `peers` are the default peers,
    `extra` adds a script's own options."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help=f"smoke run: {quick}")
    listed = ",".join(peers)
    parser.add_argument(
        "--peers",
        default=listed,
        help=f"comma-separated subset of {listed} (default: all){optional_peers}",
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the results, leave RESULTS.md alone"
    )
    if keep_tmp:
        parser.add_argument(
            "--keep-tmp", action="store_true", help="keep the temporary directory (configs, logs)"
        )
    if extra is not None:
        extra(parser)
    return parser.parse_args(argv)


def wanted_peers(args: argparse.Namespace, known: Sequence[str]) -> list[str]:
    """The peer names asked for, in the order asked; SystemExit naming any unknown one."""
    wanted = args.peers.split(",")
    unknown = set(wanted) - set(known)
    if unknown:
        raise SystemExit(f"unknown peer(s): {', '.join(sorted(unknown))}")
    return wanted


def interrupt_on_sigterm() -> None:
    """SIGTERM (and SIGINT, even if the run started ignoring it) raise KeyboardInterrupt."""
    signal.signal(signal.SIGTERM, _raise_interrupt)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")
