"""What GET /v1/workers returns."""

from datetime import datetime

from pydantic import BaseModel, Field


class Devices(BaseModel):
    kind: str = Field(description="cpu or cuda")
    count: int = Field(description="CPU cores, or GPUs")


class WorkerOut(BaseModel):
    name: str = Field(description="the worker process, host:pid")
    host: str
    queues: list[str]
    devices: Devices = Field(description="on its gpu queue if it has one, else its cpu one")
    concurrency: int = Field(description="jobs (or gang nodes) it runs at once")
    max_procs: int = Field(description="training processes it may start for one job "
                           "(resources.procs_per_node): its GPUs, or on CPU its cores or "
                           "TRAINSERVE_WORKER_PROCS")
    started_at: datetime | None
    last_seen: datetime = Field(description="its reconciler's last pass")
    alive: bool = Field(description="seen within TRAINSERVE_WORKER_ALIVE_SECONDS")
    gang_job_id: str | None = Field(None, description="the job whose gang it is a member of "
                                    "(forming or running), if any")


class WorkerList(BaseModel):
    items: list[WorkerOut]
