"""GET /metrics: the Prometheus text format, through the official client library.

Nothing is counted on the request path: a custom collector reads, at scrape time,
what the system already keeps (the registry snapshot and the shared statistics for
the services; the job store's counts and duration histogram for the jobs), so a
scrape always reports the whole system, not just what this gateway process saw.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from flask import Blueprint, Response
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from procorch.gateway.backend import Backend
from procorch.gateway.system import backend
from procorch.supervisor.state import ProcessState

log = logging.getLogger("procorch.gateway")
bp = Blueprint("metrics", __name__)
LABELS = ["service", "replica"]


@bp.get("/metrics")
def metrics() -> ResponseReturnValue:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SystemCollector(backend()))
    return Response(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)


class SystemCollector(Collector):
    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def collect(self) -> Iterator[Metric]:
        yield from self._services()
        yield from self._jobs()

    def _services(self) -> Iterator[Metric]:
        state = GaugeMetricFamily(
            "procorch_process_state",
            "1 for the state each replica is in, 0 for the others",
            labels=[*LABELS, "state"],
        )
        restarts = CounterMetricFamily(
            "procorch_process_restarts", "Restarts since the daemon started", labels=LABELS
        )
        requests = CounterMetricFamily(
            "procorch_service_requests", "Requests handled by the current process", labels=LABELS
        )
        errors = CounterMetricFamily(
            "procorch_service_errors", "Requests answered with an error", labels=LABELS
        )
        heartbeat = GaugeMetricFamily(
            "procorch_heartbeat_age_seconds",
            "Seconds since the replica's last heartbeat",
            labels=LABELS,
        )
        for name, replicas in self.backend.services().items():
            for r in replicas:
                labels = [name, str(r.endpoint.replica)]
                for s in ProcessState:
                    state.add_metric([*labels, s.value], float(r.endpoint.state == s.value))
                restarts.add_metric(labels, r.endpoint.restarts)
                if r.stats is not None:
                    requests.add_metric(labels, r.stats.requests)
                    errors.add_metric(labels, r.stats.errors)
                if r.heartbeat_age is not None:
                    heartbeat.add_metric(labels, r.heartbeat_age)
        yield from (state, restarts, requests, errors, heartbeat)

    def _jobs(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("procorch_job_store_up", "Whether the job store answered")
        try:
            stats = self.backend.jobs.stats()
        except Exception as exc:  # a down Redis must not take the services' metrics with it
            log.warning("metrics: the job store did not answer: %s", exc)
            up.add_metric([], 0.0)
            yield up
            return
        up.add_metric([], 1.0)
        yield up
        jobs = GaugeMetricFamily("procorch_jobs", "Jobs by status", labels=["status"])
        for status, count in stats["counts"].items():
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(
            "procorch_job_queue_depth",
            "Jobs waiting for a worker (pending)",
            value=stats["counts"].get("pending", 0),
        )
        durations = stats["durations"]
        yield HistogramMetricFamily(
            "procorch_job_duration_seconds",
            "How long finished jobs ran, from start to done or failed",
            buckets=[(str(bound), count) for bound, count in durations["buckets"]],
            sum_value=durations["sum"],
        )
