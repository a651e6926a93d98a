"""Talking to services: `call` sends one request, `services` shows the registry."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, NoReturn

import typer

from procorch.cli.common import EXIT_CONFIG, ConfigOpt, JsonOpt, RunDirOpt, fail, load, request


def call(
    service: Annotated[str, typer.Argument(help="The service, e.g. UserService.")],
    action: Annotated[str, typer.Argument(help="The action, e.g. create_user.")],
    data: Annotated[
        str | None, typer.Argument(help="The request data: a JSON object [default: {}].")
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", "-t", min=0.001, help="Seconds to wait for the reply.")
    ] = 5.0,
    idempotency_key: Annotated[
        str | None,
        typer.Option(
            "--idempotency-key",
            "-k",
            help="Run the request at most once per key: sent again with the same key (after"
            " a timeout, say), it creates nothing more and prints the first reply.",
        ),
    ] = None,
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a request to a service and print its reply (exit 1 on an error reply)."""
    payload = parse_data(data)
    check_key(idempotency_key)
    cfg = load(config, run_dir)
    from procorch.services.client import Client
    from procorch.services.protocol import ServiceError

    with Client(cfg.settings.run_dir, sender="cli") as client:
        try:
            reply = client.request(
                service, action, payload, timeout=timeout, idempotency_key=idempotency_key
            )
        except ServiceError as exc:
            if as_json:
                error = {"status": "error", "request_id": exc.request_id, "code": exc.code}
                typer.echo(json.dumps(error | {"message": exc.message}))
                raise typer.Exit(1) from None
            fail(f"{service}.{action}: {exc}")
    if as_json:
        success = {"status": "success", "request_id": reply.request_id, "data": reply.data}
        typer.echo(json.dumps(success))
    else:
        from procorch.render import print_json

        print_json(reply.data)


def parse_data(data: str | None) -> dict[str, Any]:
    """The request data given on the command line: a JSON object of finite numbers.

    Python's parser takes NaN and Infinity, and reads 1e400 as infinity; none of them
    is a JSON number, and on the wire they would travel as null (which a service takes
    for "not given", so `"quantity": 1e400` would order 1). Refused here, with one line."""
    if data is None:
        return {}
    try:
        payload = json.loads(data, parse_constant=_not_a_number, parse_float=_finite)
    except _NotFinite as exc:
        fail(str(exc), EXIT_CONFIG)
    except ValueError as exc:
        fail(f"the data is not JSON: {exc}", EXIT_CONFIG)
    if not isinstance(payload, dict):
        fail("the data must be a JSON object, like '{\"user_id\": 1}'", EXIT_CONFIG)
    return payload


def check_key(key: str | None) -> None:
    """A usage error for a key no service would take, before anything is sent."""
    from procorch.services.protocol import key_problem

    if key is not None and (problem := key_problem(key)) is not None:
        fail(f"--idempotency-key {problem}", EXIT_CONFIG)


class _NotFinite(ValueError):
    pass


def _not_a_number(name: str) -> NoReturn:
    raise _NotFinite(f"the data is not JSON: {name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotFinite(f"the data has a number too large for a double: {text}")
    return value


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
