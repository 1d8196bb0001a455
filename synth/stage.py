"""The synthesize stage: a teacher solves cold-start samples with live tools; only verified
trajectories are kept, every rejected one goes to `rejects/` with its reason."""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationInfo, field_validator

from curation.schema import SAMPLE_SCHEMA, Sample
from curation.shards import InputOrder, Quarantine, ShardWriter, iter_rows, merge_parts
from curation.stage import PoolNames
from curation.strict_config import StrictConfig
from synth.long_cot import LongCotConfig, long_cot_rows
from synth.runtime import aio
from synth.runtime.agent import (AgentConfig, ToolBox, active_episodes, first_request, open_toolbox, require_search, run_episode,
                                 size_tool_threads)
from synth.runtime.policy import MIN_REQUEST_TIMEOUT_S, EndpointUrl, RequestOptions
from synth.runtime.preflight import Failures, preflight
from synth.runtime.request_cache import REQUESTS_DB, CachedPolicy, open_endpoint
from synth.scoring.judge import Judge, JudgeConfig
from synth.scoring.reward import RewardConfig
from synth.tools.search import SearchConfig
from synth.trajectory import TRAJECTORY_SCHEMA

REJECTS_DIR = "rejects"


class SynthConfig(StrictConfig):
    teacher_url: EndpointUrl = "http://127.0.0.1:8008/v1"
    teacher_model: str = "demo-teacher"
    api_key_env: str | None = "OPENAI_API_KEY"  # the variable holding the endpoint's key, if any
    pools: PoolNames = Field(default_factory=lambda: ["coldstart"], min_length=1)  # curation.stage.POOLS
    attempts: int = Field(2, ge=1)  # tries per sample
    keep_per_sample: int = Field(1, ge=1)  # verified trajectories kept per sample
    concurrency: int = Field(16, ge=1)  # requests in flight to the teacher
    active_episodes: int | None = Field(None, ge=1)  # samples being solved at once (a kernel each); None: concurrency × 1.25
    allow_code_errors: bool = False  # keep trajectories with a failing code cell
    verify_answers: bool = True  # keep only answers the judge finds right; False: an instruct stage's data, what a model says, right or not
    request_timeout_s: float = Field(120.0, ge=MIN_REQUEST_TIMEOUT_S)
    max_retries: int = Field(6, ge=0)  # per request: 429 (Retry-After), 5xx, time-outs, dropped, malformed, empty
    request: RequestOptions = Field(default_factory=RequestOptions)  # send_stop, extra_body, 5xx retries
    resume: bool = True  # replay answered requests from <out>/requests.sqlite after a crash
    rows_per_shard: int = Field(500, ge=1)
    long_cot: LongCotConfig | None = None  # text-only long-CoT rows mixed in at a target ratio
    agent: AgentConfig = Field(default_factory=AgentConfig)

    @field_validator("keep_per_sample")
    @classmethod
    def _keeps_no_more_than_it_tries(cls, value: int, info: ValidationInfo) -> int:
        """Each attempt yields one trajectory at most: keeping more than `attempts` would never happen,
        and the setting would silently mean `attempts`."""
        attempts = info.data.get("attempts")  # absent when attempts itself was refused
        if attempts is not None and value > attempts:
            raise ValueError(f"{value} kept per sample is more than synth.attempts ({attempts}) tries per sample; "
                             f"raise attempts to {value} or more, or keep at most {attempts}")
        return value


def reject_reason(row: dict[str, Any], allow_code_errors: bool, reward: RewardConfig | None = None,
                  verify_answers: bool = True) -> str | None:
    """Why a teacher trajectory is not fit for cold start, or None when it is. The verdict, the
    format and the answer's length cap are the row's, scored by `synth.scoring.reward.score_response` as
    GRPO and evaluation score them; `reward` gives the cap per category. `verify_answers=False` keeps
    a well-formed answered trajectory whatever the judge says of it: the instruct stage's data, not a
    cold start's."""
    if row["stop_reason"] != "answer":
        return f"no_answer:{row['stop_reason']}"
    if verify_answers and row["judge_failed"]:
        return "judge_failed"
    if verify_answers and not row["correct"]:
        return "wrong_answer"
    if (reward or RewardConfig()).capped(row["final_answer"], row["category"]):
        return "answer_too_long"
    if not row["format_ok"]:
        return "bad_format"
    if not allow_code_errors and any(c["tool"] == "python" and c["outcome"] != "ok" for c in row["tool_calls"]):
        return "code_error"
    if any(c["outcome"] == "unavailable" for c in row["tool_calls"]):
        return "tool_unavailable"  # a call the run could not answer: the trajectory cannot have used its result
    if any(c["outcome"] == "error" for c in row["tool_calls"]):
        return "tool_call_error"
    return None



