"""The MNIST IDX format: a magic number naming the element type and rank, the dimensions,
then the data, big-endian. Everything is checked before an array is made."""

import math

import numpy as np

_DTYPES = {0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
           0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class IdxError(ValueError):
    """Bytes that are not a well-formed IDX file; the message says what is wrong."""


def parse_idx(data: bytes, name: str = "IDX file") -> np.ndarray:
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise IdxError(f"{name}: not an IDX file (bad magic number)")
    dtype = _DTYPES.get(data[2])
    if dtype is None:
        raise IdxError(f"{name}: unknown IDX element type 0x{data[2]:02x}")
    rank = data[3]
    if not 1 <= rank <= 4:
        raise IdxError(f"{name}: IDX rank {rank} is not between 1 and 4")
    header = 4 + 4 * rank
    if len(data) < header:
        raise IdxError(f"{name}: truncated in its header")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    # Python ints: 2^22 x 2^22 x 2^20 overflows int64 (to 0, which a short file matched).
    expected = header + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        raise IdxError(f"{name}: holds {len(data)} bytes but its header promises {expected} "
                       f"(dimensions {dims}); the file is truncated or padded")
    return np.frombuffer(data, dtype=dtype, offset=header).reshape(dims).astype(
        dtype.newbyteorder("="))
