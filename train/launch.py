"""The training entry points, for `accelerate launch` on one GPU or many (DeepSpeed ZeRO-3 by config).

    accelerate launch --config_file configs/accelerate-zero3.yaml -m train.launch sft \\
        --config my-config.yaml --model Qwen/Qwen2.5-VL-7B-Instruct --data runs/x/synthesize --out runs/x/sft
    accelerate launch --config_file configs/accelerate-zero3.yaml -m train.launch grpo \\
        --config my-config.yaml --model runs/x/sft/checkpoint --data runs/x/select --out runs/x/grpo

Stage settings come from the config file's `sft:` / `grpo:` (and `search:`, `judge:`, `reward:`) sections, the
same file the pipeline runs. A mistake in it ends with one line naming the field, and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml
from pydantic import ValidationError

from curation.validation_errors import error_message, field_path, plain_errors
from synth.scoring.judge import JudgeConfig
from synth.scoring.reward import RewardConfig
from synth.tools.search import SearchConfig
from train.grpo import GRPOStageConfig, run_grpo
from train.sft import SFTStageConfig, TrainingDataError, TrainingSetupError, run_sft


def _fail(message: str) -> SystemExit:
    print(f"error: {message}", file=sys.stderr)
    return SystemExit(2)


def _section(raw: dict, name: str, model, source: str):
    try:
        return model.model_validate(raw.get(name) or {})
    except ValidationError as exc:
        problems = "; ".join(f"{field_path((name, *e['loc']))}: {error_message(e)}" for e in plain_errors(exc.errors(), model))
        raise _fail(f"{source}: {problems}") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m train.launch", description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=["sft", "grpo"])
    parser.add_argument("--config", type=Path, help="A pipeline YAML; its sft/grpo, search, judge and reward sections are used.")
    parser.add_argument("--model", required=True, help="A local model directory or hub id.")
    parser.add_argument("--data", required=True, nargs="+", help="Trajectory shards (sft) or selected samples (grpo).")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--summary", type=Path, help="Also write the JSON summary to this file (the pipeline's launcher reads it).")
    args = parser.parse_args(argv)

    raw: dict = {}
    source = str(args.config) if args.config else "(defaults)"
    if args.config is not None:
        if not args.config.is_file():
            raise _fail(f"config file not found: {args.config}")
        raw = yaml.safe_load(args.config.read_text()) or {}
    try:
        if args.stage == "sft":
            summary = run_sft(_section(raw, "sft", SFTStageConfig, source), args.model, args.data, args.out)
        else:
            summary = run_grpo(
                _section(raw, "grpo", GRPOStageConfig, source), args.model, args.data[0], args.out,
                _section(raw, "search", SearchConfig, source), _section(raw, "judge", JudgeConfig, source),
                reward=_section(raw, "reward", RewardConfig, source),
            )
    except (TrainingDataError, TrainingSetupError) as exc:
        raise _fail(str(exc)) from None
    from accelerate import PartialState

    if PartialState().is_main_process:
        print(json.dumps(summary))
        if args.summary is not None:
            args.summary.write_text(json.dumps(summary))


if __name__ == "__main__":
    sys.exit(main())
