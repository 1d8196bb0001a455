"""Prefect artifacts of a run: progress while synthesis and probes run, a table of each stage's
counts, and the evaluation report as Markdown, all visible in the Prefect UI beside the flow run."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, update_progress_artifact


def progress_reporter(stage: str, part: str, step: float = 0.05) -> Callable[[dict[str, int]], None]:
    """A stage task's `progress` callback that moves a progress artifact (one per input shard
    `part`), in steps of `step` (a call per sample would be a request per sample)."""
    artifact_id = create_progress_artifact(progress=0.0, key=f"{stage}-progress", description=f"{stage} {part}: share of samples done")
    last = [0.0]

    def report(counts: dict[str, int]) -> None:
        done = counts["done"] / max(1, counts["samples"])
        if done - last[0] >= step or done >= 1.0:
            last[0] = done
            update_progress_artifact(artifact_id, progress=round(100 * done, 1))

    return report


def _flatten(prefix: str, value: Any, rows: list[dict[str, Any]]) -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), inner, rows)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        rows.append({"count": prefix, "value": value})


def counts_table(stage: str, result: dict[str, Any]) -> None:
    """The stage's counts (and per-pool / per-reason breakdowns) as a table artifact."""
    rows: list[dict[str, Any]] = []
    for key in ("counts", "per_pool", "per_category", "reject_reasons", "dropped"):
        if isinstance(result.get(key), dict):
            _flatten(key, result[key], rows)
    if rows:
        create_table_artifact(table=rows, key=f"{stage}-counts", description=f"{stage}: rows in, out and dropped")


def report_markdown(report_md: str | Path) -> None:
    create_markdown_artifact(markdown=Path(report_md).read_text(), key="eval-report", description="the evaluation report")
