"""The Prefect flows: `curate`, `synthesize`, `train_sft`, `train_grpo`, `evaluate`, and `retrain`,
which runs the five as subflows. Each takes the pipeline config (a dict, or the path of a YAML file,
which is how deployments pass it) and a run directory, and reads the stages before it from there:

    runs/<name>/world/  curate/  probe/  select/  synthesize/  model-base/  sft/  grpo/  eval/  report/
    runs/<name>/run.json  (written as each flow starts: its config and the stages it plans)

Tasks receive paths and plain config dicts (never DataFrames). Curation scans, probes and synthesis
run as one task per source part or input shard on the configured task runner (threads, Dask, Ray);
a merge task per stage joins the parts. Every task is cached by Prefect under a key made of its
config, its inputs' fingerprints and the code version (`flows.lineage.stage_key`), with its result
persisted under `<run>/_prefect/`: re-running an unchanged pipeline does no work and changes no file,
and a changed config re-runs its stage and what depends on it. The output on disk is checked too:
a task whose output is missing or was made under another key runs again.

Without a `probe` section, curation splits by hash and there is no probe or select stage.
"""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.concurrency.sync import concurrency
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore
from tqdm import tqdm

from curation.select import SelectConfig, run_select
from curation.shards import atomic_write_json, shard_files
from curation.sources import SourceSpec
from curation.stage import STAGING_DIR, CurateConfig, finish_curate, scan_source, staged_dir_name
from curation.worlds import generate as generate_world
from curation.worlds import world_files
from eval.benchmarks import benchmark_files
from eval.report import build_report
from eval.stage import EvalConfig, empty_heldout_warning, run_evaluate
from flows import artifacts, lineage
from flows.config import PipelineConfig, check_flow_sections, load_config
from flows.launcher import TrainingLauncher, launch_training
from flows.orchestration import endpoint_limit_name, ensure_endpoint_limit, retry_options, task_runner
from flows.prefect_env import keep_dill_out_of_run_logs
from flows.stage_inputs import check_flow_input, final_checkpoint, input_result, pools_dir
from synth.probe import ProbeConfig, merge_probes, run_probes
from synth.runtime.endpoint import ManagedServer, free_port
from synth.runtime.profile import COMPACT_PROFILE
from synth.runtime.protocol import load_prompts
from synth.scoring.judge import JudgeConfig
from synth.scoring.reward import RewardConfig
from synth.stage import SynthConfig, merge_synthesized, run_synthesize
from synth.tools.search import SearchConfig, search_input_files
from train.base import BaseStageConfig, run_base
from train.grpo import GRPOStageConfig, run_grpo
from train.sft import SFTStageConfig, run_sft
from train.tiny import TinyModelConfig, build_tiny_model

RESULTS_DIR = "_prefect"  # Prefect's cache records of a run's tasks
SHARDS_DIR = "_shards"  # a stage's per-input-shard outputs, before the merge


def cache_key_from_record(context: Any, parameters: dict[str, Any]) -> str:
    """Prefect's cache key of a stage task: the lineage key the flow computed for it."""
    return parameters["record"]["key"]


CACHED = {"cache_key_fn": cache_key_from_record, "persist_result": True, "result_serializer": "json"}


def _recorded(record: dict[str, Any], out_dir: str, started: float, result: Any, read_files: list[str] | None = None,
              endpoint_facing: bool = False) -> Any:
    """Add the task's lineage (and the files it found and read) to its output's manifest, with the
    key it was made under when it is complete. The output of a task whose endpoint failed some
    samples is not: it has no key, so the next run runs the task again, and its request cache
    sends exactly the failed samples' requests again (the answered ones are replayed)."""
    key = None if endpoint_facing and lineage.failed_in(result) else record["key"]
    lineage.record(out_dir, record["stage"], record["config"], record["inputs"], time.time() - started, key=key, result=result,
                   read_files=read_files)
    return result


def _endpoint_slots(endpoint: dict[str, Any], occupy: int):
    """Hold `occupy` slots of the endpoint's global concurrency limit while the task calls it."""
    return concurrency(endpoint["limit"], occupy=occupy, strict=True) if endpoint.get("limit") else nullcontext()


