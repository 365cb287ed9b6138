"""The model registry: the rules. Names live in their owner's namespace (an admin's too:
names of different owners may be equal, and a name is looked up only among the caller's),
so another owner's name is simply not found (404).

A version is one trained model and never changes; an alias maps to versions with weights.
Serving reads aliases from the database through app/registry/resolve.py's short cache, so
every API process follows a move within that cache's lifetime.
"""

from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.errors import Conflict, NotFound, conflict, invalid, not_found
from app.jobs.service import scoped
from core.db.pages import newest_first
from core.db.tables import ModelAlias, ModelVersion, Owner, RegisteredModel, TrainedModel, utcnow
from core.lifecycle import ModelStatus
from core.webhooks import outbox

# Concurrent registrations of a version race for its number; the loser tries again.
VERSION_ATTEMPTS = 5


def get_registered(session: Session, owner: Owner, name: str, *,
                   lock: bool = False) -> RegisteredModel:
    """`lock` holds the row until the transaction ends (PostgreSQL; SQLite has one writer
    anyway): the changes to a name's versions and aliases check each other's rows, so they
    take turns."""
    query = select(RegisteredModel).where(RegisteredModel.owner_id == owner.id,
                                          RegisteredModel.name == name)
    row = session.execute(query.with_for_update() if lock else query).scalar_one_or_none()
    if row is None:
        raise not_found("registered model")
    return row


def create(*, session: Session, owner: Owner, name: str, description: str) -> RegisteredModel:
    row = RegisteredModel(owner_id=owner.id, name=name, description=description)
    session.add(row)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise conflict(f"a registered model named {name!r} exists already") from None
    return row


def list_registered(*, session: Session, owner: Owner, limit: int, cursor: str | None
                    ) -> tuple[list[RegisteredModel], str | None]:
    query = select(RegisteredModel).where(RegisteredModel.owner_id == owner.id)
    return newest_first(session, query, RegisteredModel.id, limit, cursor)


def versions_of(session: Session, registered: RegisteredModel
                ) -> list[tuple[ModelVersion, TrainedModel | None]]:
    return [(v, m) for v, m in session.execute(
        select(ModelVersion, TrainedModel)
        .outerjoin(TrainedModel, TrainedModel.id == ModelVersion.model_id)
        .where(ModelVersion.registered_model_id == registered.id)
        .order_by(ModelVersion.version)).tuples()]


def aliases_of(session: Session, registered_ids: list[str]) -> dict[str, list[ModelAlias]]:
    found: dict[str, list[ModelAlias]] = {ident: [] for ident in registered_ids}
    for alias in session.execute(select(ModelAlias).where(
            ModelAlias.registered_model_id.in_(registered_ids))
            .order_by(ModelAlias.alias)).scalars():
        found[alias.registered_model_id].append(alias)
    return found


def latest_versions(session: Session, registered_ids: list[str]) -> dict[str, int]:
    return dict(session.execute(
        select(ModelVersion.registered_model_id, func.max(ModelVersion.version))
        .where(ModelVersion.registered_model_id.in_(registered_ids))
        .group_by(ModelVersion.registered_model_id)).tuples().all())


# -- versions --------------------------------------------------------------------------------

def contract_of(model: TrainedModel) -> dict[str, Any]:
    """What a caller sends this model: its vocabulary, or its examples' shape."""
    if model.task == "char":
        return {"vocab": model.info.get("vocab")}
    return {"shape": model.info.get("shape")}


def _servable(session: Session, owner: Owner, model_id: str) -> TrainedModel:
    """The caller's ready model: 409 when it is not (deleted, never theirs, not ready),
    since the request is well formed but names a model that cannot serve."""
    model = session.execute(scoped(select(TrainedModel).where(TrainedModel.id == model_id),
                                   owner, TrainedModel.owner_id)).scalar_one_or_none()
    if model is None:
        raise conflict(f"model_id: no model {model_id!r} of yours (deleted, or never made)")
    if model.status != ModelStatus.READY:
        raise conflict(f"model_id: the model is not ready: it is {model.status}")
    return model


