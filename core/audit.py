"""The audit log: who did what to which thing, and how it ended. Append-only.

`record` is the one way in. The API's audit middleware (app/audit/middleware.py) calls it for
every state-changing request once its status is known; the command line calls it for key
changes; any other admin or system action (a quota changed, a job preempted) calls it with
the session of the change itself, so the entry commits (or rolls back) with what it
describes. Nothing updates or deletes an entry.

Actions: an HTTP request's is `METHOD /route/{template}` and its target the path (or the
created resource's Location); a named action is dotted (`key.create`, `key.revoke`,
`quota.set`, `job.preempt`). Outcomes: an HTTP status code (`"201"`, `"403"`), or for a
named action `ok` or a short failure word.
"""

from enum import StrEnum

from sqlalchemy.orm import Session

from core.db.tables import AuditEntry


class Via(StrEnum):
    HTTP = "http"  # a request through the API, by the key in key_prefix
    CLI = "cli"  # the `trainserve` command on a host with the database's credentials
    SYSTEM = "system"  # the service itself (a scheduler's preemption, a reconciler)


def _clip(value: str | None, size: int) -> str | None:
    return value if value is None or len(value) <= size else value[:size - 1] + "…"


def record(session: Session, *, action: str, outcome: str, target: str | None = None,
           via: Via = Via.SYSTEM, owner_id: str | None = None, owner_name: str | None = None,
           key_prefix: str | None = None) -> AuditEntry:
    """Add one entry to `session`; it is written when the caller commits. `owner_*` name who
    acted (for a system action, whose thing it was)."""
    entry = AuditEntry(via=via, action=_clip(action, 200), outcome=_clip(outcome, 32),
                       target=_clip(target, 500), owner_id=owner_id,
                       owner_name=_clip(owner_name, 200), key_prefix=key_prefix)
    session.add(entry)
    return entry
