"""Upload formats: each parses to checked arrays, and each malformed file says what is wrong."""

import hashlib
import io
import tarfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from models import data, formats
from models.archive import Budget, FormatError, gunzip
from models.data import ImageData, TextData, load_upload
from models.formats import Images, Limits, TextFile, cifar
from tests import dataset_files as files

LIMITS = Limits(max_decompressed_bytes=4 << 20)


def _write(tmp_path: Path, name: str, data: bytes) -> tuple[Path, str]:
    path = tmp_path / name
    path.write_bytes(data)
    return path, name


def parse(tmp_path: Path, fmt: str, data: bytes, *, labels: bytes | None = None,
          limits: Limits = LIMITS, **options: str) -> Images | TextFile:
    parts = {"file": _write(tmp_path, "upload.bin", data)}
    if labels is not None:
        parts["labels"] = _write(tmp_path, "labels.bin", labels)
    return formats.parse(fmt, parts, options, limits)


def refused(tmp_path: Path, fmt: str, data: bytes, *, labels: bytes | None = None,
            limits: Limits = LIMITS, **options: str) -> FormatError:
    with pytest.raises(FormatError) as caught:
        parse(tmp_path, fmt, data, labels=labels, limits=limits, **options)
    return caught.value


# -- well-formed ----------------------------------------------------------------------------

@pytest.mark.parametrize("wrap", [lambda b: b, files.gz])
def test_text_plain_or_gzipped(tmp_path: Path, wrap) -> None:  # type: ignore[no-untyped-def]
    parsed = parse(tmp_path, "text", wrap(files.text(2)))
    assert isinstance(parsed, TextFile)
    assert parsed.vocab == sorted(set(files.text(2).decode()))
    info = formats.describe(parsed)
    assert info["split"] == {"train": 81, "validation": 9, "test": 0}
    assert info["vocab"] == parsed.vocab


def test_text_drops_a_bom_and_takes_a_declared_encoding(tmp_path: Path) -> None:
    bom = parse(tmp_path, "text", b"\xef\xbb\xbfhello")
    assert isinstance(bom, TextFile) and bom.path.read_text(encoding="utf-8") == "hello"
    latin = parse(tmp_path, "text", "café olé".encode("latin-1"), encoding="latin-1")
    assert isinstance(latin, TextFile)
    assert latin.path.read_text(encoding="utf-8") == "café olé"
    assert latin.encoding == "iso8859-1"


def test_idx_two_parts_raw_or_gzipped(tmp_path: Path) -> None:
    images, labels = files.idx_pair(60)
    for wrap in (lambda b: b, files.gz):
        parsed = parse(tmp_path, "idx", wrap(images), labels=wrap(labels))
        assert isinstance(parsed, Images)
        assert parsed.x.shape == (60, 1, 8, 8) and parsed.x.dtype == np.uint8
        assert parsed.classes == ["0", "1", "2"]
        assert formats.describe(parsed)["split"] == {"train": 54, "validation": 6, "test": 0}


def test_idx_labels_first_is_fine_too(tmp_path: Path) -> None:
    images, labels = files.idx_pair(30)
    assert parse(tmp_path, "idx", labels, labels=images).shape == [1, 8, 8]  # type: ignore[union-attr]


def test_idx_tar_gz_with_a_test_pair_and_a_readme(tmp_path: Path) -> None:
    images, labels = files.idx_pair(60)
    test_images, test_labels = files.idx_pair(20)
    archive = files.tar({"fm/train-images-idx3-ubyte.gz": files.gz(images),
                         "fm/train-labels-idx1-ubyte": labels,
                         "fm/t10k-images-idx3-ubyte": test_images,
                         "fm/t10k-labels-idx1-ubyte.gz": files.gz(test_labels),
                         "fm/README.md": b"# notes\n"}, gz=True)
    parsed = parse(tmp_path, "idx", archive)
    assert isinstance(parsed, Images)
    assert len(parsed.y) == 60 and parsed.x_test is not None and len(parsed.x_test) == 20
    assert parsed.num_examples == 80
    assert formats.describe(parsed)["split"]["test"] == 20


