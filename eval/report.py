"""The evaluation report: one self-contained HTML page (plots embedded) and its Markdown twin.

`deepeyes report RUN [RUN ...]` puts runs side by side (e.g. base, RL only, SFT, SFT+RL): a table of
each run's accuracy with tools and in the tool-free control on the items that need a tool and on the
control items that do not, how often it calls a tool, and how its GRPO reward moved; accuracy with
and without tools per benchmark with 95% intervals, the tool distribution per task category, tool
calls per trajectory by GRPO step (RL alone against RL after a cold start), and the training curves
from the runs' logs (SFT loss; GRPO reward, tool calls per trajectory, response length). Everything comes from files in the run directories, so a report costs no model call.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from curation.shards import read_manifest
from eval.metrics import NO_TOOL_CATEGORIES, TOOL_CLASSES, fifths, pooled


class ReportError(ValueError):
    """A run directory without what a report needs; names it."""


@dataclass
class RunData:
    name: str
    metrics: dict[str, Any]
    sft_losses: list[float] = field(default_factory=list)
    sft_loss_steps: list[int] = field(default_factory=list)  # the training step each SFT loss was logged at
    dynamics: list[dict[str, Any]] = field(default_factory=list)


def load_run(run_dir: str | Path) -> RunData:
    run = Path(run_dir)
    metrics_path = run / "eval" / "metrics.json"
    if not run.is_dir():
        raise ReportError(f"{run}: {'a file, not a run directory' if run.exists() else 'run directory not found'}")
    if not metrics_path.is_file():
        raise ReportError(f"{run}: no eval/metrics.json (run the evaluate stage first)")
    metrics = _json(metrics_path.read_text(errors="replace"), metrics_path)
    if not isinstance(metrics, dict) or not isinstance(metrics.get("benchmarks"), dict):
        raise ReportError(f"{metrics_path}: not an evaluation's metrics (no `benchmarks` mapping); run the evaluate stage again")
    data = RunData(run.name, metrics)
    # The SFT stage's result, as its lineage recorded it (any run of it: the flow's or one by hand).
    sft = (read_manifest(run / "sft") or {}).get("lineage") or {}
    data.sft_losses = (sft.get("result") or {}).get("losses") or []
    data.sft_loss_steps = _loss_steps(run, (sft.get("result") or {}).get("loss_steps"), len(data.sft_losses))
    dynamics = run / "grpo" / "dynamics.jsonl"
    if dynamics.is_file():
        lines = dynamics.read_text(errors="replace").splitlines()
        data.dynamics = [step for number, line in enumerate(lines, 1) if line.strip()
                         for step in [_json(line, dynamics, number)] if isinstance(step, dict)]
    return data


def _loss_steps(run: Path, recorded: Any, count: int) -> list[int]:
    """The training steps the SFT losses were logged at: as the SFT stage recorded them, or, for a
    stage recorded before it kept them, every `sft.logging_steps` steps of the config in the run's
    `run.json` (the trainer logs the loss at each multiple of it); failing both, 1, 2, ... (the
    logged entries' order)."""
    if isinstance(recorded, list) and len(recorded) == count:
        return recorded
    try:
        every = json.loads((run / "run.json").read_text())["config"]["sft"]["logging_steps"]
    except (OSError, ValueError, TypeError, KeyError):
        every = None
    every = every if isinstance(every, int) and every > 0 else 1
    return [every * i for i in range(1, count + 1)]


def _json(text: str, path: Path, line: int | None = None) -> Any:
    """`text` (the file `path`, or its line `line`) as JSON; raises ReportError naming the file."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        where = f"{path}:{line}" if line else str(path)
        raise ReportError(f"{where}: not valid JSON ({exc.msg}); run the stage that wrote it again") from None


def _png(figure) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=110, bbox_inches="tight")
    return out.getvalue()


def _accuracy_plot(runs: list[RunData]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    benches = sorted({b for r in runs for b in r.metrics["benchmarks"]})
    series = [(r, mode) for r in runs for mode in ("tools", "no_tools")]
    width = 0.8 / max(1, len(series))
    figure, axis = plt.subplots(figsize=(max(6, 1.6 * len(benches) * max(1, len(runs))), 3.6))
    for i, (run, mode) in enumerate(series):
        values, lows, highs = [], [], []
        for bench in benches:
            overall = _scored(run.metrics["benchmarks"].get(bench, {}).get("runs", {}).get(mode, {}).get("overall"))
            acc = overall["accuracy"] if overall else 0.0
            low, high = overall["ci95"] if overall else (0.0, 0.0)
            values.append(acc)
            lows.append(acc - low)
            highs.append(high - acc)
        positions = [b + (i - (len(series) - 1) / 2) * width for b in range(len(benches))]
        axis.bar(positions, values, width, yerr=[lows, highs], capsize=3, label=f"{run.name} · {mode.replace('_', '-')}",
                 hatch="" if mode == "tools" else "//")
    axis.set_xticks(range(len(benches)), benches, rotation=20)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy (95% interval)")
    axis.legend(fontsize=8)
    data = _png(figure)
    plt.close(figure)
    return data


def _tool_plot(runs: list[RunData]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(runs), figsize=(4.5 * len(runs), 3.4), squeeze=False)
    for axis, run in zip(axes[0], runs, strict=True):
        per_category: dict[str, dict[str, int]] = {}
        samples: dict[str, int] = {}
        for entry in run.metrics["benchmarks"].values():
            for category, stats in (entry["runs"].get("tools") or {}).get("per_category", {}).items():
                bucket = per_category.setdefault(category, dict.fromkeys(TOOL_CLASSES, 0))
                for cls, count in stats["tool_calls_by_class"].items():
                    bucket[cls] += count
                samples[category] = samples.get(category, 0) + stats["n"]
        categories = sorted(per_category)
        bottom = [0.0] * len(categories)
        for cls in TOOL_CLASSES:
            values = [per_category[c][cls] / max(1, samples[c]) for c in categories]
            axis.bar(categories, values, bottom=bottom, label=cls.replace("_", " "))
            bottom = [b + v for b, v in zip(bottom, values, strict=True)]
        axis.set_title(run.name)
        axis.set_ylabel("tool calls per sample")
    axes[0][-1].legend(fontsize=8)
    data = _png(figure)
    plt.close(figure)
    return data


TRAINING_PANELS = [("SFT loss", None), ("GRPO reward", "reward"), ("tool calls per trajectory", "tools/calls_per_trajectory"),
                   ("response tokens", "rollout/response_tokens")]


def training_series(runs: list[RunData]) -> list[tuple[str, str, list[tuple[str, list[int], list[float]]]]]:
    """The training plot's panels: `(title, x label, [(run name, training steps, values), ...])`, the
    SFT loss at the steps the trainer logged it, the GRPO figures at the GRPO steps they were logged at."""
    panels = []
    for title, key in TRAINING_PANELS:
        series = []
        for run in runs:
            if key is None and run.sft_losses:
                series.append((run.name, list(run.sft_loss_steps), list(run.sft_losses)))
            elif key is not None and any(key in d for d in run.dynamics):
                logged = [d for d in run.dynamics if key in d]
                series.append((run.name, [d["step"] for d in logged], [d[key] for d in logged]))
        panels.append((title, "SFT training step" if key is None else "GRPO step", series))
    return panels


def pioneer_series(runs: list[RunData]) -> list[tuple[str, list[int], list[float]]]:
    """The pioneer plot's lines: `(run name, GRPO steps, tool calls per trajectory)` for each run that ran GRPO."""
    key = "tools/calls_per_trajectory"
    return [(run.name, [d["step"] for d in run.dynamics if key in d], [d[key] for d in run.dynamics if key in d])
            for run in runs if any(key in d for d in run.dynamics)]


def _step_axis(axis, label: str) -> None:
    """Label the x axis as training steps, with ticks only at whole steps (a view holding fewer than
    two, as a single logged step gives, is widened to two steps about its middle so that it has some)."""
    import math

    from matplotlib.ticker import MaxNLocator

    axis.set_xlabel(label)
    low, high = axis.get_xlim()
    if math.floor(high) - math.ceil(low) < 1:
        middle = (low + high) / 2
        axis.set_xlim(middle - 1, middle + 1)
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))


