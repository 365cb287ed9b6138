"""The API process's serving machinery, built once in the app's lifespan: the model cache,
the micro-batcher's inference thread, the generation threads and the short-lived lookups
that keep the database off the prediction path."""

import gc
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import torch
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.keys.service import TTLCache
from app.serving import inference
from app.serving.batcher import MicroBatcher
from app.serving.cache import LoadedModel, ModelCache
from app.serving.threads import ThreadPolicy, usable_cpus
from app.singleflight import SingleFlight
from core.config import Settings
from core.db.tables import Checkpoint, TrainedModel
from core.lifecycle import ModelStatus
from core.store import ArtifactRefused, Store
from models import checkpoint as ckpt

log = logging.getLogger(__name__)


# The most cores a lone request's forward pass takes by default (inference_idle_threads 0).
IDLE_THREADS_MAX = 4


def configure_torch(threads: int) -> None:
    """Inference shares the machine with training: keep its threads few (the inference
    thread widens a lone pass only onto free cores: threads.ThreadPolicy). And turn
    oneDNN off by default: its RNN path re-lays out the weights on every call (a fixed cost
    larger than a step of `generate` and than a lone short text's whole forward pass), and
    its convolutions are no faster than the native ones for the zoo's CNNs. Batches and
    texts long enough for its layer to pay call it by name (predictor.CharPredictor)."""
    torch.set_num_threads(threads)
    torch.backends.mkldnn.enabled = False


@dataclass
class Serving:
    settings: Settings
    sessions: sessionmaker[Session]
    store: Store
    cache: ModelCache
    batcher: MicroBatcher
    generators: ThreadPoolExecutor
    # Texts too long for one batched pass (inference.is_long), run in pieces apart from it.
    long_texts: ThreadPoolExecutor
    # (model id, owner id) -> the loaded model that owner may use: a hit skips the database.
    lookups: TTLCache[tuple[str, str], LoadedModel] = field(
        default_factory=lambda: TTLCache(0.0))
    loads: SingleFlight[tuple[str, str], LoadedModel] = field(default_factory=SingleFlight)
    # Owner id -> its generate requests queued or running (touched on the event loop only).
    generating: dict[str, int] = field(default_factory=dict)

    def stop(self) -> None:
        self.batcher.stop()
        self.generators.shutdown(wait=False, cancel_futures=True)
        self.long_texts.shutdown(wait=False, cancel_futures=True)


# How long a thread may keep the GIL while another waits for it. The inference thread needs
# it back after each (GIL-free) forward pass, and under load the event loop rarely lets go
# by itself: at Python's default of 5 ms the model idled while the loop parsed requests.
# At 0.2 ms the two run side by side (bench/predict_load.py at 32 connections shows it).
GIL_SWITCH_SECONDS = 0.0002


def start(settings: Settings, sessions: sessionmaker[Session], store: Store) -> Serving:
    threads = settings.inference_threads
    idle_threads = settings.inference_idle_threads or min(usable_cpus(), IDLE_THREADS_MAX)
    sys.setswitchinterval(GIL_SWITCH_SECONDS)
    configure_torch(threads)
    serving = Serving(
        settings=settings, sessions=sessions, store=store,
        cache=ModelCache(settings.model_cache_size, settings.model_cache_bytes),
        batcher=MicroBatcher(max_batch=settings.batch_max_size,
                             max_delay=settings.batch_delay_ms / 1000,
                             setup=lambda: configure_torch(threads),
                             pace=ThreadPolicy(threads, idle_threads)).start(),
        generators=ThreadPoolExecutor(settings.generate_threads, thread_name_prefix="generate",
                                      initializer=configure_torch, initargs=(threads,)),
        long_texts=ThreadPoolExecutor(1, thread_name_prefix="long-texts",
                                      initializer=configure_torch, initargs=(threads,)),
        lookups=TTLCache(settings.lookup_cache_seconds))
    for model_id in settings.warm_models:
        try:
            warm(serving, model_id)
        except Exception as exc:  # a stale id in the settings must not stop the API
            log.warning("could not warm model %s: %s", model_id, exc)
    # A full garbage collection walks every object torch, FastAPI and the warm models made at
    # start-up (hundreds of thousands), stalling every request in flight: that
    # was the p99 of every route under load. Frozen, they are never walked again.
    gc.collect()
    gc.freeze()
    return serving


def load_row(serving: Serving, row: TrainedModel, session: Session) -> LoadedModel:
    checkpoint = session.get(Checkpoint, row.checkpoint_id)
    if checkpoint is None:
        raise LookupError("the model's checkpoint is gone")
    path, sha256 = checkpoint.path, checkpoint.sha256

    def fetch() -> Path:
        """Through this host's cache, verified: the API never sees a worker's disk."""
        try:
            return serving.store.fetch(path, sha256, "the model's checkpoint")
        except ArtifactRefused as exc:
            raise ckpt.CheckpointError(str(exc)) from exc
    return serving.cache.get(row.id, fetch, sha256)


def warm(serving: Serving, model_id: str) -> LoadedModel:
    """Load a model and run it once, before any request asks for it."""
    with serving.sessions() as session:
        row = session.execute(select(TrainedModel).where(TrainedModel.id == model_id)
                              ).scalar_one_or_none()
        if row is None or row.status != ModelStatus.READY:
            raise LookupError("no ready model with that id")
        loaded = load_row(serving, row, session)
    started = time.perf_counter()
    if loaded.predictor is not None:
        inference.warm(loaded.predictor, "char", 0)
    else:
        inference.warm(loaded.module, loaded.task, loaded.width)
    log.info("warmed model %s in %.3fs", model_id, time.perf_counter() - started)
    return loaded
