"""Selection and the split: the paper's data rule applied to the student's probe results.

For each curated candidate, with its pass rates over k attempts without tools (p0) and with tools (p1):

1. not probed, or at least k of its 2k probe attempts failed at the endpoint → dropped
   (`not_probed` / `probe_failed`: its pass rates would say "hard" for the wrong reason);
2. p0 > `max_pass_rate_no_tools` → dropped (`too_easy`: the student solves it without tools);
3. p1 > 0 (solved with tools) → `rl` when the tool benefit p1 - p0 ≥ `min_tool_benefit`, else
   dropped (`no_tool_benefit`);
4. p1 = 0 (still unsolved with tools) → `coldstart` (the teacher writes trajectories for it).

Then each pool is brought to its target category mix (`mix`) by keeping, per category, the rows
with the lowest seeded hash: reproducible, and stable as data is added. Rows over a category's
quota are dropped (`over_mix_quota`). `eval` rows (held out at curation) pass through unchanged.
The probes are read by column name from their shards, so thresholds change without new probes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import polars as pl
from pydantic import Field, field_validator

from curation.mapping import category_names
from curation.report import StepReport
from curation.schema import SAMPLE_SCHEMA, Sample
from curation.shards import Quarantine, ShardWriter, read_table, shard_files
from curation.stage import pool_names, unit_hash
from curation.strict_config import Seed, StrictConfig

PROBE_COLUMNS = ("sample_id", "k", "pass_rate_no_tools", "pass_rate_tools", "tool_calls_mean", "failed_attempts")


class SelectConfig(StrictConfig):
    max_pass_rate_no_tools: float = Field(0.5, ge=0, le=1)  # the difficulty band's easy edge
    min_tool_benefit: float = Field(0.0, ge=-1, le=1)  # for RL: pass rate with tools - without
    # Target category shares per pool, e.g. {rl: {perception: 0.519, reasoning: 0.416, search: 0.065}};
    # a pool without an entry keeps every selected row.
    mix: dict[str, dict[str, float]] = Field(default_factory=dict)
    seed: Seed = 0
    rows_per_shard: int = Field(1000, ge=1)

    @field_validator("mix", mode="before")
    @classmethod
    def _our_categories(cls, mix: Any) -> Any:
        if not isinstance(mix, dict):
            return mix
        return {pool: category_names(shares, pool) for pool, shares in mix.items()}  # reported at `select.mix`

    @field_validator("mix")
    @classmethod
    def _shares(cls, mix: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        pool_names(list(mix), ("coldstart", "rl"))  # the pools select makes (eval rows pass through)
        for pool, shares in mix.items():
            if any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
                raise ValueError(f"mix.{pool}: shares must be non-negative with a positive sum, got {shares}")
        return mix


class ProbeDataError(ValueError):
    """Probe shards that cannot be used; names the directory and what is missing."""


def read_probes(probe_dir: str | Path) -> pl.DataFrame:
    files = shard_files(probe_dir)
    if not files:
        raise ProbeDataError(f"no probe shards in {probe_dir}")
    probes = pl.read_parquet(files)
    missing = [c for c in PROBE_COLUMNS if c not in probes.columns]
    if missing:
        raise ProbeDataError(f"{probe_dir}: probe shards lack column(s) {missing}")
    return probes


def rule_pool(p0: float | None, p1: float | None, cfg: SelectConfig) -> tuple[str, str | None]:
    """(pool, reason it was dropped) for one candidate's pass rates; the paper's rule."""
    if p0 is None or p1 is None:
        return "dropped", "not_probed"
    if p0 > cfg.max_pass_rate_no_tools:
        return "dropped", "too_easy"
    if p1 > 0:
        return ("rl", None) if p1 - p0 >= cfg.min_tool_benefit else ("dropped", "no_tool_benefit")
    return "coldstart", None


def mix_quotas(available: dict[str, int], shares: dict[str, float]) -> dict[str, int]:
    """Rows to keep per category: the largest total whose split by `shares` fits what is available."""
    total_share = sum(shares.values())
    targets = {c: shares.get(c, 0.0) / total_share for c in available}
    limits = [available[c] / t for c, t in targets.items() if t > 0]
    if not limits:
        return {c: 0 for c in available}
    total = min(limits)
    return {c: min(available[c], int(round(targets[c] * total))) for c in available}


def run_select(cfg: SelectConfig, curated_dir: str | Path, probe_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Split the curated candidates into cold start and RL by their probes; write shards and a report."""
    out_dir = Path(out_dir)
    started = time.time()
    curated = pl.from_arrow(read_table(curated_dir, SAMPLE_SCHEMA))
    probes = read_probes(probe_dir).select(PROBE_COLUMNS).unique("sample_id", keep="first", maintain_order=True)
    joined = curated.join(probes, left_on="id", right_on="sample_id", how="left", maintain_order="left")  # curated order: pools do not depend on probe timing
    report = StepReport("select")
    quarantine = Quarantine(out_dir, "select")

    decided = []
    for row in joined.iter_rows(named=True):
        report.entered(row["source"], row["category"])
        if row["pool"] == "eval":
            decided.append((row, "eval", None))
            continue
        report.seen("rule")
        if row["failed_attempts"] is not None and row["failed_attempts"] >= row["k"]:
            pool, reason = "dropped", "probe_failed"
        else:
            pool, reason = rule_pool(row["pass_rate_no_tools"], row["pass_rate_tools"], cfg)
        if reason is not None:
            report.dropped("rule", reason, row["source"], row["category"])
        else:
            report.kept("rule")
        decided.append((row, pool, reason))

    keep: dict[str, str | None] = {row["id"]: reason for row, _, reason in decided}
    quotas: dict[str, dict[str, int]] = {}
    for pool, shares in cfg.mix.items():
        members = [row for row, p, _ in decided if p == pool]
        available: dict[str, int] = {}
        for row in members:
            available[row["category"]] = available.get(row["category"], 0) + 1
        quotas[pool] = mix_quotas(available, shares)
        taken: dict[str, int] = {}
        for row in sorted(members, key=lambda r: unit_hash(cfg.seed, r["id"])):
            report.seen("mix")
            category = row["category"]
            if taken.get(category, 0) < quotas[pool][category]:
                taken[category] = taken.get(category, 0) + 1
                report.kept("mix")
            else:
                keep[row["id"]] = "over_mix_quota"
                report.dropped("mix", "over_mix_quota", row["source"], category)

    per_pool: dict[str, int] = {}
    sample_fields = list(SAMPLE_SCHEMA.names)
    with ShardWriter(out_dir, SAMPLE_SCHEMA, rows_per_shard=cfg.rows_per_shard) as writer:
        for row, pool, _ in decided:
            reason = keep[row["id"]]
            sample_row = {k: row[k] for k in sample_fields}
            if row["pass_rate_no_tools"] is not None:
                sample_row["difficulty"] = 1.0 - row["pass_rate_no_tools"]
                sample_row["tool_benefit"] = row["pass_rate_tools"] - row["pass_rate_no_tools"]
            if reason is not None:
                quarantine.add(Sample.from_row(sample_row).to_row(), reason, row["id"])
                continue
            writer.write({**sample_row, "pool": pool})
            report.out(row["source"], row["category"])
            per_pool[pool] = per_pool.get(pool, 0) + 1
        per_pool_category = (
            pl.DataFrame([{"pool": p, "category": r["category"]} for r, p, _ in decided if keep[r["id"]] is None])
            .group_by("pool", "category").len().sort("pool", "category").to_dicts()
            if per_pool else []
        )
        report.extra.update({"per_pool": per_pool, "per_pool_category": per_pool_category, "quotas": quotas,
                             "thresholds": cfg.model_dump(exclude={"rows_per_shard"})})
        quarantine_manifest = quarantine.close()
        writer.manifest_extra.update({"stage": "select", "per_pool": per_pool, "quarantine_reasons": quarantine_manifest["reasons"],
                                      "seconds_total": round(time.time() - started, 3)})
    report.write(out_dir)
    return {"per_pool": per_pool, "dropped": quarantine_manifest["reasons"], "per_pool_category": per_pool_category}
