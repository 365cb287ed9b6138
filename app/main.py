"""The FastAPI application factory: `uvicorn --factory app.main:create_app`."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from app import errors, observability
from app.access import document_refusals
from app.admin.router import router as admin_router
from app.audit.middleware import AuditMiddleware
from app.audit.router import router as audit_router
from app.bodies import BodyGuard
from app.dashboard.router import router as dashboard_router
from app.datasets.router import router as datasets_router
from app.datasets.uploads import sweep_incoming
from app.events.router import router as events_router
from app.health import router as health_router
from app.jobs.router import router as jobs_router
from app.keys.service import TTLCache
from app.ratelimit import RateLimit
from app.registry.metrics import VersionMetrics
from app.registry.resolve import Resolver
from app.registry.router import router as registry_router
from app.serving import state as serving_state
from app.serving.exports import Exporter
from app.serving.router import router as models_router
from app.serving.v2_router import router as v2_router
from app.singleflight import SingleFlight
from app.sweeps.router import router as sweeps_router
from app.usage.router import router as usage_router
from app.webhooks.deliverer import Deliverer
from app.webhooks.router import router as webhooks_router
from app.workers.router import router as workers_router
from core.broker import make_sender
from core.config import Settings, get_settings
from core.db.engine import make_engine, make_sessionmaker
from core.dispatch import Resender
from core.store import open_store
from core.sweeps.driver import SweepDriver

log = logging.getLogger(__name__)

DESCRIPTION = """Train neural networks (MLP, CNN, RNN, GRU, LSTM) and serve their predictions.

Every `/v1` route needs `Authorization: Bearer <api-key>`; a key sees only what its owner
created. Create keys with `trainserve keys create NAME [--role admin|member|viewer]`.
A `viewer` key reads (lists, gets, metrics, events, predictions) and gets `403` on every
change (POST, PUT, PATCH, DELETE other than predict, generate and infer). Every change,
refused or not, is in the audit log (`GET /v1/audit`, admin keys)."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings)
        app.state.settings = settings
        app.state.sessions = make_sessionmaker(engine)
        app.state.sender = make_sender(settings)
        app.state.key_cache = TTLCache(settings.lookup_cache_seconds)
        app.state.key_loads = SingleFlight()
        # Uploads, deletes and model loads go through the store: refuse to start without it.
        app.state.store = open_store(settings)
        problem = await run_in_threadpool(app.state.store.check_writable)
        if problem:
            raise RuntimeError(problem)
        # The inference thread, the model cache (warmed) and bounded torch threads.
        app.state.serving = serving_state.start(settings, app.state.sessions, app.state.store)
        app.state.model_cache = app.state.serving.cache
        # Model references (name@alias, name:version) -> the model that answers.
        app.state.resolver = Resolver(app.state.sessions, settings.alias_cache_seconds)
        app.state.exporter = Exporter(settings, app.state.sessions, app.state.store)
        swept = await run_in_threadpool(sweep_incoming, settings)  # this host's own parts
        if swept:
            log.info("removed %d abandoned upload parts", swept)
        # Jobs whose send failed (the broker was down) are sent again from here once it
        # answers, so that an outage heals even with no worker alive to reconcile.
        resender = Resender(app.state.sessions, app.state.sender, settings.reconcile_seconds)
        resender.start()
        # Webhook deliveries from the outbox; every API process runs one (claims are leases).
        deliverer = Deliverer(app.state.sessions, settings)
        deliverer.start()
        # Sweeps are driven from here too (and from every worker): trials are made as
        # slots free up whichever processes are alive.
        sweep_driver = SweepDriver(app.state.sessions, app.state.sender,
                                   settings.reconcile_seconds)
        sweep_driver.start()
        yield
        sweep_driver.stop()
        deliverer.stop()
        resender.stop()
        app.state.serving.stop()
        engine.dispose()

    app = FastAPI(title="trainserve", version="1.0.0", description=DESCRIPTION,
                  lifespan=lifespan)
    errors.install(app)
    app.add_middleware(BodyGuard, max_bytes=settings.max_json_bytes)
    app.add_middleware(AuditMiddleware)  # outside BodyGuard: its 413s are audited too
    app.add_middleware(RateLimit, rate=settings.rate_limit_per_second,
                       burst=settings.rate_limit_burst)
    observability.install(app, settings.log_level)  # JSON logs, request ids, metrics
    app.state.version_metrics = VersionMetrics()
    for router in (health_router, models_router, v2_router, jobs_router, events_router,
                   sweeps_router, datasets_router, registry_router, dashboard_router,
                   audit_router, webhooks_router, admin_router, usage_router, workers_router):
        app.include_router(router)
    document_refusals(app)
    return app
