"""What a model's lineage is made of: a built-in dataset's hash and the build's identity."""

import pytest

from core import build_info
from models.data import load_builtin
from workers.lineage import content_sha256


def test_a_builtin_dataset_hash_is_its_examples() -> None:
    digits = content_sha256(load_builtin("digits"))
    assert digits == content_sha256(load_builtin("digits"))  # the same examples, the same hash
    assert digits != content_sha256(load_builtin("digits", validation_fraction=0.5))
    assert content_sha256(load_builtin("hihello")) != digits
    assert len(digits) == 64


def test_the_commit_comes_from_the_environment_first(monkeypatch: pytest.MonkeyPatch) -> None:
    build_info.git_commit.cache_clear()
    monkeypatch.setenv("TRAINSERVE_GIT_COMMIT", "abc123")
    try:
        assert build_info.git_commit() == "abc123"
    finally:
        build_info.git_commit.cache_clear()
    assert build_info.version()
