"""Receiving an upload: streamed to disk with a running limit, and nothing left behind."""

import asyncio
import hashlib
import os
import time
from pathlib import Path
from typing import Any

import pytest
from starlette.requests import Request

from app.datasets import uploads
from app.errors import DomainError, status_of
from app.main import create_app
from core.config import Settings

BOUNDARY = "xyzzy"


def _body(*parts: tuple[str, str | None, bytes]) -> bytes:
    out = b""
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"'
                                                     if filename is not None else "")
        out += (f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n").encode()
        out += data + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


class Stream:
    """An ASGI receive callable that hands the body over in chunks and counts them."""

    def __init__(self, body: bytes, chunk: int = 4096) -> None:
        self.chunks = [body[i:i + chunk] for i in range(0, len(body), chunk)] or [b""]
        self.sent = 0

    async def __call__(self) -> dict[str, Any]:
        self.sent += 1
        more = self.sent < len(self.chunks)
        return {"type": "http.request", "body": self.chunks[self.sent - 1], "more_body": more}


def _request(stream: Stream, headers: dict[str, str] | None = None) -> Request:
    raw = {"content-type": f"multipart/form-data; boundary={BOUNDARY}", **(headers or {})}
    scope = {"type": "http", "method": "POST", "path": "/v1/datasets",
             "headers": [(k.encode(), v.encode()) for k, v in raw.items()]}
    return Request(scope, stream)


def _settings(tmp_path: Path, limit: int) -> Settings:
    return Settings(data_dir=tmp_path, max_upload_bytes=limit)


def _incoming(tmp_path: Path) -> list[Path]:
    directory = tmp_path / "artifacts" / uploads.INCOMING
    return list(directory.iterdir()) if directory.exists() else []


async def _receive(request: Request, settings: Settings) -> tuple[dict[str, str], dict, list]:
    async with uploads.receive(request, settings=settings) as received:
        files = {name: (p.filename, p.sha256, p.bytes, p.path.read_bytes())
                 for name, p in received.files.items()}
        return received.fields, files, [p.path for p in received.files.values()]


def test_fields_and_files_arrive_hashed_and_are_removed_after(tmp_path: Path) -> None:
    data, labels = b"\x00\x01" * 5000, b"labels"
    body = _body(("name", None, b"my data"), ("format", None, b"idx"),
                 ("file", "../../x/images.gz", data), ("labels", "l.gz", labels))
    fields, files, paths = asyncio.run(_receive(_request(Stream(body)),
                                                _settings(tmp_path, 1 << 20)))
    assert fields == {"name": "my data", "format": "idx"}
    assert files["file"] == ("images.gz", hashlib.sha256(data).hexdigest(), len(data), data)
    assert files["labels"][3] == labels
    assert all(p.parent == tmp_path / "artifacts" / uploads.INCOMING for p in paths)
    assert _incoming(tmp_path) == []


def test_over_the_limit_is_413_before_the_body_is_read_whole(tmp_path: Path) -> None:
    limit = 64 * 1024
    body = _body(("format", None, b"text"), ("file", "big.txt", b"a" * (limit * 20)))
    stream = Stream(body)
    with pytest.raises(DomainError) as caught:
        asyncio.run(_receive(_request(stream), _settings(tmp_path, limit)))
    assert status_of(caught.value) == 413
    # It stopped one chunk past the limit, and what it had written is gone.
    assert stream.sent <= limit // 4096 + 3 < len(stream.chunks)
    assert _incoming(tmp_path) == []


def test_a_declared_length_over_the_limit_is_refused_unread(tmp_path: Path) -> None:
    stream = Stream(_body(("file", "f", b"x")))
    with pytest.raises(DomainError) as caught:
        asyncio.run(_receive(_request(stream, {"content-length": str(10 << 20)}),
                             _settings(tmp_path, 1 << 20)))
    assert status_of(caught.value) == 413 and stream.sent == 0


@pytest.mark.parametrize(("body", "headers", "status", "field"), [
    (_body(("file", "a", b"x"), ("file", "b", b"y")), {}, 422, "file"),
    (_body(("bogus", None, b"x")), {}, 422, "bogus"),
    (_body(("name", None, b"n" * 2000)), {}, 422, "name"),
    (b"--xyzzy\r\nnot a header\r\n\r\n", {}, 422, "body"),
    (b"{}", {"content-type": "application/json"}, 415, None),
])
def test_malformed_bodies(tmp_path: Path, body: bytes, headers: dict[str, str], status: int,
                          field: str | None) -> None:
    with pytest.raises(DomainError) as caught:
        asyncio.run(_receive(_request(Stream(body), headers), _settings(tmp_path, 1 << 20)))
    assert status_of(caught.value) == status
    if field is not None:
        assert caught.value.detail[0]["loc"] == ["body", field]  # type: ignore[index]
    assert _incoming(tmp_path) == []


def test_sweep_removes_only_parts_old_enough_to_be_abandoned(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 1000)
    assert uploads.sweep_incoming(settings) == 0  # no directory yet: nothing to do
    directory = tmp_path / "artifacts" / uploads.INCOMING
    directory.mkdir(parents=True)
    old, fresh, other = directory / "a.part", directory / "b.part", directory / "keep.txt"
    for path in (old, fresh, other):
        path.write_bytes(b"x")
    stale = time.time() - uploads.ABANDONED_SECONDS - 60
    os.utime(old, (stale, stale))
    os.utime(other, (stale, stale))
    assert uploads.sweep_incoming(settings) == 1
    assert sorted(p.name for p in directory.iterdir()) == ["b.part", "keep.txt"]


def test_the_api_sweeps_abandoned_parts_when_it_starts(tmp_path: Path) -> None:
    settings = _settings(tmp_path, 1000)
    directory = tmp_path / "artifacts" / uploads.INCOMING
    directory.mkdir(parents=True)
    abandoned = directory / "crashed.part"
    abandoned.write_bytes(b"half an upload")
    stale = time.time() - uploads.ABANDONED_SECONDS - 60
    os.utime(abandoned, (stale, stale))
    app = create_app(settings)

    async def start_and_stop() -> None:
        async with app.router.lifespan_context(app):
            pass
    asyncio.run(start_and_stop())
    assert not abandoned.exists()
