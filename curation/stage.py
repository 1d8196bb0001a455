"""The curate stage: sources → validated, deduplicated `Sample` shards with a pool per row."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from curation.images import ImageLimits, ImageRejected, validate_image
from curation.schema import SAMPLE_SCHEMA, ImageRef, content_id
from curation.shards import Quarantine, ShardWriter
from curation.sources import RowRejected, SourceSpec, read_source, row_to_sample


class CurateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[SourceSpec] = Field(default_factory=list)
    min_side: int = 28
    max_aspect: float = 200.0
    max_pixels: int = 64_000_000
    # Fractions of rows per pool, assigned by a seeded hash of the sample id (stable as data grows).
    split: dict[str, float] = Field(default_factory=lambda: {"coldstart": 0.5, "rl": 0.25, "eval": 0.25})
    seed: int = 0
    rows_per_shard: int = 1000

    @field_validator("split")
    @classmethod
    def _split_sums_to_one(cls, split: dict[str, float]) -> dict[str, float]:
        allowed = {"coldstart", "rl", "eval"}
        unknown = set(split) - allowed
        if unknown:
            raise ValueError(f"unknown pool(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        if any(v < 0 for v in split.values()) or abs(sum(split.values()) - 1.0) > 1e-6:
            raise ValueError(f"fractions must be non-negative and sum to 1, got {split}")
        return split


def assign_pool(sample_id: str, split: dict[str, float], seed: int) -> str:
    digest = hashlib.blake2b(f"{seed}:{sample_id}".encode(), digest_size=8).digest()
    u = int.from_bytes(digest, "big") / 2**64
    cumulative = 0.0
    for pool, fraction in split.items():
        cumulative += fraction
        if u < cumulative:
            return pool
    return list(split)[-1]


def run_curate(cfg: CurateConfig, out_dir: str | Path) -> dict:
    """Read every source, validate, drop exact duplicates, split; write shards and a report."""
    out_dir = Path(out_dir)
    started = time.time()
    limits = ImageLimits(cfg.min_side, cfg.max_aspect, cfg.max_pixels)
    quarantine = Quarantine(out_dir, "curate")
    seen: set[str] = set()
    counts = {"rows_in": 0, "invalid": 0, "duplicates": 0, "rows_out": 0}
    per_pool: dict[str, int] = {}
    per_category: dict[str, int] = {}
    with ShardWriter(out_dir, SAMPLE_SCHEMA, rows_per_shard=cfg.rows_per_shard) as writer:
        for spec in cfg.sources:
            for row, origin in read_source(spec):
                counts["rows_in"] += 1
                try:
                    if "__parse_error__" in row:
                        raise RowRejected(row["__parse_error__"])
                    sample = row_to_sample(row, spec, spec.path.parent)
                    images = [ImageRef(bytes=validate_image(i.bytes, limits), path=i.path) for i in sample.images]
                except (RowRejected, ImageRejected) as exc:
                    counts["invalid"] += 1
                    quarantine.add(row, str(exc), origin)
                    continue
                sample = sample.model_copy(update={"images": images})
                # Exact duplicates: the same normalized question with the same image contents.
                content_key = content_id(sample.question, [image.bytes for image in images])
                if content_key in seen:
                    counts["duplicates"] += 1
                    quarantine.add(sample.to_row(), "exact_duplicate", origin)
                    continue
                seen.add(content_key)
                pool = assign_pool(sample.id, cfg.split, cfg.seed)
                writer.write({**sample.to_row(), "pool": pool})
                counts["rows_out"] += 1
                per_pool[pool] = per_pool.get(pool, 0) + 1
                per_category[sample.category] = per_category.get(sample.category, 0) + 1
        quarantine_manifest = quarantine.close()
        writer.manifest_extra.update(
            {
                "stage": "curate",
                "counts": counts,
                "per_pool": per_pool,
                "per_category": per_category,
                "quarantine_reasons": quarantine_manifest["reasons"],
                "seconds_total": round(time.time() - started, 3),
            }
        )
    return {"counts": counts, "per_pool": per_pool, "per_category": per_category}
