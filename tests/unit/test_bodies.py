"""The request body guard (app/bodies.py): bounded bodies, finite numbers, NUL-free paths."""

import asyncio
import json
from typing import Any

from app.bodies import BodyGuard, check_finite_json
from app.errors import clip


def run(path: str, chunks: list[bytes], headers: list[tuple[bytes, bytes]] | None = None,
        limit: int = 1000) -> tuple[list[dict[str, Any]], int, bytes | None]:
    """The messages sent, how many chunks were read, and the body the app got (None: the
    app was never called)."""
    sent: list[dict[str, Any]] = []
    read = 0
    seen: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal read
        read += 1
        return {"type": "http.request", "body": chunks[read - 1],
                "more_body": read < len(chunks)}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((await receive())["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})

    scope = {"type": "http", "method": "POST", "path": path,
             "headers": headers or [(b"content-type", b"application/json")]}
    asyncio.run(BodyGuard(app, max_bytes=limit)(scope, receive, send))
    return sent, read, seen[0] if seen else None


def test_a_chunked_body_is_refused_as_soon_as_it_passes_the_limit() -> None:
    sent, read, body = run("/v1/jobs", [b"x" * 300] * 100)
    assert sent[0]["status"] == 413 and body is None
    assert read == 4  # the fourth chunk passed 1,000 bytes; the other 96 were never read
    assert "limit" in json.loads(sent[1]["body"])["detail"]


def test_a_declared_length_over_the_limit_is_refused_unread() -> None:
    sent, read, _ = run("/v2/models/m/infer", [b"{}"], headers=[
        (b"content-type", b"application/json"), (b"content-length", b"5000")])
    assert sent[0]["status"] == 413 and read == 0
    assert "error" in json.loads(sent[1]["body"])  # v2's own error shape


def test_a_body_within_the_limit_reaches_the_app_whole() -> None:
    sent, _, body = run("/v1/jobs", [b'{"a": ', b"1.5e3", b"}"])
    assert body == b'{"a": 1.5e3}' and sent[0]["status"] == 200


def test_uploads_are_not_buffered_here() -> None:
    _, read, body = run("/v1/datasets", [b"x" * 600] * 3,
                        headers=[(b"content-type", b"multipart/form-data; boundary=b")])
    assert read == 1 and body == b"x" * 600  # passed through, read by the app itself


def test_non_finite_numbers_are_422_and_a_nul_path_is_404() -> None:
    for number in (b"NaN", b"Infinity", b"-Infinity", b"1e400", b"-2.5E+999"):
        sent, _, body = run("/v1/jobs", [b'{"lr": ' + number + b"}"])
        assert sent[0]["status"] == 422 and body is None, number
    sent, _, body = run("/v1/jobs", [b'{"name": "NaN Infinity 1e400", "lr": 1e-400}'])
    assert sent[0]["status"] == 200  # in strings, or rounding to 0: nothing wrong
    sent, _, _ = run("/v1/jobs/a\x00b", [b""])
    assert sent[0]["status"] == 404


def test_check_finite_json_leaves_non_json_to_the_route() -> None:
    assert check_finite_json(b"not json NaN") is None
    assert check_finite_json(b"[1, 2, 3]") is None
    assert check_finite_json(b"[NaN]") is not None


def test_clip_keeps_errors_small_and_json() -> None:
    clipped = clip({"x": [float("nan")] * 1000, "s": "y" * 10_000, "n": [[[[1]]]]})
    text = json.dumps(clipped, allow_nan=False)
    assert len(text) < 1000
    assert clipped["x"][0] == "nan"


def test_candidates_inside_strings_pass_and_numbers_beside_them_do_not() -> None:
    assert check_finite_json(b'{"name": "x 1e400 NaN Infinity", "id": "abc9e999"}') is None
    assert check_finite_json(b'["x 1e999", 2e308]') is not None
    assert check_finite_json(b'["x 1e999", -Infinity]') is not None
    assert check_finite_json(b'{"lr": 1e308, "small": 1e-400}') is None
    hostile = b"[" + b"1e999," * 100_000 + b"1]"
    assert check_finite_json(hostile) is not None
