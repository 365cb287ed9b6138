"""The micro-batcher: concurrent requests share forward passes, each gets its own answer,
a lone request does not wait, and a failing batch fails only its own requests."""

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from app.serving import inference
from app.serving.batcher import MicroBatcher
from app.serving.inference import CharQuery
from app.serving.predictor import char_predictor
from models.recurrent import CharRNN, CharRNNConfig


@pytest.fixture
def batcher() -> Iterator[MicroBatcher]:
    b = MicroBatcher(max_batch=8, max_delay=0.002).start()
    yield b
    b.stop()


class Recorder:
    """A batch function that remembers the batches it saw, and is slow enough for queues
    to form behind it."""

    def __init__(self, seconds: float = 0.003) -> None:
        self.batches: list[list[Any]] = []
        self.threads: set[str] = set()
        self.seconds = seconds

    def __call__(self, payloads: list[Any]) -> list[Any]:
        self.batches.append(list(payloads))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.seconds)  # stands for a forward pass: slow enough for a queue
        return [p * 10 for p in payloads]


def test_concurrent_requests_are_batched_and_answered_separately(batcher: MicroBatcher) -> None:
    run = Recorder()

    async def main() -> list[int]:
        return list(await asyncio.gather(*(batcher.submit("m", run, i) for i in range(40))))
    assert asyncio.run(main()) == [i * 10 for i in range(40)]
    assert len(run.batches) < 40
    assert max(len(b) for b in run.batches) <= 8
    assert sorted(p for b in run.batches for p in b) == list(range(40))
    assert run.threads == {"inference"}  # never the event loop's thread
    assert batcher.requests == 40 and batcher.batches == len(run.batches)


def test_different_keys_never_share_a_batch(batcher: MicroBatcher) -> None:
    a, b = Recorder(), Recorder()

    async def main() -> None:
        await asyncio.gather(*(batcher.submit("a" if i % 2 else "b", a if i % 2 else b, i)
                               for i in range(20)))
    asyncio.run(main())
    assert all(p % 2 == 1 for batch in a.batches for p in batch)
    assert all(p % 2 == 0 for batch in b.batches for p in batch)


def test_a_lone_request_does_not_wait_for_company() -> None:
    slow = MicroBatcher(max_batch=32, max_delay=0.5).start()
    try:
        async def main() -> float:
            await slow.submit("m", lambda xs: xs, 0)
            started = time.perf_counter()
            for i in range(5):
                assert await slow.submit("m", lambda xs: xs, i) == i
            return (time.perf_counter() - started) / 5
        assert asyncio.run(main()) < 0.1  # far below the 0.5 s delay
    finally:
        slow.stop()


def test_a_failing_batch_fails_its_requests_only(batcher: MicroBatcher) -> None:
    def broken(payloads: list[Any]) -> list[Any]:
        raise ValueError("boom")

    async def main() -> tuple[Any, Any]:
        return await asyncio.gather(batcher.submit("bad", broken, 1),
                                    batcher.submit("good", lambda xs: xs, 2),
                                    return_exceptions=True)
    bad, good = asyncio.run(main())
    assert isinstance(bad, ValueError) and good == 2

    async def after() -> int:
        return await batcher.submit("good", lambda xs: xs, 3)
    assert asyncio.run(after()) == 3  # the thread lives on


def test_a_cancelled_request_does_not_break_the_others(batcher: MicroBatcher) -> None:
    run = Recorder(seconds=0.02)

    async def main() -> list[Any]:
        tasks = [asyncio.ensure_future(batcher.submit("m", run, i)) for i in range(6)]
        await asyncio.sleep(0)
        tasks[0].cancel()
        return await asyncio.gather(*tasks[1:])
    assert asyncio.run(main()) == [10, 20, 30, 40, 50]


def test_batched_predictions_through_the_batcher_equal_unbatched(batcher: MicroBatcher) -> None:
    torch.manual_seed(0)
    model = char_predictor(CharRNN(CharRNNConfig(vocab_size=5, hidden_size=32, num_layers=2)))
    gen = torch.Generator().manual_seed(0)
    queries = [CharQuery(ids=torch.randint(0, 5, (n,), generator=gen).tolist(), top_k=3)
               for n in (3, 12, 1, 7, 7, 25, 2, 9, 4, 16)]

    def run(batch: list[CharQuery]) -> list[Any]:
        sizes.append(len(batch))
        time.sleep(0.002)  # let the next batch gather
        return inference.next_chars(model, batch)
    sizes: list[int] = []

    async def main() -> list[Any]:
        return list(await asyncio.gather(*(batcher.submit("m", run, q) for q in queries)))
    answers = asyncio.run(main())
    assert max(sizes) > 1
    for query, answer in zip(queries, answers, strict=True):
        [alone] = inference.next_chars(model, [query])
        torch.testing.assert_close(answer.probs, alone.probs, rtol=1e-5, atol=1e-5)
        assert answer.sequence == alone.sequence and answer.top[0][0] == alone.top[0][0]


def test_stop_ends_the_thread() -> None:
    b = MicroBatcher(max_batch=4, max_delay=0.0).start()
    b.stop()
    assert not b._thread.is_alive()


def test_pace_says_alone_only_for_a_lone_request_after_a_lone_one() -> None:
    paced: list[bool] = []
    b = MicroBatcher(max_batch=8, max_delay=0.002, pace=paced.append).start()
    run = Recorder()
    try:
        async def main() -> None:
            for i in range(3):  # one at a time: each alone
                await b.submit("m", run, i)
            await asyncio.gather(*(b.submit("m", run, i) for i in range(20)))
        asyncio.run(main())
    finally:
        b.stop()
    assert paced[:3] == [True, True, True]
    assert len(paced) == len(run.batches)
    assert any(len(batch) > 1 for batch in run.batches)
    # Never alone in a batch of several, nor right after one.
    for i, (alone, batch) in enumerate(zip(paced, run.batches, strict=True)):
        assert not alone or (len(batch) == 1 and (i == 0 or len(run.batches[i - 1]) == 1))


def test_a_failing_pace_hook_leaves_the_batcher_serving() -> None:
    def broken(alone: bool) -> None:
        raise RuntimeError("boom")
    b = MicroBatcher(max_batch=8, max_delay=0.002, pace=broken).start()
    try:
        async def main() -> list[int]:
            return [await b.submit("m", lambda xs: xs, i) for i in range(3)]
        assert asyncio.run(main()) == [0, 1, 2]
    finally:
        b.stop()
