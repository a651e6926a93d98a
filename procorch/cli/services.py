"""Talking to services: `call` sends one request, `services` shows the registry."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from procorch.cli import complete
from procorch.cli.common import EXIT_CONFIG, ConfigOpt, JsonOpt, RunDirOpt, fail, load, request


def call(
    service: Annotated[
        str,
        typer.Argument(help="The service, e.g. UserService.", autocompletion=complete.SERVICES),
    ],
    action: Annotated[str, typer.Argument(help="The action, e.g. create_user.")],
    data: Annotated[
        str | None, typer.Argument(help="The request data: a JSON object [default: {}].")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", "-t", min=0.001, help="Seconds to wait for the reply.")
    ] = 5.0,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a request to a service and print its reply (exit 1 on an error reply)."""
    try:
        payload = json.loads(data) if data is not None else {}
    except ValueError as exc:
        fail(f"the data is not JSON: {exc}", EXIT_CONFIG)
    if not isinstance(payload, dict):
        fail("the data must be a JSON object, like '{\"user_id\": 1}'", EXIT_CONFIG)
    cfg = load(config, run_dir)
    from procorch.services.client import Client
    from procorch.services.protocol import ServiceError

    with Client(cfg.settings.run_dir, sender="cli") as client:
        try:
            result = client.call(service, action, payload, timeout=timeout)
        except ServiceError as exc:
            if as_json:
                typer.echo(
                    json.dumps({"status": "error", "code": exc.code, "message": exc.message})
                )
                raise typer.Exit(1) from None
            fail(f"{service}.{action}: {exc}")
    if as_json:
        typer.echo(json.dumps({"status": "success", "data": result}))
    else:
        from procorch.render import print_json

        print_json(result)


def services(config: ConfigOpt = None, run_dir: RunDirOpt = None, as_json: JsonOpt = False) -> None:
    """List the registry: each service's replicas, their sockets, and their request counts."""
    cfg = load(config, run_dir)
    status = request(cfg, {"cmd": "status", "names": []})
    registry = services_of(status)
    if as_json:
        typer.echo(json.dumps({"services": registry, "count": len(registry)}, indent=2))
    else:
        from procorch.render import print_services

        print_services(registry)


def services_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The daemon's status grouped by service: the registry as `services` shows it."""
    registry: dict[str, dict[str, Any]] = {}
    for p in status["services"]:
        entry = registry.setdefault(
            p["name"],
            {
                "kind": "python" if p["socket"] else "command",
                "requests": 0,
                "errors": 0,
                "replicas": [],
            },
        )
        entry["requests"] += p["requests"]
        entry["errors"] += p["errors"]
        entry["replicas"].append(
            {key: p[key] for key in ("replica", "state", "pid", "socket", "started_at")}
        )
    return registry


def register(app: typer.Typer) -> None:
    app.command()(call)
    app.command()(services)
