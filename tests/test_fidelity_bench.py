"""The fidelity bench's figures and targets, by hand: accuracy with Wilson intervals, tool use per
category with the right kind of tool, GRPO fifths with a bootstrap interval, and each target's verdict."""

import json
import os
from pathlib import Path
import subprocess
import sys

import pytest

import bench.fidelity as fidelity
from eval.metrics import bootstrap_mean_difference, fifths, paired_difference, wilson_interval


def row(category, correct, tools=()):
    return {"category": category, "correct": correct, "tool_calls": [{"tool": t} for t in tools]}


TOOLS = [
    row("perception", True, ["python"]), row("perception", True, ["python"]), row("perception", False, ["search"]),
    row("search", True, ["search"]), row("search", False, []),
    row("direct", True, []), row("direct", True, ["python", "python"]),
]
CONTROL = [row(r["category"], r["category"] == "direct") for r in TOOLS]


def test_arm_figures_by_hand(tmp_path, monkeypatch):
    monkeypatch.setattr(fidelity, "iter_rows", lambda path, schema: iter(TOOLS if path.name == "tools" else CONTROL))
    dynamics = tmp_path / "dynamics.jsonl"
    steps = [{"step": i + 1, "reward": r, "tools/calls_per_trajectory": c}
             for i, (r, c) in enumerate(zip([0.1, 0.2, 0.2, 0.3, 0.5, 0.6, 0.7, 0.8, 0.8, 0.9], [1, 1, 1, 0.5, 0.5, 0.5, 0, 0, 0, 0]))]
    dynamics.write_text("".join(json.dumps(s) + "\n" for s in steps))
    figures = fidelity.arm_figures(tmp_path, dynamics)
    need = figures["tool_needing"]
    assert need["tools"]["n"] == 5 and need["tools"]["accuracy"] == 0.6 and need["control"]["accuracy"] == 0.0
    assert need["share_with_tool_call"] == 0.8  # 4 of 5 tool-needing items called a tool...
    assert need["right_tool_share"] == 0.75  # ...3 of those 4 with the right kind (search on a perception item is not)
    direct = figures["per_category"]["direct"]
    assert direct["tools"]["accuracy"] == 1.0 and direct["tool_calls_per_trajectory"] == 1.0 and direct["calls_by_tool"] == {"python": 2}
    search = figures["per_category"]["search"]  # right with its call, wrong without one
    assert (search["with_call"]["n"], search["with_call"]["accuracy"], search["without_call"]["n"], search["without_call"]["accuracy"]) == (1, 1.0, 1, 0.0)
    assert (need["with_call"]["n"], need["with_call"]["accuracy"], need["without_call"]["n"], need["without_call"]["accuracy"]) == (4, 0.75, 1, 0.0)
    assert figures["per_category"]["perception"]["right_tool_share"] == pytest.approx(2 / 3, abs=1e-4)
    low, high = figures["overall"]["tools"]["ci95"]
    assert 0 < low < 5 / 7 < high < 1
    grpo = figures["grpo"]
    assert grpo["reward_first_fifth"] == 0.15 and grpo["reward_last_fifth"] == 0.85 and grpo["reward_difference"] == 0.7
    assert grpo["reward_difference_ci95"][0] > 0 and grpo["tool_calls_first_fifth"] == 1.0 and grpo["tool_calls_last_fifth"] == 0.0


