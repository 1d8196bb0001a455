"""The pipeline config: one YAML file, validated by pydantic before any work starts.

A mistake ends with one message that names the field, the file and its line (unknown fields
are errors, not silently ignored). Relative paths are resolved against the config file.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from curation import validation_errors
from curation.select import SelectConfig
from curation.setting_path import SettingPath
from curation.sources import SourceError, SourceSpec, check_mapped_columns, same_name_message, wide_encoding
from curation.stage import CurateConfig
from curation.strict_config import MAX_WORLD_SIZE, Seed, StrictConfig
from curation.worlds import WorldKind
from eval.benchmarks import BENCHMARK_NAMES_WHY, BenchmarkError, load_spec
from eval.stage import EvalConfig
from flows.launcher import TrainingLauncher
from flows.orchestration import OrchestrationConfig
from flows.user_input import InputFileError, bools_for_numbers, load_yaml, read_text_file, yaml_error_line
from synth.probe import ProbeConfig
from synth.runtime.endpoint import EndpointError
from synth.runtime.preflight import check_url
from synth.scoring.judge import JudgeConfig
from synth.scoring.reward import RewardConfig
from synth.stage import SynthConfig
from synth.tools.search import SearchConfig
from train.base import BaseStageConfig
from train.grpo import GRPOStageConfig, check_vllm_trainer_environment
from train.sft import SFTStageConfig, TrainingSetupError
from train.tiny import TinyModelConfig


class ConfigError(Exception):
    """A configuration mistake; the message is meant for the user as it is. `loc`: the location of
    the setting it is about, as a validation error's (`("curate", "sources", 0, "path")`), where
    one is: a config read from a YAML file names that setting's line (`config.yaml:12:`), as its
    validation errors do (`parse_config`)."""

    def __init__(self, message: str, loc: tuple[str | int, ...] | None = None) -> None:
        super().__init__(message)
        self.loc = loc


def _at(*loc: str | int) -> tuple[tuple[str | int, ...], str]:
    """(`loc`, its dotted path as validation errors write it: `curate.sources.0.path`), for a
    load-time check's `ConfigError(f"{path}: ...", loc)`."""
    return loc, validation_errors.field_path(loc)


