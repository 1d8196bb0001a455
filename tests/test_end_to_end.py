"""One run of the whole pipeline, through the CLI and the Prefect flow, on a small world."""

import json
import os
import subprocess
import sys

import datasets
import pytest

from curation.shards import read_manifest, read_table

SMALL = """\
name: e2e
world: {seed: 3, per_family: 3, distractor_docs: 8}
replay: {wrong_rate: 0.2, code_error_rate: 0.2, seed: 0}
curate: {split: {coldstart: 0.6, rl: 0.1, eval: 0.3}}
synth: {attempts: 3, concurrency: 4, agent: {max_turns: 5, max_tokens_per_turn: 512}}
tiny_model: {vocab_size: 1024}
sft: {learning_rate: 0.005, epochs: 2, logging_steps: 2}
probe: {k: 2, concurrency: 8, agent: {max_turns: 5, max_tokens_per_turn: 512}}
grpo: {pools: [rl, coldstart], max_steps: 1, num_generations: 2, batch_size: 2, max_samples: 2,
       agent: {max_turns: 2, max_tokens_per_turn: 32, temperature: 1.0}}
eval: {agent: {max_turns: 3, max_tokens_per_turn: 48, force_think_prefix: true}}
"""


def run_cli(args, tmp_path, timeout=600):
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def check_run_directory(run):
    curated = read_table(run / "curate")
    assert curated.num_rows == 9 and set(curated.column("pool").to_pylist()) <= {None, "eval"}  # the rest is selected
    selected = read_table(run / "select")
    assert set(selected.column("pool").to_pylist()) <= {"coldstart", "rl", "eval"} and read_table(run / "probe").num_rows > 0
    assert json.loads((run / "grpo" / "dynamics.jsonl").read_text().splitlines()[0])["step"] == 1
    trajectories = datasets.load_dataset("parquet", data_files=str(run / "synthesize" / "part-*.parquet"), split="train")
    assert len(trajectories) > 0 and {"messages", "images"} <= set(trajectories.column_names)
    assert read_manifest(run / "synthesize")["counts"]["kept"] == len(trajectories)
    assert (run / "sft" / "checkpoint" / "model.safetensors").is_file()
    assert (run / "sft" / "checkpoint" / "processor_config.json").is_file() or (run / "sft" / "checkpoint" / "preprocessor_config.json").is_file()
    metrics = json.loads((run / "eval" / "metrics.json").read_text())
    heldout = metrics["benchmarks"]["heldout"]
    assert set(heldout["runs"]) == {"tools", "no_tools"}
    for run_metrics in heldout["runs"].values():
        assert run_metrics["overall"]["n"] == heldout["samples"] > 0
        assert 0.0 <= run_metrics["overall"]["accuracy"] <= 1.0
        low, high = run_metrics["overall"]["ci95"]
        assert 0.0 <= low <= run_metrics["overall"]["accuracy"] <= high <= 1.0
    summary = json.loads((run / "summary.json").read_text())
    assert set(summary["timings_s"]) >= {"curate", "synthesize", "sft", "evaluate", "total"}
    # Lineage: every stage's manifest says what made it.
    for stage in ("curate", "probe", "select", "synthesize", "sft", "grpo", "eval"):
        lineage = read_manifest(run / stage)["lineage"]
        assert len(lineage["config_hash"]) == 24 and lineage["versions"]["trl"] and lineage["inputs"]
        assert all(fingerprint for fingerprint in lineage["inputs"].values())
    assert (run / "report" / "report.html").is_file()


def test_cli_run_produces_every_stage_output(tmp_path):
    config = tmp_path / "e2e.yaml"
    config.write_text(SMALL)
    run = tmp_path / "run"
    result = run_cli(["run", str(config), "--run-dir", str(run)], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"run directory: {run}" in result.stdout
    check_run_directory(run)
    # Prefect artifacts: progress of the long stages, each stage's counts, the report.
    query = ("import asyncio, json\nfrom flows.prefect_env import configure_prefect_env\nconfigure_prefect_env()\n"
             "from prefect.client.orchestration import get_client\n"
             "async def main():\n    async with get_client() as client:\n"
             "        print(json.dumps(sorted({a.key for a in await client.read_artifacts() if a.key})))\nasyncio.run(main())")
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    found = subprocess.run([sys.executable, "-c", query], capture_output=True, text=True, env=env, timeout=180)
    assert found.returncode == 0, found.stderr[-2000:]
    keys = set(json.loads(found.stdout.strip().splitlines()[-1]))
    assert {"probe-progress", "synthesize-progress", "curate-counts", "select-counts", "synthesize-counts", "eval-report"} <= keys

    status = run_cli(["status", str(run)], tmp_path, timeout=120)
    assert status.returncode == 0 and "synthesize  complete" in status.stdout and "stale" not in status.stdout
    first_total = json.loads((run / "summary.json").read_text())["timings_s"]["total"]

    # The same pipeline again: nothing runs, no file changes.
    def files():
        return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in run.rglob("*") if p.is_file()}

    before = files()
    again = run_cli(["run", str(config), "--run-dir", str(run)], tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cached:     world, curate, probe, select, synthesize, build-model, sft, grpo, evaluate, report" in again.stdout
    took = float(again.stdout.split("took ")[-1].split(" s")[0])
    assert took < 0.1 * first_total
    assert files() == before

    # A changed synthesis config: synthesis and what depends on it run again, nothing before it.
    config.write_text(SMALL.replace("synth: {attempts: 3", "synth: {attempts: 2"))
    changed = run_cli(["run", str(config), "--run-dir", str(run)], tmp_path)
    assert changed.returncode == 0, changed.stderr[-3000:]
    cached_line = next(line for line in changed.stdout.splitlines() if line.startswith("cached:"))
    assert cached_line.startswith("cached:     world, curate, probe, select, build-model (")
    summary = json.loads((run / "summary.json").read_text())
    assert summary["cached"] == ["world", "curate", "probe", "select", "build-model"]
    assert set(summary["timings_s"]) == {"synthesize", "sft", "grpo", "evaluate", "report", "total"}

    (run / "world" / "samples.jsonl").write_text((run / "world" / "samples.jsonl").read_text() + "\n")
    assert "curate      stale" in run_cli(["status", str(run)], tmp_path, timeout=120).stdout


def test_dry_run_prints_the_plan_and_does_nothing(tmp_path):
    config = tmp_path / "e2e.yaml"
    config.write_text(SMALL)
    result = run_cli(["run", str(config), "--run-dir", str(tmp_path / "run"), "--dry-run"], tmp_path, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "dry run" in result.stdout and " curate " in result.stdout and " evaluate " in result.stdout
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_demo_command(tmp_path):
    result = run_cli(["demo", "--out", str(tmp_path / "demo")], tmp_path, timeout=1800)  # ~3 min idle; 23 min at load 6-11
    assert result.returncode == 0, result.stderr[-3000:]
    assert "metrics:" in result.stdout
