"""The checkpoint format: whole or absent, hash-checked, never unpickled, paths confined."""

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save

from models import checkpoint as ckpt
from models.checkpoint import CheckpointError

JOB_ID = "0123456789abcdef0123456789ab"


def _sample() -> tuple[dict[str, torch.Tensor], dict]:
    gen = torch.Generator().manual_seed(0)
    tensors = {
        "model.w": torch.randn(3, 4, generator=gen),
        "model.b": torch.zeros(4),
        "optim.0.step": torch.tensor(7.0),
        "ids": torch.arange(5),
        "rng.torch": torch.get_rng_state(),
    }
    meta = {"arch": "mlp", "config": {"input_dim": 4, "hidden_sizes": [3]}, "epoch": 2,
            "metrics": {"train_loss": 0.5}, "data": {"vocab": ["a", "é"]}}
    return tensors, meta


def _saved(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "c.safetensors"
    sha, _ = ckpt.save(path, *_sample())
    return path, sha


# -- round trip -------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path: Path) -> None:
    tensors, meta = _sample()
    path = tmp_path / "jobs" / JOB_ID / "epoch-000002.safetensors"
    sha, size = ckpt.save(path, tensors, meta)
    data = path.read_bytes()
    assert size == len(data)
    assert sha == hashlib.sha256(data).hexdigest()
    loaded, loaded_meta = ckpt.load(path, sha)
    assert loaded.keys() == tensors.keys()
    for name, tensor in tensors.items():
        assert loaded[name].dtype == tensor.dtype
        assert torch.equal(loaded[name], tensor), name
    assert loaded_meta == {"format": ckpt.FORMAT, **meta}


def test_decode_inverts_encode() -> None:
    tensors, meta = _sample()
    loaded, loaded_meta = ckpt.decode(ckpt.encode(tensors, meta))
    assert all(torch.equal(loaded[k], v) for k, v in tensors.items())
    assert loaded_meta["epoch"] == 2


# -- refused files ----------------------------------------------------------------------------

def test_load_with_wrong_sha256_is_refused(tmp_path: Path) -> None:
    path, sha = _saved(tmp_path)
    with pytest.raises(CheckpointError):
        ckpt.load(path, "0" * 64)
    with pytest.raises(CheckpointError):
        ckpt.load(path, sha.upper())


def test_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        ckpt.load(tmp_path / "absent.safetensors", "0" * 64)


def test_truncated_file_is_refused(tmp_path: Path) -> None:
    path, sha = _saved(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[:-10])
    with pytest.raises(CheckpointError):
        ckpt.load(path, sha)
    # and even without the hash, a truncated file does not decode
    with pytest.raises(CheckpointError):
        ckpt.decode(data[:-10])
    with pytest.raises(CheckpointError):
        ckpt.decode(data[:4])


@pytest.mark.parametrize("where", [0, 8, 20, -1])
def test_file_with_one_flipped_byte_is_refused(tmp_path: Path, where: int) -> None:
    path, sha = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[where] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        ckpt.load(path, sha)


def test_safetensors_file_that_is_not_ours_is_refused() -> None:
    with pytest.raises(CheckpointError):
        ckpt.decode(st_save({"x": torch.zeros(2)}))
    with pytest.raises(CheckpointError):
        ckpt.decode(st_save({"x": torch.zeros(2)},
                            metadata={"trainserve": json.dumps({"format": "other/9"})}))
    with pytest.raises(CheckpointError):
        ckpt.decode(st_save({"x": torch.zeros(2)}, metadata={"trainserve": "{not json"}))


@pytest.mark.parametrize("document", ["[1]", "null", "3"])
def test_metadata_that_is_not_a_json_object_is_refused(document: str) -> None:
    with pytest.raises(CheckpointError):
        ckpt.decode(st_save({"x": torch.zeros(2)}, metadata={"trainserve": document}))


class _Payload:
    """Unpickling this would run code: it opens (creates) a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_pickle_with_correct_sha256_is_refused_and_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = tmp_path / "c.safetensors"
    torch.save({"model.w": torch.zeros(2), "evil": _Payload(marker)}, path)
    assert not marker.exists()
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    with pytest.raises(CheckpointError):
        ckpt.load(path, sha)
    assert not marker.exists()

    # The payload is live: a pickle load would have run it (so the check above means something).
    control = tmp_path / "control"
    copy = tmp_path / "copy.pt"
    torch.save({"evil": _Payload(control)}, copy)
    torch.load(copy, weights_only=False)
    assert control.exists()


# -- paths ------------------------------------------------------------------------------------

def test_relative_path_from_ids() -> None:
    assert ckpt.relative_path(JOB_ID, 7) == f"jobs/{JOB_ID}/epoch-000007.safetensors"
    assert ckpt.relative_path(JOB_ID, 0).endswith("epoch-000000.safetensors")


@pytest.mark.parametrize("job_id", [
    "../" + JOB_ID[3:], "../../etc/passwd", JOB_ID[:-1] + "g", JOB_ID.upper(), JOB_ID[:-1],
    JOB_ID + "0", "", f"{JOB_ID[:14]}/{JOB_ID[15:]}", "a" * 25 + "/..",
])
def test_relative_path_rejects_anything_but_a_hex_id(job_id: str) -> None:
    with pytest.raises(ValueError):
        ckpt.relative_path(job_id, 1)


def test_relative_path_rejects_negative_epoch() -> None:
    with pytest.raises(ValueError):
        ckpt.relative_path(JOB_ID, -1)


def test_relative_path_rejects_trailing_newline() -> None:
    with pytest.raises(ValueError):
        ckpt.relative_path(JOB_ID + "\n", 1)


def test_resolve_keeps_paths_inside_the_root(tmp_path: Path) -> None:
    relative = ckpt.relative_path(JOB_ID, 1)
    assert ckpt.checkpoint_path(tmp_path, relative) == (tmp_path / relative).resolve()


@pytest.mark.parametrize("relative", ["../x", "/etc/passwd", "jobs/../../x", "jobs/../.."])
def test_resolve_refuses_paths_that_leave_the_root(tmp_path: Path, relative: str) -> None:
    root = tmp_path / "store"
    root.mkdir()
    with pytest.raises(CheckpointError):
        ckpt.checkpoint_path(root, relative)


def test_resolve_refuses_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "jobs").symlink_to(tmp_path)
    with pytest.raises(CheckpointError):
        ckpt.checkpoint_path(root, "jobs/../x")
    with pytest.raises(CheckpointError):
        ckpt.checkpoint_path(root, "jobs/outside.safetensors")


# -- atomic writes ----------------------------------------------------------------------------

def _leftovers(directory: Path) -> list[str]:
    return [p.name for p in directory.iterdir() if p.name.endswith(".tmp")]


def test_write_atomic_leaves_no_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "c.bin"
    ckpt.write_atomic(path, b"first")
    ckpt.write_atomic(path, b"second")
    assert path.read_bytes() == b"second"
    assert _leftovers(path.parent) == []
    assert [p.name for p in path.parent.iterdir()] == ["c.bin"]


def test_failed_write_atomic_leaves_no_temporary_file_and_keeps_the_old(tmp_path: Path) -> None:
    target = tmp_path / "taken"
    target.mkdir()
    (target / "inside").write_bytes(b"x")
    with pytest.raises(OSError):
        ckpt.write_atomic(target, b"data")  # cannot replace a non-empty directory
    assert _leftovers(tmp_path) == []
    assert (target / "inside").read_bytes() == b"x"


# -- optimizer state --------------------------------------------------------------------------

def _optimizers():
    return {
        "adam": lambda params: torch.optim.Adam(params, lr=0.01),
        "sgd-momentum": lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9,
                                                      nesterov=True),
        "sgd-plain": lambda params: torch.optim.SGD(params, lr=0.1),
        "adadelta": lambda params: torch.optim.Adadelta(params, lr=0.1, rho=0.95, eps=1e-5),
    }


def _train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.randn(6, 4, generator=gen), torch.randn(6, 2, generator=gen)
    optimizer.zero_grad()
    torch.nn.functional.mse_loss(model(x), y).backward()
    optimizer.step()


@pytest.mark.parametrize("name", list(_optimizers()))
@pytest.mark.parametrize("via_file", [False, True])
def test_optimizer_state_round_trip_continues_identically(
    tmp_path: Path, name: str, via_file: bool
) -> None:
    make = _optimizers()[name]
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    optimizer = make(model.parameters())
    for seed in range(3):
        _train_step(model, optimizer, seed)

    tensors, meta = ckpt.pack_optimizer(optimizer.state_dict())
    tensors = {**tensors, **ckpt.prefixed("model.", model.state_dict())}
    if via_file:
        sha, _ = ckpt.save(tmp_path / "c.safetensors", tensors, {"optimizer": meta})
        tensors, saved = ckpt.load(tmp_path / "c.safetensors", sha)
        meta = saved["optimizer"]
    else:
        tensors = {k: v.clone() for k, v in tensors.items()}

    copy = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2))
    copy.load_state_dict(ckpt.strip_prefix("model.", tensors))
    copy_optimizer = make(copy.parameters())
    copy_optimizer.load_state_dict(ckpt.unpack_optimizer(tensors, meta))

    for seed in (10, 11):
        _train_step(model, optimizer, seed)
        _train_step(copy, copy_optimizer, seed)
    for a, b in zip(model.parameters(), copy.parameters(), strict=True):
        assert torch.equal(a, b)


def test_pack_optimizer_splits_tensors_from_json_primitives() -> None:
    state = {"state": {0: {"step": 3, "momentum_buffer": None, "buf": torch.ones(2)},
                       1: {"step": 4}},
             "param_groups": [{"lr": 0.1, "params": [0, 1]}]}
    tensors, meta = ckpt.pack_optimizer(state)
    assert set(tensors) == {"optim.0.buf"}
    assert json.loads(json.dumps(meta)) == meta
    back = ckpt.unpack_optimizer(tensors, json.loads(json.dumps(meta)))
    assert back["param_groups"] == state["param_groups"]
    assert back["state"][0]["step"] == 3 and back["state"][0]["momentum_buffer"] is None
    assert torch.equal(back["state"][0]["buf"], torch.ones(2))
    assert back["state"][1] == {"step": 4}


def test_prefix_helpers_invert_each_other() -> None:
    tensors = {"a": torch.zeros(1), "b.c": torch.ones(1)}
    mixed = {**ckpt.prefixed("model.", tensors), "optim.0.step": torch.zeros(())}
    assert ckpt.strip_prefix("model.", mixed).keys() == tensors.keys()