Progress = Callable[[dict[str, int]], None]


async def _synthesize(
    cfg: SynthConfig, search: SearchConfig, judge_cfg: JudgeConfig, samples: list[Sample], out_dir: Path,
    quarantine: Quarantine, progress: Progress | None, reward: RewardConfig, identity_url: str | None,
) -> dict[str, Any]:
    policy, endpoint = open_endpoint(
        cfg.teacher_url, cfg.teacher_model, api_key_env=cfg.api_key_env, timeout_s=cfg.request_timeout_s,
        max_retries=cfg.max_retries, max_in_flight=cfg.concurrency, cache_path=out_dir / REQUESTS_DB if cfg.resume else None,
        options=cfg.request,
    )
    judge = Judge(judge_cfg)
    active = active_episodes(cfg.concurrency, cfg.active_episodes)
    limiter = asyncio.Semaphore(active)
    counts = {"samples": len(samples), "done": 0, "kept": 0, "rejected": 0, "failed": 0, "samples_with_trajectory": 0}
    reasons: dict[str, int] = {}
    failures = Failures()
    kept_writer = ShardWriter(out_dir, TRAJECTORY_SCHEMA, rows_per_shard=cfg.rows_per_shard)
    reject_writer = ShardWriter(out_dir / REJECTS_DIR, TRAJECTORY_SCHEMA, rows_per_shard=cfg.rows_per_shard)

    in_order = InputOrder()  # rows in the samples' order, not the responses': a rerun trains on the same data order

    async def solve(index: int, sample: Sample, tools: ToolBox) -> None:
        kept = 0
        writes: list[Callable[[], Any]] = []
        async with limiter:
            for attempt in range(cfg.attempts):
                try:
                    row = await run_episode(sample, policy, tools, cfg.agent, attempt=attempt, judge=judge, reward=reward)
                except Exception as exc:  # endpoint down after retries, bad response, ...
                    counts["failed"] += 1
                    writes.append(functools.partial(quarantine.add, sample.to_row(), f"teacher_failed: {failures.add(exc)}", sample.id))
                    break
                reason = reject_reason(row, cfg.allow_code_errors, reward, cfg.verify_answers)
                if reason is None:
                    writes.append(functools.partial(kept_writer.write, row))
                    counts["kept"] += 1
                    kept += 1
                    if kept >= cfg.keep_per_sample:
                        break
                else:
                    writes.append(functools.partial(reject_writer.write, {**row, "reject_reason": reason}))
                    counts["rejected"] += 1
                    reasons[reason] = reasons.get(reason, 0) + 1
        in_order.finished(index, writes)
        counts["samples_with_trajectory"] += kept > 0
        counts["done"] += 1
        if progress is not None:
            progress(counts)

    try:
        if samples:  # nothing goes out before the endpoint answered one real request
            await preflight(endpoint, "teacher", first_request(samples[0], cfg.agent, "synth"), identity_url, "synth.teacher_url")
            await judge.preflight()
        size_tool_threads(active)
        with open_toolbox(cfg.agent, search) as tools:
            await asyncio.gather(*(solve(i, s, tools) for i, s in enumerate(samples)))
    finally:
        await policy.aclose()
        await judge.aclose()
    counts["requests_sent"] = endpoint.sent
    counts["requests_replayed"] = policy.replayed if isinstance(policy, CachedPolicy) else 0
    counts["request_retries"] = endpoint.retries
    summary = _close(cfg, kept_writer, reject_writer, counts, reasons, quarantine)
    summary["failure_causes"] = dict(failures.causes)
    failures.raise_if_all(len(samples), "samples", f"synthesize: teacher endpoint {cfg.teacher_url} (model {cfg.teacher_model!r})",
                          str(out_dir / "quarantine"))
    return summary


