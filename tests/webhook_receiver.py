"""A webhook receiver for tests: an HTTP server on loopback that answers the given status
codes in turn (then 200), can hold a request until released, and keeps every request with
its arrival time, so tests can dedupe by delivery id and check signatures."""

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic()
    answered: int

    @property
    def delivery_id(self) -> str:
        return self.headers["X-Trainserve-Delivery"]

    def json(self) -> dict[str, Any]:
        return json.loads(self.body)

    def signed_by(self, secret: str) -> bool:
        expected = hmac.new(secret.encode(), self.body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(self.headers.get("X-Trainserve-Signature", ""),
                                   f"sha256={expected}")


class Receiver:
    def __init__(self, codes: list[int] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.codes = list(codes or [])
        self.got: list[Received] = []
        self.hold_next = False  # the next request waits for `release`
        self.holding = threading.Event()
        self._release = threading.Event()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.hold_next:
                    outer.hold_next = False
                    outer.holding.set()
                    outer._release.wait(60)
                code = outer.codes.pop(0) if outer.codes else 200
                outer.got.append(Received(dict(self.headers), body, time.monotonic(), code))
                self.send_response(code)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def release(self) -> None:
        self._release.set()

    def delivered(self) -> dict[str, Received]:
        """Each delivery id once (the first request answered 2xx): what a deduping
        receiver acts on."""
        once: dict[str, Received] = {}
        for request in self.got:
            if 200 <= request.answered < 300:
                once.setdefault(request.delivery_id, request)
        return once

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