@task(name="generate-world", **CACHED)
def world_task(kind: str, world: dict[str, Any], out_dir: str, record: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    return _recorded(record, out_dir, started, generate_world(kind, out_dir, world))


@task(name="curate-scan", **CACHED)
def curate_scan_task(cfg: dict[str, Any], source_index: int, part: int, out_dir: str, record: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    keep_dill_out_of_run_logs()  # a shard task may run in a Dask or Ray worker's process, which no flow set up
    curate = CurateConfig.model_validate(cfg)
    result = scan_source(curate, source_index, out_dir, part, curate.scan_parts)
    return _recorded(record, out_dir, started, result, read_files=result.pop("files_read"))


@task(name="curate-finish", **CACHED)
def curate_finish_task(cfg: dict[str, Any], staged_dirs: list[str], out_dir: str, probes: bool, record: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    result = finish_curate(CurateConfig.model_validate(cfg), staged_dirs, out_dir, probes=probes)
    return _recorded(record, out_dir, started, result, read_files=result.pop("files_read"))


@task(name="probe-shard", **CACHED)
def probe_shard_task(
    cfg: dict[str, Any], search: dict[str, Any], judge: dict[str, Any], reward: dict[str, Any], shard: str, out_dir: str,
    endpoint: dict[str, Any], record: dict[str, Any],
) -> dict[str, Any]:
    started = time.time()
    keep_dill_out_of_run_logs()  # a shard task may run in a Dask or Ray worker's process, which no flow set up
    probe = ProbeConfig.model_validate(cfg)
    probe.student_url = endpoint.get("url") or probe.student_url
    # A failed preflight, or every attempt failed, raises EndpointError: Prefect retries it when
    # that may help, and caches nothing.
    with _endpoint_slots(endpoint, probe.concurrency):
        result = run_probes(probe, shard, out_dir, SearchConfig.model_validate(search), JudgeConfig.model_validate(judge),
                            progress=artifacts.progress_reporter("probe", Path(shard).name), allow_empty=True,
                            reward=RewardConfig.model_validate(reward), identity_url=endpoint.get("identity"))
    return _recorded(record, out_dir, started, result, endpoint_facing=True)


@task(name="probe-merge", **CACHED)
def probe_merge_task(cfg: dict[str, Any], shard_dirs: list[str], out_dir: str, record: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    return _recorded(record, out_dir, started, merge_probes(ProbeConfig.model_validate(cfg), shard_dirs, out_dir))


@task(name="select", **CACHED)
def select_task(cfg: dict[str, Any], curated_dir: str, probe_dir: str, out_dir: str, record: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    return _recorded(record, out_dir, started, run_select(SelectConfig.model_validate(cfg), curated_dir, probe_dir, out_dir))


@task(name="synthesize-shard", **CACHED)
def synthesize_shard_task(
    cfg: dict[str, Any], search: dict[str, Any], judge: dict[str, Any], reward: dict[str, Any], shard: str, out_dir: str,
    endpoint: dict[str, Any], record: dict[str, Any],
) -> dict[str, Any]:
    started = time.time()
    keep_dill_out_of_run_logs()  # a shard task may run in a Dask or Ray worker's process, which no flow set up
    synth = SynthConfig.model_validate(cfg)
    synth.teacher_url = endpoint.get("url") or synth.teacher_url
    synth.long_cot = None  # mixed in once, over all shards, by the merge
    # A failed preflight, or every sample failed, raises EndpointError: Prefect retries it when that
    # may help, and caches nothing.
    with _endpoint_slots(endpoint, synth.concurrency):
        result = run_synthesize(synth, shard, out_dir, SearchConfig.model_validate(search), JudgeConfig.model_validate(judge),
                                progress=artifacts.progress_reporter("synthesize", Path(shard).name),
                                reward=RewardConfig.model_validate(reward), identity_url=endpoint.get("identity"))
    result.pop("files_read")  # none: long-CoT rows are mixed in by the merge
    return _recorded(record, out_dir, started, result, endpoint_facing=True)


@task(name="synthesize-merge", **CACHED)
def synthesize_merge_task(cfg: dict[str, Any], shard_dirs: list[str], out_dir: str, record: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    result = merge_synthesized(SynthConfig.model_validate(cfg), shard_dirs, out_dir)
    return _recorded(record, out_dir, started, result, read_files=result.pop("files_read"))  # the long-CoT rows' images


@task(name="build-tiny-model", **CACHED)
def build_tiny_model_task(cfg: dict[str, Any], text_files: list[str], out_dir: str, record: dict[str, Any]) -> str:
    started = time.time()
    prompts, compact = load_prompts(tools=True), load_prompts(tools=True, profile=COMPACT_PROFILE)
    texts = [prompts.system, prompts.user, compact.system]
    for path in text_files:
        texts.extend(Path(path).read_text().splitlines())
    return _recorded(record, out_dir, started, str(build_tiny_model(out_dir, texts, TinyModelConfig.model_validate(cfg))))


@task(name="base", **CACHED)
def base_task(
    cfg: dict[str, Any], search: dict[str, Any], judge: dict[str, Any], reward: dict[str, Any], model_path: str, instruct_path: str,
    long_cot_path: str, out_dir: str, endpoint: dict[str, Any], record: dict[str, Any],
) -> dict[str, Any]:
    started = time.time()
    base = BaseStageConfig.model_validate(cfg)
    with _endpoint_slots(endpoint, base.concurrency):
        result = run_base(base, model_path, instruct_path, endpoint["url"], out_dir, SearchConfig.model_validate(search),
                          JudgeConfig.model_validate(judge), long_cot_path, RewardConfig.model_validate(reward))
    return _recorded(record, out_dir, started, result)


@task(name="sft", **CACHED)
def sft_task(cfg: dict[str, Any], model_path: str, trajectory_dirs: list[str], out_dir: str, launcher: dict[str, Any] | None,
             record: dict[str, Any]) -> dict[str, Any]:
    started = time.time()
    if launcher is not None:
        result = launch_training(TrainingLauncher.model_validate(launcher), "sft", {"sft": cfg}, model_path, trajectory_dirs, out_dir)
    else:
        result = run_sft(SFTStageConfig.model_validate(cfg), model_path, trajectory_dirs, out_dir)
    return _recorded(record, out_dir, started, result)


@task(name="grpo", **CACHED)
def grpo_task(
    cfg: dict[str, Any], search: dict[str, Any], judge: dict[str, Any], reward: dict[str, Any], model_path: str | None, curated_dir: str,
    out_dir: str, launcher: dict[str, Any] | None, record: dict[str, Any],
) -> dict[str, Any]:
    started = time.time()
    if launcher is not None:
        sections = {"grpo": cfg, "search": search, "judge": judge, "reward": reward}
        result = launch_training(TrainingLauncher.model_validate(launcher), "grpo", sections, model_path, [curated_dir], out_dir)
    else:
        result = run_grpo(GRPOStageConfig.model_validate(cfg), model_path, curated_dir, out_dir, SearchConfig.model_validate(search),
                          JudgeConfig.model_validate(judge), reward=RewardConfig.model_validate(reward))
    return _recorded(record, out_dir, started, result)


@task(name="evaluate", **CACHED)
def evaluate_task(
    cfg: dict[str, Any], search: dict[str, Any], judge: dict[str, Any], reward: dict[str, Any], model_path: str | None, curated_dir: str,
    out_dir: str, endpoint: dict[str, Any], record: dict[str, Any],
) -> dict[str, Any]:
    started = time.time()
    evaluation = EvalConfig.model_validate(cfg)
    with _endpoint_slots(endpoint, evaluation.concurrency):
        result = run_evaluate(evaluation, model_path, curated_dir, out_dir, SearchConfig.model_validate(search),
                              JudgeConfig.model_validate(judge), RewardConfig.model_validate(reward))
    return _recorded(record, out_dir, started, result, endpoint_facing=bool(evaluation.model_url))


@task(name="report", **CACHED)
def report_task(run_dirs: list[str], out_dir: str, record: dict[str, Any]) -> dict[str, str]:
    started = time.time()
    return _recorded(record, out_dir, started, build_report(run_dirs, out_dir))


class Stages:
    """Runs a flow's stage tasks. For each task: the cache key from its config, its inputs and the
    code; a forced re-run when the output on disk was not made under that key (deleted, or made
    by another config since); what was cached, and how long each stage took."""

    def __init__(self, cfg: PipelineConfig, run: Path) -> None:
        self.cfg = cfg
        self.run = run
        self.storage = run / RESULTS_DIR
        self.results: dict[str, Any] = {}
        self.timings: dict[str, float] = {}
        self.cached: list[str] = []
        self._keys: dict[tuple, tuple[str, list[str], bool]] = {}

    def _key(self, stage: str, out: str | Path, config: Any, inputs: tuple) -> tuple[str, list[str], bool]:
        """The task's cache key, its inputs, and whether it must run even on a cache record (its output
        is missing or was made under another key). Once per task: `will_run` and the call share it."""
        inputs_list = [str(i) for i in inputs if i]
        memo = (stage, str(out), lineage.config_hash(config), tuple(inputs_list))
        if memo not in self._keys:
            key = lineage.stage_key(stage, config, inputs_list)
            # Files the last run found and read (a source's images) are checked too: one that changed re-runs it.
            refresh = not self.cfg.cache or lineage.recorded_key(out) != key or bool(lineage.changed_read_files(out, limit=1))
            self._keys[memo] = (key, inputs_list, refresh)
        return self._keys[memo]

    def will_run(self, stage: str, out: str | Path, config: Any, inputs: tuple = ()) -> bool:
        """Whether the task would do work (for starting a managed endpoint only when one will)."""
        key, _, refresh = self._key(stage, out, config, inputs)
        return refresh or not ResultStore(result_storage=LocalFileSystem(basepath=str(self.storage))).exists(key)

    def _task(self, task_fn: Any, stage: str, out: str | Path, config: Any, inputs: tuple, endpoint: bool) -> tuple[Any, dict[str, Any]]:
        key, inputs_list, refresh = self._key(stage, out, config, inputs)
        options: dict[str, Any] = {"result_storage": self.storage, "refresh_cache": refresh}
        if endpoint:
            options.update(retry_options(self.cfg.orchestration))
        return task_fn.with_options(**options), {"stage": stage, "config": config, "inputs": inputs_list, "key": key}

    def call(self, stage: str, task_fn: Any, out: str | Path, config: Any, inputs: tuple, params: dict[str, Any],
             endpoint: bool = False) -> Any:
        """One task, in the flow's own process (merges, training)."""
        started = time.time()
        bound, record = self._task(task_fn, stage, out, config, inputs, endpoint)
        state = bound(**params, record=record, return_state=True)
        result = state.result()
        self._note(stage, [state], started)
        return result

    def map(self, stage: str, task_fn: Any, calls: list[tuple[str | Path, Any, tuple, dict[str, Any]]], endpoint: bool = False) -> list[Any]:
        """One task per part (source part, input shard) on the task runner; their results in order."""
        started = time.time()
        futures = []
        for out, config, inputs, params in calls:
            bound, record = self._task(task_fn, stage, out, config, inputs, endpoint)
            futures.append(bound.submit(**params, record=record))
        with tqdm(total=len(futures), desc=stage, unit="task", disable=len(futures) < 2, file=sys.stderr) as bar:
            for future in futures:  # in submission order: a bar with an ETA, not exact completion order
                future.wait()
                bar.update()
        results = [future.result() for future in futures]  # the first failure ends the flow with its message
        self._note(stage, [future.state for future in futures], started)
        return results

    def _note(self, stage: str, states: list[Any], started: float) -> None:
        if all(state.name == "Cached" for state in states):
            if stage not in self.timings and stage not in self.cached:
                self.cached.append(stage)
            return
        if stage in self.cached:
            self.cached.remove(stage)
        self.timings[stage] = round(self.timings.get(stage, 0.0) + time.time() - started, 2)

    def done(self, stage: str, result: Any) -> Any:
        """A stage's final result: printed, and its counts as an artifact when it ran."""
        self.results[stage] = result
        if stage in self.cached:
            print(f"[{stage}] cached: same config, inputs and code")
        else:
            if isinstance(result, dict):
                artifacts.counts_table(stage, result)
            print(f"[{stage}] done in {self.timings.get(stage, 0.0):.1f} s")
        return result

    def summary(self) -> dict[str, Any]:
        return {"run_dir": str(self.run), "stages": self.results, "cached": self.cached, "timings_s": self.timings}


class Resolved:
    """What every flow derives from the config and the run directory: the stage configs with the
    demo world's files filled in, and where each stage's output lives."""

    def __init__(self, cfg: PipelineConfig, run: Path) -> None:
        self.cfg, self.run = cfg, run
        self.world = world_files(cfg.world.kind, run / "world") if cfg.world is not None else None
        self.curate = cfg.curate.model_copy(deep=True)
        self.synth = cfg.synth.model_copy(deep=True)
        self.search = cfg.search.model_copy(deep=True)
        # Search results are cached beside the runs, so a regenerated run does not pay for them again.
        self.search.cache_dir = self.search.cache_dir or run.parent / ".cache" / "search"
        self.text_files: list[str] = []
        if self.world is not None:
            self.curate.sources = [SourceSpec(path=Path(self.world["samples_path"]), name="demo-world"), *self.curate.sources]
            self.search.corpus_path = self.search.corpus_path or Path(self.world["corpus_path"])
            self.search.image_corpus_path = self.search.image_corpus_path or Path(self.world["image_corpus_path"])
            if self.synth.long_cot is not None and self.synth.long_cot.path is None:
                self.synth.long_cot.path = Path(self.world["long_cot_path"])
            self.text_files = [self.world["scripts_path"], self.world["corpus_path"]]
        self.curated = str(run / "curate")
        self.probes = str(run / "probe")
        self.pools = str(pools_dir(cfg, run))  # what synthesis and evaluation read
        self.trajectories = str(run / "synthesize")
        self.managed = cfg.replay is not None or cfg.teacher_server is not None
        self._search_files: tuple[str, ...] | None = None

    def dumps(self) -> dict[str, Any]:
        return {"search": self.search.model_dump(mode="json"), "judge": self.cfg.judge.model_dump(mode="json"),
                "reward": self.cfg.reward.model_dump(mode="json")}

    def search_files(self) -> tuple[str, ...]:
        """The local files the tools' search reads (corpora, the image corpus's images): inputs of
        every stage whose episodes search. Read when first asked, once the demo world exists."""
        if self._search_files is None:
            self._search_files = tuple(str(f) for f in search_input_files(self.search))
        return self._search_files

    def launcher(self) -> dict[str, Any] | None:
        """How training runs (not part of a stage's cache key: where it runs does not change what it makes)."""
        return self.cfg.training.model_dump() if self.cfg.training is not None else None


class Endpoint:
    """The model endpoint probes and synthesis call: the configured URL, or a managed server (the
    replay server, or `teacher_server.command`) started when a task first needs it, stopped at the end."""

    def __init__(self, resolved: Resolved, url: str | None = None) -> None:
        self.resolved = resolved
        self._url = url
        self._server: ManagedServer | None = None

    def url(self) -> str:
        cfg, run = self.resolved.cfg, self.resolved.run
        if self._url is None and cfg.replay is not None:
            port = free_port()
            self._url = f"http://127.0.0.1:{port}/v1"
            command = replay_command(self.resolved.world["scripts_path"], port, cfg.replay.model_dump(), cfg.synth.teacher_model,
                                     cfg.base.instruct_model if cfg.base is not None else None)
            self._server = ManagedServer(command, self._url, run / "logs" / "replay-server.log", ready_timeout_s=60).start()
        elif self._url is None and cfg.teacher_server is not None:
            self._url = cfg.teacher_server.base_url
            self._server = ManagedServer(cfg.teacher_server.command, self._url, run / "logs" / "teacher-server.log",
                                         ready_timeout_s=cfg.teacher_server.ready_timeout_s).start()
        return self._url or ""

    def task_param(self, configured_url: str, model: str, managed: bool, needed: bool) -> dict[str, Any]:
        """What an endpoint-facing task gets: the URL to call (the managed server's, when `managed`)
        and the name of the endpoint's concurrency limit, created when missing."""
        if not needed:  # every task of the stage is cached: start nothing
            return {}
        url = self.url() if managed else configured_url
        name = endpoint_limit_name(url, model)
        ensure_endpoint_limit(name, self.resolved.cfg.orchestration.endpoint_max_in_flight)
        # A managed server's port is new each run: the request cache knows it by what it serves.
        identity = None
        if managed:
            teacher_server = self.resolved.cfg.teacher_server
            identity = f"managed:{teacher_server.base_url}" if teacher_server is not None else "managed:replay"
        return {"url": url if managed else None, "limit": name, "identity": identity}

    def __enter__(self) -> Endpoint:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.stop()


def replay_command(scripts_path: str, port: int, replay: dict[str, Any], teacher_model: str, instruct_model: str | None = None) -> list[str]:
    command = [sys.executable, "-m", "flows.cli", "serve-replay", "--scripts", scripts_path, "--port", str(port)]
    command += ["--teacher-model", teacher_model] + (["--instruct-model", instruct_model] if instruct_model else [])
    for key in ("wrong_rate", "code_error_rate", "malformed_rate", "latency_ms", "seed", "fault_rate"):
        command += [f"--{key.replace('_', '-')}", str(replay[key])]
    return command


def _managed(config: dict[str, Any], field: str, managed: bool) -> dict[str, Any]:
    """A managed server gets a new port each run: its URL is not part of what a stage depends on."""
    return config | {field: "managed"} if managed else config


def _config(config: dict[str, Any] | str) -> PipelineConfig:
    """A flow's config parameter: the validated config, or a YAML path (deployments pass one, so an
    edited file takes effect at the next scheduled run)."""
    return load_config(config) if isinstance(config, str) else PipelineConfig.model_validate(config)


# ---------------------------------------------------------------------------------------------
# The stages, as functions of (Stages, Resolved): the flows below compose them.


def _curate(stages: Stages, r: Resolved, endpoint: Endpoint) -> None:
    cfg, run = r.cfg, r.run
    check_flow_sections(cfg, "curate")  # a config that only evaluates an outside model has nothing to curate
    if cfg.world is not None:
        stages.done("world", stages.call("world", world_task, run / "world", cfg.world.model_dump(), (),
                                         {"kind": cfg.world.kind, "world": cfg.world.generator_settings(), "out_dir": str(run / "world")}))
    curate = r.curate.model_dump(mode="json")
    need_phash = r.curate.near_dup.enabled or (bool(r.curate.benchmarks) and r.curate.decontam.check_images)
    scans, staged_dirs = [], []
    for index, spec in enumerate(r.curate.sources):
        for part in range(r.curate.scan_parts):
            out = str(Path(r.curated) / STAGING_DIR / staged_dir_name(index, part))
            # What a scan depends on: its source and the validation settings, not dedup or split.
            key_cfg = {"source": spec.model_dump(mode="json"), "part": part, "parts": r.curate.scan_parts, "need_phash": need_phash,
                       **r.curate.model_dump(include={"min_side", "max_aspect", "max_pixels", "rows_per_shard"})}
            scans.append((out, key_cfg, tuple(str(f) for f in spec.local_files()),
                          {"cfg": curate, "source_index": index, "part": part, "out_dir": out}))
            staged_dirs.append(out)
    stages.map("curate", curate_scan_task, scans)
    probes = cfg.probe is not None
    benchmark_files = tuple(str(f) for spec in r.curate.benchmarks for f in spec.local_files())
    curated = stages.done("curate", stages.call("curate", curate_finish_task, r.curated, curate | {"probes": probes}, (*staged_dirs, *benchmark_files),
                                                {"cfg": curate, "staged_dirs": staged_dirs, "out_dir": r.curated, "probes": probes}))
    empty_eval = empty_heldout_warning(cfg.eval, curated.get("per_pool", {}), world=cfg.world is not None)
    if empty_eval is not None:  # told now, not after training
        get_run_logger().warning(empty_eval)
        curated.setdefault("warnings", []).append(empty_eval)
    if cfg.probe is None:
        return
    probe = cfg.probe.model_dump(mode="json")
    replayed = cfg.replay is not None  # the replay server plays the student too
    probe_key = _managed(probe, "student_url", replayed) | r.dumps()
    shards = [str(f) for f in shard_files(r.curated)]
    outs = [str(Path(r.probes) / SHARDS_DIR / Path(s).stem) for s in shards]
    needed = any(stages.will_run("probe", out, probe_key, (shard, *r.search_files())) for shard, out in zip(shards, outs, strict=True))
    target = endpoint.task_param(cfg.probe.student_url, cfg.probe.student_model, replayed, needed)
    stages.map("probe", probe_shard_task, [
        (out, probe_key, (shard, *r.search_files()), {"cfg": probe, **r.dumps(), "shard": shard, "out_dir": out, "endpoint": target})
        for shard, out in zip(shards, outs, strict=True)], endpoint=True)
    stages.done("probe", stages.call("probe", probe_merge_task, r.probes, probe_key, tuple(outs),
                                     {"cfg": probe, "shard_dirs": outs, "out_dir": r.probes}))
    select = cfg.select.model_dump(mode="json")
    stages.done("select", stages.call("select", select_task, r.pools, select, (r.curated, r.probes),
                                      {"cfg": select, "curated_dir": r.curated, "probe_dir": r.probes, "out_dir": r.pools}))


def _synthesize(stages: Stages, r: Resolved, endpoint: Endpoint) -> None:
    check_flow_input(r.cfg, "synthesize", r.run)  # said before starting by `deepeyes run`, here for a run started elsewhere
    synth = r.synth.model_dump(mode="json")
    shard_key = _managed(synth, "teacher_url", r.managed) | r.dumps() | {"long_cot": None}
    shards = [str(f) for f in shard_files(r.pools)]
    outs = [str(Path(r.trajectories) / SHARDS_DIR / Path(s).stem) for s in shards]
    needed = any(stages.will_run("synthesize", out, shard_key, (shard, *r.search_files())) for shard, out in zip(shards, outs, strict=True))
    target = endpoint.task_param(r.synth.teacher_url, r.synth.teacher_model, r.managed, needed)
    stages.map("synthesize", synthesize_shard_task, [
        (out, shard_key, (shard, *r.search_files()), {"cfg": synth, **r.dumps(), "shard": shard, "out_dir": out, "endpoint": target})
        for shard, out in zip(shards, outs, strict=True)], endpoint=True)
    long_cot = r.synth.long_cot.path if r.synth.long_cot is not None else None
    stages.done("synthesize", stages.call("synthesize", synthesize_merge_task, r.trajectories, _managed(synth, "teacher_url", r.managed),
                                          (*outs, long_cot), {"cfg": synth, "shard_dirs": outs, "out_dir": r.trajectories}))


def _sft_input_model(stages: Stages, r: Resolved, endpoint: Endpoint) -> str:
    if r.cfg.sft.model_path is not None:
        return r.cfg.sft.model_path
    out = str(r.run / "model-base")
    tiny = r.cfg.tiny_model.model_dump()
    model_path = stages.done("build-model", stages.call("build-model", build_tiny_model_task, out, tiny, tuple(r.text_files),
                                                        {"cfg": tiny, "text_files": r.text_files, "out_dir": out}))
    if r.cfg.base is None:
        return model_path
    # The instruct stage: the tiny model becomes a base like the paper's (direct answers, a few tool attempts).
    base = r.cfg.base.model_dump(mode="json")
    base_out = str(r.run / "base")
    key = base | r.dumps()
    inputs = (model_path, r.world["instruct_path"], r.world["long_cot_path"], *r.search_files())
    needed = stages.will_run("base", base_out, key, inputs)
    target = endpoint.task_param(r.synth.teacher_url, r.cfg.base.instruct_model, True, needed)
    result = stages.call("base", base_task, base_out, key, inputs,
                         {"cfg": base, **r.dumps(), "model_path": model_path, "instruct_path": r.world["instruct_path"],
                          "long_cot_path": r.world["long_cot_path"], "out_dir": base_out, "endpoint": target}, endpoint=True)
    return stages.done("base", result)["checkpoint"]


def _sft(stages: Stages, r: Resolved, endpoint: Endpoint) -> str:
    check_flow_input(r.cfg, "train_sft", r.run)
    model_path = _sft_input_model(stages, r, endpoint)
    sft = r.cfg.sft.model_dump(mode="json")
    out = str(r.run / "sft")
    result = stages.call("sft", sft_task, out, sft, (r.trajectories, model_path),
                         {"cfg": sft, "model_path": model_path, "trajectory_dirs": [r.trajectories], "out_dir": out, "launcher": r.launcher()})
    return stages.done("sft", result)["checkpoint"]


def _grpo(stages: Stages, r: Resolved, model_path: str) -> str:
    grpo = r.cfg.grpo.model_dump(mode="json")
    out = str(r.run / "grpo")
    # The judge and the reward are part of what GRPO and evaluation depend on: a new setting re-runs them.
    result = stages.call("grpo", grpo_task, out, grpo | r.dumps(), (r.pools, model_path, *r.search_files()),
                         {"cfg": grpo, **r.dumps(), "model_path": model_path, "curated_dir": r.pools, "out_dir": out, "launcher": r.launcher()})
    return stages.done("grpo", result)["checkpoint"]


def _evaluate(stages: Stages, r: Resolved, endpoint: Endpoint, model_path: str | None) -> None:
    evaluation = r.cfg.eval.model_dump(mode="json")
    out = str(r.run / "eval")
    reads = (model_path, r.pools, *r.search_files(),
             *(str(f) for name in r.cfg.eval.benchmarks for f in benchmark_files(name, r.cfg.eval.data_root, r.run)))
    target: dict[str, Any] = {}
    if r.cfg.eval.model_url:  # an endpoint serves the checkpoint: share its limit with other runs
        needed = stages.will_run("evaluate", out, evaluation | r.dumps(), reads)
        target = endpoint.task_param(r.cfg.eval.model_url, r.cfg.eval.model_name or "", False, needed)
    metrics = stages.call("evaluate", evaluate_task, out, evaluation | r.dumps(), reads,
                          {"cfg": evaluation, **r.dumps(), "model_path": model_path, "curated_dir": r.pools, "out_dir": out,
                           "endpoint": target}, endpoint=bool(target))
    stages.done("evaluate", {"metrics_path": str(Path(out) / "metrics.json"), **metrics})
    grpo = str(r.run / "grpo") if r.cfg.grpo is not None else None
    report = stages.done("report", stages.call("report", report_task, r.run / "report", {}, (out, str(r.run / "sft"), grpo),
                                               {"run_dirs": [str(r.run)], "out_dir": str(r.run / "report")}))
    if "report" not in stages.cached:
        artifacts.report_markdown(report["markdown"])


# ---------------------------------------------------------------------------------------------
# The flows.


def _flow_started(cfg: PipelineConfig, run: Path) -> None:
    """What every flow run does first, wherever it was started (the CLI, a deployment's worker, a
    Python call): keep dill's disassembly out of the run's log (the CLI is not there to set that up),
    and record in the run directory what the run is configured to do (`run.json`: the config and
    the stage directories `plan` lists), which `deepeyes status` reads."""
    keep_dill_out_of_run_logs()
    run.mkdir(parents=True, exist_ok=True)
    stages = [Path(step["out"]).name for step in plan(cfg, run)]
    if cfg.world is None and not cfg.curate.sources:  # a config that only evaluates a model: no data, so no training
        stages = [stage for stage in stages if stage in ("eval", "report")]
    lineage.record_run(run, cfg.model_dump(mode="json"), list(dict.fromkeys(stages)))


def _stage_flow(body: Any, config: dict[str, Any] | str, run_dir: str, endpoint_url: str | None = None) -> dict[str, Any]:
    cfg = _config(config)
    run = Path(run_dir)
    _flow_started(cfg, run)
    stages, resolved = Stages(cfg, run), Resolved(cfg, run)
    with Endpoint(resolved, endpoint_url) as endpoint:
        body(stages, resolved, endpoint)
    summary = stages.summary()
    _merge_summary(run, summary)
    return summary


def _merge_summary(run: Path, part: dict[str, Any]) -> None:
    """Put what a flow ran into the run's `summary.json`, so that `--flow evaluate` on a finished run
    does not leave the old figures there; the whole-run time (`total`) goes, as it no longer describes
    one run (the retrain flow writes the summary whole when it ends)."""
    if not part["timings_s"]:  # everything was cached: nothing to change
        return
    path = run / "summary.json"
    try:
        summary = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # an unreadable old summary is replaced
        summary = {}
    if not isinstance(summary, dict):
        summary = {}
    summary["run_dir"] = str(run)
    summary.setdefault("stages", {}).update(part["stages"])
    summary["cached"] = sorted(set(summary.get("cached", [])) - set(part["timings_s"]) | set(part["cached"]))
    timings = {k: v for k, v in summary.get("timings_s", {}).items() if k != "total"}
    summary["timings_s"] = timings | part["timings_s"]
    atomic_write_json(path, summary)


@flow(name="curate", log_prints=True)
def curate_flow(config: dict[str, Any] | str, run_dir: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """The demo world (when configured), curation, and with a `probe:` section the student's probes and the selection."""
    return _stage_flow(_curate, config, run_dir, endpoint_url)


@flow(name="synthesize", log_prints=True)
def synthesize_flow(config: dict[str, Any] | str, run_dir: str, endpoint_url: str | None = None) -> dict[str, Any]:
    """Teacher trajectories for the cold-start pool, one task per input shard, then the merge."""
    return _stage_flow(_synthesize, config, run_dir, endpoint_url)


@flow(name="train_sft", log_prints=True)
def train_sft_flow(config: dict[str, Any] | str, run_dir: str) -> dict[str, Any]:
    """Cold-start SFT on the run's trajectories (building the tiny base model when none is configured)."""
    return _stage_flow(_sft, config, run_dir)


@flow(name="train_grpo", log_prints=True)
def train_grpo_flow(config: dict[str, Any] | str, run_dir: str) -> dict[str, Any]:
    """GRPO with live tool rollouts, from the run's SFT checkpoint."""
    def body(stages: Stages, r: Resolved, _: Endpoint) -> None:
        check_flow_sections(r.cfg, "train_grpo")
        check_flow_input(r.cfg, "train_grpo", r.run)  # `deepeyes run` checked both before starting; a deployment's run had not
        _grpo(stages, r, input_result("train_grpo", r.run / "sft")["checkpoint"])

    return _stage_flow(body, config, run_dir)


@flow(name="evaluate", log_prints=True)
def evaluate_flow(config: dict[str, Any] | str, run_dir: str, model_path: str | None = None) -> dict[str, Any]:
    """The benchmarks with tools and the tool-free control, then the report. The model: `model_path`,
    else `eval.model_path`, else an endpoint (`eval.model_url`) serving any model, else the run's
    own trained checkpoint."""
    def model(r: Resolved) -> str | None:
        check_flow_input(r.cfg, "evaluate", r.run, model_path)  # a checkpoint, when no model is given
        if model_path or r.cfg.eval.model_path:
            return model_path or r.cfg.eval.model_path
        return None if r.cfg.eval.model_url else final_checkpoint(r.cfg, r.run)

    return _stage_flow(lambda stages, r, endpoint: _evaluate(stages, r, endpoint, model(r)), config, run_dir)


@flow(name="retrain", log_prints=True)
def retrain_flow(config: dict[str, Any] | str, run_dir: str) -> dict[str, Any]:
    """The whole recipe: curate → synthesize → train_sft → train_grpo → evaluate, as subflows.
    Curation and synthesis run their shard tasks on the configured task runner."""
    cfg = _config(config)
    run = Path(run_dir)
    _flow_started(cfg, run)
    started = time.time()
    params = {"config": cfg.model_dump(mode="json"), "run_dir": str(run)}
    runner = {"task_runner": task_runner(cfg.orchestration)}
    summaries: list[dict[str, Any]] = []
    # Each starts the managed endpoint it needs, only when a task of it will call it.
    summaries.append(curate_flow.with_options(**runner)(**params))
    summaries.append(synthesize_flow.with_options(**runner)(**params))
    summaries.append(train_sft_flow(**params))
    if cfg.grpo is not None:
        summaries.append(train_grpo_flow(**params))
    summaries.append(evaluate_flow(**params))
    summary: dict[str, Any] = {"run_dir": str(run), "stages": {}, "cached": [], "timings_s": {}}
    for part in summaries:
        summary["stages"].update(part["stages"])
        summary["cached"] += part["cached"]
        summary["timings_s"].update(part["timings_s"])
    summary["timings_s"]["total"] = round(time.time() - started, 2)
    if len(summary["timings_s"]) > 1:  # a run that did nothing changes no file
        atomic_write_json(run / "summary.json", summary)
    return summary


FLOW_OF_STAGE = {"world": "curate", "curate": "curate", "probe": "curate", "select": "curate", "synthesize": "synthesize",
                 "build-model": "train_sft", "base": "train_sft", "sft": "train_sft", "grpo": "train_grpo", "evaluate": "evaluate", "report": "evaluate"}


def plan(cfg: PipelineConfig, run_dir: str | Path, flow_name: str = "retrain") -> list[dict[str, Any]]:
    """The stages a flow would run, in order, with their outputs and main settings; does nothing."""
    run = Path(run_dir)
    curated = "select" if cfg.probe is not None else "curate"
    teacher = "the replay server (managed)" if cfg.replay else (cfg.teacher_server.base_url + " (managed)" if cfg.teacher_server else cfg.synth.teacher_url)
    steps: list[dict[str, Any]] = []
    if cfg.world is not None:
        over_use = (f", each direct sample an over-user's item (a needless {cfg.world.needless_tool} call) with chance "
                    f"{cfg.world.direct_tool_share:g}" if cfg.world.direct_tool_share else "")
        steps.append({"stage": "world", "out": run / "world", "does": f"generate the {cfg.world.kind} world, {cfg.world.per_family} samples "
                      f"per family, {cfg.world.long_cot} long-CoT rows{over_use} (seed {cfg.world.seed})"})
    sources = ["demo world" if cfg.world else None, *(f"{s.kind}:{s.path}" for s in cfg.curate.sources)]
    steps.append({"stage": "curate", "out": run / "curate", "does": f"read {', '.join(s for s in sources if s)}; near-dup "
                  f"{'on' if cfg.curate.near_dup.enabled else 'off'}; decontaminate against {len(cfg.curate.benchmarks)} benchmark(s)"})
    if cfg.probe is not None:
        steps.append({"stage": "probe", "out": run / "probe", "does": f"student {cfg.probe.student_model}: pass@{cfg.probe.k} without and with tools"})
        steps.append({"stage": "select", "out": run / "select", "does": f"split by the rule (easy above {cfg.select.max_pass_rate_no_tools})"})
    steps.append({"stage": "synthesize", "out": run / "synthesize", "does": f"teacher {cfg.synth.teacher_model} at {teacher} solves "
                  f"{'/'.join(cfg.synth.pools)} from {curated}/ (a task per shard, {cfg.orchestration.task_runner}), "
                  f"{cfg.synth.attempts} attempt(s), {cfg.synth.concurrency} in flight per task"
                  + (f"; then mixes in verified long-CoT rows from {cfg.synth.long_cot.path or 'the world' + chr(39) + 's long_cot.jsonl'} "
                     f"to ratio {cfg.synth.long_cot.ratio}" if cfg.synth.long_cot is not None else "")})
    if cfg.sft.model_path is None:
        steps.append({"stage": "build-model", "out": run / "model-base", "does": f"a tiny {cfg.tiny_model.family} model from its config"})
    if cfg.base is not None:
        steps.append({"stage": "base", "out": run / "base", "does": f"the instruct stage: {cfg.base.instruct_model} answers "
                      f"{cfg.world.instruct_per_family} instruct samples per family, SFT makes the base model"})
    steps.append({"stage": "sft", "out": run / "sft", "does": f"SFT of {cfg.sft.model_path or 'a tiny ' + cfg.tiny_model.family + ' model'}"})
    if cfg.grpo is not None:
        steps.append({"stage": "grpo", "out": run / "grpo", "does": f"GRPO on {'/'.join(cfg.grpo.pools)}, {cfg.grpo.num_generations} rollouts per prompt"})
    model = (f"{cfg.eval.model_name} at {cfg.eval.model_url}" if cfg.eval.model_url else cfg.eval.model_path or "the run's trained checkpoint")
    steps.append({"stage": "evaluate", "out": run / "eval", "does": f"{model} on {', '.join(cfg.eval.benchmarks) or 'the held-out pool'}, "
                  f"{'with the tool-free control' if cfg.eval.tool_free_control else 'tools only'}, profile {cfg.eval.agent.profile}"})
    steps.append({"stage": "report", "out": run / "report", "does": "report.html and report.md"})
    return [step for step in steps if flow_name == "retrain" or FLOW_OF_STAGE[step["stage"]] == flow_name]



def flow_for(name: str, cfg: PipelineConfig) -> Any:
    """The flow called `name`, on the config's task runner where it maps shard tasks."""
    flows = {"retrain": retrain_flow, "curate": curate_flow, "synthesize": synthesize_flow, "train_sft": train_sft_flow,
             "train_grpo": train_grpo_flow, "evaluate": evaluate_flow}
    chosen = flows[name]
    return chosen.with_options(task_runner=task_runner(cfg.orchestration)) if name in ("curate", "synthesize") else chosen
