"""The embedded broker's transport: whole messages, each to one consumer, bad files skipped."""

import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from kombu import Connection
from kombu.transport.virtual import BrokerState

from core import embedded_broker


@pytest.fixture(autouse=True)
def _fresh_bindings(monkeypatch: pytest.MonkeyPatch) -> None:
    # kombu keeps the filesystem transport's bindings per process, and each test here has a
    # broker folder of its own.
    monkeypatch.setattr(embedded_broker.Transport, "global_state", BrokerState())


def _connect(root: Path) -> Connection:
    return Connection(transport=embedded_broker.TRANSPORT,
                      transport_options=embedded_broker.transport_options(root, 0.01))


@pytest.fixture
def connection(tmp_path: Path) -> Iterator[Connection]:
    with _connect(tmp_path) as conn:
        yield conn


def _queued(root: Path) -> list[str]:
    return sorted(os.listdir(root / "queue"))


def test_messages_come_back_in_order(connection: Connection) -> None:
    queue = connection.SimpleQueue("cpu")
    for number in range(5):
        queue.put({"job": number})
    got = []
    for _ in range(5):
        message = queue.get(timeout=2)
        got.append(message.payload["job"])
        message.ack()
    assert got == [0, 1, 2, 3, 4]


def test_a_message_is_not_in_the_queue_until_it_is_written_whole(
        connection: Connection, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    queued_while_writing: list[list[str]] = []
    write = embedded_broker.write_file

    def watched_write(path: str, data: bytes) -> None:
        queued_while_writing.append(_queued(tmp_path))
        write(path, data)
        queued_while_writing.append(_queued(tmp_path))

    monkeypatch.setattr(embedded_broker, "write_file", watched_write)
    connection.SimpleQueue("cpu").put({"job": "x"})
    assert queued_while_writing == [[], []]
    [name] = _queued(tmp_path)
    assert name.endswith(".cpu.msg")
    assert os.listdir(tmp_path / "staging") == []


def test_undecodable_files_are_dropped_and_the_next_message_delivered(
        connection: Connection, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    # Named to sort first: older than any message put now.
    (tmp_path / "queue" / f"{0:020d}_empty.cpu.msg").write_bytes(b"")
    (tmp_path / "queue" / f"{1:020d}_garbled.cpu.msg").write_bytes(b"\xff{not json")
    queue = connection.SimpleQueue("cpu")
    queue.put({"job": "good"})
    with caplog.at_level(logging.WARNING, logger=embedded_broker.__name__):
        message = queue.get(timeout=2)
    assert message.payload == {"job": "good"}
    message.ack()
    assert _queued(tmp_path) == []
    dropped = [r.getMessage() for r in caplog.records if "does not decode" in r.getMessage()]
    assert len(dropped) == 2 and "_empty.cpu.msg" in dropped[0]


def test_each_message_goes_to_one_consumer(tmp_path: Path) -> None:
    with _connect(tmp_path) as producer, _connect(tmp_path) as first, \
            _connect(tmp_path) as second:
        for number in range(20):
            producer.SimpleQueue("cpu").put({"job": number})
        queues = [first.SimpleQueue("cpu"), second.SimpleQueue("cpu")]
        got = []
        for turn in range(20):
            message = queues[turn % 2].get(timeout=2)
            got.append(message.payload["job"])
            message.ack()
        assert sorted(got) == list(range(20))
        for queue in queues:
            with pytest.raises(queue.Empty):
                queue.get(timeout=0.1)


def test_other_queues_messages_are_left_alone(connection: Connection, tmp_path: Path) -> None:
    connection.SimpleQueue("gpu").put({"job": "for the gpu"})
    with pytest.raises(connection.SimpleQueue("cpu").Empty):
        connection.SimpleQueue("cpu").get(timeout=0.1)
    assert [name.partition(".")[2] for name in _queued(tmp_path)] == ["gpu.msg"]
