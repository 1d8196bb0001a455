"""The Prefect layer: shard tasks on a Dask cluster give the thread runner's rows, the endpoint's
global concurrency limit bounds the requests in flight across parallel tasks, deployments."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pyarrow.compute as pc
import pytest

from curation.shards import read_table
from tests.conftest import start_replay


def run_cli(args, home, timeout=600):
    env = {**os.environ, "PREFECT_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=timeout)


def flow_config(world, teacher_url, orchestration):
    return f"""\
name: flows
curate: {{sources: [{{path: {world["samples_path"]}}}], split: {{coldstart: 0.7, eval: 0.3}}, rows_per_shard: 3, scan_parts: 2}}
search: {{corpus_path: {world["corpus_path"]}, image_corpus_path: {world["image_corpus_path"]}}}
synth: {{teacher_url: "{teacher_url}", attempts: 1, concurrency: 2, agent: {{max_turns: 5, max_tokens_per_turn: 512}}}}
orchestration: {json.dumps(orchestration)}
"""


def curate_and_synthesize(tmp_path, name, world, url, orchestration):
    config = tmp_path / f"{name}.yaml"
    config.write_text(flow_config(world, url, orchestration))
    run = tmp_path / name
    for flow in ("curate", "synthesize"):
        done = run_cli(["run", str(config), "--flow", flow, "--run-dir", str(run)], tmp_path / "prefect-home")
        assert done.returncode == 0, done.stderr[-3000:]
    return run


def comparable(table, drop=()):
    table = table.drop_columns([c for c in drop if c in table.column_names])
    return table.take(pc.sort_indices(table, [("id", "ascending")])).to_pylist()


@pytest.fixture(scope="module")
def slow_teacher(world, tmp_path_factory):
    server, url = start_replay(world, tmp_path_factory.mktemp("slow-replay"), latency_ms=40, wrong_rate=0.2)
    yield url
    server.stop()


def test_shard_tasks_on_a_dask_cluster_give_the_thread_runners_rows(world, slow_teacher, tmp_path):
    from distributed import Client, LocalCluster

    threads = curate_and_synthesize(tmp_path, "threads", world, slow_teacher, {"workers": 4, "endpoint_max_in_flight": 2})
    # Several input shards, each its own task; at most 2 requests in flight across them (the limit).
    assert len(list((threads / "synthesize" / "_shards").iterdir())) >= 2
    assert len(list((threads / "curate" / "_staged").iterdir())) == 2  # one source, read as two parts
    stats = httpx.get(slow_teacher.removesuffix("/v1") + "/stats").json()
    assert 1 <= stats["max_in_flight"] <= 2

    # One worker process is enough to run the shard tasks off the flow's process (pickled there and back);
    # a second only started and imported the pipeline once more on two loaded cores.
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        on_dask = curate_and_synthesize(tmp_path, "dask", world, slow_teacher, {"task_runner": "dask", "address": cluster.scheduler_address})
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.transition_counter) > 0  # the tasks ran there

    assert comparable(read_table(on_dask / "curate")) == comparable(read_table(threads / "curate"))
    timing = ("turn_latency_ms", "latency_ms", "tool_calls")  # wall-clock times differ; the rest must not
    kept = comparable(read_table(on_dask / "synthesize"), timing)
    assert kept and kept == comparable(read_table(threads / "synthesize"), timing)
    assert comparable(read_table(on_dask / "synthesize" / "rejects"), timing) == comparable(read_table(threads / "synthesize" / "rejects"), timing)


@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """A real Prefect server (`prefect server start`), as `deepeyes deploy` needs: its API URL."""
    import signal
    import time

    from synth.runtime.endpoint import free_port

    home = tmp_path_factory.mktemp("prefect-server-home")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"} | {"PREFECT_HOME": str(home),
                                                                           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    prefect = os.path.join(os.path.dirname(sys.executable), "prefect")
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen([prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180
    try:
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, (home / "server.log").read_text()[-2000:]
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        yield api
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def test_deploy_registers_a_scheduled_deployment_and_checks_the_config_first(world, prefect_server, tmp_path):
    api = prefect_server
    config = tmp_path / "weekly.yaml"
    config.write_text(flow_config(world, "http://127.0.0.1:9/v1", {}))
    env = {**os.environ, "PREFECT_API_URL": api, "PREFECT_HOME": str(tmp_path / "client-home")}
    run = lambda args: subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, timeout=300)  # noqa: E731
    done = run(["deploy", str(config), "--flow", "synthesize", "--name", "weekly", "--cron", "0 3 * * 1", "--work-pool", "test-pool",
                "--run-dir", str(tmp_path / "runs")])
    assert done.returncode == 0, done.stderr[-3000:]
    assert "synthesize/weekly" in done.stdout and "0 3 * * 1" in done.stdout
    query = ("import json\nfrom prefect.client.orchestration import get_client\n"
             "with get_client(sync_client=True) as client:\n"
             "    d = client.read_deployment_by_name('synthesize/weekly')\n"
             "    print(json.dumps({'pool': d.work_pool_name, 'crons': [s.schedule.cron for s in d.schedules], 'params': d.parameters,"
             " 'pool_type': client.read_work_pool('test-pool').type}))")
    found = subprocess.run([sys.executable, "-c", query], capture_output=True, text=True, env=env, timeout=180)
    assert found.returncode == 0, found.stderr[-2000:]
    deployment = json.loads(found.stdout.strip().splitlines()[-1])
    assert deployment == {"pool": "test-pool", "crons": ["0 3 * * 1"], "pool_type": "process",
                          "params": {"config": str(config), "run_dir": str(tmp_path / "runs")}}
    assert not (tmp_path / "client-home").exists() or not list((tmp_path / "client-home").glob("*.db"))  # nothing local

    config.write_text(config.read_text().replace("concurrency: 2", "concurrency: 0"))
    bad = run(["deploy", str(config), "--name", "broken", "--work-pool", "test-pool"])
    assert bad.returncode == 2 and "synth.concurrency" in bad.stderr and "Traceback" not in bad.stderr


def test_deploy_without_a_running_prefect_server_says_how_to_start_one(world, tmp_path):
    config = tmp_path / "weekly.yaml"
    config.write_text(flow_config(world, "http://127.0.0.1:9/v1", {}))
    home = tmp_path / "prefect-home"
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    cases = {
        "none configured": ({**base, "PREFECT_HOME": str(home)}, ["--cron", "0 3 * * 1"],
                            "needs a Prefect server and none is configured (PREFECT_API_URL is not set)"),
        "a stopped server": ({**base, "PREFECT_HOME": str(home), "PREFECT_API_URL": "http://127.0.0.1:9/api"}, [],
                             "the Prefect server at http://127.0.0.1:9/api does not answer"),
        "a bad cron string": ({**base, "PREFECT_HOME": str(home), "PREFECT_API_URL": "http://127.0.0.1:9/api"}, ["--cron", "0 3 * *"],
                              "--cron: '0 3 * *' is not a cron expression"),
        "a bad time zone": ({**base, "PREFECT_HOME": str(home)}, ["--cron", "0 3 * * 1", "--timezone", "Mars/Olympus"],
                            "--timezone: unknown time zone 'Mars/Olympus'"),
    }
    for case, (env, args, expected) in cases.items():
        done = subprocess.run([sys.executable, "-m", "flows.cli", "deploy", str(config), *args], capture_output=True, text=True, env=env,
                              timeout=120)
        lines = done.stderr.strip().splitlines()
        assert done.returncode == 2 and len(lines) == 1 and expected in lines[0], (case, done.stderr[-2000:])
        assert "prefect server start" in lines[0] or "cron" in case or "zone" in case
    assert not list(home.rglob("*.db"))  # nothing was registered into a throwaway database


def test_prefect_keeps_its_local_database_in_its_own_home_not_in_the_venv(tmp_path):
    query = ("from flows.prefect_env import configure_prefect_env\nconfigure_prefect_env()\n"
             "from prefect.settings import get_current_settings\nprint(get_current_settings().home)")
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_HOME"} | {"HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", query], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    home = done.stdout.strip().splitlines()[-1]
    assert home == str(tmp_path / ".prefect") and not home.startswith(sys.prefix)


def one_error_line(stderr: str) -> str:
    """The command's error line, after checking it is the only line about the failure (progress
    bars aside): no traceback, no log records."""
    lines = [line for line in stderr.replace("\r", "\n").splitlines() if line.strip() and "task/s]" not in line and "|" not in line[:40]]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr and "ERROR" not in stderr, stderr[-3000:]
    return lines[0]


def _shards_with(run, pool):
    from curation.shards import shard_files

    return sum(1 for f in shard_files(run / "curate") if any(r["pool"] == pool for r in read_table(f).to_pylist()))


@pytest.fixture(scope="module")
def curated_run(world, tmp_path_factory):
    """A run directory after the curate flow of `flow_config` (shards of three rows), to copy."""
    root = tmp_path_factory.mktemp("curated-run")
    config = root / "c.yaml"
    config.write_text(flow_config(world, "http://127.0.0.1:9/v1", {}))
    done = run_cli(["run", str(config), "--flow", "curate", "--run-dir", str(root / "run")], root / "prefect-home")
    assert done.returncode == 0, done.stderr[-3000:]
    return root / "run"


def copy_of(run, tmp_path):
    import shutil

    shutil.copytree(run / "curate", tmp_path / "run" / "curate")
    return tmp_path / "run"


def test_an_endpoint_that_may_recover_is_retried_and_one_that_cannot_fails_the_run_at_once(world, curated_run, tmp_path):
    server, url = start_replay(world, tmp_path, fault_rate=1.0, faults="500")
    stats_url = url.removesuffix("/v1") + "/stats"
    try:
        config = tmp_path / "down.yaml"
        config.write_text(flow_config(world, url, {"retries": 2, "retry_delay_s": 0}).replace("attempts: 1,", "attempts: 1, max_retries: 0,"))
        run = copy_of(curated_run, tmp_path)
        down = run_cli(["run", str(config), "--flow", "synthesize", "--run-dir", str(run)], tmp_path / "prefect-home")
        after_down = httpx.get(stats_url).json()
        # A wrong model name never gets better: no retry, however many are configured.
        config.write_text(config.read_text().replace("synth: {", "synth: {teacher_model: nope, "))
        wrong = run_cli(["run", str(config), "--flow", "synthesize", "--run-dir", str(run)], tmp_path / "prefect-home")
        after_wrong = httpx.get(stats_url).json()
    finally:
        server.stop()
    shards = _shards_with(run, "coldstart")
    assert shards > 1
    assert down.returncode == 2 and one_error_line(down.stderr).startswith(
        f"error: teacher endpoint {url} (model 'demo-teacher'): the first request failed (HTTP 500: internal error (injected))")
    # The preflight of every shard task ran three times (two task retries): the stage's request under
    # its retry policy (max_retries: 0 here), then the same without `stop` and without `seed` to see
    # whether the server refuses one of those fields. No sample went out.
    assert after_down["requests"] == 3 * (1 + 2) * shards
    assert not list((run / "synthesize").glob("part-*.parquet"))  # nothing merged, nothing cached as done
    assert wrong.returncode == 2 and "model 'nope' is not served there; it serves: 'demo-teacher'" in one_error_line(wrong.stderr)
    assert after_wrong["model_listings"] - after_down["model_listings"] == shards and after_wrong["requests"] == after_down["requests"]


def test_a_shard_with_failed_samples_is_not_cached_and_a_rerun_retries_exactly_them(world, tmp_path):
    """A teacher that died mid-shard, then the same command again (issue 17)."""
    from curation.shards import shard_files
    from synth.runtime.endpoint import free_port
    from tests.test_resume_and_faults import rows_signature

    port = free_port()
    answered_before_death = 5
    # The first request is the preflight; the teacher answers four more, then fails every request.
    dying, url = start_replay(world, tmp_path / "dying", port=port, fault_rate=1.0, faults="500", faults_after=answered_before_death)
    synth = "{teacher_url: \"URL\", attempts: 1, concurrency: 1, active_episodes: 1, max_retries: 0, request: {server_error_retries: 0}, " \
            "agent: {max_turns: 5, max_tokens_per_turn: 512}}".replace("URL", url)
    config = tmp_path / "c.yaml"
    config.write_text(flow_config(world, url, {"retries": 0}).replace("rows_per_shard: 3", "rows_per_shard: 100")
                      .replace(flow_config(world, url, {}).split("synth: ")[1].split("\n")[0], synth))
    run, home = tmp_path / "run", tmp_path / "prefect-home"
    try:
        assert run_cli(["run", str(config), "--flow", "curate", "--run-dir", str(run)], home).returncode == 0
        died = run_cli(["run", str(config), "--flow", "synthesize", "--run-dir", str(run)], home)
    finally:
        dying.stop()
    assert died.returncode == 0, died.stderr[-3000:]
    [shard_out] = list((run / "synthesize" / "_shards").iterdir())
    first = json.loads((shard_out / "_manifest.json").read_text())
    assert 0 < first["counts"]["failed"] < first["counts"]["samples"] and len(shard_files(run / "curate")) == 1
    assert first["lineage"]["key"] is None  # not a complete cache entry
    before = {row[0]: row for row in rows_signature(shard_out)}

    restarted, _ = start_replay(world, tmp_path / "restarted", port=port)
    try:
        again = run_cli(["run", str(config), "--flow", "synthesize", "--run-dir", str(run)], home)
        sent = httpx.get(url.removesuffix("/v1") + "/stats").json()["requests"]
    finally:
        restarted.stop()
    assert again.returncode == 0, again.stderr[-3000:]
    assert "cached:" not in again.stdout or "synthesize" not in again.stdout.split("cached:")[1]
    second = json.loads((shard_out / "_manifest.json").read_text())
    counts = second["counts"]
    assert counts["failed"] == 0 and counts["done"] == counts["samples"] == first["counts"]["samples"]
    # Exactly the failed samples' requests went out again (and the preflight); the answered ones were replayed.
    assert counts["requests_replayed"] == answered_before_death - 1 and counts["requests_sent"] == sent - 1
    after = {row[0]: row for row in rows_signature(shard_out)}
    assert {k: after[k] for k in before} == before and len(after) == counts["samples"]  # the rest reused as it was
    assert second["lineage"]["key"] is not None  # complete now: the next run takes it from the cache


def test_an_evaluation_endpoint_that_fails_ends_deepeyes_run_with_one_line(world, curated_run, tmp_path):
    """`deepeyes run` with an evaluation model URL whose server returns 500 (issue 17: about 230
    lines of tracebacks before)."""
    from flows import lineage

    server, url = start_replay(world, tmp_path, fault_rate=1.0, faults="500")
    config = tmp_path / "eval.yaml"
    config.write_text(flow_config(world, "http://127.0.0.1:9/v1", {"retries": 0})
                      + f"eval: {{model_url: \"{url}\", model_name: demo-teacher}}\n")
    run, home = copy_of(curated_run, tmp_path), tmp_path / "prefect-home"
    try:
        # The run's SFT stage recorded its checkpoint (evaluation through an endpoint only names it).
        lineage.record(run / "sft", "sft", {}, [], 0.0, key=None, result={"checkpoint": str(tmp_path / "checkpoint")})
        done = run_cli(["run", str(config), "--flow", "evaluate", "--run-dir", str(run)], home)
    finally:
        server.stop()
    assert done.returncode == 2
    assert f"evaluated model endpoint {url} (model 'demo-teacher'): the first request failed (HTTP 500" in one_error_line(done.stderr)


def test_an_output_path_that_is_a_file_is_refused_in_one_line_naming_the_option(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("mine\n")
    source = tmp_path / "s.jsonl"
    source.write_text(json.dumps({"question": "q?", "answer": "1", "category": "reasoning"}) + "\n")
    config = tmp_path / "c.yaml"
    config.write_text(f"curate:\n  sources: [{{path: {source}}}]\n")
    fix = "a file is there; an output directory is needed (give a new or existing folder)"
    for args, option in [
        (["curate", "--source", f"jsonl:{source}", "--out", str(taken)], "--out"),
        (["generate-world", str(taken)], "OUT"),
        (["run", str(config), "--flow", "curate", "--run-dir", str(taken)], "--run-dir"),
        (["import", "sharegpt", str(source), "--out", str(taken)], "--out"),
    ]:
        done = run_cli(args, tmp_path, timeout=120)
        assert done.returncode == 2 and one_error_line(done.stderr) == f"error: {option} {taken}: {fix}", args
    # A file higher up the path: no folder can be made under it (a config's runs_dir too, dry run or not).
    below = taken / "sub"
    config_with_runs_dir = tmp_path / "r.yaml"
    config_with_runs_dir.write_text(f"name: ok\nruns_dir: {taken}\ncurate:\n  sources: [{{path: {source}}}]\n")
    for args, option, out in [
        (["curate", "--source", f"jsonl:{source}", "--out", str(below)], "--out", below),
        (["run", str(config), "--flow", "curate", "--run-dir", str(below)], "--run-dir", below),
        (["run", str(config_with_runs_dir), "--flow", "curate", "--dry-run"], "run directory", taken / "ok"),
    ]:
        done = run_cli(args, tmp_path, timeout=120)
        assert done.returncode == 2, args
        assert one_error_line(done.stderr) == (f"error: {option} {out}: {taken} is a file, so no folder can be made under it "
                                               "(give a path under a folder)"), args
    assert taken.read_text() == "mine\n"  # nothing written over it


def test_settings_from_command_line_options_that_break_a_rule_are_one_line_naming_the_option(tmp_path):
    done = run_cli(["select", "--input", str(tmp_path), "--probes", str(tmp_path), "--out", str(tmp_path / "o"),
                    "--max-pass-rate-no-tools", "3"], tmp_path, timeout=120)
    assert done.returncode == 2
    assert one_error_line(done.stderr) == "error: --max-pass-rate-no-tools: Input should be less than or equal to 1 (got 3.0)"
    for value in ("0", "-3"):  # a dry run refuses what the run would
        done = run_cli(["demo", "--per-family", value, "--dry-run", "--out", str(tmp_path / "demo")], tmp_path, timeout=120)
        assert done.returncode == 2
        assert one_error_line(done.stderr) == f"error: --per-family: Input should be greater than or equal to 1 (got {value})"
    # Usage errors that typer would draw in a box: one line too.
    for args, expected in [
        # The value given, as our own checks say it (`(got 0)` above): numbers as typed, text quoted.
        (["generate-world", str(tmp_path / "w"), "--per-family", "0"], "error: --per-family: Input should be greater than or equal to 1 (got 0)"),
        (["demo", "--per-family", "many"],
         "error: --per-family: Input should be a valid integer, unable to parse string as an integer (got 'many')"),
        # Seeds as world.seed and bench.fidelity --seeds take them: 0 to 2**32-1.
        (["generate-world", str(tmp_path / "w"), "--seed", "-1"], "error: --seed: Input should be greater than or equal to 0 (got -1)"),
        (["serve-replay", "--scripts", str(tmp_path / "s.jsonl"), "--seed", "4294967296"],
         "error: --seed: Input should be less than or equal to 4294967295 (got 4294967296)"),
        (["status", "--bogus"], "error: No such option: --bogus"),
        (["run"], "error: Missing argument 'CONFIG'."),
    ]:
        done = run_cli(args, tmp_path, timeout=120)
        assert done.returncode == 2 and one_error_line(done.stderr) == expected, (args, done.stderr)


def test_every_command_line_world_size_has_the_configs_bound(tmp_path):
    """Review M3: `generate-world --per-family 100001` started filling the disk and `demo --dry-run
    --per-family 10000000` planned it; world.per_family's bound (MAX_WORLD_SIZE) holds on the command line."""
    from curation.strict_config import MAX_WORLD_SIZE
    from flows.config import WorldSettings

    bounds = {name: [m.le for m in WorldSettings.model_fields[name].metadata if hasattr(m, "le")]
              for name in ("per_family", "instruct_per_family", "long_cot")}
    assert MAX_WORLD_SIZE == 100_000 and bounds == {name: [MAX_WORLD_SIZE] for name in bounds}
    for args, value in [(["generate-world", str(tmp_path / "w")], "100001"),
                        (["demo", "--dry-run", "--out", str(tmp_path / "demo")], "10000000")]:
        done = run_cli([*args, "--per-family", value], tmp_path, timeout=120)
        assert done.returncode == 2 and one_error_line(done.stderr) == (
            f"error: --per-family: Input should be less than or equal to 100000 (got {value})"), (args, done.stderr)
    assert not (tmp_path / "w").exists() and not (tmp_path / "demo").exists()
    done = run_cli(["demo", "--dry-run", "--per-family", "100000", "--out", str(tmp_path / "demo")], tmp_path, timeout=120)
    assert done.returncode == 0 and "100000 samples per family" in done.stdout, done.stderr
    done = subprocess.run([sys.executable, "-m", "bench.synth", "--per-family", "100001"], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == (
        "synth.py: error: argument --per-family: must be 1 to 100000, as world.per_family (got 100001)")


def test_a_corrupt_manifest_is_named_by_status_and_the_stage_counts_as_not_run(tmp_path, caplog):
    from flows import lineage

    stage = tmp_path / "run" / "curate"
    stage.mkdir(parents=True)
    (stage / "_manifest.json").write_text('{"rows": 3, "trunc')
    done = run_cli(["status", str(tmp_path / "run")], tmp_path, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr
    [line] = [line for line in done.stdout.splitlines() if line.strip().startswith("curate")]
    assert line.split()[:2] == ["curate", "corrupt:"]
    assert f"{stage / '_manifest.json'}: corrupt manifest (Unterminated string starting at line" in line
    assert line.endswith("; the next run of the curate flow runs the stage again")  # the flow that writes it; one that reads it refuses it
    # A run reads it as no output: the stage runs again (and says why), and writes a new manifest.
    with caplog.at_level("WARNING", logger="flows.lineage"):
        assert lineage.recorded_key(stage) is None and lineage.recorded_result(stage) is None
    assert f"{stage / '_manifest.json'}: corrupt manifest" in caplog.text and "the stage runs again" in caplog.text
    lineage.record(stage, "curate", {}, [], 0.1, key="k")
    assert lineage.recorded_key(stage) == "k"


@pytest.mark.parametrize("per_family", ["0", "-3"])
def test_generate_world_refuses_a_world_without_samples(tmp_path, per_family):
    from typer.testing import CliRunner

    from flows.cli import app

    done = CliRunner().invoke(app, ["generate-world", str(tmp_path / "world"), "--per-family", per_family])
    assert done.exit_code == 2 and "--per-family" in done.output and "greater than or equal to 1" in done.output
    assert not (tmp_path / "world").exists()


def test_world_settings_and_world_config_refuse_numbers_that_make_no_world():
    from curation.demo_world import WorldConfig
    from flows.config import WorldSettings

    for field, value in (("per_family", 0), ("distractor_docs", -1), ("long_cot", -1)):
        with pytest.raises(ValueError, match=field):
            WorldSettings(**{field: value})
    for field, value, message in (("per_family", 0, "per_family: 0 is not a whole number >= 1"),
                                  ("long_cot", -2, "long_cot: -2 is not a whole number >= 0"),
                                  ("chart_size", (0, 480), r"chart_size: \(0, 480\) is not \(width, height\)")):
        with pytest.raises(ValueError, match=message):
            WorldConfig(**{field: value})
    assert WorldConfig(seed=-3, per_family=1).per_family == 1  # any seed is a seed


@pytest.mark.parametrize("kind", ["classic", "learnable"])
def test_world_long_cot_sets_how_many_long_cot_rows_the_world_writes(tmp_path, kind):
    """`world.long_cot` reaches the generator of either kind: the world's long-CoT file has that many
    rows, each with an answer (so `synth.long_cot.ratio` can draw the paper's 81.6% share)."""
    from curation.worlds import generate
    from flows.config import WorldSettings

    settings = WorldSettings(kind=kind, per_family=1, distractor_docs=1, long_cot=7).generator_settings()
    assert settings["long_cot"] == 7
    generate(kind, tmp_path / "world", settings)
    rows = [json.loads(line) for line in (tmp_path / "world" / "long_cot.jsonl").read_text().splitlines()]
    assert len(rows) == 7 and all(row["answer"] for row in rows)
    assert WorldSettings(kind=kind).generator_settings()["long_cot"] == 100
    # review r7 #5: the count is shown where the world's other counts are: world.json and the plan's world line
    assert json.loads((tmp_path / "world" / "world.json").read_text())["long_cot_rows"] == 7
    from flows.config import PipelineConfig
    from flows.pipeline import plan

    cfg = PipelineConfig.model_validate({"name": "w", "world": {"kind": kind, "per_family": 2, "long_cot": 7}})
    assert next(step["does"] for step in plan(cfg, tmp_path / "run") if step["stage"] == "world") == \
        f"generate the {kind} world, 2 samples per family, 7 long-CoT rows (seed 0)"


def test_world_long_cot_has_an_upper_bound_a_typo_of_zeros_cannot_pass(tmp_path):
    """Review r7 #5: a billion rows would fill the disk (one PNG each in the learnable world)."""
    from flows.config import ConfigError, WorldSettings, load_config

    assert WorldSettings(long_cot=100_000).long_cot == 100_000
    config = tmp_path / "c.yaml"
    config.write_text("name: c\nworld:\n  long_cot: 1000000000\n")
    with pytest.raises(ConfigError) as raised:
        load_config(config)
    assert str(raised.value) == f"invalid config:\n  {config}:3: world.long_cot: Input should be less than or equal to 100000"


@pytest.mark.parametrize(("kind", "rows"), [("classic", 5000), ("learnable", 700)])
def test_a_large_world_long_cot_writes_rows_that_are_all_distinct(tmp_path, kind, rows):
    """Review r7 #4: every row of a large `long_cot` is its own (a repeat is quarantined by synthesis
    as `long_cot_duplicate`). With these settings the generators drew a repeated question before
    (classic: row 665 of 5000; learnable: row 624 of 700, kept small as each row writes an image)."""
    from curation.worlds import generate

    settings = {"per_family": 1, "distractor_docs": 0, "long_cot": rows, **({"instruct_per_family": 0} if kind == "learnable" else {})}
    generate(kind, tmp_path / "world", settings)
    written = [json.loads(line) for line in (tmp_path / "world" / "long_cot.jsonl").read_text().splitlines()]
    assert len(written) == rows and len({row["question"] for row in written}) == rows
    assert len({(row["question"], row["response"]) for row in written}) == rows


def test_status_marks_partial_outputs_and_runs_staleness_down_the_chain(tmp_path):
    """A synthesize output whose endpoint failed samples is `partial` with its count (not complete);
    an input of curate that changes makes every stage made from curate stale, also through a
    stage's parts (probe's part read curate's shard file, not its directory); a file is not a run."""
    from typer.testing import CliRunner

    from flows import lineage
    from flows.cli import app

    run = tmp_path / "run"
    source = tmp_path / "src.jsonl"
    source.write_text('{"question": "q", "answer": "a"}\n')
    lineage.record(run / "curate", "curate", {}, [source], 1.0)
    (run / "curate" / "part-00000.parquet").write_bytes(b"shard")
    lineage.record(run / "probe" / "_shards" / "part-00000", "probe", {}, [run / "curate" / "part-00000.parquet"], 1.0)
    lineage.record(run / "probe", "probe", {}, [run / "probe" / "_shards" / "part-00000"], 1.0)
    lineage.record(run / "select", "select", {}, [run / "curate", run / "probe"], 1.0)
    lineage.record(run / "synthesize", "synthesize", {}, [run / "select"], 1.0, result={"counts": {"done": 9, "failed": 3}})
    lineage.record(run / "sft", "sft", {}, [run / "synthesize"], 1.0)
    states = {row["stage"]: (row["state"], row.get("failed")) for row in lineage.status(run)}
    assert states == {"world": ("missing", None), "curate": ("complete", 0), "probe": ("complete", 0), "select": ("complete", 0),
                      "synthesize": ("partial", 3), "model-base": ("missing", None), "base": ("missing", None), "sft": ("complete", 0),
                      "grpo": ("missing", None),
                      "eval": ("missing", None)}
    shown = CliRunner().invoke(app, ["status", str(run)]).output
    assert "synthesize  partial" in shown and "3 failed (the next run retries them)" in shown

    os.utime(source, ns=(os.stat(source).st_atime_ns, os.stat(source).st_mtime_ns + 10**9))
    rows = {row["stage"]: row for row in lineage.status(run)}
    assert {name: rows[name]["state"] for name in ("curate", "probe", "select", "synthesize", "sft")} == dict.fromkeys(
        ("curate", "probe", "select", "synthesize", "sft"), "stale")
    assert rows["curate"]["changed_inputs"] == [str(source)]
    assert rows["probe"]["changed_inputs"] == ["curate (stale)"] and rows["select"]["changed_inputs"] == [str(source), "curate (stale)", "probe (stale)"]

    as_file = CliRunner().invoke(app, ["status", str(source)])
    assert isinstance(as_file.exception, FileNotFoundError) and "is a file, not a run directory" in str(as_file.exception)


MISSING_INPUTS = [  # (flow, the line `deepeyes run --flow FLOW` on an empty run RUN ends with)
    ("synthesize", "error: {run}/select: no curated samples (run the curate flow first)"),
    ("train_sft", "error: {run}/synthesize: no trajectories (run the synthesize flow first)"),
    ("train_grpo", "error: {run}: no SFT checkpoint (run the train_sft flow first)"),
    ("evaluate", "error: {run}: no trained checkpoint (run the train_sft flow first)"),  # demo.yaml: no eval.model_path nor model_url
]


def test_a_single_stage_flow_on_a_run_without_its_input_names_the_flow_to_run_first(tmp_path):
    from tests.curate_cli import cli

    config = tmp_path / "c.yaml"
    config.write_text((Path(__file__).resolve().parent.parent / "configs" / "demo.yaml").read_text())
    run, prefect_home = tmp_path / "empty", tmp_path / "prefect-home"
    for flow, message in MISSING_INPUTS:
        message = message.format(run=run)
        done = run_cli(["run", str(config), "--flow", flow, "--run-dir", str(run)], prefect_home, timeout=180)
        assert done.returncode == 2 and one_error_line(done.stderr) == message, (flow, done.stderr[-2000:])
        assert done.stdout == "", (flow, done.stdout)  # not even `run directory: ...`, which the CLI prints as the flow starts
        # The dry run refuses what the run would, as it refuses a missing section: the line and no plan.
        planned = cli("run", str(config), "--flow", flow, "--run-dir", str(run), "--dry-run")
        assert (planned.code, planned.error, planned.stdout) == (2, message, ""), (flow, planned)
    # Refused before the flow or Prefect started: no run directory (no `run.json`, which every flow writes
    # first, no `_prefect/` results), and no Prefect database in the home the commands were given.
    assert not run.exists() and not prefect_home.exists()


def test_only_a_missing_input_is_refused_and_a_flow_started_without_the_cli_refuses_it_too(tmp_path):
    from curation.shards import CorruptManifest
    from flows import lineage
    from flows.config import load_config
    from flows.pipeline import evaluate_flow, synthesize_flow, train_grpo_flow, train_sft_flow
    from flows.stage_inputs import missing_input

    cfg = load_config(Path(__file__).resolve().parent.parent / "configs" / "demo.yaml")
    run = tmp_path / "run"
    flows = {"synthesize": synthesize_flow, "train_sft": train_sft_flow, "train_grpo": train_grpo_flow, "evaluate": evaluate_flow}
    for flow, message in MISSING_INPUTS:
        message = message.format(run=run).removeprefix("error: ")
        assert missing_input(cfg, flow, run) == message
        # A deployment's worker or a Python call runs the flow without `deepeyes run`: the flow says the same line as it
        # starts, having written only the run's record (see the test of a flow started without the CLI).
        with pytest.raises(FileNotFoundError) as refused:
            flows[flow].fn(config=cfg.model_dump(mode="json"), run_dir=str(run))
        assert str(refused.value) == message and [p.name for p in run.iterdir()] == ["run.json"], flow
    assert missing_input(cfg, "retrain", run) is None and missing_input(cfg, "curate", run) is None  # they read no earlier flow's output
    # A model given to evaluate needs no checkpoint in the run.
    assert missing_input(cfg, "evaluate", run, model_path="some/model") is None
    assert missing_input(cfg.model_copy(update={"eval": cfg.eval.model_copy(update={"model_url": "http://127.0.0.1:9/v1"})}),
                         "evaluate", run) is None
    # Inputs that are there but stale (recorded under another key) or partial (some samples failed) are read, not refused.
    lineage.record(run / "select", "select", {"old": True}, [], 1.0, key="an-older-key", result={"per_pool": {}})
    lineage.record(run / "synthesize", "synthesize", {}, [], 1.0, key="k", result={"counts": {"kept": 2, "failed": 3}})
    lineage.record(run / "sft", "sft", {}, [], 1.0, key="k", result={"checkpoint": str(run / "sft" / "checkpoint")})
    assert {flow: missing_input(cfg, flow, run) for flow, _ in MISSING_INPUTS} == dict.fromkeys(flows)
    # A corrupt manifest is not a missing input: the line names the file, the flow and the fix (see the next test).
    (run / "select" / "_manifest.json").write_text("{")
    with pytest.raises(CorruptManifest, match="select/_manifest.json: corrupt manifest"):
        missing_input(cfg, "synthesize", run)


CORRUPT_INPUTS = [  # (the directory whose manifest is truncated, the flow that writes it, the flows that read it)
    ("select", "curate", ["synthesize", "train_grpo", "evaluate"]),  # demo.yaml: probes (pools in select/), no eval.benchmarks
    ("synthesize", "synthesize", ["train_sft"]),
    ("sft", "train_sft", ["train_grpo", "evaluate"]),
    ("grpo", "train_grpo", ["evaluate"]),  # its checkpoint is the one evaluated: never SFT's in its place
]


def test_a_corrupt_input_of_a_single_stage_flow_is_refused_naming_the_file_the_flow_and_the_flow_that_writes_it(
        tmp_path, monkeypatch, capsys, caplog):
    from flows import lineage
    from flows.config import load_config
    from flows.pipeline import FLOW_OF_STAGE, plan
    from flows.stage_inputs import CorruptInput, missing_input
    from tests.curate_cli import main_in_process

    demo = Path(__file__).resolve().parent.parent / "configs" / "demo.yaml"
    cfg = load_config(demo)
    # The writer named is the one the pipeline runs the stage in.
    assert all(lineage.FLOW_OF_DIR[Path(step["out"]).name] == FLOW_OF_STAGE[step["stage"]]
               for step in plan(cfg, tmp_path) if step["stage"] not in ("build-model", "report"))
    readers = {flow: [] for flow in ("synthesize", "train_sft", "train_grpo", "evaluate")}
    for stage, writer, flows in CORRUPT_INPUTS:
        run = tmp_path / stage
        for name in ("select", "synthesize", "sft", "grpo"):  # every input there and finished ...
            lineage.record(run / name, name, {}, [], 1.0, key="k", result={"checkpoint": str(run / name / "checkpoint")})
        manifest = run / stage / "_manifest.json"
        manifest.write_text('{"rows": 3, "trunc')  # ... but this one, cut short
        for flow in ("curate", *readers):
            caplog.clear()
            with caplog.at_level("WARNING"):
                if flow not in flows:  # it does not read it: nothing to say (the flow that writes it runs it again)
                    assert missing_input(cfg, flow, run) is None, (stage, flow)
                    continue
                readers[flow].append(stage)
                with pytest.raises(CorruptInput) as refused:
                    missing_input(cfg, flow, run)
            line = str(refused.value)
            assert re.fullmatch(rf"{re.escape(str(manifest))}: corrupt manifest \(Unterminated string starting at line 1 column \d+\); "
                                rf"the {flow} flow reads it: run the {writer} flow again, which writes it anew", line), line
            assert "runs again" not in caplog.text, (stage, flow, caplog.text)  # the flow does not run that stage
        # What a user sees: the same one line, exit 2, before anything starts (the dry run too), and no warning before it.
        code, out, err = main_in_process(monkeypatch, capsys, "run", str(demo), "--flow", flows[0], "--run-dir", str(run), "--dry-run")
        assert (code, out) == (2, ""), (code, out)
        [shown] = err.splitlines()  # no traceback, no warning before it
        assert shown.startswith(f"error: {manifest}: corrupt manifest (") and f"; the {flows[0]} flow reads it: run the {writer} flow " in shown, err
    # Every flow that reads an earlier flow's output was checked.
    assert all(readers.values()), readers


def test_a_flow_whose_config_lacks_the_section_it_needs_is_refused_in_one_line_before_it_starts(tmp_path):
    import yaml

    demo = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "demo.yaml").read_text())
    demo.pop("grpo"), demo.pop("eval", None)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(demo))
    run = tmp_path / "run"
    message = ("error: grpo: the config has no `grpo:` section; add one to run the train_grpo flow "
               "(the retrain flow without it stops after SFT)")
    for extra in ([], ["--dry-run"]):
        done = run_cli(["run", str(config), "--flow", "train_grpo", "--run-dir", str(run), *extra], tmp_path, timeout=180)
        assert done.returncode == 2 and one_error_line(done.stderr) == message, (extra, done.stderr[-2000:])
    assert not run.exists()  # refused before the flow (or Prefect) started
    # evaluate has defaults for all of `eval:`: without that section too it scores the held-out pool (the dry run's plan says so)
    # with the run's checkpoint (without one, the dry run refuses as the run would: see the test above)
    from flows import lineage

    lineage.record(run / "sft", "sft", {}, [], 1.0, key="k", result={"checkpoint": str(run / "sft" / "checkpoint")})
    planned = run_cli(["run", str(config), "--flow", "evaluate", "--run-dir", str(run), "--dry-run"], tmp_path, timeout=180)
    assert planned.returncode == 0 and "the held-out pool" in planned.stdout, planned.stderr[-2000:]


