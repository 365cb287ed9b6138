"""One node's share of a data-parallel job (issue 19): torch.distributed's elastic agent for
its P processes, supervised from the Celery child that claimed the job.

    Celery child (run_node) ── its lease, cancel watch, SIGTERM, time limit ─┐ node channel
      └─ python -m workers.agent  (torch.distributed.run: rendezvous, restarts)│ (mapped file)
           └─ P x python -m workers.rank  (DDP; local rank 0 of node 0 records)┘

The agent runs in a subprocess of its own session, not in-process through
`elastic_launch`: in-process, its PContext installs SIGTERM/SIGINT handlers in the Celery
child's main thread that raise into the agent loop (torch/distributed/elastic/
multiprocessing/api.py), which would replace the child's graceful-shutdown flag
(workers/shutdown.py) and turn a worker's warm shutdown into killed ranks; and a callable
entrypoint would pickle its arguments and results across processes. As a subprocess the
agent takes plain arguments, its ranks read the job from a JSON file, and the outcome comes
back as JSON files written by the ranks; a SIGTERM stays the child's to turn into a stop
flag that every rank obeys at the same batch. Each level dies with its parent (PDEATHSIG),
so a SIGKILLed worker leaves no rank behind.
"""

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from core.lifecycle import FailureKind, JobStatus, StopReason
from models.spec import JobSpec
from workers import lease, recorder, shutdown
from workers.cancel import CancelWatch
from workers.node_channel import NodeChannel, code_of
from workers.recorder import LeaseLost
from workers.runner import record_end
from workers.runtime import Runtime

log = logging.getLogger(__name__)

# What run_node returns when the gang itself was lost: a rank or node died beyond
# max_restarts, or the rendezvous failed (a peer node never came or died). Nothing is
# recorded for it: the job is not failed; the control side hands it back to the queue.
GANG_LOST = "gang_lost"
# Restarts of a one-node gang (resources.nodes == 1) before it is lost; each resumes from
# the latest checkpoint.
LOCAL_MAX_RESTARTS = 2
# How long agents wait for each other at a rendezvous: the gang was formed before the
# launch, so a peer that is not there by then is gone.
RDZV_JOIN_SECONDS = 60
SUPERVISE_SECONDS = 0.05  # the child's loop: stop flag out, usage and faults in
AGENT_STOP_SECONDS = 10.0  # after a SIGTERM to the agent, before its SIGKILL
ABORT_GRACE_SECONDS = 5.0  # for the other ranks to end after one ended the gang alone
TASK_FILE, CHANNEL_FILE = "task.json", "node.channel"
RUN_DIR_PREFIX = "trainserve-gang-"
# What the ranks' result files may say besides a JobStatus or StopReason value.
FAILED = JobStatus.FAILED


@dataclass(frozen=True)
class NodeAssignment:
    """Where this node stands in the gang of one job attempt."""

    node_rank: int  # 0..nnodes-1; node 0 hosts the rendezvous and records the job
    nnodes: int
    procs_per_node: int
    rdzv_endpoint: str  # "host:port" on node 0 (c10d rendezvous store)
    run_id: str  # unique per gang attempt (e.g. f"{job_id}-{attempt}")
    max_restarts: int  # elastic restarts of this gang before it gives up


def batch_share(size: int, rank: int, world: int) -> tuple[int, int]:
    """The positions [lo, hi) of a batch of `size` examples that `rank` of `world` trains
    on: contiguous shares whose sizes differ by one at most, together each position once
    (an empty share when the batch is smaller than the world)."""
    return rank * size // world, (rank + 1) * size // world


def single_node(claimed: lease.Claim) -> NodeAssignment | None:
    """The assignment of a one-node job with several processes (resources.nodes == 1,
    procs_per_node > 1), whose gang is this worker alone; None for any other job."""
    resources = JobSpec.model_validate(claimed.spec).resources
    if resources.nodes != 1 or resources.procs_per_node == 1:
        return None
    # Port 0: the rendezvous store binds a free port itself (no race for one picked here).
    return NodeAssignment(node_rank=0, nnodes=1, procs_per_node=resources.procs_per_node,
                          rdzv_endpoint="127.0.0.1:0",
                          run_id=f"{claimed.job_id}-{uuid.uuid4().hex[:12]}",
                          max_restarts=LOCAL_MAX_RESTARTS)


