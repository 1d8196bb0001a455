"""The Prefect flow: world → curate → probe → select → synthesize → SFT → GRPO → evaluate → report, a task per stage.

Tasks receive paths and plain config dicts (never DataFrames) and return small summaries; every
stage reads the previous stage's shards from the run directory:

    runs/<name>/world/  curate/  probe/  select/  synthesize/  model-base/  sft/  grpo/  eval/  report/  summary.json

Without a `probe` section, curation splits by hash and there is no probe or select stage.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from curation.demo_world import WorldConfig, generate_world
from curation.select import SelectConfig, run_select
from curation.shards import atomic_write_json
from curation.sources import SourceSpec
from curation.stage import CurateConfig, run_curate
from eval.report import build_report
from eval.stage import EvalConfig, run_evaluate
from flows import artifacts, lineage
from flows.config import PipelineConfig
from synth.endpoint import ManagedServer, free_port
from synth.judge import JudgeConfig
from synth.probe import ProbeConfig, run_probes
from synth.protocol import load_prompts
from synth.search import SearchConfig
from synth.stage import SynthConfig, run_synthesize
from train.grpo import GRPOStageConfig, run_grpo
from train.sft import SFTStageConfig, run_sft
from train.tiny import TinyModelConfig, build_tiny_model


@task(name="generate-world", cache_policy=NO_CACHE)
def generate_world_task(world: dict[str, Any], out_dir: str) -> dict[str, Any]:
    return generate_world(out_dir, WorldConfig(**world))


@task(name="curate", cache_policy=NO_CACHE)
def curate_task(cfg: dict[str, Any], out_dir: str, probes: bool) -> dict[str, Any]:
    return run_curate(CurateConfig.model_validate(cfg), out_dir, probes=probes)


@task(name="probe", cache_policy=NO_CACHE)
def probe_task(cfg: dict[str, Any], search: dict[str, Any], judge: dict[str, Any], curated_dir: str, out_dir: str) -> dict[str, Any]:
    return run_probes(
        ProbeConfig.model_validate(cfg), curated_dir, out_dir, SearchConfig.model_validate(search), JudgeConfig.model_validate(judge),
        progress=artifacts.progress_reporter("probe"),
    )


@task(name="select", cache_policy=NO_CACHE)
def select_task(cfg: dict[str, Any], curated_dir: str, probe_dir: str, out_dir: str) -> dict[str, Any]:
    return run_select(SelectConfig.model_validate(cfg), curated_dir, probe_dir, out_dir)


@task(name="synthesize", cache_policy=NO_CACHE)
def synthesize_task(cfg: dict[str, Any], search: dict[str, Any], judge: dict[str, Any], curated_dir: str, out_dir: str) -> dict[str, Any]:
    return run_synthesize(
        SynthConfig.model_validate(cfg), curated_dir, out_dir, SearchConfig.model_validate(search), JudgeConfig.model_validate(judge),
        progress=artifacts.progress_reporter("synthesize"),
    )


@task(name="build-tiny-model", cache_policy=NO_CACHE)
def build_tiny_model_task(cfg: dict[str, Any], text_files: list[str], out_dir: str) -> str:
    prompts = load_prompts(tools=True)
    texts = [prompts.system, prompts.user]
    for path in text_files:
        texts.extend(Path(path).read_text().splitlines())
    return str(build_tiny_model(out_dir, texts, TinyModelConfig.model_validate(cfg)))


@task(name="sft", cache_policy=NO_CACHE)
def sft_task(cfg: dict[str, Any], model_path: str, trajectory_dirs: list[str], out_dir: str) -> dict[str, Any]:
    return run_sft(SFTStageConfig.model_validate(cfg), model_path, trajectory_dirs, out_dir)


@task(name="grpo", cache_policy=NO_CACHE)
def grpo_task(
    cfg: dict[str, Any], search: dict[str, Any], judge: dict[str, Any], model_path: str, curated_dir: str, out_dir: str
) -> dict[str, Any]:
    return run_grpo(
        GRPOStageConfig.model_validate(cfg), model_path, curated_dir, out_dir, SearchConfig.model_validate(search),
        JudgeConfig.model_validate(judge),
    )


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate_task(
    cfg: dict[str, Any], search: dict[str, Any], judge: dict[str, Any], model_path: str, curated_dir: str, out_dir: str
) -> dict[str, Any]:
    return run_evaluate(
        EvalConfig.model_validate(cfg), model_path, curated_dir, out_dir, SearchConfig.model_validate(search),
        JudgeConfig.model_validate(judge),
    )


@task(name="report", cache_policy=NO_CACHE)
def report_task(run_dirs: list[str], out_dir: str) -> dict[str, str]:
    return build_report(run_dirs, out_dir)


def replay_command(scripts_path: str, port: int, replay: dict[str, Any], teacher_model: str) -> list[str]:
    command = [sys.executable, "-m", "flows.cli", "serve-replay", "--scripts", scripts_path, "--port", str(port)]
    command += ["--teacher-model", teacher_model]
    for key in ("wrong_rate", "code_error_rate", "malformed_rate", "latency_ms", "seed", "fault_rate"):
        command += [f"--{key.replace('_', '-')}", str(replay[key])]
    return command


def plan(cfg: PipelineConfig, run_dir: str | Path) -> list[dict[str, Any]]:
    """The stages a run would execute, in order, with their outputs and main settings; does nothing."""
    run = Path(run_dir)
    curated = "select" if cfg.probe is not None else "curate"
    teacher = "the replay server (managed)" if cfg.replay else (cfg.teacher_server.base_url + " (managed)" if cfg.teacher_server else cfg.synth.teacher_url)
    steps: list[dict[str, Any]] = []
    if cfg.world is not None:
        steps.append({"stage": "world", "out": run / "world", "does": f"generate {cfg.world.per_family} samples per family (seed {cfg.world.seed})"})
    sources = ["demo world" if cfg.world else None, *(f"{s.kind}:{s.path}" for s in cfg.curate.sources)]
    steps.append({"stage": "curate", "out": run / "curate", "does": f"read {', '.join(s for s in sources if s)}; near-dup "
                  f"{'on' if cfg.curate.near_dup.enabled else 'off'}; decontaminate against {len(cfg.curate.benchmarks)} benchmark(s)"})
    if cfg.probe is not None:
        steps.append({"stage": "probe", "out": run / "probe", "does": f"student {cfg.probe.student_model}: pass@{cfg.probe.k} without and with tools"})
        steps.append({"stage": "select", "out": run / "select", "does": f"split by the rule (easy above {cfg.select.max_pass_rate_no_tools})"})
    steps.append({"stage": "synthesize", "out": run / "synthesize", "does": f"teacher {cfg.synth.teacher_model} at {teacher} solves "
                  f"{'/'.join(cfg.synth.pools)} from {curated}/, {cfg.synth.attempts} attempt(s), {cfg.synth.concurrency} in flight"})
    steps.append({"stage": "sft", "out": run / "sft", "does": f"SFT of {cfg.sft.model_path or 'a tiny ' + cfg.tiny_model.family + ' model'}"})
    if cfg.grpo is not None:
        steps.append({"stage": "grpo", "out": run / "grpo", "does": f"GRPO on {'/'.join(cfg.grpo.pools)}, {cfg.grpo.num_generations} rollouts per prompt"})
    steps.append({"stage": "evaluate", "out": run / "eval", "does": f"{', '.join(cfg.eval.benchmarks) or 'the held-out pool'}, "
                  f"{'with the tool-free control' if cfg.eval.tool_free_control else 'tools only'}"})
    steps.append({"stage": "report", "out": run / "report", "does": "report.html and report.md"})
    return steps


@flow(name="deepeyes-pipeline", log_prints=True)
def pipeline_flow(config: dict[str, Any], run_dir: str) -> dict[str, Any]:
    cfg = PipelineConfig.model_validate(config)
    run = Path(run_dir)
    started = time.time()
    summary: dict[str, Any] = {"run_dir": str(run), "stages": {}}
    timings: dict[str, float] = {}

    cached: list[str] = []

    def key_of(stage: str, config: Any, inputs: tuple) -> str:
        return lineage.stage_key(stage, config, [i for i in inputs if i])

    def is_cached(stage: str, out: str, config: Any, inputs: tuple = ()) -> bool:
        return cfg.cache and lineage.cached_result(out, key_of(stage, config, inputs)) is not None

    def timed(stage: str, fn, *args, out: str | None = None, config: Any = None, inputs: tuple = ()):
        """Run a stage task and time it. With `out`: skip it when its output was made from the same
        config, inputs and code (its recorded result is returned), else record its lineage."""
        key = key_of(stage, config, inputs) if out is not None else None
        if out is not None and cfg.cache:
            result = lineage.cached_result(out, key)
            if result is not None:
                cached.append(stage)
                print(f"[{stage}] cached: same config, inputs and code as {out}")
                return result
        t0 = time.time()
        result = fn(*args)
        timings[stage] = round(time.time() - t0, 2)
        if out is not None:
            lineage.record(out, stage, config, [i for i in inputs if i], timings[stage], key=key, result=result)
        if isinstance(result, dict):
            artifacts.counts_table(stage, result)
        print(f"[{stage}] done in {timings[stage]:.1f} s")
        return result

    curate_cfg = cfg.curate.model_copy(deep=True)
    synth_cfg = cfg.synth.model_copy(deep=True)
    search = cfg.search.model_copy(deep=True)
    # Search results are cached beside the runs, so a regenerated run does not pay for them again.
    search.cache_dir = search.cache_dir or run.parent / ".cache" / "search"
    text_files: list[str] = []
    if cfg.world is not None:
        world = timed("world", generate_world_task, cfg.world.model_dump(), str(run / "world"), out=str(run / "world"),
                      config=cfg.world.model_dump())
        curate_cfg.sources = [SourceSpec(path=Path(world["samples_path"]), name="demo-world"), *curate_cfg.sources]
        search.corpus_path = search.corpus_path or Path(world["corpus_path"])
        search.image_corpus_path = search.image_corpus_path or Path(world["image_corpus_path"])
        if synth_cfg.long_cot is not None and synth_cfg.long_cot.path is None:
            synth_cfg.long_cot.path = Path(world["long_cot_path"])
        text_files = [world["scripts_path"], world["corpus_path"]]
        summary["stages"]["world"] = world

    probe_cfg = cfg.probe.model_copy(deep=True) if cfg.probe is not None else None
    curated = str(run / "curate")
    summary["stages"]["curate"] = timed("curate", curate_task, curate_cfg.model_dump(mode="json"), curated, probe_cfg is not None,
                                        out=curated, config=curate_cfg.model_dump(mode="json"),
                                        inputs=tuple(s.path for s in curate_cfg.sources if s.kind != "hf"))

    server = nullcontext()
    if cfg.replay is not None:
        port = free_port()
        synth_cfg.teacher_url = f"http://127.0.0.1:{port}/v1"
        if probe_cfg is not None:
            probe_cfg.student_url = synth_cfg.teacher_url  # the replay server plays the student too
        command = replay_command(world["scripts_path"], port, cfg.replay.model_dump(), synth_cfg.teacher_model)
        server = ManagedServer(command, synth_cfg.teacher_url, run / "logs" / "replay-server.log", ready_timeout_s=60)
    elif cfg.teacher_server is not None:
        synth_cfg.teacher_url = cfg.teacher_server.base_url
        server = ManagedServer(
            cfg.teacher_server.command, cfg.teacher_server.base_url, run / "logs" / "teacher-server.log",
            ready_timeout_s=cfg.teacher_server.ready_timeout_s,
        )
    trajectories = str(run / "synthesize")
    managed = cfg.replay is not None or cfg.teacher_server is not None
    # A managed server gets a new port each run: the URL is not part of what these stages depend on.
    synth_key_cfg = synth_cfg.model_dump(mode="json") | ({"teacher_url": "managed"} if managed else {})
    probe_key_cfg = probe_cfg.model_dump(mode="json") | ({"student_url": "managed"} if managed else {}) if probe_cfg else None
    after_select = str(run / "select") if probe_cfg is not None else curated
    if (is_cached("synthesize", trajectories, synth_key_cfg, (after_select,))
            and (probe_cfg is None or (is_cached("probe", str(run / "probe"), probe_key_cfg, (curated,))
                                       and is_cached("select", after_select, cfg.select.model_dump(mode="json"), (curated, str(run / "probe")))))):
        server = nullcontext()  # nothing will ask the teacher or the student: do not start them
    with server:
        if probe_cfg is not None:
            probes = str(run / "probe")
            summary["stages"]["probe"] = timed(
                "probe", probe_task, probe_cfg.model_dump(mode="json"), search.model_dump(mode="json"),
                cfg.judge.model_dump(mode="json"), curated, probes, out=probes, config=probe_key_cfg, inputs=(curated,),
            )
            selected = str(run / "select")
            summary["stages"]["select"] = timed("select", select_task, cfg.select.model_dump(mode="json"), curated, probes, selected,
                                                out=selected, config=cfg.select.model_dump(mode="json"), inputs=(curated, probes))
            curated = selected  # synthesis and evaluation read the selected pools
        summary["stages"]["synthesize"] = timed(
            "synthesize", synthesize_task, synth_cfg.model_dump(mode="json"), search.model_dump(mode="json"),
            cfg.judge.model_dump(mode="json"), curated, trajectories,
            out=trajectories, config=synth_key_cfg, inputs=(curated,),
        )

    model_path = cfg.sft.model_path
    if model_path is None:
        model_path = timed("build-model", build_tiny_model_task, cfg.tiny_model.model_dump(), text_files, str(run / "model-base"),
                           out=str(run / "model-base"), config=cfg.tiny_model.model_dump(), inputs=tuple(text_files))
    sft = timed("sft", sft_task, cfg.sft.model_dump(mode="json"), model_path, [trajectories], str(run / "sft"),
                out=str(run / "sft"), config=cfg.sft.model_dump(mode="json"), inputs=(trajectories, model_path))
    summary["stages"]["sft"] = sft
    final = sft["checkpoint"]
    if cfg.grpo is not None:
        grpo = timed(
            "grpo", grpo_task, cfg.grpo.model_dump(mode="json"), search.model_dump(mode="json"), cfg.judge.model_dump(mode="json"),
            sft["checkpoint"], curated, str(run / "grpo"),
            out=str(run / "grpo"), config=cfg.grpo.model_dump(mode="json"), inputs=(curated, sft["checkpoint"]),
        )
        summary["stages"]["grpo"] = grpo
        final = grpo["checkpoint"]
    metrics = timed(
        "evaluate", evaluate_task, cfg.eval.model_dump(mode="json"), search.model_dump(mode="json"),
        cfg.judge.model_dump(mode="json"), final, curated, str(run / "eval"),
        out=str(run / "eval"), config=cfg.eval.model_dump(mode="json"), inputs=(final, curated),
    )
    summary["stages"]["evaluate"] = {"metrics_path": str(run / "eval" / "metrics.json"), **metrics}
    if timings or not (run / "summary.json").exists():
        atomic_write_json(run / "summary.json", summary)  # the report reads the training curves from it
    summary["stages"]["report"] = timed("report", report_task, [str(run)], str(run / "report"), out=str(run / "report"), config={},
                                        inputs=(str(run / "eval"), str(run / "sft"), str(run / "grpo") if cfg.grpo else None))
    if "report" not in cached:
        artifacts.report_markdown(summary["stages"]["report"]["markdown"])
    summary["cached"] = cached
    summary["timings_s"] = {**timings, "total": round(time.time() - started, 2)}
    if timings:  # a run that did nothing changes no file
        atomic_write_json(run / "summary.json", summary)
    return summary
