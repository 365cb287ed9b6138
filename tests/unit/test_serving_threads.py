"""The inference thread's cores: a lone request's forward pass widens onto free cores only."""

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from app.serving.threads import RunnableCount, ThreadPolicy


@pytest.fixture(autouse=True)
def restore_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


class Runnable(RunnableCount):
    def __init__(self, count: int | None) -> None:
        self.count = count

    def __call__(self) -> int | None:
        return self.count


def test_a_lone_request_widens_onto_free_cores_and_concurrent_ones_do_not() -> None:
    runnable = Runnable(1)  # only the inference thread itself
    policy = ThreadPolicy(1, 2, cpus=2, runnable=runnable)
    policy(True)
    assert torch.get_num_threads() == 2 and policy.widened == 1
    policy(False)
    assert torch.get_num_threads() == 1
    runnable.count = 2  # something else runs: the second core is not free
    policy(True)
    assert torch.get_num_threads() == 1 and policy.widened == 1


def test_without_a_runnable_count_a_lone_request_widens() -> None:
    policy = ThreadPolicy(1, 4, cpus=4, runnable=Runnable(None))
    policy(True)
    assert torch.get_num_threads() == 4


def test_idle_threads_never_narrow_below_the_inference_threads() -> None:
    policy = ThreadPolicy(3, 1, cpus=8, runnable=Runnable(1))
    policy(True)
    assert torch.get_num_threads() == 3 and policy.widened == 0


def test_runnable_count_reads_the_kernels_fourth_field(tmp_path: Path) -> None:
    loadavg = tmp_path / "loadavg"
    loadavg.write_text("0.52 0.58 0.59 3/467 12345\n")
    count = RunnableCount(str(loadavg))
    assert count() == 3
    loadavg.write_text("1.00 0.58 0.59 17/467 12346\n")
    assert count() == 17  # read afresh each time
    count.close()
    assert count() is None
    assert RunnableCount(str(tmp_path / "absent"))() is None
    loadavg.write_text("garbage\n")
    assert RunnableCount(str(loadavg))() is None


def test_the_real_count_includes_this_thread() -> None:
    count = RunnableCount()()
    if count is None:
        pytest.skip("no /proc/loadavg here")
    assert count >= 1


def test_the_policy_sets_the_calling_threads_torch_threads() -> None:
    """torch's thread count is per thread (OpenMP): the policy acts on the inference thread
    that calls it."""
    seen: list[int] = []
    policy = ThreadPolicy(1, 2, cpus=2, runnable=Runnable(1))

    def inference_thread() -> None:
        policy(True)
        seen.append(torch.get_num_threads())
    thread = threading.Thread(target=inference_thread)
    thread.start()
    thread.join()
    assert seen == [2]
