"""Arrays in one memory-mappable file: what a stored dataset is, read without loading it.

The layout is plain so that any tool can read it: 8 magic bytes, the JSON header's length
(uint64, little-endian), the JSON header ({"arrays": {name: {"dtype", "shape", "offset"}},
"meta": {...}}), then each array's bytes in C order at an offset that is a multiple of 64.
A file is written whole or not at all (a temporary file, fsynced, renamed) and hashed as it
is written; it is opened only after its bytes hash to the sha256 recorded then, read in
chunks (never whole), and its arrays are then views of one read-only map: a process holds
the pages it touches, not the file, and `release` hands those back.
"""

import hashlib
import json
import mmap
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

MAGIC = b"TSARRAY1"
ALIGN = 64
HEADER_STEP = 4096  # the header area grows in pages, so that arrays start page-aligned
HASH_CHUNK = 1 << 20


@dataclass
class Streamed:
    """An array too large to hold: its dtype and shape, and its values as chunks in order."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]
    chunks: Iterable[np.ndarray]


Source = np.ndarray | Streamed


def _aligned(n: int, step: int = ALIGN) -> int:
    return -(-n // step) * step


def _nbytes(source: Source) -> int:
    if isinstance(source, np.ndarray):
        return source.nbytes
    return int(np.prod(source.shape, dtype=np.int64)) * source.dtype.itemsize


def _layout(arrays: dict[str, Source], meta: dict[str, Any]) -> tuple[bytes, dict[str, int]]:
    """The header bytes (padded to where the first array starts) and each array's offset."""
    start = HEADER_STEP
    while True:
        offsets, at = {}, start
        for name, source in arrays.items():
            offsets[name] = at
            at = _aligned(at + _nbytes(source))
        header = json.dumps({"arrays": {
            name: {"dtype": np.dtype(source.dtype).newbyteorder("<").str,
                   "shape": [int(d) for d in source.shape], "offset": offsets[name]}
            for name, source in arrays.items()}, "meta": meta}, separators=(",", ":")).encode()
        if 16 + len(header) <= start:
            head = MAGIC + len(header).to_bytes(8, "little") + header
            return head + bytes(start - len(head)), offsets
        start = _aligned(16 + len(header), HEADER_STEP)


class _HashingWriter:
    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.hasher, self.size = handle, hashlib.sha256(), 0

    def write(self, data: bytes | memoryview) -> None:
        self.handle.write(data)
        self.hasher.update(data)
        self.size += len(data)

    def pad_to(self, offset: int) -> None:
        if offset > self.size:
            self.write(bytes(offset - self.size))


def _chunks_of(source: Source) -> Iterator[np.ndarray]:
    if isinstance(source, np.ndarray):
        flat = np.ascontiguousarray(source).reshape(-1)
        step = max(1, HASH_CHUNK // max(1, flat.itemsize))
        for begin in range(0, len(flat), step):
            yield flat[begin:begin + step]
    else:
        yield from source.chunks


def fsync_dir(directory: Path) -> None:
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write(path: Path, arrays: dict[str, Source], meta: dict[str, Any]) -> tuple[str, int]:
    """Write the arrays at `path`, whole or not at all; returns the file's sha256 and size.
    A Streamed array must yield exactly its shape's values, or nothing is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    head, offsets = _layout(arrays, meta)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            out = _HashingWriter(handle)  # type: ignore[arg-type]
            out.write(head)
            for name, source in arrays.items():
                out.pad_to(offsets[name])
                dtype = np.dtype(source.dtype).newbyteorder("<")
                for chunk in _chunks_of(source):
                    out.write(memoryview(np.ascontiguousarray(chunk, dtype=dtype)).cast("B"))
                if out.size != offsets[name] + _nbytes(source):
                    raise ValueError(f"array {name} yielded {out.size - offsets[name]:,} bytes; "
                                     f"its shape needs {_nbytes(source):,}")
            out.pad_to(_aligned(out.size))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(path.parent)
    return out.hasher.hexdigest(), out.size


def sha256_of(path: Path) -> str:
    """Read in chunks: hashing a large file costs a chunk of memory, not the file."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(HASH_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


@dataclass
class Mapped:
    """A file's arrays, views of one read-only map (or plain arrays, for data built in)."""

    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    _map: mmap.mmap | None = field(default=None, repr=False)

    def release(self) -> None:
        """Drop the pages read so far from this process (they stay in the page cache), so
        that reading through a file larger than memory never holds more than a window of it."""
        if self._map is not None:
            self._map.madvise(mmap.MADV_DONTNEED)


def is_mapped_file(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(MAGIC)) == MAGIC


def open_verified(path: Path, sha256: str, refuse: Callable[[str], Exception],
                  what: str) -> Mapped:
    """The file's arrays, only if its bytes hash to `sha256` (DESIGN.md, invariant 7)."""
    try:
        if sha256_of(path) != sha256:
            raise refuse(f"{what} does not match its recorded sha256")
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            if handle.read(len(MAGIC)) != MAGIC:
                raise refuse(f"{what} is not an arrays file")
            length = int.from_bytes(handle.read(8), "little")
            header = json.loads(handle.read(length))
            view = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise refuse(f"{what} is unreadable: {exc.strerror}") from None
    arrays = {}
    for name, spec in header["arrays"].items():
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        count = int(np.prod(shape, dtype=np.int64))
        if spec["offset"] + count * dtype.itemsize > size:
            raise refuse(f"{what}: array {name} runs past the end of the file")
        arrays[name] = np.frombuffer(view, dtype=dtype, count=count,
                                     offset=spec["offset"]).reshape(shape)
    return Mapped(arrays=arrays, meta=header["meta"], _map=view)