class WorldSettings(StrictConfig):
    """Generate the demo world and use it as the source, the search corpus and the replay script."""

    kind: WorldKind = "classic"  # classic: tests the plumbing; learnable: a tiny model learns it (curation/worlds.py)
    seed: Seed = 0
    # At most MAX_WORLD_SIZE (100,000) each, as long_cot: a learnable world writes a card image per sample
    # (kB each), and a typo of extra zeros (1000000000) would fill the disk before anything said so.
    per_family: int = Field(12, ge=1, le=MAX_WORLD_SIZE)
    distractor_docs: int = Field(40, ge=0)
    # Long-CoT rows for `synth.long_cot` to draw from (text; the learnable world's: direct answers with
    # a card image, ~4.4 kB of disk each). At most 100,000: the paper's 81.6% mix needs ~4.4 per kept
    # trajectory, so this serves ~23,000 trajectories; a typo of extra zeros would fill the disk.
    long_cot: int = Field(100, ge=0, le=MAX_WORLD_SIZE)
    instruct_per_family: int = Field(0, ge=0, le=MAX_WORLD_SIZE)  # learnable only: samples per family for the `base:` instruct stage
    families: list[Literal["perception", "reasoning", "search", "direct"]] | None = None  # learnable only: a subset; None: all four
    # learnable only: the instruct persona's answer on a tool item it tries no tool on: the right one as a guess, or "unknown"
    instruct_unsure: Literal["right", "abstain"] = "right"
    # learnable only: each direct sample's chance of going to the cold start with a teacher that calls a tool
    # needlessly (drawn per sample); needs the `direct` family
    direct_tool_share: float = Field(0.0, ge=0, le=1)
    # learnable only: that needless call: `code` prints the stated number, `search` looks it up (results that
    # can mislead); needs direct_tool_share above 0
    needless_tool: Literal["code", "search"] = "code"

    @field_validator("kind", "families", "instruct_unsure", "needless_tool", mode="before")
    @classmethod
    def _any_case(cls, value: Any) -> Any:
        """`Classic`, `[Perception]`: kinds and categories are read in any case, as a source's are."""
        def lower(name: Any) -> Any:
            return name.strip().lower() if isinstance(name, str) else name
        return [lower(v) for v in value] if isinstance(value, list) else lower(value)

    @field_validator("long_cot", mode="before")
    @classmethod
    def _long_cot_is_a_count(cls, value: Any) -> Any:
        """`world.long_cot: {ratio: 0.816}` mixes it up with `synth.long_cot`, the mix's settings:
        said so, not pydantic's bare `Input should be a valid integer`."""
        if isinstance(value, dict):
            raise PydanticCustomError("long_cot_mapping", "expected a whole number, the long-CoT rows the world writes (got a mapping); "
                                      "the long-CoT mix's settings (ratio, path, opening) go under synth.long_cot")
        return value

    @field_validator("families")
    @classmethod
    def _some_families(cls, value: list[str] | None) -> list[str] | None:
        """`families: []` would make a world of no family (the plan still said "N samples per
        family"): refused; leaving it out means all four."""
        if value is not None and not value:
            raise PydanticCustomError("no_families", "empty; leave it out for all four, or name some of perception, reasoning, "
                                      "search, direct")
        return value

    @field_validator("families", "instruct_per_family", "instruct_unsure", "direct_tool_share", "needless_tool")
    @classmethod
    def _learnable_only(cls, value: Any, info: ValidationInfo) -> Any:
        """`families`, `instruct_per_family`, `instruct_unsure`, `direct_tool_share` and
        `needless_tool` shape the learnable world; the classic one has none of them (a setting
        written for it would be ignored). Their defaults (no subset, 0, `right`, 0.0, `code`) pass: a
        flow validates again from its saved config, which spells every default out."""
        if info.data.get("kind") == "classic" and value not in (None, 0, "right", "code"):
            raise PydanticCustomError("learnable_only", "for the learnable world only (world.kind: learnable); the classic world "
                                      "has no such setting")
        return value

    @field_validator("direct_tool_share")
    @classmethod
    def _direct_tool_share_needs_direct(cls, value: float, info: ValidationInfo) -> float:
        """A share above 0 marks some of the `direct` family's samples; with `families` a subset
        without `direct` there are none, and the setting would do nothing: refused. `families: null`
        (all four, as a flow's saved config spells the default) passes."""
        families = info.data.get("families")
        if value and families is not None and "direct" not in families:
            raise PydanticCustomError("direct_tool_share_without_direct",
                                      "a share of the `direct` family's samples, but world.families ({families}) has no `direct`; "
                                      "add direct to world.families or drop world.direct_tool_share",
                                      {"families": ", ".join(families)})
        return value

    @field_validator("needless_tool")
    @classmethod
    def _needless_tool_needs_a_share(cls, value: str, info: ValidationInfo) -> str:
        """`search` changes the over-user's items, which only `direct_tool_share` above 0 makes: alone it
        would do nothing, so it is refused (`code`, the default, passes)."""
        if value != "code" and info.data.get("kind") != "classic" and not info.data.get("direct_tool_share"):
            raise PydanticCustomError("needless_tool_without_share",
                                      "the tool an over-user's direct items call needlessly, but world.direct_tool_share is 0, "
                                      "so there are none; set world.direct_tool_share above 0 or drop world.needless_tool")
        families = info.data.get("families")
        if value == "search" and families is not None and "search" not in families and info.data.get("distractor_docs") == 0:
            # No search family and no distractors: the corpus is empty, the search finds nothing, and
            # the call could never mislead, which is what the setting is for.
            raise PydanticCustomError("needless_search_without_corpus",
                                      "a search over the world's corpus, but world.families ({families}) has no `search` and "
                                      "world.distractor_docs is 0, so the corpus is empty and the search finds nothing; add "
                                      "search to world.families or set world.distractor_docs above 0",
                                      {"families": ", ".join(families)})
        return value

    def generator_settings(self) -> dict[str, Any]:
        """The fields the world's generator takes."""
        settings = self.model_dump(include={"seed", "per_family", "distractor_docs", "long_cot"})
        if self.kind == "learnable":
            settings["instruct_per_family"] = self.instruct_per_family
            settings["instruct_unsure"] = self.instruct_unsure
            settings["direct_tool_share"] = self.direct_tool_share
            if self.needless_tool != "code":  # only then: the worlds made before the setting keep their cache keys
                settings["needless_tool"] = self.needless_tool
            if self.families:
                settings["families"] = tuple(self.families)
        return settings


