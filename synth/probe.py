"""Student probes: pass@k of the student model without tools and with tools, per sample.

The shared agent loop runs each curated candidate k times in each mode against the student's
endpoint; the results are stored per sample (`PROBE_SCHEMA`), so the selection stage
(`curation.select`) can change its thresholds without asking the model again. Requests go through
the same crash-safe cache as synthesis: a re-run after a crash re-sends only what was in flight.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
from pydantic import Field

from curation.schema import SAMPLE_SCHEMA, Sample, hf_value, with_hf_features
from curation.shards import InputOrder, Quarantine, ShardWriter, iter_rows, merge_parts
from curation.strict_config import StrictConfig
from synth.runtime import aio
from synth.runtime.agent import (AgentConfig, ToolBox, active_episodes, first_request, open_toolbox, require_search, run_episode,
                                 size_tool_threads)
from synth.runtime.policy import MIN_REQUEST_TIMEOUT_S, EndpointUrl, RequestOptions
from synth.runtime.preflight import Failures, preflight
from synth.runtime.request_cache import REQUESTS_DB, CachedPolicy, open_endpoint
from synth.scoring.judge import Judge, JudgeConfig
from synth.scoring.reward import RewardConfig
from synth.tools.search import SearchConfig

PROBE_SCHEMA_VERSION = "probe/1"
PROBE_SCHEMA = with_hf_features(
    pa.schema(
        [
            pa.field("sample_id", pa.string(), nullable=False),
            pa.field("category", pa.string(), nullable=False),
            pa.field("student", pa.string(), nullable=False),
            pa.field("k", pa.int32(), nullable=False),
            pa.field("passes_no_tools", pa.int32(), nullable=False),
            pa.field("passes_tools", pa.int32(), nullable=False),
            pa.field("pass_rate_no_tools", pa.float64(), nullable=False),
            pa.field("pass_rate_tools", pa.float64(), nullable=False),
            pa.field("tool_calls_mean", pa.float64(), nullable=False),  # per attempt with tools
            pa.field("judge_failures", pa.int32(), nullable=False),
            pa.field("failed_attempts", pa.int32(), nullable=False),  # the endpoint failed after its retries
        ]
    ),
    {
        "sample_id": hf_value("string"), "category": hf_value("string"), "student": hf_value("string"), "k": hf_value("int32"),
        "passes_no_tools": hf_value("int32"), "passes_tools": hf_value("int32"), "pass_rate_no_tools": hf_value("float64"),
        "pass_rate_tools": hf_value("float64"), "tool_calls_mean": hf_value("float64"), "judge_failures": hf_value("int32"),
        "failed_attempts": hf_value("int32"),
    },
    PROBE_SCHEMA_VERSION,
)



class ProbeInputError(ValueError):
    """Curated shards with nothing to probe; says how to make some."""


class ProbeConfig(StrictConfig):
    student_url: EndpointUrl = "http://127.0.0.1:8008/v1"
    student_model: str = "demo-student"
    api_key_env: str | None = "OPENAI_API_KEY"
    k: int = Field(4, ge=1)  # attempts per sample in each mode
    temperature: float = Field(1.0, ge=0)  # sampled, so k attempts differ
    concurrency: int = Field(16, ge=1)  # requests in flight to the student
    active_episodes: int | None = Field(None, ge=1)  # episodes run at once (a kernel each); None: concurrency × 1.25
    request_timeout_s: float = Field(120.0, ge=MIN_REQUEST_TIMEOUT_S)
    max_retries: int = 6
    request: RequestOptions = Field(default_factory=RequestOptions)  # send_stop, extra_body, 5xx retries
    resume: bool = True
    rows_per_shard: int = 1000
    agent: AgentConfig = Field(default_factory=lambda: AgentConfig(max_turns=6))


def _mode(agent: AgentConfig, tools: bool, temperature: float) -> AgentConfig:
    return agent.model_copy(update={"tools": tools, "temperature": temperature})


async def _probe(
    cfg: ProbeConfig, samples: list[Sample], search: SearchConfig, judge_cfg: JudgeConfig, out_dir: Path,
    quarantine: Quarantine, progress: Callable[[dict[str, int]], None] | None, reward: RewardConfig, identity_url: str | None,
) -> dict[str, Any]:
    policy, endpoint = open_endpoint(
        cfg.student_url, cfg.student_model, api_key_env=cfg.api_key_env, timeout_s=cfg.request_timeout_s,
        max_retries=cfg.max_retries, max_in_flight=cfg.concurrency, cache_path=out_dir / REQUESTS_DB if cfg.resume else None,
        options=cfg.request,
    )
    failures = Failures()
    judge = Judge(judge_cfg)
    active = active_episodes(cfg.concurrency, cfg.active_episodes)
    limiter = asyncio.Semaphore(active)
    modes = {"no_tools": _mode(cfg.agent, False, cfg.temperature), "tools": _mode(cfg.agent, True, cfg.temperature)}
    counts = {"samples": len(samples), "done": 0, "episodes": 0, "failed_attempts": 0}
    writer = ShardWriter(out_dir, PROBE_SCHEMA, rows_per_shard=cfg.rows_per_shard)

    in_order = InputOrder()  # rows in the samples' order, not the responses': a rerun writes the same shards

    async def attempt(sample: Sample, mode: str, index: int, tools: ToolBox) -> dict[str, Any] | str:
        """The episode's row, or why it failed."""
        async with limiter:
            try:
                # The seed differs per attempt, so a sampling endpoint gives k different answers.
                return await run_episode(sample, policy, tools, modes[mode], attempt=index, seed=index, judge=judge, reward=reward)
            except Exception as exc:  # the endpoint failed after its retries: counted, not a pass
                return f"probe_failed: {mode}/{index}: {failures.add(exc)}"

    async def probe(position: int, sample: Sample, tools: ToolBox) -> None:
        runs = {mode: await asyncio.gather(*(attempt(sample, mode, i, tools) for i in range(cfg.k))) for mode in modes}
        done = {mode: [r for r in rows if not isinstance(r, str)] for mode, rows in runs.items()}
        writes: list[Callable[[], Any]] = [functools.partial(quarantine.add, sample.to_row(), r, sample.id)
                                           for rows in runs.values() for r in rows if isinstance(r, str)]
        failed = len(writes)
        passes = {mode: sum(1 for r in rows if r["correct"]) for mode, rows in done.items()}
        writes.append(functools.partial(
            writer.write,
            {
                "sample_id": sample.id,
                "category": sample.category,
                "student": cfg.student_model,
                "k": cfg.k,
                "passes_no_tools": passes["no_tools"],
                "passes_tools": passes["tools"],
                # Failed attempts count as failures: a flaky endpoint makes items look harder, never easier.
                "pass_rate_no_tools": passes["no_tools"] / cfg.k,
                "pass_rate_tools": passes["tools"] / cfg.k,
                "tool_calls_mean": sum(len(r["tool_calls"]) for r in done["tools"]) / max(1, len(done["tools"])),
                "judge_failures": sum(1 for rows in done.values() for r in rows if r["judge_failed"]),
                "failed_attempts": failed,
            },
        ))
        in_order.finished(position, writes)
        counts["episodes"] += sum(len(rows) for rows in done.values())
        counts["failed_attempts"] += failed
        counts["done"] += 1
        if progress is not None:
            progress(counts)

    try:
        if samples:  # nothing goes out before the endpoint answered one real request (in the tool mode's shape)
            await preflight(endpoint, "student", first_request(samples[0], modes["tools"], "probe"), identity_url, "probe.student_url")
            await judge.preflight()
        size_tool_threads(active)
        with open_toolbox(modes["tools"], search) as tools:
            await asyncio.gather(*(probe(i, s, tools) for i, s in enumerate(samples)))
    finally:
        await policy.aclose()
        await judge.aclose()
    counts["requests_sent"] = endpoint.sent
    counts["requests_replayed"] = policy.replayed if isinstance(policy, CachedPolicy) else 0
    writer.manifest_extra.update({"stage": "probe", "student": cfg.student_model, "k": cfg.k, "counts": counts})
    writer.close()
    failures.raise_if_all(2 * cfg.k * len(samples), "attempts", f"probe: student endpoint {cfg.student_url} (model {cfg.student_model!r})",
                          str(out_dir / "quarantine"))
    return {"counts": counts, "failure_causes": dict(failures.causes)}


