"""core/loop.py: the API's background passes outlive a failing pass and stop on time."""

import threading
import time

import pytest

from core.loop import Loop


class Flaky(Loop):
    """Fails its first two passes (as while the database is away), then counts."""

    def __init__(self) -> None:
        super().__init__("flaky", 0.01, "the flaky pass")
        self.passes = 0
        self.third = threading.Event()

    def run_once(self) -> None:
        self.passes += 1
        if self.passes <= 2:
            raise ConnectionError("database away")
        self.third.set()


def test_a_failing_pass_is_logged_and_the_next_one_runs(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    loop = Flaky()
    loop.start()
    try:
        assert loop.third.wait(5), "the loop stopped at a failing pass"
    finally:
        loop.stop()
    assert [r.getMessage() for r in caplog.records][:2] == [
        "the flaky pass failed: ConnectionError"] * 2


class Hung(Loop):
    def __init__(self) -> None:
        super().__init__("hung", 0.01, "the hung pass")
        self.entered = threading.Event()

    def run_once(self) -> None:
        self.entered.set()
        threading.Event().wait(30)  # a pass stuck on a dead connection


def test_stop_returns_within_its_timeout_while_a_pass_hangs() -> None:
    loop = Hung()
    loop.start()
    assert loop.entered.wait(5)
    began = time.monotonic()
    loop.stop(timeout=0.2)
    assert time.monotonic() - began < 2