def test_rollouts_by_category_by_hand(tmp_path, monkeypatch):
    monkeypatch.setattr(fidelity, "iter_rows", lambda path, schema: iter(TOOLS if path.name == "tools" else CONTROL))
    dynamics = tmp_path / "dynamics.jsonl"
    # 10 steps; `direct` drawn on the even ones only (5 steps: a fifth is one step), its calls falling 1 -> 0.
    steps = [{"step": i + 1, "reward": 0.5, "tools/calls_per_trajectory": 0.5, "accuracy/search": 0.1 * i,
              "tools/calls_per_trajectory/search": 1.0} for i in range(10)]
    for i, (calls, accuracy) in zip(range(0, 10, 2), [(1.0, 0.0), (0.75, 0.25), (0.5, 0.5), (0.25, 0.75), (0.0, 1.0)]):
        steps[i].update({"accuracy/direct": accuracy, "tools/calls_per_trajectory/direct": calls})
    del steps[9]["tools/calls_per_trajectory/search"]  # a step logged without per-category calls: accuracy only
    dynamics.write_text("".join(json.dumps(s) + "\n" for s in steps))
    by_category = fidelity.arm_figures(tmp_path, dynamics)["grpo"]["rollouts_by_category"]
    assert by_category["direct"] == {"steps": 5, "accuracy_first_fifth": 0.0, "accuracy_last_fifth": 1.0, "tool_calls_first_fifth": 1.0,
                                     "tool_calls_last_fifth": 0.0, "tool_calls_difference_ci95": [-1.0, -1.0]}
    assert by_category["search"] == {"steps": 10, "accuracy_first_fifth": 0.05, "accuracy_last_fifth": 0.85}


def test_fifths_and_the_bootstrap_interval():
    assert fifths([]) == ([], []) and fifths([1, 2, 3]) == ([1], [3]) and fifths(list(range(10))) == ([0, 1], [8, 9])
    point, low, high = bootstrap_mean_difference([0.5, 0.5], [0.5, 0.5])
    assert point == low == high == 0.0
    point, low, high = bootstrap_mean_difference([0.0, 0.2, 0.1], [0.1, 0.3, 0.0])
    assert point == pytest.approx(1 / 30) and low < 0 < high  # a noisy rise: the interval covers 0
    with pytest.raises(ValueError):
        bootstrap_mean_difference([], [1.0])


def arm(need_acc, need_ctl, share, right, direct_calls, overall_acc, overall_ctl, grpo=None):
    figures = {"tool_needing": {"tools": {"accuracy": need_acc}, "control": {"accuracy": need_ctl},
                                "share_with_tool_call": share, "right_tool_share": right},
               # on 60 held-out items, with their Wilson intervals
               "overall": {"tools": {"accuracy": overall_acc, "ci95": list(wilson_interval(round(overall_acc * 60), 60))},
                           "control": {"accuracy": overall_ctl, "ci95": list(wilson_interval(round(overall_ctl * 60), 60))}},
               "per_category": {"direct": {"tool_calls_per_trajectory": direct_calls}}}
    if grpo is not None:
        figures["grpo"] = grpo
    return figures


def test_targets_hold_and_miss_on_their_thresholds():
    sft = arm(0.80, 0.15, 0.90, 0.90, 0.5, 0.7, 0.1)
    sft_rl = arm(0.85, 0.1, 1.0, 1.0, 0.2, 0.68, 0.1, {"reward_difference_ci95": [0.01, 0.2], "tool_calls_last_fifth": 0.9})
    rl_only = arm(0.1, 0.1, 0.0, None, 0.0, 0.1, 0.1, {"reward_difference_ci95": [-0.1, 0.1], "tool_calls_last_fifth": 0.05})
    verdict = fidelity.targets({"sft": sft, "sft_rl": sft_rl, "rl_only": rl_only, "base": sft}, 1799)
    assert all(t["holds"] for t in verdict.values()), verdict
    sft = arm(0.79, 0.16, 0.89, 0.89, 0.1, 0.7, 0.1)
    sft_rl["grpo"]["reward_difference_ci95"] = [0.0, 0.2]
    sft_rl["overall"]["tools"]["accuracy"] = 0.67
    verdict = fidelity.targets({"sft": sft, "sft_rl": sft_rl, "rl_only": arm(0.5, 0.1, 1, 1, 0, 0.5, 0.1, {"reward_difference_ci95": [0, 0], "tool_calls_last_fifth": 0.2}),
                                "base": sft}, 1801)
    assert not any(t["holds"] for t in verdict.values()), verdict


