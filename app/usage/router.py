"""GET /v1/usage: thin."""

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from app.deps import OwnerDep, SessionDep
from app.usage import service
from app.usage.schemas import GroupBy, UsageOut

router = APIRouter(prefix="/v1/usage", tags=["usage"])


@router.get("", summary="Device-seconds and examples of jobs started in a window",
            response_model_by_alias=True)
def get(session: SessionDep, owner: OwnerDep,
        start: Annotated[datetime | None, Query(alias="from", description="default: `to` "
                                                "less 30 days")] = None,
        end: Annotated[datetime | None, Query(alias="to", description="default: now")] = None,
        group_by: GroupBy = "owner") -> UsageOut:
    return service.usage(session=session, owner=owner, start=start, end=end, group_by=group_by)
