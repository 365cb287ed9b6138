"""Text and CSV uploads parsed as they are read: never whole in memory, typed as they go.

A few kilobytes of gzip can unpack to hundreds of megabytes; holding that as one string and
then as a Python string per CSV field cost many times its size. Here the bytes come a chunk
at a time (models/archive.stream_single), are decoded incrementally, and:

- text is counted (characters, vocabulary) and written out as UTF-8 to the stored form's
  scratch file as it goes, so a corpus costs its chunk, its vocabulary and a file;
- CSV rows are checked as they come (width, count, numbers) and their features are turned
  into float32 blocks of at most BLOCK_FIELDS fields, their labels into small integer codes,
  so a table costs about twice its float32 array.

Every limit is checked the moment it is passed, so an upload over one stops there.
"""

import codecs
import csv
import hashlib
import re
from array import array
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from models.archive import Budget, FormatError, stream_single
from models.examples import Images, Limits, checked_images, checked_names

BLOCK_FIELDS = 1 << 16  # CSV fields held as Python strings at once, before they are floats
MAX_LINE = 4 << 20  # characters of one CSV line: a row of ~400k features
_INT = re.compile(r"[+-]?\d+")


@dataclass
class TextFile:
    """A text upload already written, as UTF-8, to `path` (the stored form, not yet in place)."""

    path: Path
    vocab: list[str]
    num_examples: int  # characters
    encoding: str
    sha256: str
    bytes: int

    kind: ClassVar[str] = "text"


def _decode_error(name: str, codec: str, exc: UnicodeDecodeError, offset: int) -> FormatError:
    hint = ("send UTF-8, or name its encoding in the `encoding` field" if codec == "utf-8"
            else "check the `encoding` field")
    return FormatError(f"{name} is not valid {codec}: {exc.reason} at byte "
                       f"{offset + exc.start:,}; {hint}")


def _decoded(chunks: Iterator[bytes], name: str, codec: str) -> Iterator[str]:
    """The chunks decoded as they come; an error names its byte in the whole stream."""
    # A UTF-8 byte-order mark is not part of the text.
    decoder = codecs.getincrementaldecoder("utf-8-sig" if codec == "utf-8" else codec)()
    fed = 0
    for chunk in chunks:
        state = decoder.getstate()
        pending = len(state[0]) if isinstance(state[0], bytes) else 0
        try:
            piece = decoder.decode(chunk)
        except UnicodeDecodeError as exc:
            raise _decode_error(name, codec, exc, fed - pending) from None
        fed += len(chunk)
        if piece:
            yield piece
    state = decoder.getstate()
    pending = len(state[0]) if isinstance(state[0], bytes) else 0
    try:
        piece = decoder.decode(b"", final=True)
    except UnicodeDecodeError as exc:
        raise _decode_error(name, codec, exc, fed - pending) from None
    if piece:
        yield piece


def _codec(encoding: str | None) -> str:
    try:
        info = codecs.lookup(encoding or "utf-8")
    except LookupError:
        raise FormatError(f"unknown encoding '{encoding}'", field="encoding") from None
    if not getattr(info, "_is_text_encoding", True):  # zlib, base64...: bytes to bytes
        raise FormatError(f"'{encoding}' is not a text encoding", field="encoding")
    return info.name


def parse_text(path: Path, name: str, encoding: str | None, limits: Limits,
               out: Path) -> TextFile:
    """Decode, count and write the corpus to `out` as UTF-8; `out` is removed on error."""
    codec = _codec(encoding)
    budget = Budget(limits.max_decompressed_bytes)
    chars, vocab, hasher, size = 0, set[str](), hashlib.sha256(), 0
    try:
        with open(out, "wb") as handle:
            for piece in _decoded(stream_single(path, name, budget), name, codec):
                chars += len(piece)
                if chars > limits.max_examples:
                    raise FormatError(f"{name} has more than {limits.max_examples:,} "
                                      f"characters; the limit is {limits.max_examples:,}")
                vocab.update(piece)
                if len(vocab) > limits.max_vocab:
                    raise FormatError(f"{name} uses more than {limits.max_vocab:,} distinct "
                                      f"characters; the vocabulary limit is "
                                      f"{limits.max_vocab:,}")
                data = piece.encode("utf-8")
                handle.write(data)
                hasher.update(data)
                size += len(data)
        if not chars:
            raise FormatError(f"{name} is empty")
        if chars < 2:
            raise FormatError(f"{name} has 1 character; a character model needs at least 2")
    except BaseException:
        out.unlink(missing_ok=True)
        raise
    return TextFile(path=out, vocab=sorted(vocab), num_examples=chars, encoding=codec,
                    sha256=hasher.hexdigest(), bytes=size)


# -- csv --------------------------------------------------------------------------------

def _lines(pieces: Iterator[str], name: str) -> Iterator[str]:
    """Lines ending in '\\n' (as iterating a text file gives them), each bounded."""
    rest = ""
    for piece in pieces:
        lines = (rest + piece).split("\n")
        rest = lines.pop()
        if len(rest) > MAX_LINE:
            raise FormatError(f"{name} has a line longer than {MAX_LINE:,} characters")
        for line in lines:
            if len(line) > MAX_LINE:
                raise FormatError(f"{name} has a line longer than {MAX_LINE:,} characters")
            yield line + "\n"
    if rest:
        yield rest


def _is_number(field: str) -> bool:
    try:
        float(field)
    except ValueError:
        return False
    return True


