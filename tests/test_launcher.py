"""Training through a launcher (`training.command`): the flow runs `LAUNCHER -m train.launch STAGE`,
as `accelerate launch` on a GPU node or the Python of a training environment would."""

import json
import os
import subprocess
import sys

from curation.shards import ShardWriter, read_manifest
from synth.stage import SynthConfig, run_synthesize
from synth.trajectory import TRAJECTORY_SCHEMA
from tests.conftest import start_replay
from tests.curate_cli import cli


def run_cli(args, tmp_path, timeout=600):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_train_flows_run_through_the_launcher(world, curated, tiny_model, tmp_path):
    run = tmp_path / "run"
    server, url = start_replay(world, tmp_path)
    try:
        from synth.tools.search import SearchConfig

        search = SearchConfig(corpus_path=world["corpus_path"], image_corpus_path=world["image_corpus_path"])  # the pools hold search questions
        run_synthesize(SynthConfig(teacher_url=url, pools=["coldstart", "rl", "eval"], attempts=1), curated, run / "synthesize", search)
    finally:
        server.stop()
    config = tmp_path / "launched.yaml"
    config.write_text(
        f"name: launched\ncurate: {{sources: [{{path: {world['samples_path']}}}]}}\n"
        f"search: {{corpus_path: {world['corpus_path']}, image_corpus_path: {world['image_corpus_path']}}}\n"
        f"sft: {{model_path: {tiny_model}, max_steps: 2}}\n"
        f"training: {{command: [{sys.executable}], env: {{LAUNCHED_BY: flow}}}}\n"
    )
    done = run_cli(["run", str(config), "--run-dir", str(run), "--flow", "train_sft"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    log = (run / "sft" / "launch-sft.log").read_text()
    summary = json.loads((run / "sft" / "launch-sft.json").read_text())
    assert summary["steps"] == 2 and (run / "sft" / "checkpoint" / "model.safetensors").is_file() and "train_loss" in log
    assert read_manifest(run / "sft")["lineage"]["result"]["checkpoint"] == summary["checkpoint"]
    again = run_cli(["run", str(config), "--run-dir", str(run), "--flow", "train_sft"], tmp_path)
    # Where training runs is not part of what it makes: the same config is a cached stage.
    assert again.returncode == 0 and any(line.startswith("cached:") and "sft" in line for line in again.stdout.splitlines()), again.stdout
    shown = cli("status", str(run)).stdout.splitlines()  # in-process: status reads files only
    sft_line = next(line for line in shown if line.split()[0] == "sft")
    assert f"launcher log {run / 'sft' / 'launch-sft.log'}" in sft_line
    assert sum("launcher log" in line for line in shown) == 1  # synthesize ran in this process


def test_a_launcher_that_fails_is_one_line_naming_its_log(world, tiny_model, tmp_path):
    config = tmp_path / "broken.yaml"
    base = f"name: broken\ncurate: {{sources: [{{path: {world['samples_path']}}}]}}\nsft: {{model_path: {tiny_model}}}\n"
    ShardWriter(tmp_path / "run" / "synthesize", TRAJECTORY_SCHEMA).close()  # a finished (empty) synthesize output: the launcher fails first
    for command, expected in ((f"[{tmp_path}/no-such-launcher]", "training.command: cannot run"),
                              (f"[{sys.executable}, -c, 'import sys; sys.exit(3)', --]", "ended with exit code 3")):
        config.write_text(base + f"training: {{command: {command}}}\n")
        done = run_cli(["run", str(config), "--run-dir", str(tmp_path / "run"), "--flow", "train_sft"], tmp_path)
        assert done.returncode == 2, done.stderr[-2000:]
        assert expected in done.stderr and "Traceback" not in done.stderr
    # The failed stage's status points at what the launcher printed.
    shown = cli("status", str(tmp_path / "run")).stdout
    assert f"launcher log {tmp_path / 'run' / 'sft' / 'launch-sft.log'}" in shown
