"""Evaluating a model this pipeline did not train: from the CLI, behind an endpoint, in our protocol
profile and in the reference's (the released checkpoint's), against the replay server; and the
`evaluate` flow with `eval.model_url` in a run directory that trained nothing."""

import json
import os
import subprocess
import sys

import httpx
import pytest

from curation.shards import read_table
from eval.stage import EvalConfig
from synth.profile import load_profile
from tests.conftest import start_replay

PROFILES = {"deepeyes-v2": "deepeyes-v2/2", "deepeyesv2-reference": "deepeyesv2-reference/1"}


def run_cli(args, tmp_path, timeout=600):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.fixture(scope="module")
def replay(world, tmp_path_factory):
    server, url = start_replay(world, tmp_path_factory.mktemp("replay-interop"))
    yield url
    server.stop()


@pytest.fixture(scope="module")
def bench(world, tmp_path_factory):
    path = tmp_path_factory.mktemp("bench") / "world.yaml"
    path.write_text(f"name: world\nsource: {{kind: jsonl, path: {world['samples_path']}}}\njudge: rules\n")
    return path


def stats(url):
    return httpx.get(url.replace("/v1", "/stats")).json()


def observations(rows):
    return ["".join(p["text"] or "" for p in m["content"]) for r in rows for m in r["messages"][2:] if m["role"] == "user"]


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_deepeyes_evaluate_scores_an_endpoint_it_did_not_train_in_both_profiles(profile, world, replay, bench, tmp_path):
    before = stats(replay)
    out = tmp_path / "released"
    args = ["evaluate", "--model-url", replay, "--benchmark", str(bench), "--profile", profile, "--out", str(out),
            "--corpus", world["corpus_path"], "--image-corpus", world["image_corpus_path"], "--max-turns", "6",
            "--max-tokens", "512"]
    if profile == "deepeyes-v2":  # without --model, the endpoint's /v1/models must name one
        unnamed = run_cli(args, tmp_path)
        assert unnamed.returncode == 2 and "serves 4 models (demo-teacher, demo-student, demo-judge, demo-instruct): name one with --model" in unnamed.stderr
    done = run_cli([*args, "--model", "demo-teacher"], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"({PROFILES[profile]})" in done.stdout and "eval world (tools): accuracy 1.000" in done.stdout
    assert "eval world (no_tools)" in done.stdout and (out / "report" / "report.html").is_file()
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["protocol_version"] == PROFILES[profile]
    tools = metrics["benchmarks"]["world"]["runs"]["tools"]["overall"]
    assert tools["n"] == 10 and tools["accuracy"] == 1.0 and tools["tool_calls_per_sample"] > 0
    rows = read_table(out / "eval" / "world" / "tools").to_pylist()
    assert {r["protocol_version"] for r in rows} == {PROFILES[profile]}
    assert all(r["messages"][0]["content"][0]["text"] == load_profile(profile).system for r in rows)
    code = [o for o in observations(rows) if o.startswith("Code execution result:")]
    assert code and all(("stdout:\n```\n" in o) == (profile == "deepeyesv2-reference") for o in code)  # fenced only in the reference's
    searched = [o for o in observations(rows) if o.startswith("<tool_response>")]
    assert searched and all(("found" in o and "## Web Results" in o) == (profile == "deepeyesv2-reference") for o in searched)
    after = stats(replay)
    # The replay server recognised the profile's system prompt and found every observation in its layout (else: 400).
    assert after.get(f"profile:{PROFILES[profile]}", 0) > before.get(f"profile:{PROFILES[profile]}", 0)
    prefilled = after.get(f"prefill:{PROFILES[profile]}", 0) - before.get(f"prefill:{PROFILES[profile]}", 0)
    assert (prefilled > 0) == (profile == "deepeyesv2-reference")  # the reference pre-fills <think> after every observation
    # The evaluation's manifest, as the pipeline's stage writes it: `deepeyes status` shows it complete, then stale.
    status = run_cli(["status", str(out)], tmp_path, timeout=120)
    assert status.returncode == 0, status.stderr[-2000:]
    assert next(line for line in status.stdout.splitlines() if line.strip().startswith("eval ")).split()[1] == "complete"
    if profile == "deepeyesv2-reference":
        os.utime(bench, ns=(os.stat(bench).st_atime_ns, os.stat(bench).st_mtime_ns + 10**9))  # the benchmark's definition changed
        status = run_cli(["status", str(out)], tmp_path, timeout=120)
        line = next(line for line in status.stdout.splitlines() if line.strip().startswith("eval "))
        assert line.split()[1] == "stale" and str(bench) in line


def test_the_replay_server_refuses_observations_in_another_profiles_layout(replay, world):
    reference, ours = load_profile("deepeyesv2-reference"), load_profile("deepeyes-v2")
    scripts = [json.loads(line) for line in open(world["scripts_path"])]
    script = next(s for s in scripts if [t["question"] for t in scripts].count(s["question"]) == 1)  # found by its question alone
    messages = [{"role": "system", "content": reference.system}, {"role": "user", "content": script["question"]},
                {"role": "assistant", "content": "<think>x</think><code>\n```python\nprint(1)\n```\n</code>"}]
    body = {"model": "demo-teacher", "max_tokens": 64}
    wrong = httpx.post(replay + "/chat/completions", json={**body, "messages": [*messages, {"role": "user", "content": ours.render_code("1\n", "", 0)}]})
    assert wrong.status_code == 400 and "does not follow the layout of protocol profile deepeyesv2-reference/1" in wrong.text
    right = httpx.post(replay + "/chat/completions", json={**body, "messages": [*messages, {"role": "user", "content": reference.render_code("1\n", "", 0)}]})
    assert right.status_code == 200, right.text


def test_the_evaluate_flow_takes_an_endpoint_in_a_run_that_trained_nothing(world, replay, bench, tmp_path):
    config = tmp_path / "released.yaml"
    config.write_text(f"""\
name: released
search: {{corpus_path: {world["corpus_path"]}, image_corpus_path: {world["image_corpus_path"]}}}
eval:
  model_url: "{replay}"
  model_name: demo-teacher
  benchmarks: ["{bench}"]
  max_samples: 4
  tool_free_control: false
  agent: {{profile: deepeyesv2-reference, max_turns: 6, max_tokens_per_turn: 512}}
""")
    run = tmp_path / "run"
    done = run_cli(["run", str(config), "--flow", "evaluate", "--run-dir", str(run)], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "eval world (tools): accuracy 1.000 [" in done.stdout
    assert not (run / "sft").exists() and {r["protocol_version"] for r in read_table(run / "eval" / "world" / "tools").to_pylist()} == {"deepeyesv2-reference/1"}


def test_eval_defaults_fit_real_models_and_an_endpoint_is_named():
    agent = EvalConfig().agent
    assert agent.max_turns == 10 and agent.max_tokens_per_turn >= 8192 and agent.think_prefix is None
    assert EvalConfig(agent={"profile": "deepeyesv2-reference"}).agent.prefix_for(1) == "<think>"
    assert EvalConfig().agent.prefix_for(1) == ""  # ours: no pre-fill unless asked
    with pytest.raises(ValueError, match="eval.model_name"):
        EvalConfig(model_url="http://localhost:8000/v1")
    with pytest.raises(ValueError, match="unknown protocol profile 'nope'"):
        EvalConfig(agent={"profile": "nope"})


def test_the_example_configs_load_with_real_model_budgets():
    from pathlib import Path

    from flows.config import load_config

    configs = Path(__file__).parent.parent / "configs"
    coldstart = load_config(configs / "vllm-teacher.example.yaml", check=False)
    assert coldstart.eval.agent.max_turns == 10 and coldstart.eval.agent.max_tokens_per_turn == 8192
    released = load_config(configs / "released-7b.example.yaml", check=False)
    assert released.eval.model_url and released.eval.agent.profile == "deepeyesv2-reference"
    assert released.eval.agent.prefix_for(1) == "<think>" and not released.curate.sources  # evaluation only: nothing to curate


def test_deepeyes_evaluate_a_checkpoint_path(tiny_model, world, bench, tmp_path):
    out = tmp_path / "tiny"
    done = run_cli(["evaluate", str(tiny_model), "--benchmark", str(bench), "--out", str(out), "--max-samples", "1", "--max-turns", "1",
                    "--max-tokens", "8", "--no-tool-free-control", "--corpus", world["corpus_path"]], tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["model"] == str(tiny_model.resolve()) and list(metrics["benchmarks"]["world"]["runs"]) == ["tools"]
    assert metrics["benchmarks"]["world"]["runs"]["tools"]["overall"]["n"] == 1
    missing = run_cli(["evaluate", str(tmp_path / "nowhere"), "--benchmark", str(bench)], tmp_path)
    assert missing.returncode == 2 and "checkpoint not found" in missing.stderr and "Traceback" not in missing.stderr


def test_an_evaluate_only_config_names_its_flow_when_run_whole(world, replay, bench, tmp_path):
    config = tmp_path / "released.yaml"
    config.write_text(f'eval: {{model_url: "{replay}", model_name: demo-teacher, benchmarks: ["{bench}"]}}\n')
    done = run_cli(["run", str(config), "--run-dir", str(tmp_path / "run")], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "this config only evaluates a model (run it with --flow evaluate)" in done.stderr