def test_a_single_stage_flow_updates_the_run_summary_and_drops_the_whole_run_time(tmp_path):
    from flows.pipeline import _merge_summary

    run = tmp_path / "run"
    run.mkdir()
    old = {"run_dir": str(run), "stages": {"sft": {"steps": 400}, "evaluate": {"n": 40}}, "cached": [],
           "timings_s": {"sft": 104.0, "evaluate": 16.7, "total": 151.8}}
    (run / "summary.json").write_text(json.dumps(old))
    _merge_summary(run, {"run_dir": str(run), "stages": {"evaluate": {"n": 10}}, "cached": [], "timings_s": {"evaluate": 6.8}})
    merged = json.loads((run / "summary.json").read_text())
    assert merged["stages"] == {"sft": {"steps": 400}, "evaluate": {"n": 10}}
    assert merged["timings_s"] == {"sft": 104.0, "evaluate": 6.8}  # no `total`: the figures are from two runs now
    before = (run / "summary.json").read_text()
    _merge_summary(run, {"run_dir": str(run), "stages": {"evaluate": {"n": 10}}, "cached": ["evaluate"], "timings_s": {}})
    assert (run / "summary.json").read_text() == before  # all cached: nothing changes


DILL_IN_A_TASK = """
from flows.prefect_env import configure_prefect_env, local_run_settings, show_run_lines
configure_prefect_env()
import dill.detect
from prefect import flow, task

LIMIT = 3


def helper(x):
    return min(len(x), LIMIT)


@task(log_prints=True)
def fingerprint():
    found = dill.detect.globalvars(helper)  # what `datasets` does to a function it fingerprints
    print(f"grpo step 1: dill found globals {sorted(found)}")


@flow(log_prints=True)
def run():
    fingerprint()


show_run_lines()
with local_run_settings():
    run()
"""