def _training_plot(runs: list[RunData]) -> bytes | None:
    if not any(r.sft_losses or r.dynamics for r in runs):
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {run.name: f"C{i}" for i, run in enumerate(runs)}  # a run keeps its colour across the panels
    panels = training_series(runs)
    figure, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3))
    handles: dict[str, Any] = {}
    for axis, (title, xlabel, series) in zip(axes, panels, strict=True):
        for name, steps, values in series:
            (line,) = axis.plot(steps, values, marker=None if title == "SFT loss" and len(steps) > 1 else "o",
                                color=colors[name], label=name)
            handles.setdefault(name, line)
        axis.set_title(title)
        _step_axis(axis, xlabel)
    if handles:
        axes[-1].legend([handles[n] for n in colors if n in handles], [n for n in colors if n in handles], fontsize=8)
    data = _png(figure)
    plt.close(figure)
    return data


def _pioneer_plot(runs: list[RunData]) -> bytes | None:
    """Tool calls per trajectory by GRPO step, one line per run that ran GRPO (the paper's RL-only
    against SFT+RL comparison: without a cold start, tool calls die out)."""
    lines = pioneer_series(runs)
    if not lines:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 3.4))
    for name, steps, values in lines:
        axis.plot(steps, values, marker="o", markersize=3, label=name)
    _step_axis(axis, "GRPO step")
    axis.set_ylabel("tool calls per trajectory")
    axis.set_ylim(bottom=0)
    axis.legend(fontsize=8)
    data = _png(figure)
    plt.close(figure)
    return data


