"""Text and CSV parsed as they stream: limits stop them early, errors name their place, and
nothing is left behind."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from models import formats
from models.archive import CHUNK, FormatError
from models.formats import Images, Limits, TextFile, tabular

LIMITS = Limits()


def _parse(tmp_path: Path, fmt: str, data: bytes, limits: Limits = LIMITS,
           **options: str) -> Images | TextFile:
    path = tmp_path / "upload.part"
    path.write_bytes(data)
    return formats.parse(fmt, {"file": (path, "up")}, options, limits)


def _refused(tmp_path: Path, fmt: str, data: bytes, limits: Limits = LIMITS,
             **options: str) -> str:
    with pytest.raises(FormatError) as caught:
        _parse(tmp_path, fmt, data, limits, **options)
    return str(caught.value)


def test_csv_over_many_blocks_keeps_every_row_in_order(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(tabular, "BLOCK_FIELDS", 7)  # a block of 3 or 4 rows
    rows = [f"{i % 3},{i},{i / 2}" for i in range(50)]
    parsed = _parse(tmp_path, "csv", gzip.compress(("label,a,b\n" + "\n".join(rows)).encode()))
    assert isinstance(parsed, Images) and parsed.x.dtype == np.float32
    assert parsed.x.shape == (50, 2) and parsed.x[49].tolist() == [49.0, 24.5]
    assert parsed.y.tolist() == [i % 3 for i in range(50)] and parsed.classes == ["0", "1", "2"]


def test_csv_string_labels_become_sorted_classes(tmp_path: Path) -> None:
    parsed = _parse(tmp_path, "csv", b"eel,1\ncat,2\ndog,3\ncat,4\n")
    assert isinstance(parsed, Images)
    assert parsed.classes == ["cat", "dog", "eel"] and parsed.y.tolist() == [2, 0, 1, 0]


def test_csv_errors_name_the_line_in_a_later_block(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(tabular, "BLOCK_FIELDS", 4)
    body = "".join(f"1,{i}\n" for i in range(20)) + "1,oops\n"
    assert "line 21: 'oops' is not a number" in _refused(tmp_path, "csv", body.encode())


def test_csv_limits_stop_the_read(tmp_path: Path) -> None:
    small = Limits(max_examples=10, max_classes=5)
    assert "more than 10 rows" in _refused(tmp_path, "csv", b"1,2\n" * 11, small)
    assert "more than 5 distinct labels" in _refused(
        tmp_path, "csv", b"".join(f"c{i},1\n".encode() for i in range(6)), small)
    assert "label 99999999999999999999999 is out of range" in _refused(
        tmp_path, "csv", b"0,1\n99999999999999999999999,2\n")
    long_line = b"1," + b"2" * (tabular.MAX_LINE + 1)
    assert "longer than" in _refused(tmp_path, "csv", long_line)
    assert "longer than" in _refused(tmp_path, "csv", long_line + b"\n1,2\n")
    assert "NaN or infinite" in _refused(tmp_path, "csv", b"1,nan\n")


def test_csv_invalid_utf8_names_its_byte_across_chunks(tmp_path: Path) -> None:
    data = b"1,2\n" * (CHUNK // 4) + b"1,\xff\n"
    message = _refused(tmp_path, "csv", gzip.compress(data))
    assert f"at byte {CHUNK + 2:,}" in message and "not valid utf-8" in message


def test_text_is_written_out_as_it_is_read(tmp_path: Path) -> None:
    data = ("é" * CHUNK).encode()  # two bytes a character, split across chunks
    parsed = _parse(tmp_path, "text", gzip.compress(data + b"xy"))
    assert isinstance(parsed, TextFile)
    assert parsed.num_examples == CHUNK + 2 and parsed.vocab == ["x", "y", "é"]
    assert parsed.path.read_bytes() == data + b"xy" and parsed.bytes == len(data) + 2
    root = tmp_path / "store"
    target = formats.dataset_path(root, formats.relative_path("a" * 28, "text"))
    sha256, size = formats.store(parsed, target)
    formats.discard(parsed)
    assert not parsed.path.exists()
    stored = formats.read_stored(target, kind="text", sha256=sha256, classes=None)
    assert isinstance(stored, formats.StoredText) and stored.num_examples == CHUNK + 2
    assert stored.ids.dtype == np.uint8 and size == target.stat().st_size
    assert stored.ids[:CHUNK].max() == stored.ids[0] == 2 and stored.ids[-2:].tolist() == [0, 1]


def test_text_errors_stop_early_and_leave_nothing(tmp_path: Path) -> None:
    small = Limits(max_chars=CHUNK, max_vocab=3)
    assert "more than 1,048,576 characters" in _refused(
        tmp_path, "text", gzip.compress(b"a" * (3 * CHUNK)), small)
    assert "vocabulary limit is 3" in _refused(tmp_path, "text", b"abcd", small)
    message = _refused(tmp_path, "text", gzip.compress(b"a" * (2 * CHUNK) + b"\xc3"))
    assert f"at byte {2 * CHUNK:,}" in message and "not valid utf-8" in message
    assert "1 character" in _refused(tmp_path, "text", b"a")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["upload.part"]
