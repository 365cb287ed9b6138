"""An owner's uploads together may take so many bytes once stored (issue 16, item 3): past
that an upload is a 413 that keeps nothing, however small it was on the wire."""

import io
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from tests.integration.service import Service
from tests.integration.test_datasets import _ids, _stored, upload


@contextmanager
def api_with(service: Service, **settings: str) -> Iterator[None]:
    """The service's API restarted with these settings, and restarted as it was after."""
    saved = dict(service.env)
    service.env.update({f"TRAINSERVE_{k.upper()}": v for k, v in settings.items()})
    service.stop("api")
    service.start_api()
    try:
        service.wait_ready()
        yield
    finally:
        service.env.clear()
        service.env.update(saved)
        service.stop("api")
        service.start_api()
        service.wait_ready()


def _zeros_npz(n: int) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, x=np.zeros((n, 28, 28), dtype=np.uint8),
                        y=np.zeros(n, dtype=np.int64))
    return buffer.getvalue()


def _fresh_owner(service: Service, role: str) -> str:
    """A new owner's key, so that no other test's uploads count against its quota."""
    name = f"{role}-{secrets.token_hex(4)}"
    service.keys[name] = service.cli("keys", "create", name).stdout.strip()
    return name


def test_uploads_past_the_owners_storage_quota_are_413(service: Service) -> None:
    quota = 4_000_000  # the bomb below fits alone, not beside the first upload
    carol, dave = _fresh_owner(service, "carol"), _fresh_owner(service, "dave")
    with api_with(service, owner_storage_bytes=str(quota)), service.client(carol) as client, \
            service.client(dave) as other:
        first = upload(client, "npz", ("first.npz", _zeros_npz(2000)))  # 1.6 MB stored
        assert first.status_code == 201, first.text
        # a few KB on the wire, ~3 MB once stored: refused after parsing, nothing kept
        bomb = _zeros_npz(4000)
        assert len(bomb) < 10_000
        before, stored = _ids(client), _stored(service)
        refused = upload(client, "npz", ("zeros.npz", bomb))
        assert refused.status_code == 413, refused.text
        assert f"storage quota of {quota:,} bytes exceeded" in refused.json()["detail"]
        assert _ids(client) == before and _stored(service) == stored
        # the quota is per owner
        assert upload(other, "npz", ("zeros.npz", bomb)).status_code == 201
        # what fits still fits, and a delete frees its share
        small = upload(client, "npz", ("small.npz", _zeros_npz(1000)))
        assert small.status_code == 201, small.text
        assert upload(client, "npz", ("zeros.npz", bomb)).status_code == 413
        assert client.delete(f"/v1/datasets/{small.json()['id']}").status_code == 204
        assert client.delete(f"/v1/datasets/{first.json()['id']}").status_code == 204
        assert upload(client, "npz", ("zeros.npz", bomb)).status_code == 201
