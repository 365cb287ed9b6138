"""The npz format: arrays `x` and `y` (optional `classes`, `x_test`, `y_test`), read
without pickle, every member's size charged to the decompression budget. The stored form of
image datasets is an npz too, read back through `npz_images`."""

import io
import zipfile
import zlib
from pathlib import Path

import numpy as np

from models.archive import Budget, FormatError
from models.example_arrays import Images, Limits, checked_images, checked_names


def _npy(archive: zipfile.ZipFile, key: str, what: str, budget: Budget) -> np.ndarray:
    member = archive.getinfo(f"{key}.npy")
    # zipfile stops every member at its declared size, so these sizes bound what is read.
    budget.charge(member.file_size, what)
    with archive.open(member) as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise FormatError(f"{what}: {key} uses .npy version {version}; use 1.0 or 2.0")
    if dtype.hasobject:
        raise FormatError(f"{what}: {key} is an object array, which only pickle could load; "
                          "send plain numeric arrays")
    if int(np.prod(shape, dtype=np.int64)) * dtype.itemsize > member.file_size:
        raise FormatError(f"{what}: {key} is truncated (its header says {shape} {dtype})")
    with archive.open(member) as handle:
        return np.lib.format.read_array(handle, allow_pickle=False)


def _npz_arrays(source: Path | io.BytesIO, what: str, limits: Limits) -> dict[str, np.ndarray]:
    budget = Budget(limits.max_decompressed_bytes)
    try:
        with zipfile.ZipFile(source) as archive:
            found = {n.removesuffix(".npy") for n in archive.namelist() if n.endswith(".npy")}
            for key in ("x", "y"):
                if key not in found:
                    raise FormatError(f"{what} has no array named '{key}' (it has: "
                                      f"{', '.join(sorted(found)) or 'none'})")
            if ("x_test" in found) != ("y_test" in found):
                raise FormatError(f"{what}: x_test and y_test come together or not at all")
            keys = [k for k in ("x", "y", "classes", "x_test", "y_test") if k in found]
            return {key: _npy(archive, key, what, budget) for key in keys}
    except FormatError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, ValueError, OSError,
            EOFError, NotImplementedError) as exc:
        raise FormatError(f"{what} is not a readable .npz archive ({exc})") from None


def npz_images(source: Path | io.BytesIO, what: str, limits: Limits,
         classes: list[str] | None = None, scale: bool = True) -> Images:
    arrays = _npz_arrays(source, what, limits)
    if "classes" in arrays:
        names = arrays["classes"]
        if names.dtype.kind not in "US" or names.ndim != 1:
            raise FormatError(f"{what}: classes must be a 1-D array of strings")
        classes = checked_names([n.decode(errors="replace") if isinstance(n, bytes) else str(n)
                                 for n in names.tolist()], what, limits)
    test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays else None
    return checked_images(arrays["x"], arrays["y"], classes, what, limits, test, scale)
