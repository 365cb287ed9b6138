"""Uploaded datasets through the real API and worker: every format trains, every malformed
file is a 422 that leaves nothing behind, the limit is a 413, and owners stay apart."""

import hashlib
import io
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest

from tests import dataset_files as files
from tests.integration.service import Service

FASHION = Path("/usr/share/datasets/fashion-mnist")
DEFAULT_UPLOAD_LIMIT = 10 * 1024**3  # Settings.max_upload_bytes
DEFAULT_EXPAND_LIMIT = 1024 * 1024 * 1024  # Settings.max_decompressed_bytes

FilePart = tuple[str, bytes]


def upload(client: httpx.Client, fmt: str, file: FilePart, labels: FilePart | None = None,
           **fields: str) -> httpx.Response:
    parts = {"file": file} | ({"labels": labels} if labels else {})
    return client.post("/v1/datasets", data={"format": fmt, **fields}, files=parts)


def _stored(service: Service) -> set[str]:
    """The datasets' objects in the store, and upload parts on the API's own disk."""
    incoming = service.artifact("datasets/.incoming")
    parts = {f".incoming/{p.name}" for p in incoming.iterdir()} if incoming.is_dir() else set()
    return {key.removeprefix("datasets/") for key in service.object_keys("datasets/")} | parts


def _ids(client: httpx.Client) -> list[str]:
    return [d["id"] for d in client.get("/v1/datasets", params={"limit": 200}).json()["items"]]


def image_job(dataset: str, arch: str = "mlp", epochs: int = 1) -> dict[str, Any]:
    model = ({"arch": "mlp", "hidden_sizes": [16]} if arch == "mlp" else
             {"arch": "cnn", "channels": [4], "hidden_sizes": [16]})
    return {"dataset": dataset, "model": model, "optimizer": {"name": "sgd", "lr": 0.1},
            "training": {"epochs": epochs, "batch_size": 32}}


def text_job(dataset: str, epochs: int = 1) -> dict[str, Any]:
    return {"dataset": dataset, "model": {"arch": "lstm", "hidden_size": 16},
            "optimizer": {"name": "adam", "lr": 0.01},
            "training": {"epochs": epochs, "batch_size": 8, "seq_len": 16}}


def _idx_tar() -> bytes:
    images, labels = files.idx_pair(90)
    test_images, test_labels = files.idx_pair(30)
    return files.tar({"d/train-images-idx3-ubyte.gz": files.gz(images),
                      "d/train-labels-idx1-ubyte.gz": files.gz(labels),
                      "d/t10k-images-idx3-ubyte": test_images,
                      "d/t10k-labels-idx1-ubyte": test_labels})


def _cifar_tar() -> bytes:
    return files.tar({"cifar-10-batches-bin/data_batch_1.bin": files.cifar(40, seed=3),
                      "cifar-10-batches-bin/test_batch.bin": files.cifar(10, seed=4),
                      "cifar-10-batches-bin/batches.meta.txt":
                          "\n".join(f"k{i}" for i in range(10)).encode()}, gz=True)


def _npz() -> bytes:
    x, y = files.pattern_images(120, seed=5)
    return files.npz(x=x, y=y.astype(np.int64), classes=np.array(["top", "middle", "bottom"]))


# (format, file, labels, fields, arch, what the response must say)
FORMAT_CASES: list[tuple[str, FilePart, FilePart | None, dict[str, str], str, dict[str, Any]]] = [
    ("text", ("corpus.txt", files.text(45)), None, {}, "lstm",
     {"kind": "text", "num_examples": 45 * 45, "split": {"train": 1823, "validation": 202,
                                                        "test": 0}}),
    ("npz", ("pattern.npz", _npz()), None, {}, "mlp",
     {"kind": "images", "shape": [1, 8, 8], "classes": ["top", "middle", "bottom"]}),
    ("idx", ("images-idx3-ubyte", files.idx_pair(100)[0]),
     ("labels-idx1-ubyte", files.idx_pair(100)[1]), {}, "cnn",
     {"shape": [1, 8, 8], "classes": ["0", "1", "2"], "num_examples": 100}),
    ("idx", ("images-idx3-ubyte.gz", files.gz(files.idx_pair(110)[0])),
     ("labels-idx1-ubyte.gz", files.gz(files.idx_pair(110)[1])), {}, "mlp",
     {"num_examples": 110, "split": {"train": 99, "validation": 11, "test": 0}}),
    ("idx", ("mnist-like.tar", _idx_tar()), None, {}, "mlp",
     {"num_examples": 120, "split": {"train": 81, "validation": 9, "test": 30}}),
    ("cifar10-bin", ("data_batch_1.bin", files.cifar(50, seed=6)), None, {}, "mlp",
     {"shape": [3, 32, 32], "classes": ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                        "frog", "horse", "ship", "truck"]}),
    ("cifar10-bin", ("cifar-10-binary.tar.gz", _cifar_tar()), None, {}, "cnn",
     {"num_examples": 50, "split": {"train": 36, "validation": 4, "test": 10}}),
    ("csv", ("table.csv", files.csv_rows(90, labels=["cat", "dog", "eel"])), None,
     {"shape": "1,2,3", "name": "pets"}, "mlp",
     {"name": "pets", "shape": [1, 2, 3], "classes": ["cat", "dog", "eel"]}),
]