def test_a_cold_start_that_never_calls_on_direct_items_is_said_to_leave_rl_nothing_to_remove():
    rl = {"reward_difference_ci95": [0.01, 0.2], "tool_calls_last_fifth": 0.0}
    sft, sft_rl = arm(0.9, 0.0, 1.0, 1.0, 0.0, 0.8, 0.0), arm(0.9, 0.0, 1.0, 1.0, 0.0, 0.8, 0.0, rl)
    verdict = fidelity.targets({"sft": sft, "sft_rl": sft_rl, "rl_only": arm(0, 0, 0, None, 0, 0, 0, rl), "base": sft}, 100)
    target = verdict["sft_rl_fewer_calls_on_direct_than_sft"]
    assert target["holds"] is False and target["value"] == [0.0, 0.0] and "no tool call" in target["note"]
    sft = arm(0.9, 0.0, 1.0, 1.0, 0.4, 0.8, 0.0)
    assert "note" not in fidelity.targets({"sft": sft, "sft_rl": sft_rl, "rl_only": sft_rl, "base": sft}, 100)["sft_rl_fewer_calls_on_direct_than_sft"]


def test_rl_that_keeps_needless_calls_is_said_what_sft_scored_with_and_without_them():
    """Run W0's case: SFT calls on 7 of 11 direct items, right on all 7, wrong on the 4 it answers
    without a call; RL ends calling on all 11."""
    rl = {"reward_difference_ci95": [0.01, 0.2], "tool_calls_last_fifth": 1.0}
    sft, sft_rl = arm(0.9, 0.0, 1.0, 1.0, 0.64, 0.8, 0.0), arm(0.9, 0.0, 1.0, 1.0, 1.0, 0.8, 0.0, rl)
    sft["per_category"]["direct"] |= {"with_call": {"n": 7, "accuracy": 1.0}, "without_call": {"n": 4, "accuracy": 0.0}}
    target = fidelity.targets({"sft": sft, "sft_rl": sft_rl, "rl_only": arm(0, 0, 0, None, 0, 0, 0, rl), "base": sft}, 100)[
        "sft_rl_fewer_calls_on_direct_than_sft"]
    assert target["holds"] is False and target["note"] == (
        "SFT's accuracy on direct items with call 1.0 (7 items), without call 0.0 (4 items); GRPO's reward pays accuracy, not fewer calls: "
        "the rollouts' accuracy and calls on direct items by step are in grpo.rollouts_by_category")


def test_paired_difference_by_hand():
    before = {"a": (False, 0.2), "b": (True, 1.0), "c": (False, 0.0), "d": (True, 1.0), "only-before": (True, 1.0)}
    after = {"a": (True, 1.0), "b": (True, 1.0), "c": (True, 1.0), "d": (False, 0.2), "only-after": (False, 0.0)}
    p = paired_difference(before, after)
    assert (p["n"], p["unpaired"], p["better"], p["worse"]) == (4, 2, 2, 1)
    assert p["accuracy_before"] == 0.5 and p["accuracy_after"] == 0.75
    assert p["reward_difference"] == pytest.approx((0.8 + 0 + 1.0 - 0.8) / 4)
    assert p["sign_test_p"] == 1.0  # 2 up, 1 down: the exact two-sided binomial test, P = 1
    low, high = p["reward_difference_ci95"]
    assert low < p["reward_difference"] < high
    # Ten items that all turned right: the sign test says so (2 · 0.5^10), and the interval is above 0.
    p = paired_difference({str(i): (False, 0.2) for i in range(10)}, {str(i): (True, 1.0) for i in range(10)})
    assert p["sign_test_p"] == pytest.approx(2 * 0.5 ** 10, abs=1e-4) and p["reward_difference_ci95"] == [0.8, 0.8]
    # Nothing changed: p is 1, not undefined.
    assert paired_difference({"a": (True, 1.0)}, {"a": (True, 1.0)})["sign_test_p"] == 1.0
    with pytest.raises(ValueError):
        paired_difference({"a": (True, 1.0)}, {"b": (True, 1.0)})


def test_paired_figures_pair_items_by_sample_id(tmp_path, monkeypatch):
    def scored(sample_id, category, correct):
        return {"sample_id": sample_id, "category": category, "correct": correct, "reward": 1.0 if correct else 0.2}

    runs = {"before": [scored("p1", "perception", True), scored("d1", "direct", False), scored("d2", "direct", False)],
            "after": [scored("d2", "direct", True), scored("p1", "perception", False), scored("d1", "direct", True)]}
    monkeypatch.setattr(fidelity, "iter_rows", lambda path, schema: iter(runs[path.parent.parent.name]))
    figures = fidelity.paired_figures(tmp_path / "before", tmp_path / "after")
    assert (figures["overall"]["better"], figures["overall"]["worse"]) == (2, 1)
    assert (figures["direct"]["n"], figures["direct"]["better"], figures["direct"]["accuracy_after"]) == (2, 2, 1.0)
    assert (figures["tool_needing"]["n"], figures["tool_needing"]["worse"]) == (1, 1)


