"""Small dataset files in every upload format, well-formed and not, for unit and API tests."""

import gzip
import io
import struct
import tarfile
import zlib

import numpy as np

IDX_UBYTE = 0x08


def pattern_images(n: int, side: int = 8, classes: int = 3, seed: int = 0
                   ) -> tuple[np.ndarray, np.ndarray]:
    """uint8 images whose class is where a bright bar sits: learnable in an epoch or two."""
    rng = np.random.default_rng(seed)
    y = (np.arange(n) % classes).astype(np.uint8)
    x = rng.integers(0, 40, size=(n, side, side), dtype=np.uint8)
    for i, label in enumerate(y):
        row = (int(label) * side) // classes
        x[i, row:row + max(1, side // classes), :] = 230
    return x, y


def idx(array: np.ndarray, type_code: int = IDX_UBYTE) -> bytes:
    header = bytes([0, 0, type_code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(">u1" if type_code == IDX_UBYTE else array.dtype).tobytes()


def idx_pair(n: int = 60, side: int = 8) -> tuple[bytes, bytes]:
    x, y = pattern_images(n, side)
    return idx(x), idx(y)


def tar(members: dict[str, bytes], *, gz: bool = False,
        extra: list[tarfile.TarInfo] | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if gz else "w") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for info in extra or []:
            archive.addfile(info)
    return buffer.getvalue()


def cifar(n: int = 30, classes: int = 10, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % classes).astype(np.uint8)
    pixels = rng.integers(0, 60, size=(n, 3, 32, 32), dtype=np.uint8)
    for i, label in enumerate(labels):
        pixels[i, label % 3, (label * 3) % 32:(label * 3) % 32 + 3, :] = 240
    return np.concatenate([labels[:, None], pixels.reshape(n, -1)], axis=1).tobytes()


def npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)  # type: ignore[arg-type]
    return buffer.getvalue()


def csv_rows(n: int = 60, features: int = 6, header: bool = True,
             labels: list[str] | None = None) -> bytes:
    x, y = pattern_images(n, side=features, classes=3)
    names = labels or ["0", "1", "2"]
    lines = [",".join(["label"] + [f"f{i}" for i in range(features)])] if header else []
    for xi, yi in zip(x[:, 0, :], y, strict=True):
        lines.append(",".join([names[yi]] + [f"{v / 255:.3f}" for v in xi]))
    return ("\n".join(lines) + "\n").encode()


def text(repeat: int = 40) -> bytes:
    return ("the quick brown fox jumps over the lazy dog. " * repeat).encode()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def gzip_bomb(expanded: int) -> bytes:
    """A valid gzip file of `expanded` zero bytes (rounded up to MiB) in about 1/1000 of that.

    Blocks compressed after a full flush are byte-identical, so one is made and repeated."""
    block = bytes(1 << 20)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    compressed = compressor.compress(block) + compressor.flush(zlib.Z_FULL_FLUSH)
    count = -(-expanded // len(block))
    crc = 0
    for _ in range(count):
        crc = zlib.crc32(block, crc)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
    trailer = struct.pack("<II", crc, (count * len(block)) & 0xFFFFFFFF)
    return header + compressed * count + b"\x03\x00" + trailer
