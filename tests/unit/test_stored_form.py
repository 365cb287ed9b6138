"""The stored form of datasets (models/mapped.py, models/formats/stored.py) and the batches
read from it (workers/batches.py): dtypes, round trips, window offsets, splits, memory."""

import gzip
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from models import formats, mapped
from models.archive import CHUNK, FormatError
from models.data import TextData, image_data, open_stored, text_data, window_count
from models.formats import Limits, StoredText, TextFile
from models.formats.text import id_dtype
from tests.integration.memory import MIB, peak, reset_peak, rss
from workers.batches import (
    MappedImages,
    Shuffle,
    TensorBatches,
    Windows,
    train_and_val_batches,
)

CPU = torch.device("cpu")


@pytest.mark.parametrize(("vocab", "dtype"), [
    (1, np.uint8), (256, np.uint8), (257, np.uint16), (65_536, np.uint16),
    (65_537, np.uint32)])
def test_character_ids_take_the_narrowest_type(vocab: int, dtype: type) -> None:
    assert id_dtype(vocab) == np.dtype(dtype)


def _upload(tmp_path: Path, text: str, name: str = "corpus.txt.gz") -> TextFile:
    path = tmp_path / name
    path.write_bytes(gzip.compress(text.encode()))
    parsed = formats.parse("text", {"file": (path, name)}, {}, Limits())
    assert isinstance(parsed, TextFile)
    return parsed


def _stored(tmp_path: Path, parsed: TextFile) -> tuple[StoredText, dict]:
    target = tmp_path / "store" / "corpus.arrays"
    sha256, size = formats.store(parsed, target)
    formats.discard(parsed)
    info = formats.describe(parsed) | {"stored": {"sha256": sha256, "bytes": size,
                                                  "form": formats.FORM}}
    stored = formats.read_stored(target, kind="text", sha256=sha256, classes=None)
    assert isinstance(stored, StoredText)
    return stored, info


@pytest.mark.parametrize("alphabet", ["ab\n", "".join(map(chr, range(0x100, 0x100 + 300))),
                                      "x\U0001F600é"], ids=["uint8", "uint16", "astral"])
