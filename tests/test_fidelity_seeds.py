"""`python -m bench.fidelity --seeds`: the across-seeds summary by hand, the argument's errors, the
per-seed config, and the wiring of folders, JSON and reread (the single bench itself stubbed: a real
multi-seed bench takes an hour)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import bench.fidelity as fidelity
from flows.config import load_config

ROOT = Path(__file__).resolve().parent.parent


def seed_result(holds, need_acc, overall_acc, control_acc, rl_diff=None, rl_low=None, total=100.0):
    """A single bench's result, cut to what `across_seeds` reads: targets by verdict, two arms."""
    arms = {"sft": {"overall": {"tools": {"accuracy": overall_acc}, "control": {"accuracy": control_acc}},
                    "tool_needing": {"tools": {"accuracy": need_acc}}},
            "sft_rl": {"overall": {"tools": {"accuracy": overall_acc}, "control": {"accuracy": control_acc}},
                       "tool_needing": {"tools": {"accuracy": need_acc}}}}
    if rl_diff is not None:
        arms["sft_rl"]["grpo"] = {"reward_difference": rl_diff, "reward_difference_ci95": [rl_low, rl_diff + 0.05]}
    return {"targets": {name: {"value": 0, "holds": h} for name, h in holds.items()}, "arms": arms,
            "seconds": {"total": total}, "report": "r.html"}


def test_across_seeds_by_hand():
    results = {0: seed_result({"a": True, "b": True, "c": False}, 0.9, 0.8, 0.0, 0.08, 0.03),
               1: seed_result({"a": True, "b": False, "c": False}, 1.0, 0.7, 0.1, 0.01, -0.07),
               4: seed_result({"a": True, "b": True}, None, 0.6, 0.2, 0.04, -0.02)}
    summary = fidelity.across_seeds(results)
    assert summary["targets"] == {"a": {"holds_on": [0, 1, 4], "holds_on_all": True},
                                  "b": {"holds_on": [0, 4], "holds_on_all": False},
                                  "c": {"holds_on": [], "holds_on_all": False}}
    sft, sft_rl = summary["arms"]["sft"], summary["arms"]["sft_rl"]
    assert sft["accuracy_tools"] == {"by_seed": {"0": 0.8, "1": 0.7, "4": 0.6}, "mean": 0.7, "min": 0.6, "max": 0.8}
    # a seed without a value (no tool-needing item) is left out of the mean, min and max
    assert sft["tool_needing_accuracy_tools"] == {"by_seed": {"0": 0.9, "1": 1.0, "4": None}, "mean": 0.95, "min": 0.9, "max": 1.0}
    assert sft["accuracy_control"] == {"by_seed": {"0": 0.0, "1": 0.1, "4": 0.2}, "mean": 0.1, "min": 0.0, "max": 0.2}
    assert "reward_difference" not in sft  # not a GRPO arm
    assert sft_rl["reward_difference"] == {"by_seed": {"0": 0.08, "1": 0.01, "4": 0.04}, "mean": 0.0433, "min": 0.01, "max": 0.08}
    assert sft_rl["reward_difference_ci95_low"] == {"by_seed": {"0": 0.03, "1": -0.07, "4": -0.02}, "mean": -0.02, "min": -0.07, "max": 0.03}
    one = fidelity.across_seeds({7: results[1]})
    assert one["targets"]["a"] == {"holds_on": [7], "holds_on_all": True} and one["arms"]["sft"]["accuracy_tools"]["mean"] == 0.7


