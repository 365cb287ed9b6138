"""The text format, parsed as it is read: decoded incrementally, counted (characters,
vocabulary) and written out as UTF-8 to a scratch file as it goes, so a corpus costs its
chunk, its vocabulary and a file, however far a few kilobytes of gzip unpack. Every limit is
checked the moment it is passed. A second pass over that file (`encoded_ids`) turns it into
character ids of the narrowest integer type, the form a worker reads."""


import codecs
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from models.archive import CHUNK, Budget, FormatError, stream_single
from models.example_arrays import Limits


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


def decoded(chunks: Iterator[bytes], name: str, codec: str) -> Iterator[str]:
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
            for piece in decoded(stream_single(path, name, budget), name, codec):
                chars += len(piece)
                if chars > limits.max_chars:
                    raise FormatError(f"{name} has more than {limits.max_chars:,} "
                                      f"characters; the limit is {limits.max_chars:,}")
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


def id_dtype(vocab_size: int) -> np.dtype[Any]:
    """The narrowest unsigned integer that holds every character id of the vocabulary."""
    if vocab_size <= 1 << 8:
        return np.dtype(np.uint8)
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def id_table(vocab: list[str]) -> np.ndarray:
    """Code point -> character id, for every code point up to the vocabulary's largest (a
    vocabulary is sorted, so its code points are increasing)."""
    points = np.array([ord(c) for c in vocab], dtype=np.int64)
    table = np.zeros(int(points[-1]) + 1, dtype=id_dtype(len(vocab)))
    table[points] = np.arange(len(vocab))
    return table


def ids_of(piece: str, table: np.ndarray) -> np.ndarray:
    """A decoded piece of the corpus as character ids (every character in the vocabulary)."""
    return table[np.frombuffer(piece.encode("utf-32-le"), dtype="<u4")]


def encoded_ids(text_file: "TextFile") -> Iterator[np.ndarray]:
    """The stored UTF-8 corpus as character ids, a chunk at a time: the second pass over the
    file, once the first has found its vocabulary."""
    table = id_table(text_file.vocab)
    with open(text_file.path, "rb") as handle:
        chunks = iter(lambda: handle.read(CHUNK), b"")
        for piece in decoded(chunks, text_file.path.name, "utf-8"):
            yield ids_of(piece, table)
