"""Routes for /v1/webhooks: thin, each calls one service function."""

import socket
from typing import Annotated

from fastapi import APIRouter, Response

from app.deps import PAGE_LIMIT_DEFAULT, OwnerDep, PageCursor, PageLimit, SessionDep, SettingsDep
from app.webhooks import service
from app.webhooks.schemas import DeliveryPage, WebhookIn, WebhookList, WebhookOut

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])
WebhookId = Annotated[str, "the webhook's id"]

EVENTS_DESCRIPTION = """Events: `job.succeeded`, `job.failed`, `job.cancelled`,
`job.pruned` (a sweep's trial stopped by its pruner), `sweep.completed`, `alias.moved` (of
this key's owner). Each delivery is a POST of
`{"id", "event", "created_at", "data"}` with `X-Trainserve-Delivery` (the delivery id: dedupe
on it, a delivery may come more than once), `X-Trainserve-Event` and `X-Trainserve-Signature:
sha256=<hex HMAC-SHA256 of the body with the secret>`. Any answer but 2xx is retried with
exponential backoff for 24 hours; redirects are not followed. Only http(s) URLs on public
addresses (private and loopback ones need TRAINSERVE_WEBHOOK_ALLOW_PRIVATE=1)."""


@router.post("", status_code=201, summary="Subscribe a URL to events",
             description=EVENTS_DESCRIPTION,
             responses={422: {"description": "not an http(s) URL, a non-public address, or an "
                              "unknown event"}})
def create(body: WebhookIn, session: SessionDep, owner: OwnerDep, settings: SettingsDep,
           response: Response) -> WebhookOut:
    hook = service.create_webhook(session=session, owner=owner, body=body,
                                  allow_private=settings.webhook_allow_private,
                                  resolver=socket.getaddrinfo)
    response.headers["Location"] = f"/v1/webhooks/{hook.id}"
    return WebhookOut.model_validate(hook, from_attributes=True)


@router.get("", summary="List webhooks, newest first")
def list_(session: SessionDep, owner: OwnerDep) -> WebhookList:
    return WebhookList(items=[WebhookOut.model_validate(h, from_attributes=True)
                              for h in service.list_webhooks(session=session, owner=owner)])


@router.get("/{webhook_id}", summary="Get a webhook",
            responses={404: {"description": "no such webhook"}})
def get(webhook_id: WebhookId, session: SessionDep, owner: OwnerDep) -> WebhookOut:
    return WebhookOut.model_validate(
        service.get_webhook(session=session, owner=owner, webhook_id=webhook_id),
        from_attributes=True)


@router.delete("/{webhook_id}", status_code=204, summary="Delete a webhook",
               description="Its pending deliveries are dropped with it.",
               responses={404: {"description": "no such webhook"}})
def delete(webhook_id: WebhookId, session: SessionDep, owner: OwnerDep) -> Response:
    service.delete_webhook(session=session, owner=owner, webhook_id=webhook_id)
    return Response(status_code=204)


@router.get("/{webhook_id}/deliveries", summary="A webhook's deliveries, newest first",
            description="Each with its attempts: the receiver's status code, or the error.",
            responses={404: {"description": "no such webhook"}})
def deliveries(webhook_id: WebhookId, session: SessionDep, owner: OwnerDep,
               limit: PageLimit = PAGE_LIMIT_DEFAULT, cursor: PageCursor = None) -> DeliveryPage:
    items, next_cursor = service.list_deliveries(session=session, owner=owner,
                                                 webhook_id=webhook_id, limit=limit,
                                                 cursor=cursor)
    return DeliveryPage(items=items, next_cursor=next_cursor)