@pytest.mark.sqlite_only  # parsing and training are the same on both; one upload is enough
@pytest.mark.parametrize(("fmt", "file", "labels", "fields", "arch", "expect"), FORMAT_CASES,
                         ids=[f"{c[0]}-{c[1][0]}" for c in FORMAT_CASES])
def test_each_format_uploads_and_trains(service: Service, fmt: str, file: FilePart,
                                        labels: FilePart | None, fields: dict[str, str],
                                        arch: str, expect: dict[str, Any]) -> None:
    with service.client() as client:
        response = upload(client, fmt, file, labels, **fields)
        assert response.status_code in (200, 201), response.text
        dataset = response.json()
        assert response.headers["Location"] == f"/v1/datasets/{dataset['id']}"
        for key, value in expect.items():
            assert dataset[key] == value, key
        absent = {"classes", "shape", "pixels"} if fmt == "text" else {"vocab", "encoding"}
        assert not absent & dataset.keys()
        assert dataset["format"] == fmt and dataset["name"] == fields.get("name", file[0])
        assert dataset["bytes"] == len(file[1]) + (len(labels[1]) if labels else 0)
        if labels is None:
            assert dataset["sha256"] == hashlib.sha256(file[1]).hexdigest()
        assert client.get(f"/v1/datasets/{dataset['id']}").json() == dataset
        spec = text_job(dataset["id"]) if arch == "lstm" else image_job(dataset["id"], arch)
        job = client.post("/v1/jobs", json=spec)
        assert job.status_code == 202, job.text
        done = service.wait_job(client, job.json()["id"])
        assert done["status"] == "succeeded", done["error"]
        assert done["metrics"]["val_accuracy"] is not None


def test_the_same_upload_twice_is_one_dataset(service: Service) -> None:
    data = files.text(31)
    with service.client() as client:
        first = upload(client, "text", ("a.txt", data), name="first")
        again = upload(client, "text", ("b.txt", data), name="second")
        assert (first.status_code, again.status_code) == (201, 200)
        assert again.json()["id"] == first.json()["id"] and again.json()["name"] == "first"
        assert _ids(client).count(first.json()["id"]) == 1
        # the same bytes as another format are another dataset (or another error)
        assert upload(client, "csv", ("b.txt", data)).status_code == 422


def _bad_npz_object() -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    return buffer.getvalue()


def test_the_same_bytes_with_other_options_are_another_dataset(service: Service) -> None:
    table = b"label,a,b\n0,1,2\n1,1,3\n0,0,2\n1,1,2\n"
    text = files.text(29)
    with service.client() as client:
        by_label = upload(client, "csv", ("t.csv", table))
        by_a = upload(client, "csv", ("t.csv", table), label_column="a")
        assert (by_label.status_code, by_a.status_code) == (201, 201), by_a.text
        assert by_a.json()["id"] != by_label.json()["id"]
        assert by_a.json()["options"] == {"label_column": "a"} and "options" not in by_label.json()
        again = upload(client, "csv", ("t.csv", table), label_column="a")
        assert again.status_code == 200 and again.json()["id"] == by_a.json()["id"]
        shaped = upload(client, "csv", ("t.csv", table), shape="1,2")
        spaced = upload(client, "csv", ("t.csv", table), shape=" 1, 2")
        assert (shaped.status_code, spaced.status_code) == (201, 200)
        assert spaced.json()["id"] == shaped.json()["id"]
        utf8 = upload(client, "text", ("c.txt", text))
        latin = upload(client, "text", ("c.txt", text), encoding="latin-1")
        named = upload(client, "text", ("c.txt", text), encoding="UTF8")
        assert (utf8.status_code, latin.status_code, named.status_code) == (201, 201, 200)
        assert latin.json()["encoding"] == "iso8859-1" and named.json()["id"] == utf8.json()["id"]


