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
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, model_validator
from pydantic_core import PydanticCustomError

from curation.schema import SAMPLE_SCHEMA, Sample
from curation.shards import ShardWriter, atomic_write_json, iter_rows
from curation.stage import PoolNames
from curation.strict_config import StrictConfig
from curation.validation_errors import yaml_value
from eval.benchmarks import BenchmarkSpec, load_benchmark, load_spec
from eval.metrics import HELDOUT, summarize
from synth.runtime import aio
from synth.runtime.agent import AgentConfig, ToolBox, first_request, open_toolbox, run_episode, text_search_configured
from synth.runtime.policy import MIN_REQUEST_TIMEOUT_S, ChatPolicy, EndpointPolicy, EndpointUrl, RequestOptions, TransformersPolicy
from synth.runtime.preflight import Failures, preflight
from synth.runtime.request_cache import REQUESTS_DB, CachedPolicy, RequestCache, open_endpoint
from synth.scoring.judge import Judge, JudgeConfig
from synth.scoring.reward import RewardConfig
from synth.tools.search import SearchConfig
from synth.trajectory import TRAJECTORY_SCHEMA

log = logging.getLogger(__name__)


def empty_heldout_warning(cfg: EvalConfig, per_pool: dict[str, int], world: bool = False) -> str | None:
    """What to tell right after curation when the evaluation will score the run's held-out pool(s)
    (no `eval.benchmarks`) and curation put no row there (`per_pool`: rows per pool of the curated
    shards); None when there is something to score. `world`: the rows come from the demo world
    (more of them: `world.per_family`), else only from `curate.sources`."""
    if cfg.benchmarks or any(per_pool.get(pool) for pool in cfg.pools):
        return None
    more = "raise world.per_family (--per-family in `deepeyes demo`)" if world else "add rows to curate.sources"
    return (f"the held-out pool ({', '.join(cfg.pools)}) is empty: none of the {sum(per_pool.values())} curated rows drew it, so the "
            f"evaluation will score nothing; {more}, raise curate.split.eval, or name eval.benchmarks")


def _warn(message: str) -> None:
    """A setting that will not do what the user may expect: told before the run, not after, once
    (`warning: ...` on stderr). Not also `log.warning`: with no logging configured, Python's
    last-resort handler printed it a second time, bare (as Prefect's console handler would during a
    run); the log gets it at debug level."""
    log.debug("warning: %s", message)
    print(f"warning: {message}", file=sys.stderr)