class ReplaySettingsModel(StrictConfig):
    """Serve the world's scripted teacher over the OpenAI API (a managed subprocess)."""

    wrong_rate: float = Field(0.0, ge=0, le=1)
    code_error_rate: float = Field(0.0, ge=0, le=1)
    malformed_rate: float = Field(0.0, ge=0, le=1)
    latency_ms: float = Field(0.0, ge=0)
    seed: Seed = 0
    fault_rate: float = Field(0.0, ge=0, le=1)  # transport faults: 429, 500, hangs, drops, bad JSON, empty


class TeacherServer(StrictConfig):
    """A model server the pipeline starts and stops, e.g. `vllm serve MODEL` from vLLM's own venv."""

    command: list[str] = Field(min_length=1)
    base_url: str
    ready_timeout_s: float = Field(600.0, gt=0)


class PipelineConfig(StrictConfig):
    name: str = "demo"
    runs_dir: SettingPath = Path("runs")
    cache: bool = True  # skip a stage whose output was made from the same config, inputs and code
    world: WorldSettings | None = None
    replay: ReplaySettingsModel | None = None
    teacher_server: TeacherServer | None = None
    curate: CurateConfig = Field(default_factory=CurateConfig)
    probe: ProbeConfig | None = None  # student pass@k without and with tools; None: split by hash
    select: SelectConfig = Field(default_factory=SelectConfig)  # the paper's rule on the probes
    synth: SynthConfig = Field(default_factory=SynthConfig)
    tiny_model: TinyModelConfig = Field(default_factory=TinyModelConfig)
    base: BaseStageConfig | None = None  # the instruct stage that turns the tiny model into a base like the paper's; None: SFT starts from the tiny model
    sft: SFTStageConfig = Field(default_factory=SFTStageConfig)
    grpo: GRPOStageConfig | None = None  # RL with live tool rollouts after SFT; None: SFT only
    training: TrainingLauncher | None = None  # run SFT and GRPO through a launcher (accelerate, another env); None: in the flow
    eval: EvalConfig = Field(default_factory=EvalConfig)
    search: SearchConfig = Field(default_factory=SearchConfig)  # one set of tools for synthesis and eval
    judge: JudgeConfig = Field(default_factory=JudgeConfig)  # one judge for probes, synthesis, GRPO and eval
    reward: RewardConfig = Field(default_factory=RewardConfig)  # one scoring for probes, synthesis, GRPO and eval
    orchestration: OrchestrationConfig = Field(default_factory=OrchestrationConfig)  # task runner, retries, endpoint limits

    @field_validator("name", mode="before")
    @classmethod
    def _one_folder_name(cls, value: Any) -> Any:
        """The run directory is `runs_dir/name`: a name is one folder's name (a number reads as its
        text), never a path that leads elsewhere."""
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if isinstance(value, str) and (not value.strip() or value in (".", "..") or any(c in value for c in "/\\\0")):
            raise ValueError(f"{value!r} is not a folder name: the run directory is runs_dir/name, so give a name without "
                             "'/', '\\' or '..' (set runs_dir to choose where runs go)")
        return value

    def check(self) -> None:
        """Cross-field rules and files that must exist, before any work starts."""
        if self.replay is not None and self.world is None:
            raise ConfigError("replay: the replay server serves the demo world's scripts; add a `world:` section", ("replay",))
        if self.replay is not None and self.teacher_server is not None:
            raise ConfigError("replay and teacher_server: choose one teacher", ("replay",))
        self._check_endpoints()
        if self.base is not None:
            if self.world is None or self.world.kind != "learnable" or not self.world.instruct_per_family:
                raise ConfigError("base: the instruct stage trains on the learnable world's instruct samples; "
                                  "set world.kind: learnable and world.instruct_per_family > 0", ("base",))
            if self.replay is None:
                raise ConfigError("base: the instruct samples are answered by the replay server's instruct persona; add a `replay:` section",
                                  ("base",))
            if self.sft.model_path is not None:
                raise ConfigError("base and sft.model_path: the base stage makes the model SFT starts from; choose one", ("base",))
        if self.probe is None and "select" in self.model_fields_set:  # else the plan has no select stage, silently
            raise ConfigError("select: the select stage splits curated rows by the student's probe pass rates, and the config has "
                              "no `probe:` section; add one (`probe: {}` for its defaults), or remove `select:` (without probes, "
                              "curate.split assigns the pools by hash)", ("select",))
        evaluate_only = bool(self.eval.benchmarks) and bool(self.eval.model_url or self.eval.model_path)
        if self.world is None and not self.curate.sources and not evaluate_only:
            raise ConfigError("curate.sources: no source given (or add a `world:` section for the demo world)", ("curate", "sources"))
        for section, specs in (("sources", self.curate.sources), ("benchmarks", self.curate.benchmarks)):
            for i, source in enumerate(specs):
                if problem := source_entry_problem(("curate", section, i), source):
                    raise ConfigError(*problem)
        long_cot = self.synth.long_cot
        if long_cot is not None and long_cot.path is None and self.world is None:
            raise ConfigError("synth.long_cot.path: no long-CoT source given", ("synth", "long_cot"))
        self._check_world_long_cot()
        for field, path in (("search.corpus_path", self.search.corpus_path), ("search.image_corpus_path", self.search.image_corpus_path),
                            ("synth.long_cot.path", long_cot.path if long_cot is not None else None)):
            if path is not None and not path.is_file():
                raise ConfigError(f"{field}: {'a folder, not a file' if path.is_dir() else 'file not found'}: {path}", tuple(field.split(".")))
            if path is not None and path.suffix != ".parquet" and (encoding := wide_encoding(path)):  # before the run reaches it
                raise ConfigError(f"{field}: {path} is {encoding} text: save it as UTF-8", tuple(field.split(".")))
        limit = self.orchestration.endpoint_max_in_flight
        for field, in_flight in (("synth.concurrency", self.synth.concurrency), ("probe.concurrency", self.probe.concurrency if self.probe else 0),
                                 ("eval.concurrency", self.eval.concurrency if self.eval.model_url else 0)):
            if in_flight > limit:
                raise ConfigError(f"{field}: {in_flight} requests in flight is above orchestration.endpoint_max_in_flight ({limit}), "
                                  "the most one endpoint may get; raise the limit or lower the concurrency", tuple(field.split(".")))
        # Trained in the flow's own process: one process. A launcher's process count is known only when it runs (run_grpo checks).
        if self.grpo is not None and self.training is None and (problem := self.grpo.generation_batch_problem(processes=1)):
            raise ConfigError(problem, ("grpo", "batch_size"))
        if self.grpo is not None and self.grpo.vllm is not None and self.grpo.vllm.weight_sync == "nccl" and self.training is None:
            try:
                check_vllm_trainer_environment()
            except TrainingSetupError as exc:
                raise ConfigError(f"{exc} From a pipeline: set training.command to a launcher from that environment "
                                  "(e.g. [/opt/grpo-env/bin/accelerate, launch]).") from None
        for section, model_path in (("sft", self.sft.model_path), ("eval", self.eval.model_path)):
            # A hub id (org/name) also has a slash: only a path that is plainly local must exist, and
            # be a folder (a file passed the check before and failed in from_pretrained, stages later).
            if model_path is not None and model_path.startswith((".", "/")) and not Path(model_path).is_dir():
                said = "a file, not a model directory" if Path(model_path).exists() else "directory not found"
                raise ConfigError(f"{section}.model_path: {said}: {model_path}", (section, "model_path"))
        self._check_benchmarks()

    def _check_world_long_cot(self) -> None:
        """`world.long_cot: 0` writes an empty long_cot.jsonl: refused where a ratio above 0 draws
        from it (`synth.long_cot` without a `path`; the base stage's instruct set, at
        `base.long_cot_ratio`), rather than warned about later under a setting the user never wrote."""
        if self.world is None or self.world.long_cot:
            return
        long_cot = self.synth.long_cot
        needs = []
        if long_cot is not None and long_cot.path is None and long_cot.ratio > 0:
            needs.append(f"synth.long_cot (ratio {long_cot.ratio}) mixes the world's long-CoT rows into the cold-start set")
        if self.base is not None and self.base.long_cot_ratio > 0:
            needs.append(f"base.long_cot_ratio ({self.base.long_cot_ratio}) mixes them into the instruct set")
        if needs:
            raise ConfigError(f"world.long_cot: 0 writes no long-CoT rows, and {' and '.join(needs)}; raise world.long_cot "
                              "(100 by default)" + (", or give synth.long_cot.path" if long_cot is not None and long_cot.path is None else "")
                              + (", or set base.long_cot_ratio: 0" if self.base is not None and self.base.long_cot_ratio > 0 else ""),
                              ("world", "long_cot"))

    def _check_endpoints(self) -> None:
        """One teacher (and student) per config, named once; every URL one an HTTP client can use.
        A URL written beside a `replay:` or `teacher_server:` section is refused rather than
        silently ignored (the managed server would get the requests, the user's server none)."""
        if self.replay is not None and "teacher_url" in self.synth.model_fields_set:
            raise ConfigError("synth.teacher_url and replay: both name the teacher (the replay server would answer, your server "
                              "would get no request); remove the `replay:` section to use your server, or synth.teacher_url for the demo",
                              ("synth", "teacher_url"))
        if self.replay is not None and self.probe is not None and "student_url" in self.probe.model_fields_set:
            raise ConfigError("probe.student_url and replay: both name the student (the replay server plays it); remove the "
                              "`replay:` section to use your server, or probe.student_url for the demo", ("probe", "student_url"))
        server = self.teacher_server
        if server is not None and "teacher_url" in self.synth.model_fields_set and \
                self.synth.teacher_url.rstrip("/") != server.base_url.rstrip("/"):
            raise ConfigError(f"synth.teacher_url ({self.synth.teacher_url}) and teacher_server.base_url ({server.base_url}) name "
                              "two teachers; the managed server is reached at teacher_server.base_url: remove synth.teacher_url",
                              ("synth", "teacher_url"))
        urls = [("teacher_server.base_url", self.teacher_server.base_url if self.teacher_server else None),
                ("synth.teacher_url", self.synth.teacher_url if self.replay is None and self.teacher_server is None else None),
                ("probe.student_url", self.probe.student_url if self.probe is not None and self.replay is None else None),
                ("eval.model_url", self.eval.model_url), ("judge.llm_url", self.judge.llm_url)]
        for field, url in urls:
            if url is not None:
                try:
                    check_url(url, field)
                except EndpointError as exc:
                    raise ConfigError(str(exc), tuple(field.split("."))) from None
        if self.judge.llm_url and not self.judge.llm_model:
            raise ConfigError("judge.llm_model: required with judge.llm_url", ("judge", "llm_model"))

    def _check_benchmarks(self) -> None:
        """Every `eval.benchmarks` entry names a shipped benchmark or a readable definition whose
        data file exists (a source under the run's own directory is made by the run itself), and no
        two of one name (a definition file's `name:`): metrics.json keeps one result per name."""
        names: list[str] = []
        for i, name in enumerate(self.eval.benchmarks):
            loc, path = _at("eval", "benchmarks", i)
            try:
                spec = load_spec(name, self.eval.data_root)
            except BenchmarkError as exc:
                raise ConfigError(f"{path}: {exc}", loc) from None
            names.append(spec.name)
            if problem := same_name_message(names, [f"entry {j}" for j in range(len(names))], BENCHMARK_NAMES_WHY):
                raise ConfigError(f"eval.benchmarks: {problem}", loc)  # told at the second entry's line
            source = spec.source
            if isinstance(source, SourceSpec) and "${run_dir}" not in source.path and not source.exists():
                why = (source.missing() if source.kind == "hf" else  # data_files: relative to the definition's folder
                       f"data file not found: {source.path} (eval.data_root is {Path(self.eval.data_root).resolve()})")
                raise ConfigError(f"{path} ({spec.name}): {why}", loc)
            if isinstance(source, SourceSpec):
                try:
                    check_mapped_columns(source)
                except SourceError as exc:
                    raise ConfigError(f"{path} ({spec.name}): {exc}", loc) from None