def run_node(rt: Runtime, claimed: lease.Claim, node: NodeAssignment) -> str:
    """This node's share of a job, run in the Celery child: the elastic agent for its P
    processes (`torch.distributed.run` in a subprocess), which rendezvous with the other
    nodes' agents at `node.rdzv_endpoint` and train one DistributedDataParallel model.

    Node 0's child holds the job's lease (its heartbeat and cancel watch) and records the
    end exactly as workers/runner.py run_job does; its local rank 0 records metrics and
    checkpoints. Every node's child turns its stop reasons (SIGTERM, the time limit, and on
    node 0 cancel, preempt and a lost lease) into a flag its ranks combine with one
    all_reduce (MAX) per batch, so all ranks stop at the same batch.

    Returns the gang's outcome on every node (JobStatus.SUCCEEDED, JobStatus.FAILED or a
    StopReason value; only node 0 records it), or GANG_LOST when the gang was lost, in
    which case nothing is recorded and the job is still `running` under node 0's lease.
    """
    spec = JobSpec.model_validate(claimed.spec)
    limit = spec.training.time_limit_seconds or rt.settings.job_time_limit_seconds
    deadline = claimed.started_at.timestamp() + limit if limit else None
    # Named after the job, so that an operator (and a test) can tell whose ranks run.
    with tempfile.TemporaryDirectory(prefix=f"{RUN_DIR_PREFIX}{claimed.job_id}-") as tmp:
        run_dir = Path(tmp)
        channel = NodeChannel.create(run_dir / CHANNEL_FILE)
        _write_task(run_dir, rt, claimed, node)
        try:
            if node.node_rank != 0:
                outcome, _ = _supervise(run_dir, node, channel, lambda: _node_reason(deadline))
                return outcome
            # Node 0 holds the job's lease, so its beats charge the whole gang's processes.
            with (lease.Heartbeat(rt, claimed.job_id, since=claimed.claimed_at,
                                  devices=node.nnodes * node.procs_per_node) as heartbeat,
                  CancelWatch(rt, claimed.job_id, heartbeat)):
                def reason() -> str | None:
                    heartbeat.examples = channel.examples
                    return max((r for r in (_node_reason(deadline), heartbeat.reason) if r),
                               key=code_of, default=None)

                outcome, result = _supervise(run_dir, node, channel, reason)
                heartbeat.examples = channel.examples
                heartbeat.settle()
                return _record(rt, claimed.job_id, outcome, result, limit)
        finally:
            channel.close()


def _node_reason(deadline: float | None) -> str | None:
    if shutdown.requested():
        return StopReason.SHUTDOWN
    if deadline is not None and time.time() > deadline:
        return StopReason.TIME_LIMIT
    return None


