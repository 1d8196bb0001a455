"""The curate stage: sources → normalized, validated, deduplicated, decontaminated `Sample` shards.

Two passes, so memory holds hashes, not images. The first (`scan_source`, one task per source
or part of one) validates each row and stages the good ones as shards with their content key and
image hashes. Then (`finish_curate`) exact duplicates, contamination and near duplicates are found
over all rows at once, and the second pass writes the rows that survive, with a pool each. Every
dropped row lands in `quarantine/` with its reason, and `report.json` / `report.md` count rows in,
out and dropped per step, source and category.

The steps drop in this order, each counting only what the earlier ones left: `exact_dedup`,
`decontaminate`, `near_dedup`. So `contaminated` counts every row that goes because of a benchmark:
one that matches a benchmark item itself, and one in a near-duplicate group (a kept row and the
rows that are its near duplicates) of which any member matches one, since a near copy of a
benchmark question is one too; `near_duplicates` counts the rest of the near copies, each of a row
that is in the output.

Pools: `eval` is a held-out fraction by a seeded hash of the id. The rest is `coldstart` / `rl`
by the same hash when no probes are configured (`split`), or left for the selection stage
(`curation.select`), which applies the paper's rule to the student's probe results.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import shutil
import time
from pathlib import Path
from typing import Annotated, Any, get_args

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import AfterValidator, Field, field_validator, model_validator

from curation.decontam import BenchmarkRead, ContaminationIndex, DecontamConfig, read_benchmarks
from curation.dedup import HASH_SCHEME, DedupItem, Duplicate, NearDupConfig, find_near_duplicates, image_phash
from curation.images import ImageLimits, ImageRejected, pillow_pixel_ceiling, validate_image
from curation.report import WARNINGS, StepReport
from curation.schema import SAMPLE_SCHEMA, ImageRef, Pool, Sample, content_id
from curation.shards import QUARANTINE_DIR, Quarantine, ShardError, ShardWriter, iter_rows, read_manifest, shard_files
from curation.sources import (MAX_ANSWER_CHARS, MAX_QUESTION_CHARS, PARSE_ERROR, RowRejected, SourceError, SourceSpec, TextLimits,
                              images_read_from, include_value_text, include_values_seen, missing_column_hint, read_source,
                              row_to_sample, rows_fix_hint, same_name_message, unread_image_columns, unread_image_warning)
from curation.strict_config import Seed, StrictConfig
from curation.suggest import did_you_mean
from curation.validation_errors import yaml_flow

STAGING_DIR = "_staged"
UNREAD_IMAGE_COLUMNS = "unread_image_columns"  # a scan's report extra: {source: {column: rows}}, made warnings by `finish_curate`


# The pools a curated (or selected) row can be in: curation's hash split and the select stage write
# these and no other; `synth.pools`, `grpo.pools` and `eval.pools` choose among them.
POOLS = tuple(p for p in get_args(Pool) if p != "dropped")  # the schema's pools a stage reads (no stage reads the dropped rows)


def pool_names(pools: list[str], allowed: tuple[str, ...] = POOLS) -> list[str]:
    """`pools` unchanged when each is one of `allowed`; else `ValueError` naming the first unknown
    one with the closest pool (`unknown pool 'coldstrat'; did you mean 'coldstart'? (pools: ...)`)."""
    for pool in pools:
        if pool not in allowed:
            raise ValueError(f"unknown pool {pool!r}{did_you_mean(pool, allowed)} (pools: {', '.join(allowed)})")
    return pools


# A stage setting naming pools (`synth.pools: [coldstart]`): a misspelt one is refused when the config loads.
PoolNames = Annotated[list[str], AfterValidator(pool_names)]


class CurateConfig(StrictConfig):
    sources: list[SourceSpec] = Field(default_factory=list)
    min_side: int = Field(28, ge=1)
    max_aspect: float = Field(200.0, ge=1.0)
    max_pixels: int = Field(64_000_000, ge=1)  # decompression-bomb guard (at most pillow's own, see below)
    # Longer texts are columns mapped by mistake (`question_too_long`, `answer_too_long`; see `TextLimits`).
    max_question_chars: int = Field(MAX_QUESTION_CHARS, ge=1)
    max_answer_chars: int = Field(MAX_ANSWER_CHARS, ge=1)
    near_dup: NearDupConfig = Field(default_factory=NearDupConfig)
    # Evaluation sets to decontaminate against (any source kind); empty: no decontamination.
    benchmarks: list[SourceSpec] = Field(default_factory=list)
    decontam: DecontamConfig = Field(default_factory=DecontamConfig)
    # Fractions of rows per pool, assigned by a seeded hash of the sample id (stable as data grows).
    # With probes (the pipeline's `select`), only `eval` is taken here and the rest is selected.
    split: dict[str, float] = Field(default_factory=lambda: {"coldstart": 0.5, "rl": 0.25, "eval": 0.25})
    seed: Seed = 0
    rows_per_shard: int = Field(1000, ge=1)
    # Each source is read as this many interleaved parts, each a task of its own in the flow:
    # validation (image decoding) runs in parallel. The result does not depend on it.
    scan_parts: int = Field(1, ge=1)

    @field_validator("max_pixels")
    @classmethod
    def _pillow_opens_it(cls, max_pixels: int) -> int:
        ceiling = pillow_pixel_ceiling()
        if ceiling is not None and max_pixels > ceiling:
            raise ValueError(f"{max_pixels} is above the {ceiling} pixels pillow opens at all (2 x PIL.Image.MAX_IMAGE_PIXELS, "
                             "its decompression-bomb error); allowed: 1 to that")
        return max_pixels

    @model_validator(mode="after")
    def _limits_leave_room(self) -> CurateConfig:
        if self.min_side * self.min_side > self.max_pixels:
            raise ValueError(f"min_side {self.min_side} and max_pixels {self.max_pixels}: no image can have both "
                             f"(a {self.min_side}x{self.min_side} image has {self.min_side ** 2} pixels)")
        return self

    @field_validator("sources", "benchmarks")
    @classmethod
    def _names_apart(cls, specs: list[SourceSpec]) -> list[SourceSpec]:
        if problem := same_name_message(specs, [f"entry {i}" for i in range(len(specs))]):  # told at `curate.sources:`
            raise ValueError(problem)
        return specs

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, split: dict[str, float]) -> dict[str, float]:
        pool_names(list(split))
        if any(v < 0 for v in split.values()) or abs(sum(split.values()) - 1.0) > 1e-6:
            raise ValueError(f"fractions must be non-negative and sum to 1, got {yaml_flow(split)}")
        return split


def unit_hash(seed: int, key: str) -> float:
    """A uniform number in [0, 1) from a seed and a key: reproducible sampling without an RNG."""
    digest = hashlib.blake2b(f"{seed}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def assign_pool(sample_id: str, split: dict[str, float], seed: int) -> str:
    u = unit_hash(seed, sample_id)
    cumulative = 0.0
    for pool, fraction in split.items():
        cumulative += fraction
        if u < cumulative:
            return pool
    return list(split)[-1]


def _benchmark_index(cfg: CurateConfig, report: StepReport, quarantine: Quarantine, out_dir: Path,
                     files: set[str]) -> ContaminationIndex | None:
    """The benchmarks' questions and image hashes (None without benchmarks); the files their rows
    point to go into `files`, what each gave into the report (and a warning for one with rows it
    could not read). A benchmark of which no row is usable ends the run (`_fail`)."""
    if not cfg.benchmarks:
        return None
    index, reads = read_benchmarks(cfg.benchmarks, cfg.decontam, ImageLimits(cfg.min_side, cfg.max_aspect, cfg.max_pixels), files)
    report.extra["benchmarks"] = [read.summary() for read in reads]
    report.extra.setdefault(WARNINGS, []).extend(w for w in (read.warning() for read in reads) if w)
    dead: list[BenchmarkRead] = [read for read in reads if not read.items]
    if dead:
        others = f" ({len(dead) - 1} more benchmark(s) likewise)" if len(dead) > 1 else ""
        _fail(report, quarantine, out_dir, dead[0].error() + others)
    return index


# Staged rows carry what the global steps need, so those steps read a few columns, not images.
STAGED_SCHEMA = (
    SAMPLE_SCHEMA.append(pa.field("_content_key", pa.string()))
    .append(pa.field("_origin", pa.string()))
    .append(pa.field("_phashes", pa.list_(pa.uint64())))
)
STAGED_COLUMNS = ("_content_key", "_origin", "_phashes")


def staged_dir_name(source_index: int, part: int) -> str:
    return f"{source_index:03d}-{part:03d}"


def scan_source(cfg: CurateConfig, source_index: int, out_dir: str | Path, part: int = 0, parts: int = 1) -> dict[str, Any]:
    """Pass 1 for one source, or for one of `parts` interleaved parts of it (rows whose ordinal
    modulo `parts` is `part`): read, normalize and validate; stage the good rows with their content
    key and image hashes, quarantine the rest. Independent of every other scan, so each is a task
    of its own (`finish_curate` does the steps that need all rows)."""
    spec = cfg.sources[source_index]
    out_dir = Path(out_dir)
    limits = ImageLimits(cfg.min_side, cfg.max_aspect, cfg.max_pixels)
    text_limits = TextLimits(cfg.max_question_chars, cfg.max_answer_chars)
    need_phash = cfg.near_dup.enabled or (bool(cfg.benchmarks) and cfg.decontam.check_images)
    report = StepReport("curate")
    quarantine = Quarantine(out_dir, "curate")
    source = spec.source_name
    skipped: dict[str, int] = {}
    files: set[str] = set()  # files the rows point to: part of what the scan's output depends on
    unread: dict[str, int] = {}  # image-like columns the source does not read -> rows holding something in them
    with ShardWriter(out_dir, STAGED_SCHEMA, rows_per_shard=cfg.rows_per_shard) as staged:
        for ordinal, (row, origin) in enumerate(read_source(spec, skipped)):
            if part == 0 and PARSE_ERROR not in row:  # every part reads the whole source: counted once, over every row
                for column in unread_image_columns(spec, row):
                    unread[column] = unread.get(column, 0) + 1
            if ordinal % parts != part:
                continue
            report.seen("validate")
            try:
                if PARSE_ERROR in row:
                    raise RowRejected(row[PARSE_ERROR])
                sample = row_to_sample(row, spec, spec.base_dir, files, text_limits)
                images = [ImageRef(bytes=validate_image(i.bytes, limits, i.path), path=i.path) for i in sample.images]
            except Exception as exc:  # noqa: BLE001 - a row is quarantined, never the scan lost
                # RowRejected and ImageRejected carry the reason; anything else is a case the
                # checks above missed: still the row's problem, kept with its type for a fix.
                reason = str(exc) if isinstance(exc, (RowRejected, ImageRejected)) else f"row_error: {type(exc).__name__}: {exc}"
                category = spec.reported_category(row) if PARSE_ERROR not in row else spec.category
                report.entered(source, category)
                report.dropped("validate", reason, source, category)
                quarantine.add(row, reason, origin)
                continue
            report.entered(source, sample.category)
            report.kept("validate")
            sample = sample.model_copy(update={"images": images})
            staged.write({
                **sample.to_row(),
                # Exact duplicates: the same normalized question with the same image contents.
                "_content_key": content_id(sample.question, [image.bytes for image in images]),
                "_origin": origin,
                "_phashes": [image_phash(i.bytes) for i in images] if need_phash else [],
            })
        if skipped.get("filtered") and part == 0:  # every part reads the whole source: count once
            report.extra["filtered_by_include"] = {source: skipped["filtered"]}
        if unread:
            report.extra[UNREAD_IMAGE_COLUMNS] = {source: {"read_from": images_read_from(spec), "columns": unread}}
        quarantine.close()
        staged.manifest_extra.update({"stage": "curate-scan", "source": source, "part": part, "parts": parts, "report": report.state()})
    return {"source": source, "part": part, "rows": staged.rows_written, "quarantined": quarantine.count, "files_read": sorted(files)}


def finish_curate(cfg: CurateConfig, staged_dirs: list[str | Path], out_dir: str | Path, probes: bool = False) -> dict[str, Any]:
    """The steps over all staged rows: exact duplicates (the first staged row wins),
    contamination (of a row or of its near-duplicate group), near duplicates, then the pools; write
    the curated shards, quarantine and report. Returns `counts`, `per_pool`, `per_category`,
    `files_read`, with benchmarks `benchmark_items`, and `warnings` when there are any.

    Raises `SourceError` for a source or a benchmark none of whose rows is usable (the report and
    quarantine are written, no shards). `probes`: leave `coldstart` / `rl` to the selection stage
    (rows get pool null, `eval` stays)."""
    out_dir = Path(out_dir)
    started = time.time()
    report = StepReport("curate")
    quarantine = Quarantine(out_dir, "curate")
    for staged in staged_dirs:
        manifest = read_manifest(staged)
        if manifest is None:
            raise ShardError(f"{staged}: a curate scan did not finish (no manifest)")
        report.merge(manifest["report"])
        quarantine.extend(Path(staged) / QUARANTINE_DIR)
    # a source's column that looks like images but is not read: its rows went on without them, which the user must know
    report.extra.setdefault(WARNINGS, []).extend(unread_image_warning(name, entry["read_from"], entry["columns"])
                                                 for name, entry in report.extra.pop(UNREAD_IMAGE_COLUMNS, {}).items())
    _fail_on_filters_that_keep_nothing(cfg, report, quarantine, out_dir)
    _fail_on_unusable_sources(cfg, report, quarantine, out_dir)
    timings: dict[str, float] = {}
    # The benchmarks first: one that cannot be used stops the run before the long steps.
    tick = time.time()
    files: set[str] = set()
    index = _benchmark_index(cfg, report, quarantine, out_dir, files)
    timings["read_benchmarks_s"] = round(time.time() - tick, 3)

    # Exact duplicates and the hashes of the rest, from a few columns of the staged rows.
    tick = time.time()
    exact: dict[int, str] = {}
    seen: dict[str, str] = {}  # content key -> the origin of the first row with it
    first_at: dict[str, str] = {}
    items: list[DedupItem] = []
    ordinal = 0
    for staged in staged_dirs:
        for file in shard_files(staged):
            columns = pq.read_table(file, columns=["id", "question", "_content_key", "_origin", "_phashes"]).to_pydict()
            for sample_id, question, key, origin, phashes in zip(*columns.values(), strict=True):
                if key in seen:
                    exact[ordinal] = f"exact_duplicate: of {seen[key]}"
                elif sample_id in first_at:  # a source's own ids must be unique too
                    exact[ordinal] = f"duplicate_id: {sample_id} (first at {first_at[sample_id]})"
                else:
                    seen[key] = origin
                    first_at[sample_id] = origin
                    items.append(DedupItem(sample_id, question, list(phashes)))
                ordinal += 1
    timings["exact_dedup_s"] = round(time.time() - tick, 3)

    # Over all rows: near-duplicate groups, then contamination of rows and of their groups.
    tick = time.time()
    near = {dup.key: dup for dup in find_near_duplicates(items, cfg.near_dup)} if cfg.near_dup.enabled else {}
    timings["near_dedup_s"] = round(time.time() - tick, 3)
    tick = time.time()
    contaminated = _contamination(items, near, index) if index is not None else {}
    timings["decontaminate_s"] = round(time.time() - tick, 3)

    # Pass 2: write the survivors with their pool.
    tick = time.time()
    per_pool: dict[str, int] = {}

    def passes(step: str, reason: str | None, row: dict[str, Any], origin: str) -> bool:
        """Count the row through `step`; a reason drops it to the quarantine."""
        report.seen(step)
        if reason is None:
            report.kept(step)
            return True
        report.dropped(step, reason, row["source"], row["category"])
        quarantine.add(Sample.from_row(row).to_row(), reason, origin)
        return False

    with ShardWriter(out_dir, SAMPLE_SCHEMA, rows_per_shard=cfg.rows_per_shard) as writer:
        ordinal = 0
        for staged in staged_dirs:
            for full in iter_rows(staged, STAGED_SCHEMA):
                origin = full["_origin"]
                row = {k: v for k, v in full.items() if k not in STAGED_COLUMNS}
                source, category = row["source"], row["category"]
                exact_reason, ordinal = exact.get(ordinal), ordinal + 1
                if not passes("exact_dedup", exact_reason, row, origin):
                    continue
                hit = contaminated.get(row["id"])
                if index is not None and not passes("decontaminate", hit and hit["reason"], row, origin):
                    continue
                dup = near.get(row["id"])
                if not passes("near_dedup", dup and f"{dup.reason}: of {dup.of}", row, origin):
                    continue
                report.seen("split")
                pool = assign_pool(row["id"], cfg.split, cfg.seed)
                if probes and pool != "eval":
                    pool = None  # the selection stage decides from the probes
                report.kept("split")
                report.out(source, category)
                writer.write({**row, "pool": pool})
                key = pool or "to_select"  # probed rows wait for the select stage to give their pool
                per_pool[key] = per_pool.get(key, 0) + 1
        timings["write_s"] = round(time.time() - tick, 3)
        quarantine_manifest = quarantine.close()
        counts = {
            "rows_in": report.steps.get("validate", {}).get("in", 0),
            "invalid": sum(report.steps.get("validate", {}).get("dropped", {}).values()),
            "duplicates": sum(report.steps.get("exact_dedup", {}).get("dropped", {}).values()),
            "near_duplicates": sum(report.steps.get("near_dedup", {}).get("dropped", {}).values()),
            "contaminated": sum(report.steps.get("decontaminate", {}).get("dropped", {}).values()),
            "rows_out": writer.rows_written,
        }
        if report.extra.get("filtered_by_include"):  # rows `include` left out: not read, not invalid
            counts["filtered_by_include"] = sum(report.extra["filtered_by_include"].values())
        decontamination = [{k: v for k, v in entry.items() if k != "reason"} for entry in contaminated.values()]
        report.extra.update({"per_pool": per_pool, "decontamination": decontamination, "timings": timings})
        per_category = {k: v["out"] for k, v in report.by_category.items() if v["out"]}  # rows out per category
        writer.manifest_extra.update(
            {
                "stage": "curate",
                "counts": counts,
                "per_pool": per_pool,
                "per_category": per_category,
                "quarantine_reasons": quarantine_manifest["reasons"],
                "near_dup": {**cfg.near_dup.model_dump(), "datasketch": importlib.metadata.version("datasketch"),
                             "imagehash": importlib.metadata.version("ImageHash"), "hash_scheme": HASH_SCHEME},
                "seconds_total": round(time.time() - started, 3),
            }
        )
    if counts["rows_in"] and not counts["rows_out"]:  # as every row unusable: an empty set fed downstream is a mistake, not a result
        removed = ", ".join(f"{counts[key]} {what}" for key, what in (
            ("invalid", "unusable"), ("duplicates", "duplicates"), ("near_duplicates", "near duplicates"),
            ("contaminated", "contaminated by a benchmark")) if counts[key])
        _fail(report, quarantine, out_dir, f"no row is left: all {counts['rows_in']} rows were removed ({removed}); nothing to "
                                           f"curate; each row's reason is in {out_dir / QUARANTINE_DIR}")
    report.write(out_dir)
    summary: dict[str, Any] = {"counts": counts, "per_pool": per_pool, "per_category": per_category}
    if index is not None:
        summary["benchmark_items"] = index.items
    if report.extra.get(WARNINGS):
        summary[WARNINGS] = report.extra[WARNINGS]
    return {**summary, "files_read": sorted(files)}


def _contamination(items: list[DedupItem], near: dict[str, Duplicate], index: ContaminationIndex) -> dict[str, dict[str, str]]:
    """The contaminated rows by id, each `{sample_id, benchmark, item, kind, evidence, reason}`:
    the rows that match a benchmark item themselves (kind `text` or `image`), and the other
    members of their near-duplicate groups (kind `near_duplicate`; a group is a kept row and the
    rows `near` makes its near duplicates), in row order."""
    hits = {item.key: hit for item in items if (hit := index.check(item.question, item.phashes)) is not None}
    group_hit = {}  # the kept row of a group -> its first member that matched
    for item in items:
        if item.key in hits:
            group_hit.setdefault(near[item.key].of if item.key in near else item.key, item.key)
    found = {}
    for item in items:
        key = item.key
        member = key if key in hits else group_hit.get(near[key].of if key in near else key)
        if member is None:
            continue
        hit = hits[member]
        if member == key:
            kind, evidence = hit.kind, hit.evidence
            reason = f"contaminated_{hit.kind}: {hit.benchmark}/{hit.item} ({hit.evidence})"
        else:
            kind, evidence = "near_duplicate", f"near duplicate of {member} ({hit.kind}: {hit.evidence})"
            reason = f"contaminated_near_duplicate: {hit.benchmark}/{hit.item} (a near duplicate of {member}, which matched it)"
        found[key] = {"sample_id": key, "benchmark": hit.benchmark, "item": hit.item, "kind": kind, "evidence": evidence, "reason": reason}
    return found


def _fail_on_filters_that_keep_nothing(cfg: CurateConfig, report: StepReport, quarantine: Quarantine, out_dir: Path) -> None:
    """A source whose `include` left no row (or none but unusable ones) is a filter that does not
    match its data: `_fail` naming the filter, what it removed, and the values its columns hold,
    not blaming the unusable rest for what the filter removed."""
    filtered = report.extra.get("filtered_by_include") or {}
    for spec in cfg.sources:
        entry = report.by_source.get(spec.source_name, {"in": 0, "dropped": {}})
        if not filtered.get(spec.source_name) or sum(entry["dropped"].values()) < entry["in"]:
            continue
        rule = ",".join(f"include.{column}={'|'.join(map(include_value_text, allowed))}" for column, allowed in spec.include.items())
        values = "; ".join(f"{column} has {', '.join(found) if found else 'no value'}" for column, found in include_values_seen(spec).items())
        rest = (f" and the other {entry['in']} are unusable ({', '.join(f'{n} {r}' for r, n in entry['dropped'].items())})"
                if entry["in"] else "")
        _fail(report, quarantine, out_dir, f"source {spec.source_name!r}: {rule} removed {filtered[spec.source_name]} rows{rest}, "
                                           f"so none is left" + (f" (in its first rows, {values})" if values else "")
                                           + "; check the filter's column and values")


def _fail_on_unusable_sources(cfg: CurateConfig, report: StepReport, quarantine: Quarantine, out_dir: Path) -> None:
    """A source none of whose rows passed validation is a mistake in its config (a missing
    category, a wrong field mapping), not data to drop quietly: `_fail` with the most common
    reason and its fix. A source with no rows at all is a warning; every source empty, a `_fail`
    naming their files."""
    empty = [spec for spec in cfg.sources if report.by_source.get(spec.source_name, {}).get("in", 0) == 0]
    filtered = report.extra.get("filtered_by_include", {})

    def no_rows(spec: SourceSpec) -> str:
        left_out = filtered.get(spec.source_name)
        return f"source {spec.source_name!r} ({spec.path}): no rows" + (f" ({left_out} left out by `include`)" if left_out else "")

    if empty and len(empty) == len(cfg.sources):
        _fail(report, quarantine, out_dir, "; ".join(no_rows(spec) for spec in empty) + ": nothing to curate (an empty file, or a "
                                           "filter that keeps nothing)")
    report.extra.setdefault(WARNINGS, []).extend(no_rows(spec) for spec in empty)
    names = {spec.source_name for spec in cfg.sources}
    dead = {name: entry for name, entry in report.by_source.items()
            if name in names and entry["in"] > 0 and sum(entry["dropped"].values()) >= entry["in"]}
    if not dead:
        return
    name, entry = next(iter(dead.items()))
    reason, count = max(entry["dropped"].items(), key=lambda kv: kv[1])
    others = f" ({len(dead) - 1} more source(s) likewise)" if len(dead) > 1 else ""
    spec = next(spec for spec in cfg.sources if spec.source_name == name)
    _fail(report, quarantine, out_dir, f"source {name!r}: all {entry['in']} rows are unusable, {count} for {reason}: "
                                       f"{missing_column_hint(spec, reason) or rows_fix_hint(reason)}; each row's reason is in {out_dir / QUARANTINE_DIR}{others}")


class CurateStopped(SourceError):
    """A curate run ended for a mistake in its config or sources after writing its quarantine and
    report, which say why row by row (`_fail`): its output folder is kept."""


def _fail(report: StepReport, quarantine: Quarantine, out_dir: Path, message: str) -> None:
    """End the run for a mistake in the config: write the quarantine and report (they say why, row
    by row), leave no curated shards, and raise `CurateStopped(message)` (a `SourceError`)."""
    ShardWriter(out_dir, SAMPLE_SCHEMA)  # clears an earlier run's shards and manifest: this run has none
    quarantine.close()
    report.extra.setdefault(WARNINGS, []).append(f"stopped: {message}")
    report.write(out_dir)
    raise CurateStopped(message)


def _first_missing(path: Path) -> Path | None:
    """The topmost of `path` and the folders above it that do not exist (what `mkdir(parents=True)`
    would make first); None when `path` exists."""
    missing = None
    for folder in [path, *path.absolute().parents]:
        if folder.exists():
            break
        missing = folder
    return missing


def _remove_unfinished(out_dir: Path, made: Path | None, before: set[str]) -> None:
    """Remove what a stopped curate call wrote: all of `made` (the top folder it made), or, in a
    folder that was there, the entries that were not (`before`) and its shard writers' temporary
    files (`.part-00000.parquet.tmp-…`); an earlier run's files there stay."""
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        return
    if not out_dir.is_dir():
        return
    for entry in out_dir.iterdir():
        if entry.name not in before:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
    for folder in (out_dir, out_dir / QUARANTINE_DIR):
        for temporary in folder.glob(".*.tmp-*") if folder.is_dir() else ():
            temporary.unlink(missing_ok=True)


