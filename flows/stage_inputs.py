"""What a single-stage flow reads from its run directory (a finished output of an earlier flow), and
the one line that says it is missing. `deepeyes run --flow F` asks before Prefect or the flow starts
(in the dry run too); each flow asks again as it starts, for a run started elsewhere (a deployment's
worker, a Python call). The words are written here only.

Only a missing input is refused: an input that is there but stale (an earlier stage changed since)
or partial (some samples failed) is read as it is, as before."""

from __future__ import annotations

from pathlib import Path

from curation.shards import read_manifest
from flows import lineage
from flows.config import PipelineConfig


def pools_dir(cfg: PipelineConfig, run: Path) -> Path:
    """The curated pools synthesis, GRPO and evaluation read: `select/` with a `probe:` section, else `curate/`."""
    return run / "select" if cfg.probe is not None else run / "curate"


def final_checkpoint(cfg: PipelineConfig, run: Path) -> str | None:
    """The model the evaluate flow scores when run on its own: GRPO's checkpoint (with a `grpo:`
    section), else SFT's; None when neither stage finished in `run`."""
    for stage in ("grpo", "sft") if cfg.grpo is not None else ("sft",):
        result = lineage.recorded_result(run / stage)
        if result is not None:
            return result["checkpoint"]
    return None


def missing_input(cfg: PipelineConfig, flow_name: str, run: Path, model_path: str | None = None) -> str | None:
    """Why `flow_name` cannot run on `run`: the input it reads is not there (`RUN/select: no curated
    samples (run the curate flow first)`), naming the directory and the flow that writes it; None
    when it can run. `model_path`: the evaluate flow's own parameter (a model given to it needs no
    checkpoint in the run; nor does `eval.model_path` or `eval.model_url`). `retrain` and `curate`
    read nothing from the run. A corrupt manifest raises `curation.shards.CorruptManifest` naming
    the file, as reading it in the flow would."""
    if flow_name == "synthesize":
        pools = pools_dir(cfg, run)
        return None if read_manifest(pools) is not None else f"{pools}: no curated samples (run the curate flow first)"
    if flow_name == "train_sft":
        trajectories = run / "synthesize"
        return None if read_manifest(trajectories) is not None else f"{trajectories}: no trajectories (run the synthesize flow first)"
    if flow_name == "train_grpo":
        return None if lineage.recorded_result(run / "sft") is not None else f"{run}: no SFT checkpoint (run the train_sft flow first)"
    if flow_name == "evaluate":
        if model_path or cfg.eval.model_path or cfg.eval.model_url or final_checkpoint(cfg, run) is not None:
            return None
        return f"{run}: no trained checkpoint (run the train_sft flow first)"
    return None


def check_flow_input(cfg: PipelineConfig, flow_name: str, run: Path, model_path: str | None = None) -> None:
    """`FileNotFoundError` (a user error: one line, exit 2) with `missing_input`'s line when the flow's input is missing."""
    if (problem := missing_input(cfg, flow_name, run, model_path)) is not None:
        raise FileNotFoundError(problem)
