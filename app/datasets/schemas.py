"""What the datasets routes take and return. The upload itself is a multipart form."""

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from models.formats import FORMATS

Format = Literal["text", "npz", "idx", "cifar10-bin", "csv"]
Kind = Literal["text", "images"]


class Split(BaseModel):
    train: int
    validation: int = Field(description="held out from training: for images a fixed shuffled "
                            "share, for text the end of the corpus")
    test: int = Field(description="the upload's own test set (IDX t10k files, CIFAR "
                      "test_batch, npz x_test/y_test), evaluated once when a job ends")


class DatasetOut(BaseModel):
    id: str
    name: str
    kind: Kind
    format: Format
    num_examples: int = Field(description="examples (characters for text), test set included")
    sha256: str = Field(description="of the uploaded file; for an IDX upload in two parts, of "
                        "the two parts' hex digests joined, file then labels")
    bytes: int = Field(description="bytes uploaded")
    created_at: datetime
    split: Split
    validation_fraction: float = Field(description="the held-out share a job uses unless its "
                                       "training.validation_fraction says otherwise")
    vocab: list[str] | None = Field(None, description="text: the characters, in id order")
    vocab_size: int | None = None
    encoding: str | None = Field(None, description="text: the encoding it was decoded from")
    classes: list[str] | None = Field(None, description="images: class names, by label")
    shape: list[int] | None = Field(None, description="images: one example's shape, [C, H, W] "
                                    "or [features]")
    pixels: str | None = Field(None, description="images: 'uint8, divided by 255' (inputs are "
                               "scaled to [0, 1]) or 'float32' (used as uploaded)")
    ids: str | None = Field(None, description="text: how its character ids are stored (and "
                            "mapped by workers): uint8 for up to 256 characters, else uint16 "
                            "or uint32")
    files: list[str] = Field(description="the uploaded files' names, as labels only")
    options: dict[str, str] | None = Field(None, description="the format's options it was "
                                           "made with (encoding, label_column, shape); with "
                                           "the bytes and the format, its identity")


class DatasetPage(BaseModel):
    items: list[DatasetOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


_TEXT = {"type": "string"}
UPLOAD_FORM: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": {
        "type": "object",
        "required": ["file", "format"],
        "properties": {
            "file": {"type": "string", "format": "binary", "description":
                     "the dataset: text, idx, cifar10-bin and csv may be gzipped; idx and "
                     "cifar10-bin also take a tar (or .tar.gz) of their files"},
            "labels": {"type": "string", "format": "binary", "description":
                       "idx only: the labels file, when `file` is the images file alone"},
            "format": {"type": "string", "enum": list(FORMATS)},
            "name": {**_TEXT, "maxLength": 200,
                     "description": "a label; the file's name if absent"},
            "encoding": {**_TEXT, "description": "text only: the corpus's encoding (utf-8 if "
                         "absent; bytes that do not decode are a 422)"},
            "label_column": {**_TEXT, "description": "csv only: the label column's header "
                             "name or 0-based index; `label` if the header has it, else 0"},
            "shape": {**_TEXT, "description": "csv only: reshape each row's features, as "
                      "C,H,W or H,W (e.g. 1,28,28)"},
        }}}}}}
