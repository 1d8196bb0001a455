import subprocess
import sys

import pytest

from flows.config import ConfigError, load_config, load_demo_config

GOOD = """\
name: t
world:
  per_family: 2
replay: {}
synth:
  attempts: 2
"""


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_the_embedded_demo_config_is_valid():
    cfg = load_demo_config()
    assert cfg.world is not None and cfg.replay is not None and cfg.synth.teacher_model == "demo-teacher"


def test_a_good_config_loads(tmp_path):
    cfg = load_config(write(tmp_path, GOOD))
    assert cfg.synth.attempts == 2 and cfg.world.per_family == 2


def test_unknown_field_names_field_file_and_line(tmp_path):
    path = write(tmp_path, GOOD + "  agnet:\n    max_turns: 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:7: synth.agnet: unknown field" in str(info.value)


def test_bad_value_names_the_field(tmp_path):
    path = write(tmp_path, GOOD.replace("attempts: 2", "attempts: zero"))
    with pytest.raises(ConfigError, match=r"c.yaml:6: synth.attempts: .*integer"):
        load_config(path)


def test_missing_source_file_is_named(tmp_path):
    path = write(tmp_path, "curate:\n  sources:\n    - {path: data/nope.jsonl}\n")
    with pytest.raises(ConfigError, match=r"curate.sources\[0\].path: file not found: .*data/nope.jsonl"):
        load_config(path)


def test_replay_without_world_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="replay"):
        load_config(write(tmp_path, "replay: {}\n"))


@pytest.mark.parametrize(
    "text,expected",
    [
        (GOOD + "  agnet: 1\n", "synth.agnet: unknown field"),
        (None, "config file not found"),
        (GOOD + "orchestration: {task_runner: spark}\n", "c.yaml:7: orchestration.task_runner: Input should be 'threads', 'dask' or 'ray'"),
        (GOOD + "  concurrency: 64\norchestration: {endpoint_max_in_flight: 32}\n", "synth.concurrency: 64 requests in flight is above"),
    ],
)
def test_cli_reports_user_mistakes_in_one_message_without_traceback(tmp_path, text, expected):
    path = write(tmp_path, text) if text is not None else tmp_path / "missing.yaml"
    run_dir = tmp_path / "run"
    result = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(path), "--run-dir", str(run_dir)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert expected in result.stderr and "Traceback" not in result.stderr
    assert not run_dir.exists()  # it failed before any work


def test_vllm_rollouts_need_a_training_environment_with_vllm(tmp_path):
    """Without `vllm` here, grpo.vllm needs a launcher from an environment that has it; with one, the config loads."""
    text = GOOD + "grpo:\n  vllm: {url: 'http://127.0.0.1:8002'}\n"
    with pytest.raises(ConfigError, match=r"grpo.vllm: .*training.command"):
        load_config(write(tmp_path, text))
    cfg = load_config(write(tmp_path, text + "training: {command: [/opt/grpo-env/bin/accelerate, launch]}\n"))
    assert cfg.training.command[-1] == "launch" and cfg.grpo.vllm.url == "http://127.0.0.1:8002"


def test_disk_weight_sync_needs_no_vllm_here(tmp_path):
    """`grpo.vllm.weight_sync: disk` reloads the weights through HTTP: the pipeline's own environment trains."""
    cfg = load_config(write(tmp_path, GOOD + "grpo:\n  vllm: {url: 'http://127.0.0.1:8002', weight_sync: disk}\n"))
    assert cfg.grpo.vllm.weight_sync == "disk" and cfg.training is None
    with pytest.raises(ConfigError, match="grpo.vllm.weight_sync"):
        load_config(write(tmp_path, GOOD + "grpo:\n  vllm: {url: 'http://127.0.0.1:8002', weight_sync: gloo}\n"))