def test_cifar_raw_batch_and_tar_gz(tmp_path: Path) -> None:
    raw = parse(tmp_path, "cifar10-bin", files.cifar(20))
    assert isinstance(raw, Images)
    assert raw.shape == [3, 32, 32] and raw.classes == cifar.CIFAR10_CLASSES
    archive = files.tar({"cifar-10-batches-bin/data_batch_1.bin": files.cifar(20),
                         "cifar-10-batches-bin/data_batch_2.bin": files.cifar(10, seed=1),
                         "cifar-10-batches-bin/test_batch.bin": files.cifar(10, seed=2),
                         "cifar-10-batches-bin/batches.meta.txt":
                             "\n".join(f"c{i}" for i in range(10)).encode() + b"\n\n",
                         "cifar-10-batches-bin/readme.html": b"<p>hi</p>"}, gz=True)
    parsed = parse(tmp_path, "cifar10-bin", archive)
    assert isinstance(parsed, Images)
    assert len(parsed.y) == 30 and parsed.y_test is not None and len(parsed.y_test) == 10
    assert parsed.classes == [f"c{i}" for i in range(10)]
    # The record layout: label byte, then the red, green and blue planes, row by row.
    record = np.frombuffer(files.cifar(20), dtype=np.uint8)[:3073]
    assert raw.y[0] == record[0]
    assert np.array_equal(raw.x[0].reshape(-1), record[1:])


def test_npz_shapes_scaling_classes_and_test_arrays(tmp_path: Path) -> None:
    x, y = files.pattern_images(40)
    parsed = parse(tmp_path, "npz", files.npz(x=x, y=y.astype(np.int64),
                                              classes=np.array(["a", "b", "c"]),
                                              x_test=x[:5], y_test=y[:5]))
    assert isinstance(parsed, Images)
    assert parsed.shape == [1, 8, 8] and parsed.classes == ["a", "b", "c"]
    assert parsed.x_test is not None and len(parsed.x_test) == 5
    flat = parse(tmp_path, "npz", files.npz(x=(x.reshape(40, -1) / 255).astype(np.float64),
                                            y=y))
    assert isinstance(flat, Images)
    assert flat.shape == [64] and flat.x.dtype == np.float32
    assert formats.describe(flat)["pixels"] == "float32"
    assert formats.to_float(parsed.x).max() <= 1.0


def test_csv_header_label_column_string_labels_and_shape(tmp_path: Path) -> None:
    parsed = parse(tmp_path, "csv", files.csv_rows(30))
    assert isinstance(parsed, Images)
    assert parsed.shape == [6] and parsed.classes == ["0", "1", "2"]
    named = parse(tmp_path, "csv", files.csv_rows(30, labels=["cat", "dog", "eel"]),
                  shape="2,3")
    assert isinstance(named, Images)
    assert named.classes == ["cat", "dog", "eel"] and named.shape == [1, 2, 3]
    bare = parse(tmp_path, "csv", files.gz(files.csv_rows(30, header=False)))
    assert isinstance(bare, Images) and len(bare.y) == 30
    last = b"a,b,target\n0.1,0.2,1\n0.3,0.4,0\n"
    by_name = parse(tmp_path, "csv", last, label_column="target")
    assert isinstance(by_name, Images) and by_name.y.tolist() == [1, 0]


def _local(root: Path) -> Callable[[str, str], Path]:
    """A directory store's fetch, minus its hash check: read_stored checks it again."""
    return lambda key, _sha256: root / key


def _store(root: Path, dataset_id: str, parsed: Images | TextFile) -> dict:
    path = formats.dataset_path(root, formats.relative_path(dataset_id, parsed.kind))
    sha256, size = formats.store(parsed, path)
    formats.discard(parsed)
    return formats.describe(parsed) | {"stored": {"sha256": sha256, "bytes": size,
                                                  "form": formats.FORM}}


def test_stored_form_round_trips_into_training_data(tmp_path: Path) -> None:
    images, labels = files.idx_pair(50)
    parsed = parse(tmp_path, "idx", files.tar({"a-images": images, "a-labels": labels,
                                               "t10k-images": images, "t10k-labels": labels}))
    assert isinstance(parsed, Images)
    root = tmp_path / "store"
    dataset_id = "0" * 12 + "ab" * 8
    info = _store(root, dataset_id, parsed)
    loaded = load_upload(_local(root), dataset_id, "images", info)
    assert isinstance(loaded, ImageData) and loaded.source is not None  # mapped
    assert len(loaded.train_rows) + len(loaded.val_rows) == 50 and len(loaded.val_rows) == 5
    assert loaded.x.dtype == np.uint8 and np.array_equal(loaded.x, parsed.x)
    assert loaded.y.dtype == np.uint8 and np.array_equal(loaded.y, parsed.y)
    assert loaded.x_test is not None and loaded.x_test.shape == (50, 1, 8, 8)
    path = formats.dataset_path(root, formats.relative_path(dataset_id, "images"))
    data = path.read_bytes()
    path.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(FormatError, match="sha256"):
        load_upload(_local(root), dataset_id, "images", info)


