"""Source adapters: rows from a source file turned into `Sample`s, bad rows into quarantine.

The generic JSONL source: one object per line with `question`, `answer`, `images` (paths relative
to the file, absolute paths, or base64 strings), and optional `id`, `category`, `answer_type`,
`choices`, `meta`. Missing `category` / `answer_type` come from the source's defaults.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from curation.normalize import LETTERS, clean_text, infer_answer_type, normalize_answer, normalize_choices
from curation.schema import Sample


class SourceSpec(BaseModel):
    """One source in the curation config: where the rows are and how their fields map to ours.

    - `jsonl`: the generic JSONL (the module docstring); `path` is the file.
    - `tsv`: a VLMEvalKit TSV: `index`, `image` (base64, or a JSON list of base64 strings),
      `question`, `answer`, option columns `A`, `B`, ..., optional `category`, `hint`.
    - `hf`: anything `datasets.load_dataset` opens: `path` is a hub id (where the network allows)
      or a builder name (`parquet`, `json`, `csv`, `imagefolder`) with `data_files`.
    """

    model_config = ConfigDict(extra="forbid")

    kind: Literal["jsonl", "tsv", "hf"] = "jsonl"
    path: str
    name: str | None = None  # the `source` column; defaults to the file's stem or the dataset id
    category: str | None = None  # for rows without one
    answer_type: str | None = None  # for rows without one (otherwise inferred from the answer)
    # Our field -> the source's column, e.g. {question: query, answer: label, images: image}.
    fields: dict[Literal["id", "question", "answer", "images", "category", "answer_type", "choices"], str] = Field(default_factory=dict)
    include: dict[str, list[Any]] = Field(default_factory=dict)  # keep rows whose column has one of these values
    limit: int | None = Field(None, ge=1)  # the first N rows (after `include`)
    # `hf` only
    subset: str | None = None
    split: str = "train"
    data_files: str | list[str] | None = None

    @field_validator("path", mode="before")
    @classmethod
    def _path_not_empty(cls, value: Any) -> Any:
        value = str(value) if isinstance(value, Path) else value
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @property
    def file(self) -> Path:
        return Path(self.path)

    @property
    def base_dir(self) -> Path:
        """Where relative image paths in the rows start: the source file's folder, or for `hf`
        the folder of its first data file."""
        if self.kind == "hf":
            first = self.data_files[0] if isinstance(self.data_files, list) and self.data_files else self.data_files
            return Path(first).parent if isinstance(first, str) else Path.cwd()
        return self.file.parent

    @property
    def source_name(self) -> str:
        if self.name:
            return self.name
        return self.file.stem if self.kind != "hf" else self.path.replace("/", "__")

    @classmethod
    def parse_cli(cls, text: str) -> SourceSpec:
        """`KIND:PATH` (jsonl:data/x.jsonl, tsv:V_star.tsv, hf:org/dataset) or a bare JSONL path."""
        kind, sep, path = text.partition(":")
        if sep and kind in ("jsonl", "tsv", "hf"):
            return cls(kind=kind, path=path)
        return cls(path=text)


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
    """An image given as a path, base64 (or a data URL), raw bytes, a `{bytes, path}` dict or a PIL image."""
    if isinstance(ref, dict):
        if ref.get("bytes"):
            return bytes(ref["bytes"]), ref.get("path")
        ref = ref.get("path")
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref), None
    if hasattr(ref, "save") and hasattr(ref, "size"):  # a PIL image, as `datasets` decodes them
        out = io.BytesIO()
        ref.save(out, format="PNG")
        return out.getvalue(), getattr(ref, "filename", None) or None
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


def _field(row: dict[str, Any], spec: SourceSpec, name: str) -> Any:
    column = spec.fields.get(name, name)  # type: ignore[call-overload]
    return row.get(column)


def row_to_sample(row: dict[str, Any], spec: SourceSpec, base_dir: Path) -> Sample:
    """A source row (in the source's own field names, mapped by `spec.fields`) as a normalized `Sample`."""
    images = _field(row, spec, "images")
    if images is None or (isinstance(images, str) and not images):
        images = []
    elif not isinstance(images, list):
        images = [images]
    refs = []
    for ref in images:
        data, path = _read_image(ref, base_dir)
        refs.append({"bytes": data, "path": path})
    question = _field(row, spec, "question")
    answer = _field(row, spec, "answer")
    try:
        choices = normalize_choices(_field(row, spec, "choices"))
    except ValueError as exc:
        raise RowRejected(f"invalid_row: choices: {exc}") from exc
    question = clean_text(question) if isinstance(question, str) else question
    answer = None if answer is None else clean_text(str(answer))
    answer_type = _field(row, spec, "answer_type") or spec.answer_type or (infer_answer_type(answer, choices) if answer else None)
    if answer and answer_type in ("choice", "number"):
        try:
            answer = normalize_answer(answer, answer_type, choices)
        except ValueError as exc:
            raise RowRejected(f"invalid_row: answer: {exc}") from exc
    fields = {
        "id": str(_field(row, spec, "id") or ""),
        "source": spec.source_name,
        "category": _field(row, spec, "category") or spec.category,
        "question": question,
        "images": refs,
        "answer": answer,
        "answer_type": answer_type,
        "choices": choices,
        "meta": row.get("meta") or {},
    }
    try:
        return Sample.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise RowRejected(f"invalid_row: {problems}") from exc


class SourceError(ValueError):
    """A source that cannot be opened at all (missing file, unknown dataset); names the source."""


def _jsonl_rows(spec: SourceSpec) -> Iterator[tuple[dict[str, Any], str]]:
    path = spec.file
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


def _tsv_rows(spec: SourceSpec) -> Iterator[tuple[dict[str, Any], str]]:
    """VLMEvalKit's layout, turned into the generic fields (unless `fields` maps them otherwise)."""
    csv.field_size_limit(sys.maxsize)  # base64 images are far longer than csv's default limit
    path = spec.file
    with open(path, encoding="utf-8", newline="") as handle:
        for line_no, raw in enumerate(csv.DictReader(handle, delimiter="\t"), start=2):
            row: dict[str, Any] = {k: v for k, v in raw.items() if k is not None}
            image = row.get("image") or ""
            if image.startswith("["):
                try:
                    image = json.loads(image)
                except json.JSONDecodeError:
                    pass
            choices = [row[letter] for letter in LETTERS if row.get(letter) not in (None, "", "nan")]
            question = row.get("question") or ""
            if row.get("hint") not in (None, "", "nan"):
                question = f"Hint: {row['hint']}\n{question}"
            generic = {"id": row.get("index"), "question": question, "answer": row.get("answer"), "images": image or [],
                       "category": row.get("category"), "choices": choices or None}
            yield {**row, **{k: v for k, v in generic.items() if k not in spec.fields.values()}}, f"{path}:{line_no}"


def _hf_rows(spec: SourceSpec) -> Iterator[tuple[dict[str, Any], str]]:
    import datasets

    try:
        dataset = datasets.load_dataset(spec.path, spec.subset, split=spec.split, data_files=spec.data_files)
    except Exception as exc:  # the hub unreachable, no such dataset or files, a bad builder
        raise SourceError(f"source {spec.source_name!r}: datasets.load_dataset({spec.path!r}) failed: {type(exc).__name__}: {exc}") from exc
    for index, row in enumerate(dataset):
        yield dict(row), f"{spec.path}[{spec.split}][{index}]"


def read_source(spec: SourceSpec, skipped: dict[str, int] | None = None) -> Iterator[tuple[dict[str, Any], str]]:
    """Yield `(raw row, origin)` for the rows `spec.include` keeps, up to `spec.limit`; an
    unparsable line yields a row with a `__parse_error__` key (for the quarantine). Rows left out
    by `include` are counted in `skipped["filtered"]`."""
    if spec.kind != "hf" and not spec.file.is_file():
        raise SourceError(f"source {spec.source_name!r}: file not found: {spec.file}")
    rows = {"jsonl": _jsonl_rows, "tsv": _tsv_rows, "hf": _hf_rows}[spec.kind](spec)
    taken = 0
    for row, origin in rows:
        if spec.include and "__parse_error__" not in row:
            if any(row.get(column) not in allowed for column, allowed in spec.include.items()):
                if skipped is not None:
                    skipped["filtered"] = skipped.get("filtered", 0) + 1
                continue
        yield row, origin
        taken += 1
        if spec.limit is not None and taken >= spec.limit:
            return
