"""A model's lineage: what it was trained from and by what, recorded on its row when the
row is made (the job's first checkpoint) and completed with its metrics when the job
succeeds."""

import hashlib
from typing import Any

import numpy as np
import torch
from sqlalchemy.orm import Session

from core import build_info
from core.db.tables import Dataset, Job, Owner
from models.data import ImageData, TextData


def content_sha256(data: ImageData | TextData) -> str:
    """sha256 of a dataset's examples as loaded, every split in a fixed order: a built-in
    dataset has no uploaded file whose hash could stand for it."""
    digest = hashlib.sha256()
    # As the models see them (int64 ids; float32 inputs, uint8 pixels / 255; int64 labels),
    # so the digest does not depend on how the arrays are stored.
    if isinstance(data, TextData):
        digest.update("".join(data.vocab).encode())
        arrays: list[np.ndarray | None] = [data.train.astype(np.int64),
                                           data.val.astype(np.int64)]
    else:
        digest.update("\0".join(data.classes).encode())
        arrays = [_inputs(data.x[data.train_rows]), data.y[data.train_rows].astype(np.int64),
                  _inputs(data.x[data.val_rows]), data.y[data.val_rows].astype(np.int64)]
        if data.x_test is not None and data.y_test is not None:
            arrays += [_inputs(data.x_test), data.y_test.astype(np.int64)]
    for array in arrays:
        if array is not None:
            digest.update(np.ascontiguousarray(array))
    return digest.hexdigest()


def _inputs(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32) / np.float32(255.0) if x.dtype == np.uint8 else \
        x.astype(np.float32)


def origin(session: Session, job: Job, data: ImageData | TextData) -> dict[str, Any]:
    """Everything but the metrics: the spec, the dataset and its sha256 (an upload's bytes;
    a built-in's loaded examples), trainserve's version and commit, torch's version, and the
    owner who made it."""
    dataset = None if job.dataset_ref.startswith("builtin:") else session.get(
        Dataset, job.dataset_ref)
    owner = session.get(Owner, job.owner_id)
    return {
        "job_id": job.id,
        "spec": job.spec,
        "dataset": {"id": job.dataset_ref,
                    "sha256": dataset.sha256 if dataset is not None else content_sha256(data),
                    "hashed": "upload" if dataset is not None else "examples"},
        "trainserve_version": build_info.version(),
        "git_commit": build_info.git_commit(),
        "torch_version": torch.__version__,
        "created_by": {"owner_id": job.owner_id,
                       "owner": owner.name if owner is not None else None},
    }
