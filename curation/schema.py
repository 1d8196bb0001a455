"""The `Sample` contract: one Arrow schema every source lands in.

Images are stored the way Hugging Face `datasets` stores them (a struct of `bytes` and `path`),
and the schema carries `datasets` feature metadata, so a shard opened with
`datasets.load_dataset("parquet", ...)` decodes its images to PIL without extra code.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, field_validator

SAMPLE_SCHEMA_VERSION = "sample/2"

Category = Literal["perception", "reasoning", "search", "direct"]  # direct: control items that need no tool
AnswerType = Literal["choice", "number", "math", "text"]
Pool = Literal["coldstart", "rl", "eval", "dropped"]

IMAGE_TYPE = pa.struct([pa.field("bytes", pa.binary()), pa.field("path", pa.string())])

# `datasets` Features for the image column (what `datasets` writes into Parquet metadata).
HF_IMAGE_LIST = {"_type": "List", "feature": {"_type": "Image"}}


def hf_value(dtype: str) -> dict[str, str]:
    return {"_type": "Value", "dtype": dtype}


def with_hf_features(schema: pa.Schema, features: dict[str, Any], version: str) -> pa.Schema:
    """Attach `datasets` feature metadata and our schema version to an Arrow schema."""
    meta = dict(schema.metadata or {})
    meta[b"huggingface"] = json.dumps({"info": {"features": features}}).encode()
    meta[b"deepeyes_schema_version"] = version.encode()
    return schema.with_metadata(meta)


SAMPLE_SCHEMA = with_hf_features(
    pa.schema(
        [
            pa.field("id", pa.string(), nullable=False),
            pa.field("source", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
            pa.field("question", pa.string(), nullable=False),
            pa.field("images", pa.list_(IMAGE_TYPE), nullable=False),
            pa.field("answer", pa.string(), nullable=False),
            pa.field("answer_type", pa.string(), nullable=False),
            pa.field("choices", pa.list_(pa.string())),
            pa.field("meta", pa.string()),  # JSON object
            pa.field("pool", pa.string()),  # set by the split; null before it
            # Set by selection from the student's probes: 1 - pass rate without tools, and pass rate
            # with tools - pass rate without; null when the row was not probed.
            pa.field("difficulty", pa.float64()),
            pa.field("tool_benefit", pa.float64()),
        ]
    ),
    {
        "id": hf_value("string"),
        "source": hf_value("string"),
        "category": hf_value("string"),
        "question": hf_value("string"),
        "images": HF_IMAGE_LIST,
        "answer": hf_value("string"),
        "answer_type": hf_value("string"),
        "choices": {"_type": "List", "feature": hf_value("string")},
        "meta": hf_value("string"),
        "pool": hf_value("string"),
        "difficulty": hf_value("float64"),
        "tool_benefit": hf_value("float64"),
    },
    SAMPLE_SCHEMA_VERSION,
)


class ImageRef(BaseModel):
    """An image as `datasets` stores it: encoded bytes, and the path it came from if any."""

    model_config = ConfigDict(extra="forbid")
    bytes: bytes
    path: str | None = None


class Sample(BaseModel):
    """One question with its images and verifiable answer; the row model of `SAMPLE_SCHEMA`."""

    model_config = ConfigDict(extra="forbid")

    id: str = ""
    source: str
    category: Category
    question: str = Field(min_length=1)
    images: list[ImageRef] = Field(default_factory=list)
    answer: str = Field(min_length=1)
    answer_type: AnswerType
    choices: list[str] | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    pool: Pool | None = None
    difficulty: float | None = None
    tool_benefit: float | None = None

    @field_validator("meta", mode="before")
    @classmethod
    def _meta_from_json(cls, value: Any) -> Any:
        if value is None:
            return {}
        return json.loads(value) if isinstance(value, str) else value

    def model_post_init(self, _context: Any) -> None:
        if not self.id:
            self.id = content_id(self.question, [img.bytes for img in self.images])

    def to_row(self) -> dict[str, Any]:
        row = self.model_dump()
        row["meta"] = json.dumps(self.meta, sort_keys=True)
        return row

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Sample:
        return cls.model_validate(row)


def content_id(question: str, image_bytes: list[bytes]) -> str:
    """A stable id from the normalized question and the image contents."""
    digest = hashlib.blake2b(digest_size=12)
    digest.update(" ".join(question.split()).lower().encode())
    for data in image_bytes:
        digest.update(hashlib.blake2b(data, digest_size=16).digest())
    return digest.hexdigest()
