"""Unpacking uploads (gzip, tar) with every decompressed byte counted against a limit.

An upload is untrusted: a few kilobytes of gzip can expand to gigabytes, and a tar can name
paths outside any directory or hold links and devices. Nothing here writes a member to disk
or follows a name; members come back as bytes with their name kept only for messages and
for telling files apart (train or test, images or labels).
"""

import io
import tarfile
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"
MAX_MEMBERS = 1024


class FormatError(ValueError):
    """An upload that is not what its format says; the message says what is wrong.

    `field` names the multipart field at fault, for the API's 422."""

    def __init__(self, message: str, field: str = "file") -> None:
        super().__init__(message)
        self.field = field


@dataclass
class Blob:
    name: str  # for messages and for telling members apart, never for a path
    data: bytes
    in_tar: bool = False


class Budget:
    """Bytes that decompression and extraction may still produce, across one whole upload."""

    def __init__(self, limit: int) -> None:
        self.limit, self.left = limit, limit

    def charge(self, n: int, what: str) -> None:
        self.left -= n
        if self.left < 0:
            raise FormatError(f"{what} expands past the limit of {self.limit:,} bytes "
                              "once decompressed")


def is_gzip(head: bytes) -> bool:
    return head[:2] == GZIP_MAGIC


def is_tar(head: bytes) -> bool:
    # POSIX (ustar, pax) and GNU tars all carry 'ustar' at offset 257 of the first header.
    return len(head) >= 262 and head[257:262] == b"ustar"


def _inflated(chunks: Iterable[bytes], budget: Budget, what: str) -> Iterator[bytes]:
    """Stream-decompress gzip (members back to back allowed), stopping once past the budget.

    Output comes at most CHUNK bytes at a time, so a bomb is caught one chunk past the
    limit, never after it has been expanded whole."""
    inflater = zlib.decompressobj(wbits=31)
    empty = True

    def step(data: bytes) -> bytes:
        try:
            out = inflater.decompress(data, CHUNK)
        except zlib.error as exc:
            raise FormatError(f"{what} is not valid gzip ({exc})") from None
        budget.charge(len(out), what)
        return out

    for chunk in chunks:
        data = chunk
        while data:
            empty = False
            if inflater.eof:  # another gzip member follows, or garbage
                if not data.startswith(GZIP_MAGIC[:len(data)]):
                    raise FormatError(f"{what} has data after the end of its gzip stream")
                inflater = zlib.decompressobj(wbits=31)
            out = step(data)
            yield out
            # The cap may hold output back after all input was taken: drain it.
            while len(out) == CHUNK and not inflater.eof and not inflater.unconsumed_tail:
                out = step(b"")
                yield out
            data = inflater.unused_data if inflater.eof else inflater.unconsumed_tail
    if empty or not inflater.eof:
        raise FormatError(f"{what} is a truncated gzip stream")


def _file_chunks(path: Path) -> Iterator[bytes]:
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            yield chunk


def _memory_chunks(data: bytes) -> Iterator[bytes]:
    view = memoryview(data)
    for start in range(0, len(view), CHUNK):
        yield bytes(view[start:start + CHUNK])


def gunzip(source: Path | bytes, budget: Budget, what: str) -> bytes:
    """The whole decompressed content. A first pass only counts, so that a bomb is refused
    without ever holding its expansion in memory."""
    def chunks() -> Iterator[bytes]:
        return _file_chunks(source) if isinstance(source, Path) else _memory_chunks(source)
    for _ in _inflated(chunks(), Budget(budget.left), what):
        pass
    return b"".join(_inflated(chunks(), budget, what))


def _check_member(member: tarfile.TarInfo) -> None:
    path = PurePosixPath(member.name)
    if member.name.startswith(("/", "\\")) or (len(member.name) > 1 and member.name[1] == ":"):
        raise FormatError(f"tar member '{member.name}' has an absolute path")
    if ".." in path.parts or ".." in member.name.split("\\"):
        raise FormatError(f"tar member '{member.name}' climbs out of the archive (..)")
    if not (member.isfile() or member.isdir()):
        kind = ("a symbolic link" if member.issym() else "a hard link" if member.islnk()
                else "a device or fifo" if member.isdev() else "not a regular file")
        raise FormatError(f"tar member '{member.name}' is {kind}; only regular files are "
                          "accepted")


def _tar_members(fileobj: io.IOBase, budget: Budget, what: str) -> list[Blob]:
    blobs: list[Blob] = []
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:  # type: ignore[call-overload]
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise FormatError(f"{what} has more than {MAX_MEMBERS} members")
                _check_member(member)
                if member.isdir():
                    continue
                budget.charge(member.size, what)
                handle = tar.extractfile(member)
                data = handle.read() if handle is not None else b""
                if len(data) != member.size:
                    raise FormatError(f"tar member '{member.name}' is truncated")
                if is_gzip(data):
                    data = gunzip(data, budget, f"tar member '{member.name}'")
                blobs.append(Blob(member.name, data, in_tar=True))
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise FormatError(f"{what} is not a readable tar archive ({exc})") from None
    if not blobs:
        raise FormatError(f"{what} is a tar archive with no files in it")
    return blobs


def read_single(path: Path, name: str, budget: Budget) -> bytes:
    """One file's bytes, gunzipped if it is gzip (text and CSV are never tars)."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    return gunzip(path, budget, name) if is_gzip(head) else path.read_bytes()


def stream_single(path: Path, name: str, budget: Budget) -> Iterator[bytes]:
    """One file's bytes as chunks of at most CHUNK, gunzipped if it is gzip, never whole.

    A gzip is first inflated once only to count (that is quick), so that a bomb is refused
    before any parsing of what it holds has begun."""
    with open(path, "rb") as handle:
        head = handle.read(2)
    if not is_gzip(head):
        yield from _file_chunks(path)
        return
    for _ in _inflated(_file_chunks(path), Budget(budget.left), name):
        pass
    yield from _inflated(_file_chunks(path), budget, name)


def unpack(path: Path, name: str, budget: Budget) -> list[Blob]:
    """The upload as files: itself, or what its gzip holds, or the members of its tar."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    data: bytes | None = None
    if is_gzip(head):
        data = gunzip(path, budget, name)
        head = data[:512]
    if is_tar(head):
        if data is not None:
            return _tar_members(io.BytesIO(data), budget, name)
        with open(path, "rb") as handle:
            return _tar_members(handle, budget, name)  # type: ignore[arg-type]
    return [Blob(name, data if data is not None else path.read_bytes())]
