"""Source adapters: rows from a source file turned into `Sample`s, bad rows into quarantine.

The generic JSON source (`jsonl`, or `json`): JSON Lines (one object per line) or a JSON array of
objects (pretty-printed or not; which one is found from the file), each with `question`, `answer`,
`images` (paths relative to the file, absolute paths, or base64 strings: a list, or one string for
one image, null for none), and optional `id`, `category`, `answer_type`, `choices`, `meta`. Missing
`category` / `answer_type` come from the source's defaults; `curation.mapping` says how a source's
own columns and labels map to ours, and which types each field takes. A question or gold answer
longer than `TextLimits` is quarantined (`question_too_long`, `answer_too_long`).

Nothing in a source's content stops a scan: a line that is not UTF-8, not JSON or not an object,
and a row whose fields or images cannot be used, each become a quarantined row with its reason and
its place in the file. A file that is not a table of rows at all raises `SourceError`.
"""

from __future__ import annotations

import base64
import binascii
import csv
import datetime
import functools
import glob
import io
import json
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

from curation.ast_lock import literal_eval
from curation.datasets_quiet import builder_error_lines_off, datasets_progress_bars_off, hub_retry_lines_off
from curation.hub_offline import hub_offline, hub_unreachable
from curation.mapping import CATEGORIES, FieldMapping, RowRejected, boolean_answer, label_text, lookup, scalar_text
from curation.normalize import LETTERS, clean_text, holds_number, infer_answer_type, normalize_answer
from curation.verl import VERL_CATEGORY_MAP, verl_files, verl_rows
from curation.schema import Sample
from curation.suggest import closest, did_you_mean
from curation.validation_errors import YAML_KEY, error_message, field_path, plain_errors

__all__ = ["RowRejected", "SourceError", "SourceSpec", "TableFileError", "TextLimits", "image_refs", "read_image_ref", "read_source",
           "read_table_file", "row_to_sample", "within_limit"]

PARSE_ERROR = "__parse_error__"  # the key of a row that could not be read (its value: the reason)
# Text limits (`TextLimits`): no real benchmark question or gold answer comes near them.
MAX_QUESTION_CHARS = 20_000
MAX_ANSWER_CHARS = 10_000
SOURCE_KINDS = ("jsonl", "json", "tsv", "hf", "verl")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp", ".tif", ".tiff"}


def _file_name(path: str) -> str:
    """A file's stem; for a glob, the folder it starts in (`data/rl/*.parquet` is `rl`)."""
    if glob.has_magic(path):
        plain = [part for part in Path(path).parts if not glob.has_magic(part)]
        cut = next(i for i, part in enumerate(Path(path).parts) if glob.has_magic(part))
        folder = Path(*Path(path).parts[:cut]) if cut else Path(".")
        return folder.resolve().name or (plain[-1] if plain else path)
    return Path(path).stem


@functools.cache
def packaged_builders() -> frozenset[str]:
    """The names of the builders `datasets.load_dataset` reads local files with (`parquet`, `csv`,
    `json`, `text`, `imagefolder`, `arrow`, `webdataset`, ...), as the installed `datasets` lists
    them (its `packaged_modules`; empty where `datasets` cannot be imported)."""
    try:
        from datasets.packaged_modules import _PACKAGED_DATASETS_MODULES
    except ImportError:  # no `datasets`: an hf source fails when it loads, naming the import
        return frozenset()
    return frozenset(_PACKAGED_DATASETS_MODULES)


def is_packaged_builder(path: str) -> bool:
    """Whether an `hf` source's `path` names a `datasets` builder (`parquet`) rather than a hub id
    or a local dataset folder; `datasets` imported only for a bare lower-case name."""
    return bool(re.fullmatch(r"[a-z][a-z0-9_]*", path)) and path in packaged_builders()


def misspelt_builder(path: str) -> str | None:
    """The packaged `datasets` builder that an `hf` source's `path` misspells (`cvs` is `csv`,
    `jsonn` `json`, `parket` `parquet`), or None. Only a bare name (a hub id with a `/` is
    `owner/name`) that is not a builder or a local path, and that is at most one edit
    (a letter added, dropped, changed, or two swapped; two for names of 6 letters or more) from a
    builder, as `rapidfuzz`'s optimal string alignment distance counts: a bare hub dataset (`squad`,
    `wikitext`) is further than that from every builder, so it stays a hub id."""
    from rapidfuzz.distance import OSA

    name = path.strip().lower()
    if not name or "/" in name or "\\" in name or is_packaged_builder(name) or Path(path).exists():
        return None
    near = [b for b in packaged_builders() if OSA.distance(name, b) <= (2 if min(len(name), len(b)) >= 6 else 1)]
    if not near:
        return None
    return (closest(name, near) or sorted(near, key=lambda b: (OSA.distance(name, b), b)))[0]


def unknown_kind_message(kind: Any, cli: bool = False) -> str:
    """Why a source's `kind` is refused: the closest kind, the kinds, and how files of another
    format (Parquet, CSV) are read (an `hf` source naming the `datasets` builder; `cli`: in the
    command line's form)."""
    builder = kind.strip().lower() if isinstance(kind, str) and is_packaged_builder(kind.strip().lower()) else None
    how = (f"hf:{builder or 'parquet'},data_files=PATH" if cli else f"`kind: hf, path: {builder or 'parquet'}, data_files: [FILE]`")
    files = f"{builder} is read by an hf source: {how}" if builder else f"Parquet, CSV and other files: {how}"
    return f"unknown source kind {kind!r}{did_you_mean(kind, SOURCE_KINDS)} (kinds: {', '.join(SOURCE_KINDS)}; {files})"


