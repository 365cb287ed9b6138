"""`python -m workers.agent ARGS`: torch.distributed.run, the elastic agent of one node of a
data-parallel job (workers/distributed.py starts it), bound to die with the Celery child
that started it, so that a worker killed outright leaves no agent behind."""

import os
import sys
import traceback

from torch.distributed.run import main as torchrun

from workers.orphans import die_with_parent, end_now


def main(argv: list[str]) -> int:
    try:
        torchrun(argv)
    except SystemExit as exc:  # torchrun's own exit: a failed gang's, with its status
        return exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


if __name__ == "__main__":
    die_with_parent(int(os.environ.get("TRAINSERVE_PARENT_PID", "0")) or None)
    end_now(main(sys.argv[1:]))
