"""`python -m workers.agent ARGS`: torch.distributed.run, the elastic agent of one node of a
data-parallel job (workers/distributed.py starts it), bound to die with the Celery child
that started it, so that a worker killed outright leaves no agent behind."""

import os
import sys

from torch.distributed.run import main as torchrun

from workers.orphans import die_with_parent

if __name__ == "__main__":
    die_with_parent(int(os.environ.get("TRAINSERVE_PARENT_PID", "0")) or None)
    torchrun(sys.argv[1:])
