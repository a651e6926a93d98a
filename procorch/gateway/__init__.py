"""The HTTP gateway: the services and the job queue over HTTP, as JSON.

`create_app(config)` (app.py) builds the Flask app; `service.Gateway` serves it on
waitress as the supervised service `Gateway`, on the listening socket the daemon
binds for it. The endpoints live by resource: `system` (/, /health, /services),
`records` (users, orders, notifications), `jobs`, `metrics` and `openapi`.

`create_app` is imported on first use: the CLI imports `procorch.gateway.token`, and
loading this package must not load Flask for it.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from procorch.gateway.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
