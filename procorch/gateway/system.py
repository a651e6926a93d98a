"""The gateway itself and the services' state: GET /, /health, /services, /services/NAME/health."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app
from flask.typing import ResponseReturnValue

from procorch import __version__
from procorch.gateway.backend import Backend, ReplicaView, health, summary
from procorch.gateway.http import respond

bp = Blueprint("system", __name__)

TITLE = "Process-Based Service Orchestration API"  # the original's name for its API
ENDPOINTS = {
    "users": "/users",
    "orders": "/orders",
    "notifications": "/notifications",
    "services": "/services",
    "health": "/health",
    "jobs": "/list-all",
}


def backend() -> Backend:
    return current_app.extensions["procorch"]


@bp.get("/")
def index() -> ResponseReturnValue:
    return respond(
        {
            "message": TITLE,
            "version": __version__,
            "endpoints": ENDPOINTS,
            "docs": "/openapi.json",
        }
    )


@bp.get("/health")
def gateway_health() -> ResponseReturnValue:
    """The gateway answers, so it is healthy; each service's state and health come along."""
    b = backend()
    services = {
        name: {"status": summary(replicas), "health": health(name, replicas, b)}
        for name, replicas in b.services().items()
    }
    return respond(
        {
            "status": "healthy",
            "message": "Gateway is running",
            "version": __version__,
            "services": services,
        }
    )


@bp.get("/services")
def list_services() -> ResponseReturnValue:
    services = {name: _service(replicas) for name, replicas in backend().services().items()}
    return respond({"status": "success", "services": services, "count": len(services)})


@bp.get("/services/<name>/health")
def service_health(name: str) -> ResponseReturnValue:
    b = backend()
    name, replicas = b.service(name)
    return respond(
        {
            "status": "success",
            "service": name,
            "health": health(name, replicas, b),
            "stats": _stats(replicas),
        }
    )


def _service(replicas: list[ReplicaView]) -> dict[str, Any]:
    """A service as the original showed it (pid, status, stats), with every replica."""
    first = replicas[0].public()
    return {
        "pid": first["pid"],
        "status": summary(replicas),
        "registered_at": first["registered_at"],
        "stats": _stats(replicas),
        "replicas": [r.public() for r in replicas],
    }


def _stats(replicas: list[ReplicaView]) -> dict[str, Any]:
    """Counters summed over the replicas; the freshest heartbeat's age in seconds."""
    ages = [r.heartbeat_age for r in replicas if r.heartbeat_age is not None]
    return {
        "requests": sum(r.stats.requests for r in replicas if r.stats),
        "errors": sum(r.stats.errors for r in replicas if r.stats),
        "started_at": replicas[0].endpoint.registered_at,
        "last_heartbeat": min(ages) if ages else None,
    }
