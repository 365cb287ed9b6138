"""Unauthenticated routes for load balancers and monitoring."""

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from sqlalchemy import func, select, text

from app.broker import broker_reachable
from app.db.tables import Job

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="Database and broker reachable (503 otherwise)",
            responses={503: {"description": "the database or the broker is unreachable"}})
def readyz(request: Request) -> JSONResponse:
    state = request.app.state
    checks = {"database": _database_ok(request), "broker": broker_reachable(state.sender)}
    ready = all(checks.values())
    body = {"status": "ready" if ready else "unavailable",
            "checks": {name: "ok" if ok else "unreachable" for name, ok in checks.items()}}
    return JSONResponse(body, status_code=200 if ready else 503)


def _database_ok(request: Request) -> bool:
    try:
        with request.app.state.sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception:
        return False
    return True


class _ServiceCollector:
    def __init__(self, request: Request) -> None:
        self.state = request.app.state

    def collect(self):  # type: ignore[no-untyped-def]
        jobs = GaugeMetricFamily("trainserve_jobs", "Jobs by status", labels=["status"])
        try:
            with self.state.sessions() as session:
                for status, count in session.execute(
                        select(Job.status, func.count()).group_by(Job.status)):
                    jobs.add_metric([status], count)
        except Exception:
            pass  # a metrics scrape must not fail because the database is restarting
        yield jobs
        cache = self.state.model_cache
        yield CounterMetricFamily("trainserve_model_cache_loads", "Models loaded",
                                  value=cache.loads)
        yield CounterMetricFamily("trainserve_model_cache_hits", "Model cache hits",
                                  value=cache.hits)
        yield CounterMetricFamily("trainserve_model_load_seconds",
                                  "Time spent loading models", value=cache.load_seconds)


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
def metrics(request: Request) -> Response:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_ServiceCollector(request))  # type: ignore[arg-type]
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
