"""Webhook subscriptions, scoped by owner, and their deliveries."""

from sqlalchemy import Select, delete, select
from sqlalchemy.orm import Session

from app.errors import invalid, not_found
from app.webhooks.schemas import AttemptOut, DeliveryOut, WebhookIn
from app.webhooks.targets import Resolver, TargetRefused, resolve
from core.db.pages import newest_first
from core.db.tables import Owner, Webhook, WebhookAttempt, WebhookDelivery
from core.webhooks.outbox import DeliveryStatus

MAX_WEBHOOKS_PER_OWNER = 20


def create_webhook(*, session: Session, owner: Owner, body: WebhookIn, allow_private: bool,
                   resolver: Resolver) -> Webhook:
    try:
        resolve(body.url, allow_private=allow_private, resolver=resolver)
    except TargetRefused as exc:
        raise invalid("url", str(exc)) from None
    count = len(session.execute(select(Webhook.id).where(Webhook.owner_id == owner.id)).all())
    if count >= MAX_WEBHOOKS_PER_OWNER:
        raise invalid("url", f"at most {MAX_WEBHOOKS_PER_OWNER} webhooks per owner")
    hook = Webhook(owner_id=owner.id, url=body.url, events=list(dict.fromkeys(body.events)),
                   secret=body.secret)
    session.add(hook)
    session.commit()
    return hook


def _scoped(owner: Owner) -> Select[tuple[Webhook]]:
    query = select(Webhook)
    return query if owner.is_admin else query.where(Webhook.owner_id == owner.id)


def list_webhooks(*, session: Session, owner: Owner) -> list[Webhook]:
    return list(session.execute(_scoped(owner).order_by(Webhook.id.desc())).scalars())


def get_webhook(*, session: Session, owner: Owner, webhook_id: str) -> Webhook:
    hook = session.execute(_scoped(owner).where(Webhook.id == webhook_id)).scalar_one_or_none()
    if hook is None:
        raise not_found("webhook")
    return hook


def delete_webhook(*, session: Session, owner: Owner, webhook_id: str) -> None:
    """Removes it and its pending deliveries (and their history) at once."""
    hook = get_webhook(session=session, owner=owner, webhook_id=webhook_id)
    session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id))
    session.execute(delete(Webhook).where(Webhook.id == hook.id))
    session.commit()


def list_deliveries(*, session: Session, owner: Owner, webhook_id: str, limit: int,
                    cursor: str | None) -> tuple[list[DeliveryOut], str | None]:
    hook = get_webhook(session=session, owner=owner, webhook_id=webhook_id)
    rows, next_cursor = newest_first(
        session, select(WebhookDelivery).where(WebhookDelivery.webhook_id == hook.id),
        WebhookDelivery.id, limit, cursor)
    attempts: dict[str, list[AttemptOut]] = {row.id: [] for row in rows}
    if rows:
        for attempt in session.execute(
                select(WebhookAttempt).where(WebhookAttempt.delivery_id.in_(list(attempts)))
                .order_by(WebhookAttempt.number)).scalars():
            attempts[attempt.delivery_id].append(
                AttemptOut.model_validate(attempt, from_attributes=True))
    return [DeliveryOut(
        id=row.id, event=row.event, status=row.status, attempts=attempts[row.id],
        next_attempt_at=row.next_attempt_at if row.status == DeliveryStatus.PENDING else None,
        last_status_code=row.last_status_code, last_error=row.last_error, payload=row.payload,
        created_at=row.created_at, finished_at=row.finished_at) for row in rows], next_cursor