def test_dills_disassembly_in_a_task_stays_out_of_the_run_log_and_reaches_dill(tmp_path):
    """Review r4: bytecode lines (`LOAD_GLOBAL`, `RETURN_VALUE`) in the demo's log at the start of
    GRPO: dill's `dis.dis` output, caught by Prefect's `log_prints`."""
    script = tmp_path / "dill_task.py"
    script.write_text(DILL_IN_A_TASK)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    logged = done.stdout + done.stderr
    assert "grpo step 1: dill found globals ['LIMIT']" in logged, logged[-3000:]  # dill read its disassembly
    assert not any(op in logged for op in ("LOAD_GLOBAL", "RETURN_VALUE", "RESUME")), logged[-3000:]



STOPPED_IN_A_TASK = """import logging
import sys

from flows.prefect_env import configure_prefect_env, local_run_settings, show_run_lines
configure_prefect_env()
from prefect import flow, task


@task
def step():
    raise KeyboardInterrupt  # Ctrl-C while a task runs


@flow
def run():
    step()


show_run_lines()
try:
    with local_run_settings():
        run()
except KeyboardInterrupt:
    print("interrupted", file=sys.stderr)
logging.getLogger("EventsWorker").warning("Still processing items: 6 items remaining...")


@task
def leave():
    raise SystemExit(3)  # a crash that is not a stop signal


@flow
def exits():
    leave()


try:
    with local_run_settings():
        exits()
except SystemExit:
    print("exited", file=sys.stderr)

from flows.signals import STOPPING

logging.getLogger("prefect.events.clients").warning("Unable to connect to 'ws://127.0.0.1:1/api/events/in'.")  # told: no stop yet
STOPPING.set()  # a stop signal came: the API server went with the process group
logging.getLogger("prefect.events.clients").warning("Unable to connect to 'ws://127.0.0.1:2/api/events/in'.")
logging.getLogger("prefect._internal.concurrency").error("Service 'EventsWorker' failed to process item Event(...)")
"""


