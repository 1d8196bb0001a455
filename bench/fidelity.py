"""The paper's findings in miniature: four arms on one learnable world, one seed set.

    python -m bench.fidelity --json [--config configs/fidelity.yaml] [--out DIR] [--seeds 0,1]

DeepEyesV2's central result is a learning result: RL alone does not teach a model to use tools (its
tool calls die out within a few dozen steps), a cold start does, and RL after the cold start raises
accuracy and makes tool use selective. The four arms, all from the same base model:

- `base`: the instruct-stage model (`base:` in the config): direct answers, a few tool attempts;
- `rl_only`: GRPO from the base;
- `sft`: cold-start SFT from the base on the teacher's verified trajectories;
- `sft_rl`: GRPO after the cold start (the recipe).

The `sft_rl` arm is `deepeyes run CONFIG` (the retrain flow: the learnable world, curation, probes,
selection, synthesis with the replay teacher and its scripted errors, the instruct stage, SFT, GRPO,
evaluation with the tool-free control). The other three reuse its world, pools, trajectories and
checkpoints and run only what differs, with the same config sections: the evaluation of the base
and of the SFT checkpoint, and GRPO from the base and its evaluation, which starts beside the
pipeline as soon as the pipeline has made the base (`run`).

Per arm, from the held-out trajectories: accuracy with tools and in the tool-free control (Wilson
95% intervals) overall, on the tool-needing families (perception, reasoning, search) and on the
`direct` control items; per category the share of items with a tool call, tool calls per
trajectory, calls by tool, the share of items with a call whose calls are all of the right kind
(code for perception and reasoning, search for search), and the accuracy of the items answered
with a call and of those answered without one (`with_call`, `without_call`: the path GRPO's
reward pays is the one right more often); and for the GRPO arms the mean reward of
the first and the last fifth of steps, with a 95% bootstrap interval on the difference, and tool
calls per trajectory likewise. `targets` says which of the issue's targets hold; the report
(`<out>/report/report.html`) has the arms side by side and tool calls per trajectory by GRPO step.

`--seeds 0,1` runs all of that once per seed, one after another, each in `<out>/seed-<N>/` on a copy
of the config with that seed in `world`, `replay` and `curate` (another world, another data order),
and adds `across_seeds`: on which seeds each target holds, and each arm's headline figures' mean,
min and max across the seeds (`<out>/seeds.md` tabulates them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from curation.shards import CorruptManifest, iter_rows, read_manifest
from curation.strict_config import MAX_SEED  # numpy's seeds are 32-bit; the configs' seeds take the same range
from eval.metrics import bootstrap_mean_difference, fifths, paired_difference, wilson_interval
from eval.report import build_report
from eval.stage import HELDOUT, run_evaluate
from flows.config import ConfigError, PipelineConfig, resolve_paths, load_config
from flows.pipeline import Resolved
from flows.signals import EXIT_CODES, SAID, Terminated, stop_signals
from flows.user_input import InputFileError, check_out_dir, load_yaml, read_text_file
from synth.trajectory import TRAJECTORY_SCHEMA
from train.grpo import run_grpo

ROOT = Path(__file__).resolve().parent.parent
TOOL_FAMILIES = ("perception", "reasoning", "search")
RIGHT_TOOL = {"perception": "python", "reasoning": "python", "search": "search"}
ARMS = ("base", "rl_only", "sft", "sft_rl")
# Each GRPO arm against the checkpoint it starts from, on the same held-out items.
PAIRS = {"sft_rl_vs_sft": ("sft", "sft_rl"), "rl_only_vs_base": ("base", "rl_only")}


def arm_dirs(out: Path) -> dict[str, Path]:
    """Where each arm's outputs are under the bench's `--out` folder (`sft_rl` is the pipeline's run directory)."""
    return {arm: out / arm for arm in ARMS}


def _accuracy(rows: list[dict[str, Any]]) -> dict[str, Any]:
    n, correct = len(rows), sum(1 for r in rows if r["correct"])
    low, high = wilson_interval(correct, n)
    return {"n": n, "accuracy": round(correct / n, 4) if n else None, "ci95": [round(low, 4), round(high, 4)]}


def _tool_use(rows: list[dict[str, Any]], category: str) -> dict[str, Any]:
    called = [r for r in rows if r["tool_calls"]]
    by_tool: dict[str, int] = {}
    for row in rows:
        for call in row["tool_calls"]:
            by_tool[call["tool"]] = by_tool.get(call["tool"], 0) + 1
    right = RIGHT_TOOL.get(category)
    stats = {
        "share_with_tool_call": round(len(called) / len(rows), 4) if rows else None,
        "tool_calls_per_trajectory": round(sum(len(r["tool_calls"]) for r in rows) / len(rows), 4) if rows else None,
        "calls_by_tool": by_tool,
        # Which path is right more often: what GRPO's reward (accuracy and format) reinforces.
        "with_call": _accuracy(called),
        "without_call": _accuracy([r for r in rows if not r["tool_calls"]]),
    }
    if right is not None:
        fine = sum(1 for r in called if all(c["tool"] == right for c in r["tool_calls"]))
        stats["right_tool_share"] = round(fine / len(called), 4) if called else None
    return stats


def arm_figures(eval_dir: Path, dynamics_path: Path | None) -> dict[str, Any]:
    """An arm's figures from its held-out trajectories (`eval_dir/heldout/{tools,no_tools}`) and GRPO dynamics."""
    runs = {mode: list(iter_rows(eval_dir / HELDOUT / mode, TRAJECTORY_SCHEMA)) for mode in ("tools", "no_tools")}
    tools, control = runs["tools"], runs["no_tools"]
    figures: dict[str, Any] = {
        "overall": {"tools": _accuracy(tools), "control": _accuracy(control), **_tool_use(tools, "overall")},
        "tool_needing": {"tools": _accuracy([r for r in tools if r["category"] in TOOL_FAMILIES]),
                         "control": _accuracy([r for r in control if r["category"] in TOOL_FAMILIES]),
                         **_tool_use([r for r in tools if r["category"] in TOOL_FAMILIES], "tool_needing")},
        "per_category": {},
    }
    needing = [r for r in tools if r["category"] in TOOL_FAMILIES]
    called = [r for r in needing if r["tool_calls"]]
    figures["tool_needing"]["right_tool_share"] = (
        round(sum(1 for r in called if all(c["tool"] == RIGHT_TOOL[r["category"]] for c in r["tool_calls"])) / len(called), 4) if called else None)
    for category in sorted({r["category"] for r in tools}):
        group = [r for r in tools if r["category"] == category]
        figures["per_category"][category] = {
            "tools": _accuracy(group), "control": _accuracy([r for r in control if r["category"] == category]), **_tool_use(group, category)}
    if dynamics_path is not None and dynamics_path.is_file():
        steps = [json.loads(line) for line in dynamics_path.read_text().splitlines() if line.strip()]
        rewards = [s["reward"] for s in steps]
        calls = [s.get("tools/calls_per_trajectory", 0.0) for s in steps]
        first, last = fifths(rewards)
        diff, low, high = bootstrap_mean_difference(first, last)
        calls_first, calls_last = fifths(calls)
        figures["grpo"] = {
            "steps": len(steps),
            "reward_first_fifth": round(sum(first) / len(first), 4),
            "reward_last_fifth": round(sum(last) / len(last), 4),
            "reward_difference": round(diff, 4),
            "reward_difference_ci95": [round(low, 4), round(high, 4)],
            "tool_calls_first_fifth": round(sum(calls_first) / len(calls_first), 4),
            "tool_calls_last_fifth": round(sum(calls_last) / len(calls_last), 4),
            "tool_calls_by_step": [round(c, 3) for c in calls],
            "rollouts_by_category": _rollouts_by_category(steps),
        }
    return figures


def _rollouts_by_category(steps: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per category, the GRPO rollouts' accuracy and tool calls per trajectory in the first and the last
    fifth of the steps that drew it (a step draws a few prompts, so not every category is in every step),
    with a 95% bootstrap interval on the change in tool calls: on `direct` items this is whether RL
    makes tool use selective while it trains. Steps logged before per-category tool calls were are
    counted for accuracy only."""
    out: dict[str, dict[str, Any]] = {}
    for category in sorted({key.split("/", 1)[1] for step in steps for key in step if key.startswith("accuracy/")}):
        drawn = [step for step in steps if f"accuracy/{category}" in step]
        first, last = fifths([step[f"accuracy/{category}"] for step in drawn])
        entry: dict[str, Any] = {"steps": len(drawn), "accuracy_first_fifth": round(sum(first) / len(first), 4),
                                 "accuracy_last_fifth": round(sum(last) / len(last), 4)}
        calls = [step[f"tools/calls_per_trajectory/{category}"] for step in drawn if f"tools/calls_per_trajectory/{category}" in step]
        if len(calls) == len(drawn):
            calls_first, calls_last = fifths(calls)
            diff, low, high = bootstrap_mean_difference(calls_first, calls_last)
            entry.update({"tool_calls_first_fifth": round(sum(calls_first) / len(calls_first), 4),
                          "tool_calls_last_fifth": round(sum(calls_last) / len(calls_last), 4),
                          "tool_calls_difference_ci95": [round(low, 4), round(high, 4)]})
        out[category] = entry
    return out


def _scored_items(eval_dir: Path) -> dict[str, tuple[str, bool, float]]:
    """The held-out tool run's items: sample id -> (category, correct, reward)."""
    return {r["sample_id"]: (r["category"], bool(r["correct"]), float(r["reward"] or 0.0))
            for r in iter_rows(eval_dir / HELDOUT / "tools", TRAJECTORY_SCHEMA)}


def paired_figures(before_eval: Path, after_eval: Path) -> dict[str, Any]:
    """A GRPO arm against the checkpoint it started from, item by item on the same held-out items
    (`eval.metrics.paired_difference`): overall, on the tool-needing families and on `direct` items.

    A supplement to the GRPO reward's first and last fifth: those two fifths hold different prompts,
    so their difference carries which prompts each drew; the paired comparison does not."""
    before, after = _scored_items(before_eval), _scored_items(after_eval)
    groups = {"overall": None, "tool_needing": TOOL_FAMILIES, "direct": ("direct",)}
    figures: dict[str, Any] = {}
    for name, categories in groups.items():
        pick = [i for i, (category, _, _) in before.items() if categories is None or category in categories]
        if any(i in after for i in pick):
            figures[name] = paired_difference({i: before[i][1:] for i in pick},
                                              {i: after[i][1:] for i in pick if i in after})
    return figures


def targets(arms: dict[str, dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The issue's targets, each with the measured value and whether it holds."""
    sft, sft_rl, rl_only = arms["sft"], arms["sft_rl"], arms["rl_only"]

    def check(value: Any, holds: bool) -> dict[str, Any]:
        return {"value": value, "holds": bool(holds)}

    need = sft["tool_needing"]
    out = {
        "sft_tool_needing_accuracy_ge_0.80": check(need["tools"]["accuracy"], (need["tools"]["accuracy"] or 0) >= 0.80),
        "sft_tool_needing_control_le_0.15": check(need["control"]["accuracy"], (need["control"]["accuracy"] or 0) <= 0.15),
        "sft_tool_call_share_ge_0.90": check(need["share_with_tool_call"], (need["share_with_tool_call"] or 0) >= 0.90),
        "sft_right_tool_share_ge_0.90": check(need["right_tool_share"], (need["right_tool_share"] or 0) >= 0.90),
    }
    grpo = sft_rl.get("grpo")
    out["sft_rl_reward_rises_ci_excludes_0"] = check(grpo["reward_difference_ci95"] if grpo else None, bool(grpo) and grpo["reward_difference_ci95"][0] > 0)
    acc, ref = sft_rl["overall"]["tools"]["accuracy"] or 0, sft["overall"]["tools"]["accuracy"] or 0
    out["sft_rl_accuracy_ge_sft_minus_0.02"] = check([acc, ref], acc >= ref - 0.02)
    direct_rl = sft_rl["per_category"].get("direct", {}).get("tool_calls_per_trajectory")
    direct_sft = sft["per_category"].get("direct", {}).get("tool_calls_per_trajectory")
    out["sft_rl_fewer_calls_on_direct_than_sft"] = check([direct_rl, direct_sft], direct_rl is not None and direct_sft is not None and direct_rl < direct_sft)
    if direct_sft == 0:  # the paper's SFT calls tools on 95% of MathVista; a cold start that already never calls leaves RL nothing to drop
        out["sft_rl_fewer_calls_on_direct_than_sft"]["note"] = "SFT makes no tool call on direct items: there is none for RL to remove"
    elif not out["sft_rl_fewer_calls_on_direct_than_sft"]["holds"] and "with_call" in sft["per_category"].get("direct", {}):
        # The reward pays accuracy, not restraint: RL drops a needless call only where answering without it is right more often.
        paths = {path: sft["per_category"]["direct"][path] for path in ("with_call", "without_call")}
        said = ", ".join(f"{path.replace('_', ' ')} {p['accuracy'] if p['n'] else '-'} ({p['n']} item{'' if p['n'] == 1 else 's'})" for path, p in paths.items())
        out["sft_rl_fewer_calls_on_direct_than_sft"]["note"] = (
            f"SFT's accuracy on direct items {said}; GRPO's reward pays accuracy, not fewer calls: the rollouts' accuracy and "
            "calls on direct items by step are in grpo.rollouts_by_category")
    # RL only: the paper's expectation, reported rather than aimed at.
    rl = rl_only.get("grpo")
    out["rl_only_calls_le_0.1_by_the_end (expectation)"] = check(rl["tool_calls_last_fifth"] if rl else None, bool(rl) and rl["tool_calls_last_fifth"] <= 0.1)
    # "No better" on a few dozen items: the tool run's 95% interval reaches down to the control's.
    tools_ci, control_ci = rl_only["overall"]["tools"]["ci95"], rl_only["overall"]["control"]["ci95"]
    acc, ctl = rl_only["overall"]["tools"]["accuracy"] or 0, rl_only["overall"]["control"]["accuracy"] or 0
    out["rl_only_no_better_than_control (expectation; 95% intervals overlap)"] = check([acc, ctl], tools_ci[0] <= control_ci[1])
    out["bench_le_30_minutes"] = check(round(seconds, 1), seconds <= 1800)
    return out


def _start_pipeline(config_path: Path, run_dir: Path, prefect_home: Path, torch_threads: int) -> subprocess.Popen:
    """`deepeyes run CONFIG --run-dir RUN` as a subprocess, its output in `<out>/pipeline.log`."""
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "OMP_NUM_THREADS": str(torch_threads),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    with open(run_dir.parent / "pipeline.log", "w") as handle:  # the child keeps its own copy of the handle
        return subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(config_path), "--run-dir", str(run_dir)],
                                stdout=handle, stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def _finish_pipeline(process: subprocess.Popen, run_dir: Path) -> None:
    """Wait for the pipeline; `SystemExit` with the tail of its log when it failed."""
    if process.wait() != 0:
        log = run_dir.parent / "pipeline.log"
        raise SystemExit(f"the pipeline run failed (exit {process.returncode}); see {log}:\n" + log.read_text()[-3000:])


def stop_pipeline(process: subprocess.Popen, grace_s: float = 60.0) -> None:
    """Stop a running pipeline as a scheduler does: SIGTERM, which `deepeyes` handles by cleaning up
    (its servers, Prefect's ephemeral API server), then SIGKILL after `grace_s` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _base_record(run_dir: Path) -> tuple[Any, Any, Any]:
    """What the base stage's manifest records now: its key, when it was recorded, its result (None each when absent)."""
    try:
        lineage = (read_manifest(run_dir / "base") or {}).get("lineage") or {}
    except CorruptManifest:  # the pipeline's base stage replaces it when it runs
        lineage = {}
    return lineage.get("key"), lineage.get("recorded_at"), lineage.get("result")


def wait_for_base(process: subprocess.Popen, run_dir: Path, before: tuple[Any, Any, Any], poll_s: float = 5.0) -> str | None:
    """The base checkpoint the running pipeline has just made, as soon as its instruct stage records
    it (a manifest unlike `before`, the one there when the pipeline started); None when the pipeline
    ended first (it failed, or its base stage was cached and so never recorded anew: the caller
    then reads the checkpoint from its summary)."""
    while process.poll() is None:
        record = _base_record(run_dir)
        if record != before and record[2] is not None:
            return record[2]["checkpoint"]
        time.sleep(poll_s)
    return None


def run(config_path: Path, out: Path, torch_threads: int = 1) -> dict[str, Any]:
    """The four arms (see the module docstring). The pipeline (`sft_rl`) runs as a subprocess; the
    RL-only arm's GRPO, which needs only the base, runs here beside the pipeline's SFT and GRPO as
    soon as the pipeline's instruct stage has made the base (on two cores at `torch_threads` 1, the
    second core is otherwise mostly idle). Raises `SystemExit` when the config lacks `base:` or
    `grpo:`, or the pipeline fails (after the RL-only arm, when it had started)."""
    import torch

    torch.set_num_threads(torch_threads)
    started = time.time()
    cfg: PipelineConfig = load_config(config_path)
    if cfg.base is None or cfg.grpo is None:
        raise SystemExit(f"{config_path}: the fidelity bench needs `base:` and `grpo:` sections")
    seconds: dict[str, float] = {}
    run_dir = arm_dirs(out)["sft_rl"]
    before = _base_record(run_dir)
    pipeline = _start_pipeline(config_path, run_dir, out / "prefect-home", torch_threads)
    resolved = Resolved(cfg, run_dir)
    search, judge, reward = resolved.search, cfg.judge, cfg.reward
    try:
        base_ckpt = wait_for_base(pipeline, run_dir, before)
        rl = None
        if base_ckpt is not None:  # the RL-only arm beside the pipeline's SFT and GRPO
            seconds["base ready"] = round(time.time() - started, 1)
            rl = _rl_only(cfg, base_ckpt, resolved, out, seconds)
        _finish_pipeline(pipeline, run_dir)
    except BaseException:  # the arm failed, or the bench was interrupted: no pipeline left running without it
        stop_pipeline(pipeline)
        raise
    seconds["pipeline (sft_rl arm)"] = round(time.time() - started, 1)
    summary = json.loads((run_dir / "summary.json").read_text())["stages"]
    base_ckpt, sft_ckpt = summary["base"]["checkpoint"], summary["sft"]["checkpoint"]
    if rl is None:  # the base was cached: nothing to wait for, the RL-only arm runs after the pipeline
        rl = _rl_only(cfg, base_ckpt, resolved, out, seconds)

    step = time.time()
    run_evaluate(cfg.eval, base_ckpt, resolved.pools, out / "base" / "eval", search, judge, reward)
    seconds["base: evaluate"] = round(time.time() - step, 1)
    step = time.time()
    run_evaluate(cfg.eval, sft_ckpt, resolved.pools, out / "sft" / "eval", search, judge, reward)
    link = out / "sft" / "sft"
    if not link.is_symlink():
        link.symlink_to(run_dir / "sft")  # the report's SFT loss curve
    seconds["sft: evaluate"] = round(time.time() - step, 1)

    seconds["total"] = round(time.time() - started, 1)
    return {
        "bench": "fidelity",
        "config": str(config_path),
        "world": {"kind": cfg.world.kind, "seed": cfg.world.seed, "per_family": cfg.world.per_family,
                  "instruct_per_family": cfg.world.instruct_per_family},
        "pipeline": {k: summary[k] for k in ("base", "sft", "grpo") if k in summary} | {
            "pools": summary.get("select", {}).get("per_pool"), "synthesize": summary.get("synthesize", {}).get("counts")},
        "seconds": seconds,
        "out": str(out),
    } | read_figures(out, seconds["total"])


def _rl_only(cfg: PipelineConfig, base_ckpt: str, resolved: Resolved, out: Path, seconds: dict[str, float]) -> dict[str, Any]:
    """GRPO from the base and its evaluation (the RL-only arm); their times go into `seconds`."""
    step = time.time()
    rl = run_grpo(cfg.grpo, base_ckpt, resolved.pools, out / "rl_only" / "grpo", resolved.search, cfg.judge, reward=cfg.reward)
    seconds["rl_only: grpo"] = round(time.time() - step, 1)
    step = time.time()
    run_evaluate(cfg.eval, rl["checkpoint"], resolved.pools, out / "rl_only" / "eval", resolved.search, cfg.judge, cfg.reward)
    seconds["rl_only: evaluate"] = round(time.time() - step, 1)
    return rl


def read_figures(out: Path, seconds: float) -> dict[str, Any]:
    """The arms' figures, the paired comparisons, the targets and the report, from a bench's `--out`
    folder whose four arms have run (`seconds`: the bench's wall time, for its 30-minute target).

    Raises NotAFinishedBench when an arm's held-out evaluation is not there (the message names the
    arms, not the folder: the caller names it once)."""
    dirs = arm_dirs(out)
    missing = [arm for arm, d in dirs.items() if not (d / "eval" / HELDOUT / "tools").is_dir()]
    if missing:
        raise NotAFinishedBench(f"no held-out evaluation for the arm(s) {', '.join(missing)}: not a finished fidelity bench")
    arms = {arm: arm_figures(d / "eval", d / "grpo" / "dynamics.jsonl") for arm, d in dirs.items()}
    paired = {name: paired_figures(dirs[before] / "eval", dirs[after] / "eval") for name, (before, after) in PAIRS.items()}
    report = build_report([dirs[a] for a in ARMS], out / "report")
    return {"arms": arms, "paired": paired, "targets": targets(arms, seconds), "report": report["html"]}


def _strip(pipeline: dict[str, Any]) -> dict[str, Any]:
    """The stage summaries without their long per-step lists (they are in the run directory)."""
    slim = json.loads(json.dumps(pipeline))
    for stage in ("base", "sft"):
        part = slim.get(stage, {}).get("sft", slim.get(stage, {}))
        if isinstance(part, dict) and "losses" in part:
            losses = part.pop("losses")
            part.pop("loss_steps", None)
            part["loss_first_last"] = [round(losses[0], 4), round(losses[-1], 4)] if losses else None
    if "grpo" in slim:
        for key in ("rewards", "tool_calls_per_trajectory"):
            slim["grpo"].pop(key, None)
    return slim


class NotAFinishedBench(ValueError):
    """A folder given to `--reread` that lacks part of a finished bench (the message says what; the caller names the folder)."""


def _finished_result(out: Path) -> dict[str, Any] | str:
    """The `fidelity.json` a finished bench wrote in `out`, or why there is none to reread."""
    record = out / "fidelity.json"
    if not out.is_dir():
        return "no such folder" if not out.exists() else "a file, not a bench's folder"
    if not record.is_file():
        return "no fidelity.json: not a finished fidelity bench (run the bench with this --out first)"
    try:
        result = json.loads(record.read_text(errors="replace"))
    except json.JSONDecodeError as exc:
        return f"fidelity.json is not valid JSON ({exc.msg}): run the bench again"
    total = result.get("seconds", {}).get("total") if isinstance(result, dict) and isinstance(result.get("seconds"), dict) else None
    if total is None:
        return "fidelity.json is not a fidelity bench's result (no seconds.total): run the bench again"
    if isinstance(total, bool) or not isinstance(total, (int, float)):
        return f"fidelity.json is not a fidelity bench's result (seconds.total is {json.dumps(total)}, not a number): run the bench again"
    return result


# --- several seeds: the whole bench once per seed, and what holds on which ---------------------------

# The config sections whose `seed` a seed sets: the world (which samples exist), the replay teacher
# (its scripted faults) and curation (the pool split): another world, another data order.
SEEDED_SECTIONS = ("world", "replay", "curate")
# The headline figures `across_seeds` summarises per arm: (name, path into an arm's figures).
HEADLINE_FIGURES = (
    ("accuracy_tools", ("overall", "tools", "accuracy")),
    ("tool_needing_accuracy_tools", ("tool_needing", "tools", "accuracy")),
    ("accuracy_control", ("overall", "control", "accuracy")),
)
GRPO_HEADLINE_FIGURES = (
    ("reward_difference", ("grpo", "reward_difference")),
    ("reward_difference_ci95_low", ("grpo", "reward_difference_ci95", 0)),
)


def parse_seeds(text: str) -> list[int]:
    """`--seeds 0,1`: distinct non-negative whole numbers, comma-separated, in the order given.

    Raises argparse.ArgumentTypeError (argparse tells it as `argument --seeds: ...`, exit 2) for an
    empty entry, anything but ASCII digits, a negative number, one over `MAX_SEED` or a seed given twice."""
    seeds: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            raise argparse.ArgumentTypeError(f"{text!r}: an empty entry; give seeds as 0,1,2")
        if part.startswith("-") and part[1:].isascii() and part[1:].isdigit():
            raise argparse.ArgumentTypeError(f"{part} is negative; seeds are whole numbers from 0")
        if not (part.isascii() and part.isdigit()):  # not int()'s wider reading: `1_0`, `+1`, `²`
            hint = "; separate seeds with commas: 0,1,2" if len(part.split()) > 1 else "; give seeds as 0,1,2"
            raise argparse.ArgumentTypeError(f"{part!r} is not a whole number{hint}")
        seed = int(part)
        if seed > MAX_SEED:
            raise argparse.ArgumentTypeError(f"{seed} is over {MAX_SEED}, the largest seed numpy takes")
        if seed in seeds:
            raise argparse.ArgumentTypeError(f"{seed} is given twice; each seed runs once")
        seeds.append(seed)
    return seeds


def write_seed_config(config_path: Path, seed: int, seed_dir: Path) -> Path:
    """`seed_dir/config.yaml`: the config at `config_path` with `world.seed`, `replay.seed` and
    `curate.seed` set to `seed` (the `world:` and `replay:` sections only where the config has them:
    leaving one out means none; `curate:` is added where it is left out), its relative paths made
    absolute against `config_path`'s folder (as loading it reads them), and `runs_dir` set to
    `seed_dir/runs`, so that `--config seed_dir/config.yaml` reruns this seed alone from anywhere
    and no two seeds share a run folder. Returns the written path.

    Raises SystemExit with the loader's one-line message when the config does not load."""
    try:
        load_config(config_path)  # its mistakes told against the user's file and line, not the copy's
        raw = load_yaml(read_text_file(config_path, "config file"))
    except (ConfigError, InputFileError) as exc:
        raise SystemExit(str(exc)) from None
    resolve_paths(raw, config_path.parent.resolve())
    for section in SEEDED_SECTIONS:
        if section == "curate" and raw.get(section) is None:
            raw[section] = {}
        if isinstance(raw.get(section), dict):
            raw[section]["seed"] = seed
    raw["runs_dir"] = str(seed_dir / "runs")
    seed_dir.mkdir(parents=True, exist_ok=True)
    path = seed_dir / "config.yaml"
    path.write_text(f"# {config_path} with seed {seed} in {', '.join(SEEDED_SECTIONS)} (python -m bench.fidelity --seeds)\n"
                    + yaml.safe_dump(raw, sort_keys=False))
    return path


def _figure(figures: dict[str, Any], path: tuple[str | int, ...]) -> Any:
    for key in path:
        try:
            figures = figures[key]
        except (KeyError, IndexError, TypeError):
            return None
    return figures


def across_seeds(results: dict[int, dict[str, Any]]) -> dict[str, Any]:
    """What holds on which seed, from each seed's bench result (`{seed: the single bench's object}`,
    each with `targets` and `arms`).

    Returns `{"targets": {name: {"holds_on": [seeds], "holds_on_all": bool}}, "arms": {arm: {figure:
    {"by_seed": {seed: value}, "mean", "min", "max"}}}}`. Targets are every name any seed has, in
    the first seed's order (a seed without one does not hold it). The figures are accuracy with tools
    overall and on the tool-needing families, the tool-free control's overall accuracy, and for GRPO
    arms the reward's last-minus-first-fifth difference and its 95% interval's lower bound; mean,
    min and max are over the seeds that have a value (None where none has), the mean rounded to 4
    places. Seeds are written as text keys, as JSON has them."""
    names = list(dict.fromkeys(name for result in results.values() for name in result["targets"]))
    summary: dict[str, Any] = {"targets": {}, "arms": {}}
    for name in names:
        holds_on = [seed for seed, result in results.items() if result["targets"].get(name, {}).get("holds")]
        summary["targets"][name] = {"holds_on": holds_on, "holds_on_all": len(holds_on) == len(results)}
    arms = list(dict.fromkeys(arm for result in results.values() for arm in result["arms"]))
    for arm in arms:
        figures = HEADLINE_FIGURES + (GRPO_HEADLINE_FIGURES if any("grpo" in r["arms"].get(arm, {}) for r in results.values()) else ())
        summary["arms"][arm] = {}
        for name, path in figures:
            by_seed = {str(seed): _figure(result["arms"].get(arm, {}), path) for seed, result in results.items()}
            values = [v for v in by_seed.values() if v is not None]
            summary["arms"][arm][name] = {
                "by_seed": by_seed, "mean": round(sum(values) / len(values), 4) if values else None,
                "min": min(values) if values else None, "max": max(values) if values else None}
    return summary


def seed_dirs(out: Path) -> dict[int, Path]:
    """The `seed-<N>` folders of a seeds-mode bench's `--out` folder, by seed (none: not one)."""
    found = {}
    for path in out.glob("seed-*") if out.is_dir() else ():
        number = path.name.removeprefix("seed-")
        if path.is_dir() and number.isascii() and number.isdigit():
            found[int(number)] = path
    return dict(sorted(found.items()))


def seeds_result(results: dict[int, dict[str, Any]], out: Path) -> dict[str, Any]:
    """The seeds mode's object: each seed's bench result, `across_seeds`, and the seconds per seed
    and in all (the sum of the seeds' bench times: they run one after another)."""
    seconds = {f"seed {seed}": result["seconds"]["total"] for seed, result in results.items()}
    seconds["total"] = round(sum(seconds.values()), 1)
    return {"bench": "fidelity", "seeds": {str(seed): result for seed, result in results.items()},
            "across_seeds": across_seeds(results), "seconds": seconds, "out": str(out), "table": str(out / "seeds.md")}


def seeds_markdown(result: dict[str, Any]) -> str:
    """`seeds.md`: the targets × seeds table (each seed's verdict and value), the headline figures
    per arm across seeds, and each seed's report."""
    seeds = result["seeds"]
    lines = ["# bench.fidelity across seeds", "", "| target | " + " | ".join(f"seed {s}" for s in seeds) + " | holds on all |",
             "|---|" + "---|" * len(seeds) + "---|"]
    for name, verdict in result["across_seeds"]["targets"].items():
        cells = []
        for seed in seeds.values():
            target = seed["targets"].get(name)
            cells.append("—" if target is None else f"{'ok' if target['holds'] else '**MISS**'} {target['value']}")
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {'yes' if verdict['holds_on_all'] else 'no'} |")
    lines += ["", "| arm | figure | mean | min | max |", "|---|---|---|---|---|"]
    for arm, figures in result["across_seeds"]["arms"].items():
        lines += [f"| {arm} | {name} | {f['mean']} | {f['min']} | {f['max']} |" for name, f in figures.items()]
    lines += ["", *[f"- seed {s}: {seed.get('report')}" for s, seed in seeds.items()], ""]
    return "\n".join(lines)


def _finish_one(result: dict[str, Any], out: Path) -> dict[str, Any]:
    """A single bench's result written to `out/fidelity.json`, as `main` writes it."""
    (out / "fidelity.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def run_seeds(config_path: Path, out: Path, seeds: list[int], torch_threads: int = 1) -> dict[str, Any]:
    """The whole bench once per seed, one after another, each in `out/seed-<N>/` on its own config
    (`write_seed_config`), each written as a single bench writes it (`fidelity.json`, its report);
    then `out/seeds.md`. Returns `seeds_result`'s object."""
    results: dict[int, dict[str, Any]] = {}
    for seed in seeds:
        seed_dir = out / f"seed-{seed}"
        seed_config = write_seed_config(config_path, seed, seed_dir)
        result = run(seed_config, seed_dir, torch_threads)
        result["pipeline"] = _strip(result["pipeline"])
        results[seed] = _finish_one(result, seed_dir)
    combined = seeds_result(results, out)
    (out / "seeds.md").write_text(seeds_markdown(combined))
    return combined


def reread_seeds(out: Path, seeds: list[int] | None) -> dict[str, Any] | str:
    """`--reread` on a seeds-mode `out`: each seed's figures, targets and report again, then
    `across_seeds` and `seeds.md`; or why it cannot be (a seed asked for is not there, one seed's
    bench did not finish)."""
    if not out.is_dir():
        return "no such folder" if not out.exists() else "a file, not a bench's folder"
    found = seed_dirs(out)
    if not found and (out / "fidelity.json").is_file():
        return "a single-seed bench (no seed-<N> folders): reread it without --seeds"
    if seeds is not None:
        missing = [s for s in seeds if s not in found]
        if missing:
            return f"no seed-{missing[0]} folder (seeds here: {', '.join(map(str, found)) or 'none'})"
        found = {s: found[s] for s in seeds}
    results: dict[int, dict[str, Any]] = {}
    for seed, seed_dir in found.items():
        result = _finished_result(seed_dir)
        if isinstance(result, str):
            return f"seed-{seed}: {result}"
        try:
            results[seed] = _finish_one(result | read_figures(seed_dir, result["seconds"]["total"]), seed_dir)
        except NotAFinishedBench as exc:
            return f"seed-{seed}: {exc}"
    combined = seeds_result(results, out)
    if set(results) == set(seed_dirs(out)):  # a reread of some seeds leaves the folder's summary of all of them as it was
        (out / "seeds.md").write_text(seeds_markdown(combined))
    return combined


def print_seeds(result: dict[str, Any]) -> None:
    """The seeds mode's human-readable lines: one per target with its verdict per seed."""
    seeds = list(result["seeds"])
    width = max((len(name) for name in result["across_seeds"]["targets"]), default=6)
    print(f"{'target':<{width}}  " + "  ".join(f"seed {s:<3}" for s in seeds))
    for name, verdict in result["across_seeds"]["targets"].items():
        cells = "  ".join(f"{'ok' if int(s) in verdict['holds_on'] else 'MISS':<{5 + 3}}" for s in seeds)
        print(f"{name:<{width}}  {cells}" + ("  (holds on all)" if verdict["holds_on_all"] else ""))
    for seed, one in result["seeds"].items():
        print(f"seed {seed} report: {one['report']}")
    print(f"table: {result['table']}")


class _OneLineParser(argparse.ArgumentParser):
    """argparse with the `deepeyes` CLI's form of a usage error: one line, exit 2, no usage box."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 (got {value})")
    return value


def _out_folder(text: str) -> Path:
    """`--out`'s folder; an empty one (which reads as the current folder) is refused."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path: give the bench's folder")
    return Path(text)


def _bench_config_problem(config_path: Path) -> str | None:
    """Why `config_path` cannot run the bench (it does not load, or has no `base:` or `grpo:`
    section), checked before any folder is made; None when it can."""
    try:
        cfg = load_config(config_path)
    except (ConfigError, InputFileError) as exc:
        return str(exc)
    if cfg.base is None or cfg.grpo is None:
        return f"{config_path}: the fidelity bench needs `base:` and `grpo:` sections"
    return None


def main() -> None:
    parser = _OneLineParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "fidelity.yaml",
                        help="the pipeline config the four arms run (default: the shipped configs/fidelity.yaml, %(default)s)")
    parser.add_argument("--out", type=_out_folder, default=None, help="where the runs go (default: a new temporary folder, kept)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--seeds", type=parse_seeds, default=None, metavar="0,1",
                        help="run the whole bench once per seed (world.seed, replay.seed and curate.seed set to it), one after "
                             "another in --out/seed-<N>/, and say which targets hold on which seeds: it takes about the single "
                             "bench's time times the number of seeds. With --reread: reread only these seeds (default: one run, on the config's "
                             "seeds)")
    parser.add_argument("--reread", action="store_true",
                        help="train nothing: read the figures, targets and report again from the finished bench in --out "
                             "(e.g. after the bench's figures gained a field); a --seeds bench's seed-<N> folders are each reread")
    parser.add_argument("--torch-threads", type=_positive_int, default=1,
                        help="torch's threads for training and evaluation (1: on a small shared CPU, a second OpenMP thread spinning "
                             "against other work slowed training several times over here; bench.train does the same; default: %(default)s)")
    args = parser.parse_args()
    subset = False  # a reread of some of a --seeds bench's seeds: the folder's record of all of them stays
    if args.reread:
        if args.out is None:
            parser.error("--reread needs --out, the folder of a finished bench")
        out = args.out.resolve()
        if seed_dirs(out) or args.seeds is not None:
            with contextlib.redirect_stdout(sys.stderr):
                result = reread_seeds(out, args.seeds)
            subset = isinstance(result, dict) and set(result["seeds"]) != {str(s) for s in seed_dirs(out)}
            if isinstance(result, str):
                parser.error(f"--out {args.out}: {result}")
        else:
            result = _finished_result(out)
            if isinstance(result, str):
                parser.error(f"--out {args.out}: {result}")
            with contextlib.redirect_stdout(sys.stderr):
                try:
                    result |= read_figures(out, result["seconds"]["total"])
                except NotAFinishedBench as exc:
                    parser.error(f"--out {args.out}: {exc}")
    else:
        try:  # a file at --out, or above it: `mkdir` would fail with a traceback (the `deepeyes` CLI's check and words)
            check_out_dir(args.out, "--out")
        except InputFileError as exc:
            parser.error(str(exc))
        if (problem := _bench_config_problem(args.config)) is not None:  # named as the user typed it
            parser.error(problem)
        out = (args.out or Path(tempfile.mkdtemp(prefix="deepeyes-fidelity-"))).resolve()
        out.mkdir(parents=True, exist_ok=True)
        # stdout carries the result only: the stages' progress lines go to stderr. A SIGTERM stops the
        # pipeline run beside the bench as Ctrl-C does (`run`), not orphaning it.
        with contextlib.redirect_stdout(sys.stderr), stop_signals():
            try:
                if args.seeds is not None:
                    result = run_seeds(args.config.resolve(), out, args.seeds, args.torch_threads)
                else:
                    result = run(args.config.resolve(), out, args.torch_threads)
                    result["pipeline"] = _strip(result["pipeline"])
            except (Terminated, KeyboardInterrupt) as exc:  # the pipeline was stopped (`run`): one line, the shell's code
                signum = signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT
                print(SAID[signum], file=sys.stderr)
                sys.exit(EXIT_CODES[signum])
    if not subset:  # a reread of some seeds prints them; the folder's record of all its seeds stays
        (out / "fidelity.json").write_text(json.dumps(result, indent=2) + "\n")
    if args.json:
        print(json.dumps(result, indent=2))
    elif "seeds" in result:
        print_seeds(result)
    else:
        for name, target in result["targets"].items():
            print(f"{'ok  ' if target['holds'] else 'MISS'} {name}: {target['value']}" + (f" ({target['note']})" if "note" in target else ""))
        for name, groups in result["paired"].items():
            for group, p in groups.items():
                print(f"paired {name} {group}: {p['better']} better, {p['worse']} worse of {p['n']} "
                      f"(sign test p {p['sign_test_p']}); reward {p['reward_difference']:+.3f} {p['reward_difference_ci95']}")
        print(f"report: {result['report']}")


if __name__ == "__main__":
    main()
