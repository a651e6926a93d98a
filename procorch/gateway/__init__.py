"""The HTTP gateway: the services and the job queue over HTTP, as JSON.

`create_app(config)` (app.py) builds the Flask app; `service.Gateway` serves it on
waitress as the supervised service `Gateway`, on the listening socket the daemon
binds for it. The endpoints live by resource: `system` (/, /health, /services),
`records` (users, orders, notifications), `jobs`, `metrics` and `openapi`.
"""

from procorch.gateway.app import create_app

__all__ = ["create_app"]
