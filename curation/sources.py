"""Source adapters: rows from a source file turned into `Sample`s, bad rows into quarantine.

The generic JSONL source: one object per line with `question`, `answer`, `images` (paths relative
to the file, absolute paths, or base64 strings), and optional `id`, `category`, `answer_type`,
`choices`, `meta`. Missing `category` / `answer_type` come from the source's defaults.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from curation.schema import Sample


class SourceSpec(BaseModel):
    """One source in the curation config."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["jsonl"] = "jsonl"
    path: Path
    name: str | None = None  # the `source` column; defaults to the file's stem
    category: str | None = None
    answer_type: str | None = None

    @property
    def source_name(self) -> str:
        return self.name or self.path.stem


class TableFileError(ValueError):
    """A JSONL or Parquet file that cannot be read as a table; the message names file and line."""


def read_table_file(path: Path, required: set[str], what: str = "file") -> list[dict[str, Any]]:
    """All rows of a JSONL or Parquet file, each an object with non-empty `required` fields.

    Strict (for corpora and mixing sources, where one bad row means a broken file); sample
    sources use `read_source`, which quarantines bad rows instead."""
    if not path.is_file():
        raise TableFileError(f"{what} not found: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        located = [(f"row {i}", row) for i, row in enumerate(pq.read_table(path).to_pylist())]
    else:
        located = []
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    located.append((f"line {line_no}", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise TableFileError(f"{path}:{line_no}: invalid JSON ({exc.msg})") from exc
    for where, row in located:
        if not isinstance(row, dict):
            raise TableFileError(f"{path}, {where}: expected a JSON object")
        empty = sorted(f for f in required if row.get(f) in (None, ""))
        if empty:
            raise TableFileError(f"{path}, {where}: missing or empty field(s) {empty}")
    return [row for _, row in located]


class RowRejected(ValueError):
    """A source row that cannot become a `Sample`; the message is the quarantine reason."""


def _read_image(ref: Any, base_dir: Path) -> tuple[bytes, str | None]:
    if not isinstance(ref, str) or not ref:
        raise RowRejected(f"image_ref_invalid: expected a path or base64 string, got {type(ref).__name__}")
    candidate = Path(ref) if Path(ref).is_absolute() else base_dir / ref
    if len(ref) < 1024 and candidate.suffix.lower() in {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}:
        if not candidate.is_file():
            raise RowRejected(f"image_missing: {candidate}")
        return candidate.read_bytes(), str(candidate)
    try:
        return base64.b64decode(ref.split(",", 1)[-1], validate=True), None
    except (binascii.Error, ValueError) as exc:
        raise RowRejected(f"image_ref_invalid: neither an image file nor base64 ({exc})") from exc


def row_to_sample(row: dict[str, Any], spec: SourceSpec, base_dir: Path) -> Sample:
    images = row.get("images") or []
    if isinstance(images, str):
        images = [images]
    refs = []
    for ref in images:
        data, path = _read_image(ref, base_dir)
        refs.append({"bytes": data, "path": path})
    fields = {
        "id": str(row.get("id") or ""),
        "source": spec.source_name,
        "category": row.get("category") or spec.category,
        "question": row.get("question"),
        "images": refs,
        "answer": None if row.get("answer") is None else str(row["answer"]),
        "answer_type": row.get("answer_type") or spec.answer_type,
        "choices": row.get("choices"),
        "meta": row.get("meta") or {},
    }
    try:
        return Sample.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RowRejected(f"invalid_row: {problems}") from exc


def read_source(spec: SourceSpec) -> Iterator[tuple[dict[str, Any], str]]:
    """Yield `(raw row, origin)`; an unparsable line yields a row with a `__parse_error__` key."""
    path = spec.path
    with open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            origin = f"{path}:{line_no}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield {"__parse_error__": f"invalid_json: {exc.msg}", "line": line[:200]}, origin
                continue
            if not isinstance(row, dict):
                yield {"__parse_error__": "invalid_json: a line must hold a JSON object", "line": line[:200]}, origin
                continue
            yield row, origin
