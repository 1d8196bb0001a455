"""`deepeyes status` on every kind of output folder, and the small user-facing fixes of review r5
(#17, #23): what a folder written by `deepeyes evaluate --out` or `deepeyes curate --out` shows, a
config that only evaluates, an evaluation that failed after it started; `world.families` on the
classic world, `generate-world` into an earlier world, `serve-replay` given a samples file, `report`
of a folder that is not there, the empty held-out pool's advice."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import start_replay
from tests.curate_cli import cli


def stage_lines(stdout: str) -> dict[str, str]:
    """`deepeyes status`'s stage lines by stage: the words after the name."""
    return {line.split()[0]: " ".join(line.split()[1:]) for line in stdout.splitlines() if line.startswith("  ")}


@pytest.fixture()
def bench(world, tmp_path):
    path = tmp_path / "bench.yaml"
    path.write_text(f"name: mybench\nsource: {{kind: jsonl, path: {world['samples_path']}}}\njudge: rules\n")
    return path


def test_a_deepeyes_evaluate_folder_shows_its_eval_stage_only(replay_url, bench, tmp_path):
    """Review r5 #17: `world ... grpo missing` beside `eval complete`; those stages were never meant to run."""
    out = tmp_path / "ev"
    done = cli("evaluate", "--model-url", replay_url, "--model", "demo-student", "--benchmark", str(bench), "--out", str(out),
               "--max-samples", "2", "--no-tool-free-control")
    assert done.code == 0, done.error
    status = cli("status", str(out))
    assert status.code == 0 and status.stdout.splitlines()[0] == f"run {out} (written by deepeyes evaluate)"
    lines = stage_lines(status.stdout)
    assert list(lines) == ["eval"] and lines["eval"].split()[:3] == ["complete", "rows", "2"]  # the samples scored
    assert json.loads((out / "run.json").read_text())["stages"] == ["eval"]


def test_deepeyes_evaluate_into_a_pipeline_run_keeps_the_runs_record(tmp_path):
    """A run directory's `run.json` (a flow's) is not replaced by the command's, nor is one from before `run.json`."""
    from flows import lineage

    run = tmp_path / "run"
    lineage.record_run(run, {"name": "x"}, ["world", "curate", "synthesize", "sft", "eval"])
    before = (run / "run.json").read_text()
    assert lineage.record_command_run(run, "evaluate", {"eval": {}}, ["eval"]) is False
    assert (run / "run.json").read_text() == before
    old = tmp_path / "old"
    (old / "curate").mkdir(parents=True)
    assert lineage.record_command_run(old, "evaluate", {"eval": {}}, ["eval"]) is False and not (old / "run.json").exists()
    fresh = tmp_path / "fresh"
    assert lineage.record_command_run(fresh, "evaluate", {"eval": {}}, ["eval"]) is True
    assert lineage.read_run_record(fresh)["command"] == "evaluate"


def test_an_evaluation_that_failed_after_it_started_is_incomplete_with_the_rerun_hint(world, bench, tmp_path):
    """Every episode fails after the preflight's answer: the command fails, `eval/` stays behind; status
    must not make it look complete, and says that running the command again resumes it."""
    server, url = start_replay(world, tmp_path, fault_rate=1.0, faults="500", faults_after=1)
    try:
        out = tmp_path / "ev"
        done = cli("evaluate", "--model-url", url, "--model", "demo-student", "--benchmark", str(bench), "--out", str(out),
                   "--max-samples", "1", "--no-tool-free-control")
    finally:
        server.stop()
    assert done.code == 2 and "all 1 episodes failed" in done.error and (out / "eval").is_dir()
    status = cli("status", str(out))
    assert stage_lines(status.stdout) == {"eval": "incomplete: it did not finish; rerunning deepeyes evaluate resumes it"}


def test_a_curate_out_folder_is_shown_as_one_stages_output(world, tmp_path):
    out = tmp_path / "cur"
    assert cli("curate", "--source", f"jsonl:{world['samples_path']}", "--out", str(out)).code == 0
    status = cli("status", str(out))
    assert status.code == 0, status.error
    first, line = status.stdout.splitlines()
    assert first == f"{out}: one stage's output (curate), not a run directory"
    rows = json.loads((out / "_manifest.json").read_text())["rows"]
    assert line.split()[:4] == ["curate", "complete", "rows", str(rows)]


def test_a_config_that_only_evaluates_plans_no_curation_or_training(replay_url, bench, tmp_path):
    """`run --flow evaluate` of a config without data: curate, synthesize and sft are not in it."""
    from flows.config import load_config
    from flows.pipeline import _flow_started

    config = tmp_path / "ev.yaml"
    config.write_text(f"name: ev\neval: {{benchmarks: [{bench}], model_url: '{replay_url}', model_name: demo-student}}\n")
    _flow_started(load_config(config), tmp_path / "run")
    lines = stage_lines(cli("status", str(tmp_path / "run")).stdout)
    assert lines == {stage: "not in config" for stage in ("world", "curate", "probe", "select", "synthesize", "model-base", "base", "sft",
                                                          "grpo")} | {
        "eval": "missing"}


