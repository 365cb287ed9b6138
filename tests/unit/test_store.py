"""core/store.py on both backends: a directory, and a bucket on moto's S3 server."""

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from core.config import Settings
from core.store import ArtifactRefused, Cache, Store, StoreUnavailable, open_store
from tests.integration import s3


@pytest.fixture(scope="module")
def endpoint() -> Iterator[str]:
    with s3.s3_endpoint() as url:
        yield url


@pytest.fixture(params=["directory", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    settings = {"data_dir": tmp_path / "data", "cache_bytes": 10_000}
    if request.param == "s3":
        endpoint = request.getfixturevalue("endpoint")
        settings |= {"artifact_url": s3.new_bucket(endpoint), "s3_endpoint_url": endpoint}
    return open_store(Settings(**settings))


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / f"src-{hashlib.sha256(data).hexdigest()[:8]}"
    path.write_bytes(data)
    return path


def test_put_then_fetch_gives_verified_bytes(store: Store, tmp_path: Path) -> None:
    data = os.urandom(3000)
    sha256, size = store.put_file("jobs/a/one.bin", _file(tmp_path, data))
    assert (sha256, size) == (hashlib.sha256(data).hexdigest(), 3000)
    assert store.fetch("jobs/a/one.bin", sha256).read_bytes() == data
    assert [o.key for o in store.list("jobs/")] == ["jobs/a/one.bin"]
    assert store.list("jobs/a/")[0].size == 3000


def test_a_replaced_or_missing_object_is_refused(store: Store, tmp_path: Path) -> None:
    sha256, _ = store.put_bytes("jobs/a/x.bin", b"original bytes")
    store.put_bytes("jobs/a/x.bin", b"original byteZ")  # replaced behind the row's back
    with pytest.raises(ArtifactRefused, match="sha256"):
        store.fetch("jobs/a/x.bin", sha256, "the thing")
    store.delete("jobs/a/x.bin")
    with pytest.raises(ArtifactRefused, match="not in the store"):
        store.fetch("jobs/a/x.bin", sha256)
    assert store.list("jobs/") == []


def test_consume_takes_the_file_and_keys_are_checked(store: Store, tmp_path: Path) -> None:
    source = _file(tmp_path, b"abc")
    store.put_file("datasets/d.txt", source, consume=True)
    assert not source.exists()
    for bad in ("../x", "/abs", "a//b", "a/./b", ""):
        with pytest.raises(ValueError):
            store.put_bytes(bad, b"x")


def test_the_store_is_writable_and_probes_leave_nothing(store: Store) -> None:
    assert store.check_writable() is None
    assert store.list() == []


def test_a_directory_put_is_whole_or_absent(tmp_path: Path) -> None:
    """A put that fails midway leaves neither the object nor its temporary file."""
    store = open_store(Settings(data_dir=tmp_path))
    with pytest.raises(FileNotFoundError):
        store.put_file("jobs/a/x.bin", tmp_path / "missing")
    assert store.list() == []


def test_an_unreachable_bucket_is_unavailable_not_refused(tmp_path: Path) -> None:
    os.environ.update({k: os.environ.get(k, v) for k, v in s3.CREDENTIALS.items()})
    store = open_store(Settings(data_dir=tmp_path, artifact_url="s3://nowhere/p",
                                s3_endpoint_url="http://127.0.0.1:1"))
    store.backend.client.meta.config.retries = {"max_attempts": 1}  # type: ignore[attr-defined]
    with pytest.raises(StoreUnavailable):
        store.fetch("jobs/a/x.bin", "0" * 64)
    problem = store.check_writable()
    assert problem is not None and "s3://nowhere/p/" in problem


def test_a_missing_bucket_is_unavailable(endpoint: str, tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path, artifact_url="s3://no-such-bucket/p",
                                s3_endpoint_url=endpoint))
    with pytest.raises(StoreUnavailable, match="NoSuchBucket"):
        store.put_bytes("jobs/a/x.bin", b"x")
    assert "is not writable" in (store.check_writable() or "")


def test_the_cache_fetches_once_and_evicts_least_recently_used(
        endpoint: str, tmp_path: Path) -> None:
    store = open_store(Settings(data_dir=tmp_path, artifact_url=s3.new_bucket(endpoint),
                                s3_endpoint_url=endpoint, cache_bytes=2500))
    digests = [store.put_bytes(f"jobs/a/{i}", bytes([i]) * 1000)[0] for i in range(3)]
    first = store.fetch("jobs/a/0", digests[0])
    store.delete("jobs/a/0")  # a hit never asks the bucket again
    assert store.fetch("jobs/a/0", digests[0]) == first
    old = time.time() - 3600  # long unused: evictable
    os.utime(first, (old, old))
    store.fetch("jobs/a/1", digests[1])
    os.utime(store.fetch("jobs/a/1", digests[1]), (old + 10, old + 10))
    store.fetch("jobs/a/2", digests[2])  # 3,000 bytes > 2,500: the oldest goes
    assert not first.exists()
    assert store.cache.get(digests[1]) is not None and store.cache.get(digests[2]) is not None


def test_the_cache_keeps_what_another_process_may_be_opening(tmp_path: Path) -> None:
    cache = Cache(tmp_path, max_bytes=10)
    for i in range(3):
        data = bytes([i]) * 100
        cache.add(hashlib.sha256(data).hexdigest(), lambda p, d=data: p.write_bytes(d), "x")
    assert len(cache.entries()) == 3  # all used within the last minute
    with pytest.raises(ArtifactRefused, match="sha256"):
        cache.add("0" * 64, lambda p: p.write_bytes(b"not that"), "the object")
    assert len(cache.entries()) == 3 and not list(tmp_path.glob(".*.tmp"))


def test_gc_sweeps_incomplete_multipart_uploads(endpoint: str, tmp_path: Path) -> None:
    url = s3.new_bucket(endpoint)
    store = open_store(Settings(data_dir=tmp_path, artifact_url=url, s3_endpoint_url=endpoint))
    bucket = url.removeprefix("s3://").split("/")[0]
    client = boto3.client("s3", endpoint_url=endpoint)
    upload = client.create_multipart_upload(Bucket=bucket, Key="artifacts/jobs/a/half")
    client.upload_part(Bucket=bucket, Key="artifacts/jobs/a/half", PartNumber=1, Body=b"0",
                       UploadId=upload["UploadId"])
    assert store.sweep_incomplete(older_than=3600) == 0  # may still be in flight
    assert store.sweep_incomplete(older_than=-1) == 1
    assert client.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
