"""What a single-stage flow reads from its run directory (a finished output of an earlier flow), and
the one line that says it is missing. `deepeyes run --flow F` asks before Prefect or the flow starts
(in the dry run too); each flow asks again as it starts, for a run started elsewhere (a deployment's
worker, a Python call). The words are written here only.

Only a missing or corrupt input is refused: an input that is there but stale (an earlier stage
changed since) or partial (some samples failed) is read as it is, as before. A corrupt one (its
`_manifest.json` unreadable) is refused in one line naming the file, the flow that reads it and
the flow to run again, which writes it anew (`CorruptInput`): the flow that reads it never runs
the stage that wrote it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from curation.shards import CorruptManifest, ShardError, read_manifest
from flows import lineage
from flows.config import PipelineConfig


class CorruptInput(CorruptManifest):
    """A corrupt `_manifest.json` in a stage directory a flow reads but does not write (`--flow
    train_grpo` on a run whose `sft/` manifest is truncated). The message, one line: `RUN/sft/_manifest.json:
    corrupt manifest (WHY); the train_grpo flow reads it: run the train_sft flow again, which writes it
    anew`. `path`, `why`: as `CorruptManifest`'s; `flow`: the flow that reads it; `writer`: the one that writes it."""

    def __init__(self, corrupt: CorruptManifest, flow: str, writer: str) -> None:
        ShardError.__init__(self, f"{corrupt.path}: corrupt manifest ({corrupt.why}); the {flow} flow reads it: "
                                  f"run the {writer} flow again, which writes it anew")
        self.path, self.why, self.flow, self.writer = corrupt.path, corrupt.why, flow, writer


def input_manifest(flow_name: str, stage_dir: Path) -> dict[str, Any] | None:
    """The manifest of `stage_dir` (a directory of the run that `flow_name` reads), None when it
    has none (missing or unfinished); raises `CorruptInput` when it cannot be read."""
    try:
        return read_manifest(stage_dir)
    except CorruptManifest as exc:
        raise CorruptInput(exc, flow_name, lineage.FLOW_OF_DIR[stage_dir.name]) from None


def input_result(flow_name: str, stage_dir: Path) -> Any | None:
    """The result the stage's last complete run recorded in its lineage (see `flows.lineage.recorded_result`),
    read as `input_manifest` reads it: `CorruptInput` for a corrupt manifest, never a warning."""
    return ((input_manifest(flow_name, stage_dir) or {}).get("lineage") or {}).get("result")


def pools_dir(cfg: PipelineConfig, run: Path) -> Path:
    """The curated pools synthesis, GRPO and evaluation read: `select/` with a `probe:` section, else `curate/`."""
    return run / "select" if cfg.probe is not None else run / "curate"


def final_checkpoint(cfg: PipelineConfig, run: Path, flow_name: str = "evaluate") -> str | None:
    """The model the evaluate flow scores when run on its own: GRPO's checkpoint (with a `grpo:`
    section), else SFT's; None when neither stage finished in `run`. A corrupt manifest on the way
    raises `CorruptInput` (not SFT's checkpoint in place of a GRPO run's whose manifest is corrupt)."""
    for stage in ("grpo", "sft") if cfg.grpo is not None else ("sft",):
        result = input_result(flow_name, run / stage)
        if result is not None:
            return result["checkpoint"]
    return None


def missing_input(cfg: PipelineConfig, flow_name: str, run: Path, model_path: str | None = None) -> str | None:
    """Why `flow_name` cannot run on `run`: the input it reads is not there (`RUN/select: no curated
    samples (run the curate flow first)`), naming the directory and the flow that writes it; None
    when it can run. `model_path`: the evaluate flow's own parameter (a model given to it needs no
    checkpoint in the run; nor does `eval.model_path` or `eval.model_url`). `retrain` and `curate`
    read nothing from the run.

    A corrupt manifest of any directory the flow reads raises `CorruptInput` (a `curation.shards.CorruptManifest`)
    naming the file, the flow and the flow that writes it: synthesize reads the curated pools; train_sft
    the trajectories; train_grpo the SFT checkpoint and the pools; evaluate its checkpoint, the pools
    (the held-out pool, without `eval.benchmarks`) and SFT's record (its report plots the SFT loss)."""
    pools = pools_dir(cfg, run)
    if flow_name == "synthesize":
        return None if input_manifest(flow_name, pools) is not None else f"{pools}: no curated samples (run the curate flow first)"
    if flow_name == "train_sft":
        trajectories = run / "synthesize"
        return None if input_manifest(flow_name, trajectories) is not None else f"{trajectories}: no trajectories (run the synthesize flow first)"
    if flow_name == "train_grpo":
        if input_result(flow_name, run / "sft") is None:
            return f"{run}: no SFT checkpoint (run the train_sft flow first)"
        input_manifest(flow_name, pools)  # read by GRPO's prompts; a missing one is told there
        return None
    if flow_name == "evaluate":
        given = model_path or cfg.eval.model_path or cfg.eval.model_url
        if not given and final_checkpoint(cfg, run, flow_name) is None:
            return f"{run}: no trained checkpoint (run the train_sft flow first)"
        input_manifest(flow_name, run / "sft")  # the report reads SFT's record
        if not cfg.eval.benchmarks:
            input_manifest(flow_name, pools)
        return None
    return None


def check_flow_input(cfg: PipelineConfig, flow_name: str, run: Path, model_path: str | None = None) -> None:
    """`FileNotFoundError` (a user error: one line, exit 2) with `missing_input`'s line when the flow's
    input is missing; `CorruptInput` (one line, exit 2 too) when a manifest it reads is corrupt."""
    if (problem := missing_input(cfg, flow_name, run, model_path)) is not None:
        raise FileNotFoundError(problem)