def test_reread_refuses_a_folder_without_a_finished_bench(tmp_path):
    with pytest.raises(fidelity.NotAFinishedBench, match="not a finished fidelity bench"):
        fidelity.read_figures(tmp_path, 1.0)
    # a fidelity.json but no arms: one line, exit 2 (review r8: exit 1)
    (tmp_path / "fidelity.json").write_text(json.dumps({"seconds": {"total": 1.0}}))
    done = subprocess.run([sys.executable, "-m", "bench.fidelity", "--reread", "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [f"fidelity.py: error: --out {tmp_path}: no held-out evaluation for the arm(s) "
                                                "base, rl_only, sft, sft_rl: not a finished fidelity bench"]


def test_every_option_of_the_bench_says_what_it_does_and_its_default():
    """Review s16: --config had no help (nor its default, configs/fidelity.yaml), --torch-threads no default."""
    done = subprocess.run([sys.executable, "-m", "bench.fidelity", "--help"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "1000"})  # one line per option
    assert done.returncode == 0
    options: dict[str, str] = {}  # an option's usage and help, its continuation lines joined
    for line in done.stdout.split("options:")[1].splitlines():
        if line.startswith("  --"):
            name = line.split()[0]
            options[name] = line
        elif line.startswith("   ") and options:
            options[name] += " " + line.strip()
    assert set(options) == {"--config", "--out", "--json", "--seeds", "--reread", "--torch-threads"}
    for name, text in options.items():
        usage = {"--json": "--json", "--reread": "--reread", "--seeds": "--seeds 0,1"}.get(
            name, f"{name} {name.lstrip('-').upper().replace('-', '_')}")
        assert text.removeprefix("  ").removeprefix(usage).strip(), f"{name} has no help: {text}"
    assert f"(default: the shipped configs/fidelity.yaml, {Path(fidelity.ROOT) / 'configs' / 'fidelity.yaml'})" in options["--config"]
    assert options["--torch-threads"].endswith("default: 1)")


@pytest.mark.parametrize(("args", "says"), [
    (["--config", "nosuch.yaml"], "config file not found: nosuch.yaml"),
    (["--config", "nosuch.yaml", "--seeds", "0,1"], "config file not found: nosuch.yaml"),
    (["--config", "configs/demo.yaml"], "the fidelity bench needs `base:` and `grpo:` sections"),
    (["--torch-threads", "0"], "argument --torch-threads: must be at least 1 (got 0)"),
])
def test_a_bench_that_cannot_run_is_one_line_before_any_folder_is_made(tmp_path, args, says):
    """Review r8: a missing config was a traceback, exit 1, and left an empty --out behind."""
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "-m", "bench.fidelity", *args, "--out", str(out)], capture_output=True, text=True,
                          cwd=Path(fidelity.__file__).resolve().parent.parent)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("fidelity.py: error: ") and says in lines[0], done.stderr
    assert not out.exists()


@pytest.mark.parametrize(("make", "says"), [
    (lambda out: None, "no such folder"),
    (lambda out: out.write_text("x"), "a file, not a bench's folder"),
    (lambda out: out.mkdir(), "no fidelity.json: not a finished fidelity bench"),
    (lambda out: (out.mkdir(), (out / "fidelity.json").write_text("{")), "fidelity.json is not valid JSON"),
    (lambda out: (out.mkdir(), (out / "fidelity.json").write_text("{}")), "fidelity.json is not a fidelity bench's result (no seconds.total)"),
    (lambda out: (out.mkdir(), (out / "fidelity.json").write_text('{"seconds": {"total": "x"}}')),
     'fidelity.json is not a fidelity bench\'s result (seconds.total is "x", not a number)'),
    (lambda out: (out.mkdir(), (out / "fidelity.json").write_text('{"seconds": {"total": true}}')),
     "fidelity.json is not a fidelity bench's result (seconds.total is true, not a number)"),
])
def test_reread_says_why_a_folder_cannot_be_reread(tmp_path, make, says):
    """Review r6: a broken or stub fidelity.json ended in a traceback, and every case blamed --out as missing."""
    out = tmp_path / "bench"
    make(out)
    reason = fidelity._finished_result(out)
    assert isinstance(reason, str) and reason.startswith(says)
    done = subprocess.run([sys.executable, "-m", "bench.fidelity", "--reread", "--out", str(out)], capture_output=True, text=True)
    assert done.returncode == 2 and f"--out {out}: {says}" in done.stderr and "Traceback" not in done.stderr