def test_text_round_trips_through_its_ids_across_chunks(tmp_path: Path, alphabet: str) -> None:
    rng = np.random.default_rng(0)
    text = "".join(rng.choice(list(alphabet), size=CHUNK // 2 + 7))  # multibyte: > 1 chunk
    stored, info = _stored(tmp_path, _upload(tmp_path, text))
    assert stored.ids.dtype == id_dtype(len(stored.vocab)).type and info["ids"] == \
        stored.ids.dtype.name
    assert stored.vocab == sorted(set(text)) == info["vocab"]
    assert "".join(stored.vocab[i] for i in stored.ids) == text
    assert not stored.ids.flags.writeable  # a view of a read-only map


def test_arrays_file_is_aligned_hash_checked_and_whole_or_absent(tmp_path: Path) -> None:
    path = tmp_path / "a.arrays"
    x = np.arange(100, dtype=np.float32).reshape(10, 10)
    y = np.arange(10, dtype=np.uint8)
    sha256, size = mapped.write(path, {"y": y, "x": x}, {"kind": "images"})
    assert size == path.stat().st_size and size % mapped.ALIGN == 0
    opened = mapped.open_verified(path, sha256, FormatError, "it")
    assert np.array_equal(opened.arrays["x"], x) and np.array_equal(opened.arrays["y"], y)
    assert opened.arrays["x"].ctypes.data % mapped.ALIGN == 0
    opened.release()  # pages dropped: still readable from the file
    assert np.array_equal(opened.arrays["x"], x)
    with pytest.raises(FormatError, match="sha256"):
        mapped.open_verified(path, "0" * 64, FormatError, "it")
    short = mapped.Streamed(np.dtype(np.uint8), (10,), iter([np.zeros(4, np.uint8)]))
    with pytest.raises(ValueError, match="yielded 4 bytes"):
        mapped.write(tmp_path / "b.arrays", {"ids": short}, {})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.arrays"]  # no temporary left


def _reference_windows(ids: np.ndarray, seq_len: int) -> torch.Tensor:
    """The windows as the trainer once materialized them (torch's unfold)."""
    tensor = torch.from_numpy(ids.astype(np.int64))
    if len(tensor) < seq_len + 1:
        return tensor.new_empty((0, seq_len + 1))
    return tensor.unfold(0, seq_len + 1, seq_len)


@pytest.mark.parametrize("in_memory", [True, False], ids=["built-in", "mapped"])
def test_windows_are_offsets_into_the_ids_and_the_splits_cover_them(
        tmp_path: Path, in_memory: bool) -> None:
    text = "".join(np.random.default_rng(1).choice(list("abcdefg"), size=1000))
    if in_memory:
        data = text_data(text, 0.1)
    else:
        _, info = _stored(tmp_path, _upload(tmp_path, text))
        opened = open_stored(tmp_path / "store" / "corpus.arrays", "text", info)
        assert isinstance(opened, TextData) and opened.source is not None
        data = opened
    train, val = train_and_val_batches(data, 16, CPU)
    assert isinstance(train, TensorBatches if in_memory else Windows) and val is not None
    assert data.split == 900 and len(train) == window_count(900, 16) == 56
    for batches, ids, seq in ((train, data.train, 16), (val, data.val, 16)):
        reference = _reference_windows(np.asarray(ids), seq)
        index = torch.randperm(len(batches), generator=torch.Generator().manual_seed(2))
        x, y = batches.batch(index.to(batches.index_device))
        assert x.dtype == y.dtype == torch.int64 and x.shape == (len(batches), seq)
        assert torch.equal(x.cpu(), reference[index, :-1])
        assert torch.equal(y.cpu(), reference[index, 1:])
    # Validation windows never reach into the training text, nor training ones into it.
    if isinstance(val, Windows):
        assert val.start == data.split and (len(train) - 1) * 16 + 17 <= data.split


def test_mapped_images_read_as_the_in_memory_ones(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, size=(40, 1, 4, 4), dtype=np.uint8)
    y = rng.integers(0, 3, size=40).astype(np.uint8)
    path = tmp_path / "images.arrays"
    sha256, _ = formats.store(formats.Images(x=x, y=y.astype(np.int64),
                                             classes=["a", "b", "c"]), path)
    info = {"validation_fraction": 0.25, "classes": ["a", "b", "c"],
            "stored": {"sha256": sha256, "form": formats.FORM}}
    mapped_data = open_stored(path, "images", info)
    memory_data = image_data(x, y, ["a", "b", "c"], 0.25)
    mapped_train, mapped_val = train_and_val_batches(mapped_data, 1, CPU)
    memory_train, memory_val = train_and_val_batches(memory_data, 1, CPU)
    assert isinstance(mapped_train, MappedImages) and isinstance(memory_train, TensorBatches)
    for a, b in ((mapped_train, memory_train), (mapped_val, memory_val)):
        assert a is not None and b is not None and len(a) == len(b)
        index = torch.arange(len(a)).flip(0)
        (xa, ya), (xb, yb) = a.batch(index), b.batch(index)
        assert xa.dtype == torch.float32 and torch.equal(xa, xb) and torch.equal(ya, yb)
        assert float(xa.max()) <= 1.0


@pytest.mark.slow
def test_reading_every_window_of_a_large_map_holds_a_bounded_window_of_it(
        tmp_path: Path) -> None:
    """Windows read from across a 128 MiB map in a shuffled order (a fault maps a folio of
    the page cache, often far more than the window, so 64K windows touch all of it): the
    process's peak grows by the pages it holds between releases (RELEASE_BYTES), not by
    the file."""
    size = 128 * MIB
    chunks = (np.full(8 * MIB, i % 7, dtype=np.uint8) for i in range(size // (8 * MIB)))
    ids = mapped.Streamed(np.dtype(np.uint8), (size,), chunks)
    path = tmp_path / "big.arrays"
    sha256, _ = mapped.write(path, {"ids": ids}, {"kind": "text", "vocab": list("abcdefg")})
    pid = os.getpid()
    reset_peak(pid)
    idle = rss(pid)
    opened = mapped.open_verified(path, sha256, FormatError, "it")  # hashes the whole file
    data = TextData(vocab=list("abcdefg"), ids=opened.arrays["ids"], split=size,
                    source=opened)
    train, _ = train_and_val_batches(data, 64, CPU)
    order, total = train.order(0), 0
    for start in range(0, 64 * 1024, 1024):  # evaluation's batches, the largest read
        _, y = train.batch(order[start:start + 1024])
        total += int(y[:, -1].sum())
    assert total > 0
    growth = peak(pid) - idle
    assert growth < 96 * MIB, f"{growth / MIB:.0f} MiB"  # without releases: about 150


@pytest.mark.parametrize("n", [1, 2, 3, 17, 64, 1000, 4097])
def test_a_shuffle_is_a_permutation_computed_per_position(n: int) -> None:
    order = Shuffle(n, key=7)
    whole = order[0:n]
    assert sorted(whole.tolist()) == list(range(n))
    assert torch.equal(torch.cat([order[a:a + 5] for a in range(0, n, 5)]), whole)
    assert torch.equal(Shuffle(n, key=7)[0:n], whole)  # from the key alone
    if n >= 17:
        assert not torch.equal(Shuffle(n, key=8)[0:n], whole)
        assert not torch.equal(whole, torch.arange(n))
