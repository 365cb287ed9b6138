"""Schemathesis against the service's own OpenAPI document: for generated requests to
every operation, no 5xx and every response matches the documented schema.

Schemathesis (4.x) draws floats with `allow_nan=False, allow_infinity=False` and has no
setting to change that, so a second pass poisons its cases itself: one number (or query
value) of each generated request becomes NaN, Infinity, 1e400, a 64-bit edge or a huge
integer, written as the raw JSON a careless or hostile client would send. No 5xx."""

import json
import math
from typing import Any

import httpx
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from tests.integration.service import Service

pytestmark = pytest.mark.sqlite_only  # nothing here differs by backend

EXAMPLES_PER_OPERATION = 25
POISONED_PER_OPERATION = 15
# 1e400 cannot be a Python float; it is spliced in as text for this marker.
TOO_LARGE = 1.2345678901234567e300
POISONS: list[Any] = [math.nan, math.inf, -math.inf, TOO_LARGE, 2**63, 2**64, -(2**63) - 1,
                      10**30, 99999999999999999999999, 2**31, 1e308, -1e308, 1e-300]


def _slots(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Paths to every number in a JSON value (every leaf, when it has no numbers)."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _slots(v, (*path, k))]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in _slots(v, (*path, i))]
    return [path] if isinstance(value, (int, float)) and not isinstance(value, bool) else []


def _leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict) and value:
        return [p for k, v in value.items() for p in _leaves(v, (*path, k))]
    if isinstance(value, list) and value:
        return [p for i, v in enumerate(value) for p in _leaves(v, (*path, i))]
    return [path]


def _replace(value: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    return [_replace(v, rest, new) if i == head else v for i, v in enumerate(value)]


def _raw(value: Any) -> str:
    return json.dumps(value).replace(repr(TOO_LARGE), "1e400")


def _poisoned(operation: Any, base_url: str, headers: dict[str, str]) -> list[str]:
    failures: list[str] = []

    @settings(max_examples=POISONED_PER_OPERATION, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy(), data=st.data())
    def run(case: schemathesis.Case, data: st.DataObject) -> None:
        kwargs = case.as_transport_kwargs(base_url=base_url, headers=headers)
        poison = data.draw(st.sampled_from(POISONS))
        if "json" in kwargs:
            body = kwargs.pop("json")
            slots = _slots(body) or _leaves(body)
            body = _replace(body, data.draw(st.sampled_from(slots)), poison)
            kwargs["data"] = _raw(body).encode()
            kwargs.setdefault("headers", {})["Content-Type"] = "application/json"
        elif kwargs.get("params"):
            name = data.draw(st.sampled_from(sorted(kwargs["params"])))
            kwargs["params"] = {**kwargs["params"], name: _raw(poison)}
        else:
            return  # nothing to poison here
        kwargs.pop("auth", None)
        response = requests.request(timeout=30, **kwargs)
        if response.status_code >= 500:
            failures.append(f"{case.method} {case.formatted_path} with {_raw(poison)}: "
                            f"{response.status_code} {response.text[:200]}")

    run()
    return failures


def _exercise(operation: Any, base_url: str, headers: dict[str, str]) -> list[str]:
    failures: list[str] = []

    @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=operation.as_strategy())
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, headers=headers, timeout=30)
        where = f"{case.method} {case.formatted_path}"
        if response.status_code >= 500:
            failures.append(f"{where}: {response.status_code} {response.text[:200]}")
            return
        try:
            operation.validate_response(response)
        except Exception as exc:  # collected, so that one run reports every operation
            failures.append(f"{where}: {exc}")

    run()
    return failures


def test_generated_requests_get_no_5xx_and_match_the_schema(service: Service) -> None:
    if service.backend != "sqlite":
        pytest.skip("the schema is the same on both backends; one run is enough")
    document = httpx.get(f"{service.base_url}/openapi.json").json()
    # The documented jobs train for minutes, and this service's one worker is shared with
    # other tests; tests/unit/test_openapi_examples.py validates them instead.
    del document["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"][
        "examples"]
    schema = schemathesis.openapi.from_dict(document)
    headers = {"Authorization": f"Bearer {service.keys['alice']}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures = [f for op in operations for f in _exercise(op, service.base_url, headers)]
    failures += [f for op in operations for f in _poisoned(op, service.base_url, headers)]
    distinct = sorted({" ".join(failure.split())[:400] for failure in failures})
    assert not distinct, "\n".join(distinct[:30])
