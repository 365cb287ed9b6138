"""Reading the audit log (writing is core/audit.py's). Pages are keyset pages on the
time-ordered id, so a page costs the same however deep it is; a time range is a range of
that id, and the owner and action filters have (column, id) indexes."""

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.pages import newest_first
from core.db.tables import AuditEntry


def id_at(moment: datetime) -> str:
    """The smallest id made at `moment` (core.db.tables.new_id: milliseconds first); a time
    without a zone is UTC."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return f"{int(moment.timestamp() * 1000):012x}"


def list_entries(*, session: Session, limit: int, cursor: str | None, owner: str | None,
                 action: str | None, outcome: str | None, since: datetime | None,
                 until: datetime | None) -> tuple[list[AuditEntry], str | None]:
    query = select(AuditEntry)
    if owner is not None:
        query = query.where(AuditEntry.owner_name == owner)
    if action is not None:
        query = query.where(AuditEntry.action == action)
    if outcome is not None:
        query = query.where(AuditEntry.outcome == outcome)
    if since is not None:
        query = query.where(AuditEntry.id >= id_at(since))
    if until is not None:
        query = query.where(AuditEntry.id < id_at(until))
    return newest_first(session, query, AuditEntry.id, limit, cursor)
