"""What one upload may cost the API: parsing streams, so that a small gzip that unpacks to
tens or hundreds of megabytes never costs many times that in memory (issue 16, item 1)."""

import zlib

import httpx
import pytest

from tests.integration.memory import MIB, fresh_api, peak_growth
from tests.integration.service import Service

BOUND = 200 * MIB  # above idle, per upload


def _gzip(piece: bytes, times: int, tail: bytes = b"") -> bytes:
    """`piece` repeated, then `tail`, gzipped without ever holding the whole expansion."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [packer.compress(piece) for _ in range(times)]
    return b"".join([*out, packer.compress(tail), packer.flush()])


def _post(service: Service, fmt: str, name: str, data: bytes) -> httpx.Response:
    with service.client() as client:
        return client.post("/v1/datasets", data={"format": fmt}, files={"file": (name, data)},
                           timeout=300)


@pytest.mark.sqlite_only  # parsing is the same on both backends
def test_a_wide_gzipped_csv_costs_a_bounded_peak(service: Service) -> None:
    # 7,000 rows x 1,000 columns: about 21 MB unpacked from a few tens of kilobytes.
    row = ("1," + ",".join(["0.25"] * 999) + "\n").encode()
    header = ("label," + ",".join(f"f{i}" for i in range(999)) + "\n").encode()
    data = _gzip(row, 7000)
    data = zlib.compress(header, 9, 31) + data  # two gzip members are one stream
    with peak_growth(fresh_api(service)) as growth:
        response = _post(service, "csv", "wide.csv.gz", data)
    assert response.status_code in (200, 201), response.text[:500]
    assert response.json()["num_examples"] == 7000 and response.json()["shape"] == [999]
    print(f"csv of {len(data):,} gzipped bytes: {growth}")
    assert growth.bytes < BOUND, str(growth)


@pytest.mark.sqlite_only
def test_a_gzipped_text_bomb_is_422_at_a_bounded_peak(service: Service) -> None:
    # 200 MB of one character, then a byte that is not UTF-8.
    data = _gzip(b"a" * MIB, 200, b"\xff")
    with peak_growth(fresh_api(service)) as growth:
        response = _post(service, "text", "bomb.txt.gz", data)
    assert response.status_code == 422, response.text[:500]
    print(f"text of {len(data):,} gzipped bytes: {growth}")
    assert growth.bytes < BOUND, str(growth)


@pytest.mark.sqlite_only
def test_a_gzipped_invalid_text_just_under_the_limits_is_422_at_a_bounded_peak(
        service: Service) -> None:
    # 19 MiB of many characters (under the 20,000,000-character limit), then a bad byte.
    piece = bytes(range(32, 127)) * 1000
    data = _gzip(piece, (19 * MIB) // len(piece), b"\xc3")
    with peak_growth(fresh_api(service)) as growth:
        response = _post(service, "text", "late.txt.gz", data)
    assert response.status_code == 422, response.text[:500]
    assert "not valid utf-8" in response.json()["detail"][0]["msg"]
    print(f"text of {len(data):,} gzipped bytes: {growth}")
    assert growth.bytes < BOUND, str(growth)
