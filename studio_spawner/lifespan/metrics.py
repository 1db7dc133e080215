"""Prometheus metrics of the lifespan service (in their own registry)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.stopped = Counter("lifespan_studios_stopped", "Studios stopped at their deadline.",
                               registry=r)
        self.overdue = Gauge("lifespan_studios_overdue",
                             "Studios past their deadline in the last sweep.", registry=r)
        self.running = Gauge("lifespan_studios_running",
                             "Running studios seen in the last sweep.", registry=r)
        self.warning = Gauge("lifespan_studios_warning",
                             "Studios within the warning period in the last sweep.", registry=r)
        self.sweep_duration = Histogram("lifespan_sweep_duration_seconds",
                                        "Time taken by one sweep.", registry=r)
        self.errors = Counter("lifespan_errors", "Errors, by kind.", ["kind"], registry=r)
        self.retries = Counter("lifespan_hub_api_retries", "Hub API requests retried.",
                               ["method"], registry=r)
        self.extensions = Counter("lifespan_extensions", "Extensions granted.", registry=r)
