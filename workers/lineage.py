"""A model's lineage: what it was trained from and by what, recorded on its row when the
row is made (the job's first checkpoint) and completed with its metrics when the job
succeeds."""

import hashlib
from typing import Any

import torch
from sqlalchemy.orm import Session

from core import build_info
from core.db.tables import Dataset, Job, Owner
from models.data import ImageData, TextData


def content_sha256(data: ImageData | TextData) -> str:
    """sha256 of a dataset's examples as loaded, every split in a fixed order: a built-in
    dataset has no uploaded file whose hash could stand for it."""
    digest = hashlib.sha256()
    if isinstance(data, TextData):
        digest.update("".join(data.vocab).encode())
        tensors: list[torch.Tensor | None] = [data.train, data.val]
    else:
        digest.update("\0".join(data.classes).encode())
        tensors = [data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test]
    for tensor in tensors:
        if tensor is not None:
            digest.update(tensor.contiguous().numpy())
    return digest.hexdigest()


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
