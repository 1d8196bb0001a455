"""How a source's rows map onto the `Sample` fields: one place for field mappings, category maps,
per-source defaults and the checks that a value is usable.

A source names its own columns and labels. `FieldMapping` (the part of a `SourceSpec` that says
how to read a row) holds:

- `fields`: our field -> the source's column (`{question: query, answer: label}`), or a dotted
  path into nested objects (`{answer: reward_model.ground_truth, question: extra_info.question}`,
  as verl's RL parquet files nest them; a number in a path indexes a list: `images.0`);
- `category_map`: the source's category labels -> ours (`{color: perception, count: reasoning}`,
  as MMBench labels its rows);
- `category`: the category of the rows that have none of ours (no label, or a label that is
  neither ours nor in the map: a benchmark with its own taxonomy is `category: perception`);
- `answer_type`: the value for rows that have none.

Every lookup of a row's field goes through `FieldMapping.value`, every category through
`FieldMapping.category_of`, so a richer way to name a column (a path into nested objects) or a
new importer changes this module only. A value that cannot be used raises `RowRejected` with the
quarantine reason (`missing_category: ...`, `invalid_answer: ...`).
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator

from curation.normalize import normalize_choices
from curation.schema import AnswerType, Category

OurField = Literal["id", "question", "answer", "images", "category", "answer_type", "choices", "meta"]
CATEGORIES: tuple[str, ...] = get_args(Category)
ANSWER_TYPES: tuple[str, ...] = get_args(AnswerType)


class RowRejected(ValueError):
    """A source row that cannot become a `Sample`; the message is the quarantine reason
    (`<key>: <detail>`, the key counted in the report)."""


_MISSING = object()


def lookup(row: dict[str, Any], path: str) -> Any:
    """The value at `path` in a row: the column of that exact name when there is one, else a dotted
    path walked through nested objects (a struct column arrives as a dict; an object stored as a JSON
    string is read on the way) and lists (a number indexes them). None when any step is absent."""
    if path in row:
        return row[path]
    if "." not in path:
        return None
    value: Any = row
    for step in path.split("."):
        if isinstance(value, str) and value.lstrip().startswith(("{", "[")):
            try:
                value = json.loads(value)
            except (ValueError, RecursionError):
                return None
        if isinstance(value, dict):
            value = value.get(step, _MISSING)
        elif isinstance(value, (list, tuple)) and step.lstrip("-").isdigit():
            index = int(step)
            value = value[index] if -len(value) <= index < len(value) else _MISSING
        else:
            return None
        if value is _MISSING:
            return None
    return value


def label_text(value: Any) -> str:
    """A scalar label as the text `category_map` keys are compared with (`true`, `3`, `color`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


def scalar_text(value: Any, field: str) -> str | None:
    """A scalar field value as text: None for a missing or empty one; `RowRejected` for a dict,
    list or other structure (a nested column mapped by mistake) and for NaN or infinity.

    Booleans read as JSON writes them (`true`), numbers as Python prints them."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        raise RowRejected(f"invalid_{field}: {value!r} is not a finite number")
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value if value.strip() else None
    raise RowRejected(f"invalid_{field}: not a scalar (a {type(value).__name__}); map `fields.{field}` to a column of text or numbers")


class FieldMapping(BaseModel):
    """How to read a source's rows (see the module docstring). Config names: `fields`, `category`,
    `answer_type`, `category_map`; the CLI takes the same names (`--source jsonl:F,category=perception`)."""

    model_config = ConfigDict(extra="forbid")

    category: Category | None = None  # for rows without one of ours (no label, or one neither ours nor mapped)
    answer_type: AnswerType | None = None  # for rows without one (otherwise inferred from the answer)
    # Our field -> the source's column or a dotted path into it, e.g. {question: query, answer: label},
    # {answer: reward_model.ground_truth}.
    fields: dict[OurField, str] = Field(default_factory=dict)
    # The source's category labels -> ours.
    category_map: dict[str, Category] = Field(default_factory=dict)

    @field_validator("fields")
    @classmethod
    def _columns_named(cls, fields: dict[str, str]) -> dict[str, str]:
        empty = sorted(ours for ours, theirs in fields.items() if not theirs.strip())
        if empty:
            raise ValueError(f"an empty column name for {empty}")
        return fields

    @field_validator("category_map", mode="before")
    @classmethod
    def _labels_as_text(cls, value: Any) -> Any:
        # YAML reads `1: reasoning` or `yes: perception` with an int or bool key; rows compare as text.
        return {label_text(k): v for k, v in value.items()} if isinstance(value, dict) else value

    def column(self, field: OurField) -> str:
        """The source's column that holds our `field`."""
        return self.fields.get(field, field)

    def value(self, row: dict[str, Any], field: OurField) -> Any:
        """The row's value for our `field` (None when the column or path is absent): see `lookup`."""
        return lookup(row, self.column(field))

    def category_of(self, row: dict[str, Any]) -> str:
        """Our category for the row: its own label mapped through `category_map` (or already one
        of ours), else the source's `category`. Raises `RowRejected` (`missing_category`,
        `unknown_category`, `invalid_category`) with the fix in the reason when neither gives one."""
        raw = self.value(row, "category")
        if raw is None or (isinstance(raw, str) and not raw.strip()):
            if self.category is not None:
                return self.category
            raise RowRejected(f"missing_category: the row has no `{self.column('category')}` and the source gives none "
                              f"(set the source's category, one of {', '.join(CATEGORIES)})")
        if not is_scalar(raw):
            raise RowRejected(f"invalid_category: not a scalar (a {type(raw).__name__})")
        label = label_text(raw).strip()
        if label in self.category_map:
            return self.category_map[label]
        if label in CATEGORIES:
            return label
        if self.category is not None:
            return self.category
        raise RowRejected(f"unknown_category: {label[:80]!r} is not one of {', '.join(CATEGORIES)} "
                          f"(map the source's labels to ours with category_map, or give the source a category for the rest)")

    def own_label(self, row: dict[str, Any]) -> str | None:
        """The row's category label when it is not one of ours (a benchmark's fine-grained label that
        was mapped or defaulted): kept in the sample's `meta.source_category`; None otherwise."""
        raw = self.value(row, "category")
        if raw is None or not is_scalar(raw):
            return None
        label = label_text(raw).strip()
        return label if label and label not in CATEGORIES else None

    def reported_category(self, row: dict[str, Any]) -> str | None:
        """The row's category for the report's counts, or None when it has no usable one; never raises."""
        try:
            return self.category_of(row)
        except RowRejected:
            return None

    def answer_type_of(self, row: dict[str, Any]) -> str | None:
        """The row's own answer type, else the source's; None: infer it from the answer."""
        raw = self.value(row, "answer_type")
        if raw is None or raw == "":
            return self.answer_type
        if not isinstance(raw, str) or raw.strip() not in ANSWER_TYPES:
            shown = raw[:40] if isinstance(raw, str) else type(raw).__name__
            raise RowRejected(f"invalid_answer_type: {shown!r} is not one of {', '.join(ANSWER_TYPES)}")
        return raw.strip()

    def meta_of(self, row: dict[str, Any]) -> dict[str, Any]:
        """The row's `meta` object (a JSON object, or a string holding one); {} when absent."""
        raw = self.value(row, "meta")
        if raw is None or raw == "":
            return {}
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                raise RowRejected(f"invalid_meta: not a JSON object ({exc})") from None
        if not isinstance(raw, dict):
            raise RowRejected(f"invalid_meta: not an object (a {type(raw).__name__})")
        try:  # it is stored as JSON: it must be writable as JSON
            json.dumps(raw)
        except (ValueError, TypeError, RecursionError) as exc:
            raise RowRejected(f"invalid_meta: not storable as JSON ({type(exc).__name__}: {str(exc)[:120]})") from None
        return raw

    def choices_of(self, row: dict[str, Any]) -> list[str] | None:
        """The row's options as a list of texts (from a list, or an object keyed by letter), or None."""
        raw = self.value(row, "choices")
        options = list(raw.values()) if isinstance(raw, dict) else raw
        if isinstance(options, (list, tuple)) and any(o is not None and not is_scalar(o) for o in options):
            raise RowRejected("invalid_choices: every option must be text or a number")
        if isinstance(raw, dict):
            if not all(isinstance(k, str) for k in raw):
                raise RowRejected("invalid_choices: an object of choices must be keyed by letter")
            raw = {k: label_text(v) if v is not None else None for k, v in raw.items()}
        elif isinstance(raw, (list, tuple)):
            raw = [label_text(o) if o is not None else None for o in raw]
        try:
            return normalize_choices(raw)
        except ValueError as exc:
            raise RowRejected(f"invalid_choices: {exc}") from None
