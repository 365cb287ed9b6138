"""Receiving an upload: the multipart body streamed to temporary files, never whole in memory.

The body is parsed as it arrives (python-multipart's push parser) and each file part is
written to a temporary file under the artifact store, counted and hashed on the way. Past
`max_upload_bytes` the request is refused with 413 at once and whatever was written is
removed; a Content-Length over the limit is refused before a byte of the body is read.
Starlette's own form parsing is not used because it spools every file whole before a route
can look at its size.
"""

import hashlib
import secrets
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from fastapi import Request
from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool

from app.errors import TooLarge, UnsupportedMedia, invalid
from core.config import Settings
from models.formats import display_name

FILE_FIELDS = ("file", "labels")
TEXT_FIELDS = ("name", "format", "encoding", "label_column", "shape")
FIELD_BYTES = 1024
OVERHEAD = 64 * 1024  # boundaries, part headers and the small fields around the files
INCOMING = "datasets/.incoming"
# A part this old belongs to no upload still running: uploads stream at network speed
# and a stalled client is cut off long before (uvicorn's timeouts).
ABANDONED_SECONDS = 6 * 3600


@dataclass
class FilePart:
    path: Path
    filename: str  # the client's file name, as a label; never part of a path
    sha256: str = ""
    bytes: int = 0


@dataclass
class Received:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, FilePart] = field(default_factory=dict)

    @property
    def sha256(self) -> str:
        """Of the one file; for two parts, of their hex digests joined, file then labels."""
        parts = [self.files[name] for name in FILE_FIELDS if name in self.files]
        if len(parts) == 1:
            return parts[0].sha256
        return hashlib.sha256("".join(p.sha256 for p in parts).encode()).hexdigest()

    @property
    def bytes(self) -> int:
        return sum(part.bytes for part in self.files.values())

    def discard(self) -> None:
        for part in self.files.values():
            part.path.unlink(missing_ok=True)


def sweep_incoming(settings: Settings, older_than: float = ABANDONED_SECONDS) -> int:
    """Remove the parts of uploads that a crash or a kill interrupted; returns how many.
    Only old ones: another API process may be receiving into the same directory now."""
    directory = settings.artifact_dir / INCOMING
    if not directory.is_dir():
        return 0
    cutoff, removed = time.time() - older_than, 0
    for path in directory.glob("*.part"):
        with suppress(FileNotFoundError):  # a concurrent sweep or upload got there first
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
    return removed


def too_large(limit: int) -> TooLarge:
    return TooLarge(f"the upload is over the limit of {limit:,} bytes")


@dataclass
class _Open:
    part: FilePart
    handle: IO[bytes]
    hasher: Any = field(default_factory=hashlib.sha256)
    ended: bool = False


class _Receiver:
    """python-multipart's callbacks. They run inside parser.write(), on the event loop, so
    they only collect; file writes happen after each chunk, in the thread pool."""

    def __init__(self, directory: Path, limit: int) -> None:
        self.received = Received()
        self._dir, self._limit, self._total = directory, limit, 0
        self._header, self._value, self._disposition = b"", b"", b""
        self._file: _Open | None = None
        self._field: tuple[str, bytearray] | None = None
        self.open: list[_Open] = []
        self.pending: list[tuple[_Open, bytes]] = []

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self._part_begin, "on_part_data": self._part_data,
                "on_part_end": self._part_end, "on_header_field": self._header_field,
                "on_header_value": self._header_value, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_finished}

    def _part_begin(self) -> None:
        self._disposition, self._file, self._field = b"", None, None

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        if self._header.lower() == b"content-disposition":
            self._disposition = self._value
        self._header, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        name = options.get(b"name", b"").decode("utf-8", errors="replace")
        if name in self.received.files or name in self.received.fields:
            raise invalid(name, "given more than once")
        if name in FILE_FIELDS:
            filename = options.get(b"filename", b"").decode("utf-8", errors="replace")
            part = FilePart(self._dir / f"{secrets.token_hex(12)}.part", display_name(filename))
            self.received.files[name] = part
            self._file = _Open(part, open(part.path, "wb"))  # noqa: SIM115 - closed by flush
            self.open.append(self._file)
        elif name in TEXT_FIELDS:
            self._field = (name, bytearray())
        else:
            raise invalid(name or "body", "unknown field; expected "
                          f"{', '.join(FILE_FIELDS + TEXT_FIELDS)}")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self._total += end - start
            if self._total > self._limit:
                raise too_large(self._limit)
            self.pending.append((self._file, bytes(data[start:end])))
        elif self._field is not None:
            self._field[1].extend(data[start:end])
            if len(self._field[1]) > FIELD_BYTES:
                raise invalid(self._field[0], f"longer than {FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.ended = True
        elif self._field is not None:
            name, value = self._field
            try:
                self.received.fields[name] = value.decode("utf-8")
            except UnicodeDecodeError:
                raise invalid(name, "not UTF-8") from None
            self._field = None

    def flush(self) -> None:
        """Write what the last chunk carried; close the parts that ended."""
        for opened, data in self.pending:
            opened.handle.write(data)
            opened.hasher.update(data)
            opened.part.bytes += len(data)
        self.pending.clear()
        for opened in [o for o in self.open if o.ended]:
            opened.handle.close()
            opened.part.sha256 = opened.hasher.hexdigest()
            self.open.remove(opened)

    def close(self) -> None:
        for opened in self.open:
            with suppress(OSError):
                opened.handle.close()
        self.open.clear()


async def _receive(request: Request, settings: Settings) -> Received:
    limit = settings.max_upload_bytes
    content_type, params = parse_options_header(request.headers.get("content-type"))
    if content_type != b"multipart/form-data" or b"boundary" not in params:
        raise UnsupportedMedia("send multipart/form-data with the fields file, name and format")
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit + OVERHEAD:
        raise too_large(limit)
    directory = settings.artifact_dir / INCOMING
    await run_in_threadpool(directory.mkdir, parents=True, exist_ok=True)
    receiver = _Receiver(directory, limit)
    received, body = receiver.received, 0
    try:
        parser = MultipartParser(params[b"boundary"], receiver.callbacks())  # type: ignore[arg-type]
        async for chunk in request.stream():
            body += len(chunk)
            if body > limit + OVERHEAD:  # a chunked body carries no Content-Length
                raise too_large(limit)
            parser.write(chunk)
            await run_in_threadpool(receiver.flush)
        parser.finalize()
        await run_in_threadpool(receiver.flush)
        if receiver.open:
            raise invalid("body", "the multipart body ends inside a part")
    except FormParserError:
        receiver.close()
        received.discard()
        raise invalid("body", "malformed multipart/form-data") from None
    except BaseException:
        receiver.close()
        received.discard()
        raise
    return received


@asynccontextmanager
async def receive(request: Request, *, settings: Settings) -> AsyncIterator[Received]:
    """The upload's fields and its files on disk, removed again when the block ends."""
    received = await _receive(request, settings)
    try:
        yield received
    finally:
        await run_in_threadpool(received.discard)
