"""What GET /v1/audit returns."""

from datetime import datetime

from pydantic import BaseModel, Field


class AuditEntryOut(BaseModel):
    id: str
    created_at: datetime
    via: str = Field(description="http (a request with a key), cli (the `trainserve` command) "
                     "or system (the service itself)")
    key_prefix: str | None = Field(description="the first 10 characters of the key used")
    owner_id: str | None
    owner_name: str | None = Field(description="who acted (for a system action, whose thing "
                                   "it was)")
    action: str = Field(description="`METHOD /route/template` for a request, or a dotted name "
                        "(`key.create`, `key.revoke`, `quota.set`, `job.preempt`)")
    target: str | None = Field(description="the path, the created resource's Location, or "
                               "what the action changed")
    outcome: str = Field(description="the HTTP status code, or `ok` / a failure word")
    request_id: str | None


class AuditPage(BaseModel):
    items: list[AuditEntryOut]
    next_cursor: str | None