_IMAGES, _LABELS = files.idx_pair(40)
# (format, file, labels, field at fault, what the message must say)
MALFORMED: list[tuple[str, str, FilePart, FilePart | None, str, str]] = [
    ("truncated-idx", "idx", ("img", _IMAGES[:-7]), ("lbl", _LABELS), "file", "truncated"),
    ("idx-counts-differ", "idx", ("img", _IMAGES), ("lbl", files.idx_pair(39)[1]), "labels",
     "40 images but lbl has 39 labels"),
    ("cifar-record-length", "cifar10-bin", ("b.bin", files.cifar(4)[:-5]), None, "file",
     "3073-byte records"),
    ("npz-pickled-object", "npz", ("o.npz", _bad_npz_object()), None, "file", "object array"),
    ("npz-without-y", "npz", ("n.npz", files.npz(x=files.pattern_images(5)[0])), None, "file",
     "no array named 'y'"),
    ("labels-out-of-range", "npz", ("r.npz", files.npz(
        x=files.pattern_images(4)[0], y=np.array([0, 1, 2, 3]), classes=np.array(["a", "b"]))),
     None, "file", "label 3 is out of range"),
    ("empty-text", "text", ("e.txt", b""), None, "file", "is empty"),
    ("non-utf8-text", "text", ("l.txt", "naïve café".encode("latin-1")), None, "file",
     "not valid utf-8"),
    ("tar-climbs-out", "idx", ("t.tar", files.tar({"../../images": _IMAGES,
                                                   "labels": _LABELS})), None, "file",
     "climbs out"),
]