def _scored(stats: dict[str, Any] | None) -> dict[str, Any] | None:
    """A group's figures when it scored anything; None for a missing or empty one (n = 0: no accuracy)."""
    return stats if stats and stats.get("n") else None


def _interval(stats: dict[str, Any] | None) -> str:
    stats = _scored(stats)
    return f"{_pct(stats['accuracy'])} [{_pct(stats['ci95'][0])}, {_pct(stats['ci95'][1])}]" if stats else "—"


def _side_by_side(runs: list[RunData]) -> tuple[str, list[str], list[list[str]]]:
    """The runs side by side on every benchmark: accuracy with tools and in the tool-free control on
    the items that need a tool and on those that do not (the `direct` control items), how often a
    tool is called, and how GRPO's reward moved (mean of the first and of the last fifth of steps)."""
    rows = []
    for run in runs:
        for bench, entry in sorted(run.metrics["benchmarks"].items()):
            tools = (entry["runs"].get("tools") or {}).get("per_category", {})
            control = (entry["runs"].get("no_tools") or {}).get("per_category", {})
            needing = [c for c in sorted(set(tools) | set(control)) if c not in NO_TOOL_CATEGORIES]
            direct = [c for c in sorted(set(tools) | set(control)) if c in NO_TOOL_CATEGORIES]
            need_tools, need_control = pooled(tools, needing), pooled(control, needing)
            direct_tools, direct_control = pooled(tools, direct), pooled(control, direct)
            rewards = [d["reward"] for d in run.dynamics if "reward" in d]
            first, last = fifths(rewards)
            rows.append([
                run.name, bench, _interval(need_tools), _interval(need_control), _interval(direct_tools), _interval(direct_control),
                _pct(need_tools["share_using_tools"]) if need_tools else "—", _pct(direct_tools["share_using_tools"]) if direct_tools else "—",
                f"{tools_overall['tool_calls_per_sample']:.2f}" if (tools_overall := _scored((entry["runs"].get("tools") or {}).get("overall")))
                else "—",
                f"{sum(first) / len(first):.3f} → {sum(last) / len(last):.3f}" if rewards else "—",
            ])
    return ("Runs side by side (%, 95% interval; `direct` items need no tool)",
            ["run", "benchmark", "tool-needing: with tools", "tool-needing: control", "direct: with tools", "direct: control",
             "% tool-needing items with a call", "% direct items with a call", "calls / item", "GRPO reward, first → last fifth"], rows)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def _tables(runs: list[RunData]) -> list[tuple[str, list[str], list[list[str]]]]:
    benches = sorted({b for r in runs for b in r.metrics["benchmarks"]})
    accuracy_rows = []
    for bench in benches:
        for run in runs:
            entry = run.metrics["benchmarks"].get(bench)
            if entry is None:
                continue
            cells = [bench, run.name, str(entry["samples"])]
            for mode in ("tools", "no_tools"):
                cells.append(_interval((entry["runs"].get(mode) or {}).get("overall")))
            tools = _scored((entry["runs"].get("tools") or {}).get("overall"))
            control = _scored((entry["runs"].get("no_tools") or {}).get("overall"))
            cells.append(f"{100 * (tools['accuracy'] - control['accuracy']):+.1f}" if tools and control else "—")
            cells.append(str(sum((entry["runs"].get(m) or {}).get("overall", {}).get("judge_failed", 0) for m in ("tools", "no_tools"))))
            cells.append(str(entry.get("unreadable", 0)))
            accuracy_rows.append(cells)
    tool_rows = []
    for run in runs:
        for bench in benches:
            entry = run.metrics["benchmarks"].get(bench)
            for category, stats in ((entry or {}).get("runs", {}).get("tools") or {}).get("per_category", {}).items():
                tool_rows.append([run.name, bench, category, str(stats["n"]), _pct(stats["share_using_tools"]),
                                  f"{stats['tool_calls_per_sample']:.2f}", *(str(stats["tool_calls_by_class"].get(c, 0)) for c in TOOL_CLASSES)])
    return [
        _side_by_side(runs),
        ("Accuracy with and without tools (%, 95% interval)",
         ["benchmark", "run", "n", "with tools", "tool-free control", "Δ (points)", "judge failures", "unreadable rows"], accuracy_rows),
        ("Tool use per task category (the tool run)",
         ["run", "benchmark", "category", "n", "% using tools", "calls / sample", *(c.replace("_", " ") for c in TOOL_CLASSES)], tool_rows),
    ]


