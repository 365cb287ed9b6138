"""Datasets: the built-ins and the owner's uploads. Every query is owner-scoped.

An upload is parsed and checked completely (models.formats) before anything is recorded;
what trains is the parsed form, written whole to a path built from the dataset's id, and
the row is committed only after its file is in place. Bad input leaves neither behind.
"""

from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.datasets.schemas import DatasetOut
from app.datasets.store import FILE_FIELDS, Received
from app.errors import conflict, invalid, not_found
from core.config import Settings
from core.db.pages import newest_first
from core.db.tables import Dataset, Job, Owner, new_id
from core.lifecycle import ACTIVE
from models import checkpoint as ckpt
from models import formats
from models.data import BUILTINS, builtin_info

OPTIONS = {"labels": "idx", "encoding": "text", "label_column": "csv", "shape": "csv"}


def resolve_dataset(*, session: Session, owner: Owner, ref: str) -> dict[str, Any]:
    """The dataset's info (kind, size, vocab or classes and shape), or 404."""
    if ref.startswith("builtin:"):
        info = builtin_info(ref.removeprefix("builtin:"))
        if info is None:
            raise not_found(f"dataset {ref}")
        return info
    row = get_dataset(session=session, owner=owner, dataset_id=ref)
    return {"name": row.name, "kind": row.kind, "num_examples": row.num_examples, **row.info}


def list_builtins() -> list[dict[str, Any]]:
    return [info for name in BUILTINS if (info := builtin_info(name)) is not None]


def limits(settings: Settings) -> formats.Limits:
    return formats.Limits(max_examples=settings.max_dataset_examples,
                          max_vocab=settings.max_vocab_size,
                          max_classes=settings.max_dataset_classes,
                          max_decompressed_bytes=settings.max_decompressed_bytes)


def get_dataset(*, session: Session, owner: Owner, dataset_id: str) -> Dataset:
    query = select(Dataset).where(Dataset.id == dataset_id)
    if not owner.is_admin:
        query = query.where(Dataset.owner_id == owner.id)
    row = session.execute(query).scalar_one_or_none()
    if row is None:
        raise not_found("dataset")
    return row


def list_datasets(*, session: Session, owner: Owner, kind: str | None, limit: int,
                  cursor: str | None) -> tuple[list[Dataset], str | None]:
    query = select(Dataset)
    if not owner.is_admin:
        query = query.where(Dataset.owner_id == owner.id)
    if kind:
        query = query.where(Dataset.kind == kind)
    return newest_first(session, query, Dataset.id, limit, cursor)


def _form(upload: Received) -> tuple[str, str, dict[str, str]]:
    """The format, the name and the format's options, each checked against the format."""
    fmt = upload.fields.get("format", "").strip()
    if not fmt:
        raise invalid("format", f"required; one of {', '.join(formats.FORMATS)}")
    if fmt not in formats.FORMATS:
        raise invalid("format", f"'{fmt[:40]}' is not one of {', '.join(formats.FORMATS)}")
    if "file" not in upload.files:
        raise invalid("file", "required: the dataset's file")
    for option, owner_format in OPTIONS.items():
        if owner_format != fmt and (option in upload.fields or option in upload.files):
            raise invalid(option, f"only the {owner_format} format takes it")
    name = upload.fields.get("name", "").strip() or upload.files["file"].filename or fmt
    if len(name) > 200 or not name.isprintable():
        raise invalid("name", "at most 200 printable characters")
    options = {k: v.strip() for k, v in upload.fields.items() if k in OPTIONS and v.strip()}
    return fmt, name, options


def _same_upload(session: Session, owner: Owner, sha256: str, fmt: str) -> Dataset | None:
    return session.execute(select(Dataset).where(
        Dataset.owner_id == owner.id, Dataset.sha256 == sha256, Dataset.format == fmt)
    ).scalar_one_or_none()


def create_dataset(*, session: Session, settings: Settings, owner: Owner,
                   upload: Received) -> tuple[Dataset, bool]:
    """Parse, check and store an upload. Returns (dataset, created): the same bytes in the
    same format from the same owner give back the dataset already made from them."""
    fmt, name, options = _form(upload)
    existing = _same_upload(session, owner, upload.sha256, fmt)
    if existing is not None:
        return existing, False
    session.rollback()  # parsing takes a while: hold no connection through it
    parts = {f: (upload.files[f].path, upload.files[f].filename or f)
             for f in FILE_FIELDS if f in upload.files}
    try:
        parsed = formats.parse(fmt, parts, options, limits(settings))
    except formats.FormatError as exc:
        raise invalid(exc.field, str(exc)) from None
    dataset_id = new_id()
    path = formats.resolve(settings.artifact_dir, formats.relative_path(dataset_id, parsed.kind))
    stored_sha256, stored_bytes = ckpt.write(path, formats.encode(parsed))
    info = formats.describe(parsed) | {
        "files": [upload.files[f].filename for f in FILE_FIELDS if f in upload.files],
        "stored": {"sha256": stored_sha256, "bytes": stored_bytes}}
    row = Dataset(id=dataset_id, owner_id=owner.id, name=name, kind=parsed.kind, format=fmt,
                  num_examples=parsed.num_examples, sha256=upload.sha256, bytes=upload.bytes,
                  info=info)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:  # the same upload, finishing at the same moment: keep theirs
        session.rollback()
        path.unlink(missing_ok=True)
        twin = _same_upload(session, owner, upload.sha256, fmt)
        if twin is None:
            raise
        return twin, False
    except BaseException:
        session.rollback()
        path.unlink(missing_ok=True)
        raise
    return row, True


def delete_dataset(*, session: Session, settings: Settings, owner: Owner,
                   dataset_id: str) -> None:
    row = get_dataset(session=session, owner=owner, dataset_id=dataset_id)
    busy = session.execute(select(Job.id, Job.status).where(
        Job.dataset_ref == row.id, Job.status.in_(ACTIVE)).limit(1)).first()
    if busy is not None:
        raise conflict(f"job {busy.id} is {busy.status} on this dataset; cancel it or let it "
                       "finish first")
    relative = formats.relative_path(row.id, row.kind)
    session.delete(row)
    session.commit()
    # After the commit: a crash in between leaves an orphan file, never a row without one.
    formats.resolve(settings.artifact_dir, relative).unlink(missing_ok=True)


def to_out(row: Dataset) -> DatasetOut:
    """Only what the dataset's kind has: routes drop unset fields (vocab for images...)."""
    info = row.info
    optional = {key: info[key] for key in ("vocab", "encoding", "classes", "shape", "pixels")
                if info.get(key) is not None}
    if "vocab" in optional:
        optional["vocab_size"] = len(optional["vocab"])
    return DatasetOut(
        id=row.id, name=row.name, kind=row.kind, format=row.format,  # type: ignore[arg-type]
        num_examples=row.num_examples, sha256=row.sha256, bytes=row.bytes,
        created_at=row.created_at, split=info["split"],
        validation_fraction=info["validation_fraction"], files=info.get("files", []),
        **optional)
