"""One node's share of a data-parallel job (issue 19): torch.distributed's elastic agent for
its P processes, supervised from the Celery child that claimed the job.

STUB: the interface the control side codes against; the body follows.
"""

from dataclasses import dataclass

from workers import lease
from workers.runtime import Runtime

# What run_node returns when the gang itself was lost: a rank or node died beyond
# max_restarts, or the rendezvous failed (a peer node never came or died). Nothing is
# recorded for it: the job is not failed; the control side hands it back to the queue.
GANG_LOST = "gang_lost"


@dataclass(frozen=True)
class NodeAssignment:
    """Where this node stands in the gang of one job attempt."""

    node_rank: int  # 0..nnodes-1; node 0 hosts the rendezvous and records the job
    nnodes: int
    procs_per_node: int
    rdzv_endpoint: str  # "host:port" on node 0 (c10d rendezvous store)
    run_id: str  # unique per gang attempt (e.g. f"{job_id}-{attempt}")
    max_restarts: int  # elastic restarts of this gang before it gives up


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
    raise NotImplementedError