def test_a_run_stopped_by_a_signal_ends_without_prefect_s_crash_lines(tmp_path):
    """Review m1: on Ctrl-C `deepeyes run` printed Prefect's `Crash detected! Execution was aborted by an
    interrupt signal.` and `Finished in state Crashed(...)` before its own `interrupted`; and a cached run
    ended with the events client's `Still processing items: 6 items remaining...`; after a group signal,
    the clients' failures to reach the stopped API server. A crash for another reason is still told."""
    script = tmp_path / "stopped.py"
    script.write_text(STOPPED_IN_A_TASK)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line.split(" - ", 1)[-1] for line in done.stderr.splitlines()]
    assert lines == ["interrupted",
                     "Crash detected! Execution was aborted by Python system exit call.",
                     "Finished in state Crashed('Execution was aborted by Python system exit call.')",
                     "Crash detected! Execution was aborted by Python system exit call.",
                     "exited",
                     "Unable to connect to 'ws://127.0.0.1:1/api/events/in'."], done.stderr[-3000:]


def test_status_tells_a_stage_the_run_is_not_configured_for_from_one_not_run_yet(tmp_path):
    """Review r4: `deepeyes status` of a run whose config has no `probe:`/`select:`/`grpo:` said
    `grpo missing`, as for a stage that has yet to run. `run.json` records the config's stages."""
    from typer.testing import CliRunner

    from flows import lineage
    from flows.cli import app

    def states(run):
        return {row["stage"]: row["state"] for row in lineage.status(run)}

    def shown(run):
        return {line.split()[0]: line.strip() for line in CliRunner().invoke(app, ["status", str(run)]).output.splitlines()[1:]}

    # A run directory from before `run.json`: every absent stage is `missing`, as before.
    old = tmp_path / "old"
    lineage.record(old / "curate", "curate", {}, [], 1.0)
    assert states(old) == {**dict.fromkeys(lineage.STAGE_DIRS, "missing"), "curate": "complete"}

    run = tmp_path / "run"
    planned = ["curate", "synthesize", "model-base", "sft", "eval", "report"]
    assert lineage.record_run(run, {"name": "x"}, planned)
    lineage.record(run / "curate", "curate", {}, [], 1.0)
    lineage.record(run / "grpo", "grpo", {}, [], 1.0)  # an earlier config's GRPO output
    assert states(run) == {"world": "not in config", "curate": "complete", "probe": "not in config", "select": "not in config",
                           "synthesize": "missing", "model-base": "missing", "base": "not in config", "sft": "missing", "grpo": "complete",
                           "eval": "missing"}
    assert [row.get("configured", True) for row in lineage.status(run)] == [False, True, False, False, True, True, False, True, False, True]
    lines = shown(run)
    assert lines["probe"] == "probe       not in config" and lines["synthesize"] == "synthesize  missing"
    assert lines["grpo"].endswith("; not in the run's config (an earlier config's output)") and "complete" in lines["grpo"]
    assert "not in the run's config" not in lines["curate"]
    (run / "probe").mkdir()  # an unfinished output of a stage the config has not: incomplete, and no run redoes it
    assert shown(run)["probe"] == "probe       incomplete; not in the run's config (an earlier config's output)"

    # The same config again changes no file; another config replaces the record; a broken one is no record.
    stamp = (run / "run.json").stat().st_mtime_ns
    assert not lineage.record_run(run, {"name": "x"}, planned) and (run / "run.json").stat().st_mtime_ns == stamp
    assert lineage.record_run(run, {"name": "x", "grpo": {}}, [*planned, "grpo"])
    assert lineage.read_run_record(run)["config"] == {"name": "x", "grpo": {}} and states(run)["grpo"] == "complete"
    (run / "run.json").write_text('{"stages": ["cur')
    assert states(run)["world"] == "missing"
    said = CliRunner().invoke(app, ["status", str(run)]).output
    assert f"warning: {run / 'run.json'}: not readable as JSON (Unterminated string starting at line 1 column 13); " in said and "a stage the config lacks shows as missing" in said
    (run / "run.json").write_text('{"format": "run/1", "stages": [1, null]}')  # review r5: a foreign record is no record either
    assert states(run)["world"] == "missing" and lineage.status(run)[1].get("configured", True)
    assert "not a run record (`stages` should be a list" in CliRunner().invoke(app, ["status", str(run)]).output

    # A folder no run wrote (a world's, say) is refused in one line, not listed as eight missing stages.
    (tmp_path / "world").mkdir()
    refused = CliRunner().invoke(app, ["status", str(tmp_path / "world")])
    assert isinstance(refused.exception, FileNotFoundError)  # one of the errors `deepeyes` prints as one line
    assert f"{tmp_path / 'world'} holds no run: none of world, curate," in str(refused.exception)


