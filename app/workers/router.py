"""Routes for /v1/workers: the workers that registered themselves. Admin keys only."""

from fastapi import APIRouter

from app.deps import AdminDep, SessionDep, SettingsDep
from app.workers import service
from app.workers.schemas import WorkerList

router = APIRouter(prefix="/v1/workers", tags=["admin"])


@router.get("", summary="Registered workers: host, queues, devices, capacity, liveness",
            responses={403: {"description": "not an admin key"}})
def list_(session: SessionDep, admin: AdminDep, settings: SettingsDep,
          alive: bool = False) -> WorkerList:
    return WorkerList(items=service.list_workers(
        session=session, admin=admin, alive_seconds=settings.worker_alive_seconds,
        alive_only=alive))
