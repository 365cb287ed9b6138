"""The artifact store: opaque objects under keys, in a directory or an S3 bucket, behind one
interface, with each host's bounded, verified cache in front of the bucket.

The store knows keys, files and sha256 digests, never what a file holds (datasets and
checkpoints are encoded by models/). Its contracts:

- `put_file` is whole or absent: a directory gets a temporary file, fsynced and renamed; a
  bucket gets a (multipart) upload that S3 makes visible only once complete. It returns the
  sha256 and size of what it stored; callers record a row only after it has returned.
- `fetch(key, sha256)` is a local path whose bytes hash to `sha256` (DESIGN.md invariant 7),
  else `ArtifactRefused`. From a bucket the object is downloaded once into the host's cache,
  verified on the way in and named by its digest; from a directory the file itself is
  hashed where it lies. The cache is a cache, never the record: an entry is only ever a
  copy of bytes whose digest some row holds.
- `StoreUnavailable` is the infrastructure failing (unreachable, refused credentials):
  callers retry it, unlike `ArtifactRefused` (missing or altered bytes).

Keys are built from row ids by models/ (`jobs/<id>/epoch-….safetensors`,
`datasets/<id>.…`), the same relative paths as the directory layout before the store.
"""

import hashlib
import logging
import os
import secrets
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import boto3
from boto3.exceptions import Boto3Error
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from core.config import Settings

log = logging.getLogger(__name__)

CHUNK = 1 << 20
STAGING = ".staging"  # temporary files of writes in progress, under a directory store's root
PROBE = ".probe"      # check_writable's objects
# A cache entry used this recently is not evicted: another process may have fetched it and
# be about to open it.
CACHE_IN_USE_SECONDS = 60.0


class StoreError(Exception):
    """Base of the store's errors."""


class ArtifactRefused(StoreError):
    """The object is missing, or its bytes do not hash to the digest recorded for it."""


class StoreUnavailable(StoreError):
    """The store could not be reached or refused the request: an infrastructure fault."""


@dataclass(frozen=True)
class StoredObject:
    key: str
    size: int
    modified: float  # seconds since the epoch


def sha256_file(path: Path) -> tuple[str, int]:
    """The file's sha256 and size, read in chunks (never whole in memory)."""
    hasher, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
            size += len(chunk)
    return hasher.hexdigest(), size


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _checked_key(key: str) -> str:
    """Keys are relative, slash-separated, built from ids: refuse anything else."""
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"not a store key: {key!r}")
    return key


class Backend(Protocol):
    description: str

    def put(self, key: str, path: Path, consume: bool) -> None: ...
    def download(self, key: str, dest: Path) -> None: ...
    def local(self, key: str) -> Path | None: ...
    def delete(self, key: str) -> None: ...
    def objects(self, prefix: str) -> Iterator[StoredObject]: ...
    def sweep_incomplete(self, older_than: float) -> int: ...