def run_probes(
    cfg: ProbeConfig, curated_dir: str | Path, out_dir: str | Path, search: SearchConfig | None = None,
    judge: JudgeConfig | None = None, progress: Callable[[dict[str, int]], None] | None = None, allow_empty: bool = False,
    reward: RewardConfig | None = None, limit: int | None = None, identity_url: str | None = None,
) -> dict[str, Any]:
    """Probe every curated candidate (rows whose pool is not yet set; the first `limit`, when given)
    and write `PROBE_SCHEMA` shards.

    `curated_dir` is a shard directory or one shard file (the flow runs a task per shard, with
    `allow_empty`: one shard may hold only held-out rows, then `merge_probes`). `identity_url`
    stands for the student's URL in request-cache keys (a managed server's port changes every run).
    Raises `synth.runtime.endpoint.EndpointError` (one line) when the student fails the preflight or every
    attempt failed."""
    out_dir = Path(out_dir)
    started = time.time()
    quarantine = Quarantine(out_dir, "probe")
    samples = [Sample.from_row(r) for r in iter_rows(curated_dir, SAMPLE_SCHEMA) if r["pool"] is None][:limit]
    require_search(samples, cfg.agent, search or SearchConfig(), "probe")
    if not samples and not allow_empty:
        raise ProbeInputError(f"no candidates in {curated_dir}: every row already has a pool; curate with probes "
                              "(`deepeyes curate --probes`, or a `probe:` section) so only the eval share is split off")
    try:
        summary = aio.run(_probe(cfg, samples, search or SearchConfig(), judge or JudgeConfig(), out_dir, quarantine, progress,
                                 reward or RewardConfig(), identity_url))
    finally:
        quarantine.close()
    summary["seconds"] = round(time.time() - started, 3)
    return summary


def merge_probes(cfg: ProbeConfig, shard_dirs: list[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """One probe output from the per-shard outputs (hard links, not copies), with summed counts."""
    writer = ShardWriter(out_dir, PROBE_SCHEMA, rows_per_shard=cfg.rows_per_shard)
    quarantine = Quarantine(out_dir, "probe")
    counts, _ = merge_parts(shard_dirs, writer, quarantine)
    quarantine.close()
    writer.manifest_extra.update({"stage": "probe", "student": cfg.student_model, "k": cfg.k, "counts": counts})
    writer.close()
    return {"counts": counts}
