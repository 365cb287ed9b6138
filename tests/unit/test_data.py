"""Built-in datasets, their fixed splits, and character windows."""

import numpy as np
import pytest
import torch

from models import data
from models.data import ImageData, TextData, load_builtin, window_count

N_DIGITS = 1797


def _rows(x: np.ndarray, y: np.ndarray) -> list[bytes]:
    return sorted(xi.tobytes() + bytes([int(yi)]) for xi, yi in zip(x, y, strict=True))


def test_digits_shape_classes_and_range() -> None:
    digits = load_builtin("digits")
    assert isinstance(digits, ImageData)
    assert digits.kind == "images" and digits.source is None  # small: held in memory
    assert len(digits.train_rows) + len(digits.val_rows) == len(digits.y) == N_DIGITS
    assert digits.shape == [1, 8, 8] and digits.x.shape[1:] == (1, 8, 8)
    assert digits.x.dtype == np.float32
    assert digits.classes == [str(c) for c in range(10)]
    assert set(digits.y.tolist()) == set(range(10))
    assert digits.x.min() >= 0 and digits.x.max() == 1  # scaled by 16, the data's top value


def test_digits_validation_split_is_fixed_sized_and_disjoint() -> None:
    first, second = load_builtin("digits"), load_builtin("digits")
    assert len(first.val_rows) == round(0.2 * N_DIGITS) == 359
    assert len(first.train_rows) == N_DIGITS - 359
    assert np.array_equal(first.val_rows, second.val_rows)
    assert np.array_equal(first.train_rows, second.train_rows)
    # train and val together are the whole dataset, each example once
    both = np.concatenate([first.train_rows, first.val_rows])
    assert sorted(both.tolist()) == list(range(N_DIGITS))
    x, y = data._digits_arrays()
    assert _rows(first.x[both], first.y[both]) == _rows(x, y)
    # shuffled, not the file's first rows
    assert sorted(first.val_rows.tolist()) != list(range(359))


def test_image_split_by_index_is_disjoint_and_independent_of_global_seed() -> None:
    n = 100
    x = np.arange(n, dtype=np.float32).reshape(n, 1, 1, 1)
    y = np.arange(n, dtype=np.int64)
    np.random.seed(123)
    torch.manual_seed(123)
    a = data.image_data(x, y, ["c"], 0.2)
    np.random.seed(7)
    torch.manual_seed(7)
    b = data.image_data(x, y, ["c"], 0.2)
    assert np.array_equal(a.val_rows, b.val_rows)
    train, val = set(a.train_rows.tolist()), set(a.val_rows.tolist())
    assert len(val) == 20 and len(train) == 80
    assert train.isdisjoint(val) and train | val == set(range(n))


def test_validation_fraction_override() -> None:
    digits = load_builtin("digits", 0.1)
    assert len(digits.val_rows) == round(0.1 * N_DIGITS)
    none = load_builtin("digits", 0.0)
    assert len(none.val_rows) == 0 and len(none.train_rows) == N_DIGITS


def test_builtin_info() -> None:
    info = data.builtin_info("digits")
    assert info["num_examples"] == N_DIGITS
    assert info["shape"] == [1, 8, 8]
    assert info["classes"] == [str(c) for c in range(10)]
    assert data.builtin_info("hihello")["vocab"] == ["e", "h", "i", "l", "o"]
    assert data.builtin_info("nope") is None


def test_hihello_vocab_and_single_window() -> None:
    text = load_builtin("hihello")
    assert isinstance(text, TextData)
    assert text.vocab == ["e", "h", "i", "l", "o"]
    assert text.ids.dtype == np.uint8 and len(text.val) == 0
    assert "".join(text.vocab[i] for i in text.train) == "hihello"
    assert window_count(len(text.train), 6) == 1


@pytest.mark.parametrize(("length", "seq_len", "count"), [
    (10, 3, 3), (12, 3, 3), (13, 3, 4), (0, 6, 0), (1, 6, 0), (6, 6, 0), (7, 6, 1)])
def test_window_count_tiles_the_text_with_one_id_overlap(length: int, seq_len: int,
                                                         count: int) -> None:
    assert window_count(length, seq_len) == count
    if count:  # the last window ends inside the text; one more would not
        assert (count - 1) * seq_len + seq_len + 1 <= length < count * seq_len + seq_len + 1


def test_text_split_holds_out_the_end() -> None:
    text = data.text_data("abcdefghij", 0.2)
    assert text.vocab == list("abcdefghij")
    assert text.train.tolist() == list(range(8))
    assert text.val.tolist() == [8, 9]