class DirectoryBackend:
    """A directory: the layout trainserve always had under `<data dir>/artifacts`."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self.description = str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / _checked_key(key)).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{key!r} leaves the artifact store")
        return path

    def put(self, key: str, path: Path, consume: bool) -> None:
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f".{final.name}.{secrets.token_hex(6)}.tmp")
        try:
            if consume:  # the caller's temporary file: moved, or copied across filesystems
                shutil.move(path, tmp)
            else:
                shutil.copyfile(path, tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(final.parent)

    def download(self, key: str, dest: Path) -> None:  # pragma: no cover - local() serves
        shutil.copyfile(self._path(key), dest)

    def local(self, key: str) -> Path | None:
        return self._path(key)

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def objects(self, prefix: str) -> Iterator[StoredObject]:
        base = self.root / prefix.rstrip("/") if prefix else self.root
        if not base.is_dir():
            return
        for path in sorted(base.rglob("*")):
            relative = path.relative_to(self.root).as_posix()
            # Temporary files of interrupted writes are listed too (gc and a resuming job
            # remove them like any object no row names); hidden folders (the staging area,
            # the API's incoming upload parts, probes) are not the store's.
            folders = relative.split("/")[:-1]
            if path.is_file() and not any(f.startswith(".") for f in folders):
                stat = path.stat()
                yield StoredObject(relative, stat.st_size, stat.st_mtime)

    def sweep_incomplete(self, older_than: float) -> int:
        """Temporary files of writes that a crash interrupted, older than `older_than`."""
        cutoff, removed = time.time() - older_than, 0
        for path in self.root.rglob("*.tmp") if self.root.is_dir() else ():
            try:
                if path.name.startswith(".") and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:  # a concurrent sweep or write got there first
                continue
        return removed


class S3Backend:
    """A bucket (and key prefix) on S3 or any S3-compatible server, through boto3."""

    # Multipart past 64 MiB, in 64 MiB parts streamed from disk, 4 at a time: a part in
    # flight costs memory, the file never does.
    PART_BYTES = 64 * 1024 * 1024

    def __init__(self, bucket: str, prefix: str, endpoint_url: str | None) -> None:
        self.bucket, self.prefix = bucket, f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.description = f"s3://{bucket}/{self.prefix}"
        config = Config(connect_timeout=5, read_timeout=60,
                        retries={"max_attempts": 4, "mode": "standard"})
        self.client = boto3.client("s3", endpoint_url=endpoint_url or None, config=config)
        self.transfer = TransferConfig(multipart_threshold=self.PART_BYTES,
                                       multipart_chunksize=self.PART_BYTES, max_concurrency=4)

    def _call(self, what: str, key: str, action: Callable[[], Any]) -> Any:
        """Run one request, mapping the client's errors to the store's."""
        try:
            return action()
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("404", "NoSuchKey", "NotFound"):
                raise ArtifactRefused(f"{key} is not in the store") from None
            raise StoreUnavailable(f"{what} {self.description}{key} failed: {exc}") from exc
        except (BotoCoreError, Boto3Error) as exc:  # boto3's transfers wrap what failed
            raise StoreUnavailable(f"{what} {self.description}{key} failed: {exc}") from exc

    def put(self, key: str, path: Path, consume: bool) -> None:
        name = self.prefix + _checked_key(key)
        self._call("writing", key, lambda: self.client.upload_file(
            str(path), self.bucket, name, Config=self.transfer))
        if consume:
            path.unlink(missing_ok=True)

    def download(self, key: str, dest: Path) -> None:
        name = self.prefix + _checked_key(key)
        self._call("reading", key, lambda: self.client.download_file(
            self.bucket, name, str(dest), Config=self.transfer))

    def local(self, key: str) -> Path | None:
        return None

    def delete(self, key: str) -> None:
        name = self.prefix + _checked_key(key)
        self._call("deleting", key, lambda: self.client.delete_object(Bucket=self.bucket,
                                                                      Key=name))

    def objects(self, prefix: str) -> Iterator[StoredObject]:
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.prefix + prefix)
        for page in self._call("listing", prefix, lambda: list(pages)):
            for item in page.get("Contents", []):
                key = item["Key"][len(self.prefix):]
                if not key.startswith(PROBE):
                    yield StoredObject(key, item["Size"], item["LastModified"].timestamp())

    def sweep_incomplete(self, older_than: float) -> int:
        """Abort multipart uploads that a crash left open, older than `older_than`: their
        parts are invisible to readers but still take space."""
        cutoff, aborted = time.time() - older_than, 0
        pages = self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=self.prefix)
        for page in self._call("listing uploads under", "", lambda: list(pages)):
            for upload in page.get("Uploads", []):
                if self._last_activity(upload) < cutoff:
                    self._call("aborting an upload to", upload["Key"], lambda u=upload:
                               self.client.abort_multipart_upload(
                                   Bucket=self.bucket, Key=u["Key"], UploadId=u["UploadId"]))
                    aborted += 1
        return aborted

    def _last_activity(self, upload: dict[str, Any]) -> float:
        """When the upload last moved: its newest part, or its start (an upload still
        sending parts is in flight however long ago it began)."""
        parts = self._call("listing parts of", upload["Key"], lambda: self.client.list_parts(
            Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]))
        times = [upload["Initiated"], *(part["LastModified"] for part in parts.get("Parts", []))]
        return max(t.timestamp() for t in times)


class Cache:
    """Verified copies of a bucket's objects on this host, named by their sha256, at most
    `max_bytes` together (least recently used go first). Safe across processes: entries
    appear by rename, and a process that has one open keeps it if another evicts it."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory, self.max_bytes = directory, max_bytes

    def _entry(self, sha256: str) -> Path:
        return self.directory / sha256[:2] / sha256

    def get(self, sha256: str) -> Path | None:
        path = self._entry(sha256)
        try:
            os.utime(path)  # its last use, for the LRU
        except FileNotFoundError:
            return None
        return path

    def add(self, sha256: str, fill: Callable[[Path], None], what: str) -> Path:
        """Fill a temporary file, verify it, and make it the entry for `sha256`."""
        final = self._entry(sha256)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".{secrets.token_hex(8)}.tmp"
        try:
            fill(tmp)
            got, _ = sha256_file(tmp)
            if got != sha256:
                raise ArtifactRefused(f"{what} does not match its recorded sha256")
            os.replace(tmp, final)
        finally:
            tmp.unlink(missing_ok=True)
        self.evict(keep=final)
        return final

    def entries(self) -> list[tuple[float, int, Path]]:
        found = []
        for path in self.directory.glob("??/*"):
            try:
                stat = path.stat()
            except FileNotFoundError:
                continue
            found.append((stat.st_mtime, stat.st_size, path))
        return sorted(found)

    def evict(self, keep: Path | None = None) -> int:
        """Remove least recently used entries until the cache fits; returns bytes freed."""
        entries = self.entries()
        total, freed = sum(size for _, size, _ in entries), 0
        recent = time.time() - CACHE_IN_USE_SECONDS
        for used, size, path in entries:
            if total <= self.max_bytes:
                break
            if path == keep or used > recent:
                continue
            path.unlink(missing_ok=True)
            total, freed = total - size, freed + size
        return freed


