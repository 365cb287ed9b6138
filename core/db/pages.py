"""Cursor pagination, newest first: ids are time-ordered, so the cursor is the last id seen."""

from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session


def newest_first(session: Session, query: Select[Any], id_column: InstrumentedAttribute[str],
                 limit: int, cursor: str | None) -> tuple[list[Any], str | None]:
    """One page of the query's rows and the cursor of the next page (None on the last)."""
    if cursor:
        query = query.where(id_column < cursor)
    rows = list(session.execute(query.order_by(id_column.desc()).limit(limit + 1)).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)
