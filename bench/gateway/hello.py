"""The floor of the gateway benchmark: a Flask "hello" on waitress, nothing else.

    python bench/gateway/hello.py PORT     # started and stopped by bench/gateway/runner.py

It owns the waitress settings the procorch gateway serves with (`WAITRESS`), so the only
difference between this server and the gateway is the gateway's own work per request.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from flask import Flask
from waitress import serve

from procorch.gateway.service import pin_to_one_cpu

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: this file runs by path
from harness.child import die_with_parent  # noqa: E402

# The procorch gateway's waitress settings (procorch/gateway/server.py, make_server, with
# [gateway]'s defaults, and service.py's quiet queue log and CPU pinning); update them when
# those change.
THREADS = 8  # also wrk's connection count: one request in flight per waitress thread
WAITRESS: dict[str, object] = {
    "threads": THREADS,
    "max_request_body_size": 1024 * 1024 + 1,
    "connection_limit": 1000,
    "asyncore_use_poll": True,
    "ident": "procorch",
    "clear_untrusted_proxy_headers": True,
}
HOST = "127.0.0.1"

app = Flask(__name__)


@app.get("/")
def hello() -> dict[str, str]:
    return {"hello": "world"}  # JSON like every gateway answer, so the encoding counts too


def main(argv: list[str]) -> None:
    die_with_parent()
    # As the gateway: no "Task queue depth" warning per request that waits for a thread.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    pin_to_one_cpu(0)  # as the gateway's first process ([gateway] pin_cpu, on by default)
    serve(app, host=HOST, port=int(argv[0]), **WAITRESS)


if __name__ == "__main__":
    main(sys.argv[1:])