class Store:
    def __init__(self, backend: Backend, cache: Cache, staging: Path) -> None:
        self.backend, self.cache, self.staging = backend, cache, staging

    @property
    def description(self) -> str:
        return self.backend.description

    def staging_file(self) -> Path:
        """A fresh local path for a file about to be put (on the directory store's own
        filesystem, so `put_file(..., consume=True)` is a rename)."""
        self.staging.mkdir(parents=True, exist_ok=True)
        return self.staging / f"{secrets.token_hex(12)}.part"

    def put_file(self, key: str, path: Path, *, consume: bool = False) -> tuple[str, int]:
        """Store the file's bytes under `key`, whole or not at all; returns their sha256
        and size. With `consume`, the file is the store's afterwards (moved or removed)."""
        sha256, size = sha256_file(path)
        self.backend.put(key, path, consume)
        return sha256, size

    def put_bytes(self, key: str, data: bytes) -> tuple[str, int]:
        tmp = self.staging_file()
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
            return self.put_file(key, tmp, consume=True)
        finally:
            tmp.unlink(missing_ok=True)

    def fetch(self, key: str, sha256: str, what: str = "the artifact") -> Path:
        """A local path to the object's bytes, verified against `sha256`."""
        local = self.backend.local(key)
        if local is not None:
            try:
                got, _ = sha256_file(local)
            except FileNotFoundError:
                raise ArtifactRefused(f"{what} is not in the store") from None
            except OSError as exc:
                raise ArtifactRefused(f"{what} is unreadable: {exc.strerror}") from None
            if got != sha256:
                raise ArtifactRefused(f"{what} does not match its recorded sha256")
            return local
        cached = self.cache.get(sha256)
        if cached is not None:
            return cached
        return self.cache.add(sha256, lambda tmp: self.backend.download(key, tmp), what)

    def delete(self, key: str) -> None:
        self.backend.delete(key)

    def list(self, prefix: str = "") -> list[StoredObject]:
        return list(self.backend.objects(prefix))

    def sweep_incomplete(self, older_than: float) -> int:
        removed = self.backend.sweep_incomplete(older_than)
        cutoff = time.time() - older_than
        for path in self.staging.glob("*.part") if self.staging.is_dir() else ():
            try:
                if path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed

    def check_writable(self) -> str | None:
        """None when a small object can be written, read back and deleted; else why not."""
        key = f"{PROBE}/{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}"
        data = secrets.token_bytes(16)
        try:
            self.put_bytes(key, data)
            tmp = self.staging_file()
            try:
                local = self.backend.local(key)
                if local is None:
                    self.backend.download(key, tmp)
                    local = tmp
                ok = local.read_bytes() == data
            finally:
                tmp.unlink(missing_ok=True)
            self.backend.delete(key)
        except (StoreError, OSError, ValueError) as exc:
            return f"the artifact store at {self.description} is not writable: {exc}"
        return None if ok else f"the artifact store at {self.description} returned other bytes"


def open_store(settings: Settings) -> Store:
    """The store `TRAINSERVE_ARTIFACT_URL` names: `s3://BUCKET/PREFIX`, or a directory."""
    url = settings.artifact_url
    if url.startswith("s3://"):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ValueError("TRAINSERVE_ARTIFACT_URL: s3://BUCKET/PREFIX needs a bucket")
        backend: Backend = S3Backend(bucket, prefix, settings.s3_endpoint_url or None)
        staging = settings.cache_path / STAGING
    else:
        directory = DirectoryBackend(Path(url) if url else settings.artifact_dir)
        backend, staging = directory, directory.root / STAGING
    return Store(backend, Cache(settings.cache_path, settings.cache_bytes), staging)
