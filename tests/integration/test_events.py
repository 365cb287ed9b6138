"""GET /v1/jobs/{id}/events: every epoch once, in order, across reconnects; then the end."""

import json
from collections.abc import Iterator
from typing import Any

import httpx

from tests.integration.service import Service, poll
from tests.integration.specs import long_lstm


def lstm(epochs: int) -> dict[str, Any]:
    return {"dataset": "builtin:hihello", "model": {"arch": "lstm", "hidden_size": 5},
            "optimizer": {"name": "adam", "lr": 0.1},
            "training": {"epochs": epochs, "batch_size": 1, "seq_len": 6}}


def sse(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """Events as {"id", "event", "data"}, parsed as the SSE specification says."""
    event: dict[str, Any] = {}
    for line in response.iter_lines():
        if not line:
            if "data" in event:
                event["data"] = json.loads(event["data"])
                yield event
            event = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            event[name] = value.removeprefix(" ")


def read(client: httpx.Client, job_id: str, last_id: str | None = None,
         stop_after_epoch: int | None = None) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": last_id} if last_id else {}
    events: list[dict[str, Any]] = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in sse(response):
            events.append(event)
            if stop_after_epoch and event["event"] == "metrics" \
                    and event["data"]["epoch"] >= stop_after_epoch:
                break  # drop the connection mid-stream, as a flaky network would
    return events


def epochs_of(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["epoch"] for e in events if e["event"] == "metrics"]


def test_stream_delivers_every_epoch_once_across_a_reconnect(service: Service) -> None:
    with service.client() as client:
        epochs = 400
        job = client.post("/v1/jobs", json=lstm(epochs)).json()
        first = read(client, job["id"], stop_after_epoch=20)
        assert first[0]["event"] == "status" and first[0]["data"]["epochs"] == epochs
        second = read(client, job["id"], last_id=first[-1]["id"])
        events = first + second
        assert epochs_of(events) == list(range(1, epochs + 1))
        for event in events:  # a metric event's id is its epoch
            if event["event"] == "metrics":
                assert event["id"] == str(event["data"]["epoch"])
                assert {"train_loss", "train_accuracy"} <= event["data"].keys()
        last = events[-1]
        assert last["event"] == "status" and last["data"]["status"] == "succeeded"
        assert last["id"] == f"{epochs}:succeeded" and last["data"]["model_id"]
        # Status events come in order; ids sort by epoch number.
        numbers = [int(e["id"].split(":")[0]) for e in events]
        assert numbers == sorted(numbers)

        # A reconnect from a metric id of the finished job gets the rest and the end.
        tail = read(client, job["id"], last_id=str(epochs - 3))
        assert epochs_of(tail) == [epochs - 2, epochs - 1, epochs]
        assert tail[-1]["data"]["status"] == "succeeded"
        # One after the final event is told there is nothing more (EventSource stops).
        done = client.get(f"/v1/jobs/{job['id']}/events",
                          headers={"Last-Event-ID": last["id"]})
        assert done.status_code == 204
        # A fresh stream of a finished job replays it whole and ends.
        assert epochs_of(read(client, job["id"])) == list(range(1, epochs + 1))


def test_stream_of_a_cancelled_job_ends_cancelled(service: Service) -> None:
    with service.client() as client:
        job = client.post("/v1/jobs", json=long_lstm()).json()
        poll(lambda: client.get(f"/v1/jobs/{job['id']}").json()["progress"]["epoch"] >= 3,
             timeout=60, what="a few epochs")
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
        events = read(client, job["id"])
        got = epochs_of(events)
        assert got == list(range(1, len(got) + 1))
        assert events[-1]["event"] == "status"
        assert events[-1]["data"]["status"] == "cancelled"


def test_stream_is_owner_scoped_and_checks_its_input(service: Service) -> None:
    with service.client("alice") as alice, service.client("bob") as bob, \
            service.client(None) as nobody:
        job = alice.post("/v1/jobs", json=lstm(5)).json()
        assert bob.get(f"/v1/jobs/{job['id']}/events").status_code == 404
        assert nobody.get(f"/v1/jobs/{job['id']}/events").status_code == 401
        bad = alice.get(f"/v1/jobs/{job['id']}/events", headers={"Last-Event-ID": "x:y"})
        assert bad.status_code == 422 and "Last-Event-ID" in bad.text
        service.wait_job(alice, job["id"])
