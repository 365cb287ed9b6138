"""Loaded models, kept in the API process: each is read, hash-checked and built once.

The LRU is bounded by count and by parameter bytes; `loads`, `hits` and `load_seconds` are
exported on /metrics (see app/health.py).
"""

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from app.serving.predictor import char_predictor
from models import checkpoint as ckpt
from models import registry
from models.checkpoint import strip_prefix
from models.recurrent import CharRNN

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    model_id: str
    module: nn.Module
    task: str
    info: dict[str, Any]
    arch: str = ""
    nbytes: int = 0
    lookup: dict[str, int] = field(default_factory=dict)
    # Character models: the batched prediction (see predictor.py), sharing `module`'s weights.
    predictor: nn.Module | None = None

    @property
    def vocab(self) -> list[str]:
        return self.info["vocab"]

    @property
    def width(self) -> int:
        """Values in one flattened classifier example."""
        return int(torch.Size(self.info["shape"]).numel())


def module_bytes(module: nn.Module) -> int:
    tensors = [*module.parameters(), *module.buffers()]
    return sum(t.numel() * t.element_size() for t in tensors)


def load_model(model_id: str, path: Path | Callable[[], Path], sha256: str) -> LoadedModel:
    """`path` is the checkpoint's file, or what fetches it (through the host's cache) when
    the model is not loaded yet."""
    tensors, meta = ckpt.load(path() if callable(path) else path, sha256)
    module = registry.rebuild(meta["arch"], meta["config"])
    module.load_state_dict(strip_prefix("model.", tensors))
    module.eval()
    module.requires_grad_(False)
    loaded = LoadedModel(model_id=model_id, module=module, task=meta["task"], info=meta["data"],
                         arch=meta["arch"], nbytes=module_bytes(module))
    if loaded.task == "char":
        assert isinstance(module, CharRNN)
        loaded.lookup = {c: i for i, c in enumerate(loaded.vocab)}
        loaded.predictor = char_predictor(module)
    return loaded


class ModelCache:
    """An LRU of loaded models. A model is loaded by one thread while others wait for it."""

    def __init__(self, capacity: int, max_bytes: int = 2**62) -> None:
        self.capacity = capacity
        self.max_bytes = max_bytes
        self._models: OrderedDict[tuple[str, str], LoadedModel] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, str], threading.Lock] = {}
        self.loads = 0
        self.hits = 0
        self.load_seconds = 0.0
        self.evictions = 0

    @property
    def nbytes(self) -> int:
        return sum(m.nbytes for m in self._models.values())

    def __len__(self) -> int:
        return len(self._models)

    def record_hit(self) -> None:
        """A request served by a model found without calling `get` (the routes' lookups)."""
        with self._lock:
            self.hits += 1

    def get(self, model_id: str, path: Path | Callable[[], Path], sha256: str) -> LoadedModel:
        key = (model_id, sha256)
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None:
                self._models.move_to_end(key)
                self.hits += 1
                return loaded
            gate = self._loading.setdefault(key, threading.Lock())
        with gate:
            with self._lock:
                loaded = self._models.get(key)
                if loaded is not None:
                    self.hits += 1
                    return loaded
            started = time.perf_counter()
            try:
                with torch.inference_mode():
                    loaded = load_model(model_id, path, sha256)
            except BaseException:
                with self._lock:
                    self._loading.pop(key, None)
                raise
            with self._lock:
                self.loads += 1
                self.load_seconds += time.perf_counter() - started
                self._models[key] = loaded
                self._loading.pop(key, None)
                self._evict()
            log.info("loaded model %s (%s, %.1f MB) in %.3fs", model_id, loaded.arch,
                     loaded.nbytes / 1e6, time.perf_counter() - started)
            return loaded

    def _evict(self) -> None:
        """Drop the least recently used models past either bound; the newest always stays,
        so a model bigger than the whole budget is still served, alone."""
        total = self.nbytes
        while len(self._models) > 1 and (len(self._models) > self.capacity
                                         or total > self.max_bytes):
            _, dropped = self._models.popitem(last=False)
            total -= dropped.nbytes
            self.evictions += 1
