"""`deepeyes import` and `deepeyes evaluate`: starting from what others released.

- `deepeyes import sharegpt FILE...` (or `--dataset-info dataset_info.json`, LLaMA-Factory's
  registry): conversations in LLaMA-Factory's sharegpt layout (DeepEyesV2's cold-start data) into
  trajectory shards for SFT and samples for `deepeyes curate` (`synth.sharegpt`). The RL parquet
  files need no import: `deepeyes curate --source verl:data/rl/` reads them (`curation.verl`).
- `deepeyes evaluate`: any model, a checkpoint (loaded with transformers) or an endpoint serving
  it (`--model-url`, `--model`), on named benchmarks, under a protocol profile (ours, or the
  reference's for the released checkpoints), with the tool-free control; metrics and a report.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from flows.user_input import out_dir_option

import_app = typer.Typer(help="Bring others' data in: LLaMA-Factory sharegpt conversations (DeepEyesV2's cold-start data).",
                         no_args_is_help=True)


def curated_sample_ids(curated: Path) -> set[str]:
    """The ids of a curated directory's samples that training may use (every pool but `eval`),
    checked before anything is written as `select --probes` checks its folder (`check_input_shards`):
    a folder without curated sample shards is refused in one line naming `--curated`."""
    from curation.schema import SAMPLE_SCHEMA
    from curation.shards import check_input_shards, iter_rows

    if not curated.exists():
        raise FileNotFoundError(f"--curated: path not found: {curated}")
    check_input_shards(curated, SAMPLE_SCHEMA, "--curated", "curated samples", "deepeyes curate")
    return {row["id"] for row in iter_rows(curated, SAMPLE_SCHEMA) if row["pool"] != "eval"}


@import_app.command("sharegpt")
def import_sharegpt_cmd(
    files: Annotated[list[Path] | None, typer.Argument(help="sharegpt files: a JSON array or JSON Lines of {messages, images}.")] = None,
    out: Annotated[Path, typer.Option(help="Output directory: trajectories/ (shards) and samples.jsonl.", callback=out_dir_option)] = Path("runs/import"),
    dataset_info: Annotated[Path | None, typer.Option(help="LLaMA-Factory's dataset_info.json: its sharegpt datasets' files, columns and tags.")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="With --dataset-info: only these datasets (repeatable).")] = None,
    layout: Annotated[str, typer.Option(help="keep: the data's prompts and observations as they are; ours: rewritten into our protocol.")] = "keep",
    data_profile: Annotated[str, typer.Option(help="The protocol profile the data follows (a name or a profile file).")] = "deepeyesv2-reference",
    image_root: Annotated[Path | None, typer.Option(help="Where relative image paths start (default: each file's folder).")] = None,
    category: Annotated[str, typer.Option(help="Category of rows whose tool use does not decide it (search calls: search; no image: reasoning).")] = "perception",
    policy: Annotated[str, typer.Option(help="The trajectories' `policy` column: who made them.")] = "sharegpt-import",
    curated: Annotated[Path | None, typer.Option(help="A `deepeyes curate` output of samples.jsonl: keep only trajectories whose sample survived (not in eval).")] = None,
) -> None:
    """Import LLaMA-Factory sharegpt conversations as trajectory shards (every image in its turn) and samples for curation."""
    from synth.sharegpt import ImportConfig, dataset_info_entries, import_sharegpt

    from curation.suggest import did_you_mean

    if layout not in ("keep", "ours"):
        raise typer.BadParameter(f"unknown layout {layout!r}{did_you_mean(layout, ('keep', 'ours'))} (layouts: keep, ours)",
                                 param_hint="--layout")
    entries: list[tuple[Path, Any]] = [(f, None) for f in files or []]
    if dataset_info is not None:
        entries += [(path, fmt) for path, fmt, _ in dataset_info_entries(dataset_info, dataset)]
    elif dataset:
        raise typer.BadParameter("--dataset needs --dataset-info", param_hint="--dataset")
    if not entries:
        raise typer.BadParameter("give sharegpt files or --dataset-info", param_hint="FILES")
    cfg = ImportConfig(layout=layout, data_profile=data_profile, image_root=str(image_root) if image_root else None,
                       category=category, policy=policy)
    keep = curated_sample_ids(curated) if curated is not None else None
    summary = import_sharegpt(entries, out, cfg, keep, f"--curated {curated}")
    for warning in summary.get("warnings", []):  # a file without rows beside files with rows
        typer.echo(f"warning: {warning}", err=True)
    typer.echo(json.dumps(summary))


def endpoint_model(url: str, api_key_env: str | None, url_option: str = "--model-url", model_option: str = "--model") -> str:
    """The one model an OpenAI-compatible endpoint serves (its /v1/models), for a command that was
    not told; raises `EndpointError` naming `model_option` when it lists none or several."""
    import asyncio
    import os

    from synth.runtime.endpoint import EndpointError
    from synth.runtime.preflight import check_url, served_models

    check_url(url, url_option)
    api_key = os.environ.get(api_key_env) if api_key_env else None
    listed = asyncio.run(served_models(url, api_key, f"{model_option}: the models of {url}", api_key_env))
    if listed is None:
        raise EndpointError(f"{model_option}: {url} lists no models (GET /models answered 404): name the model with {model_option}")
    names = list(listed)
    if not names:
        raise EndpointError(f"{model_option}: {url} lists no models: name the model with {model_option}")
    if len(names) != 1:
        raise EndpointError(f"{model_option}: {url} serves {len(names)} models ({', '.join(names[:8])}): name one with {model_option}")
    return names[0]


def evaluate_cmd(
    checkpoint: Annotated[Path | None, typer.Argument(help="A model checkpoint directory, loaded with transformers (or give --model-url).")] = None,
    model_url: Annotated[str | None, typer.Option(help="An OpenAI-compatible endpoint serving the model, e.g. http://host:8000/v1 (vLLM).")] = None,
    model: Annotated[str | None, typer.Option(help="The model name the endpoint serves (default: the one its /v1/models lists).")] = None,
    benchmark: Annotated[list[str] | None, typer.Option(help="A benchmark: a shipped name (vstar, mathvista, ...) or a YAML file; repeatable.")] = None,
    out: Annotated[Path, typer.Option(help="Run directory: eval/ (trajectories, metrics.json) and report/.", callback=out_dir_option)] = Path("runs/evaluate"),
    profile: Annotated[str | None, typer.Option(help="Protocol profile: deepeyes-v2 (ours), deepeyesv2-reference (the released checkpoints), or a file.")] = None,
    config: Annotated[Path | None, typer.Option(help="A pipeline YAML whose eval, search, judge and reward sections are the base.")] = None,
    data_root: Annotated[Path | None, typer.Option(help="Where the benchmark files are (fills ${data_root}).")] = None,
    max_samples: Annotated[int | None, typer.Option(help="At most this many samples per benchmark (default: all).", min=1)] = None,
    max_turns: Annotated[int | None, typer.Option(help="Assistant turns per episode (default 10).", min=1)] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Tokens per assistant turn (default 8192).", min=1)] = None,
    think_prefix: Annotated[str | None, typer.Option(help="none, after_observation or every_turn (default: the profile's).")] = None,
    tool_free_control: Annotated[bool | None, typer.Option(help="Also run every benchmark without tools (default: yes).")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Episodes in flight against an endpoint.", min=1)] = None,
    corpus: Annotated[Path | None, typer.Option(help="Local text search corpus (JSONL/Parquet of title, url, text).")] = None,
    image_corpus: Annotated[Path | None, typer.Option(help="Local image search corpus (JSONL of image, title, url).")] = None,
    judge_url: Annotated[str | None, typer.Option(help="An LLM judge's endpoint, for answers rules cannot decide.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="The judge's model name (default: the one its /v1/models lists).")] = None,
    stop: Annotated[bool | None, typer.Option("--stop/--no-stop", help="Send stop strings to the model's server (--no-stop for servers "
                                              "that refuse `stop`; they are applied on the client either way).")] = None,
    seed: Annotated[bool | None, typer.Option("--seed/--no-seed", help="Send each request's `seed` (--no-seed for servers that refuse it).")] = None,
    api_key_env: Annotated[str | None, typer.Option(help="The environment variable that holds the endpoint's API key.")] = None,
) -> None:
    """Evaluate any model (a checkpoint, or an endpoint serving it) on named benchmarks, with tools and the tool-free control."""
    from curation.sources import same_name_message
    from eval.benchmarks import BENCHMARK_NAMES_WHY, BenchmarkError, check_benchmark, load_spec
    from eval.metrics import summary_line
    from eval.report import build_report
    from eval.stage import EvalConfig, check_checkpoint, run_evaluate
    from synth.scoring.judge import JudgeConfig
    from synth.scoring.reward import RewardConfig
    from synth.tools.search import SearchConfig

    base: dict[str, Any] = {}
    if config is not None:
        from flows.config import load_config

        loaded = load_config(config, check=False)
        base = {"eval": loaded.eval.model_dump(mode="json", exclude_unset=True), "search": loaded.search, "judge": loaded.judge,
                "reward": loaded.reward}
    if checkpoint is None and model_url is None and not base.get("eval", {}).get("model_url") and not base.get("eval", {}).get("model_path"):
        raise typer.BadParameter("give a checkpoint directory or --model-url", param_hint="CHECKPOINT")
    from synth.runtime.preflight import check_url

    model_url = model_url.strip() if model_url is not None else None
    for option, url in (("--model-url", model_url), ("--judge-url", judge_url)):
        if url is not None:
            check_url(url, option)
    if checkpoint is not None and (model_url or base.get("eval", {}).get("model_url")):
        where = "--model-url" if model_url else f"eval.model_url in {config}"
        raise typer.BadParameter(f"CHECKPOINT and {where} both name the model to evaluate: give one (a checkpoint is loaded with "
                                 "transformers; an endpoint already serves its model)", param_hint="CHECKPOINT")
    if checkpoint is not None:
        check_checkpoint(checkpoint, "CHECKPOINT")
    evaluation = dict(base.get("eval") or {})
    request = dict(evaluation.get("request") or {})
    for key, value in (("send_stop", stop), ("send_seed", seed)):
        if value is not None:
            request[key] = value
    if request:
        evaluation["request"] = request
    agent = dict(evaluation.get("agent") or {})
    for key, value in (("profile", profile), ("max_turns", max_turns), ("max_tokens_per_turn", max_tokens), ("think_prefix", think_prefix)):
        if value is not None:
            agent[key] = value
    if model_url is not None:
        evaluation["model_url"] = model_url
    if checkpoint is not None:
        evaluation["model_path"] = str(checkpoint.resolve())
    if evaluation.get("model_url") and not (model or evaluation.get("model_name")):
        model = endpoint_model(evaluation["model_url"], api_key_env or evaluation.get("api_key_env"))
    for key, value in (("model_name", model), ("benchmarks", benchmark), ("data_root", str(data_root) if data_root else None),
                       ("max_samples", max_samples), ("tool_free_control", tool_free_control), ("concurrency", concurrency),
                       ("api_key_env", api_key_env)):
        if value is not None:
            evaluation[key] = value
    if agent:
        evaluation["agent"] = agent
    cfg = EvalConfig.model_validate(evaluation)
    if not cfg.benchmarks:
        raise typer.BadParameter("name at least one benchmark (a shipped name or a YAML file)", param_hint="--benchmark")
    out = out.resolve()
    # A benchmark made by a pipeline run (`demo-heldout`: ${run_dir}/select) reads the run --out names, when it is one.
    run_dir = out if (out / "select").is_dir() else None
    names: list[str] = []  # each benchmark's resolved name (a definition file's `name:`)
    for i, name in enumerate(cfg.benchmarks):  # before anything is written: a wrong file or column is named now, not counted as unreadable rows
        where = f"--benchmark {name}" if benchmark else f"eval.benchmarks in {config}"
        try:
            spec = load_spec(name, cfg.data_root, run_dir)
            check_benchmark(spec, where, data_root=cfg.data_root,
                            data_root_option="--data-root" if data_root or config is None else f"eval.data_root in {config}")
        except BenchmarkError as exc:
            raise BenchmarkError(str(exc) if str(exc).startswith((where, name)) else f"{where}: {exc}") from None
        names.append(spec.name)
        labels = [f"--benchmark {b}" if benchmark else f"eval.benchmarks.{j} in {config}" for j, b in enumerate(cfg.benchmarks[:i + 1])]
        if problem := same_name_message(names, labels, BENCHMARK_NAMES_WHY):
            raise BenchmarkError(problem)
    search = base.get("search") or SearchConfig()
    search = search.model_copy(update={k: v for k, v in (("corpus_path", corpus), ("image_corpus_path", image_corpus)) if v is not None})
    for name, path in (("--corpus", corpus), ("--image-corpus", image_corpus)):
        if path is not None and not path.is_file():
            raise FileNotFoundError(f"{name}: file not found: {path}")
    judge = base.get("judge") or JudgeConfig()
    if judge_model is not None and judge_url is None and not judge.llm_url:
        raise typer.BadParameter("--judge-model needs --judge-url (or judge.llm_url in --config)", param_hint="--judge-model")
    if judge_url is not None:
        judge_url = judge_url.strip()
        judge_model = judge_model or endpoint_model(judge_url, judge.api_key_env, "--judge-url", "--judge-model")
        judge = judge.model_copy(update={"llm_url": judge_url, "llm_model": judge_model})
    elif judge_model is not None:
        judge = judge.model_copy(update={"llm_model": judge_model})
    started = time.time()
    reward = base.get("reward") or RewardConfig()
    from flows import lineage

    # What the directory is, before anything in it: `status` shows its one stage (and one that did not finish as such).
    lineage.record_command_run(out, "evaluate", evaluation_config(cfg, search, judge, reward), ["eval"])
    metrics = run_evaluate(cfg, cfg.model_path, run_dir / "select" if run_dir else None, out / "eval", search, judge, reward)
    record_evaluation(out / "eval", cfg, search, judge, reward, metrics, time.time() - started)
    report = build_report([out], out / "report")
    typer.echo(f"model {metrics['model']} ({metrics['protocol_version']})")
    for bench, entry in metrics["benchmarks"].items():
        for run_name, stats in entry["runs"].items():
            typer.echo(summary_line(bench, run_name, stats["overall"], entry["unreadable"], entry["failed"].get(run_name, 0)))
    typer.echo(f"metrics:    {out / 'eval' / 'metrics.json'}")
    typer.echo(f"report:     {report['html']}")


def record_evaluation(eval_dir: Path, cfg: Any, search: Any, judge: Any, reward: Any, metrics: dict[str, Any], seconds: float) -> None:
    """The evaluation's manifest with its lineage, as the pipeline's evaluate stage writes it: what
    it read (the checkpoint, the benchmarks' files, the search corpora) and its metrics, so
    `deepeyes status` shows it complete (or partial, when the endpoint failed episodes) and stale
    when an input changes. No cache key: the pipeline's cache does not take it for its own."""
    from eval.benchmarks import benchmark_files
    from flows import lineage
    from synth.tools.search import search_input_files

    inputs = [*([cfg.model_path] if cfg.model_path else []),
              *(str(f) for name in cfg.benchmarks for f in benchmark_files(name, cfg.data_root)),
              *(str(f) for f in search_input_files(search))]
    lineage.record(eval_dir, "evaluate", evaluation_config(cfg, search, judge, reward), inputs, seconds,
                   result={"metrics_path": str(eval_dir / "metrics.json"), **metrics})


def evaluation_config(cfg: Any, search: Any, judge: Any, reward: Any) -> dict[str, Any]:
    """The settings `deepeyes evaluate` ran with, as JSON: its lineage's config and its `run.json`'s."""
    return {"eval": cfg.model_dump(mode="json"), "search": search.model_dump(mode="json"), "judge": judge.model_dump(mode="json"),
            "reward": reward.model_dump(mode="json")}


def register(app: typer.Typer) -> None:
    """Add `deepeyes import ...` and `deepeyes evaluate` to the CLI."""
    app.add_typer(import_app, name="import")
    app.command("evaluate")(evaluate_cmd)
