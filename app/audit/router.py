"""GET /v1/audit: admins read the audit log. No route changes or removes an entry."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.audit import service
from app.audit.schemas import AuditEntryOut, AuditPage
from app.deps import PAGE_LIMIT_DEFAULT, AdminDep, PageCursor, PageLimit, SessionDep

router = APIRouter(prefix="/v1/audit", tags=["audit"])


@router.get("", summary="The audit log, newest first (admin keys)",
            description="Every state-changing request (with its outcome, refusals included) "
            "and every admin action (keys created and revoked, quotas, preemptions). "
            "Append-only: no route updates or deletes an entry.",
            responses={403: {"description": "not an admin key"}})
def list_(session: SessionDep, _: AdminDep, limit: PageLimit = PAGE_LIMIT_DEFAULT,
          cursor: PageCursor = None,
          owner: Annotated[str | None, Query(max_length=200, description="who acted (name)")
                           ] = None,
          action: Annotated[str | None, Query(max_length=200, description=(
              "exactly, e.g. `POST /v1/jobs` or `key.create`"))] = None,
          outcome: Annotated[str | None, Query(max_length=32, description="e.g. 403")] = None,
          since: Annotated[datetime | None, Query(alias="from", description=(
              "entries at or after this time (ISO-8601)"))] = None,
          until: Annotated[datetime | None, Query(alias="to", description=(
              "entries before this time"))] = None) -> AuditPage:
    rows, next_cursor = service.list_entries(session=session, limit=limit, cursor=cursor,
                                             owner=owner, action=action, outcome=outcome,
                                             since=since, until=until)
    return AuditPage(items=[AuditEntryOut.model_validate(r, from_attributes=True) for r in rows],
                     next_cursor=next_cursor)