def _check_contract(registered: RegisteredModel, model: TrainedModel, allow_change: bool
                    ) -> None:
    if registered.task is not None and model.task != registered.task:
        raise invalid("model_id", f"a {model.task} model; {registered.name!r} holds "
                      f"{registered.task} models")
    contract = contract_of(model)
    if registered.contract is not None and contract != registered.contract and not allow_change:
        what = "vocabulary" if model.task == "char" else "input shape"
        raise invalid("model_id", f"its {what} {next(iter(contract.values()))!r} differs from "
                      f"the registered one {next(iter(registered.contract.values()))!r}; "
                      "send allow_contract_change: true to register it anyway")


def add_version(*, session: Session, owner: Owner, name: str, model_id: str,
                allow_contract_change: bool) -> ModelVersion:
    """The next version of `name`: a ready model of the same task, whose input contract is
    the registered one (the first version fixes it) unless the caller allows a change."""
    for _ in range(VERSION_ATTEMPTS):
        registered = get_registered(session, owner, name, lock=True)
        model = _servable(session, owner, model_id)
        _check_contract(registered, model, allow_contract_change)
        taken = session.execute(select(ModelVersion.version).where(
            ModelVersion.registered_model_id == registered.id,
            ModelVersion.model_id == model_id)).scalar_one_or_none()
        if taken is not None:
            raise conflict(f"model_id: that model is version {taken} of {name!r} already")
        latest = session.execute(select(func.max(ModelVersion.version)).where(
            ModelVersion.registered_model_id == registered.id)).scalar_one()
        row = ModelVersion(registered_model_id=registered.id, version=(latest or 0) + 1,
                           model_id=model_id)
        session.add(row)
        registered.task, registered.contract = model.task, contract_of(model)
        try:
            session.commit()
            return row
        except IntegrityError:  # another request took this number (or deleted the model)
            session.rollback()
    raise conflict("too many concurrent registrations; try again")


def delete_version(*, session: Session, owner: Owner, name: str, version: int) -> None:
    """Remove a version no alias routes to (409 while one does): its model may then go."""
    registered = get_registered(session, owner, name, lock=True)
    using = [a.alias for a in aliases_of(session, [registered.id])[registered.id]
             if str(version) in a.weights]
    if using:
        raise conflict(f"aliases {using} route to version {version}; move them first")
    deleted = session.execute(delete(ModelVersion).where(
        ModelVersion.registered_model_id == registered.id, ModelVersion.version == version)
        .execution_options(synchronize_session=False)).rowcount
    if not deleted:
        raise not_found("version")
    session.commit()


def delete_registered(*, session: Session, owner: Owner, name: str) -> None:
    """The name, its versions and aliases (the trained models stay)."""
    session.delete(get_registered(session, owner, name))
    session.commit()


# -- aliases ---------------------------------------------------------------------------------

