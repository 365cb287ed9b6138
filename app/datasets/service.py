"""Datasets: the built-ins and the owner's uploads. Every query is owner-scoped.

An upload is parsed and checked completely (models.formats) before anything is recorded;
what trains is the parsed form, written whole to a local file, then put into the artifact
store under a key built from the dataset's id; the row is committed only after the store
has it. Bad input leaves neither behind.
"""

import codecs
import hashlib
import json
from typing import Any

from sqlalchemy import delete, exists, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.datasets.schemas import DatasetOut
from app.datasets.uploads import FILE_FIELDS, INCOMING, Received
from app.errors import TooLarge, conflict, invalid, not_found
from core.config import Settings
from core.db.pages import newest_first
from core.db.tables import Dataset, Job, Owner, new_id
from core.lifecycle import ACTIVE
from core.store import Store
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
                          max_chars=settings.max_text_chars,
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


def canonical_options(options: dict[str, str]) -> dict[str, str]:
    """The options as they change the result: an encoding by its codec's name (utf-8 is the
    default, so it is dropped), a shape without spaces or leading zeros."""
    canonical = dict(options)
    if "encoding" in canonical:
        try:
            codec = codecs.lookup(canonical["encoding"]).name
        except LookupError:
            codec = canonical["encoding"]  # refused when parsed
        if codec == "utf-8":
            del canonical["encoding"]
        else:
            canonical["encoding"] = codec
    if "shape" in canonical:
        parts = [p.strip() for p in canonical["shape"].split(",")]
        canonical["shape"] = ",".join(str(int(p)) if p.isdigit() else p for p in parts)
    return canonical


