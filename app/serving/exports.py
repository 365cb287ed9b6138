"""Exports of trained models (models/export.py), as files with their sha256.

An export is made once per model checkpoint and format, in the threadpool (never on the
event loop: an ONNX export of a large model takes seconds), and kept in this host's cache
directory (data_dir/exports, the newest `export_cache_files` of them): a cache, rebuilt from
the hash-checked checkpoint (fetched through the artifact store's cache) whenever it is
missing. Concurrent requests for one export wait
for the one that makes it.
"""

import base64
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from app.errors import conflict
from app.serving.service import get_model
from core.config import Settings
from core.db.tables import Checkpoint, Owner
from core.lifecycle import ModelStatus
from core.store import ArtifactRefused, Store
from models import checkpoint as ckpt
from models import export
from models.checkpoint import CheckpointError


@dataclass
class ExportFile:
    path: Path
    sha256: str
    media_type: str
    filename: str
    details: dict[str, str]

    def headers(self) -> dict[str, str]:
        digest = base64.b64encode(bytes.fromhex(self.sha256)).decode()
        return {"X-Content-SHA256": self.sha256, "Digest": f"sha-256={digest}",
                **{f"X-{name.title()}": value for name, value in self.details.items()}}


class Exporter:
    def __init__(self, settings: Settings, sessions: sessionmaker[Session], store: Store) -> None:
        self.settings, self.sessions, self.store = settings, sessions, store
        self.folder = settings.data_dir / "exports"
        self._lock = threading.Lock()
        self._making: dict[str, threading.Lock] = {}

    def export(self, owner: Owner, model_id: str, fmt: str) -> ExportFile:
        """The model's export in `fmt`: 404 for a model this owner does not have, 409 for one
        that is not ready or whose checkpoint fails its hash. Blocking: call it in a thread."""
        with self.sessions() as session:
            row = get_model(session=session, owner=owner, model_id=model_id)
            if row.status != ModelStatus.READY:
                raise conflict(f"the model is not ready: it is {row.status}")
            checkpoint = session.get(Checkpoint, row.checkpoint_id)
            if checkpoint is None:
                raise conflict("the model's checkpoint is gone")
            path, sha256 = checkpoint.path, checkpoint.sha256
            name = row.name or row.id
        stem = f"{model_id}-{sha256[:16]}-{fmt}"
        found = self._cached(stem, name)
        if found is not None:
            return found
        with self._lock:
            gate = self._making.setdefault(stem, threading.Lock())
        with gate:
            found = self._cached(stem, name)
            if found is None:
                found = self._make(stem, name, path, sha256, fmt)
        with self._lock:
            self._making.pop(stem, None)
        return found

    def _cached(self, stem: str, name: str) -> ExportFile | None:
        """The export recorded by its sidecar (written last, so a file without one is an
        export that did not finish)."""
        sidecar = self.folder / f"{stem}.json"
        try:
            record = json.loads(sidecar.read_text())
        except (OSError, ValueError):
            return None
        path = self.folder / f"{stem}.{record['suffix']}"
        if not path.is_file():
            return None
        os.utime(sidecar)  # most recently used: kept longest
        return ExportFile(path, record["sha256"], record["media_type"],
                          f"{name}.{record['suffix']}", record["details"])

    def _make(self, stem: str, name: str, relative: str, sha256: str, fmt: str) -> ExportFile:
        try:
            local = self.store.fetch(relative, sha256, "the model's checkpoint")
            tensors, meta = ckpt.load(local, sha256)
        except (ArtifactRefused, CheckpointError) as exc:
            raise conflict("the model's checkpoint failed its integrity check") from exc
        made = export.export(tensors, meta, fmt)
        path = self.folder / f"{stem}.{made.suffix}"
        data_sha256, _ = ckpt.write(path, made.data)
        ckpt.write_atomic(self.folder / f"{stem}.json", json.dumps({
            "sha256": data_sha256, "media_type": made.media_type, "suffix": made.suffix,
            "details": made.details}).encode())
        self._evict()
        return ExportFile(path, data_sha256, made.media_type, f"{name}.{made.suffix}",
                          made.details)

    def _evict(self) -> None:
        """Keep the newest `export_cache_files` exports (a file being served stays readable
        after its unlink, on POSIX)."""
        records = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime,
                         reverse=True)
        for record in records[self.settings.export_cache_files:]:
            for path in self.folder.glob(f"{record.stem}.*"):
                path.unlink(missing_ok=True)