class _Table:
    """Rows of features and labels gathered as float32 blocks and integer label codes."""

    def __init__(self, name: str, index: int, width: int, limits: Limits) -> None:
        self.name, self.index, self.width, self.limits = name, index, width, limits
        self.blocks: list[np.ndarray] = []
        self.pending: list[list[str]] = []
        self.pending_lines: list[int] = []
        self.codes = array("l")  # each row's label, as its first-seen order
        self.labels: dict[str, int] = {}
        self.rows = 0

    def add(self, line: int, row: list[str]) -> None:
        name = self.name
        if len(row) != self.width:
            raise FormatError(f"{name} line {line} has {len(row)} fields; expected {self.width}")
        self.rows += 1
        if self.rows > self.limits.max_examples:
            raise FormatError(f"{name} has more than {self.limits.max_examples:,} rows; the "
                              f"limit is {self.limits.max_examples:,}")
        label = row[self.index].strip()
        code = self.labels.get(label)
        if code is None:
            if len(self.labels) >= self.limits.max_classes:
                raise FormatError(f"{name} has more than {self.limits.max_classes:,} distinct "
                                  f"labels; at most {self.limits.max_classes:,} classes are "
                                  "allowed")
            code = self.labels[label] = len(self.labels)
        self.codes.append(code)
        self.pending.append(row[:self.index] + row[self.index + 1:])
        self.pending_lines.append(line)
        if len(self.pending) * (self.width - 1) >= BLOCK_FIELDS:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        try:
            block = np.array(self.pending, dtype=np.float32)
        except ValueError:
            line, field = next((line, f) for line, feats in
                               zip(self.pending_lines, self.pending, strict=True)
                               for f in feats if not _is_number(f))
            raise FormatError(f"{self.name} line {line}: '{field[:40]}' is not a number"
                              ) from None
        if not np.isfinite(block).all():
            raise FormatError(f"{self.name} holds NaN or infinite features")
        self.blocks.append(block)
        self.pending, self.pending_lines = [], []

    def labels_and_classes(self) -> tuple[np.ndarray, list[str] | None]:
        """Integer labels as they are (classes named '0'..), or names sorted into classes."""
        names = list(self.labels)  # in code order
        codes = np.frombuffer(self.codes, dtype=np.dtype(self.codes.typecode))
        if all(_INT.fullmatch(n) for n in names):
            values = [int(n) for n in names]
            for value in values:
                if value < 0:
                    raise FormatError(f"{self.name}: label {value} is out of range; labels "
                                      "count from 0")
                if value >= self.limits.max_classes:
                    raise FormatError(f"{self.name}: label {value} is out of range; at most "
                                      f"{self.limits.max_classes:,} classes are allowed")
            return np.array(values, dtype=np.int64)[codes], None
        classes = checked_names(sorted(names), self.name, self.limits)
        order = {c: i for i, c in enumerate(classes)}
        return np.array([order[n] for n in names], dtype=np.int64)[codes], classes


def _label_index(first: list[str], label_column: str | None, name: str) -> int:
    if label_column is None:
        lowered = [f.lower() for f in first]
        index = lowered.index("label") if "label" in lowered else 0
    elif label_column.isdigit():
        index = int(label_column)
    elif label_column in first:
        index = first.index(label_column)
    else:
        raise FormatError(f"no column named '{label_column}' in the header of {name}",
                          field="label_column")
    if index >= len(first):
        raise FormatError(f"column {index} does not exist; {name} has {len(first)} columns",
                          field="label_column")
    return index


def _reshape(x: np.ndarray, shape: str) -> np.ndarray:
    try:
        dims = [int(d) for d in shape.split(",")]
    except ValueError:
        raise FormatError("write the shape as C,H,W or H,W", field="shape") from None
    if len(dims) not in (2, 3) or any(d < 1 for d in dims) or \
            int(np.prod(dims)) != x.shape[1]:
        raise FormatError(f"shape {dims} does not hold the {x.shape[1]} features of a row",
                          field="shape")
    return x.reshape(len(x), *dims)


def parse_csv(path: Path, name: str, label_column: str | None, shape: str | None,
              limits: Limits) -> Images:
    """One label column and numeric features; a first row that is not numbers is a header."""
    pieces = _decoded(stream_single(path, name, Budget(limits.max_decompressed_bytes)),
                      name, "utf-8")
    reader = csv.reader(_lines(pieces, name))
    table: _Table | None = None
    try:
        for row in reader:
            if not any(f.strip() for f in row):
                continue
            if table is not None:
                table.add(reader.line_num, row)
                continue
            first = [f.strip() for f in row]
            index = _label_index(first, label_column, name)
            if len(first) < 2:
                raise FormatError(f"{name} has {len(first)} column; it needs a label and "
                                  "features")
            table = _Table(name, index, len(first), limits)
            if not any(not _is_number(f) for i, f in enumerate(first) if i != index):
                table.add(reader.line_num, row)  # no header: the first row is data
    except csv.Error as exc:
        raise FormatError(f"{name} is not valid CSV: {exc}") from None
    if table is None:
        raise FormatError(f"{name} is empty")
    table.flush()
    if not table.rows:
        raise FormatError(f"{name} has a header but no rows")
    y, classes = table.labels_and_classes()
    x = np.concatenate(table.blocks) if len(table.blocks) > 1 else table.blocks[0]
    table.blocks.clear()
    if shape:
        x = _reshape(x, shape)
    return checked_images(x, y, classes, name, limits, scale=False)
