"""The FastAPI application factory: `uvicorn --factory app.main:create_app`."""

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import torch
from fastapi import FastAPI

from app import errors
from app.broker import make_sender
from app.config import Settings, get_settings
from app.datasets.router import router as datasets_router
from app.db.engine import make_engine, make_sessionmaker
from app.health import router as health_router
from app.jobs.router import router as jobs_router
from app.serving.cache import ModelCache
from app.serving.router import router as models_router

DESCRIPTION = """Train neural networks (MLP, CNN, RNN, GRU, LSTM) and serve their predictions.

Every `/v1` route needs `Authorization: Bearer <api-key>`; a key sees only what its owner
created. Create keys with `trainserve keys create NAME`."""


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    logging.basicConfig(level=settings.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Inference shares the machine with training: keep its threads few and fixed.
        torch.set_num_threads(settings.inference_threads)
        engine = make_engine(settings)
        app.state.settings = settings
        app.state.sessions = make_sessionmaker(engine)
        app.state.sender = make_sender(settings)
        app.state.model_cache = ModelCache(settings.model_cache_size)
        yield
        engine.dispose()

    app = FastAPI(title="trainserve", version="1.0.0", description=DESCRIPTION,
                  lifespan=lifespan)
    errors.install(app)
    for router in (health_router, jobs_router, models_router, datasets_router):
        app.include_router(router)
    return app