def run_labels(run_dirs: list[str | Path]) -> list[str]:
    """Each run's label in the report: its folder's name, with as many parent folders as it takes
    to tell runs of one name apart (`a/demo`, `b/demo`). Raises `ReportError` for a run given twice
    (`demo` and `./demo`): its rows would stand twice in every table."""
    paths = [Path(r).resolve() for r in run_dirs]
    first: dict[Path, str | Path] = {}
    for given, path in zip(run_dirs, paths):
        if path in first:
            also = "" if str(given) == str(first[path]) else f" (also as {first[path]})"
            raise ReportError(f"{given}: this run is given twice{also}; give each run once (its rows would stand twice in every table)")
        first[path] = given
    depths = [1] * len(paths)
    while True:
        labels = [str(PurePath(*path.parts[-depth:])) for path, depth in zip(paths, depths)]
        clashing = [i for i, label in enumerate(labels) if labels.count(label) > 1]
        if not clashing:
            return labels
        for i in clashing:
            depths[i] += 1


def build_report(run_dirs: list[str | Path], out_dir: str | Path) -> dict[str, str]:
    """Write `report.html` (self-contained) and `report.md` (+ `plots/`) to `out_dir`; runs are
    labelled by `run_labels`. Raises `ReportError` for a run that cannot be reported or is given twice."""
    runs = [load_run(r) for r in run_dirs]
    for run, label in zip(runs, run_labels(run_dirs)):
        run.name = label
    out = Path(out_dir)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    plots = [("Accuracy per benchmark", "accuracy.png", _accuracy_plot(runs)), ("Tool distribution per task category", "tools.png", _tool_plot(runs))]
    pioneer = _pioneer_plot(runs)
    if pioneer is not None:
        plots.append(("Tool calls per trajectory by GRPO step", "pioneer.png", pioneer))
    training = _training_plot(runs)
    if training is not None:
        plots.append(("Training curves", "training.png", training))
    for _, file, data in plots:
        (out / "plots" / file).write_bytes(data)
    tables = _tables(runs)
    title = "open-deepeyes evaluation: " + ", ".join(r.name for r in runs)

    md = [f"# {title}", "", "Runs: " + "; ".join(f"**{r.name}** (model `{r.metrics.get('model')}`)" for r in runs), ""]
    page = [f"<h1>{html.escape(title)}</h1>", "<p>Runs: " + "; ".join(
        f"<b>{html.escape(r.name)}</b> (model <code>{html.escape(str(r.metrics.get('model')))}</code>)" for r in runs) + "</p>"]
    for heading, header, rows in tables:
        md += [f"## {heading}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        md += ["| " + " | ".join(row) + " |" for row in rows] + [""]
        page.append(f"<h2>{html.escape(heading)}</h2><table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>")
        page += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows]
        page.append("</table>")
    for heading, file, data in plots:
        md += [f"## {heading}", "", f"![{heading}](plots/{file})", ""]
        page.append(f"<h2>{html.escape(heading)}</h2><img alt=\"{html.escape(heading)}\" src=\"data:image/png;base64,{base64.b64encode(data).decode()}\">")
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
             "th{background:#f4f4f4}img{max-width:100%}")
    document = f"<!doctype html><html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title><style>{style}</style></head>" \
               f"<body>{''.join(page)}</body></html>"
    (out / "report.html").write_text(document)
    (out / "report.md").write_text("\n".join(md))
    return {"html": str(out / "report.html"), "markdown": str(out / "report.md")}