def _benchmark_entry(value: Any) -> Any:
    """An `eval.benchmarks` entry: a name or a path, spaces around it trimmed (`" vstar "` is `vstar`);
    anything else (`{name: x}`, `5`, a bare `-`) refused in the config's words, not pydantic's
    `Input should be a valid string`."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise PydanticCustomError("benchmark_entry", "expected a benchmark name or a definition file's path (got {got})",
                              {"got": yaml_value(value)})


# A shipped benchmark's name (eval/benchmarks/) or a definition file's path.
BenchmarkEntry = Annotated[str, BeforeValidator(_benchmark_entry)]


class EvalConfig(StrictConfig):
    benchmarks: list[BenchmarkEntry] = Field(default_factory=list)  # shipped names (eval/benchmarks/) or YAML paths; []: the held-out pool
    data_root: str = "data/eval"  # fills ${data_root} in benchmark files
    pools: PoolNames = Field(default_factory=lambda: ["eval"], min_length=1)  # the held-out pool(s) of the run's shards
    tool_free_control: bool = True
    max_samples: int | None = Field(None, ge=1)  # per benchmark; None: all
    model_url: EndpointUrl | None = None  # an OpenAI-compatible endpoint serving the model; None: load it with transformers
    model_name: str | None = None  # the endpoint's model name (required with model_url)
    # A checkpoint to evaluate instead of the run's own (loaded with transformers; with model_url,
    # only its name in reports). With model_url or model_path, the evaluate flow needs no trained model.
    model_path: str | None = None
    api_key_env: str | None = "OPENAI_API_KEY"
    request_timeout_s: float = Field(300.0, ge=MIN_REQUEST_TIMEOUT_S)
    max_retries: int = Field(6, ge=0)
    request: RequestOptions = Field(default_factory=RequestOptions)  # send_stop, extra_body, 5xx retries
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


def judge_warnings(cfg: JudgeConfig, specs: list[BenchmarkSpec]) -> list[str]:
    """What the user should know about the LLM judge before benchmarks run: a configured judge that
    no benchmark asks (they judge by rules or math only), and `judge: llm` benchmarks with no judge
    configured (every answer the rules cannot decide is then `judge_failed`)."""
    asking = [spec.name for spec in specs if spec.judge == "llm"]
    if cfg.llm_url and specs and not asking:
        names = ", ".join(f"{spec.name} (judge: {spec.judge})" for spec in specs)
        return [f"judge.llm_url (--judge-url) {cfg.llm_url} is unused: no benchmark asks the LLM judge: {names}"]
    if asking and not cfg.llm_url:
        return [f"benchmark(s) {', '.join(asking)} ask an LLM judge (judge: llm) and none is configured (--judge-url and "
                "--judge-model, or judge.llm_url and judge.llm_model): every answer the rules cannot decide will be judge_failed"]
    return []


def check_checkpoint(model_path: str | Path, setting: str = "eval.model_path") -> None:
    """Raise `FileNotFoundError` (one line naming `setting` and the directory) unless `model_path`
    looks like a Hugging Face checkpoint: a directory with `config.json`, weights (`*.safetensors`
    or `pytorch_model*.bin`) and tokenizer or processor files, as `save_pretrained` writes them."""
    path = Path(model_path)
    needs = ("a directory holding config.json, the weights (*.safetensors or pytorch_model*.bin) and the tokenizer/processor "
             "files (tokenizer_config.json), as save_pretrained writes them")
    if not path.exists():
        raise FileNotFoundError(f"{setting}: checkpoint not found: {path}")
    if not path.is_dir():
        raise FileNotFoundError(f"{setting}: {path} is a file, not a model checkpoint; a checkpoint is {needs}")
    missing = [what for what, patterns in (("config.json", ["config.json"]),
                                           ("weights", ["*.safetensors", "pytorch_model*.bin"]),
                                           ("tokenizer_config.json", ["tokenizer_config.json", "preprocessor_config.json"]))
               if not any(any(path.glob(p)) for p in patterns)]
    if missing:
        raise FileNotFoundError(f"{setting}: {path} is not a model checkpoint (no {', no '.join(missing)}); a checkpoint is {needs}")


def checkpoint_fingerprint(model_path: str | Path) -> str:
    """Names the weights in cache keys, so a retrained checkpoint at the same path is asked again."""
    path = Path(model_path)
    digest = hashlib.blake2b(digest_size=8)
    for file in sorted(path.glob("*")) if path.is_dir() else []:
        if file.is_file():
            stat = file.stat()
            digest.update(f"{file.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _policy(cfg: EvalConfig, model_path: str | Path | None, out_dir: Path) -> tuple[ChatPolicy, EndpointPolicy | None]:
    """The evaluated model (behind the response cache), and its endpoint when it is served."""
    cache_path = out_dir / REQUESTS_DB if cfg.cache else None
    if cfg.model_url:
        return open_endpoint(cfg.model_url, cfg.model_name or str(model_path), api_key_env=cfg.api_key_env, timeout_s=cfg.request_timeout_s,
                             max_retries=cfg.max_retries, max_in_flight=cfg.concurrency, cache_path=cache_path, options=cfg.request)
    check_checkpoint(model_path)
    local = TransformersPolicy(model_path, name=f"{Path(model_path).name}@{checkpoint_fingerprint(model_path)}")
    return (CachedPolicy(local, RequestCache(cache_path)) if cache_path else local), None


async def _run_all(
    policy: ChatPolicy, endpoint: EndpointPolicy | None, work: dict[str, list[Sample]], tools: ToolBox, runs: dict[str, AgentConfig],
    judges: dict[str, Judge], concurrency: int, reward: RewardConfig, failures: Failures,
) -> dict[str, dict[str, list[dict[str, Any] | None]]]:
    """Every benchmark's episodes in each run; None for an episode the endpoint failed (after its
    retries), counted in `failures`. A local model's errors are bugs, and raise."""
    limiter = asyncio.Semaphore(concurrency)

    async def one(sample: Sample, agent: AgentConfig, judge: Judge) -> dict[str, Any] | None:
        async with limiter:
            try:
                return await run_episode(sample, policy, tools, agent, judge=judge, reward=reward)
            except Exception as exc:
                if endpoint is None:
                    raise
                failures.add(exc)
                return None

    try:
        first = next((samples[0] for samples in work.values() if samples), None)
        if endpoint is not None and first is not None:  # nothing goes out before the endpoint answered one real request
            await preflight(endpoint, "evaluated model", first_request(first, next(iter(runs.values())), "eval"), setting="eval.model_url")
        if first is not None:
            for judge in {id(j): j for j in judges.values()}.values():
                await judge.preflight()
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
    scored as synthesis and GRPO score them (`synth.scoring.reward.score_response`). An endpoint is checked
    before the first episode (`synth.runtime.preflight`); episodes it still fails are left out of the
    accuracy and counted (`failed` per benchmark and run, `failure_causes`). Raises
    `synth.runtime.endpoint.EndpointError` (one line) when the preflight or every episode failed."""
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
    if not cfg.model_url:
        check_checkpoint(model_path)
    if cfg.benchmarks:
        specs = [load_spec(name, cfg.data_root, Path(curated_dir).parent if curated_dir else None) for name in cfg.benchmarks]
        for message in judge_warnings(judge_cfg, specs):
            _warn(message)
        for spec in specs:
            loaded = load_benchmark(spec, max_samples=cfg.max_samples)
            work[loaded.spec.name], unreadable[loaded.spec.name] = loaded.samples, loaded.unreadable
            judges[loaded.spec.name] = Judge(benchmark_judge(judge_cfg, loaded.spec))
    else:
        samples = [Sample.from_row(r) for r in iter_rows(curated_dir, SAMPLE_SCHEMA) if r["pool"] in cfg.pools]
        work[HELDOUT], unreadable[HELDOUT] = samples[: cfg.max_samples] if cfg.max_samples else samples, 0
        judges[HELDOUT] = Judge(judge_cfg)
    searching = sum(1 for samples in work.values() for sample in samples if sample.category == "search")
    if searching and cfg.agent.tools and not text_search_configured(search or SearchConfig()):
        _warn(f"{searching} of the samples are search questions (category: search) and no text search is configured (--corpus, "
              "search.corpus_path or search.text_backend: http): their search calls will answer that the tool is not available")
    runs = {"tools": cfg.agent}
    if cfg.tool_free_control:
        runs["no_tools"] = cfg.agent.model_copy(update={"tools": False})
    policy, endpoint = _policy(cfg, model_path, out_dir)
    # A local model generates one sequence at a time; an endpoint takes many.
    concurrency = cfg.concurrency if cfg.model_url else 1
    failures = Failures()
    with open_toolbox(cfg.agent, search or SearchConfig()) as tools:
        results = aio.run(_run_all(policy, endpoint, work, tools, runs, judges, concurrency, reward or RewardConfig(), failures))
    metrics: dict[str, Any] = {"model": cfg.model_name or str(model_path), "protocol_version": cfg.agent.protocol.version, "benchmarks": {}}
    episodes = 0
    for bench, by_run in results.items():
        entry: dict[str, Any] = {"samples": len(work[bench]), "unreadable": unreadable[bench], "runs": {}, "failed": {}}
        for run_name, results_of_run in by_run.items():
            rows = [row for row in results_of_run if row is not None]
            episodes += len(results_of_run)
            with ShardWriter(out_dir / bench / run_name, TRAJECTORY_SCHEMA) as writer:
                writer.write_many(rows)
                writer.manifest_extra.update({"stage": "evaluate", "benchmark": bench, "run": run_name})
            # An episode the endpoint failed is neither right nor wrong: left out of the accuracy, counted here.
            entry["runs"][run_name] = summarize(rows)
            entry["failed"][run_name] = len(results_of_run) - len(rows)
        metrics["benchmarks"][bench] = entry
    metrics["failed"] = len(failures)
    metrics["failure_causes"] = dict(failures.causes)
    metrics["seconds"] = round(time.time() - started, 3)
    atomic_write_json(out_dir / "metrics.json", metrics)
    failures.raise_if_all(episodes, "episodes", f"evaluate: model endpoint {cfg.model_url} (model {cfg.model_name!r})")
    return metrics