def _write_task(run_dir: Path, rt: Runtime, claimed: lease.Claim, node: NodeAssignment) -> None:
    """What each rank needs to know of the job: it reads it from this file."""
    task = {"job_id": claimed.job_id, "spec": claimed.spec, "queue": claimed.queue,
            "sweep_id": claimed.sweep_id, "worker": rt.name, "node": asdict(node),
            # The torch threads of the node's child, shared out between its ranks.
            "threads": max(1, torch.get_num_threads() // node.procs_per_node)}
    (run_dir / TASK_FILE).write_text(json.dumps(task))


def agent_command(run_dir: Path, node: NodeAssignment) -> list[str]:
    """torch.distributed.run's arguments for this node: a fixed-size gang (min = max =
    nnodes) on the c10d rendezvous of node 0, whose agent hosts the store (is_host set
    explicitly: two workers of one machine would both match a loopback endpoint)."""
    conf = f"is_host={'true' if node.node_rank == 0 else 'false'},join_timeout={RDZV_JOIN_SECONDS}"
    return [sys.executable, "-m", "workers.agent",
            f"--nnodes={node.nnodes}", f"--nproc-per-node={node.procs_per_node}",
            "--rdzv-backend=c10d", f"--rdzv-endpoint={node.rdzv_endpoint}",
            f"--rdzv-id={node.run_id}", f"--rdzv-conf={conf}",
            f"--max-restarts={node.max_restarts}", "--monitor-interval=0.1",
            "-m", "workers.rank", str(run_dir)]


def _supervise(run_dir: Path, node: NodeAssignment, channel: NodeChannel,
               reason: Callable[[], str | None]) -> tuple[str, dict[str, Any]]:
    """Run the agent to its end, passing the node's stop reasons to the ranks; returns the
    gang's outcome and the result of this node's local rank 0."""
    env = {**os.environ, "TRAINSERVE_PARENT_PID": str(os.getpid()),
           # Threads are set by each rank (workers/rank.py); this only silences the agent's
           # warning that it set OMP_NUM_THREADS=1 on its own.
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"),
           # The ranks' store is a new one per attempt, hosted by rank 0 on a free port, not
           # the agent's rendezvous store shared across attempts: with that one (torch's
           # default since 2.5), a gang restarted after a rank died read the dead attempt's
           # gloo addresses from it and failed to connect every time (reproduced on torch
           # 2.13; pytorch/pytorch#135712, #167288).
           "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1"}
    agent = subprocess.Popen(agent_command(run_dir, node), env=env, start_new_session=True)
    abort_by: float | None = None
    try:
        while agent.poll() is None:
            stop = reason()
            channel.set_stop(stop)
            if abort_by is None and stop == StopReason.LEASE_LOST:
                # Node 0's job is not its gang's any more (the control side lost the gang
                # when a peer died): nothing of this run can be recorded, and its agent may
                # wait at a rendezvous for that peer. The ranks get the moment of an abort.
                abort_by = time.monotonic() + ABORT_GRACE_SECONDS
            if abort_by is None and _aborted(run_dir) is not None:
                # A rank ended alone (the job's own fault, its lease lost): its peers exit as
                # well if they failed alike, else they wait for it at their next collective,
                # and a restart would fail again. They get a moment to write their results.
                abort_by = time.monotonic() + ABORT_GRACE_SECONDS
            if abort_by is not None and time.monotonic() > abort_by:
                _stop_agent(agent)
                break
            time.sleep(SUPERVISE_SECONDS)
        channel.set_stop(reason())
    except BaseException:
        _stop_agent(agent)
        raise
    aborted = _aborted(run_dir)
    if aborted is not None:
        return str(aborted["outcome"]), aborted
    log.info("the agent of %s exited with %s", node.run_id, agent.returncode)
    if agent.returncode != 0:
        log.warning("the gang of %s is lost: its agent exited with %s", node.run_id,
                    agent.returncode)
        return GANG_LOST, {}
    result = _read_result(run_dir, 0)
    if result is None:  # the agent said all its ranks succeeded: they always write one
        log.error("the ranks of %s ended without a result", node.run_id)
        return GANG_LOST, {}
    return str(result["outcome"]), result


def _read_result(run_dir: Path, local_rank: int) -> dict[str, Any] | None:
    path = run_dir / f"result-{local_rank}.json"
    with contextlib.suppress(FileNotFoundError):
        return json.loads(path.read_text())
    return None


def _aborted(run_dir: Path) -> dict[str, Any] | None:
    """The result of a rank that ended the gang alone, local rank 0's first."""
    for path in sorted(run_dir.glob("result-*.json"), key=lambda p: int(p.stem[7:])):
        result = json.loads(path.read_text())
        if result.get("abort"):
            return result
    return None


def _stop_agent(agent: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the agent's session (it stops its ranks), SIGKILL if it lingers."""
    for sig, wait in ((signal.SIGTERM, AGENT_STOP_SECONDS), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(agent.pid, sig)
        try:
            agent.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _record(rt: Runtime, job_id: str, outcome: str, result: dict[str, Any],
            limit: float | None) -> str:
    """Node 0: record the gang's end as the single-process runner does."""
    try:
        if outcome == FAILED:
            recorder.fail(rt, job_id, str(result.get("error") or "a rank failed"),
                          FailureKind.USER)
            return outcome
        if outcome in (GANG_LOST, StopReason.LEASE_LOST, StopReason.WRITE_FAILED):
            # Nothing to record: the gang is lost (the control side hands the job back), the
            # job is another worker's, or its writes failed (it is retried once the lease
            # runs out, as when run_job raises).
            return outcome
        return record_end(rt, job_id, outcome, model_epoch=int(result["model_epoch"]),
                          test_metrics=result.get("test_metrics") or {}, limit=limit)
    except LeaseLost:
        log.warning("job %s: lease lost, another worker owns it now", job_id)
        return StopReason.LEASE_LOST