def options_key(options: dict[str, str]) -> str:
    """Part of an upload's identity, with its bytes' sha256 and its format."""
    text = json.dumps(canonical_options(options), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _same_upload(session: Session, owner: Owner, sha256: str, fmt: str,
                 key: str) -> Dataset | None:
    return session.execute(select(Dataset).where(
        Dataset.owner_id == owner.id, Dataset.sha256 == sha256, Dataset.format == fmt,
        Dataset.options_key == key)).scalar_one_or_none()


def stored_total(session: Session, owner: Owner) -> int:
    return int(session.execute(select(func.coalesce(func.sum(Dataset.stored_bytes), 0))
                               .where(Dataset.owner_id == owner.id)).scalar_one())


def _check_quota(session: Session, settings: Settings, owner: Owner, adding: int) -> None:
    """413 when the owner's stored datasets, with `adding` more bytes, pass the quota.
    Counted again just before the row is added; two uploads finishing together may pass it
    by at most one upload."""
    used = stored_total(session, owner)
    if used + adding > settings.owner_storage_bytes:
        raise TooLarge(f"storage quota of {settings.owner_storage_bytes:,} bytes exceeded: "
                       f"your datasets use {used:,} bytes and this one needs {adding:,} once "
                       "stored; delete some first")


def _put(settings: Settings, store: Store, parsed: formats.Images | formats.Text
         | formats.TextFile, key: str) -> tuple[str, int]:
    """The stored form written beside the upload's parts (a rename for streamed text), then
    put into the store; returns the stored object's sha256 and size."""
    staged = settings.artifact_dir / INCOMING / f"{new_id()}.part"  # swept if we die here
    try:
        formats.store(parsed, staged)
    finally:
        formats.discard(parsed)
    try:
        return store.put_file(key, staged, consume=True)
    finally:
        staged.unlink(missing_ok=True)


def create_dataset(*, session: Session, settings: Settings, store: Store, owner: Owner,
                   upload: Received) -> tuple[Dataset, bool]:
    """Parse, check and store an upload. Returns (dataset, created): the same bytes in the
    same format with the same options from the same owner give back the dataset already
    made from them. Past the owner's storage quota it is a 413 and nothing is kept."""
    fmt, name, options = _form(upload)
    key = options_key(options)
    existing = _same_upload(session, owner, upload.sha256, fmt, key)
    if existing is not None:
        return existing, False
    _check_quota(session, settings, owner, 0)
    session.rollback()  # parsing takes a while: hold no connection through it
    parts = {f: (upload.files[f].path, upload.files[f].filename or f)
             for f in FILE_FIELDS if f in upload.files}
    try:
        parsed = formats.parse(fmt, parts, options, limits(settings))
    except formats.FormatError as exc:
        raise invalid(exc.field, str(exc)) from None
    dataset_id = new_id()
    object_key = formats.relative_path(dataset_id, parsed.kind)
    stored_sha256, stored_bytes = _put(settings, store, parsed, object_key)
    info = formats.describe(parsed) | {
        "files": [upload.files[f].filename for f in FILE_FIELDS if f in upload.files],
        "stored": {"sha256": stored_sha256, "bytes": stored_bytes, "form": formats.FORM},
        "options": canonical_options(options)}
    row = Dataset(id=dataset_id, owner_id=owner.id, name=name, kind=parsed.kind, format=fmt,
                  num_examples=parsed.num_examples, sha256=upload.sha256, bytes=upload.bytes,
                  options_key=key, stored_bytes=stored_bytes, info=info)
    try:
        _check_quota(session, settings, owner, stored_bytes)
        session.add(row)
        session.commit()
    except IntegrityError:  # the same upload, finishing at the same moment: keep theirs
        session.rollback()
        store.delete(object_key)
        twin = _same_upload(session, owner, upload.sha256, fmt, key)
        if twin is None:
            raise
        return twin, False
    except BaseException:
        session.rollback()
        store.delete(object_key)
        raise
    return row, True


def lock_for_job(session: Session, dataset_id: str) -> bool:
    """Whether the dataset still exists, holding it (PostgreSQL: FOR SHARE) until the
    caller's transaction ends, so that `delete_dataset` cannot remove it under a job being
    recorded. Call it after the job's INSERT: on SQLite that write has taken the single
    writer's lock, so what this reads cannot change before the commit."""
    return session.execute(select(Dataset.id).where(Dataset.id == dataset_id)
                           .with_for_update(read=True)).first() is not None


def delete_dataset(*, session: Session, store: Store, owner: Owner, dataset_id: str) -> None:
    """409 while a queued or running job uses it. The check and the delete are one: on
    PostgreSQL the row is locked first (a submit holding it commits its job before we look,
    one coming after waits and finds no row); the DELETE itself carries the check, which on
    SQLite runs under the single writer's lock."""
    row = get_dataset(session=session, owner=owner, dataset_id=dataset_id)
    relative = formats.relative_path(row.id, row.kind, row.info)
    session.execute(select(Dataset.id).where(Dataset.id == row.id).with_for_update())
    in_use = exists().where(Job.dataset_ref == row.id, Job.status.in_(ACTIVE))
    deleted = session.execute(delete(Dataset).where(Dataset.id == row.id, ~in_use)
                              .execution_options(synchronize_session=False)).rowcount
    if not deleted:
        busy = session.execute(select(Job.id, Job.status).where(
            Job.dataset_ref == row.id, Job.status.in_(ACTIVE)).limit(1)).first()
        session.rollback()
        if busy is None:  # deleted by another request meanwhile
            raise not_found("dataset")
        raise conflict(f"job {busy.id} is {busy.status} on this dataset; cancel it or let it "
                       "finish first")
    session.commit()
    # After the commit: a crash in between leaves an orphan object (`trainserve gc` removes
    # it), never a row without one.
    store.delete(relative)


def to_out(row: Dataset) -> DatasetOut:
    """Only what the dataset's kind has: routes drop unset fields (vocab for images...)."""
    info = row.info
    optional = {key: info[key] for key in ("vocab", "encoding", "classes", "shape", "pixels",
                                           "ids") if info.get(key) is not None}
    if info.get("options"):
        optional["options"] = info["options"]
    if "vocab" in optional:
        optional["vocab_size"] = len(optional["vocab"])
    return DatasetOut(
        id=row.id, name=row.name, kind=row.kind, format=row.format,  # type: ignore[arg-type]
        num_examples=row.num_examples, sha256=row.sha256, bytes=row.bytes,
        created_at=row.created_at, split=info["split"],
        validation_fraction=info["validation_fraction"], files=info.get("files", []),
        **optional)
