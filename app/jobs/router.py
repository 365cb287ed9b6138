"""Routes for /v1/jobs: thin, each calls one service function."""

from typing import Annotated

from fastapi import APIRouter, Body, Header, Response

from app.deps import (
    PAGE_LIMIT_DEFAULT,
    OwnerDep,
    PageCursor,
    PageLimit,
    SenderDep,
    SessionDep,
    SettingsDep,
    StoreDep,
)
from app.jobs import service
from app.jobs.openapi_examples import JOB_EXAMPLES
from app.jobs.schemas import CheckpointList, JobOut, JobPage, MetricsOut
from app.registry import service as registry_service
from core.lifecycle import JobStatus
from models.spec import JobSpec

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
JobId = Annotated[str, "the job's id"]


@router.post("", status_code=202, summary="Submit a training job",
             responses={202: {"description": "recorded and queued; see Location"},
                        404: {"description": "the dataset does not exist for this key"},
                        403: {"description": "an admin-only option (`priority: urgent`, "
                              "`preemptible: false`) from another key"},
                        422: {"description": "the spec is invalid, or its resources fit no "
                              "set of live workers; the detail names the field"},
                        429: {"description": "too many queued or running jobs, or the owner's "
                              "quota of queued jobs"}})
def create(spec: Annotated[JobSpec, Body(openapi_examples=JOB_EXAMPLES)], session: SessionDep,
           sender: SenderDep, settings: SettingsDep,
           owner: OwnerDep, response: Response,
           idempotency_key: Annotated[str | None, Header(max_length=200)] = None) -> JobOut:
    job, _ = service.create_job(session=session, sender=sender, settings=settings,
                                owner=owner, spec=spec, idempotency_key=idempotency_key)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return service.to_outs(session, [job])[0]


@router.get("", summary="List jobs, newest first")
def list_(session: SessionDep, owner: OwnerDep, settings: SettingsDep,
          status: JobStatus | None = None, limit: PageLimit = PAGE_LIMIT_DEFAULT,
          cursor: PageCursor = None) -> JobPage:
    jobs, next_cursor = service.list_jobs(session=session, owner=owner, status=status,
                                          limit=limit, cursor=cursor)
    return JobPage(items=service.to_outs(session, jobs, settings.max_attempts),
                   next_cursor=next_cursor)


@router.get("/{job_id}", summary="Get a job", responses={404: {"description": "no such job"}})
def get(job_id: JobId, session: SessionDep, owner: OwnerDep, settings: SettingsDep) -> JobOut:
    job = service.get_job(session=session, owner=owner, job_id=job_id)
    return service.to_outs(session, [job], settings.max_attempts)[0]


@router.delete("/{job_id}", status_code=204, summary="Delete a finished job",
               description="The job, its metrics, its checkpoints and its model go, and their "
               "objects leave the artifact store.",
               responses={404: {"description": "no such job"},
                          409: {"description": "the job is queued or running, another job "
                                "starts from its model (init_from), or a registered version "
                                "refers to its model"}})
def delete(job_id: JobId, session: SessionDep, store: StoreDep, owner: OwnerDep) -> Response:
    service.delete_job(session=session, store=store, owner=owner, job_id=job_id,
                       refuses=registry_service.refuses_delete)
    return Response(status_code=204)


@router.post("/{job_id}/cancel", status_code=202, summary="Cancel a job",
             responses={409: {"description": "the job has already ended"}})
def cancel(job_id: JobId, session: SessionDep, owner: OwnerDep) -> JobOut:
    job = service.cancel_job(session=session, owner=owner, job_id=job_id)
    return service.to_outs(session, [job])[0]


@router.get("/{job_id}/metrics", summary="Per-epoch metrics, in order")
def metrics(job_id: JobId, session: SessionDep, owner: OwnerDep) -> MetricsOut:
    return MetricsOut(items=service.job_metrics(session=session, owner=owner, job_id=job_id))


@router.get("/{job_id}/checkpoints", summary="The job's kept checkpoints")
def checkpoints(job_id: JobId, session: SessionDep, owner: OwnerDep) -> CheckpointList:
    return CheckpointList(items=service.job_checkpoints(session=session, owner=owner,
                                                        job_id=job_id))
