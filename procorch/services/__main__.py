"""Entry point of a Python service replica: `python -m procorch.services`.

The supervisor sets PROCORCH_MODULE ("pkg.mod:Class") and the context variables;
this configures logging, imports the class, which must subclass `Service`, and serves
it. If the replica dies of an exception (on import, in `setup`, anywhere), its last
line goes to the exit note the supervisor reports as the reason (`procorch status`).
"""

from __future__ import annotations

import importlib
import logging
import os
import sys

from procorch.config import exit_note
from procorch.services.base import Service, ServiceContext, exception_line

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def load_class(spec: str) -> type[Service]:
    module_name, _, attr = spec.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise TypeError(f"{spec} is not a procorch Service subclass")
    return cls


def configure_logging(level: str) -> None:
    """`logging` calls in the service reach its log: stderr, which the supervisor captures.

    Without this, Python's last-resort handler shows WARNING and above only, and bare.
    """
    logging.basicConfig(level=level, format=LOG_FORMAT, stream=sys.stderr)


def write_exit_note(context: ServiceContext, reason: str) -> None:
    try:
        exit_note(context.run_dir, context.name, context.replica).write_text(reason + "\n")
    except OSError:
        pass  # no run directory (run by hand): the traceback in the output is all there is


def main() -> int:
    spec = os.environ.get("PROCORCH_MODULE")
    if not spec:
        print(
            "procorch: PROCORCH_MODULE is not set; services are started by the supervisor",
            file=sys.stderr,
        )
        return 2
    supervisor = os.environ.get("PROCORCH_SUPERVISOR_PID")
    if supervisor:
        from procorch.supervisor.lifeline import die_with_parent

        die_with_parent(int(supervisor))
    configure_logging(os.environ.get("PROCORCH_LOG_LEVEL", "INFO"))
    context = ServiceContext.from_environ()
    try:
        load_class(spec)(context).serve()
    except SystemExit as exc:
        if isinstance(exc.code, str):  # raise SystemExit("why"): the message is the reason
            write_exit_note(context, exc.code)
        raise
    except Exception as exc:
        write_exit_note(context, exception_line(exc))
        raise  # Python prints the traceback to the log and exits with status 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
