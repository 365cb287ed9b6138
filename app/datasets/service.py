"""Datasets: what a job's `dataset` names, scoped to its owner."""

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.db.tables import Dataset, Owner
from app.errors import not_found
from models.data import BUILTINS, builtin_info


def resolve_dataset(*, session: Session, owner: Owner, ref: str) -> dict[str, Any]:
    """The dataset's info (kind, size, vocab or classes and shape), or 404."""
    if ref.startswith("builtin:"):
        info = builtin_info(ref.removeprefix("builtin:"))
        if info is None:
            raise not_found(f"dataset {ref}")
        return info
    query = select(Dataset).where(Dataset.id == ref)
    if not owner.is_admin:
        query = query.where(Dataset.owner_id == owner.id)
    row = session.execute(query).scalar_one_or_none()
    if row is None:
        raise not_found("dataset")
    return {"name": row.name, "kind": row.kind, "num_examples": row.num_examples, **row.info}


def list_builtins() -> list[dict[str, Any]]:
    return [info for name in BUILTINS if (info := builtin_info(name)) is not None]