def run_curate(cfg: CurateConfig, out_dir: str | Path, probes: bool = False) -> dict[str, Any]:
    """Read every source and write the curated shards, quarantine and report to `out_dir`: the
    scans one after another, then `finish_curate` (the flow runs the scans as parallel tasks).

    `probes`: leave `coldstart` / `rl` to the selection stage (rows get pool null, `eval` stays).

    The scans are staged in `out_dir/_staged/`, removed when the call ends, whether it finished or
    failed (a source that stops a scan, every row unusable, an interrupt): one call by hand does
    not resume, so a failed one leaves what `_fail` leaves (its report and quarantine) and no
    staging. A call stopped before that (an interrupt, a source that cannot be read) leaves nothing
    it made: whatever it wrote is removed (the `quarantine/` the final step opens first, a shard or
    temporary file), and so is an `out_dir` it made (and the folders above it that it made). The
    flow keeps its scans (cached tasks, which a rerun reuses)."""
    out_dir = Path(out_dir)
    made = _first_missing(out_dir)  # the top folder this call makes, if any
    before = set() if made is not None or not out_dir.is_dir() else {entry.name for entry in out_dir.iterdir()}
    staging = out_dir / STAGING_DIR
    staged_dirs = []
    ended = False  # finished, or stopped by `_fail` with its report written
    try:
        for index in range(len(cfg.sources)):
            for part in range(cfg.scan_parts):
                staged_dirs.append(staging / staged_dir_name(index, part))
                scan_source(cfg, index, staged_dirs[-1], part, cfg.scan_parts)
        summary = finish_curate(cfg, staged_dirs, out_dir, probes)
        ended = True
    except CurateStopped:
        ended = True
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not ended:
            _remove_unfinished(out_dir, made, before)
    summary.pop("files_read")  # for the flow's cache records
    return summary
