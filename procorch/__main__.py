"""The `procorch` command's entry point (also `python -m procorch`).

A CLI run lives a tenth of a second, so two things that cost time buy nothing:
the cyclic garbage collector, which runs again and again while ~300 modules are
imported (~7 ms), and the interpreter's teardown of those modules at exit
(~18 ms). The collector is off from before the first import, and the process
ends with os._exit once its output is flushed. `up --foreground` turns the collector
back on, since there this process becomes the long-running daemon. `status` and `down`,
the commands run most, are answered without importing Typer or Rich at all
(`procorch.cli.fast`).
"""

import gc
import os
import sys


def main() -> None:
    gc.disable()
    from procorch.cli import fast

    try:
        code: object = fast.run(sys.argv[1:])
        if code is None:  # not a run the fast path answers: Typer does
            code = _app()
    except BrokenPipeError:  # `procorch status | head -1`: the reader left, as Rich handles it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 1
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # `procorch status | head -1`, or closed
            pass
    os._exit(code if isinstance(code, int) else 0)


def _app() -> object:
    from procorch.cli.app import app

    try:
        app()
        return 0
    except SystemExit as exc:  # how click ends every command; other errors surface as usual
        return exc.code


if __name__ == "__main__":
    main()
