"""The Gateway service: the HTTP gateway as a supervised process, like any other service.

The daemon binds the port and hands the listening socket down (see
`procorch.supervisor.sockets`); this process serves the Flask app on it with waitress
in a thread, while the main loop heartbeats. On SIGTERM it stops accepting, answers
the requests its open connections were sent, closes them (up to STOP_GRACE seconds),
and exits: the connections it did not accept wait in the daemon's socket for the next.
"""

from __future__ import annotations

import logging
import os
import threading

from procorch.services.base import Service

STOP_GRACE = 5.0


class Gateway(Service):
    tick_interval = 1.0  # how often the main loop checks that the server thread lives

    def setup(self) -> None:
        from procorch.gateway.app import create_app
        from procorch.gateway.server import counted, make_server
        from procorch.supervisor.sockets import bind_tcp, inherited_socket

        # waitress warns "Task queue depth is N" whenever a request waits for a thread:
        # under load that is a line per request, in the log and in the latency.
        logging.getLogger("waitress.queue").setLevel(logging.ERROR)
        settings = self.context.config.gateway
        # before waitress starts its threads, which inherit it
        cpu = pin_to_one_cpu(self.context.replica) if settings.pin_cpu else None
        # Outside a daemon (no inherited socket), bind the port here.
        sock = inherited_socket() or bind_tcp(settings.host, settings.port)
        app = create_app(self.context.config)
        self.server = make_server(counted(app, self.count_request), sock, settings)
        self.thread = threading.Thread(target=self.server.run, name="waitress", daemon=True)
        self.thread.start()
        host, port = sock.getsockname()[:2]
        log = logging.getLogger("procorch.gateway")
        log.info("serving on http://%s:%s%s", host, port, "" if cpu is None else f" on CPU {cpu}")
        if settings.token is None and not settings.is_loopback:
            log.warning("listening on %s without a token: anyone who reaches it can use it", host)

    def tick(self) -> None:
        if not self.thread.is_alive():  # the server loop died: let the supervisor restart us
            raise SystemExit("procorch: the gateway's server loop stopped")

    def teardown(self) -> None:
        # Stop accepting, answer what the open connections were sent, then close them:
        # the connections not accepted yet wait for the next gateway process.
        self.server.stop(STOP_GRACE)


def pin_to_one_cpu(replica: int) -> int | None:
    """Keep this process (and the threads it starts from now on) on one CPU; which one.

    The gateway is a Python process with many threads taking turns on one GIL: it never
    uses much more than a core, and each handoff of the GIL to a thread sleeping on
    another core costs a cross-core wake-up (~60 µs on this project's 2-core VM). On one
    core the handoffs are plain context switches: measured 1.7 to 2.2 times the requests/s
    (bench/gateway.py). Replicas take CPUs from the last one down, away from CPU 0, where
    interrupts tend to land."""
    try:
        allowed = sorted(os.sched_getaffinity(0))
        cpu = allowed[-1 - replica % len(allowed)]
        os.sched_setaffinity(0, {cpu})
    except (AttributeError, OSError):  # not Linux, or not permitted: run unpinned
        return None
    return cpu