class _Pipeline:
    """A stand-in for the pipeline's `Popen`: running for `polls` polls, calling `step` at each."""

    def __init__(self, polls, step=lambda n: None):
        self.polls, self.step, self.n = polls, step, 0

    def poll(self):
        self.step(self.n)
        self.n += 1
        return None if self.n <= self.polls else 0


def _write_base_manifest(run, key, recorded_at, checkpoint):
    (run / "base").mkdir(parents=True, exist_ok=True)
    lineage = {"key": key, "recorded_at": recorded_at, "result": {"checkpoint": checkpoint}}
    (run / "base" / "_manifest.json").write_text(json.dumps({"stage": "base", "rows": None, "lineage": lineage}))


def test_the_rl_only_arm_starts_when_the_pipeline_records_a_new_base(tmp_path):
    from bench.fidelity import _base_record, wait_for_base

    run = tmp_path / "sft_rl"
    _write_base_manifest(run, "k1", "2026-01-01T00:00:00Z", "/old/checkpoint")  # an earlier run's base
    before = _base_record(run)
    # The pipeline replaces it on its third poll: the new checkpoint, not the old one, and only then.
    pipeline = _Pipeline(10, lambda n: n == 2 and _write_base_manifest(run, "k2", "2026-01-02T00:00:00Z", "/new/checkpoint"))
    assert wait_for_base(pipeline, run, before, poll_s=0) == "/new/checkpoint" and pipeline.n == 3


@pytest.mark.parametrize("manifest", ["same", "none", "corrupt"])
def test_no_base_to_start_from_until_the_pipeline_ends(tmp_path, manifest):
    from bench.fidelity import _base_record, wait_for_base

    run = tmp_path / "sft_rl"
    if manifest == "same":  # a cached base stage: its manifest is never written again
        _write_base_manifest(run, "k1", "2026-01-01T00:00:00Z", "/old/checkpoint")
    elif manifest == "corrupt":
        (run / "base").mkdir(parents=True)
        (run / "base" / "_manifest.json").write_text('{"stage": "ba')
    before = _base_record(run)
    pipeline = _Pipeline(3)
    assert wait_for_base(pipeline, run, before, poll_s=0) is None and pipeline.n == 4  # the caller reads the summary


def test_a_failed_rl_only_arm_leaves_no_pipeline_running(tmp_path, monkeypatch):
    started = []

    def start(*args):
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        return started[0]

    def broken(*args):
        raise RuntimeError("the RL-only arm failed")

    monkeypatch.setattr(fidelity, "_start_pipeline", start)
    monkeypatch.setattr(fidelity, "wait_for_base", lambda *args: "/base/checkpoint")
    monkeypatch.setattr(fidelity, "_rl_only", broken)
    with pytest.raises(RuntimeError, match="the RL-only arm failed"):
        fidelity.run(fidelity.ROOT / "configs" / "fidelity.yaml", tmp_path)
    assert started and started[0].poll() is not None  # terminated, not left training