def set_alias(*, session: Session, owner: Owner, name: str, alias: str,
              weights: dict[int, float]) -> ModelAlias:
    """Point `alias` at versions with weights (one version: weight 1). Every version must
    exist and its model be ready; the move is one row written in one transaction."""
    registered = get_registered(session, owner, name, lock=True)
    rows = dict(session.execute(
        select(ModelVersion.version, TrainedModel.status)
        .outerjoin(TrainedModel, TrainedModel.id == ModelVersion.model_id)
        .where(ModelVersion.registered_model_id == registered.id,
               ModelVersion.version.in_(list(weights)))).tuples().all())
    for version in sorted(weights):
        if version not in rows:
            raise invalid("version" if len(weights) == 1 else f"versions.{version}",
                          f"{name!r} has no version {version}")
        if rows[version] != ModelStatus.READY:
            raise conflict(f"version {version}'s model is not ready (it is "
                           f"{rows[version] or 'deleted'})")
    stored = {str(v): w for v, w in sorted(weights.items())}
    where = (ModelAlias.registered_model_id == registered.id, ModelAlias.alias == alias)
    moved = session.execute(update(ModelAlias).where(*where).values(
        weights=stored, updated_at=utcnow()).execution_options(synchronize_session=False)
    ).rowcount
    if not moved:
        session.add(ModelAlias(registered_model_id=registered.id, alias=alias, weights=stored))
    announce = {"name": name, "alias": alias, "versions": stored}
    owner_id = registered.owner_id
    # The webhook deliveries commit with the move (core/webhooks/outbox.py).
    outbox.enqueue(session, owner_id, "alias.moved", announce)
    try:
        session.commit()
    except IntegrityError:  # made by a concurrent PUT: this one moves it
        session.rollback()
        session.execute(update(ModelAlias).where(*where).values(
            weights=stored, updated_at=utcnow()).execution_options(synchronize_session=False))
        outbox.enqueue(session, owner_id, "alias.moved", announce)
        session.commit()
    row = session.execute(select(ModelAlias).where(*where)).scalar_one_or_none()
    if row is None:  # the name was deleted meanwhile
        raise not_found("registered model")
    return row


def delete_alias(*, session: Session, owner: Owner, name: str, alias: str) -> None:
    registered = get_registered(session, owner, name)
    deleted = session.execute(delete(ModelAlias).where(
        ModelAlias.registered_model_id == registered.id, ModelAlias.alias == alias)
        .execution_options(synchronize_session=False)).rowcount
    if not deleted:
        raise not_found("alias")
    # Removed: a move to no version at all.
    outbox.enqueue(session, registered.owner_id, "alias.moved",
                   {"name": name, "alias": alias, "versions": None})
    session.commit()


# -- what serving and deletes ask ------------------------------------------------------------

def routes(session: Session, owner: Owner, name: str, *, alias: str | None = None,
           version: int | None = None) -> list[tuple[int, str, float]]:
    """(version, model id, weight) for `name@alias` or `name:version`: 404 for a name,
    alias or version that is not there, 409 when a version's model cannot serve."""
    registered = get_registered(session, owner, name)
    if alias is not None:
        row = session.execute(select(ModelAlias).where(
            ModelAlias.registered_model_id == registered.id, ModelAlias.alias == alias)
        ).scalar_one_or_none()
        if row is None:
            raise NotFound(f"alias {alias!r} of {name!r} not found")
        weights = {int(v): float(w) for v, w in row.weights.items()}
    else:
        assert version is not None
        weights = {version: 1.0}
    found = {v: (model_id, status) for v, model_id, status in session.execute(
        select(ModelVersion.version, ModelVersion.model_id, TrainedModel.status)
        .outerjoin(TrainedModel, TrainedModel.id == ModelVersion.model_id)
        .where(ModelVersion.registered_model_id == registered.id,
               ModelVersion.version.in_(list(weights)))).tuples()}
    out = []
    for v, weight in sorted(weights.items()):
        if v not in found:
            raise NotFound(f"version {v} of {name!r} not found")
        model_id, status = found[v]
        if status != ModelStatus.READY:
            raise Conflict(f"version {v} of {name!r}: its model is not ready (it is "
                           f"{status or 'deleted'})")
        out.append((v, model_id, weight))
    return out


def refuses_delete(session: Session, model_id: str) -> str | None:
    """Why the model may not be deleted (a registered version names it), or None. Every
    delete of a trained model (DELETE /v1/models/{id}, and a job's delete that takes its
    model) asks this first and answers 409 with the reason."""
    found = session.execute(
        select(RegisteredModel.name, ModelVersion.version)
        .join(RegisteredModel, RegisteredModel.id == ModelVersion.registered_model_id)
        .where(ModelVersion.model_id == model_id).order_by(RegisteredModel.name)
        .limit(5)).tuples().all()
    if not found:
        return None
    named = ", ".join(f"{name}:{version}" for name, version in found)
    return (f"the model is registered as {named}; delete those versions "
            "(DELETE /v1/registry/{name}/versions/{version}) first")