def source_entry_problem(loc: tuple[str | int, ...], source: SourceSpec) -> tuple[str, tuple[str | int, ...]] | None:
    """The config entry `source` at `loc` (`("curate", "sources", 0)`) checked before a run: None
    when its file is there and its mapped columns are in its first rows; else (the message, naming
    the setting: `curate.sources.0.path: ...`, and the location whose YAML line it is told at: an
    hf source's `data_files`, a missing column's `fields.X` / `include.X`). One check for a config's
    load (`PipelineConfig.check`) and `deepeyes curate --config`."""
    if not source.exists():
        at = loc if source.kind == "hf" else (*loc, "path")  # an hf source's message names its data_files
        return f"{validation_errors.field_path(at)}: {source.missing()}", ((*loc, "data_files") if source.kind == "hf" else at)
    try:
        check_mapped_columns(source)
    except SourceError as exc:
        return f"{validation_errors.field_path(loc)}: {exc}", (*loc, *exc.setting)
    return None


def check_flow_sections(cfg: PipelineConfig, flow_name: str) -> None:
    """The optional config sections a flow cannot run without, checked before it starts (the CLI calls
    this before the dry run's plan too); `ConfigError` naming the section and what to do."""
    if flow_name == "train_grpo" and cfg.grpo is None:
        raise ConfigError("grpo: the config has no `grpo:` section; add one to run the train_grpo flow "
                          "(the retrain flow without it stops after SFT)")
    if flow_name == "curate" and cfg.world is None and not cfg.curate.sources:
        raise ConfigError("curate.sources: no source given: this config only evaluates a model (run it with --flow evaluate)")