FLOW_WITHOUT_THE_CLI = """
import json, logging, sys
from flows.prefect_env import configure_prefect_env
configure_prefect_env()
from flows.pipeline import synthesize_flow

try:
    synthesize_flow(config=sys.argv[1], run_dir=sys.argv[2])  # as a deployment's worker runs it: no `deepeyes`
except FileNotFoundError as exc:
    print(f"flow refused: {exc}")
print(json.dumps({name: sum(type(f).__name__ == "_DillDisassemblyToDill" for f in logging.getLogger(name).filters)
                  for name in ("prefect.flow_runs", "prefect.task_runs")}))
"""


def test_a_flow_started_without_the_cli_keeps_dill_out_of_its_log_and_records_its_configured_stages(tmp_path):
    """Review r4: only `deepeyes` installed the filter that keeps dill's disassembly out of the run's
    log, so a run from a deployment got the bytecode lines. Every flow installs it as it starts, and
    writes `run.json`, which `deepeyes status` reads (`not in config` for the stages it lacks)."""
    import yaml
    from typer.testing import CliRunner

    from flows.cli import app

    demo = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / "demo.yaml").read_text())
    for section in ("probe", "select", "grpo"):
        demo.pop(section)
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(demo))
    script = tmp_path / "flow.py"
    script.write_text(FLOW_WITHOUT_THE_CLI)
    run = tmp_path / "run"
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    done = subprocess.run([sys.executable, str(script), str(config), str(run)], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    refused, filters = done.stdout.strip().splitlines()[-2:]
    assert refused == f"flow refused: {run / 'curate'}: no curated samples (run the curate flow first)"
    assert json.loads(filters) == {"prefect.flow_runs": 1, "prefect.task_runs": 1}  # installed by the flow, once

    record = json.loads((run / "run.json").read_text())
    assert record["stages"] == ["world", "curate", "synthesize", "model-base", "sft", "eval", "report"]
    assert record["config"]["grpo"] is None and record["config"]["name"] == "demo"
    shown = CliRunner().invoke(app, ["status", str(run)]).output.splitlines()
    assert [line.split(None, 1)[1] for line in shown[1:]] == ["missing", "missing", "not in config", "not in config", "missing",
                                                              "missing", "not in config", "missing", "not in config", "missing"]


def test_the_synthesize_line_says_when_the_long_cot_source_fell_short_or_lost_rows(capsys):
    from flows.cli import _print_summary

    counts = {"kept": 9, "rejected": 1, "failed": 0, "long_cot": 3}
    short = {"wanted": 27, "added": 3, "short_by": 24, "achieved_ratio": 0.25, "target_ratio": 0.75, "quarantined": 2,
             "fix": "raise world.long_cot to at least 27"}
    _print_summary({"stages": {"synthesize": {"counts": counts, "long_cot": short}}, "timings_s": {}, "run_dir": "r"})
    line = next(text for text in capsys.readouterr().out.splitlines() if text.startswith("synthesize:"))
    assert line == ("synthesize: 9 trajectories kept (+3 long-CoT rows) (long-CoT source short by 24 of 27 rows: ratio 0.25 for 0.75; "
                    "raise world.long_cot to at least 27) (2 long-CoT rows quarantined), 1 rejected, 0 failed")
    _print_summary({"stages": {"synthesize": {"counts": counts, "long_cot": {**short, "short_by": 0, "quarantined": 0}}}, "timings_s": {}, "run_dir": "r"})
    assert next(text for text in capsys.readouterr().out.splitlines() if text.startswith("synthesize:")) == "synthesize: 9 trajectories kept (+3 long-CoT rows), 1 rejected, 0 failed"


def test_code_digest_follows_code_and_data_files_not_the_example_configs(tmp_path):
    """Editing an example config (a run's config is hashed per stage) leaves the code version as it
    is; editing code, a prompt, a profile or a benchmark definition makes a new one."""
    from flows.lineage import code_digest

    for path, text in {"configs/__init__.py": "", "configs/fidelity.yaml": "grpo: {max_steps: 64}\n",
                       "synth/runtime/prompts/system.txt": "Think first.", "eval/benchmarks/vstar.yaml": "name: vstar\n",
                       "train/grpo.py": "STEPS = 1\n"}.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text)
    before = code_digest(tmp_path)
    (tmp_path / "configs/fidelity.yaml").write_text("grpo: {max_steps: 128}\n")
    assert code_digest(tmp_path) == before
    for path in ("configs/__init__.py", "synth/runtime/prompts/system.txt", "eval/benchmarks/vstar.yaml", "train/grpo.py"):
        (tmp_path / path).write_text((tmp_path / path).read_text() + "\n# changed\n")
        after = code_digest(tmp_path)
        assert after != before, path
        before = after
