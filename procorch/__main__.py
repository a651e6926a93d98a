"""The `procorch` command's entry point (also `python -m procorch`).

A CLI run lives a tenth of a second, so two things that cost time buy nothing:
the cyclic garbage collector, which runs again and again while ~300 modules are
imported (~7 ms), and the interpreter's teardown of those modules at exit
(~18 ms). The collector is off from before the first import, and the process
ends with os._exit once its output is flushed. `up --foreground` turns the
collector back on, since there this process becomes the long-running daemon.
"""

import gc
import os
import sys


def main() -> None:
    gc.disable()
    from procorch.cli import app

    try:
        app()
        code: object = 0
    except SystemExit as exc:  # how click ends every command; other errors surface as usual
        code = exc.code
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # `procorch status | head -1`, or closed
            pass
    os._exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
