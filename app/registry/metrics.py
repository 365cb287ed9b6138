"""Requests and latency per registered version, for /metrics: a canary's share and each
version's speed, read by name and version (requests by bare model id are not counted here;
the HTTP metrics count every request)."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.metrics_core import Metric

from app.registry.resolve import Target

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class VersionMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "trainserve_model_version_requests", "Requests served by a registered version",
            ["name", "version", "route", "outcome"], registry=self.registry)
        self.latency = Histogram(
            "trainserve_model_version_request_duration_seconds",
            "Time to answer a request served by a registered version",
            ["name", "version", "route"], buckets=_BUCKETS, registry=self.registry)

    @contextmanager
    def track(self, target: Target, route: str) -> Iterator[None]:
        """Count and time the block as one request of `target`'s version (`outcome`: ok,
        or error when it raised)."""
        if target.version is None:
            yield
            return
        labels = (target.name or "", str(target.version), route)
        started = time.perf_counter()
        outcome = "error"
        try:
            yield
            outcome = "ok"
        finally:
            self.requests.labels(*labels, outcome).inc()
            self.latency.labels(*labels).observe(time.perf_counter() - started)

    def collect(self) -> Iterator[Metric]:
        yield from self.registry.collect()
