"""Talking to services: `call` sends one request, `services` shows the registry, and
`gateway-token` prints the token the HTTP gateway wants."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, NoReturn

import typer

from procorch.cli import complete
from procorch.cli.common import (
    EXIT_CONFIG,
    ConfigOpt,
    JsonOpt,
    RunDirOpt,
    ask,
    fail,
    load,
    request,
)
from procorch.config import AUTO_TOKEN


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
    for "not given", so `"quantity": 1e400` would order 1). Refused here, with one line.
    So is an integer a double cannot hold: the services read JSON with orjson, which
    takes an integer past 64 bits as a double and cannot read the frame at all past
    that (the call then failed as "reply to another request"); and int() refuses one
    of over 4,300 digits with a message about sys.set_int_max_str_digits."""
    if data is None:
        return {}
    try:
        payload = json.loads(
            data, parse_constant=_not_a_number, parse_float=_finite, parse_int=_carried
        )
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
        raise _NotFinite(f"the data has a number too large for a double: {_shown(text)}")
    return value


def _carried(text: str) -> int:
    """An integer the services can read: float() has no digit limit, and says whether."""
    if not math.isfinite(float(text)):
        digits = len(text.lstrip("-"))
        shown = text if len(text) <= 20 else f"{text[:20]}… ({digits} digits)"
        raise _NotFinite(f"the data has an integer too large for a double: {shown}")
    return int(text)


def _shown(text: str) -> str:
    """A number as a one-line message shows it: it may have thousands of digits."""
    return text if len(text) <= 20 else f"{text[:20]}… ({len(text)} characters)"


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


def gateway_token(config: ConfigOpt = None, run_dir: RunDirOpt = None) -> None:
    """Print the gateway's token, for `Authorization: Bearer ...` (readable by its owner only)."""
    from procorch.gateway import token as auto_token

    cfg = load(config, run_dir)
    setting = cfg.gateway.token if cfg.gateway.enabled else None
    # the running gateway's setting, which `up --token` may have given it; else the file's
    running = ask(cfg.settings.run_dir, {"cmd": "config"})
    if running is not None:
        gateway = running["config"]["gateway"]
        setting = gateway["token"] if gateway["enabled"] else None
    if setting is None:
        fail(
            "the gateway has no token: it takes requests from any local user "
            "(`procorch up --gateway --token` makes one)"
        )
    if setting != AUTO_TOKEN:
        typer.echo(setting)  # the config's own: whoever reads it has it anyway
        return
    where = auto_token.path(cfg.settings.run_dir)
    try:
        value = auto_token.read(cfg.settings.run_dir)
    except OSError as exc:
        fail(f"cannot read {where}: {exc.strerror or exc}")
    if value is None:
        fail(f"no token in {where} yet: the gateway makes it when it starts")
    typer.echo(value)


def dashboard(
    config: ConfigOpt = None,
    run_dir: RunDirOpt = None,
    no_open: Annotated[
        bool, typer.Option("--no-open", help="Print the address only; open no browser.")
    ] = False,
) -> None:
    """Print the web dashboard's address, and open it where there is a browser. The
    address carries the gateway's token once: the page trades it for a session cookie."""
    from procorch.gateway import token as auto_token

    cfg = load(config, run_dir)
    running = ask(cfg.settings.run_dir, {"cmd": "config"})
    if running is None:
        fail("procorch is not running here: `procorch up --gateway` starts it with the dashboard")
    gateway = running["config"]["gateway"]
    if not gateway["enabled"]:
        fail("the gateway is not running: `procorch up --gateway` (or [gateway] enabled = true)")
    token = gateway["token"]
    if token is None or token == AUTO_TOKEN:  # the dashboard always wants one: the file's
        try:
            token = auto_token.load_or_create(cfg.settings.run_dir)
        except OSError as exc:
            fail(f"cannot read the gateway's token: {exc.strerror or exc}")
    url = f"{_base_url(gateway['host'], gateway['port'])}/ui?token={token}"
    typer.echo(url)
    if not no_open and _has_browser():
        import webbrowser

        webbrowser.open(url)


def _base_url(host: str, port: int) -> str:
    """Where a browser on this machine reaches a gateway listening on `host`."""
    if host in ("0.0.0.0", "::", ""):  # every address: loopback is one of them
        host = "127.0.0.1"
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


def _has_browser() -> bool:
    """Whether a graphical browser can open: a desktop session (or macOS). A terminal
    browser would take over the terminal the address was printed on."""
    import os
    import sys

    return sys.platform == "darwin" or bool(
        os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    )


def register(app: typer.Typer) -> None:
    app.command()(call)
    app.command()(services)
    app.command("gateway-token")(gateway_token)
    app.command()(dashboard)
