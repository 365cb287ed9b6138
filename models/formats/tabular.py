"""The csv format, parsed as it is read: rows are checked as they come (width, count,
numbers), their features turned into float32 blocks of at most BLOCK_FIELDS fields and their
labels into small integer codes, so a table costs about twice its float32 array rather than
a Python string per field. Every limit is checked the moment it is passed."""


import csv
import re
from array import array
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from models.archive import Budget, FormatError, stream_single
from models.example_arrays import Images, Limits, checked_images, checked_names
from models.formats.text import decoded

BLOCK_FIELDS = 1 << 16  # CSV fields held as Python strings at once, before they are floats
MAX_LINE = 4 << 20  # characters of one CSV line: a row of ~400k features
_INT = re.compile(r"[+-]?\d+")


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
    pieces = decoded(stream_single(path, name, Budget(limits.max_decompressed_bytes)),
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
