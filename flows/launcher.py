"""Training stages as a command: the flow runs `LAUNCHER -m train.launch STAGE ...`, the entry point a
cluster runs by hand, instead of training in its own process.

With `accelerate launch` as the launcher, SFT and GRPO use a node's GPUs (DeepSpeed ZeRO-3 by its
config file); with the Python or accelerate of another environment, they train where `vllm` imports
for `grpo.vllm` (its pins exclude Prefect, so the flow cannot hold it). The stage's sections go to
`<out>/launch-<stage>.yaml`, the output of the command to `<out>/launch-<stage>.log`, and the
summary the entry point writes comes back as the task's result.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field

from curation.strict_config import StrictConfig
from train.sft import TrainingSetupError


class TrainingLauncher(StrictConfig):
    """How the flow starts training: a command that runs a Python module given after it as `-m MODULE ARGS`."""

    # e.g. [/opt/grpo-env/bin/accelerate, launch, --config_file, configs/accelerate-zero3.yaml] or [/opt/grpo-env/bin/python]
    command: list[str] = Field(min_length=1)
    env: dict[str, str] = Field(default_factory=dict)  # added to the environment, e.g. CUDA_VISIBLE_DEVICES


def launch_training(launcher: TrainingLauncher, stage: str, sections: dict[str, Any], model: str, data: list[str], out_dir: str) -> dict[str, Any]:
    """Run one training stage through the launcher; its summary, or one error naming the log."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config, log, summary = out / f"launch-{stage}.yaml", out / f"launch-{stage}.log", out / f"launch-{stage}.json"
    config.write_text(yaml.safe_dump(sections, sort_keys=False))
    summary.unlink(missing_ok=True)
    argv = [*launcher.command, "-m", "train.launch", stage, "--config", str(config), "--model", model, "--data", *data,
            "--out", str(out), "--summary", str(summary)]
    print(f"[{stage}] launching: {' '.join(argv)} (log: {log})")
    with open(log, "w") as handle:
        try:
            code = subprocess.run(argv, stdout=handle, stderr=subprocess.STDOUT, env={**os.environ, **launcher.env}, check=False).returncode
        except OSError as exc:  # the launcher itself is missing or not executable
            raise TrainingSetupError(f"training.command: cannot run {launcher.command[0]}: {exc.strerror}") from None
    if code != 0 or not summary.is_file():
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise TrainingSetupError(f"{stage}: the launched training ended with exit code {code}; the end of {log}:\n{tail}")
    return json.loads(summary.read_text())
