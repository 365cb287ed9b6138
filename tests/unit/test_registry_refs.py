"""Model references and alias bodies: how a URL names a model, and a canary's draw."""

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from app.registry.resolve import Ref, Target, parse, pick
from app.registry.schemas import AliasIn


@pytest.mark.parametrize(("ref", "parsed"), [
    ("shakespeare@production", Ref("shakespeare", alias="production")),
    ("shakespeare:12", Ref("shakespeare", version=12)),
    ("my.model_v-2@canary-1", Ref("my.model_v-2", alias="canary-1")),
    ("0194f0c2a1b2c3d4e5f6a7b8c9d0", None),  # a model id
    ("name:0", None), ("name:-1", None), ("name:1.5", None), ("name@", None),
    ("name@1abc", None), ("@prod", None), (":3", None), ("a@b@c", None), ("a:1:2", None)])
def test_references(ref: str, parsed: Ref | None) -> None:
    assert parse(ref) == parsed


def test_a_pick_follows_the_weights() -> None:
    route = [(1, "a", 0.9), (2, "b", 0.1)]
    draws = random.Random(0)
    counts = Counter(pick("n", route, draws.random()).version for _ in range(20_000))
    assert 0.09 < counts[2] / 20_000 < 0.11
    assert pick("n", route, 0.0) == Target("a", "n", 1)
    assert pick("n", route, 0.95) == Target("b", "n", 2)
    # weights that round short of 1 still pick the last version
    assert pick("n", [(1, "a", 0.3333333), (2, "b", 0.6666666)], 0.9999999).version == 2


def test_target_headers() -> None:
    assert Target("m").headers() == {"X-Model-Id": "m"}
    assert Target("m", "n", 3).headers() == {"X-Model-Id": "m", "X-Model-Version": "3"}


@pytest.mark.parametrize("body", [
    {"version": 3}, {"versions": {"3": 0.9, "4": 0.1}}, {"versions": {"1": 1}},
    {"versions": {"1": 1 / 3, "2": 1 / 3, "3": 1 / 3}}])
def test_alias_bodies(body: dict[str, object]) -> None:
    weights = AliasIn.model_validate(body).weights()
    assert abs(sum(weights.values()) - 1) < 1e-6


@pytest.mark.parametrize("body", [
    {}, {"version": 0}, {"version": 1, "versions": {"1": 1}}, {"versions": {}},
    {"versions": {"1": 0.5}}, {"versions": {"1": 0.9, "2": 0.2}}, {"versions": {"x": 1}},
    {"versions": {"0": 1}}, {"versions": {"1": 1.5, "2": -0.5}}, {"versions": {"1": 0, "2": 1}},
    {"version": 1, "extra": 1}])
def test_bad_alias_bodies(body: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AliasIn.model_validate(body)