def test_a_bench_stopped_while_it_waits_for_the_pipeline_stops_the_pipeline(tmp_path, monkeypatch):
    """SIGTERM (`flows.signals.Terminated`) while the RL-only arm is done and the bench waits for the
    pipeline's SFT and GRPO: the pipeline is stopped too, not left training without its bench."""
    from flows.signals import Terminated

    started = []

    def start(*args):
        started.append(subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"]))
        return started[0]

    def stopped(process, run_dir):
        raise Terminated()

    monkeypatch.setattr(fidelity, "_start_pipeline", start)
    monkeypatch.setattr(fidelity, "wait_for_base", lambda *args: "/base/checkpoint")
    monkeypatch.setattr(fidelity, "_rl_only", lambda *args: {"grpo": {}})
    monkeypatch.setattr(fidelity, "_finish_pipeline", stopped)
    with pytest.raises(Terminated):
        fidelity.run(fidelity.ROOT / "configs" / "fidelity.yaml", tmp_path)
    assert started and started[0].poll() is not None


def test_a_pipeline_that_ignores_sigterm_is_killed_after_the_grace_period():
    process = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                                "print('ready', flush=True)\ntime.sleep(120)"], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "ready"  # its handler is set
    fidelity.stop_pipeline(process, grace_s=0.5)
    assert process.returncode == -9


def test_reread_of_a_single_bench_writes_its_figures_again(tmp_path, monkeypatch, capsys):
    """`--reread --out DIR` on a one-seed bench: the figures read again are printed and replace the
    folder's `fidelity.json` (this path once ended in an UnboundLocalError)."""
    (tmp_path / "fidelity.json").write_text(json.dumps({"seconds": {"total": 1500.0}, "arms": {"old": True}}))
    read = {"arms": {"sft": {"new": True}}, "paired": {}, "targets": {"bench_le_30_minutes": {"value": 1500.0, "holds": True}},
            "report": str(tmp_path / "report" / "report.html")}
    monkeypatch.setattr(fidelity, "read_figures", lambda out, seconds: read if (out, seconds) == (tmp_path, 1500.0) else {})
    monkeypatch.setattr(sys, "argv", ["bench.fidelity", "--reread", "--out", str(tmp_path), "--json"])
    fidelity.main()
    printed = json.loads(capsys.readouterr().out)
    assert printed["arms"] == {"sft": {"new": True}} and printed["seconds"] == {"total": 1500.0}
    assert json.loads((tmp_path / "fidelity.json").read_text()) == printed


def test_reread_of_a_seed_without_its_arms_names_the_folder_once(tmp_path):
    """Review s15: the folder was named twice (`--out X: X: no held-out ...`), by main and by the error."""
    (tmp_path / "seed-0").mkdir()
    (tmp_path / "seed-0" / "fidelity.json").write_text(json.dumps({"seconds": {"total": 1.0}}))
    done = subprocess.run([sys.executable, "-m", "bench.fidelity", "--reread", "--out", str(tmp_path)], capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        f"fidelity.py: error: --out {tmp_path}: seed-0: no held-out evaluation for the arm(s) base, rl_only, sft, sft_rl: "
        "not a finished fidelity bench"]


@pytest.mark.parametrize("extra", [["--reread"], []])
def test_an_empty_out_is_refused(tmp_path, extra):
    """Review s15: `--out ""` read as the current folder (`--out .: no fidelity.json`)."""
    done = subprocess.run([sys.executable, "-m", "bench.fidelity", *extra, "--out", ""], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(Path(fidelity.__file__).resolve().parent.parent)})
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "fidelity.py: error: argument --out: an empty path: give the bench's folder"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("extra", [[], ["--seeds", "0,1"]])
@pytest.mark.parametrize(("under", "says"), [
    ("afile", "--out {out}: a file is there; an output directory is needed (give a new or existing folder)"),
    ("afile/sub", "--out {out}: {file} is a file, so no folder can be made under it (give a path under a folder)"),
])
def test_an_out_that_is_a_file_or_under_one_is_one_line(tmp_path, extra, under, says):
    """Review M1: `--out FILE` was a FileExistsError traceback (NotADirectoryError under a file), exit 1."""
    (tmp_path / "afile").write_text("keep")
    out = tmp_path / under
    done = subprocess.run([sys.executable, "-m", "bench.fidelity", *extra, "--out", str(out)], capture_output=True, text=True,
                          cwd=Path(fidelity.__file__).resolve().parent.parent)
    assert done.returncode == 2 and done.stderr.strip().splitlines() == [
        "fidelity.py: error: " + says.format(out=out, file=tmp_path / "afile")], done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"] and (tmp_path / "afile").read_text() == "keep"
