"""The token buckets behind per-key rate limiting."""

from app.ratelimit import MAX_TRACKED_KEYS, TokenBuckets


def test_a_burst_then_the_rate() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3)
    assert [buckets.take(b"k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take(b"k", 0.0) == 0.5  # one token comes back in half a second
    assert buckets.take(b"k", 0.5) == 0.0
    assert buckets.take(b"k", 0.5) > 0


def test_keys_do_not_share_a_bucket() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1)
    assert buckets.take(b"a", 0.0) == 0.0
    assert buckets.take(b"a", 0.0) > 0
    assert buckets.take(b"b", 0.0) == 0.0


def test_the_table_stays_bounded() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1)
    for i in range(MAX_TRACKED_KEYS + 50):
        buckets.take(str(i).encode(), 0.0)
    assert len(buckets._buckets) == MAX_TRACKED_KEYS