def test_stored_text_round_trips(tmp_path: Path) -> None:
    parsed = parse(tmp_path, "text", files.text(5))
    dataset_id = "1" * 28
    info = _store(tmp_path, dataset_id, parsed)
    loaded = load_upload(_local(tmp_path), dataset_id, "text", info)
    assert isinstance(loaded, TextData)
    assert loaded.vocab == info["vocab"] and len(loaded.val) == info["split"]["validation"]


def test_datasets_stored_in_the_older_forms_are_still_read(tmp_path: Path) -> None:
    images, labels = files.idx_pair(20)
    parsed = parse(tmp_path, "idx", images, labels=labels)
    dataset_id = "3" * 28
    info = formats.describe(parsed)
    path = formats.dataset_path(tmp_path, formats.relative_path(dataset_id, "images", info))
    assert path.name.endswith(".npz")
    path.parent.mkdir(parents=True)
    buffer = io.BytesIO()
    np.savez(buffer, x=parsed.x, y=parsed.y)
    path.write_bytes(buffer.getvalue())
    info["stored"] = {"sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
    loaded = load_upload(_local(tmp_path), dataset_id, "images", info)
    assert isinstance(loaded, ImageData) and np.array_equal(loaded.x, parsed.x)
    text = "hello, older world"
    text_id = "4" * 28
    text_info = {"validation_fraction": 0.1, "stored": {
        "sha256": hashlib.sha256(text.encode()).hexdigest()}}
    text_path = formats.dataset_path(tmp_path,
                                     formats.relative_path(text_id, "text", text_info))
    text_path.write_text(text)
    loaded_text = load_upload(_local(tmp_path), text_id, "text", text_info)
    assert isinstance(loaded_text, TextData)
    assert "".join(loaded_text.vocab[i] for i in loaded_text.ids) == text


def test_paths_come_from_ids_only(tmp_path: Path) -> None:
    for bad in ("../../etc/passwd", "x" * 28, "0" * 27):
        with pytest.raises(ValueError):
            formats.relative_path(bad, "images")
    with pytest.raises(FormatError):
        formats.dataset_path(tmp_path, "../outside")
    assert formats.display_name("C:\\Users\\me\\..\\data.csv") == "data.csv"
    assert formats.display_name("../../etc/pass\x00wd") == "passwd"


FASHION = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.slow
@pytest.mark.skipif(not (FASHION.is_dir() and data.available("fashion-mnist")),
                    reason="needs Debian's Fashion-MNIST and builtin:fashion-mnist")
def test_fashion_mnist_upload_is_the_builtin_data(tmp_path: Path) -> None:
    """Uploaded as IDX, stored and loaded as a worker loads it, Debian's Fashion-MNIST is
    exactly builtin:fashion-mnist's training data under the same split: a job trains the
    same on either."""
    parsed = formats.parse("idx", {
        "file": (FASHION / "train-images-idx3-ubyte.gz", "train-images-idx3-ubyte.gz"),
        "labels": (FASHION / "train-labels-idx1-ubyte.gz", "train-labels-idx1-ubyte.gz")},
        {}, Limits())
    dataset_id = "2" * 28
    info = _store(tmp_path, dataset_id, parsed)
    uploaded = load_upload(_local(tmp_path), dataset_id, "images", info, validation_fraction=0.1)
    builtin = data.load_builtin("fashion-mnist", validation_fraction=0.1)
    assert isinstance(uploaded, ImageData) and isinstance(builtin, ImageData)
    assert np.array_equal(uploaded.train_rows, builtin.train_rows)
    assert np.array_equal(uploaded.x, builtin.x) and np.array_equal(uploaded.y, builtin.y)


# -- malformed: each refused with a reason ------------------------------------------------

def test_truncated_idx(tmp_path: Path) -> None:
    images, labels = files.idx_pair(30)
    error = refused(tmp_path, "idx", images[:-10], labels=labels)
    assert "truncated" in str(error) and "header promises" in str(error)
    # a gzip stream cut short is named as such
    assert "truncated gzip" in str(refused(tmp_path, "idx", files.gz(images)[:-20],
                                           labels=labels))


def test_idx_image_and_label_counts_differ(tmp_path: Path) -> None:
    images, _ = files.idx_pair(30)
    _, labels = files.idx_pair(29)
    error = refused(tmp_path, "idx", images, labels=labels)
    assert "30 images" in str(error) and "29 labels" in str(error)


def test_idx_bad_magic_and_missing_labels(tmp_path: Path) -> None:
    images, _ = files.idx_pair(10)
    assert "magic" in str(refused(tmp_path, "idx", b"\x01\x02" + images[2:]))
    assert "0 label file" in str(refused(tmp_path, "idx", images))


def test_cifar_record_of_the_wrong_length(tmp_path: Path) -> None:
    error = refused(tmp_path, "cifar10-bin", files.cifar(3)[:-1])
    assert "3073-byte records" in str(error) and "3,072 bytes long" in str(error)


def test_cifar_label_out_of_range(tmp_path: Path) -> None:
    data = bytearray(files.cifar(3))
    data[3073] = 10
    assert "label 10 is out of range" in str(refused(tmp_path, "cifar10-bin", bytes(data)))


def test_npz_with_a_pickled_object_array(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, x=np.array([{"a": 1}, None], dtype=object), y=np.array([0, 1]))
    error = refused(tmp_path, "npz", buffer.getvalue())
    assert "object array" in str(error) and "pickle" in str(error)


def test_npz_without_y(tmp_path: Path) -> None:
    x, _ = files.pattern_images(10)
    error = refused(tmp_path, "npz", files.npz(x=x, labels=np.zeros(10, dtype=np.int64)))
    assert "no array named 'y'" in str(error) and "labels" in str(error)


@pytest.mark.parametrize(("y", "classes", "expect"), [
    (np.array([0, 1, 3, 1]), np.array(["a", "b", "c"]), "label 3 is out of range"),
    (np.array([0, -1, 1, 1]), None, "label -1 is out of range"),
    (np.array([0, 1, 5000, 1]), None, "label 5000 is out of range"),
])
def test_npz_labels_out_of_range(tmp_path: Path, y: np.ndarray, classes: np.ndarray | None,
                                 expect: str) -> None:
    x, _ = files.pattern_images(4)
    arrays = {"x": x, "y": y} | ({"classes": classes} if classes is not None else {})
    assert expect in str(refused(tmp_path, "npz", files.npz(**arrays)))


def test_npz_values_dtypes_and_shapes(tmp_path: Path) -> None:
    x, y = files.pattern_images(4)
    assert "NaN" in str(refused(tmp_path, "npz", files.npz(x=np.full((4, 3), np.nan), y=y)))
    assert "infinite" in str(refused(tmp_path, "npz", files.npz(
        x=np.array([[0.0, np.inf]] * 4), y=y)))
    # float64 beyond float32's range would train as infinities: refused the same way.
    assert "infinite" in str(refused(tmp_path, "npz", files.npz(
        x=np.array([[0.0, 1e300]] * 4), y=y)))
    assert "outside 0..255" in str(refused(tmp_path, "npz", files.npz(
        x=np.full((4, 3), 256, dtype=np.int32), y=y)))
    assert "4 labels for 3" in str(refused(tmp_path, "npz", files.npz(x=x[:3], y=y)))
    assert "integer class" in str(refused(tmp_path, "npz", files.npz(x=x, y=y * 1.0)))
    assert "not a readable .npz" in str(refused(tmp_path, "npz", b"PK\x03\x04 nonsense"))


def test_empty_text(tmp_path: Path) -> None:
    assert "is empty" in str(refused(tmp_path, "text", b""))
    assert "is empty" in str(refused(tmp_path, "text", files.gz(b"")))


def test_non_utf8_text(tmp_path: Path) -> None:
    error = refused(tmp_path, "text", "café".encode("latin-1"))
    assert "not valid utf-8" in str(error) and "encoding" in str(error)
    assert error.field == "file"
    assert refused(tmp_path, "text", b"abc", encoding="no-such").field == "encoding"
    assert refused(tmp_path, "text", b"abc", encoding="zlib").field == "encoding"


def test_text_limits(tmp_path: Path) -> None:
    small = Limits(max_chars=100, max_vocab=5)
    assert "limit is 100" in str(refused(tmp_path, "text", b"ab" * 60, limits=small))
    assert "vocabulary limit" in str(refused(tmp_path, "text", b"abcdefg", limits=small))


def test_tar_with_a_path_that_climbs_out(tmp_path: Path) -> None:
    images, labels = files.idx_pair(10)
    error = refused(tmp_path, "idx", files.tar({"ok-labels": labels, "../images": images}))
    assert "climbs out" in str(error)
    assert "absolute" in str(refused(tmp_path, "idx", files.tar({"/etc/images": images})))


def test_tar_with_a_link_or_device(tmp_path: Path) -> None:
    images, _ = files.idx_pair(10)
    link = tarfile.TarInfo("labels")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    error = refused(tmp_path, "idx", files.tar({"images": images}, extra=[link]))
    assert "symbolic link" in str(error)
    device = tarfile.TarInfo("dev")
    device.type = tarfile.CHRTYPE
    assert "regular files" in str(refused(tmp_path, "cifar10-bin",
                                          files.tar({"a.bin": files.cifar(1)}, extra=[device])))


def test_gzip_bomb(tmp_path: Path) -> None:
    error = refused(tmp_path, "idx", files.gzip_bomb(8 << 20), limits=Limits(
        max_decompressed_bytes=2 << 20))
    assert "expands past the limit of 2,097,152 bytes" in str(error)
    # inside a tar too, and the budget is shared by all members
    bomb = files.tar({"images.gz": files.gzip_bomb(3 << 20), "labels.gz": files.gzip_bomb(3 << 20)})
    assert "expands past" in str(refused(tmp_path, "idx", bomb, limits=Limits(
        max_decompressed_bytes=4 << 20)))


def test_gunzip_counts_before_it_keeps(tmp_path: Path) -> None:
    # Multi-member gzip is one stream; trailing garbage is not.
    assert gunzip(files.gz(b"ab") + files.gz(b"cd"), Budget(10), "x") == b"abcd"
    with pytest.raises(FormatError, match="after the end"):
        gunzip(files.gz(b"ab") + b"junk", Budget(10), "x")
    with pytest.raises(FormatError, match="past the limit"):
        gunzip(files.gz(b"a" * 11), Budget(10), "x")


def test_csv_malformed(tmp_path: Path) -> None:
    assert "line 3 has 2 fields" in str(refused(tmp_path, "csv", b"label,a,b\n1,2,3\n1,2\n"))
    assert "'x' is not a number" in str(refused(tmp_path, "csv", b"label,a\n1,2\n0,x\n"))
    assert "label -1 is out of range" in str(refused(tmp_path, "csv", b"1,0.5\n-1,0.2\n"))
    assert refused(tmp_path, "csv", b"a,b\n1,2\n", label_column="nope").field == "label_column"
    assert refused(tmp_path, "csv", b"1,2,3\n0,2,3\n", shape="5,5").field == "shape"
    assert "is empty" in str(refused(tmp_path, "csv", b"\n\n"))


def test_float_features_in_any_finite_range_are_kept_as_they_are(tmp_path: Path) -> None:
    """Standardized tabular features (mean 0, std 1) are the norm: neither refused nor
    rescaled. uint8 pixels are still divided by 255 when loaded."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 5)).astype(np.float32) * 3.0
    y = (x[:, 0] > 0).astype(np.int64)
    parsed = parse(tmp_path, "npz", files.npz(x=x, y=y))
    assert isinstance(parsed, Images) and parsed.x.dtype == np.float32
    assert np.array_equal(parsed.x, x) and parsed.x.min() < 0 and parsed.x.max() > 1
    assert np.array_equal(formats.to_float(parsed.x), x)
    pixels, labels = files.pattern_images(4)
    stored = parse(tmp_path, "npz", files.npz(x=pixels, y=labels))
    assert isinstance(stored, Images) and stored.x.dtype == np.uint8
    assert np.allclose(formats.to_float(stored.x).ravel(), pixels.ravel() / 255.0)

    rows = b"label,a,b\n0,-3.5,120.25\n1,2.0,-0.001\n"
    table = parse(tmp_path, "csv", rows)
    assert isinstance(table, Images)
    assert np.allclose(table.x, [[-3.5, 120.25], [2.0, -0.001]])
    for bad in (b"label,a\n0,nan\n1,1\n", b"label,a\n0,inf\n1,1\n",
                b"label,a\n0,-Infinity\n1,1\n"):
        assert "NaN or infinite" in str(refused(tmp_path, "csv", bad))