class SourceSpec(FieldMapping):
    """One source in the curation config: where the rows are and how their fields map to ours
    (`fields`, `category`, `answer_type`, `category_map`: see `curation.mapping.FieldMapping`).

    - `jsonl` / `json`: the generic JSON source (the module docstring); `path` is the file. Both
      read JSON Lines and JSON arrays alike.
    - `tsv`: a VLMEvalKit TSV: `index`, `image` (base64, or a JSON list of base64 strings),
      `question`, `answer`, option columns `A`, `B`, ..., optional `category`, `hint`.
    - `hf`: anything `datasets.load_dataset` opens: `path` is a hub id (where the network allows)
      or a builder name (`parquet`, `json`, `csv`, `imagefolder`) with `data_files`.
    - `verl`: verl's RL parquet layout (DeepEyesV2's released RL data; `curation.verl`): `path` is a
      parquet file, a folder of them or a glob; `data_source` is the category (`reason` read as
      `reasoning`), `reward_model.ground_truth` the answer, `extra_info.question` the question.
    """

    kind: Literal["jsonl", "json", "tsv", "hf", "verl"] = "jsonl"
    path: str
    name: str | None = None  # the `source` column; defaults to the file's stem or the dataset id
    include: dict[str, list[Any]] = Field(default_factory=dict)  # keep rows whose column has one of these values
    limit: int | None = Field(None, ge=1)  # the first N rows (after `include`)
    # `hf` only
    subset: str | None = None
    split: str = "train"
    data_files: str | list[str] | None = None

    @field_validator("kind", mode="before")
    @classmethod
    def _known_kind(cls, value: Any) -> Any:
        # pydantic's own message would list the kinds only: not the closest, nor how Parquet or CSV files are read.
        if isinstance(value, str) and value not in SOURCE_KINDS:
            raise ValueError(unknown_kind_message(value))
        return value

    @field_validator("path", mode="before")
    @classmethod
    def _path_not_empty(cls, value: Any) -> Any:
        value = str(value) if isinstance(value, Path) else value
        if isinstance(value, str) and not value.strip():
            raise ValueError("must not be empty")
        return value

    @field_validator("name")
    @classmethod
    def _name_not_empty(cls, value: str | None) -> str | None:
        """A source's (or benchmark source's) name, spaces around it trimmed (`" vstar "` is `vstar`,
        as kinds, categories and `eval.benchmarks` names are): one name, however it was quoted."""
        if value is not None and not value.strip():
            raise ValueError("must not be empty (leave it out for the file's name)")
        return value.strip() if value is not None else None

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
        """`name`, else the file's stem (a folder's name; for a glob, the folder it starts in:
        `data/rl/*.parquet` is `rl`), or for `hf` its first data file's (`hf:csv` with
        `data_files=rows.csv` is `rows`), else the dataset id."""
        if self.name:
            return self.name
        if self.kind == "hf":
            first = self.data_files[0] if isinstance(self.data_files, list) and self.data_files else self.data_files
            # a builder (`csv`, `parquet`) reading local files is named by them: two csv sources stay apart
            return _file_name(first) if isinstance(first, str) and first.strip() else self.path.replace("/", "__")
        return _file_name(self.path)

    @model_validator(mode="after")
    def _hf_options_on_hf(self) -> SourceSpec:
        # `split`, `subset` and `data_files` are `datasets.load_dataset`'s: on another kind they would be ignored. A value
        # equal to the default (`split: train`, as a dumped and re-read spec holds) changes nothing; `parse_cli` refuses any.
        given = [name for name in ("subset", "split", "data_files") if getattr(self, name) != type(self).model_fields[name].default]
        try:
            hf_only_options(self.kind, given)
        except ValueError as exc:  # told at the first option's own line (`validation_errors.YAML_KEY`)
            raise PydanticCustomError("value_error", str(exc), {YAML_KEY: given[0]}) from None
        return self

    @model_validator(mode="after")
    def _builder_name_in_any_case(self) -> SourceSpec:
        # `hf:Parquet` (or `'parquet '`) is the `parquet` builder (kinds and options are read in any case): as a hub id it would fail in
        # `datasets` with a list of every cached config. A name with a `/` (a hub id) or an existing folder stays as given.
        name = self.path.strip()
        if (self.kind == "hf" and self.path != name.lower() and re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name)
                and is_packaged_builder(name.lower()) and not Path(name).exists()):
            self.path = name.lower()
        return self

    @model_validator(mode="after")
    def _not_a_misspelt_builder(self) -> SourceSpec:
        # `hf:cvs,data_files=rows.csv` is no builder, so `datasets` would take `cvs` for a hub id and ask the Hub for it (retries,
        # or a cache miss) before failing with a message about the Hub. A bare name close to a builder is refused here, at load.
        if self.kind == "hf" and (builder := misspelt_builder(self.path)):
            raise PydanticCustomError("value_error", f"hf source path {self.path.strip()!r}: not a datasets builder; did you mean "
                                      f"{builder!r}? (a Hub dataset is owner/name)", {YAML_KEY: "path"})
        return self

    @model_validator(mode="after")
    def _builder_reads_data_files(self) -> SourceSpec:
        # A builder without `data_files` reads every file of the working directory (`datasets` resolves its default
        # patterns there): a log line and an Arrow error about some unrelated file, or rows from it. Refused before loading.
        if self.kind == "hf" and not self.data_files and is_packaged_builder(self.path.strip()):
            raise ValueError(f"data_files is needed: path {self.path.strip()!r} is a `datasets` builder, which reads the files "
                             "data_files names (a file, a glob or a list of them); without it, it would read the working directory")
        return self

    @model_validator(mode="after")
    def _builder_has_no_subset(self) -> SourceSpec:
        # `datasets` takes a builder's `name` (our `subset`) as a label of its cache and reads the same files: ignored.
        if self.kind == "hf" and self.subset is not None and is_packaged_builder(self.path.strip()):
            raise ValueError(f"subset: path {self.path.strip()!r} is a `datasets` builder, which has no subsets (it reads the files "
                             "data_files names; a subset is a hub dataset's); remove it")
        return self

    @model_validator(mode="after")
    def _builder_split_is_known(self) -> SourceSpec:
        # A builder's splits are its `data_files`' (`datasets.data_files.sanitize_patterns`): a file, a glob or a list of them is
        # the one split `train` (a mapping, whose keys are the splits, is not a form we take). A misspelt `split: tset` would
        # pass the dry run and fail only during the scan; refused here, at the `split:` line.
        if self.kind == "hf" and self.data_files and is_packaged_builder(self.path.strip()):
            known = builder_splits(self.data_files)
            unknown = [name for name in split_names(self.split) if name not in known]
            if unknown and self.split.strip() != "all":
                raise PydanticCustomError("value_error", unknown_split_message(unknown[0], known, self.path.strip()),
                                          {YAML_KEY: "split"})
        return self

    @model_validator(mode="after")
    def _verl_labels(self) -> SourceSpec:
        # verl's `reason` data source is our `reasoning`; a source's own category_map wins.
        if self.kind == "verl":
            self.category_map = {**VERL_CATEGORY_MAP, **self.category_map}
        return self

    def _unmatched_data_files(self) -> list[str]:
        """The local `data_files` patterns of an `hf` builder source (`parquet`, `csv`: relative to
        the working directory, as `datasets` reads them) that match no file; a hub dataset's
        `data_files` are the repository's, and URLs are not looked at."""
        if self.kind != "hf" or not is_packaged_builder(self.path.strip()):
            return []
        patterns = [self.data_files] if isinstance(self.data_files, str) else list(self.data_files or [])
        return [p for p in patterns if "://" not in p and not any(Path(f).is_file() for f in glob.iglob(p, recursive=True))]

    def exists(self) -> bool:
        """Whether the file(s) the spec names are there: the file, a `verl` source's parquet files, an
        `hf` builder source's `data_files` (each pattern matching a file); a hub dataset is checked when it
        loads."""
        if self.kind == "hf":
            return not self._unmatched_data_files()
        return bool(verl_files(self.path)) if self.kind == "verl" else self.file.is_file()

    def missing(self) -> str:
        """Why `exists()` is false, with what was looked for: `file not found: PATH`, what is there
        instead (a folder where a file is needed, a folder without parquet files for `verl`), or for an
        `hf` source `data_files: no file matches PATTERN`: an error naming the spec's `path` says
        `path: ` before it only where the kind is not `hf`."""
        if self.kind == "hf":
            return f"data_files: no file matches {', '.join(self._unmatched_data_files())}"
        if self.kind == "verl":
            return f"{'no parquet files in this folder' if Path(self.path).is_dir() else 'file not found'}: {self.path}"
        if self.file.is_dir():
            return f"is a folder; a {self.kind} source is one file (a folder of parquet files is kind verl): {self.path}"
        return f"file not found: {self.path}"

    def local_files(self) -> list[Path]:
        """The local files the spec itself names (its file, a `verl` source's parquet files, or an
        `hf` source's data files with their globs expanded): what a cache key must cover besides the
        files the rows point to."""
        if self.kind == "verl":
            return verl_files(self.path)
        if self.kind != "hf":
            return [self.file]
        patterns = [self.data_files] if isinstance(self.data_files, str) else list(self.data_files or [])
        found: set[Path] = set()
        for pattern in patterns:
            if "://" in pattern:
                continue  # remote files are outside what a local fingerprint can see
            found.update(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
        return sorted(found)

    # The per-source options `parse_cli` takes: fields of the spec, and `fields.`, `category_map.`
    # and `include.` entries (an include value lists alternatives with `|`).
    CLI_OPTIONS: ClassVar[tuple[str, ...]] = ("name", "category", "answer_type", "limit", "subset", "split", "data_files")
    CLI_PREFIXES: ClassVar[tuple[str, ...]] = ("fields.", "category_map.", "include.")

    @classmethod
    def parse_cli(cls, text: str, defaults: list[tuple[str, str]] = (), option: str = "--source") -> SourceSpec:
        """A source from the command line: `KIND:PATH` (jsonl:data/x.jsonl, json:x.json,
        tsv:V_star.tsv, hf:org/dataset) or a bare JSON path, then optional `,NAME=VALUE` options
        with the config's names: `category=perception`, `answer_type=number`, `name=mine`,
        `limit=100`, `fields.answer=label`, `category_map.color=perception`,
        `include.split=test|val`, and for `hf` `subset=`, `split=`, `data_files=`. Kinds and option
        names are read in any case, spaces around names and values trimmed; an `include` value is
        read as the config's YAML reads it (`true`, `2`, `2.5` are a boolean and numbers, the rest
        text). `defaults` are options in the same form (the CLI's `--category` and friends) that the
        text's own override.

        Raises `SourceError` naming the option for an unknown or malformed option (no value, nothing
        after `fields.`), an `hf` option on another kind, or a value the config would refuse (quoted
        as received): `option` (`--source`, `--benchmark`: the one the user typed) with the text, or
        for a value from `defaults` its own flag (`--category`)."""
        head, options = _split_cli_options(text)
        kind, sep, path = head.partition(":")
        kind = kind.strip().lower()
        if sep and (not kind or not path.strip()) and not Path(head).exists():  # `:`, `:x.jsonl`, `jsonl:`: a part of KIND:PATH is empty
            empty = " and ".join(part for part, value in (("kind", kind), ("path", path.strip())) if not value)
            raise SourceError(f"{option} {text!r}: the {empty} of KIND:PATH {'are' if ' and ' in empty else 'is'} empty (e.g. "
                              f"jsonl:data/a.jsonl; kinds: {', '.join(SOURCE_KINDS)})")
        if sep and kind not in SOURCE_KINDS and re.fullmatch(r"[a-z][a-z0-9_]+", kind) and not Path(head).exists():
            raise SourceError(f"{option} {text!r}: {unknown_kind_message(kind, cli=True)}")
        values: dict[str, Any] = {"kind": kind, "path": path} if sep and kind in SOURCE_KINDS else {"path": head}
        if options and not Path(values["path"]).exists():
            values["path"] = values["path"].strip()  # `x.jsonl , limit=3`
        if not Path(values["path"]).exists() and (bare := re.search(r",\s*([A-Za-z_-]+(?:\.[^,=]*)?)\s*$", values["path"])):
            name = bare.group(1).partition(".")[0].lower()  # `x.jsonl,category`: an option without its value
            if name in cls.CLI_OPTIONS or f"{name}." in cls.CLI_PREFIXES:
                raise SourceError(f"{option} {text!r}: option {bare.group(1)!r} has no value (give NAME=VALUE, e.g. "
                                  f"{_CLI_EXAMPLES.get(name, name + '=VALUE')})")
        for key, value in [*defaults, *options]:
            if key in cls.CLI_OPTIONS:
                values[key] = value
            elif key in cls.CLI_PREFIXES:  # `category_map.=x`: the label is missing
                group = key.rstrip(".")
                raise SourceError(f"{option} {text!r}: option {key!r} names nothing after the dot (e.g. {_CLI_EXAMPLES[group]})")
            elif key.startswith(cls.CLI_PREFIXES):
                group, entry = key.split(".", 1)
                entry = entry.lower() if group == "fields" else entry  # our field names (`Fields.Answer=label`); columns and labels as written
                values.setdefault(group, {})[entry] = [_cli_scalar(v) for v in value.split("|")] if group == "include" else value
            else:
                allowed = ", ".join([*cls.CLI_OPTIONS, *(p + "X" for p in cls.CLI_PREFIXES)])
                entry = key.partition(".")[2]  # `fieds.answer`: did you mean 'fields.answer'?
                names = [*cls.CLI_OPTIONS, *(p + entry for p in cls.CLI_PREFIXES if entry)]
                raise SourceError(f"{option} {text!r}: unknown option {key!r}{did_you_mean(key, names)} (options: {allowed})")
        try:
            hf_only_options(values.get("kind", "jsonl"), [name for name in ("subset", "split", "data_files") if name in values])
        except ValueError as exc:
            raise SourceError(f"{option} {text!r}: {exc}") from None
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            # A value that is none of an option's choices (category, answer_type, a category_map label's) says the closest, as in a
            # config, then the value as received (`'search,'`: a trailing comma). A value from `defaults` the text does not override
            # is named by its flag: `--category 'perceptoin': ...`.
            given, own = dict(defaults), {key for key, _ in options}
            flags = {"category": "--category", "answer_type": "--answer-type", "fields": "--fields", "category_map": "--category-map"}
            problems = []
            for e in plain_errors(exc.errors(), cls):
                loc = tuple(map(str, e["loc"]))
                message = error_message(e)
                if not loc:  # a check of the whole source
                    problems.append(f"{option} {text!r}: {message}")
                    continue
                # the value as received, unless the message says it (or it is a mapping's key, named in the path)
                got = f" (got {e['input']!r})" if isinstance(e.get("input"), str) and "(got " not in message and loc[-1] != "[key]" else ""
                key = ".".join(loc[:2]) if loc[:1] in (("fields",), ("category_map",)) else ".".join(loc[:1])
                if key in given and key not in own:
                    flag = flags[loc[0]]
                    problems.append(f"{flag} {given[key]!r}: {message}" if "." not in key else
                                    f"{flag} '{key.partition('.')[2]}={given[key]}': {field_path(loc)}: {message}")
                else:
                    problems.append(f"{option} {text!r}: {field_path(loc)}: {message}{got}")
            raise SourceError("; ".join(problems)) from None


def hf_only_options(kind: str, given: list[str]) -> None:
    """`ValueError` when `given` (of `subset`, `split`, `data_files`) is not empty and `kind` is not
    `hf`: those options are `datasets.load_dataset`'s, and another kind would ignore them."""
    if kind != "hf" and given:
        many = len(given) > 1
        where = " (a verl source reads every parquet file its path names)" if kind == "verl" else " (one file: its path)"
        raise ValueError(f"{', '.join(given)}: {'options' if many else 'an option'} of `hf` sources only, and this source is kind "
                         f"{kind}{where}; remove {'them' if many else 'it'}")


def builder_splits(data_files: str | list[str] | dict[str, Any]) -> list[str]:
    """The splits a `datasets` builder (`csv`, `parquet`, ...) reading `data_files` has, by
    `datasets.load_dataset`'s rule (`datasets.data_files.sanitize_patterns`): a file, a glob or a
    list of them is the one split `train`; a mapping's keys are its splits."""
    return [str(key) for key in data_files] if isinstance(data_files, dict) else ["train"]


def split_names(split: str) -> list[str]:
    """The split names in a `datasets` split expression: `train` for `train`, `train[:10%]`, and
    `train[:50](closest)`; `train`, `test` for `train+test[5:]` (`datasets.ReadInstruction.from_spec`'s
    form)."""
    return [re.split(r"[\[(]", part, maxsplit=1)[0].strip() for part in re.split(r"\s*\+\s*", split.strip()) if part.strip()]


def unknown_split_message(name: str, known: list[str], dataset: str) -> str:
    """Why split `name` is not one of `known`, the splits of `dataset` (a `datasets` builder or a
    hub id), with the closest (`curation.suggest`): `split: no split 'tset'; `datasets` builder
    'csv' reads data_files (a file, a glob or a list of them) as the one split 'train'; leave split
    out`, or `split: no split 'tset' in dataset 'org/x' (its splits: train, test); did you mean 'test'?`."""
    if is_packaged_builder(dataset) and known == ["train"]:
        hint = did_you_mean(name, known) or "; leave split out"
        return (f"split: no split {name!r}; `datasets` builder {dataset!r} reads data_files (a file, a glob or a list of them) "
                f"as the one split 'train'{hint}")
    return f"split: no split {name!r} in dataset {dataset!r} (its splits: {', '.join(known)}){did_you_mean(name, known)}"


SOURCE_NAMES_WHY = "the report counts rows per source name; give each its own `name`"


def same_name_message(specs: list[SourceSpec] | list[str], labels: list[str], why: str = SOURCE_NAMES_WHY) -> str | None:
    """The first two of `specs` with one name, as `LABEL and LABEL are both named 'NAME' ...: WHY`,
    with `labels[i]` naming `specs[i]` (a config entry, the option typed); None when every name is
    its own. A `SourceSpec`'s name is its `source_name` (given with `name`, or taken from its
    files: told "(after their files)"); a text is the name itself (an eval benchmark's resolved
    name). `why`: what the name keys, so that two of one name would be merged (the report counts
    rows, drops and contamination per source name)."""
    first: dict[str, int] = {}
    for i, spec in enumerate(specs):
        name = spec if isinstance(spec, str) else spec.source_name
        if name in first:
            j = first[name]
            given = [s if isinstance(s, str) else s.name for s in (specs[i], specs[j])]
            after = "" if all(given) else " (after their files)"
            return f"{labels[j]} and {labels[i]} are both named {name!r}{after}: {why}"
        first[name] = i
    return None


# How each command-line option is written, for an error about its form.
_CLI_EXAMPLES = {"name": "name=mine", "category": "category=perception", "answer_type": "answer_type=number", "limit": "limit=100",
                 "subset": "subset=NAME", "split": "split=test", "data_files": "data_files=PATH", "fields": "fields.answer=COLUMN",
                 "category_map": "category_map.LABEL=perception", "include": "include.COLUMN=VALUE|VALUE"}


def _cli_scalar(text: str) -> Any:
    """A command-line `include` value as the config's YAML reads it: `true`/`false` a boolean,
    `2` and `2.5` numbers, `null` None; anything else (dates too) stays the text."""
    import yaml

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if isinstance(value, (bool, int, float)) or (value is None and text.strip() in ("null", "Null", "NULL", "~")):
        return value
    return text


def cli_source_defaults(category: str | None, answer_type: str | None, fields: list[str], category_map: list[str]) -> list[tuple[str, str]]:
    """The CLI's `--category`, `--answer-type`, `--fields OURS=THEIRS` and `--category-map
    LABEL=OURS` as `parse_cli` options. Raises `SourceError` for an entry without `=`."""
    options = [(key, value) for key, value in (("category", category), ("answer_type", answer_type)) if value is not None]
    for flag, group, entries in (("--fields", "fields", fields), ("--category-map", "category_map", category_map)):
        for entry in entries:
            key, sep, value = entry.partition("=")
            if not sep or not key.strip():
                raise SourceError(f"{flag} {entry!r}: expected NAME=VALUE, e.g. {'answer=label' if group == 'fields' else 'color=perception'}")
            options.append((f"{group}.{key.strip()}", value.strip()))
    return options


# `,name=` or `,group.entry=` in any case, spaces around them allowed: a misspelt group (`fieds.answer=`), a
# dash (`answer-type=`) or nothing after the dot (`category_map.=`) is an option too, refused by name.
_CLI_OPTION = re.compile(r",\s*(?=[A-Za-z_-]+(?:\.[^,=]*)?\s*=)")


def _split_cli_options(text: str) -> tuple[str, list[tuple[str, str]]]:
    """`KIND:PATH,a=1,b.c=2` -> (`KIND:PATH`, [(a, 1), (b.c, 2)]), option names (not what follows
    their dot: columns and labels) lower-cased and names and values trimmed; a path that exists as
    written (commas and all) has no options."""
    kind, sep, rest = text.partition(":")
    bare = rest if sep and kind.strip().lower() in SOURCE_KINDS else text
    if Path(bare).exists():
        return text, []
    head, *parts = _CLI_OPTION.split(text)
    options = []
    for part in parts:
        key, _, value = part.partition("=")
        name, dot, entry = key.strip().partition(".")
        options.append((name.lower() + dot + entry.strip(), value.strip()))
    return head, options


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
        encoding = wide_encoding(path)
        if encoding:
            raise TableFileError(f"{what} {path} is {encoding} text: save it as UTF-8")
        located = []
        with open(path, "rb") as handle:
            for line_no, raw in enumerate(handle, 1):
                if not raw.strip():
                    continue
                try:
                    located.append((f"line {line_no}", json.loads(raw.decode("utf-8-sig" if line_no == 1 else "utf-8"))))
                except UnicodeDecodeError as exc:
                    raise TableFileError(f"{path}:{line_no}: not UTF-8 ({exc.reason} at byte {exc.start})") from exc
                except (json.JSONDecodeError, RecursionError) as exc:
                    raise TableFileError(f"{path}:{line_no}: invalid JSON ({getattr(exc, 'msg', 'nested too deeply')})") from exc
    for where, row in located:
        if not isinstance(row, dict):
            raise TableFileError(f"{path}, {where}: expected a JSON object")
        empty = sorted(f for f in required if row.get(f) in (None, ""))
        if empty:
            raise TableFileError(f"{path}, {where}: missing or empty field(s) {empty}")
    return [row for _, row in located]


def _exists(ref: str, base_dir: Path) -> bool:
    try:
        return (Path(ref) if Path(ref).is_absolute() else base_dir / ref).exists()
    except (OSError, ValueError):
        return False


_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")  # http://, https://, s3://, gs://, ... (a data: URL is base64, read)


def _read_image(ref: Any, base_dir: Path, files: set[str] | None = None) -> tuple[bytes, str | None]:
    """An image given as a path, base64 (or a data URL), raw bytes, a `{bytes, path}` dict or a PIL
    image. A file it reads (or looks for and misses) is added to `files`."""
    if isinstance(ref, dict):  # `{bytes, path}`, as `datasets` stores images
        data, path = ref.get("bytes"), ref.get("path")
        if data:
            if not isinstance(data, (bytes, bytearray)):
                raise RowRejected(f"image_ref_invalid: `bytes` holds a {type(data).__name__}, not bytes")
            return bytes(data), path if isinstance(path, str) else None
        if isinstance(path, str) and path and "\0" not in path:  # a file, whatever its suffix
            return _read_file(path, base_dir, files, ref.get("also_looked_in") or [])
        raise RowRejected("image_ref_invalid: an image object with neither bytes nor a path")
    if isinstance(ref, (bytes, bytearray)):
        return bytes(ref), None
    if hasattr(ref, "save") and hasattr(ref, "size"):  # a PIL image, as `datasets` decodes them
        problem = ""
        for fmt in ("PNG", "TIFF"):  # TIFF holds the modes PNG cannot (CMYK, LAB, F, ...)
            out = io.BytesIO()
            try:
                ref.save(out, format=fmt)
            except Exception as exc:  # a mode neither holds, a broken lazy decode
                problem = f"{type(exc).__name__}: {exc}"
                continue
            return out.getvalue(), getattr(ref, "filename", None) or None
        raise RowRejected(f"image_undecodable: {problem}")
    if not isinstance(ref, str) or not ref:
        what = ("null" if ref is None else "empty" if ref == "" else f"a boolean ({label_text(ref)})" if isinstance(ref, bool)
                else f"a number ({ref})" if isinstance(ref, (int, float)) else f"a {type(ref).__name__}")
        raise RowRejected(f"image_ref_invalid: an image reference is {what}, not a path, base64 string or data URL")
    if _URL.match(ref):
        raise RowRejected(f"image_url: {ref[:200]}: URLs are not fetched; download the images and give local paths "
                          "(or base64, or bytes)")
    if len(ref) < 4096 and "\0" not in ref and (Path(ref).suffix.lower() in IMAGE_SUFFIXES or _exists(ref, base_dir)):
        return _read_file(ref, base_dir, files)  # a file (or a folder, named as one) without an image suffix too
    try:
        return base64.b64decode(ref.split(",", 1)[-1], validate=True), None
    except (binascii.Error, ValueError):
        shown = ref if len(ref) <= 80 else f"{ref[:60]}... ({len(ref)} characters)"
        kind = "a data URL whose data is not base64" if ref.startswith("data:") else "neither an image file nor base64"
        raise RowRejected(f"image_ref_invalid: {shown!r} is {kind}") from None


def read_image_ref(ref: Any, base_dir: Path, files: set[str] | None = None) -> tuple[bytes, str | None]:
    """(bytes, path) of an image given as a path (relative to `base_dir`), base64 or a data URL,
    raw bytes, a `{bytes, path}` dict or a PIL image, as every source reads them. Raises
    `RowRejected` (`image_missing`, `image_unreadable`, `image_ref_invalid`, `image_undecodable`)."""
    return _read_image(ref, base_dir, files)


def _read_file(ref: str, base_dir: Path, files: set[str] | None, also: list[str] = ()) -> tuple[bytes, str]:  # type: ignore[assignment]
    """An image file's bytes (a relative path starts at `base_dir`); the path goes into `files`.
    `also`: other places the file was looked for (named when it is missing, and stamped too)."""
    candidate = Path(ref) if Path(ref).is_absolute() else base_dir / ref
    others = [str(Path(a) if Path(a).is_absolute() else base_dir / a) for a in also]
    if files is not None:
        files.update([str(candidate), *others])
    try:
        return candidate.read_bytes(), str(candidate)
    except FileNotFoundError:
        raise RowRejected(f"image_missing: {candidate}" + (f" (nor {', '.join(others)})" if others else "")) from None
    except (OSError, ValueError) as exc:  # a directory, no permission, a name too long or not encodable
        raise RowRejected(f"image_unreadable: {candidate}: {getattr(exc, 'strerror', None) or exc}") from None


@dataclass(frozen=True)
class TextLimits:
    """The longest question and gold answer a sample may have, in characters after cleaning
    (`curate.max_question_chars`, `curate.max_answer_chars`). Long benchmark questions (MMMU's,
    MathVista's with their context) run to a few thousand characters and gold answers to a few
    hundred (a worked solution mapped as the answer to a few thousand): a text past these limits is
    a column mapped by mistake (a document, a whole transcript) and would overflow any model's
    context window later."""

    max_question_chars: int = MAX_QUESTION_CHARS
    max_answer_chars: int = MAX_ANSWER_CHARS


def _text(value: Any, field: str, required: bool, column: str | None = None) -> str | None:
    """A text field, cleaned; `RowRejected` (`missing_<field>`, `invalid_<field>`, naming `column`,
    the source's column) when unusable."""
    text = scalar_text(value, field, column)
    text = clean_text(text) if text is not None else None
    if not text:
        if required:
            raise RowRejected(f"missing_{field}: the row has no `{column or field}` (or it is empty)")
        return None
    return text


def within_limit(text: str, field: str, column: str, limit: int, setting: str | None = None) -> str:
    """`text`, or `RowRejected` (`<field>_too_long`, naming `column` and the `setting` that sets
    `limit`, `curate.max_<field>_chars` by default) when it has more than `limit` characters."""
    if len(text) > limit:
        raise RowRejected(f"{field}_too_long: `{column}` has {len(text)} characters > {limit} ({setting or f'curate.max_{field}_chars'})")
    return text


def image_refs(value: Any) -> list[Any]:
    """A row's `images` value as a list of references: a list as it is, one reference (a path, a
    base64 string, a dict) as a list of one, null or "" as none."""
    if value is None or (isinstance(value, str) and not value):
        return []
    return value if isinstance(value, list) else [value]


# Column names that hold images in other layouts (Hugging Face datasets' and VLMEvalKit's `image`, `image_path`,
# MathVista's `decoded_image`, LLaVA's `image`, ...), in any case, and numbered ones (MMMU's `image_1`): a source whose
# images are read from another column (`images`, or its `fields.images`) would lose them without a word, so the scan
# warns of one (`unread_image_warning`) and `missing_image` names it. Not read as images unasked: our field is `images`,
# and a column read by its name alone would change what an existing source curates (rows kept without images today
# quarantined for a broken one) and choose among several (`image`, `image_path`, `image_1`) by guess.
IMAGE_COLUMN_NAMES = frozenset({
    "image", "images", "img", "imgs", "image_path", "image_paths", "img_path", "image_file", "image_files", "image_url",
    "image_urls", "img_url", "image_bytes", "image_base64", "decoded_image", "picture", "pictures", "photo", "photos",
})
_NUMBERED_IMAGE_COLUMN = re.compile(r"(?:image|img|picture|photo)s?[_ -]?\d+")


def looks_like_image_column(name: Any) -> bool:
    """Whether a column's name says it holds images (`IMAGE_COLUMN_NAMES`, `image_1`; in any case)."""
    if not isinstance(name, str):
        return False
    name = name.strip().lower()
    return name in IMAGE_COLUMN_NAMES or bool(_NUMBERED_IMAGE_COLUMN.fullmatch(name))


def _holds_something(value: Any) -> bool:
    """Whether a value is more than nothing: not null, an empty text (or a TSV's `nan`), an empty list or
    an image dict whose `bytes` and `path` are both empty."""
    if value is None:
        return False
    if isinstance(value, str):
        return value.strip() not in ("", "nan")
    if isinstance(value, (bytes, bytearray)):
        return bool(value)
    if isinstance(value, (list, tuple)):
        return any(_holds_something(v) for v in value)
    if isinstance(value, dict):
        return any(_holds_something(v) for v in value.values())
    return True


def images_read_from(spec: SourceSpec) -> str:
    """The column a source's images are read from, quoted as a message names it: its `fields.images`,
    else `images` (a TSV's `image`, or `image_path` without one)."""
    if spec.kind == "tsv" and not spec.fields.get("images"):
        return "`image` (or `image_path`)"
    return f"`{spec.column('images')}`"


def unread_image_columns(spec: SourceSpec, row: dict[str, Any]) -> list[str]:
    """The row's columns whose names say images (`looks_like_image_column`) that hold something and
    that the source reads nothing from (neither its images' column nor another field's mapping):
    images the source would go on without. None for a conversation row (`sharegpt_row`), whose fix is
    `deepeyes import sharegpt`, not a mapping."""
    if "question" not in spec.fields and spec.value(row, "question") is None and any(
            isinstance(row.get(c), list) for c in ("messages", "conversations")):
        return []
    read = {column.split(".", 1)[0] for column in (spec.column("images"), *spec.fields.values())}
    if spec.kind == "tsv":  # the reader's own: `images` is what it made of `image` (or `image_path`)
        read |= {"images", "image_path"} | (set() if spec.fields.get("images") else {"image"})
    return [column for column, value in row.items()
            if column not in read and column != PARSE_ERROR and looks_like_image_column(column) and _holds_something(value)]


def image_column_fix(columns: list[str]) -> str:
    """How to read the first of `columns` as the images, in the config's and the command line's words."""
    return f"map it with `fields: {{images: {columns[0]}}}` (on the command line `fields.images={columns[0]}`)"


def unread_image_warning(source: str, read_from: str, columns: dict[str, int]) -> str:
    """The curate report's warning for a source with image columns it does not read (`columns`: each
    with the rows holding something in it)."""
    named = ", ".join(f"`{column}` ({n} row{'s' if n != 1 else ''})" for column, n in columns.items())
    one = len(columns) == 1
    return (f"source {source!r}: column{'' if one else 's'} {named} look{'s' if one else ''} like images but "
            f"{'is' if one else 'are'} not read (its images are read from {read_from}), so those rows were read "
            f"without them (as text-only; a perception row is quarantined as missing_image); {image_column_fix(list(columns))}")


def row_to_sample(row: dict[str, Any], spec: SourceSpec, base_dir: Path, files: set[str] | None = None,
                  limits: TextLimits = TextLimits()) -> Sample:
    """A source row (in the source's own field names, mapped by `spec`) as a normalized `Sample`.

    Raises `RowRejected` with the quarantine reason (a question or answer longer than `limits`
    too). Image files the row points to are added to `files` (for the cache key), whether they
    exist or not."""
    refs = []
    for ref in image_refs(spec.value(row, "images")):
        data, path = _read_image(ref, base_dir, files)
        refs.append({"bytes": data, "path": path})
    if spec.value(row, "question") is None and "question" not in spec.fields:
        conversation = next((c for c in ("messages", "conversations") if isinstance(row.get(c), list)), None)
        if conversation is not None:
            raise RowRejected(f"sharegpt_row: the row is a conversation (`{conversation}`), not a question")
    question = _text(spec.value(row, "question"), "question", required=True, column=spec.column("question"))
    question = within_limit(question, "question", spec.column("question"), limits.max_question_chars)
    raw_answer = spec.value(row, "answer")
    answer = _text(raw_answer, "answer", required=True, column=spec.column("answer"))
    answer = within_limit(answer, "answer", spec.column("answer"), limits.max_answer_chars)
    choices = spec.choices_of(row)
    if isinstance(raw_answer, bool):  # a yes/no answer: among options, the one that says it
        answer = boolean_answer(raw_answer, choices)
    answer_type = spec.answer_type_of(row) or infer_answer_type(answer, choices)
    if answer_type == "choice" and not choices:
        raise RowRejected(f"missing_choices: answer_type is choice but the row has no `{spec.column('choices')}` (or they are empty)")
    if answer_type == "number" and not holds_number(answer):
        raise RowRejected(f"invalid_answer: answer_type is number but the answer {answer[:40]!r} holds no number")
    if answer_type in ("choice", "number"):
        try:
            answer = normalize_answer(answer, answer_type, choices)
        except ValueError as exc:
            raise RowRejected(f"invalid_answer: {exc}") from None
    raw_id = spec.value(row, "id")
    sample_id = scalar_text(raw_id, "id", spec.column("id")) if raw_id != "" else None
    fields = {
        "id": (sample_id or "").strip(),
        "source": spec.source_name,
        "category": spec.category_of(row),
        "question": question,
        "images": refs,
        "answer": answer,
        "answer_type": answer_type,
        "choices": choices,
        "meta": spec.meta_of(row),
    }
    if fields["category"] == "perception" and not refs:  # perception is about an image: one without is no sample
        unread = unread_image_columns(spec, row)
        has = (f"; the row's column{'s' if len(unread) > 1 else ''} {', '.join(f'`{c}`' for c in unread)} "
               f"{'look' if len(unread) > 1 else 'looks'} like images but {'are' if len(unread) > 1 else 'is'} not read: "
               f"{image_column_fix(unread)}") if unread else ""
        raise RowRejected(f"missing_image: a perception sample needs an image, and {images_read_from(spec)} holds none{has}")
    label = spec.own_label(row)
    if label is not None:
        fields["meta"] = {**fields["meta"], "source_category": label}
    try:
        return Sample.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(f"{field_path(e['loc'])}: {error_message(e)}" for e in plain_errors(exc.errors(), Sample))
        raise RowRejected(f"invalid_row: {problems}") from None


class SourceError(ValueError):
    """A source that cannot be read as rows at all (missing file, unknown dataset, a file that is
    not a table), or whose rows are all unusable; the message names the source and the fix.
    `looks_like` (`Parquet`, `TSV`, `CSV`): what a file that is not JSON seems to be, where the
    message ends in the sample-source setting that reads it; `problem`: the message without that
    advice, for a reader with other settings (long-CoT mixing)."""

    def __init__(self, problem: str, looks_like: str | None = None, advice: str = "", setting: tuple[str, ...] = ()) -> None:
        super().__init__(problem + advice)
        self.problem, self.looks_like = problem, looks_like
        self.setting = setting  # the source's setting it is about (`("fields", "answer")`), for a config's line of it


def _parse_error(reason: str, excerpt: str | bytes | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {PARSE_ERROR: reason}
    if excerpt is not None:
        row["line"] = excerpt[:200].decode("utf-8", "replace") if isinstance(excerpt, bytes) else excerpt[:200]
    return row


def _has_undecodable(value: Any) -> bool:
    """Whether a value holds a string that cannot be written as UTF-8: bytes that were not UTF-8
    (read with `surrogateescape`), or a lone surrogate from a JSON escape."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_undecodable(k) or _has_undecodable(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_undecodable(v) for v in value)
    return False


_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32"), (b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16"))


def wide_encoding(path: Path) -> str | None:
    """`UTF-16` or `UTF-32` for a text file saved in one of them (by its byte-order mark, as
    Windows tools write it; or ASCII text with a NUL byte beside each character), else None. Files we read as text
    must be UTF-8: the caller's error says so."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(64)
    except OSError:
        return None
    for bom, name in _WIDE_BOMS:
        if head.startswith(bom):
            return name
    head = head[:len(head) // 2 * 2]
    for zeros, text in ((head[1::2], head[0::2]), (head[0::2], head[1::2])):  # ASCII text in UTF-16 LE or BE, no mark
        if len(head) >= 8 and not any(zeros) and all(32 <= b < 127 or b in b"\t\r\n" for b in text):
            return "UTF-16"
    return None


def _file_kind_hint(path: Path) -> tuple[str | None, str]:
    """What a file that is not JSON looks like (`Parquet`, `TSV`, `CSV`, or None), and the error
    message's hint: the sample-source setting that reads it, or that it is not text."""
    with open(path, "rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PAR1"):
        return "Parquet", " (it looks like Parquet: use `kind: hf, path: parquet, data_files: [FILE]`)"
    try:
        head.decode("utf-8")
        binary = b"\x00" in head
    except UnicodeDecodeError as exc:
        binary = exc.start < len(head) - 3  # not a character cut at the end of the sample
    if binary:
        return None, " (it is not text: a binary file?)"
    first = head.splitlines()[0] if head.strip() else b""
    if b"\t" in first:
        return "TSV", " (it looks like TSV: use `kind: tsv`)"
    if b"," in first and not first.lstrip().startswith((b"{", b"[")):
        return "CSV", " (it looks like CSV: use `kind: hf, path: csv, data_files: [FILE]`)"
    return None, ""


def _json_document(path: Path) -> Any:
    """The whole file as one JSON value (bytes that are not UTF-8 kept as surrogates, so one bad
    string spoils its row, not the file); raises ValueError when it is not one."""
    text = path.read_bytes().decode("utf-8", errors="surrogateescape").removeprefix("\ufeff")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply") from None


def _json_rows(spec: SourceSpec) -> Iterator[tuple[dict[str, Any], str]]:
    """JSON Lines, or a JSON array of objects: a file that starts with `[` (or a `{` whose first
    line is not a whole object) is tried as one JSON document first."""
    path = spec.file
    first_line = b""
    with open(path, "rb") as handle:
        for raw in handle:
            if raw.strip():
                first_line = raw.lstrip(b"\xef\xbb\xbf \t\r")
                break
    start = first_line.lstrip()
    document = None
    document_error = None
    if start[:1] == b"[" or (start[:1] == b"{" and not _is_json(start)):
        try:
            document = _json_document(path)
        except ValueError as exc:
            document = None  # not one document: read it as lines (a broken first line is quarantined)
            document_error = exc
    if isinstance(document, dict):
        raise SourceError(f"source {spec.source_name!r}: {path} holds one JSON object, not rows: "
                          "give a JSON array of objects or JSON Lines (one object per line)")
    if isinstance(document, list):
        for index, row in enumerate(document):
            origin = f"{path}[{index}]"
            if not isinstance(row, dict):
                yield _parse_error(f"invalid_json: item {index} of the array is a {type(row).__name__}, not an object"), origin
                continue
            try:
                undecodable = _has_undecodable(row)
            except RecursionError:
                yield _parse_error(f"invalid_json: item {index}: nested too deeply"), origin
                continue
            if undecodable:
                yield _parse_error(f"invalid_encoding: item {index}: a string is not UTF-8 or not valid Unicode"), origin
            else:
                yield row, origin
        return
    try:
        yield from _json_lines(spec)
    except SourceError:
        if not isinstance(document_error, json.JSONDecodeError):
            raise
        # Neither lines nor one document: where the document broke is what to fix.
        raise SourceError(f"source {spec.source_name!r}: {path} is not valid JSON: {_json_error_text(document_error)}") from None


def _json_error_text(exc: json.JSONDecodeError) -> str:
    """`Expecting value at line 12 column 3`, with the likely cause when it is a trailing comma."""
    before = exc.doc[:exc.pos].rstrip()
    comma = " (a trailing comma before it?)" if before.endswith(",") and exc.doc[exc.pos:exc.pos + 1] in ("]", "}") else ""
    at = "" if exc.msg.endswith(" at") else " at"  # `Unterminated string starting at` says it already
    return f"{exc.msg}{at} line {exc.lineno} column {exc.colno}{comma}"


def _is_json(text: bytes) -> bool:
    try:
        json.loads(text)
    except (ValueError, RecursionError):
        return False
    return True


def _json_lines(spec: SourceSpec) -> Iterator[tuple[dict[str, Any], str]]:
    path = spec.file
    objects = lines = 0
    first = b""
    with open(path, "rb") as handle:
        for line_no, raw in enumerate(handle, start=1):
            if line_no == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if not raw.strip():
                continue
            lines += 1
            first = first or raw
            origin = f"{path}:{line_no}"
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield _parse_error(f"invalid_encoding: line {line_no}: not UTF-8 ({exc.reason} at byte {exc.start})", raw), origin
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                yield _parse_error(f"invalid_json: line {line_no}: {exc.msg}", line), origin
                continue
            except RecursionError:
                yield _parse_error(f"invalid_json: line {line_no}: nested too deeply", line), origin
                continue
            if not isinstance(row, dict):
                yield _parse_error(f"invalid_json: line {line_no}: a line must hold a JSON object", line), origin
                continue
            objects += 1
            try:
                undecodable = _has_undecodable(row)
            except RecursionError:
                yield _parse_error(f"invalid_json: line {line_no}: nested too deeply", line), origin
                continue
            if undecodable:  # a lone surrogate escape (`"\ud800"`) is not text any writer can store
                yield _parse_error(f"invalid_encoding: line {line_no}: a string is not valid Unicode", line), origin
                continue
            yield row, origin
    if lines and not objects:
        shown = first[:60].decode("utf-8", "replace").strip()
        looks_like, hint = _file_kind_hint(path)
        raise SourceError(f"source {spec.source_name!r}: {path} is neither JSON Lines nor a JSON array of objects: "
                          f"no line holds a JSON object (line 1: {shown!r})", looks_like, hint)


# VLMEvalKit stores an image shared by several rows once: the other rows' `image` field holds the
# `index` of the row that has it (VLMEvalKit tells the two apart by length: at most 64 characters
# is an index; no image is that short in base64).
MAX_IMAGE_REF_CHARS = 64


def _tsv_reader(spec: SourceSpec) -> Iterator[tuple[dict[str, Any] | None, str, str | None]]:
    """(row or None, origin, problem) for each line of a TSV; a line the csv module cannot read, or
    one that is not UTF-8, comes with its problem instead of a row."""
    csv.field_size_limit(sys.maxsize)  # base64 images are far longer than csv's default limit
    path = spec.file
    looks_like, hint = _file_kind_hint(path)
    if looks_like in ("CSV", "Parquet"):  # as the JSON reader says: not "map our `question`" for every row
        raise SourceError(f"source {spec.source_name!r}: {path} is not TSV" + (": its first line has no tab" if looks_like == "CSV" else ""),
                          looks_like, hint)
    with open(path, encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        while True:
            try:
                raw = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:  # a NUL byte, a broken quote: this line only
                yield None, f"{path}:{reader.line_num}", f"invalid_tsv: line {reader.line_num}: {exc}"
                continue
            origin = f"{path}:{reader.line_num}"
            row: dict[str, Any] = {k: v for k, v in raw.items() if k is not None}
            if _has_undecodable(row) or (reader.fieldnames and _has_undecodable(list(reader.fieldnames))):
                yield None, origin, f"invalid_encoding: line {reader.line_num}: not UTF-8"
                continue
            yield row, origin, None


def _tsv_images(value: Any) -> list[str]:
    """A TSV `image` field as a list of entries: one base64 string (or index), or a list written as
    JSON or, as VLMEvalKit writes them, as a Python list (`['...', '...']`)."""
    text = value.strip() if isinstance(value, str) else ""
    if not text:
        return []
    if text.startswith("[") and text.endswith("]"):
        for parse in (json.loads, literal_eval):
            try:
                parsed = parse(text)
            except (ValueError, SyntaxError, RecursionError, MemoryError):
                continue
            if isinstance(parsed, list):
                return [str(x) for x in parsed]
    return [text]


def _is_image_ref(entry: str) -> bool:
    return len(entry) <= MAX_IMAGE_REF_CHARS and Path(entry).suffix.lower() not in IMAGE_SUFFIXES


def _tsv_rows(spec: SourceSpec) -> Iterator[tuple[dict[str, Any], str]]:
    """VLMEvalKit's layout, turned into the generic fields (unless `fields` maps them otherwise).

    An `image` entry of at most 64 characters is the `index` of the row whose image it shares
    (before or after it in the file; VLMEvalKit's convention); one that names no row with an image
    is `image_ref_invalid`. Without an `image`, `image_path` names files relative to the TSV's folder
    (or VLMEvalKit's `images/<name>/` beside it). A file with references is read twice: once to
    find the rows they point to, once to yield the rows, holding only the shared images."""
    image_column = spec.column("images") if spec.fields.get("images") else "image"
    wanted = {entry for row, _, _ in _tsv_reader(spec) if row is not None
              for entry in _tsv_images(row.get(image_column)) if _is_image_ref(entry)}
    shared: dict[str, str] = {}
    if wanted:
        for row, _, _ in _tsv_reader(spec):
            if row is not None and str(row.get("index", "")).strip() in wanted:
                entries = _tsv_images(row.get(image_column))
                if len(entries) == 1 and not _is_image_ref(entries[0]):
                    shared[str(row["index"]).strip()] = entries[0]
    for row, origin, problem in _tsv_reader(spec):
        if row is None:
            yield _parse_error(problem or "invalid_tsv"), origin
            continue
        entries = _tsv_images(row.get(image_column))
        unknown = [e for e in entries if _is_image_ref(e) and e not in shared]
        if unknown:
            yield _parse_error(f"image_ref_invalid: {unknown[0][:40]!r} is neither base64 nor the index of a row with an image "
                               "in this file"), origin
            continue
        images: list[Any] = [shared[e] if _is_image_ref(e) else e for e in entries]
        if not images and row.get("image_path") not in (None, "", "nan"):
            images = [_vlmevalkit_image_path(spec, p) for p in _tsv_images(row["image_path"])]
        choices = [row[letter] for letter in LETTERS if row.get(letter) not in (None, "", "nan")]
        question = row.get("question") or ""
        if row.get("hint") not in (None, "", "nan"):
            question = f"Hint: {row['hint']}\n{question}"
        generic = {"id": row.get("index"), "question": question, "answer": row.get("answer"), "images": images,
                   "category": row.get("category"), "choices": choices or None}
        resolved = {image_column: images} if spec.fields.get("images") else {}  # a mapped image column, resolved too
        yield {**row, **{k: v for k, v in generic.items() if k not in spec.fields.values()}, **resolved}, origin


def _vlmevalkit_image_path(spec: SourceSpec, name: str) -> str | dict[str, Any]:
    """An `image_path` entry: as it is when it exists beside the TSV (or absolute), else where
    VLMEvalKit keeps a dataset's images (`images/<dataset>/` beside the TSV, <dataset> being the
    TSV's file stem: `images/V_star/` for `V_star.tsv`); when in neither, a reference that
    `image_missing` reports with both places."""
    if Path(name).is_absolute() or (spec.base_dir / name).exists():
        return name
    candidate = Path("images") / spec.file.stem / name
    if (spec.base_dir / candidate).exists():
        return str(candidate)
    return {"path": name, "also_looked_in": [str(candidate)]}  # neither: `image_missing` names both places


def _hf_rows(spec: SourceSpec) -> Iterator[tuple[dict[str, Any], str]]:
    import datasets

    # A hub id without network: read the local cache only (offline mode), not ~25 s of retries first. A hub id with
    # `data_files` (a repository's files) asks the Hub too; only a builder reading local files does not.
    builder = is_packaged_builder(spec.path.strip())
    unreachable = hub_unreachable() if not builder and not Path(spec.path).exists() else None
    try:  # progress bars, the Hub client's retry lines and a builder's error line before our own would bury the run's lines
        with datasets_progress_bars_off(), hub_retry_lines_off(), builder_error_lines_off(), hub_offline(unreachable is not None):
            dataset = datasets.load_dataset(spec.path, spec.subset, split=spec.split, data_files=spec.data_files)
    except Exception as exc:  # the hub unreachable, no such dataset or files, a bad builder
        if split_problem := _unknown_split_text(exc, spec.path):  # a hub dataset's splits are known only once it loads
            raise SourceError(f"source {spec.source_name!r}: {split_problem}") from exc
        why = f" (the Hub cannot be reached: {unreachable}; only the local cache was read)" if unreachable else ""
        files = [spec.data_files] if isinstance(spec.data_files, str) else list(spec.data_files or [])
        what = (f"the datasets builder {spec.path!r} cannot read {', '.join(files)}" if files and builder else
                f"datasets cannot load {spec.path!r}" + (f" (data_files {', '.join(files)})" if files else ""))
        raise SourceError(f"source {spec.source_name!r}: {what}: {exception_chain_text(exc)}{why}") from exc
    # Arrow rows, not decoded ones: images stay `{bytes, path}`, so a broken one is quarantined by
    # our validation instead of failing inside `datasets`' decoder.
    index = 0
    for batch in dataset.with_format("arrow").iter(batch_size=256):
        for row in batch.to_pylist():
            yield row, f"{spec.source_name if spec.data_files else spec.path}[{spec.split}][{index}]"
            index += 1


_UNKNOWN_SPLIT = re.compile(r'Unknown split "(?P<name>.*)"\. Should be one of (?P<known>\[.*\])\.?$')


def _unknown_split_text(exc: BaseException, dataset: str) -> str | None:
    """`unknown_split_message` for `datasets`' `ValueError: Unknown split "tset". Should be one of
    ['train', 'test'].` (raised by its `ArrowReader`) anywhere in `exc`'s cause chain; None for
    any other error."""
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return None
        found = _UNKNOWN_SPLIT.match(str(current).strip())
        if found:
            try:
                known = [str(name) for name in literal_eval(found.group("known"))]
            except (ValueError, SyntaxError):
                return None
            return unknown_split_message(found.group("name"), known, dataset)
        current = current.__cause__ or current.__context__
    return None


_CLASS_IN_PARENS = re.compile(r"\((?:[a-z_][\w.]*\.)?([A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+)\)")  # `(pkg.mod.SomeError)`


def _class_words(name: str) -> str:
    """`LocalEntryNotFoundError` as "local entry not found", `OfflineModeIsEnabled` "offline mode is enabled"."""
    words = re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", name)
    words = words[:-1] if len(words) > 1 and words[-1] in ("Error", "Exception") else words
    return " ".join(words).lower()


def exception_words(exc: BaseException, limit: int = 300) -> str:
    """What one exception says, in words, without its Python class name: its message's first line
    (cut to `limit` characters); where the message alone does not say what went wrong, the class
    name's words too (`KeyError('col')` is "no key 'col'", an empty `EmptyDataError()` "empty data
    error")."""
    text = (str(exc).strip().splitlines() or [""])[0]
    # a class name a library puts in its own message (`Couldn't reach 'x' on the Hub (LocalEntryNotFoundError)`), in words
    text = _CLASS_IN_PARENS.sub(lambda m: f"({_class_words(m.group(1))})", text)
    text = text if len(text) <= limit else text[:limit] + " ..."
    if isinstance(exc, KeyError):
        return f"no key {text}" if text else "no such key"
    if isinstance(exc, IndexError) and not text:
        return "index out of range"
    if not text:
        return " ".join(re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", type(exc).__name__)).lower()
    return text


def exception_chain_text(exc: BaseException, limit: int = 300) -> str:
    """One line for an exception and what caused it, in words (`exception_words`: no Python class
    names; the exception itself, raised `from` it, keeps the chain for a debugger): `datasets` wraps
    a reader's error in `DatasetGenerationError: An error occurred while generating the dataset`,
    whose message says nothing; its `__cause__`/`__context__` chain holds the real one (`No columns
    to parse from file`). Each distinct message of the chain, outermost first, joined by `; caused
    by `, the generic wrapper left out when a cause follows; each cut to its first line and `limit`
    characters."""
    chain: list[BaseException] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        chain.append(current)
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    parts: list[str] = []
    for index, item in enumerate(chain):
        text = exception_words(item, limit)
        generic = "an error occurred while generating the dataset" in text.lower()
        if generic and index < len(chain) - 1:
            continue
        if not any(text in p for p in parts):
            parts.append(text)
    return "; caused by ".join(parts)


def _verl_rows(spec: SourceSpec) -> Iterator[tuple[dict[str, Any], str]]:
    if "question" not in spec.fields and (columns := _flat_parquet_columns(spec.path)) is not None:
        raise SourceError(f"source {spec.source_name!r}: {spec.path} is not verl's layout (no `prompt` column; its columns: "
                          f"{', '.join(columns)}): a flat parquet table is read by `kind: hf, path: parquet, data_files: [FILE]` "
                          "(`--source hf:parquet,data_files=FILE`)")
    try:
        yield from verl_rows(spec.path, set(spec.fields.values()))
    except (OSError, ValueError) as exc:  # pyarrow's errors for a file that is not parquet derive from these
        raise SourceError(f"source {spec.source_name!r}: {spec.path} cannot be read as parquet: {exception_chain_text(exc)}") from exc


def _flat_parquet_columns(path: str) -> list[str] | None:
    """The columns of the first parquet file a `verl` source names when it has no `prompt` column
    (the chat messages verl's RL data holds the question in): a flat table, not verl's layout. None
    when it has one, or its schema cannot be read (the reader names that file)."""
    import pyarrow.parquet as pq

    files = verl_files(path)
    try:
        names = pq.read_schema(files[0]).names if files else ["prompt"]
    except (OSError, ValueError):
        return None
    return None if "prompt" in names else names


def read_source(spec: SourceSpec, skipped: dict[str, int] | None = None) -> Iterator[tuple[dict[str, Any], str]]:
    """Yield `(raw row, origin)` for the rows `spec.include` keeps, up to `spec.limit`; a line or
    item that cannot be read yields a row with a `__parse_error__` key (the quarantine reason).
    Rows left out by `include` are counted in `skipped["filtered"]`. Raises `SourceError` for a
    source that cannot be read as rows at all."""
    if not spec.exists():
        raise SourceError(f"source {spec.source_name!r}: {spec.missing()}")
    if spec.kind in ("jsonl", "json", "tsv"):
        encoding = wide_encoding(spec.file)
        if encoding:
            raise SourceError(f"source {spec.source_name!r}: {spec.path} is {encoding} text: save it as UTF-8")
    rows = {"jsonl": _json_rows, "json": _json_rows, "tsv": _tsv_rows, "hf": _hf_rows, "verl": _verl_rows}[spec.kind](spec)
    taken = 0
    for row, origin in rows:
        if spec.include and PARSE_ERROR not in row:
            if any(not _included(lookup(row, column), allowed) for column, allowed in spec.include.items()):
                if skipped is not None:
                    skipped["filtered"] = skipped.get("filtered", 0) + 1
                continue
        yield row, origin
        taken += 1
        if spec.limit is not None and taken >= spec.limit:
            return


def _first_rows(spec: SourceSpec, sample_rows: int, any_kind: bool = False) -> list[dict[str, Any]]:
    """The readable rows among the first `sample_rows` of a local JSONL, JSON or TSV source, or with
    `any_kind` of any source (`hf` loads its dataset: `datasets` caches it); [] for other kinds and a
    missing file (the scan reports those). Raises `SourceError` for a file that is not rows at all."""
    readers = {"jsonl": _json_rows, "json": _json_rows, "tsv": _tsv_rows, **({"hf": _hf_rows, "verl": _verl_rows} if any_kind else {})}
    if spec.kind not in readers or not (spec.exists() if spec.kind in ("hf", "verl") else spec.file.is_file()):
        return []
    rows = []
    for index, (row, _) in enumerate(readers[spec.kind](spec)):
        if PARSE_ERROR not in row:
            rows.append(row)
        if index + 1 >= sample_rows:
            break
    return rows


def _has_column(path: str, seen: set[str]) -> bool:
    """Whether a column name, or the first step of a dotted path (`extra_info.answer`), is among `seen`."""
    return path in seen or path.split(".", 1)[0] in seen


def check_mapped_columns(spec: SourceSpec, sample_rows: int = 100) -> None:
    """Before any work: raise `SourceError` when `spec.fields` maps one of our fields, or
    `spec.include` filters on, a column that none of the source's first `sample_rows` rows has,
    naming the columns they do have. Local JSONL, JSON and TSV files only; other kinds (`hf` is read
    in full by `datasets`) are left to the scan, whose error names the same fix when every row
    misses the column (or `include` leaves none)."""
    if not (spec.fields or spec.include):
        return
    # an hf builder reading local files (`hf:parquet,data_files=rows.parquet`) is read as any file is (`datasets` caches it)
    local_builder = spec.kind == "hf" and is_packaged_builder(spec.path.strip()) and spec.exists() and not any(
        "://" in p for p in ([spec.data_files] if isinstance(spec.data_files, str) else list(spec.data_files or [])))
    seen: set[str] = {key for row in _first_rows(spec, sample_rows, any_kind=local_builder) for key in row}
    if not seen:
        return  # nothing readable: the scan reports that
    settings = [("fields", ours) for ours, theirs in spec.fields.items() if not _has_column(theirs, seen)]
    settings += [("include", column) for column in spec.include if not _has_column(column, seen)]
    missing = [f"fields.{ours}: {spec.fields[ours]!r}{_closest_column(spec.fields[ours], seen)}" if part == "fields"
               else f"include.{ours}{_closest_column(ours, seen)}" for part, ours in settings]
    if missing:
        raise SourceError(f"source {spec.source_name!r}: {', '.join(missing)}: no such column in its first rows (columns: "
                          f"{', '.join(sorted(seen)[:30])})", setting=settings[0])


def _closest_column(column: str, seen: set[str]) -> str:
    """` (closest: 'answer')` for a column name that is not among `seen`; "" when none is close."""
    found = closest(column, sorted(seen))
    return f" (closest: {found[0]!r})" if found else ""


def missing_column_hint(spec: SourceSpec, reason_key: str) -> str | None:
    """For a source every row of which fails for `missing_<field>` (`missing_answer`): the column our
    field is read from (`fields.<field>`, else, for `question` and `answer`, the field's own name) when the source's first rows do
    not have it, with the columns they have and the closest (`fields.answer: 'label': no such column
    (columns: answer, question; closest: 'level')`); None when the column is there (the rows are
    empty in it) or the rows cannot be read."""
    field = reason_key.removeprefix("missing_")
    if reason_key == "missing_image":  # a column that looks like images, not read: the fix is mapping it
        try:
            unread = list(dict.fromkeys(c for row in _first_rows(spec, 100, any_kind=True) for c in unread_image_columns(spec, row)))
        except SourceError:
            return None
        if not unread:
            return None
        one = len(unread) == 1
        return (f"the source's column{'' if one else 's'} {', '.join(f'`{c}`' for c in unread)} look{'s' if one else ''} like images but "
                f"{'is' if one else 'are'} not read (its images are read from {images_read_from(spec)}): {image_column_fix(unread)}")
    # a category or options not mapped have a better fix than a column (a source's `category`, another answer_type)
    if not reason_key.startswith("missing_") or not (field in ("question", "answer") or field in spec.fields):
        return None
    try:
        seen: set[str] = {key for row in _first_rows(spec, 100, any_kind=True) for key in row}
    except SourceError:
        return None
    column = spec.fields.get(field, field)
    if not seen or _has_column(column, seen):
        return None
    found = closest(column, sorted(seen))
    named = f"fields.{field}: {column!r}" if field in spec.fields else f"our `{field}` is read from column {column!r} (no `fields.{field}`)"
    return (f"{named}: no such column (columns: {', '.join(sorted(seen)[:30])}" + (f"; closest: {found[0]!r}" if found else "")
            + f"); map it with `fields.{field}=COLUMN`")


def include_values_seen(spec: SourceSpec, sample_rows: int = 1000, most: int = 8) -> dict[str, list[str]]:
    """For the error when `include` keeps no row: each include column's distinct values among the
    first `sample_rows` rows of the source (any kind), at most `most` each, written as in a config
    (`'test'`, `true`, `2.0`)."""
    try:
        rows = _first_rows(spec, sample_rows, any_kind=True)
    except SourceError:  # only for the message of another error: that one stands
        rows = []
    seen: dict[str, list[str]] = {}
    for column in spec.include:
        values = seen.setdefault(column, [])
        for row in rows:
            value = lookup(row, column)
            if value is not None and include_value_text(value, quoted=True) not in values and len(values) < most:
                values.append(include_value_text(value, quoted=True))
    return seen


def include_value_text(value: Any, quoted: bool = False) -> str:
    """An `include` value as the config writes it: `true`/`false`, numbers as they are, text as it
    is (`quoted`: in quotes, as the values a column holds are listed)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value) if quoted and isinstance(value, str) else str(value)


def _as_number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _same_value(value: Any, wanted: Any) -> bool:
    """Whether a row's `value` is the `include` value `wanted`: a boolean only its boolean (or the
    text `true`/`false`), never 1 or 0; a number any number equal to it (`2` is `2.0`) or text
    that reads as one (`"2"`, as TSV and CSV columns hold numbers); else equal values, a date as
    its ISO text."""
    if isinstance(value, bool) or isinstance(wanted, bool):
        if isinstance(value, bool) and isinstance(wanted, bool):
            return value == wanted
        flag, other = (value, wanted) if isinstance(value, bool) else (wanted, value)
        return isinstance(other, str) and other.strip().lower() == ("true" if flag else "false")
    if isinstance(value, (int, float)) or isinstance(wanted, (int, float)):
        number = _as_number(value)
        return number is not None and number == _as_number(wanted)
    value, wanted = (v.isoformat() if isinstance(v, (datetime.date, datetime.datetime)) else v for v in (value, wanted))
    return value == wanted


def _included(value: Any, allowed: list[Any]) -> bool:
    """Whether `include` keeps a row whose column holds `value`: it is one of `allowed` (`_same_value`),
    so the command line (whose values are read as YAML scalars) and a config's filters agree."""
    return any(_same_value(value, wanted) for wanted in allowed)


def rows_fix_hint(reason_key: str) -> str:
    """What to do when every row of a source fails for `reason_key` (for the one-line error)."""
    hints = {
        "missing_category": f"give the source a category (config `category: perception`, or on the command line "
                            f"`--source KIND:PATH,category=perception`; one of {', '.join(CATEGORIES)})",
        "unknown_category": "map the source's labels to ours with category_map (config `category_map: {color: perception}`, "
                            "or `--source KIND:PATH,category_map.color=perception`), or give the source a category for every "
                            "label not mapped (`category: perception`)",
        "missing_question": "map our `question` to the source's column (`fields: {question: COLUMN}`, or `fields.question=COLUMN`)",
        "missing_answer": "map our `answer` to the source's column (`fields: {answer: COLUMN}`, or `fields.answer=COLUMN`)",
        "invalid_question": "map our `question` to the source's column of question text (`fields: {question: COLUMN}`, or "
                            "`fields.question=COLUMN`)",
        "question_too_long": "map our `question` to the column of question text, not a document or transcript (`fields.question=COLUMN`), "
                             "or raise `curate.max_question_chars`",
        "invalid_answer": "map `fields.answer` to a column of text or numbers, or set the right `answer_type`",
        "answer_too_long": "map our `answer` to the column of gold answers (`fields.answer=COLUMN`), or raise `curate.max_answer_chars`",
        "invalid_id": "map `fields.id` to a column of ids (text or numbers), or leave it out for content-hash ids",
        "invalid_category": "map `fields.category` to the column of category labels, or give the source a category and no "
                            "`fields.category`",
        "missing_choices": "map `fields.choices` to the column of options, or give the source another answer_type (number, math or text)",
        "invalid_answer_type": "give the source an answer_type (choice, number, math or text) or map `fields.answer_type`",
        "image_missing": "image paths are read relative to the source file's folder: check them, or map `fields.images`",
        "invalid_parquet": "a parquet file is broken or not parquet: re-download it or leave it out (each is named in the quarantine)",
        "image_url": "images given as URLs are not fetched: download them and give local paths (or base64)",
        "missing_image": "a perception sample needs an image: map `fields.images` to the column that holds them, or give "
                         "text-only rows another category (reasoning)",
        "invalid_json": "give JSON Lines (one object per line) or a JSON array of objects",
        "invalid_encoding": "re-encode the file as UTF-8",
        "sharegpt_row": "this is LLaMA-Factory's sharegpt layout (conversations with images): `deepeyes import sharegpt FILE --out DIR` "
                        "turns it into trajectory shards and DIR/samples.jsonl, which curates as `--source jsonl:DIR/samples.jsonl`",
    }
    return hints.get(reason_key, "see the quarantine for each row's reason")


def row_question_and_images(row: dict[str, Any], spec: SourceSpec, base_dir: Path, read_images: bool = True,
                            files: set[str] | None = None) -> tuple[str | None, list[bytes], list[str]]:
    """Only what decontamination compares of a row (a benchmark's answers, categories and answer
    types do not matter to it): the question (cleaned; None when the row has none), the bytes of
    each image that could be read (none unless `read_images`), and the reason for each that could
    not. Raises `RowRejected` for a question that is not text. Image files go into `files`."""
    question = _text(spec.value(row, "question"), "question", required=False, column=spec.column("question"))
    images: list[bytes] = []
    problems: list[str] = []
    for ref in image_refs(spec.value(row, "images")) if read_images else []:
        try:
            images.append(_read_image(ref, base_dir, files)[0])
        except RowRejected as exc:
            problems.append(str(exc))
    return question, images, problems
