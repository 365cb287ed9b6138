"""Routes for /v1/admin: owners' quotas. Admin keys only (403 for others)."""

from typing import Annotated

from fastapi import APIRouter, Path

from app.admin import service
from app.admin.schemas import QuotaIn, QuotaList, QuotaOut
from app.deps import AdminDep, SessionDep

router = APIRouter(prefix="/v1/admin", tags=["admin"])
OwnerRef = Annotated[str, Path(max_length=200, description="the owner's name (or id)")]
FORBIDDEN = {403: {"description": "not an admin key"}}


@router.get("/quotas", summary="Every owner's quota", responses=FORBIDDEN)
def list_(session: SessionDep, admin: AdminDep) -> QuotaList:
    return QuotaList(items=service.list_quotas(session=session, admin=admin))


@router.get("/quotas/{owner}", summary="An owner's quota (all null: none)",
            responses={**FORBIDDEN, 404: {"description": "no such owner"}})
def get(owner: OwnerRef, session: SessionDep, admin: AdminDep) -> QuotaOut:
    return service.get_quota(session=session, admin=admin, owner_ref=owner)


@router.put("/quotas/{owner}", summary="Set an owner's quota (replaces it whole)",
            responses={**FORBIDDEN, 404: {"description": "no such owner"}})
def put(owner: OwnerRef, quota: QuotaIn, session: SessionDep, admin: AdminDep) -> QuotaOut:
    return service.put_quota(session=session, admin=admin, owner_ref=owner, quota=quota)
