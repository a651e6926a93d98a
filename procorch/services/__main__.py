"""Entry point of a Python service replica: `python -m procorch.services`.

The supervisor sets PROCORCH_MODULE ("pkg.mod:Class") and the context variables;
this imports the class, which must subclass `Service`, and serves it.
"""

from __future__ import annotations

import importlib
import os
import sys

from procorch.services.base import Service, ServiceContext


def load_class(spec: str) -> type[Service]:
    module_name, _, attr = spec.partition(":")
    cls = getattr(importlib.import_module(module_name), attr)
    if not (isinstance(cls, type) and issubclass(cls, Service)):
        raise TypeError(f"{spec} is not a procorch Service subclass")
    return cls


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
    cls = load_class(spec)
    cls(ServiceContext.from_environ()).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
