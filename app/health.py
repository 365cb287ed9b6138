"""Unauthenticated routes for load balancers and monitoring."""

import math
from collections.abc import Iterator

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, select, text

from app.observability import batcher_stats
from core.broker import broker_problem
from core.db.tables import Job
from core.lifecycle import JobStatus

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
async def healthz() -> dict[str, str]:
    # On the event loop, not the threadpool: liveness must not fail while the pool is busy.
    return {"status": "ok"}


@router.get("/readyz", summary="Database, broker and artifact store reachable (503 otherwise)",
            responses={503: {"description": "the database, the broker or the artifact store "
                             "is unreachable (or the store not writable); `reasons` says why"}})
def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    problems = {"database": None if _database_ok(request) else "the database is unreachable",
                "broker": broker_problem(state.sender),
                "store": state.store.check_writable()}
    ready = not any(problems.values())
    body: dict[str, object] = {
        "status": "ready" if ready else "unavailable",
        "checks": {name: "unreachable" if why else "ok" for name, why in problems.items()}}
    if not ready:  # e.g. "cannot load the broker's transport for redis://...: No module ..."
        body["reasons"] = {name: why for name, why in problems.items() if why}
    return JSONResponse(body, status_code=200 if ready else 503)


def _database_ok(request: Request) -> bool:
    try:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


class _ServiceCollector:
    """Read at each scrape from the database and app.state: nothing to keep in step."""

    def __init__(self, request: Request) -> None:
        self.state = request.app.state

    def collect(self) -> Iterator[Metric]:
        yield from self._jobs()
        cache = self.state.model_cache
        yield CounterMetricFamily("trainserve_model_cache_loads", "Models loaded",
                                  value=cache.loads)
        yield CounterMetricFamily("trainserve_model_cache_hits", "Model cache hits",
                                  value=cache.hits)
        yield CounterMetricFamily("trainserve_model_cache_evictions",
                                  "Models dropped from the cache to make room",
                                  value=cache.evictions)
        yield CounterMetricFamily("trainserve_model_load_seconds",
                                  "Time spent loading models", value=cache.load_seconds)
        stats = batcher_stats(self.state)
        if stats is not None:
            batches, requests = stats
            yield CounterMetricFamily("trainserve_prediction_batches",
                                      "Forward passes run for predictions", value=batches)
            yield CounterMetricFamily("trainserve_prediction_batched_requests",
                                      "Prediction requests answered by those passes",
                                      value=requests)
            yield GaugeMetricFamily("trainserve_prediction_batch_size_mean",
                                    "Mean requests per forward pass since the API started",
                                    value=requests / batches if batches else 0.0)

    def _jobs(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("trainserve_jobs", "Jobs by status", labels=["status"])
        depth = GaugeMetricFamily("trainserve_queue_depth", "Jobs queued, not yet taken",
                                  labels=["queue"])
        speed = GaugeMetricFamily("trainserve_training_examples_per_second",
                                  "The latest epoch's training speed of each running job",
                                  labels=["job"])
        total = GaugeMetricFamily("trainserve_training_examples_per_second_total",
                                  "Training speed summed over running jobs")
        try:
            with self.state.sessions() as session:
                counts = dict(session.execute(
                    select(Job.status, func.count()).group_by(Job.status)).tuples().all())
                queued = dict(session.execute(
                    select(Job.queue, func.count()).where(Job.status == JobStatus.QUEUED)
                    .group_by(Job.queue)).tuples().all())
                running = session.execute(select(Job.id, Job.latest_metrics)
                                          .where(Job.status == JobStatus.RUNNING)
                                          ).tuples().all()
        except Exception:
            return  # a metrics scrape must not fail because the database is restarting
        # Every status and queue, zero included: a series that vanishes at zero breaks
        # rate() and alerts on it.
        for status in JobStatus:
            jobs.add_metric([status], counts.get(status, 0))
        for queue in sorted({"cpu", "gpu", *queued}):
            depth.add_metric([queue], queued.get(queue, 0))
        summed = 0.0
        for job_id, latest in running:
            value = (latest or {}).get("examples_per_s")
            if isinstance(value, int | float) and math.isfinite(value):
                speed.add_metric([job_id], value)
                summed += value
        total.add_metric([], summed)
        yield from (jobs, depth, speed, total)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    # A registry per scrape, without auto_describe, so each collector is read once.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ServiceCollector(request))  # type: ignore[arg-type]
    for name in ("http_metrics", "version_metrics"):
        collector = getattr(request.app.state, name, None)
        if collector is not None:
            registry.register(collector)
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