@pytest.mark.parametrize(("fmt", "file", "labels", "field", "message"),
                         [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed_upload_is_422_and_leaves_nothing(service: Service, fmt: str,
                                                    file: FilePart, labels: FilePart | None,
                                                    field: str, message: str) -> None:
    with service.client() as client:
        before, stored = _ids(client), _stored(service)
        response = upload(client, fmt, file, labels)
        assert response.status_code == 422, response.text
        [error] = response.json()["detail"]
        assert error["loc"] == ["body", field] and message in error["msg"], error
        assert _ids(client) == before and _stored(service) == stored


def test_gzip_bomb_is_422_and_leaves_nothing(service: Service) -> None:
    bomb = files.gzip_bomb(DEFAULT_EXPAND_LIMIT + (1 << 20))  # about 1 MB on the wire
    with service.client() as client:
        before, stored = _ids(client), _stored(service)
        response = upload(client, "idx", ("images.gz", bomb), ("labels.gz", files.gz(_LABELS)))
        assert response.status_code == 422, response.text
        assert "expands past the limit" in response.json()["detail"][0]["msg"]
        assert _ids(client) == before and _stored(service) == stored


def test_over_the_limit_is_413_and_never_written_whole(service: Service) -> None:
    """A client announcing more than the limit is refused from its headers alone."""
    url = urlsplit(service.base_url)
    head = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.txt"\r\n\r\n')
    request = (f"POST /v1/datasets HTTP/1.1\r\nHost: {url.netloc}\r\n"
               f"Authorization: Bearer {service.keys['alice']}\r\n"
               "Content-Type: multipart/form-data; boundary=b\r\n"
               f"Content-Length: {DEFAULT_UPLOAD_LIMIT + (4 << 20)}\r\n\r\n").encode()
    stored = _stored(service)
    with socket.create_connection((url.hostname, url.port), timeout=30) as sock:
        sock.sendall(request + head + b"a" * 65536)
        reply = b""
        while b"\r\n\r\n" not in reply or not reply.rstrip().endswith(b"}"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            reply += chunk
    assert reply.startswith(b"HTTP/1.1 413"), reply[:200]
    assert b"limit" in reply
    assert _stored(service) == stored


def test_bad_form_fields(service: Service) -> None:
    data = ("x.txt", b"hello there")
    with service.client() as client:
        cases = [
            (client.post("/v1/datasets", files={"file": data}), "format"),
            (upload(client, "parquet", data), "format"),
            (upload(client, "text", data, ("l", b"x")), "labels"),
            (upload(client, "npz", data, encoding="latin-1"), "encoding"),
            (client.post("/v1/datasets", data={"format": "text"},
                         files={"bogus": data}), "bogus"),
            (upload(client, "text", data, name="x" * 201), "name"),
        ]
        for response, field in cases:
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["loc"] == ["body", field]
        assert client.post("/v1/datasets", json={"format": "text"}).status_code == 415
    assert httpx.post(f"{service.base_url}/v1/datasets", files={"file": data}).status_code == 401


def test_another_owners_dataset_is_404_everywhere(service: Service) -> None:
    with service.client("alice") as alice, service.client("bob") as bob, \
            service.client("admin") as admin:
        dataset = upload(alice, "text", ("mine.txt", files.text(33))).json()
        path = f"/v1/datasets/{dataset['id']}"
        assert bob.get(path).status_code == 404
        assert bob.delete(path).status_code == 404
        assert dataset["id"] not in _ids(bob)
        job = bob.post("/v1/jobs", json=text_job(dataset["id"]))
        assert job.status_code == 404, job.text
        # bob uploading the same bytes makes his own dataset, not a way into alice's
        mine = upload(bob, "text", ("mine.txt", files.text(33)))
        assert mine.status_code == 201 and mine.json()["id"] != dataset["id"]
        assert admin.get(path).status_code == 200
        assert alice.get(path).status_code == 200


def test_delete_is_409_while_a_job_uses_it_then_removes_row_and_file(service: Service) -> None:
    with service.client() as client:
        dataset = upload(client, "text", ("long.txt", files.text(37))).json()
        stored = f"{dataset['id']}.arrays"
        assert stored in _stored(service)
        job = client.post("/v1/jobs", json=text_job(dataset["id"], epochs=100_000)).json()
        refused = client.delete(f"/v1/datasets/{dataset['id']}")
        assert refused.status_code == 409 and job["id"] in refused.json()["detail"]
        assert client.post(f"/v1/jobs/{job['id']}/cancel").status_code == 202
        service.wait_job(client, job["id"])
        assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
        assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 404
        assert stored not in _stored(service)
        assert client.post("/v1/jobs", json=text_job(dataset["id"])).status_code == 404


def test_list_is_newest_first_and_paginated(service: Service) -> None:
    with service.client("bob") as client:
        made = [upload(client, "text", (f"{i}.txt", files.text(50 + i))).json()["id"]
                for i in range(3)]
        first = client.get("/v1/datasets", params={"limit": 2, "kind": "text"}).json()
        assert [d["id"] for d in first["items"]] == made[::-1][:2]
        rest = client.get("/v1/datasets", params={"limit": 2, "kind": "text",
                                                  "cursor": first["next_cursor"]}).json()
        assert rest["items"][0]["id"] == made[0]
        assert client.get("/v1/datasets", params={"kind": "images"}).json() == {
            "items": [], "next_cursor": None}
        assert "classes" not in first["items"][0] and first["items"][0]["vocab_size"] > 1


@pytest.mark.slow
@pytest.mark.sqlite_only
@pytest.mark.skipif(not FASHION.is_dir(), reason="Debian's dataset-fashion-mnist is absent")
def test_fashion_mnist_idx_upload_trains_the_seed_mlp(service: Service) -> None:
    """Debian's Fashion-MNIST files, sent as a user would, train the seed's MLP (ReLU,
    Adadelta with its rho and eps; 256 units and 3 epochs to keep this short) past 85%.
    That the upload is the very data of builtin:fashion-mnist, split the same way, is
    tests/unit/test_formats.py::test_fashion_mnist_upload_is_the_builtin_data."""
    with service.client() as client, \
            open(FASHION / "train-images-idx3-ubyte.gz", "rb") as images, \
            open(FASHION / "train-labels-idx1-ubyte.gz", "rb") as labels:
        response = client.post("/v1/datasets", data={"format": "idx", "name": "fashion"},
                               files={"file": ("train-images-idx3-ubyte.gz", images),
                                      "labels": ("train-labels-idx1-ubyte.gz", labels)},
                               timeout=120)
        assert response.status_code in (200, 201), response.text
        dataset = response.json()
        assert dataset["num_examples"] == 60_000 and dataset["shape"] == [1, 28, 28]
        assert dataset["split"] == {"train": 54_000, "validation": 6_000, "test": 0}
        spec = {"dataset": dataset["id"],
                "model": {"arch": "mlp", "hidden_sizes": [256], "activation": "relu"},
                "optimizer": {"name": "adadelta", "lr": 1.0, "rho": 0.95, "eps": 1e-5},
                "training": {"epochs": 3, "batch_size": 100, "seed": 0}}
        job = client.post("/v1/jobs", json=spec)
        assert job.status_code == 202, job.text
        done = service.wait_job(client, job.json()["id"], timeout=600)
        assert done["status"] == "succeeded", done["error"]
        assert done["metrics"]["val_accuracy"] >= 0.85, done["metrics"]
