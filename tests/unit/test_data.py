"""Built-in datasets, their fixed splits, and character windows."""

import numpy as np
import pytest
import torch

from models import data
from models.data import ImageData, TextData, load_builtin, windows

N_DIGITS = 1797


def _rows(x: torch.Tensor, y: torch.Tensor) -> list[bytes]:
    return sorted(xi.numpy().tobytes() + bytes([int(yi)]) for xi, yi in zip(x, y, strict=True))


def test_digits_shape_classes_and_range() -> None:
    digits = load_builtin("digits")
    assert isinstance(digits, ImageData)
    assert digits.kind == "images"
    assert len(digits.y_train) + len(digits.y_val) == N_DIGITS
    assert digits.shape == [1, 8, 8]
    assert digits.x_train.shape[1:] == digits.x_val.shape[1:] == (1, 8, 8)
    assert digits.x_train.dtype == torch.float32
    assert digits.y_train.dtype == torch.int64
    assert digits.classes == [str(c) for c in range(10)]
    both_y = torch.cat([digits.y_train, digits.y_val])
    assert set(both_y.tolist()) == set(range(10))
    both_x = torch.cat([digits.x_train, digits.x_val])
    assert both_x.min() >= 0 and both_x.max() <= 1
    assert both_x.max() == 1  # scaled by 16, the data's top value


def test_digits_validation_split_is_fixed_sized_and_disjoint() -> None:
    first, second = load_builtin("digits"), load_builtin("digits")
    assert len(first.y_val) == round(0.2 * N_DIGITS) == 359
    assert len(first.y_train) == N_DIGITS - 359
    assert torch.equal(first.x_val, second.x_val)
    assert torch.equal(first.y_val, second.y_val)
    assert torch.equal(first.x_train, second.x_train)
    # train and val together are the whole dataset, each example once
    x, y = data._digits_arrays()
    assert _rows(torch.cat([first.x_train, first.x_val]), torch.cat([first.y_train, first.y_val])
                 ) == _rows(torch.from_numpy(x), torch.from_numpy(y))
    # shuffled, not the file's first rows
    assert not torch.equal(first.y_val, torch.from_numpy(y[:359]))


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
    assert torch.equal(a.y_val, b.y_val)
    train, val = set(a.y_train.tolist()), set(a.y_val.tolist())
    assert len(val) == 20 and len(train) == 80
    assert train.isdisjoint(val) and train | val == set(range(n))
    assert torch.equal(a.x_val.flatten().long(), a.y_val)  # inputs follow their labels


def test_validation_fraction_override() -> None:
    digits = load_builtin("digits", 0.1)
    assert len(digits.y_val) == round(0.1 * N_DIGITS)
    none = load_builtin("digits", 0.0)
    assert len(none.y_val) == 0 and len(none.y_train) == N_DIGITS


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
    assert len(text.val) == 0
    assert "".join(text.vocab[i] for i in text.train) == "hihello"
    wins = windows(text.train, 6)
    assert wins.shape == (1, 7)
    assert "".join(text.vocab[i] for i in wins[0, :-1]) == "hihell"
    assert "".join(text.vocab[i] for i in wins[0, 1:]) == "ihello"


def test_windows_tile_the_text_with_one_id_overlap() -> None:
    wins = windows(torch.arange(10), 3)
    assert wins.tolist() == [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]]
    # inputs never overlap, and every target follows its input
    inputs = wins[:, :-1].flatten().tolist()
    assert inputs == [0, 1, 2, 3, 4, 5, 6, 7, 8]
    # a ragged tail is dropped
    assert windows(torch.arange(12), 3).shape == (3, 4)


@pytest.mark.parametrize("length", [0, 1, 6])
def test_windows_of_too_short_text_is_empty(length: int) -> None:
    wins = windows(torch.arange(length, dtype=torch.int64), 6)
    assert wins.shape == (0, 7)
    assert wins.dtype == torch.int64


def test_text_split_holds_out_the_end() -> None:
    text = data.text_data("abcdefghij", 0.2)
    assert text.vocab == list("abcdefghij")
    assert text.train.tolist() == list(range(8))
    assert text.val.tolist() == [8, 9]