def resolve_paths(raw: dict[str, Any], base: Path) -> None:
    """Every relative path a config names, made absolute against the config file's folder `base`:
    sources and benchmarks (`path`, an `hf` source's `data_files`), `synth.long_cot.path`,
    `search.corpus_path` / `image_corpus_path` / `cache_dir`, `eval.data_root` (its default
    `data/eval` too), benchmark and protocol-profile files (`*.yaml`), `sft.model_path` /
    `eval.model_path` when local (starting with `.` or existing there; else a hub id), and
    `grpo.weight_dir`. Not `runs_dir`: runs go under the working directory."""
    def resolve(value: Any) -> Any:
        # a blank text stays as it is: the setting refuses it (resolved, it would be the config's folder)
        return str((base / value).resolve()) if isinstance(value, str) and value.strip() and not Path(value).is_absolute() else value

    curate = raw.get("curate") if isinstance(raw.get("curate"), dict) else {}
    lists = [curate.get(name) for name in ("sources", "benchmarks")]  # not a list: validation says so
    for source in [source for sources in lists if isinstance(sources, list) for source in sources]:
        if not isinstance(source, dict):
            continue
        if source.get("kind") == "hf":  # `path` is a dataset id or a builder; its files are local
            files = source.get("data_files")
            source["data_files"] = [resolve(f) for f in files] if isinstance(files, list) else resolve(files)
        elif "path" in source:
            source["path"] = resolve(source["path"])
    long_cot = (raw.get("synth") or {}).get("long_cot") if isinstance(raw.get("synth"), dict) else None
    if isinstance(long_cot, dict) and long_cot.get("path"):
        long_cot["path"] = resolve(long_cot["path"])
    search = raw.get("search")
    if isinstance(search, dict):
        for key in ("corpus_path", "image_corpus_path", "cache_dir"):
            if search.get(key):
                search[key] = resolve(search[key])
    def local(value: Any) -> bool:  # a model or a file named by path, not a hub id or a shipped name
        return isinstance(value, str) and not Path(value).is_absolute() and (value.startswith(".") or (base / value).exists())

    sections = {name: raw[name] for name in ("sft", "grpo", "eval", "synth", "probe") if isinstance(raw.get(name), dict)}
    for section in ("sft", "eval"):
        if local(sections.get(section, {}).get("model_path")):
            sections[section]["model_path"] = resolve(sections[section]["model_path"])
    if "grpo" in sections and isinstance(sections["grpo"].get("weight_dir"), str):
        sections["grpo"]["weight_dir"] = resolve(sections["grpo"]["weight_dir"])
    if raw.get("eval") is None:
        raw["eval"] = sections["eval"] = {}
    evaluation = sections.get("eval", {})
    if isinstance(evaluation.get("data_root", "data/eval"), str):  # its default `data/eval` is beside the config too
        evaluation["data_root"] = resolve(evaluation.get("data_root", "data/eval"))
    if isinstance(evaluation.get("benchmarks"), list):  # a benchmark given as a definition file (a shipped name stays)
        # Spaces around an entry are not part of it (`' b.yaml'`), as `eval.benchmarks` reads a name.
        evaluation["benchmarks"] = [resolve(b.strip()) if isinstance(b, str) and b.strip().endswith((".yaml", ".yml")) else b
                                    for b in evaluation["benchmarks"]]
    for section in sections.values():  # a protocol profile given as a file
        agent = section.get("agent")
        if isinstance(agent, dict) and isinstance(agent.get("profile"), str) and agent["profile"].endswith((".yaml", ".yml")):
            agent["profile"] = resolve(agent["profile"])


