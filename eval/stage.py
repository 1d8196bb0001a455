"""The evaluate stage: the shared agent loop on benchmarks, judged, with `metrics.json`.

Every benchmark runs with tools and, by default, as the tool-free control (same model, no tools)
side by side, with tool-usage analytics: an independent study found most tool-solved problems are
solved without tools too, so a tool number alone says little. The model is a local checkpoint
(transformers) or an OpenAI-compatible endpoint serving it (vLLM); either way responses go through
a deterministic cache (`requests.sqlite`), so re-running an evaluation or its report costs nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from curation.schema import SAMPLE_SCHEMA, Sample
from curation.shards import ShardWriter, atomic_write_json, iter_rows
from eval.benchmarks import BenchmarkSpec, load_benchmark, load_spec
from eval.metrics import summarize
from synth import aio
from synth.agent import AgentConfig, ToolBox, open_toolbox, run_episode
from synth.judge import Judge, JudgeConfig
from synth.policy import ChatPolicy, TransformersPolicy
from synth.request_cache import REQUESTS_DB, CachedPolicy, RequestCache, open_endpoint
from synth.reward import RewardConfig
from synth.search import SearchConfig
from synth.trajectory import TRAJECTORY_SCHEMA

HELDOUT = "heldout"  # the run's own held-out pool, when no benchmark is named


class EvalConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    benchmarks: list[str] = Field(default_factory=list)  # shipped names (eval/benchmarks/) or YAML paths; []: the held-out pool
    data_root: str = "data/eval"  # fills ${data_root} in benchmark files
    pools: list[str] = Field(default_factory=lambda: ["eval"])  # the held-out pool(s) of the run's shards
    tool_free_control: bool = True
    max_samples: int | None = None  # per benchmark
    model_url: str | None = None  # an OpenAI-compatible endpoint serving the model; None: load it with transformers
    model_name: str | None = None  # the endpoint's model name (required with model_url)
    # A checkpoint to evaluate instead of the run's own (loaded with transformers; with model_url,
    # only its name in reports). With model_url or model_path, the evaluate flow needs no trained model.
    model_path: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    concurrency: int = Field(16, ge=1)  # episodes in flight against an endpoint
    cache: bool = True  # the deterministic response cache
    # Real models think at length: about ten turns (the reference's evaluation allows ten tries; its
    # RL nine turns of up to 8,192 tokens), 8,192 tokens a turn, the context's 32k in all. The
    # pre-fill is the profile's (the reference: "<think>" after every observation). The tiny demo
    # model sets its own small budget in configs/demo.yaml.
    agent: AgentConfig = Field(default_factory=lambda: AgentConfig(max_turns=10, max_tokens_per_turn=8192, max_total_tokens=32768))

    @model_validator(mode="after")
    def _endpoint_named(self) -> EvalConfig:
        if self.model_url and not self.model_name:
            raise ValueError("eval.model_name: name the model the endpoint at eval.model_url serves "
                             "(vLLM: the id or path given to `vllm serve`; its /v1/models lists it)")
        return self


def benchmark_judge(cfg: JudgeConfig, spec: BenchmarkSpec) -> JudgeConfig:
    """The judge settings for one benchmark: rules and math-verify always; the LLM judge only where
    the benchmark asks for it (`judge: llm`); on a `judge: rules` benchmark its own string rule
    (`text_match`) decides a text answer that does not match exactly."""
    if spec.judge == "llm":
        return cfg
    update: dict[str, Any] = {"llm_url": None}
    if spec.judge == "rules":
        update["text_fallback"] = spec.text_match
    return cfg.model_copy(update=update)


def checkpoint_fingerprint(model_path: str | Path) -> str:
    """Names the weights in cache keys, so a retrained checkpoint at the same path is asked again."""
    path = Path(model_path)
    digest = hashlib.blake2b(digest_size=8)
    for file in sorted(path.glob("*")) if path.is_dir() else []:
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _policy(cfg: EvalConfig, model_path: str | Path | None, out_dir: Path) -> ChatPolicy:
    cache_path = out_dir / REQUESTS_DB if cfg.cache else None
    if cfg.model_url:
        policy, _ = open_endpoint(cfg.model_url, cfg.model_name or str(model_path), api_key_env=cfg.api_key_env, timeout_s=300,
                                  max_retries=6, max_in_flight=cfg.concurrency, cache_path=cache_path)
        return policy
    local = TransformersPolicy(model_path, name=f"{Path(model_path).name}@{checkpoint_fingerprint(model_path)}")
    return CachedPolicy(local, RequestCache(cache_path)) if cache_path else local


async def _run_all(
    policy: ChatPolicy, work: dict[str, list[Sample]], tools: ToolBox, runs: dict[str, AgentConfig], judges: dict[str, Judge],
    concurrency: int, reward: RewardConfig,
) -> dict[str, dict[str, list[dict[str, Any]]]]:
    limiter = asyncio.Semaphore(concurrency)

    async def one(sample: Sample, agent: AgentConfig, judge: Judge) -> dict[str, Any]:
        async with limiter:
            return await run_episode(sample, policy, tools, agent, judge=judge, reward=reward)

    try:
        return {
            bench: {name: list(await asyncio.gather(*(one(s, agent, judges[bench]) for s in samples))) for name, agent in runs.items()}
            for bench, samples in work.items()
        }
    finally:
        for judge in {id(j): j for j in judges.values()}.values():
            await judge.aclose()
        await policy.aclose()


def run_evaluate(
    cfg: EvalConfig, model_path: str | Path | None, curated_dir: str | Path | None, out_dir: str | Path,
    search: SearchConfig | None = None, judge: JudgeConfig | None = None, reward: RewardConfig | None = None,
) -> dict[str, Any]:
    """Evaluate `model_path` (or `cfg.model_url`) on `cfg.benchmarks`, or on the held-out pool of
    `curated_dir`; write trajectories per benchmark and run, and `metrics.json`. Episodes are
    scored as synthesis and GRPO score them (`synth.reward.score_response`)."""
    started = time.time()
    model_path = model_path if model_path is not None else cfg.model_path
    if not cfg.model_url and model_path is None:
        raise FileNotFoundError("no model to evaluate: give a checkpoint (eval.model_path) or an endpoint (eval.model_url, eval.model_name)")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    judge_cfg = judge or JudgeConfig()
    work: dict[str, list[Sample]] = {}
    judges: dict[str, Judge] = {}
    unreadable: dict[str, int] = {}
    if cfg.benchmarks:
        for name in cfg.benchmarks:
            loaded = load_benchmark(load_spec(name, cfg.data_root, Path(curated_dir).parent if curated_dir else None), max_samples=cfg.max_samples)
            work[loaded.spec.name], unreadable[loaded.spec.name] = loaded.samples, loaded.unreadable
            judges[loaded.spec.name] = Judge(benchmark_judge(judge_cfg, loaded.spec))
    else:
        samples = [Sample.from_row(r) for r in iter_rows(curated_dir, SAMPLE_SCHEMA) if r["pool"] in cfg.pools]
        work[HELDOUT], unreadable[HELDOUT] = samples[: cfg.max_samples] if cfg.max_samples else samples, 0
        judges[HELDOUT] = Judge(judge_cfg)
    runs = {"tools": cfg.agent}
    if cfg.tool_free_control:
        runs["no_tools"] = cfg.agent.model_copy(update={"tools": False})
    policy = _policy(cfg, model_path, out_dir)
    # A local model generates one sequence at a time; an endpoint takes many.
    concurrency = cfg.concurrency if cfg.model_url else 1
    with open_toolbox(cfg.agent, search or SearchConfig()) as tools:
        results = aio.run(_run_all(policy, work, tools, runs, judges, concurrency, reward or RewardConfig()))
    metrics: dict[str, Any] = {"model": cfg.model_name or str(model_path), "protocol_version": cfg.agent.protocol.version, "benchmarks": {}}
    for bench, by_run in results.items():
        entry: dict[str, Any] = {"samples": len(work[bench]), "unreadable": unreadable[bench], "runs": {}}
        for run_name, rows in by_run.items():
            with ShardWriter(out_dir / bench / run_name, TRAJECTORY_SCHEMA) as writer:
                writer.write_many(rows)
                writer.manifest_extra.update({"stage": "evaluate", "benchmark": bench, "run": run_name})
            entry["runs"][run_name] = summarize(rows)
        metrics["benchmarks"][bench] = entry
    metrics["seconds"] = round(time.time() - started, 3)
    atomic_write_json(out_dir / "metrics.json", metrics)
    return metrics
