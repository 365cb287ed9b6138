"""Usage: device-seconds and examples of jobs, as their heartbeats recorded them (in real
time: a running job's figures grow with each heartbeat). A job counts in full in the window
and on the day it started. Admins see every owner's; others their own."""

from collections import defaultdict
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.errors import invalid
from app.usage.schemas import GroupBy, UsageOut, UsageRow
from core.db.tables import Job, Owner, utcnow

DEFAULT_WINDOW = timedelta(days=30)


def usage(*, session: Session, owner: Owner, start: datetime | None, end: datetime | None,
          group_by: GroupBy) -> UsageOut:
    end = end or utcnow()
    start = start or end - DEFAULT_WINDOW
    if start.tzinfo is None or end.tzinfo is None:
        raise invalid("from", "give times with a zone, e.g. 2026-01-01T00:00:00Z")
    if start > end:
        raise invalid("from", "must not be after `to`")
    query = (select(Owner.name, Job.started_at, Job.queue, Job.device_seconds, Job.examples)
             .join(Owner, Owner.id == Job.owner_id)
             .where(Job.started_at >= start, Job.started_at < end))
    if not owner.is_admin:
        query = query.where(Job.owner_id == owner.id)
    sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0])
    total = [0.0, 0, 0]
    for name, started, queue, seconds, examples in session.execute(query):
        key = {"owner": name, "device": queue,
               "day": started.date().isoformat() if started else ""}[group_by]
        for row in (sums[key], total):
            row[0] += seconds
            row[1] += examples
            row[2] += 1

    def out(key: str, row: list[float]) -> UsageRow:
        return UsageRow(key=key, device_seconds=round(row[0], 3), examples=int(row[1]),
                        jobs=int(row[2]))
    return UsageOut(from_=start, to=end, group_by=group_by,
                    items=[out(key, sums[key]) for key in sorted(sums)],
                    total=out("total", total))
