"""Benchmarks as data: one YAML file per benchmark, loaded into the `Sample` schema.

    name: mathvista
    source: {kind: tsv, path: ${data_root}/MathVista_MINI.tsv, category: reasoning}
    judge: math          # rules | math | llm
    prompt: default

`source` is a curation source (`jsonl`, `tsv` in VLMEvalKit's layout, `hf` for anything
`datasets.load_dataset` opens, with `fields`, `include`, `limit`), or `shards` for the `eval` pool
of our own curated shards. `${data_root}` and `${run_dir}` are filled in when the file is loaded.
Definitions for the paper's benchmarks ship in `eval/benchmarks/`; a path to any other file works
the same way. Rows that cannot be read are counted and skipped, never fatal.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import Discriminator, Tag, ValidationError, field_validator

from curation.images import ImageLimits, ImageRejected, validate_image
from curation.schema import SAMPLE_SCHEMA, ImageRef, Sample
from curation.shards import iter_rows
from curation.sources import SOURCE_KINDS, RowRejected, SourceError, SourceSpec, check_mapped_columns, read_source, row_to_sample
from curation.strict_config import StrictConfig
from curation.suggest import did_you_mean
from curation.validation_errors import validation_lines


class ShardSource(StrictConfig):
    kind: Literal["shards"]
    path: str
    pool: str = "eval"


BENCHMARK_SOURCE_KINDS = (*SOURCE_KINDS, "shards")


def _source_member(value: Any) -> str:
    """Which model reads a benchmark's `source`: `shards` for `kind: shards`, else a curation source
    (so a wrong `kind` is told the curation kinds, not "should be 'shards'")."""
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return "shards" if kind == "shards" else "file"


class BenchmarkSpec(StrictConfig):
    name: str
    source: Annotated[Annotated[SourceSpec, Tag("file")] | Annotated[ShardSource, Tag("shards")], Discriminator(_source_member)]
    judge: Literal["rules", "math", "llm"] = "rules"  # llm: ask the LLM judge where rules cannot decide
    # With `judge: rules`, how a text answer that is not an exact match is scored: `exact` (it is
    # wrong) or `contains` (right when the gold's words appear in it, as OCRBench scores).
    text_match: Literal["exact", "contains"] = "exact"
    prompt: Literal["default", "no_tools"] = "default"

    @field_validator("name")
    @classmethod
    def _trimmed_name(cls, value: str) -> str:
        """The benchmark's name, spaces around it trimmed (`name: " vstar "` is `vstar`, as an
        `eval.benchmarks` entry and a source's name are); an empty one refused."""
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()


# Why two benchmarks of one name are refused (`curation.sources.same_name_message`).
BENCHMARK_NAMES_WHY = ("metrics.json keeps one result per benchmark name, so one would be lost; name each benchmark once "
                       "(a definition file's name is its `name:`)")


class BenchmarkError(ValueError):
    """A benchmark that cannot be found or read; names the file."""


def shipped() -> dict[str, Path]:
    """The benchmark definitions that ship with the package, by name."""
    folder = resources.files("eval") / "benchmarks"
    return {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir() if str(f).endswith(".yaml")}


def load_spec(name_or_path: str, data_root: str | Path = "data/eval", run_dir: str | Path | None = None) -> BenchmarkSpec:
    path = Path(name_or_path)
    if not path.is_file():
        # Spaces around a name are not part of it (`--benchmark " vstar "`), as in `eval.benchmarks`.
        name_or_path = name_or_path.strip()
        path = Path(name_or_path)
    if not path.is_file():
        known = shipped()
        if name_or_path not in known:
            raise BenchmarkError(f"unknown benchmark {name_or_path!r}: not a file, nor a shipped one{did_you_mean(name_or_path, known)} "
                                 f"(shipped: {', '.join(sorted(known))})")
        path = known[name_or_path]
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); a benchmark definition is YAML") from None
    text = text.replace("${data_root}", str(Path(data_root).resolve()))
    if run_dir is not None:
        text = text.replace("${run_dir}", str(Path(run_dir).resolve()))
    spec = _parse_spec(text, path)
    # A relative data path in a definition file is read from the file's folder, as a config's are.
    source = spec.source
    if isinstance(source, SourceSpec) and source.kind != "hf" and not Path(source.path).is_absolute():
        spec = spec.model_copy(update={"source": source.model_copy(update={"path": str((path.parent / source.path).resolve())})})
    elif isinstance(source, SourceSpec) and source.kind == "hf" and source.data_files:
        files = [source.data_files] if isinstance(source.data_files, str) else list(source.data_files)
        resolved = [f if Path(f).is_absolute() else str((path.parent / f).resolve()) for f in files]
        spec = spec.model_copy(update={"source": source.model_copy(update={"data_files": resolved if not isinstance(source.data_files, str) else resolved[0]})})
    return spec


