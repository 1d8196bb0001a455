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
quarantine reason (`missing_category: ...`, `invalid_answer: ...`); which types each field takes
(a question is text only, an answer may be a number or a yes/no boolean) is `scalar_text`'s rule.
"""

from __future__ import annotations

import json
import math
from typing import Any, Literal, get_args

from pydantic import Field, field_validator

from curation.normalize import normalize_choices
from curation.schema import AnswerType, Category
from curation.strict_config import StrictConfig
from curation.suggest import closest, did_you_mean

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


def ours_lower(value: Any) -> Any:
    """One of our categories or answer types as we spell it (lower case) when given in another case
    (`Perception`, `NUMBER`); anything else unchanged, for the field's own check to refuse."""
    if isinstance(value, str) and value.strip().lower() in (*CATEGORIES, *ANSWER_TYPES):
        return value.strip().lower()
    return value


def category_names(names: Any, field: str = "") -> Any:
    """Config keys or values that name our categories (a select `mix`'s shares, the reward's caps),
    in our spelling: any case is read (`Perception`); a name that is none of ours raises ValueError
    with the closest category, after `field` where given (the part of the location below the field
    the error is reported at: a mix's pool `rl`). Anything that is not a list or dict of names is
    returned unchanged, for pydantic to refuse."""
    def one(name: Any) -> Any:
        if not isinstance(name, str):
            return name
        if name.strip().lower() in CATEGORIES:
            return name.strip().lower()
        raise ValueError(f"{field + ': ' if field else ''}unknown category {name!r}" + did_you_mean(name, CATEGORIES) + f" (one of {', '.join(CATEGORIES)})")

    if isinstance(names, dict):
        return {one(k): v for k, v in names.items()}
    if isinstance(names, (list, tuple)):
        return [one(n) for n in names]
    return names


def label_text(value: Any) -> str:
    """A scalar label as the text `category_map` keys are compared with (`true`, `3`, `color`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_scalar(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool))


# What each of our scalar fields may hold besides text (a JSON string, a string column):
# - `question` is text only: a number or a boolean there is a column mapped by mistake (an id, a
#   count, a flag), never a question a model could be asked;
# - `answer`, `id` and a category label may be numbers, read as written (`12`, `3.5`): gold
#   answers and ids are often numeric columns;
# - a boolean `answer` is a yes/no answer (`true` is `yes`, `false` is `no`; see `boolean_answer`);
#   a boolean `id` or category label is a flag column mapped by mistake (a category label that
#   `category_map` names is read: the user mapped it on purpose).
NUMBERS_READ = frozenset({"answer", "id", "category"})
BOOLEANS_READ = frozenset({"answer"})
YES_NO = {True: "yes", False: "no"}


def _not_text(value: bool | int | float, field: str, column: str, fix: str | None = None) -> RowRejected:
    kind = "a boolean" if isinstance(value, bool) else "a number"
    wanted = "text or a number" if field in NUMBERS_READ else "text"
    return RowRejected(f"invalid_{field}: `{column}` holds {kind} ({label_text(value)}), not {wanted}; "
                       f"{fix or f'check the field mapping (`fields.{field}`)'}")


def scalar_text(value: Any, field: str, column: str | None = None, fix: str | None = None) -> str | None:
    """A scalar field value as text: None for a missing or empty one; `RowRejected`
    (`invalid_<field>`, naming `column`, the source's column, default `field`) for a dict, list
    or other structure (a nested column mapped by mistake), for NaN or infinity, and for a number
    or boolean where `field` takes none (`NUMBERS_READ`, `BOOLEANS_READ`).

    Numbers read as Python prints them (`12`, `3.5`); a boolean answer as `yes` / `no`. `fix`: the
    advice the reason ends with, for a reader without a field mapping (default: map `fields.<field>`)."""
    column = column or field
    if value is None:
        return None
    if isinstance(value, bool):
        if field not in BOOLEANS_READ:
            raise _not_text(value, field, column, fix)
        return YES_NO[value]
    if isinstance(value, (int, float)):
        if field not in NUMBERS_READ:
            raise _not_text(value, field, column, fix)
        if isinstance(value, float) and not math.isfinite(value):
            raise RowRejected(f"invalid_{field}: `{column}` holds {value!r}, not a finite number")
        return str(value)
    if isinstance(value, str):
        return value if value.strip() else None
    wanted = "text or numbers" if field in NUMBERS_READ else "text"
    raise RowRejected(f"invalid_{field}: not a scalar (a {type(value).__name__}); "
                      f"{fix or f'map `fields.{field}` to a column of {wanted}'}")


def boolean_answer(value: bool, choices: list[str] | None) -> str:
    """A JSON boolean gold answer as the yes/no answer it is: among `choices`, the option that says
    it (`Yes` or `True` for true, `No` or `False` for false), else `yes` / `no`, which the judges
    read as a yes/no answer (a prediction opening with yes or no decides)."""
    words = ("yes", "true") if value else ("no", "false")
    for option in choices or []:
        if option.strip().casefold() in words:
            return option
    return YES_NO[value]


class FieldMapping(StrictConfig):
    """How to read a source's rows (see the module docstring). Config names: `fields`, `category`,
    `answer_type`, `category_map`; the CLI takes the same names (`--source jsonl:F,category=perception`)."""

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
        # Our categories are read in any case (`Perception`), as in the rows.
        return {label_text(k): ours_lower(v) for k, v in value.items()} if isinstance(value, dict) else value

    @field_validator("category", "answer_type", mode="before")
    @classmethod
    def _ours_in_any_case(cls, value: Any) -> Any:
        return ours_lower(value)

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
        if isinstance(raw, bool):  # a flag column mapped as the category, unless category_map names it
            raise RowRejected(f"invalid_category: `{self.column('category')}` holds a boolean ({label}), not a category label; "
                              f"check the field mapping (`fields.category`), or map the label with category_map")
        if label.lower() in CATEGORIES:  # ours in any case: `Perception` is perception
            return label.lower()
        if self.category is not None:
            return self.category
        close = closest(label, CATEGORIES)
        raise RowRejected(f"unknown_category: {label[:80]!r} is not one of {', '.join(CATEGORIES)}"
                          + (f" (did you mean {close[0]!r}?)" if close else "")
                          + " (map the source's labels to ours with category_map, or give the source a category for the rest)")

    def own_label(self, row: dict[str, Any]) -> str | None:
        """The row's category label when it is not one of ours (a benchmark's fine-grained label that
        was mapped or defaulted): kept in the sample's `meta.source_category`; None otherwise."""
        raw = self.value(row, "category")
        if raw is None or not is_scalar(raw):
            return None
        label = label_text(raw).strip()
        return label if label and label.lower() not in CATEGORIES else None

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
        if not isinstance(raw, str) or raw.strip().lower() not in ANSWER_TYPES:
            shown = raw[:40] if isinstance(raw, str) else type(raw).__name__
            raise RowRejected(f"invalid_answer_type: {shown!r} is not one of {', '.join(ANSWER_TYPES)}")
        return raw.strip().lower()

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