@pytest.mark.parametrize(("world_line", "field"), [
    ("{kind: classic, families: [perception]}", "families"),
    ("{families: [perception]}", "families"),  # classic is the default kind
    ("{kind: classic, instruct_per_family: 2}", "instruct_per_family"),
    ("{kind: classic, instruct_unsure: abstain}", "instruct_unsure"),
    ("{kind: classic, direct_tool_share: 0.5}", "direct_tool_share"),
    ("{kind: classic, needless_tool: search}", "needless_tool"),
])
def test_learnable_only_world_settings_are_refused_on_the_classic_world(tmp_path, world_line, field):
    from flows.config import ConfigError, load_config

    config = tmp_path / "c.yaml"
    config.write_text(f"name: c\nworld: {world_line}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value) == (f"invalid config:\n  {config}:2: world.{field}: for the learnable world only (world.kind: learnable); "
                                 "the classic world has no such setting")


@pytest.mark.parametrize(("block", "field"), [
    ("world: {kind: learnable, direct_tool_share: .nan}", "world.direct_tool_share"),
    ("world: {kind: learnable, direct_tool_share: .inf}", "world.direct_tool_share"),
    ("world: {kind: classic}\nreplay: {wrong_rate: .nan}", "replay.wrong_rate"),
    ("world: {kind: classic}\nreplay: {fault_rate: .nan}", "replay.fault_rate"),
    ("world: {kind: classic}\nreplay: {latency_ms: .inf}", "replay.latency_ms"),
    # every config model shares curation.strict_config.StrictConfig: the rule holds in each section
    ("select: {max_pass_rate_no_tools: .nan}", "select.max_pass_rate_no_tools"),
    ("reward: {accuracy_weight: .inf}", "reward.accuracy_weight"),
    ("synth: {long_cot: {ratio: .nan}}", "synth.long_cot.ratio"),
    ("sft: {epochs: .nan}", "sft.epochs"),
    ("grpo: {learning_rate: .inf}", "grpo.learning_rate"),
    ("grpo: {vllm: {url: 'http://localhost:8000', timeout_s: .inf}}", "grpo.vllm.timeout_s"),
    ("judge: {math_timeout_s: .inf}", "judge.math_timeout_s"),
    ("eval: {request_timeout_s: .inf}", "eval.request_timeout_s"),
    ("world: {kind: learnable}\nbase: {long_cot_ratio: -.inf}", "base.long_cot_ratio"),
])
def test_a_number_that_is_not_finite_is_refused_as_such_in_every_section(tmp_path, block, field):
    """Review s15: NaN was refused as `Input should be less than or equal to 1`, infinity as latency passed;
    the same held in ~36 config models until they shared one base."""
    from flows.config import ConfigError, load_config

    config = tmp_path / "c.yaml"
    config.write_text(f"name: c\n{block}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    message = str(caught.value)
    assert message.startswith("invalid config:\n") and message.count("\n") == 1, message
    assert message.endswith(f": {field}: Input should be a finite number"), message


@pytest.mark.parametrize("share", ["", ", direct_tool_share: 0"])
def test_a_needless_search_without_a_direct_tool_share_is_refused(tmp_path, share):
    from flows.config import ConfigError, load_config

    config = tmp_path / "c.yaml"
    config.write_text(f"name: c\nworld: {{kind: learnable{share}, needless_tool: search}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value) == (f"invalid config:\n  {config}:2: world.needless_tool: the tool an over-user's direct items call "
                                 "needlessly, but world.direct_tool_share is 0, so there are none; set world.direct_tool_share "
                                 "above 0 or drop world.needless_tool")


def test_a_needless_search_over_an_empty_corpus_is_refused(tmp_path):
    """With no `search` family and no distractor documents the corpus is empty: the search could not mislead."""
    from flows.config import ConfigError, load_config

    config = tmp_path / "c.yaml"
    config.write_text("name: c\nworld: {kind: learnable, families: [perception, direct], distractor_docs: 0, direct_tool_share: 0.5, "
                      "needless_tool: search}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value) == (f"invalid config:\n  {config}:2: world.needless_tool: a search over the world's corpus, but "
                                 "world.families (perception, direct) has no `search` and world.distractor_docs is 0, so the "
                                 "corpus is empty and the search finds nothing; add search to world.families or set "
                                 "world.distractor_docs above 0")
    for world in ("{kind: learnable, families: [perception, direct], distractor_docs: 1, direct_tool_share: 0.5, needless_tool: search}",
                  "{kind: learnable, families: [search, direct], distractor_docs: 0, direct_tool_share: 0.5, needless_tool: search}",
                  "{kind: learnable, distractor_docs: 0, direct_tool_share: 0.5, needless_tool: search}"):
        config.write_text(f"name: c\nworld: {world}\n")
        assert load_config(config).world.needless_tool == "search"


def test_a_needless_search_reaches_the_generator_and_code_keeps_the_old_cache_key():
    from flows.config import WorldSettings

    search = WorldSettings.model_validate({"kind": "learnable", "direct_tool_share": 0.5, "needless_tool": "Search"})
    assert search.needless_tool == "search" and search.generator_settings()["needless_tool"] == "search"
    code = WorldSettings.model_validate({"kind": "learnable", "direct_tool_share": 0.5})
    assert "needless_tool" not in code.generator_settings()  # worlds made before the setting keep their cache keys
    # a flow validates again from its saved config, which spells every default out
    assert WorldSettings.model_validate(WorldSettings().model_dump()).needless_tool == "code"


@pytest.mark.parametrize("families", ["[perception]", "[perception, search]"])
def test_a_direct_tool_share_without_the_direct_family_is_refused(tmp_path, families):
    """Review s15: `direct_tool_share: 0.5` with no `direct` family marked nothing, silently."""
    from flows.config import ConfigError, load_config

    config = tmp_path / "c.yaml"
    config.write_text(f"name: c\nworld: {{kind: learnable, families: {families}, direct_tool_share: 0.5}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    named = families.strip("[]")
    assert str(caught.value) == (f"invalid config:\n  {config}:2: world.direct_tool_share: a share of the `direct` family's samples, "
                                 f"but world.families ({named}) has no `direct`; add direct to world.families or drop "
                                 "world.direct_tool_share")


@pytest.mark.parametrize("world_line", [
    "{kind: learnable, families: null, direct_tool_share: 0.5}",  # a flow's saved config: null is all four
    "{kind: learnable, families: [perception, direct], direct_tool_share: 0.5}",
    "{kind: learnable, families: [perception], direct_tool_share: 0.0}",
])
def test_a_direct_tool_share_with_the_direct_family_or_none_set_passes(tmp_path, world_line):
    from flows.config import load_config

    config = tmp_path / "c.yaml"
    config.write_text(f"name: c\nworld: {world_line}\n")
    assert load_config(config).world.kind == "learnable"


def test_a_classic_world_config_runs_its_flow(tmp_path, monkeypatch):
    """Review r6: the flow validates its saved config again, defaults spelt out (`families: null`,
    `instruct_per_family: 0`); those must pass on the classic world, as a value set for it must not."""
    from tests.test_curate_inputs import run_cli

    monkeypatch.chdir(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text("name: tiny\nworld: {kind: classic, per_family: 2}\n")
    # In a process of its own: a flow run in-process logs through Prefect's handlers, which other tests' runs left bound to closed streams.
    done = run_cli(["run", str(config), "--run-dir", str(tmp_path / "run"), "--flow", "curate"], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = stage_lines(cli("status", str(tmp_path / "run")).stdout)
    assert lines["world"].startswith("complete") and lines["curate"].startswith("complete")


def test_generate_world_replaces_an_earlier_world_and_refuses_a_folder_of_other_files(tmp_path):
    out = tmp_path / "w"
    assert cli("generate-world", str(out), "--per-family", "3").code == 0
    assert cli("generate-world", str(out), "--per-family", "1").code == 0
    written = {json.loads(line)["images"][0] for line in (out / "samples.jsonl").read_text().splitlines()}
    assert {f"images/{p.name}" for p in (out / "images").iterdir()} == written
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "broken.png", "demo-perception-0000.png", "demo-reasoning-0000.png", "demo-search-0000.png"]
    photos = {json.loads(line)["image"] for line in (out / "image_corpus.jsonl").read_text().splitlines()}
    assert {f"image_corpus/{p.name}" for p in (out / "image_corpus").iterdir()} == photos
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    done = cli("generate-world", str(other))
    refusal = (f"error: OUT {other}: a folder that is not empty and holds no world (no world's world.json); give "
               "a new or empty folder, or an earlier world's folder to replace that world")
    assert done.code == 2 and done.error == refusal
    assert [p.name for p in other.iterdir()] == ["notes.txt"]
    # Review r6: a file merely named world.json (not a world's record) does not make the folder a world to clear.
    (other / "images").mkdir()
    (other / "images" / "mine.png").write_bytes(b"mine")
    for record in ("{}", "not json"):
        (other / "world.json").write_text(record)
        done = cli("generate-world", str(other))
        assert done.code == 2 and done.error == refusal and (other / "images" / "mine.png").read_bytes() == b"mine"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize(("kind", "module", "settings"), [
    ("classic", "curation.demo_world", {"per_family": 2, "distractor_docs": 3}),
    ("learnable", "curation.learnable_world", {"per_family": 2, "instruct_per_family": 1, "long_cot": 3}),
])
def test_an_interrupted_world_leaves_its_folder_as_it_was_and_the_rerun_writes_it(tmp_path, monkeypatch, kind, module, settings):
    """Review M2: an interrupted generate-world left images/ and image_corpus/ with no world.json, a
    folder the rerun refused. The world is written beside OUT and moved in whole (the pipeline's world
    stage writes through the same `generate`)."""
    import importlib

    from curation import worlds

    generator = importlib.import_module(module)
    real_long_cot = generator._long_cot

    def interrupted(*args, **kwargs):  # after the images are written, before world.json
        raise KeyboardInterrupt

    out = tmp_path / "w"
    monkeypatch.setattr(generator, "_long_cot", interrupted)
    with pytest.raises(KeyboardInterrupt):
        worlds.generate(kind, out, settings)
    assert list(tmp_path.iterdir()) == []  # no OUT, no staging folder beside it
    monkeypatch.setattr(generator, "_long_cot", real_long_cot)
    summary = worlds.generate(kind, out, settings)
    assert summary["samples_path"] == str(out / "samples.jsonl") and worlds.holds_world(out)
    assert json.loads((out / "world.json").read_text()) == summary  # the paths where the files are, not the staging folder's
    assert [p.name for p in tmp_path.iterdir()] == ["w"]
    assert not any(worlds.WRITING in p.read_text(errors="replace") for p in out.glob("*.json*"))
    # An interrupted replacement leaves the earlier world whole, and a run's manifest beside it.
    (out / "_manifest.json").write_text("{}")
    before = _snapshot(out)
    monkeypatch.setattr(generator, "_long_cot", interrupted)
    with pytest.raises(KeyboardInterrupt):
        worlds.generate(kind, out, {**settings, "per_family": 3})
    assert _snapshot(out) == before and [p.name for p in tmp_path.iterdir()] == ["w"]
    monkeypatch.setattr(generator, "_long_cot", real_long_cot)
    bigger = worlds.generate(kind, out, {**settings, "per_family": 3})
    assert bigger["samples"] > summary["samples"] and (out / "_manifest.json").read_text() == "{}"
    named = {image for name in ("samples.jsonl", "long_cot.jsonl", "instruct.jsonl") if (out / name).exists()
             for line in (out / name).read_text().splitlines() for image in json.loads(line).get("images", [])}
    assert {f"images/{p.name}" for p in (out / "images").iterdir()} == named  # the bigger world's images, each named


def test_generate_world_reruns_on_the_folder_of_an_interrupted_generate_world(tmp_path, monkeypatch):
    """Review M2, as the user met it: the command's own half output does not block the same command."""
    from curation import demo_world

    out = tmp_path / "w2"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(demo_world, "_long_cot", interrupted)
    assert cli("generate-world", str(out), "--per-family", "2").code == 130  # typer's exit for a Ctrl-C
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    done = cli("generate-world", str(out), "--per-family", "2")
    assert done.code == 0 and json.loads(done.stdout)["samples"] == 2 * 3 + 2  # two planted faults
    assert [p.name for p in tmp_path.iterdir()] == ["w2"]


def test_a_world_written_over_the_leftovers_of_an_unfinished_world_holds_only_its_own_images(tmp_path):
    """A run's world folder may hold an unfinished world from before worlds were moved into place
    (images/ and no world.json) beside the stage's manifest: the new world replaces those folders."""
    from curation import worlds

    out = tmp_path / "world"
    (out / "images").mkdir(parents=True)
    (out / "images" / "demo-perception-4999.png").write_bytes(b"old")
    (out / "_manifest.json").write_text("{}")
    worlds.generate("classic", out, {"per_family": 1, "distractor_docs": 1})
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "broken.png", "demo-perception-0000.png", "demo-reasoning-0000.png", "demo-search-0000.png"]
    assert (out / "_manifest.json").read_text() == "{}"


def test_a_staging_folder_a_killed_world_left_is_removed_and_a_live_ones_kept(tmp_path):
    import os
    import subprocess
    import sys

    from curation import worlds

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    abandoned = tmp_path / f".w{worlds.WRITING}{dead}-abc"
    live = tmp_path / f".w{worlds.WRITING}{os.getppid()}-abc"
    for folder in (abandoned, live):
        (folder / "images").mkdir(parents=True)
    worlds.generate("classic", tmp_path / "w", {"per_family": 1, "distractor_docs": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "w"])


def test_a_stop_signal_during_the_move_waits_for_its_end():
    import os
    import signal

    from curation import worlds

    done = []
    # Python's own SIGINT handler, whatever an earlier test (or a library it ran) left installed: the
    # held signal must reach the handler that was there before the block, after the block.
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            with worlds._stop_signals_held():
                os.kill(os.getpid(), signal.SIGINT)
                done.append("moved")
    finally:
        signal.signal(signal.SIGINT, before)
    assert done == ["moved"]


def test_serve_replay_names_a_samples_file_and_the_scripts_file_beside_it(world):
    from synth.replay import ReplayScripts, ReplayScriptsError

    samples = Path(world["samples_path"])
    with pytest.raises(ReplayScriptsError) as caught:
        ReplayScripts(samples)
    assert str(caught.value) == (
        f"--scripts {samples}: line 1 is a sample (id, question, answer, images), not a replay script (an object with sample_id, "
        f"question, teacher and student turns): this looks like a world's samples file; the scripts file is the world's replay_scripts.jsonl "
        f"({samples.parent / 'replay_scripts.jsonl'})")
    done = cli("serve-replay", "--scripts", str(samples), "--port", "9")  # refused before the server is announced
    assert done.code == 2 and done.stdout == "" and done.error == f"error: {caught.value}"


def test_report_of_a_folder_that_is_not_there_says_so(tmp_path):
    done = cli("report", str(tmp_path / "nope"))
    assert done.code == 2 and done.error == f"error: {tmp_path / 'nope'}: run directory not found"
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize(("metrics", "dynamics", "says"), [
    ('{"benchmarks": {', None, "eval/metrics.json: not valid JSON (Expecting property name enclosed in double quotes)"),
    ("{}", None, "eval/metrics.json: not an evaluation's metrics (no `benchmarks` mapping)"),
    ("[1, 2]", None, "eval/metrics.json: not an evaluation's metrics (no `benchmarks` mapping)"),
    ('{"benchmarks": {}}', '{"step": 1, "reward": 0.5}\n{"step": 2,', "grpo/dynamics.jsonl:2: not valid JSON"),
])
def test_report_of_a_run_with_broken_files_names_the_file(tmp_path, metrics, dynamics, says):
    """Review r6: a truncated or foreign metrics.json (or GRPO dynamics line) ended in a traceback,
    with a half-written report folder left behind."""
    run = tmp_path / "run"
    (run / "eval").mkdir(parents=True)
    (run / "eval" / "metrics.json").write_text(metrics)
    if dynamics is not None:
        (run / "grpo").mkdir()
        (run / "grpo" / "dynamics.jsonl").write_text(dynamics)
    done = cli("report", str(run), "--out", str(tmp_path / "report"))
    assert done.code == 2 and done.error.startswith(f"error: {run}/") and says in done.error, done.error
    assert not (tmp_path / "report").exists()


def test_the_empty_held_out_pool_advice_fits_the_config():
    from eval.stage import EvalConfig, empty_heldout_warning

    start = "the held-out pool (eval) is empty: none of the 4 curated rows drew it, so the evaluation will score nothing; "
    assert empty_heldout_warning(EvalConfig(), {"coldstart": 4}) == (
        start + "add rows to curate.sources, raise curate.split.eval, or name eval.benchmarks")
    assert empty_heldout_warning(EvalConfig(), {"coldstart": 4}, world=True) == (
        start + "raise world.per_family (--per-family in `deepeyes demo`), raise curate.split.eval, or name eval.benchmarks")


def _rows(path: Path, n: int = 3) -> Path:
    path.write_text("".join(json.dumps({"question": f"What is {i} plus {i}?", "answer": str(2 * i), "category": "reasoning"}) + "\n"
                            for i in range(n)))
    return path


def test_a_curate_whose_every_row_is_contaminated_stops_and_status_shows_it_stopped(tmp_path):
    """Review r6 #12: every row removed by decontamination is, like every row unusable, a mistake to stop on
    (exit 2, one line), not an empty set fed downstream; #11: status shows the folder it left as the curate
    stage's, incomplete, with why it stopped and the rerun hint, not "holds no run"."""
    rows, out = _rows(tmp_path / "rows.jsonl"), tmp_path / "cur"
    done = cli("curate", "--source", f"jsonl:{rows}", "--benchmark", f"jsonl:{rows}", "--out", str(out))
    reason = (f"no row is left: all 3 rows were removed (3 contaminated by a benchmark); nothing to curate; each row's reason "
              f"is in {out / 'quarantine'}")
    assert (done.code, done.error) == (2, f"error: {reason}")
    assert not (out / "_manifest.json").exists()
    status = cli("status", str(out))
    assert status.code == 0, status.error
    assert status.stdout.splitlines()[0] == f"{out}: one stage's output (curate), not a run directory"
    assert stage_lines(status.stdout) == {"curate": f"incomplete: stopped: {reason}; rerunning the command runs it again once that is fixed"}


def test_status_of_a_curate_that_found_every_row_unusable_shows_its_stage(tmp_path):
    rows, out = tmp_path / "rows.jsonl", tmp_path / "cur"
    rows.write_text(json.dumps({"prompt": "q", "answer": "1", "category": "reasoning"}) + "\n")
    assert cli("curate", "--source", f"jsonl:{rows}", "--out", str(out)).code == 2
    status = cli("status", str(out))
    assert status.code == 0, status.error
    assert stage_lines(status.stdout)["curate"].startswith("incomplete: stopped: source 'rows': all 1 rows are unusable")


def test_status_of_a_world_folder_says_it_is_a_world(world):
    status = cli("status", str(Path(world["samples_path"]).parent))
    assert (status.code, status.error) == (2, f"error: {Path(world['samples_path']).parent} is a world written by deepeyes "
                                              "generate-world, not a run directory (give the directory a run wrote: runs/NAME)")


def test_status_of_a_curate_folder_shows_the_stage_seconds_not_the_shard_writers(tmp_path):
    """Review r6 #18: a `curate --out` folder showed `0.0 s`, the shard writer's `seconds`, where the stage's is `seconds_total`."""
    out = tmp_path / "cur"
    assert cli("curate", "--source", f"jsonl:{_rows(tmp_path / 'rows.jsonl')}", "--out", str(out)).code == 0
    manifest = json.loads((out / "_manifest.json").read_text())
    (out / "_manifest.json").write_text(json.dumps({**manifest, "seconds": 0.025, "seconds_total": 12.34}))
    status = cli("status", str(out))
    assert status.code == 0, status.error
    assert stage_lines(status.stdout)["curate"].split()[:5] == ["complete", "rows", "3", "12.3", "s"]


@pytest.mark.parametrize("text,why", [
    ('{"rows": 3,\n', "Expecting property name enclosed in double quotes at line 2 column 1"),
    ("[1]", "an array, not a JSON object"),
    (b"\xff\xfe{}", "not UTF-8 text (byte 0xff at offset 0)"),
])
def test_a_corrupt_manifest_is_told_without_python_class_names(tmp_path, text, why):
    """Review r6 #18: `corrupt manifest (JSONDecodeError: ...)`, `a JSON list`."""
    out = tmp_path / "cur"
    out.mkdir()
    (out / "_manifest.json").write_bytes(text if isinstance(text, bytes) else text.encode())
    status = cli("status", str(out))
    assert status.code == 0, status.error
    assert f"corrupt manifest ({why}); " in status.stdout, status.stdout


def test_report_refuses_a_run_given_twice_and_tells_runs_of_one_folder_name_apart(tmp_path):
    """Review r6 #17: `report demo demo` wrote every row twice; `a/demo` and `b/demo` were both labelled `demo`."""
    for parent in ("a", "b"):
        (tmp_path / parent / "demo" / "eval").mkdir(parents=True)
        (tmp_path / parent / "demo" / "eval" / "metrics.json").write_text('{"model": "m", "benchmarks": {}}')
    (tmp_path / "c" / "eval").mkdir(parents=True)
    (tmp_path / "c" / "eval" / "metrics.json").write_text('{"model": "m", "benchmarks": {}}')
    run = tmp_path / "a" / "demo"
    done = cli("report", str(run), str(tmp_path / "c"), str(run), "--out", str(tmp_path / "twice"))
    assert (done.code, done.error) == (2, f"error: {run}: this run is given twice; give each run once (its rows would stand twice "
                                          "in every table)")
    assert not (tmp_path / "twice").exists()
    done = cli("report", str(run), str(tmp_path / "b" / "demo"), str(tmp_path / "c"), "--out", str(tmp_path / "rep"))
    assert done.code == 0, done.error
    assert (tmp_path / "rep" / "report.md").read_text().splitlines()[0] == "# open-deepeyes evaluation: a/demo, b/demo, c"


def _recorded_run(tmp_path: Path, world_summary: dict, *, drop_long_cot_count: bool = False) -> Path:
    """A run directory whose stages without shards (world, sft, grpo, eval) recorded their results as the flow does."""
    from flows.lineage import record

    run = tmp_path / "run"
    summary = {k: v for k, v in world_summary.items() if not (drop_long_cot_count and k == "long_cot_rows")}
    record(run / "world", "world", {}, [], 1.0, result=summary)
    record(run / "sft", "sft", {}, [], 2.0, result={"rows": 11, "steps": 3, "losses": [1.0, 0.5]})
    record(run / "grpo", "grpo", {}, [], 3.0, result={"prompts": 4, "steps": 2, "rewards": [0.1, 0.2]})
    runs = {"tools": {"overall": {"n": 6, "accuracy": 0.5}}, "no_tools": {"overall": {"n": 6, "accuracy": 0.3}}}
    record(run / "eval", "evaluate", {}, [], 4.0, result={"benchmarks": {"a": {"runs": runs}, "b": {"runs": {"tools": {"overall": {"n": 2}}}}}})
    return run


@pytest.mark.parametrize("drop_long_cot_count", [False, True])
def test_status_shows_what_each_stage_without_shards_holds(tmp_path, drop_long_cot_count):
    """Review r7 #5: `world complete rows -`; the world shows its samples and its long-CoT rows, SFT its training rows,
    GRPO its prompts, eval the samples it scored (the tool-free control's second scoring of a benchmark's samples counted
    once). A world recorded before `long_cot_rows` was has its `long_cot.jsonl` counted."""
    from curation.worlds import generate

    summary = generate("classic", tmp_path / "run" / "world", {"per_family": 1, "long_cot": 7, "seed": 0})
    assert summary["long_cot_rows"] == 7
    lines = stage_lines(cli("status", str(_recorded_run(tmp_path, summary, drop_long_cot_count=drop_long_cot_count))).stdout)
    assert lines["world"].split()[:3] == ["complete", "rows", str(summary["samples"])]
    assert lines["world"].endswith("; also 7 long-CoT rows")
    assert [lines[s].split()[:3] for s in ("sft", "grpo", "eval")] == [
        ["complete", "rows", "11"], ["complete", "rows", "4"], ["complete", "rows", "8"]]


def test_status_counts_a_learnable_worlds_instruct_and_over_used_direct_samples(tmp_path):
    from flows.lineage import _rows_held

    result = {"samples": 12, "long_cot_rows": 2, "instruct_samples": 8, "over_used_direct": 3}
    held = _rows_held("world", {"stage": "world", "lineage": {"result": result}}, tmp_path)
    assert held == {"rows": 12, "also": ["2 long-CoT rows", "8 instruct samples", "3 direct samples with a needless call"]}
    for tool in ("code", "search"):  # a world.json that says which tool (since `world.needless_tool`)
        held = _rows_held("world", {"stage": "world", "lineage": {"result": result | {"needless_tool": tool}}}, tmp_path)
        assert held["also"][-1] == f"3 direct samples with a needless {tool} call"
    result |= {"instruct_samples": 0, "over_used_direct": 0}  # none: not said
    assert _rows_held("world", {"stage": "world", "lineage": {"result": result}}, tmp_path)["also"] == ["2 long-CoT rows"]


def _run_with_a_base_stage(tmp_path: Path) -> Path:
    """A run whose config has `base:`: the world's instruct samples train the base (instruct) stage, SFT starts from its checkpoint."""
    from flows.lineage import record, record_run

    run = tmp_path / "run"
    (run / "world").mkdir(parents=True)
    instruct = run / "world" / "instruct.jsonl"
    instruct.write_text('{"id": "i0"}\n')
    record_run(run, {"name": "b"}, ["world", "synthesize", "model-base", "base", "sft"])
    record(run / "world", "world", {}, [], 1.0, result={"samples": 5})
    record(run / "synthesize", "synthesize", {}, [], 1.0)
    (run / "base" / "sft" / "checkpoint").mkdir(parents=True)
    (run / "base" / "sft" / "checkpoint" / "config.json").write_text("{}")
    record(run / "base", "base", {"instruct_model": "m"}, [instruct], 9.0,
           result={"checkpoint": str(run / "base" / "sft" / "checkpoint"), "trajectories": {"kept": 4, "long_cot": 3},
                   "sft": {"rows": 7, "steps": 2, "losses": [1.0, 0.5]}})
    record(run / "sft", "sft", {}, [run / "base" / "sft" / "checkpoint", run / "synthesize"], 2.0, result={"rows": 11})
    return run


def test_status_shows_the_base_stage_in_pipeline_order_with_the_rows_it_trained_on(tmp_path):
    """Review r8 F5: `deepeyes status` had no row for the base (instruct) stage of a run whose config has `base:`."""
    run = _run_with_a_base_stage(tmp_path)
    lines = stage_lines(cli("status", str(run)).stdout)
    assert list(lines) == ["world", "curate", "probe", "select", "synthesize", "model-base", "base", "sft", "grpo", "eval"]
    assert lines["base"].split()[:5] == ["complete", "rows", "7", "9.0", "s"]  # its SFT's rows: trajectories and long-CoT rows
    assert {s: lines[s] for s in ("curate", "probe", "select", "grpo", "eval")} == dict.fromkeys(
        ("curate", "probe", "select", "grpo", "eval"), "not in config")


def test_a_changed_instruct_input_makes_the_base_stage_and_sft_after_it_stale(tmp_path):
    run = _run_with_a_base_stage(tmp_path)
    (run / "world" / "instruct.jsonl").write_text('{"id": "i1"}\n')
    from flows.lineage import status

    rows = {row["stage"]: row for row in status(run)}
    assert (rows["base"]["state"], rows["base"]["changed_inputs"]) == ("stale", [str(run / "world" / "instruct.jsonl")])
    assert (rows["sft"]["state"], rows["sft"]["changed_inputs"]) == ("stale", ["base (stale)"])
    assert rows["world"]["state"] == "complete"


def test_a_base_stage_that_did_not_finish_is_incomplete(tmp_path):
    run = _run_with_a_base_stage(tmp_path)
    (run / "base" / "_manifest.json").unlink()
    assert stage_lines(cli("status", str(run)).stdout)["base"].startswith("incomplete")


def _small_run(tmp_path: Path, legacy: bool = False) -> tuple[Path, Path]:
    """A run directory recorded as the flow records it: curate read a source outside the run and an image under the
    run's world (a file found while it ran), select read curate, SFT read select and the tiny model in `model-base`.
    `legacy`: manifests as written before the lineage recorded `out_dir`."""
    from flows import lineage
    from flows.lineage import record_run

    def record(stage_dir, *args, **kwargs):
        lineage.record(stage_dir, *args, **kwargs)
        if legacy:  # before a later stage fingerprints this one's manifest
            data = json.loads((stage_dir / "_manifest.json").read_text())
            data["lineage"].pop("out_dir")
            (stage_dir / "_manifest.json").write_text(json.dumps(data))

    source, run = tmp_path / "sources" / "src.jsonl", tmp_path / "runs" / "x"
    source.parent.mkdir(parents=True)
    source.write_text('{"question": "q", "answer": "a"}\n')
    (run / "world" / "images").mkdir(parents=True)
    (run / "world" / "images" / "0.png").write_bytes(b"png")
    record_run(run, {"name": "x"}, ["world", "curate", "select", "model-base", "sft"])
    record(run / "world", "world", {}, [], 1.0, result={"samples": 1})
    record(run / "curate", "curate", {}, [source], 1.0, read_files=[str(run / "world" / "images" / "0.png")])
    record(run / "select", "select", {}, [run / "curate"], 1.0)
    (run / "model-base").mkdir()
    (run / "model-base" / "config.json").write_text("{}")
    record(run / "model-base", "build-model", {}, [source], 0.5, result=str(run / "model-base"))
    record(run / "sft", "sft", {}, [run / "select", run / "model-base"], 2.0, result={"rows": 1})
    return run, source


def _states(run: Path) -> dict[str, tuple[str, list[str]]]:
    from flows.lineage import status

    return {row["stage"]: (row["state"], row.get("changed_inputs")) for row in status(run) if row["state"] != "not in config"}


@pytest.mark.parametrize("recorded_before_out_dir", [False, True])
def test_status_of_a_moved_or_copied_run_judges_the_files_where_they_are_now(tmp_path, recorded_before_out_dir):
    """Review s14: status of a moved run read the paths its manifests recorded at the old place. A copy (`cp -a`) is
    judged by its own files, not the original's; a moved run whose source moved too names that input. Manifests
    recorded before `out_dir` was are re-rooted by the stage directories their inputs name."""
    import shutil

    run, source = _small_run(tmp_path, legacy=recorded_before_out_dir)
    assert ("out_dir" in json.loads((run / "sft" / "_manifest.json").read_text())["lineage"]) is not recorded_before_out_dir
    complete = {name: ("complete", []) for name in ("world", "curate", "select", "model-base", "sft")}
    copy = shutil.copytree(run, tmp_path / "copy", symlinks=True)  # copy2: `cp -a`, modification times kept
    (run / "world" / "images" / "0.png").write_bytes(b"changed at the old place")
    assert _states(copy) == complete  # the original's change is not the copy's
    (copy / "world" / "images" / "0.png").write_bytes(b"changed in the copy")
    copied = _states(copy)
    assert copied["curate"] == ("stale", [str(copy / "world" / "images" / "0.png")])
    assert copied["select"] == ("stale", [str(copy / "world" / "images" / "0.png"), "curate (stale)"])
    assert copied["sft"][0] == "stale" and "select (stale)" in copied["sft"][1] and copied["model-base"] == ("complete", [])
    assert not any(str(run) in changed for _, inputs in copied.values() for changed in inputs)  # nothing at the old place

    moved = shutil.move(str(copy), tmp_path / "elsewhere" / "y")  # moved again, and its source moved too
    shutil.move(str(source), tmp_path / "src-moved.jsonl")
    lines = stage_lines(cli("status", str(moved)).stdout)
    assert lines["curate"].startswith("stale") and lines["curate"].endswith(
        f"changed since: {moved / 'world' / 'images' / '0.png'}, {source} (missing)")
    assert "model-base (stale)" in lines["sft"] and f"{source} (missing)" in lines["model-base"]


def test_status_of_a_fidelity_benchs_arm_folders_shows_their_finished_outputs(replay_url, bench, tmp_path):
    """Review s14: `python -m bench.fidelity` writes `<out>/base/eval` and `<out>/rl_only/{grpo,eval}` by calling
    `run_evaluate` and `run_grpo` directly (no manifest, no run.json); `deepeyes status <out>/base` showed the finished
    eval as `incomplete`. Such a folder shows the stage folders it holds, each finished one complete with its rows."""
    import shutil

    from eval.stage import EvalConfig, run_evaluate

    out = tmp_path / "bench-out"
    cfg = EvalConfig(benchmarks=[str(bench)], model_url=replay_url, model_name="demo-student", max_samples=2, tool_free_control=False)
    metrics = run_evaluate(cfg, None, None, out / "base" / "eval")
    assert not (out / "base" / "eval" / "_manifest.json").exists()  # as the bench leaves it
    done = cli("status", str(out / "base"))
    assert done.code == 0, done.error
    assert done.stdout.splitlines()[0] == f"{out / 'base'}: stage outputs, not a run directory (no run.json): the stage folders it holds"
    [(name, line)] = stage_lines(done.stdout).items()
    assert name == "eval" and line.split()[:5] == ["complete", "rows", "2", f"{metrics['seconds']:.1f}", "s"]
    assert line.endswith("; no lineage (written outside a flow: whether an input changed since is not known)")
    one = cli("status", str(out / "base" / "eval"))  # the stage folder itself
    assert one.code == 0 and one.stdout.splitlines()[0] == f"{out / 'base' / 'eval'}: one stage's output (eval), not a run directory"
    assert stage_lines(one.stdout)["eval"].split()[:3] == ["complete", "rows", "2"]

    # rl_only: GRPO's checkpoint (what `run_grpo` saves last) and its evaluation; a checkpoint without weights did not finish.
    grpo = out / "rl_only" / "grpo"
    (grpo / "checkpoint").mkdir(parents=True)
    for name in ("config.json", "tokenizer_config.json"):
        (grpo / "checkpoint" / name).write_text("{}")
    (grpo / "dynamics.jsonl").write_text('{"step": 1, "reward": 0.5}\n')
    shutil.copytree(out / "base" / "eval", out / "rl_only" / "eval")
    assert stage_lines(cli("status", str(out / "rl_only")).stdout)["grpo"] == "incomplete: it did not finish; the next run resumes it"
    (grpo / "checkpoint" / "model.safetensors").write_bytes(b"weights")
    lines = stage_lines(cli("status", str(out / "rl_only")).stdout)
    assert list(lines) == ["grpo", "eval"] and lines["grpo"].split()[:2] == ["complete", "rows"]
    assert lines["eval"].split()[:3] == ["complete", "rows", "2"]


def test_status_shows_the_tiny_model_row_in_pipeline_order_with_its_time(tmp_path):
    """Review s14: the run's `model-base` (the tiny model the flow builds before the instruct stage) had no row; a new
    tiny model makes SFT, which starts from it, stale."""
    run, source = _small_run(tmp_path)
    (run / "summary.json").write_text(json.dumps({"timings_s": {"build-model": 3.4}}))
    lines = stage_lines(cli("status", str(run)).stdout)
    assert list(lines) == ["world", "curate", "probe", "select", "synthesize", "model-base", "base", "sft", "grpo", "eval"]
    assert lines["model-base"].split()[:5] == ["complete", "rows", "-", "3.4", "s"]  # the flow's `build-model` time
    source.write_text('{"question": "q2", "answer": "a2"}\n')  # the texts the tiny model's tokenizer was built from
    rows = _states(run)
    assert rows["model-base"] == ("stale", [str(source)]) and "model-base (stale)" in rows["sft"][1]
