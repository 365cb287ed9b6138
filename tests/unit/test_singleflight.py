"""Concurrent loads of one key share one call; its answer or error reaches them all."""

import asyncio

import pytest

from app.singleflight import SingleFlight


class Loader:
    def __init__(self, result: object = "value", error: Exception | None = None) -> None:
        self.calls = 0
        self.release = asyncio.Event()
        self.result, self.error = result, error

    async def __call__(self) -> object:
        self.calls += 1
        await self.release.wait()
        if self.error is not None:
            raise self.error
        return self.result


def test_concurrent_callers_share_one_load_and_a_later_one_loads_again() -> None:
    async def scenario() -> None:
        flights: SingleFlight[str, object] = SingleFlight()
        loader = Loader()
        waiting = [asyncio.create_task(flights.do("k", loader)) for _ in range(32)]
        await asyncio.sleep(0)
        assert len(flights._calls) == 1  # one load in flight
        loader.release.set()
        assert await asyncio.gather(*waiting) == ["value"] * 32
        assert loader.calls == 1 and len(flights._calls) == 0
        assert await flights.do("k", loader) == "value"
        assert loader.calls == 2  # nothing is cached here: that is the caller's TTL cache
    asyncio.run(scenario())


def test_different_keys_load_separately() -> None:
    async def scenario() -> None:
        flights: SingleFlight[str, object] = SingleFlight()
        a, b = Loader("a"), Loader("b")
        tasks = [asyncio.create_task(flights.do("a", a)), asyncio.create_task(flights.do("b", b))]
        await asyncio.sleep(0)
        a.release.set()
        b.release.set()
        assert await asyncio.gather(*tasks) == ["a", "b"]
        assert (a.calls, b.calls) == (1, 1)
    asyncio.run(scenario())


def test_an_error_reaches_every_caller_and_is_not_kept() -> None:
    async def scenario() -> None:
        flights: SingleFlight[str, object] = SingleFlight()
        failing = Loader(error=LookupError("no such key"))
        tasks = [asyncio.create_task(flights.do("k", failing)) for _ in range(3)]
        await asyncio.sleep(0)
        failing.release.set()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        assert all(isinstance(r, LookupError) for r in results) and failing.calls == 1
        working = Loader()
        working.release.set()
        assert await flights.do("k", working) == "value"
    asyncio.run(scenario())


def test_a_caller_going_away_does_not_cancel_the_others() -> None:
    async def scenario() -> None:
        flights: SingleFlight[str, object] = SingleFlight()
        loader = Loader()
        leaving = asyncio.create_task(flights.do("k", loader))
        staying = asyncio.create_task(flights.do("k", loader))
        await asyncio.sleep(0)
        leaving.cancel()
        with pytest.raises(asyncio.CancelledError):
            await leaving
        loader.release.set()
        assert await staying == "value" and loader.calls == 1
    asyncio.run(scenario())
