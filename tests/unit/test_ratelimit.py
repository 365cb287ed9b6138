"""The token buckets behind per-key rate limiting."""

from app.ratelimit import MAX_TRACKED_KEYS, TokenBuckets, key_identity


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


def test_the_schemes_spelling_does_not_change_whose_bucket_it_is() -> None:
    # Every case variant authenticates the same key (the scheme is case-insensitive), so
    # varying it must not buy a fresh bucket.
    spellings = [b"Bearer", b"bearer", b"BEARER", b"bEARER", b"BeArEr", b"bEaReR", b"BEArer",
                 b"beaRER"]
    identities = {key_identity(s + b" secret-key") for s in spellings}
    assert len(identities) == 1
    assert key_identity(b"Bearer other-key") not in identities
