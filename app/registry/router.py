"""Routes for /v1/registry: thin, each calls one service function."""

from typing import Annotated

from fastapi import APIRouter, Path, Response
from sqlalchemy.orm import Session

from app.deps import PAGE_LIMIT_DEFAULT, OwnerDep, PageCursor, PageLimit, SessionDep
from app.registry import service
from app.registry.schemas import (
    AliasIn,
    AliasName,
    AliasOut,
    RegisteredDetail,
    RegisteredIn,
    RegisteredOut,
    RegisteredPage,
    RegistryName,
    VersionDetail,
    VersionIn,
    VersionOut,
)
from core.db.tables import ModelAlias, ModelVersion, RegisteredModel, TrainedModel

router = APIRouter(prefix="/v1/registry", tags=["registry"])
VersionNumber = Annotated[int, Path(ge=1, le=999_999_999)]
_404 = {404: {"description": "no such registered model (or it is another owner's)"}}
_VERSION_ERRORS = {**_404, 409: {"description": "the model is not ready, deleted, or is a "
                                 "version already"},
                   422: {"description": "another task, or another input contract"}}


def _alias_out(alias: ModelAlias) -> AliasOut:
    return AliasOut(alias=alias.alias, versions=alias.weights, updated_at=alias.updated_at)


def _summaries(session: Session, rows: list[RegisteredModel]) -> list[RegisteredOut]:
    ids = [row.id for row in rows]
    aliases, latest = service.aliases_of(session, ids), service.latest_versions(session, ids)
    return [RegisteredOut(name=row.name, description=row.description, task=row.task,
                          contract=row.contract, latest_version=latest.get(row.id),
                          aliases=[_alias_out(a) for a in aliases[row.id]],
                          created_at=row.created_at) for row in rows]


def _version_detail(name: str, version: ModelVersion, model: TrainedModel | None
                    ) -> VersionDetail:
    return VersionDetail(name=name, version=version.version, model_id=version.model_id,
                         created_at=version.created_at,
                         status=model.status if model is not None else None,
                         metrics=model.metrics if model is not None else {},
                         lineage=model.lineage if model is not None else {})


@router.post("", status_code=201, summary="Register a model name",
             responses={409: {"description": "the name is taken (in your namespace)"}})
def create(body: RegisteredIn, session: SessionDep, owner: OwnerDep,
           response: Response) -> RegisteredOut:
    row = service.create(session=session, owner=owner, name=body.name,
                         description=body.description)
    response.headers["Location"] = f"/v1/registry/{row.name}"
    return _summaries(session, [row])[0]


@router.get("", summary="List registered models with their aliases, newest first")
def list_(session: SessionDep, owner: OwnerDep, limit: PageLimit = PAGE_LIMIT_DEFAULT,
          cursor: PageCursor = None) -> RegisteredPage:
    rows, next_cursor = service.list_registered(session=session, owner=owner, limit=limit,
                                                cursor=cursor)
    return RegisteredPage(items=_summaries(session, rows), next_cursor=next_cursor)


@router.get("/{name}", summary="A registered model: versions (metrics, lineage) and aliases",
            responses=_404)
def get(name: RegistryName, session: SessionDep, owner: OwnerDep) -> RegisteredDetail:
    row = service.get_registered(session, owner, name)
    summary = _summaries(session, [row])[0]
    versions = [_version_detail(row.name, v, m) for v, m in service.versions_of(session, row)]
    return RegisteredDetail(**summary.model_dump(), versions=versions)


@router.delete("/{name}", status_code=204, summary="Delete a name, its versions and aliases "
               "(the trained models stay)", responses=_404)
def delete(name: RegistryName, session: SessionDep, owner: OwnerDep) -> Response:
    service.delete_registered(session=session, owner=owner, name=name)
    return Response(status_code=204)


@router.post("/{name}/versions", status_code=201, summary="Register a model as the next "
             "version", responses=_VERSION_ERRORS)
def add_version(name: RegistryName, body: VersionIn, session: SessionDep,
                owner: OwnerDep) -> VersionOut:
    row = service.add_version(session=session, owner=owner, name=name, model_id=body.model_id,
                              allow_contract_change=body.allow_contract_change)
    return VersionOut(name=name, version=row.version, model_id=row.model_id,
                      created_at=row.created_at)


@router.delete("/{name}/versions/{version}", status_code=204,
               summary="Remove a version (409 while an alias routes to it)",
               responses={**_404, 409: {"description": "an alias routes to it"}})
def delete_version(name: RegistryName, version: VersionNumber, session: SessionDep,
                   owner: OwnerDep) -> Response:
    service.delete_version(session=session, owner=owner, name=name, version=version)
    return Response(status_code=204)


@router.put("/{name}/aliases/{alias}", summary="Point an alias at a version, or split it "
            "between versions by weight (a canary)",
            description="`{\"version\": 3}`, or `{\"versions\": {\"3\": 0.9, \"4\": 0.1}}` with "
            "weights summing to 1. Serving follows the move within `TRAINSERVE_ALIAS_CACHE_"
            "SECONDS` on every API process; each request is answered by one version.",
            responses={**_404, 409: {"description": "a version's model is not ready"},
                       422: {"description": "no such version, or weights not summing to 1"}})
def put_alias(name: RegistryName, alias: AliasName, body: AliasIn, session: SessionDep,
              owner: OwnerDep) -> AliasOut:
    row = service.set_alias(session=session, owner=owner, name=name, alias=alias,
                            weights=body.weights())
    return _alias_out(row)


@router.delete("/{name}/aliases/{alias}", status_code=204, summary="Remove an alias",
               responses=_404)
def delete_alias(name: RegistryName, alias: AliasName, session: SessionDep,
                 owner: OwnerDep) -> Response:
    service.delete_alias(session=session, owner=owner, name=name, alias=alias)
    return Response(status_code=204)
