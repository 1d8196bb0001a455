"""The training entry point under `accelerate launch` (one CPU process), as a cluster runs it."""

import json
import subprocess
import sys
from pathlib import Path


def test_grpo_entry_point_under_accelerate_launch(world, curated, tiny_model, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text(
        "grpo:\n  pools: [coldstart, rl, eval]\n  max_steps: 1\n  num_generations: 2\n  batch_size: 2\n  max_samples: 1\n"
        "  agent: {max_turns: 2, max_tokens_per_turn: 16, temperature: 1.0}\n"
        f"search: {{corpus_path: {world['corpus_path']}, image_corpus_path: {world['image_corpus_path']}}}\n"
    )
    accelerate = Path(sys.executable).parent / "accelerate"
    done = subprocess.run(
        [str(accelerate), "launch", "--num_processes", "1", "--cpu", "--num_machines", "1", "--mixed_precision", "no",
         "--dynamo_backend", "no", "-m", "train.launch", "grpo", "--config", str(config), "--model", str(tiny_model),
         "--data", str(curated), "--out", str(tmp_path / "grpo")],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 1 and Path(summary["checkpoint"], "config.json").is_file()
    assert (tmp_path / "grpo" / "dynamics.jsonl").read_text().strip()


def test_a_config_mistake_is_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("grpo:\n  num_generations: one\n")
    done = subprocess.run([sys.executable, "-m", "train.launch", "grpo", "--config", str(config), "--model", "x", "--data", "y",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "grpo.num_generations" in done.stderr and "Traceback" not in done.stderr


def test_vllm_rollouts_without_vllm_here_is_one_line(curated, tmp_path):
    """vLLM rollouts need `vllm` in the training environment (TRL's weight sync): said before anything loads."""
    config = tmp_path / "vllm.yaml"
    config.write_text("grpo:\n  vllm: {url: 'http://127.0.0.1:9/v1'}\n")
    done = subprocess.run([sys.executable, "-m", "train.launch", "grpo", "--config", str(config), "--model", "x", "--data", str(curated),
                           "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "grpo.vllm" in done.stderr and "accelerate launch -m train.launch grpo" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "o").exists()


def test_training_needs_no_prefect():
    """The vLLM training environment cannot hold Prefect (their fastapi pins conflict): training imports none of it."""
    code = "import sys; sys.modules['prefect'] = None; import train.launch, train.grpo, train.sft, train.rollout, train.tiny"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_vllm_training_requirements_follow_pyproject():
    """requirements-grpo-vllm.txt is pyproject's dependencies without Prefect (and with vLLM): a new dependency lands in both."""
    import re
    import tomllib

    root = Path(__file__).resolve().parent.parent

    def name(requirement: str) -> str:
        return re.split(r"[\[<>=!;\s]", requirement.strip(), maxsplit=1)[0].lower()

    declared = {name(r) for r in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]}
    listed = {name(line) for line in (root / "requirements-grpo-vllm.txt").read_text().splitlines() if line.strip() and not line.startswith("#")}
    assert {"vllm", "trl"} <= listed and "prefect" not in listed
    assert declared - {"prefect", "torch", "torchvision"} <= listed, declared - listed  # torch and torchvision: vLLM's pins