# The sections whose absence means "none" (no world, no GRPO stage), and what leaving each out gives.
OPTIONAL_SECTIONS: dict[str, str] = {
    "world": "no world", "replay": "no replay", "teacher_server": "no teacher server", "probe": "no probes (pools split by hash)",
    "base": "no base stage", "grpo": "no GRPO stage (SFT only)", "training": "SFT and GRPO run in the flow",
}


def _place(source: str, node: yaml.Node | None, loc: tuple[str | int, ...] | None) -> str:
    """`source:LINE` of the setting at `loc` in the YAML document `node` (`validation_errors.line_of`:
    the deepest part of `loc` written there); `source` alone without a node or a location."""
    line = validation_errors.line_of(node, loc) if loc is not None else None
    return f"{source}:{line}" if line else source


def config_place(path: str | Path, loc: tuple[str | int, ...]) -> str:
    """`path:LINE` of the setting at `loc` (`("curate", "sources", 0)`) in the YAML config file
    `path`, for a command that checks a config's entries itself (`deepeyes curate --config`) to say
    where each is, as `parse_config` does; `path` alone where the file cannot be read as YAML."""
    try:
        node = yaml.compose(read_text_file(path, "config file"))
    except (InputFileError, yaml.YAMLError):
        node = None
    return _place(str(path), node, loc)


