"""Data-parallel training (issue 19): the per-rank split of every global batch, the weights
of the shares, and the seed MLP on 2 processes against 1 (acceptance 1)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from models.data import load_builtin
from models.spec import JobSpec
from tests.integration.specs import SEED_MLP
from tests.numerics import REDUCTION_ORDER
from tests.unit.recording_callbacks import RecordingCallbacks
from workers import distributed
from workers import rank as rank_module
from workers.distributed import NodeAssignment, agent_command, batch_share
from workers.faults import TrainingError
from workers.node_channel import REASONS, STOP_CODES, NodeChannel
from workers.trainer import Trainer

ROOT = Path(__file__).resolve().parents[2]
CPU = torch.device("cpu")


# -- the split ---------------------------------------------------------------------------------

def _epoch_shares(n: int, size: int, world: int) -> list[list[tuple[int, int]]]:
    """Each global batch of an epoch of n examples: the positions [lo, hi) of each rank,
    as RankTrainer.share takes them (the last batch may be short)."""
    batches = []
    for start in range(0, n, size):
        batch = min(size, n - start)
        batches.append([(start + lo, start + hi)
                        for lo, hi in (batch_share(batch, rank, world) for rank in range(world))])
    return batches


@pytest.mark.parametrize("n", [1, 5, 64, 100, 1437])
@pytest.mark.parametrize("size", [1, 3, 64, 100, 2048])
@pytest.mark.parametrize("world", [1, 2, 3, 4, 7])
def test_every_example_is_in_exactly_one_share_each_epoch(n: int, size: int,
                                                          world: int) -> None:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(n * size + world))
    seen = []
    for shares in _epoch_shares(n, size, world):
        sizes = [hi - lo for lo, hi in shares]
        assert max(sizes) - min(sizes) <= 1  # balanced, whatever divides what
        assert sum(sizes) == min(size, n - shares[0][0])  # the whole global batch
        for lo, hi in shares:
            seen.extend(order[lo:hi].tolist())
    assert sorted(seen) == list(range(n))  # each example once: none twice, none left out


def test_a_batch_smaller_than_the_world_leaves_some_shares_empty() -> None:
    assert [batch_share(2, rank, 4) for rank in range(4)] == [(0, 0), (0, 1), (1, 1), (1, 2)]


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize(("batch", "world"), [(100, 2), (7, 3), (3, 4), (1, 2)])
def test_weighted_shares_average_to_the_whole_batch_gradient(batch: int, world: int) -> None:
    """What DDP computes, in one process: the mean over ranks of each share's gradient,
    weighted as RankTrainer weights it, is the gradient of the whole batch's mean loss,
    for uneven and empty shares too."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    x, y = torch.randn(batch, 8), torch.randint(0, 3, (batch,))
    whole = torch.autograd.grad(torch.nn.functional.cross_entropy(model(x), y),
                                list(model.parameters()))
    averaged = [torch.zeros_like(g) for g in whole]
    for rank in range(world):
        lo, hi = batch_share(batch, rank, world)
        logits = model(x[lo:hi])
        weight = (hi - lo) * world / batch
        objective = (torch.nn.functional.cross_entropy(logits, y[lo:hi]) * weight if weight
                     else logits.sum() * 0.0)
        for total, g in zip(averaged, torch.autograd.grad(objective, list(model.parameters())),
                            strict=True):
            total += g / world
    for a, b in zip(averaged, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


# -- the stop flag and the agent's command -----------------------------------------------------

def test_the_node_channel_keeps_the_highest_reason(tmp_path: Path) -> None:
    channel = NodeChannel.create(tmp_path / "channel")
    reader = NodeChannel(tmp_path / "channel")  # a rank's own mapping of the same file
    assert reader.stop_code() == 0
    channel.set_stop("cancel")
    channel.set_stop("shutdown")  # lower: the cancel stays
    channel.set_stop(None)
    assert REASONS[reader.stop_code()] == "cancel"
    channel.set_stop("lease_lost")
    assert REASONS[reader.stop_code()] == "lease_lost"
    reader.examples = 1437
    assert channel.examples == 1437
    assert sorted(STOP_CODES.values()) == list(range(1, len(STOP_CODES) + 1))


def test_only_node_0_hosts_the_rendezvous_store(tmp_path: Path) -> None:
    def command(node_rank: int) -> list[str]:
        return agent_command(tmp_path, NodeAssignment(
            node_rank=node_rank, nnodes=2, procs_per_node=3, rdzv_endpoint="10.0.0.1:29400",
            run_id="job-1", max_restarts=2))
    first, second = command(0), command(1)
    assert "--rdzv-conf=is_host=true,join_timeout=60" in first
    assert any(arg.startswith("--rdzv-conf=is_host=false") for arg in second)
    for args in (first, second):
        assert {"--nnodes=2", "--nproc-per-node=3", "--rdzv-backend=c10d",
                "--rdzv-endpoint=10.0.0.1:29400", "--rdzv-id=job-1",
                "--max-restarts=2"} <= set(args)
        assert args[-3:] == ["-m", "workers.rank", str(tmp_path)]


# -- acceptance 1: 2 processes against 1 -------------------------------------------------------

def _seed_mlp(epochs: int) -> JobSpec:
    # The seed MLP has no dropout (its spec leaves dropout at 0): the ranks then compute
    # exactly the 1-process run's gradients, split. With dropout each rank draws its own
    # masks (workers/rank.py), so weights would match in distribution only.
    spec = JobSpec.model_validate({**SEED_MLP, "training": {**SEED_MLP["training"],
                                                           "epochs": epochs}})
    assert spec.model.dropout == 0
    return spec


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ranks' runs (tests/unit/ddp_ranks.py) under torch's elastic launcher."""
    out = tmp_path_factory.mktemp("ddp")
    (out / "spec.json").write_text(_seed_mlp(5).model_dump_json())
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
         "--monitor-interval=0.1", "-m", "tests.unit.ddp_ranks", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.fixture(scope="module")
def one_process() -> tuple[dict[str, torch.Tensor], list[tuple[int, dict[str, Any]]]]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        spec = _seed_mlp(5)
        trainer = Trainer(spec, load_builtin("digits", None), CPU)
        hooks = RecordingCallbacks()
        assert trainer.run(hooks) == "succeeded"
        return trainer.model.state_dict(), hooks.epochs
    finally:
        torch.set_num_threads(threads)


def _max_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


def test_two_processes_end_with_the_weights_of_one(two_ranks: Path, one_process: Any) -> None:
    weights, rows = one_process
    ranked = load_file(two_ranks / "whole.safetensors")
    assert _max_difference(ranked, weights) < REDUCTION_ORDER
    assert _max_difference(ranked, {k: torch.zeros_like(v) for k, v in weights.items()}) > 0.1
    ranked_rows = json.loads((two_ranks / "whole.json").read_text())
    assert [epoch for epoch, _ in ranked_rows] == [1, 2, 3, 4, 5]
    for (_, theirs), (_, ours) in zip(ranked_rows, rows, strict=True):
        for name in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert theirs[name] == pytest.approx(ours[name], rel=1e-5), name


def test_the_stop_flag_is_all_reduced_every_few_batches_alike_on_every_rank(
        two_ranks: Path) -> None:
    counts = [json.loads((two_ranks / f"checks-{rank}.json").read_text()) for rank in (0, 1)]
    assert counts[0] == counts[1]  # the same batches checked: a stop lands on the same one
    assert counts[0]["batches"] == 75
    assert 1 < counts[0]["checks"] < 75


def test_a_reason_one_rank_sees_stops_every_rank_at_the_same_batch(two_ranks: Path) -> None:
    stops = [json.loads((two_ranks / f"stop-{rank}.json").read_text()) for rank in (0, 1)]
    assert stops[0] == stops[1]
    assert stops[0]["reason"] == "cancel"
    assert (stops[0]["epoch"], stops[0]["batch_start"]) == (1, 700)  # check 23: batch 8 of 2


def test_a_run_stopped_mid_epoch_resumes_to_the_same_weights(two_ranks: Path,
                                                             one_process: Any) -> None:
    weights, rows = one_process
    resumed = load_file(two_ranks / "resumed.safetensors")
    assert _max_difference(resumed, load_file(two_ranks / "whole.safetensors")) < 1e-6
    assert _max_difference(resumed, weights) < REDUCTION_ORDER
    resumed_rows = json.loads((two_ranks / "resumed.json").read_text())
    assert [epoch for epoch, _ in resumed_rows] == [2, 3, 4, 5]
    # The interrupted epoch's training loss counts every rank's share once.
    assert resumed_rows[0][1]["train_loss"] == pytest.approx(rows[1][1]["train_loss"],
                                                             rel=1e-5)


# -- what the node's child makes of its agent's end --------------------------------------------

NODE = NodeAssignment(node_rank=0, nnodes=1, procs_per_node=2, rdzv_endpoint="127.0.0.1:0",
                      run_id="job-1", max_restarts=0)
# Stand-ins for the agent: each is `python -c` with the run dir as its argument.
GONE = "import sys; sys.exit(1)"
SUCCEEDED = ("import json, pathlib, sys; d = pathlib.Path(sys.argv[1]); "
             "(d / 'result-1.json').write_text(json.dumps({'outcome': 'succeeded'})); "
             "(d / 'result-0.json').write_text(json.dumps("
             "{'outcome': 'succeeded', 'model_epoch': 3, 'test_metrics': {}}))")
SILENT = "pass"
ONE_FAILS = ("import json, pathlib, sys, time; d = pathlib.Path(sys.argv[1]); "
             "(d / 'result-1.json').write_text(json.dumps("
             "{'outcome': 'failed', 'error': 'boom', 'abort': True})); time.sleep(60)")
OBEYS = ("import json, pathlib, sys, time; from workers.node_channel import NodeChannel, "
         "REASONS; d = pathlib.Path(sys.argv[1]); c = NodeChannel(d / 'node.channel')\n"
         "while not c.stop_code(): time.sleep(0.01)\n"
         "(d / 'result-0.json').write_text(json.dumps("
         "{'outcome': REASONS[c.stop_code()], 'model_epoch': 1}))")


def _supervised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str,
                reason: str | None = None) -> tuple[str, dict[str, Any]]:
    monkeypatch.setattr(distributed, "agent_command",
                        lambda run_dir, node: [sys.executable, "-c", script, str(run_dir)])
    monkeypatch.setattr(distributed, "ABORT_GRACE_SECONDS", 0.2)
    channel = NodeChannel.create(tmp_path / distributed.CHANNEL_FILE)
    try:
        return distributed._supervise(tmp_path, NODE, channel, lambda: reason)
    finally:
        channel.close()


def test_an_agent_that_gave_up_is_a_lost_gang(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    assert _supervised(tmp_path, monkeypatch, GONE) == (distributed.GANG_LOST, {})
    assert _supervised(tmp_path, monkeypatch, SILENT) == (distributed.GANG_LOST, {})


def test_the_outcome_is_local_rank_0s_result(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    outcome, result = _supervised(tmp_path, monkeypatch, SUCCEEDED)
    assert (outcome, result["model_epoch"]) == ("succeeded", 3)


def test_a_rank_that_failed_alone_ends_its_agent_and_the_job_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started = time.monotonic()
    outcome, result = _supervised(tmp_path, monkeypatch, ONE_FAILS)
    assert (outcome, result["error"]) == ("failed", "boom")
    assert time.monotonic() - started < 10  # not the agent's 60 s


def test_the_nodes_stop_reason_reaches_its_ranks(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    assert _supervised(tmp_path, monkeypatch, OBEYS, reason="shutdown")[0] == "shutdown"


def test_a_failed_collective_is_the_gangs_trouble_not_the_jobs() -> None:
    def wrapped(cause: BaseException) -> TrainingError:  # as runner.own_fault wraps it
        error = TrainingError(f"training raised {type(cause).__name__}: {cause}")
        error.__cause__ = cause
        return error
    peer_gone = RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] "
                             "Connection closed by peer [127.0.0.1]:40123")
    gangs = rank_module._collective_failure
    assert gangs(wrapped(peer_gone))
    assert gangs(wrapped(torch.distributed.DistBackendError("NCCL error")))
    assert not gangs(TrainingError("training loss became nan at epoch 3"))
    assert not gangs(wrapped(ValueError("bad shape")))