@pytest.mark.parametrize(("value", "says"), [
    ("a", "'a' is not a whole number"), ("1,1", "1 is given twice"), ("-1", "-1 is negative"),
    ("0,,1", "an empty entry"), ("0,x", "'x' is not a whole number"),
    # review r8: int() read these; a space-separated list gets the commas hinted
    ("1_0", "'1_0' is not a whole number"), ("+1", "'+1' is not a whole number"), ("²", "'²' is not a whole number"),
    ("0 1", "'0 1' is not a whole number; separate seeds with commas: 0,1,2"),
    ("4294967296", "4294967296 is over 4294967295, the largest seed numpy takes"),
])
def test_a_bad_seeds_value_is_a_one_line_error(value, says, tmp_path, monkeypatch, capsys):
    def no_bench(*args, **kwargs):
        raise AssertionError("the bench ran on a bad --seeds")  # fails fast, not an hour-long bench

    monkeypatch.setattr(fidelity, "run", no_bench)
    monkeypatch.setattr(sys, "argv", ["bench.fidelity", "--seeds", value, "--out", str(tmp_path / "out")])
    with pytest.raises(SystemExit) as exit_:
        fidelity.main()
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and "argument --seeds: " in error and says in error


def test_a_bad_seeds_value_ends_without_a_traceback(tmp_path):
    # --reread of an empty folder: were --seeds let through, this ends at once (with another message), training nothing
    done = subprocess.run([sys.executable, "-m", "bench.fidelity", "--seeds", "1,1", "--json", "--reread", "--out", str(tmp_path)],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "argument --seeds: 1 is given twice" in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""


def test_parse_seeds_keeps_the_order_given():
    assert fidelity.parse_seeds("2, 0,11") == [2, 0, 11] and fidelity.parse_seeds("0") == [0]


def test_the_seed_config_sets_the_seeds_and_loads_as_the_original_does(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths resolve against the config's folder, not here
    original = ROOT / "configs" / "fidelity.yaml"
    written = fidelity.write_seed_config(original, 5, tmp_path / "out" / "seed-5")
    assert written == tmp_path / "out" / "seed-5" / "config.yaml"
    raw = yaml.safe_load(written.read_text())
    assert raw["world"]["seed"] == raw["replay"]["seed"] == raw["curate"]["seed"] == 5
    seeded, base = load_config(written), load_config(original)
    assert (seeded.world.seed, seeded.replay.seed, seeded.curate.seed) == (5, 5, 5)
    assert seeded.runs_dir == tmp_path / "out" / "seed-5" / "runs"
    changed = {k for k, v in seeded.model_dump(mode="json").items() if v != base.model_dump(mode="json")[k]}
    assert changed == {"world", "replay", "curate", "runs_dir"}
    assert seeded.model_copy(update={"world": base.world, "replay": base.replay, "curate": base.curate,
                                     "runs_dir": base.runs_dir}) == base


def test_the_seed_config_adds_curate_and_keeps_relative_paths_right(tmp_path):
    raw = yaml.safe_load((ROOT / "configs" / "fidelity.yaml").read_text())
    del raw["curate"], raw["replay"], raw["base"]  # curate: added with its seed; replay: left out means none, and stays so
    raw["synth"]["teacher_url"] = "http://127.0.0.1:9/v1"
    raw["eval"]["data_root"] = "my-eval"
    config = tmp_path / "configs" / "mine.yaml"
    config.parent.mkdir()
    config.write_text(yaml.safe_dump(raw))
    written = fidelity.write_seed_config(config, 1, tmp_path / "elsewhere" / "seed-1")
    seeded = load_config(written)
    assert seeded.curate.seed == 1 and seeded.world.seed == 1 and seeded.replay is None
    assert Path(seeded.eval.data_root) == tmp_path / "configs" / "my-eval"


def test_a_config_that_does_not_load_is_told_in_one_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("world: {kind: learnable, sed: 1}\n")
    with pytest.raises(SystemExit, match="bad.yaml:1: world.sed"):
        fidelity.write_seed_config(config, 0, tmp_path / "seed-0")


def fake_bench(calls):
    """The single bench, stubbed: records the config it was given, returns a result whose verdicts
    and figures depend on the seed in it."""
    def run(config_path, out, torch_threads=1):
        seed = load_config(config_path).world.seed
        calls.append((seed, config_path, out))
        return {"bench": "fidelity", "config": str(config_path), "pipeline": {}, "out": str(out), "report": str(out / "report" / "report.html"),
                "paired": {}, "seconds": {"total": 10.0 + seed},
                **{k: v for k, v in seed_result({"t_all": True, "t_seed0": seed == 0}, 0.9, 0.5 + seed / 10, 0.0).items()
                   if k not in ("seconds", "report")}}
    return run


def test_seeds_mode_runs_the_bench_per_seed_in_its_own_folder(tmp_path, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(fidelity, "run", fake_bench(calls))
    out = tmp_path / "bench"
    monkeypatch.setattr(sys, "argv", ["bench.fidelity", "--seeds", "0,2", "--json", "--out", str(out)])
    fidelity.main()
    printed = json.loads(capsys.readouterr().out)
    assert [(seed, config, where) for seed, config, where in calls] == [
        (0, out / "seed-0" / "config.yaml", out / "seed-0"), (2, out / "seed-2" / "config.yaml", out / "seed-2")]
    assert list(printed["seeds"]) == ["0", "2"] and printed["seeds"]["2"]["config"] == str(out / "seed-2" / "config.yaml")
    assert printed["across_seeds"]["targets"] == {"t_all": {"holds_on": [0, 2], "holds_on_all": True},
                                                  "t_seed0": {"holds_on": [0], "holds_on_all": False}}
    assert printed["across_seeds"]["arms"]["sft"]["accuracy_tools"] == {"by_seed": {"0": 0.5, "2": 0.7}, "mean": 0.6, "min": 0.5, "max": 0.7}
    assert printed["seconds"] == {"seed 0": 10.0, "seed 2": 12.0, "total": 22.0}
    assert json.loads((out / "fidelity.json").read_text()) == printed
    assert json.loads((out / "seed-2" / "fidelity.json").read_text())["targets"]["t_seed0"]["holds"] is False
    table = (out / "seeds.md").read_text()
    assert "| target | seed 0 | seed 2 | holds on all |" in table and "| t_seed0 | ok 0 | **MISS** 0 | no |" in table

    # --reread: each seed's figures read again, across_seeds recomputed from them
    monkeypatch.setattr(fidelity, "read_figures", lambda seed_out, seconds: {
        "targets": {"t_all": {"value": 1, "holds": seed_out.name == "seed-2"}}, "report": "again.html"})
    monkeypatch.setattr(sys, "argv", ["bench.fidelity", "--reread", "--out", str(out)])
    fidelity.main()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["target", "seed", "0", "seed", "2"]
    assert lines[1].split() == ["t_all", "MISS", "ok"]
    reread = json.loads((out / "fidelity.json").read_text())
    assert reread["across_seeds"]["targets"] == {"t_all": {"holds_on": [2], "holds_on_all": False}}
    assert reread["seeds"]["0"]["report"] == "again.html" and reread["seconds"]["total"] == 22.0

    # --reread --seeds 2: that seed printed; the folder's record and table of both seeds stay (review r8)
    table, record = (out / "seeds.md").read_text(), (out / "fidelity.json").read_text()
    monkeypatch.setattr(sys, "argv", ["bench.fidelity", "--reread", "--seeds", "2", "--json", "--out", str(out)])
    fidelity.main()
    assert list(json.loads(capsys.readouterr().out)["seeds"]) == ["2"]
    assert (out / "seeds.md").read_text() == table and (out / "fidelity.json").read_text() == record


def test_reread_of_seeds_says_which_seed_is_missing_or_unfinished(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench"
    (out / "seed-0").mkdir(parents=True)
    (out / "seed-²").mkdir()  # not a seed's folder (str.isdigit says it is): left out, not a traceback
    single = tmp_path / "single"
    single.mkdir()
    (single / "fidelity.json").write_text("{}")
    for where, seeds, says in ((out, ["--seeds", "3"], "no seed-3 folder (seeds here: 0)"), (out, [], "seed-0: no fidelity.json"),
                               (tmp_path / "nosuch", ["--seeds", "0"], "no such folder"),
                               (single, ["--seeds", "0"], "a single-seed bench (no seed-<N> folders): reread it without --seeds")):
        monkeypatch.setattr(sys, "argv", ["bench.fidelity", "--reread", "--out", str(where), *seeds])
        with pytest.raises(SystemExit) as exit_:
            fidelity.main()
        assert exit_.value.code == 2 and says in capsys.readouterr().err