def _parse_spec(text: str, path: Path) -> BenchmarkSpec:
    """The definition in `text` (read from `path`); `BenchmarkError` in the pipeline config's form
    (`FILE:LINE: field: message`, one line per mistake, with the closest names)."""
    try:
        node, raw = yaml.compose(text), yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise BenchmarkError(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(raw, dict):
        raise BenchmarkError(f"{path}: a benchmark definition is a mapping of {', '.join(BenchmarkSpec.model_fields)} "
                             f"(found {'nothing' if raw is None else type(raw).__name__})")
    # The curation kinds' literal error would not list `shards`, nor say where Parquet files go.
    kind = raw.get("source", {}).get("kind") if isinstance(raw.get("source"), dict) else None
    kind_message = (f"unknown source kind {kind!r}{did_you_mean(kind, BENCHMARK_SOURCE_KINDS)} (kinds: {', '.join(BENCHMARK_SOURCE_KINDS)}; "
                    "Parquet, CSV and other files: `kind: hf, path: parquet, data_files: [FILE]`)")
    try:
        return BenchmarkSpec.model_validate(raw)
    except ValidationError as exc:
        errors = [{**e, "loc": _as_written(tuple(e["loc"]))} for e in exc.errors()]
        messages = {("source", "kind"): kind_message}
        if kind == "shards":  # the fields of a `shards` source, not a file source's, are the ones to suggest
            messages |= {e["loc"]: "unknown field" + did_you_mean(e["loc"][-1], ShardSource.model_fields, n=3)
                         for e in errors if e["type"] == "extra_forbidden" and len(e["loc"]) == 2 and e["loc"][0] == "source"}
        lines = validation_lines(errors, str(path), node, BenchmarkSpec, messages)
        raise BenchmarkError(lines[0] if len(lines) == 1 else "invalid benchmark definition:\n  " + "\n  ".join(lines)) from None


def _as_written(loc: tuple[Any, ...]) -> tuple[Any, ...]:
    """An error's location as the file has it: `source.kind`, not pydantic's `source.file.kind`
    (the union's tag)."""
    return (loc[0], *loc[2:]) if loc[:1] == ("source",) and loc[1:2] in (("file",), ("shards",)) else loc


def check_benchmark(spec: BenchmarkSpec, where: str, run_dir_option: str = "--out", data_root: str | Path | None = None,
                    data_root_option: str = "--data-root") -> None:
    """What can be checked before a benchmark is evaluated: a source's data file exists and every
    column its `fields` names is in its first rows (`curation.sources.check_mapped_columns`). A
    source that is a pipeline run's own output (`${run_dir}` not filled in) is refused: only a run
    makes it, or `run_dir_option` names one; a missing file under `data_root` names
    `data_root_option`. `BenchmarkError` starting with `where` (the option or config field that
    named it)."""
    source = spec.source
    where = where if where.endswith(spec.name) else f"{where} ({spec.name})"
    if "${run_dir}" in source.path:
        raise BenchmarkError(f"{where}: reads a pipeline run's own held-out samples ({source.path}): evaluate it in a run "
                             f"(eval.benchmarks: [{spec.name}] in a config for `deepeyes run`), or give {run_dir_option} the "
                             "directory of a run that made them (it has select/)")
    if isinstance(source, SourceSpec):
        if not source.exists():
            root = Path(data_root).resolve() if data_root is not None else None
            hint = (f" ({data_root_option} is {root}: give the folder that holds the benchmark's files)"
                    if root is not None and Path(source.path).is_relative_to(root) else "")
            raise BenchmarkError(f"{where}: {source.missing()}{hint}")
        try:
            check_mapped_columns(source)
        except SourceError as exc:
            raise BenchmarkError(f"{where}: {exc}") from None
    elif not Path(source.path).is_dir():
        raise BenchmarkError(f"{where}: shard directory not found: {source.path}")


def benchmark_files(name_or_path: str, data_root: str | Path = "data/eval", run_dir: str | Path | None = None) -> list[Path]:
    """The local files a benchmark reads: its definition and its source's files (what the evaluate
    stage's cache key must cover; a `shards` source is the run's own output, covered already).
    Raises `BenchmarkError` for an unknown benchmark."""
    definition = Path(name_or_path) if Path(name_or_path).is_file() else shipped().get(name_or_path)
    spec = load_spec(name_or_path, data_root, run_dir)
    files = [definition] if definition is not None else []
    if isinstance(spec.source, SourceSpec):
        files += spec.source.local_files()
    return files


@dataclass
class LoadedBenchmark:
    spec: BenchmarkSpec
    samples: list[Sample]
    unreadable: int


def load_benchmark(spec: BenchmarkSpec, limits: ImageLimits | None = None, max_samples: int | None = None) -> LoadedBenchmark:
    limits = limits or ImageLimits()
    samples, unreadable = [], 0
    if isinstance(spec.source, ShardSource):
        rows = iter_rows(spec.source.path, SAMPLE_SCHEMA)
        samples = [Sample.from_row(r) for r in rows if r["pool"] == spec.source.pool]
    else:
        source = spec.source.model_copy(update={"name": spec.source.name or spec.name})
        if not source.exists():
            raise BenchmarkError(f"benchmark {spec.name!r}: {source.missing()}")
        for row, _origin in read_source(source):
            try:
                if "__parse_error__" in row:
                    raise RowRejected(row["__parse_error__"])
                sample = row_to_sample(row, source, source.base_dir)
                images = [ImageRef(bytes=validate_image(i.bytes, limits, i.path), path=i.path) for i in sample.images]
            except (RowRejected, ImageRejected):
                unreadable += 1
                continue
            samples.append(sample.model_copy(update={"images": images}))
    return LoadedBenchmark(spec, samples[:max_samples] if max_samples else samples, unreadable)
