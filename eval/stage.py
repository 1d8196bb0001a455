"""The evaluate stage: the shared agent loop on held-out samples, judged, with `metrics.json`.

A tool run and, by default, the tool-free control (same model, no tools) side by side, with
tool-usage statistics: an independent study found most tool-solved problems are solved without
tools too, so a tool number alone says little.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from curation.schema import SAMPLE_SCHEMA, Sample
from curation.shards import ShardWriter, atomic_write_json, iter_rows
from synth import aio
from synth.agent import AgentConfig, ToolBox, open_toolbox, run_episode
from synth.judge import Judge, JudgeConfig
from synth.policy import ChatPolicy, TransformersPolicy
from synth.search import SearchConfig
from synth.trajectory import TRAJECTORY_SCHEMA


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pools: list[str] = Field(default_factory=lambda: ["eval"])
    tool_free_control: bool = True
    max_samples: int | None = None
    agent: AgentConfig = Field(default_factory=lambda: AgentConfig(max_turns=4, max_tokens_per_turn=64, force_think_prefix=True))


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Accuracy overall and per category, and tool usage, for one run's trajectories."""
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_category[row["category"]].append(row)

    def stats(group: list[dict[str, Any]]) -> dict[str, Any]:
        n = len(group)
        calls = [len(r["tool_calls"]) for r in group]
        tools: dict[str, int] = defaultdict(int)
        for r in group:
            for call in r["tool_calls"]:
                tools[call["tool"]] += 1
        return {
            "n": n,
            "accuracy": sum(r["correct"] for r in group) / n if n else 0.0,
            "format_ok": sum(r["format_ok"] for r in group) / n if n else 0.0,
            "mean_reward": sum(r["reward"] for r in group) / n if n else 0.0,
            "judge_failed": sum(r["judge_failed"] for r in group),
            "share_using_tools": sum(c > 0 for c in calls) / n if n else 0.0,
            "tool_calls_per_sample": sum(calls) / n if n else 0.0,
            "tool_calls_by_tool": dict(tools),
            "stop_reasons": {k: sum(r["stop_reason"] == k for r in group) for k in {r["stop_reason"] for r in group}},
        }

    return {"overall": stats(rows), "per_category": {c: stats(g) for c, g in sorted(by_category.items())}}


async def _run_all(
    policy: ChatPolicy, samples: list[Sample], tools: ToolBox, runs: dict[str, AgentConfig], judge_cfg: JudgeConfig
) -> dict[str, list[dict[str, Any]]]:
    # A local model generates one sequence at a time; the loop still runs the same code path.
    # One judge for every run, so math-verify's worker pool starts once.
    judge = Judge(judge_cfg)
    try:
        return {name: [await run_episode(s, policy, tools, agent, judge=judge) for s in samples] for name, agent in runs.items()}
    finally:
        await judge.aclose()


def run_evaluate(
    cfg: EvalConfig, model_path: str | Path, curated_dir: str | Path, out_dir: str | Path, search: SearchConfig | None = None,
    judge: JudgeConfig | None = None,
) -> dict[str, Any]:
    started = time.time()
    out_dir = Path(out_dir)
    samples = [Sample.from_row(r) for r in iter_rows(curated_dir, SAMPLE_SCHEMA) if r["pool"] in cfg.pools]
    if cfg.max_samples is not None:
        samples = samples[: cfg.max_samples]
    policy = TransformersPolicy(model_path, name=Path(model_path).name)
    runs = {"tools": cfg.agent}
    if cfg.tool_free_control:
        runs["no_tools"] = cfg.agent.model_copy(update={"tools": False})
    metrics: dict[str, Any] = {"model": str(model_path), "samples": len(samples), "runs": {}}
    with open_toolbox(cfg.agent, search or SearchConfig()) as tools:
        results = aio.run(_run_all(policy, samples, tools, runs, judge or JudgeConfig()))
        for run_name, rows in results.items():
            with ShardWriter(out_dir / run_name, TRAJECTORY_SCHEMA) as writer:
                writer.write_many(rows)
                writer.manifest_extra.update({"stage": "evaluate", "run": run_name})
            metrics["runs"][run_name] = summarize(rows)
    metrics["seconds"] = round(time.time() - started, 3)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
