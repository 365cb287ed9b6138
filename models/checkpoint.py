"""The checkpoint format, written by workers and read by serving.

One safetensors file: tensors (weights, optimizer state, RNG state) plus a JSON document in
its metadata (architecture, config, vocabulary or classes, epoch, metrics). Nothing is ever
unpickled. Files are written whole or not at all, and their sha256 is checked on every load.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from models.store import ID, contained, read_verified

FORMAT = "trainserve-checkpoint/1"
_META_KEY = "trainserve"


class CheckpointError(Exception):
    """A checkpoint that is missing, altered or not ours; never loaded."""


def relative_path(job_id: str, epoch: int) -> str:
    if not ID.fullmatch(job_id) or epoch < 0:
        raise ValueError("checkpoint paths are built from ids only")
    return f"jobs/{job_id}/epoch-{epoch:06d}.safetensors"


def checkpoint_path(root: Path, relative: str) -> Path:
    """The file under the store's root; anything that would leave the root is refused."""
    return contained(root, relative, CheckpointError)


def encode(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> bytes:
    plain = {name: t.detach().to("cpu").contiguous() for name, t in tensors.items()}
    return st_save(plain, metadata={_META_KEY: json.dumps({"format": FORMAT, **meta})})


def decode(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8:8 + header_len])
        meta = json.loads(header["__metadata__"][_META_KEY])
    except (SafetensorError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"not a trainserve checkpoint: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError("not a trainserve checkpoint: unknown format")
    return tensors, meta


def write_atomic(path: Path, data: bytes) -> None:
    """Temporary file in the same directory, fsynced, renamed, directory fsynced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write(path: Path, data: bytes) -> tuple[str, int]:
    """Write encoded checkpoint bytes atomically; returns their sha256 and size."""
    write_atomic(path, data)
    return hashlib.sha256(data).hexdigest(), len(data)


def save(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> tuple[str, int]:
    return write(path, encode(tensors, meta))


def load(path: Path, sha256: str) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return decode(read_verified(path, sha256, CheckpointError, "the checkpoint"))


def pack_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """An optimizer state_dict as flat tensors plus JSON primitives."""
    tensors: dict[str, torch.Tensor] = {}
    plain: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{index}.{key}"] = value
            else:
                plain.setdefault(str(index), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "plain_state": plain}


def unpack_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = tensor
    for index, values in meta["plain_state"].items():
        state.setdefault(int(index), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def prefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}{name}": t for name, t in tensors.items()}


def strip_prefix(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name[len(prefix):]: t for name, t in tensors.items() if name.startswith(prefix)}
