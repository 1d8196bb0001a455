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
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from curation.images import ImageLimits, ImageRejected, validate_image
from curation.schema import SAMPLE_SCHEMA, ImageRef, Sample
from curation.shards import iter_rows
from curation.sources import RowRejected, SourceSpec, read_source, row_to_sample


class ShardSource(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["shards"]
    path: str
    pool: str = "eval"


class BenchmarkSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    source: SourceSpec | ShardSource
    judge: Literal["rules", "math", "llm"] = "rules"  # llm: ask the LLM judge where rules cannot decide
    # With `judge: rules`, how a text answer that is not an exact match is scored: `exact` (it is
    # wrong) or `contains` (right when the gold's words appear in it, as OCRBench scores).
    text_match: Literal["exact", "contains"] = "exact"
    prompt: Literal["default", "no_tools"] = "default"


class BenchmarkError(ValueError):
    """A benchmark that cannot be found or read; names the file."""


def shipped() -> dict[str, Path]:
    """The benchmark definitions that ship with the package, by name."""
    folder = resources.files("eval") / "benchmarks"
    return {Path(str(f)).stem: Path(str(f)) for f in folder.iterdir() if str(f).endswith(".yaml")}


def load_spec(name_or_path: str, data_root: str | Path = "data/eval", run_dir: str | Path | None = None) -> BenchmarkSpec:
    path = Path(name_or_path)
    if not path.is_file():
        known = shipped()
        if name_or_path not in known:
            raise BenchmarkError(f"unknown benchmark {name_or_path!r}: not a file, and not one of {', '.join(sorted(known))}")
        path = known[name_or_path]
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BenchmarkError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start}); a benchmark definition is YAML") from None
    text = text.replace("${data_root}", str(Path(data_root).resolve()))
    if run_dir is not None:
        text = text.replace("${run_dir}", str(Path(run_dir).resolve()))
    try:
        spec = BenchmarkSpec.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        raise BenchmarkError(f"{path}: {exc}") from None
    # A relative data path in a definition file is read from the file's folder, as a config's are.
    source = spec.source
    if isinstance(source, SourceSpec) and source.kind != "hf" and not Path(source.path).is_absolute():
        spec = spec.model_copy(update={"source": source.model_copy(update={"path": str((path.parent / source.path).resolve())})})
    elif isinstance(source, SourceSpec) and source.kind == "hf" and source.data_files:
        files = [source.data_files] if isinstance(source.data_files, str) else list(source.data_files)
        resolved = [f if Path(f).is_absolute() else str((path.parent / f).resolve()) for f in files]
        spec = spec.model_copy(update={"source": source.model_copy(update={"data_files": resolved if not isinstance(source.data_files, str) else resolved[0]})})
    return spec


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
            raise BenchmarkError(f"benchmark {spec.name!r}: file not found: {source.path}")
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