def _close(cfg: SynthConfig, kept_writer: ShardWriter, reject_writer: ShardWriter, counts: dict[str, Any], reasons: dict[str, int],
           quarantine: Quarantine) -> dict[str, Any]:
    """Mix in the long-CoT rows (their unusable rows to `quarantine`) and write both manifests (last:
    a directory with one is complete). The summary's `files_read`: the image files the long-CoT rows
    read (the flow stamps them, so a changed image makes the stage stale); `warnings`: when no
    long-CoT row was usable."""
    reject_writer.manifest_extra["reasons"] = reasons
    reject_writer.close()
    long_cot_report = None
    files: set[str] = set()
    if cfg.long_cot is not None:
        mixed, long_cot_report, unusable = long_cot_rows(cfg.long_cot, counts["kept"], cfg.agent.profile, files=files)
        for row, reason, origin in unusable:
            quarantine.add(row, reason, origin)
        kept_writer.write_many(mixed)
        counts["long_cot"] = len(mixed)
    kept_writer.manifest_extra.update(
        {"stage": "synthesize", "counts": counts, "reject_reasons": reasons, "teacher": cfg.teacher_model, "long_cot": long_cot_report}
    )
    kept_writer.close()
    summary = {"counts": counts, "reject_reasons": reasons, "long_cot": long_cot_report, "files_read": sorted(files)}
    if long_cot_report and long_cot_report["warnings"]:
        summary["warnings"] = list(long_cot_report["warnings"])
    return summary


def run_synthesize(
    cfg: SynthConfig, curated_dir: str | Path, out_dir: str | Path, search: SearchConfig | None = None,
    judge: JudgeConfig | None = None, progress: Progress | None = None, reward: RewardConfig | None = None,
    limit: int | None = None, identity_url: str | None = None,
) -> dict[str, Any]:
    """Synthesize trajectories for the curated samples of `cfg.pools` (the first `limit` of them,
    when given); write shards to `out_dir`.

    `curated_dir` is a shard directory or one shard file (the flow runs a task per shard, with
    `long_cot` off, then `merge_synthesized`). `search`, `judge` and `reward` configure the tools,
    the judge and the scoring (the pipeline shares them with GRPO and evaluation). `identity_url`
    stands for the teacher's URL in request-cache keys (a managed server's port changes every run).

    Raises `synth.runtime.endpoint.EndpointError` (one line) when the teacher fails the preflight, or when
    every sample failed (naming the top cause and its count; the outputs are written first)."""
    out_dir = Path(out_dir)
    started = time.time()
    quarantine = Quarantine(out_dir, "synthesize")
    samples = [Sample.from_row(r) for r in iter_rows(curated_dir, SAMPLE_SCHEMA) if r["pool"] in cfg.pools][:limit]
    require_search(samples, cfg.agent, search or SearchConfig(), "synthesize")
    try:
        summary = aio.run(_synthesize(cfg, search or SearchConfig(), judge or JudgeConfig(), samples, out_dir, quarantine, progress,
                                      reward or RewardConfig(), identity_url))
    finally:
        quarantine.close()
    summary["seconds"] = round(time.time() - started, 3)
    return summary


def merge_synthesized(cfg: SynthConfig, shard_dirs: list[str | Path], out_dir: str | Path) -> dict[str, Any]:
    """One output from the per-shard outputs, in order: their trajectories, rejects and quarantine
    (hard links, not copies), summed counts, then the long-CoT mix over the total."""
    out_dir = Path(out_dir)
    kept_writer = ShardWriter(out_dir, TRAJECTORY_SCHEMA, rows_per_shard=cfg.rows_per_shard)
    reject_writer = ShardWriter(out_dir / REJECTS_DIR, TRAJECTORY_SCHEMA, rows_per_shard=cfg.rows_per_shard)
    quarantine = Quarantine(out_dir, "synthesize")
    counts, manifests = merge_parts(shard_dirs, kept_writer, quarantine)
    reasons: dict[str, int] = {}
    for shard_dir, manifest in zip(shard_dirs, manifests, strict=True):
        reject_writer.adopt(Path(shard_dir) / REJECTS_DIR)
        for reason, n in manifest["reject_reasons"].items():
            reasons[reason] = reasons.get(reason, 0) + n
    try:
        return _close(cfg, kept_writer, reject_writer, counts, reasons, quarantine)
    finally:
        quarantine.close()
