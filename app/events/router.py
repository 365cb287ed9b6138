"""GET /v1/jobs/{id}/events: the job's live status and metrics as Server-Sent Events."""

from typing import Annotated

from fastapi import APIRouter, Header, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.deps import OwnerDep
from app.events import service
from core.lifecycle import JobStatus

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

_RUNNING, _SUCCEEDED = JobStatus.RUNNING.value, JobStatus.SUCCEEDED.value
_EXAMPLE = (f'id: 0:{_RUNNING}\nevent: status\ndata: {{"status":"{_RUNNING}","epoch":0,'
            '"epochs":3,"error":null,"model_id":null,"metrics":null}\n\n'
            'id: 1\nevent: metrics\ndata: {"epoch":1,"train_loss":1.52,"val_loss":1.31}\n\n'
            f'id: 3:{_SUCCEEDED}\nevent: status\ndata: {{"status":"{_SUCCEEDED}","epoch":3,'
            '"epochs":3,"error":null,"model_id":"…","metrics":{"epoch":3,"train_loss":0.41}}\n\n')


@router.get(
    "/{job_id}/events", summary="Live status and metric events (Server-Sent Events)",
    description=service.EVENTS_DESCRIPTION, response_class=StreamingResponse,
    responses={200: {"description": "the event stream; it ends with the final status",
                     "content": {"text/event-stream": {"example": _EXAMPLE}}},
               204: {"description": "the job has ended and `Last-Event-ID` is its final event"},
               404: {"description": "no such job"},
               422: {"description": "`Last-Event-ID` is not an id of this stream"}})
async def events(
    job_id: str, request: Request, owner: OwnerDep,
    last_event_id: Annotated[str | None, Header(
        alias="Last-Event-ID", max_length=64,
        description="the last id received; the stream resumes after it")] = None,
) -> Response:
    cursor = service.parse_event_id(last_event_id)
    sessions = request.app.state.sessions
    status = await run_in_threadpool(service.current_status, sessions, owner, job_id)
    if status in service.TERMINAL and cursor.status == status:
        return Response(status_code=204)
    # no-transform and X-Accel-Buffering: proxies (nginx) must pass events on as they come.
    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    return StreamingResponse(service.stream(sessions, job_id, cursor),
                             media_type="text/event-stream", headers=headers)