def parse_config(
    text: str, source: str, base_dir: Path, overrides: dict[str, Any] | None = None, check: bool = True
) -> PipelineConfig:
    try:
        node = yaml.compose(text)
        raw = load_yaml(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {yaml_error_line(exc)}") from None
    if raw is None and not overrides:  # `{}` is a mapping written empty: told by the checks below
        # An empty (or comments-only) file: said first, not as the first setting it lacks (`curate.sources: no source given`).
        raise ConfigError(f"{source}: the config file is empty (no settings); start from configs/demo.yaml")
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections")
    raw.update(overrides or {})
    resolve_paths(raw, base_dir)
    try:
        # pydantic's lax mode reads `true` as 1 where a number is wanted: refused with the other mistakes.
        lines = [f"{_place(source, node, loc)}: {validation_errors.field_path(loc)}: a number is expected, not a boolean"
                 for loc in bools_for_numbers(PipelineConfig, raw)]
        # `world: null` is a section written empty, not "no world": refused as `synth: null` is, not read as left out.
        lines += [f"{_place(source, node, (name,))}: {name}: expected a mapping "
                  f"of settings (got null); leave the section out for {OPTIONAL_SECTIONS[name]}"
                  for name in OPTIONAL_SECTIONS if name in raw and raw[name] is None]
        raw = {key: value for key, value in raw.items() if not (key in OPTIONAL_SECTIONS and value is None)}
        config = PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        lines += validation_errors.validation_lines(exc.errors(), source, node, PipelineConfig)
        raise ConfigError("invalid config:\n  " + "\n  ".join(validation_errors.by_line(lines, source))) from None
    if lines:
        raise ConfigError("invalid config:\n  " + "\n  ".join(validation_errors.by_line(lines, source)))
    try:
        if check:  # off when a command uses one section and checks its own inputs
            config.check()
    except ConfigError as exc:  # `FILE:LINE: field.path: why`, as a validation error is told
        raise ConfigError(f"{_place(source, node, exc.loc)}: {exc}", exc.loc) from None
    return config


def load_config(path: str | Path, overrides: dict[str, Any] | None = None, check: bool = True) -> PipelineConfig:
    path = Path(path)
    try:
        text = read_text_file(path, "config file")
    except InputFileError as exc:
        raise ConfigError(str(exc)) from None
    return parse_config(text, str(path), path.parent.resolve(), overrides, check)


def demo_config_text() -> str:
    """The embedded default: `configs/demo.yaml`, shipped inside the package."""
    return (resources.files("configs") / "demo.yaml").read_text()


def load_demo_config(overrides: dict[str, Any] | None = None) -> PipelineConfig:
    return parse_config(demo_config_text(), "configs/demo.yaml", Path.cwd(), overrides)
