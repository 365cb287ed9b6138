"""Routes for /v1/sweeps: thin, each calls one service function."""

from typing import Annotated

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.deps import (
    PAGE_LIMIT_DEFAULT,
    OwnerDep,
    PageCursor,
    PageLimit,
    SenderDep,
    SessionDep,
    SettingsDep,
)
from app.sweeps import events as sweep_events
from app.sweeps import service
from app.sweeps.schemas import SweepOut, SweepPage
from core.sweeps.spec import SweepSpec

router = APIRouter(prefix="/v1/sweeps", tags=["sweeps"])
SweepId = Annotated[str, "the sweep's id"]


@router.post("", status_code=202, summary="Start a hyperparameter sweep",
             responses={202: {"description": "recorded; its first trials are queued"},
                        404: {"description": "the base spec's dataset does not exist"},
                        422: {"description": "the sweep is invalid; the detail names the "
                              "field (space paths by their dotted path)"}})
def create(body: SweepSpec, request: Request, session: SessionDep, sender: SenderDep,
           settings: SettingsDep, owner: OwnerDep, response: Response) -> SweepOut:
    sweep = service.create_sweep(session=session, sessions=request.app.state.sessions,
                                 sender=sender, settings=settings, owner=owner, body=body)
    response.headers["Location"] = f"/v1/sweeps/{sweep.id}"
    return service.to_out(session, sweep)


@router.get("", summary="List sweeps, newest first")
def list_(session: SessionDep, owner: OwnerDep, limit: PageLimit = PAGE_LIMIT_DEFAULT,
          cursor: PageCursor = None) -> SweepPage:
    sweeps, next_cursor = service.list_sweeps(session=session, owner=owner, limit=limit,
                                              cursor=cursor)
    return SweepPage(items=[service.to_out(session, s) for s in sweeps],
                     next_cursor=next_cursor)


@router.get("/{sweep_id}", summary="Get a sweep, its trials and its best trial",
            responses={404: {"description": "no such sweep"}})
def get(sweep_id: SweepId, session: SessionDep, owner: OwnerDep) -> SweepOut:
    return service.to_out(session, service.get_sweep(session=session, owner=owner,
                                                     sweep_id=sweep_id))


@router.post("/{sweep_id}/cancel", status_code=202, summary="Cancel a sweep",
             responses={409: {"description": "the sweep has already ended"}})
def cancel(sweep_id: SweepId, session: SessionDep, owner: OwnerDep) -> SweepOut:
    return service.to_out(session, service.cancel_sweep(session=session, owner=owner,
                                                        sweep_id=sweep_id))


def _check_owner(request: Request, owner: OwnerDep, sweep_id: str) -> None:
    with request.app.state.sessions() as session:
        service.get_sweep(session=session, owner=owner, sweep_id=sweep_id)


@router.get("/{sweep_id}/events", summary="Trial and sweep events (Server-Sent Events)",
            description=sweep_events.EVENTS_DESCRIPTION, response_class=StreamingResponse,
            responses={200: {"description": "the event stream; it ends with the sweep's end",
                             "content": {"text/event-stream": {}}},
                       404: {"description": "no such sweep"}})
async def events(sweep_id: SweepId, request: Request, owner: OwnerDep) -> Response:
    await run_in_threadpool(_check_owner, request, owner, sweep_id)
    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    return StreamingResponse(sweep_events.stream(request.app.state.sessions, sweep_id),
                             media_type="text/event-stream", headers=headers)
