"""Evaluation metrics: accuracy with 95% intervals, judge failures apart, tool-usage analytics."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

# What a tool call was for: code that showed images is image work (crop, zoom, enhance); code that
# only printed is numeric work; the two searches are themselves.
TOOL_CLASSES = ("image_ops", "numeric_code", "text_search", "image_search", "other")


def wilson_interval(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion: sound at small n and at 0 or 1, unlike p ± z·se.
    With no trials (n = 0) nothing is known: (0, 1)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def tool_class(call: dict[str, Any]) -> str:
    if call["tool"] == "python":
        return "image_ops" if call.get("images") else "numeric_code"
    if call["tool"] == "search":
        return "text_search"
    if call["tool"] == "image_search":
        return "image_search"
    return "other"


def group_stats(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """n, correct, accuracy with its Wilson 95% interval, judge failures, format and tool-use shares,
    tool calls by kind and stop reasons of a group of trajectories. With no rows the rates
    (`accuracy`, `ci95`, `format_ok`, `mean_reward`, `share_using_tools`, `tool_calls_per_sample`)
    are None: an empty pool measured nothing, and must not read as 0%."""
    n = len(rows)
    correct = sum(1 for r in rows if r["correct"])
    calls = [len(r["tool_calls"]) for r in rows]
    by_tool: dict[str, int] = defaultdict(int)
    by_class = dict.fromkeys(TOOL_CLASSES, 0)
    for row in rows:
        for call in row["tool_calls"]:
            by_tool[call["tool"]] += 1
            by_class[tool_class(call)] += 1
    low, high = wilson_interval(correct, n)
    return {
        "n": n,
        "correct": correct,
        "accuracy": correct / n if n else None,
        "ci95": [round(low, 4), round(high, 4)] if n else None,
        # A verdict nobody could give is not a wrong answer: counted apart (and as not correct above).
        "judge_failed": sum(1 for r in rows if r["judge_failed"]),
        "format_ok": sum(1 for r in rows if r["format_ok"]) / n if n else None,
        "mean_reward": sum(r["reward"] for r in rows) / n if n else None,
        "share_using_tools": sum(1 for c in calls if c) / n if n else None,
        "tool_calls_per_sample": sum(calls) / n if n else None,
        "tool_calls_by_class": by_class,
        "tool_calls_by_tool": dict(by_tool),
        "stop_reasons": {k: sum(1 for r in rows if r["stop_reason"] == k) for k in sorted({r["stop_reason"] for r in rows})},
    }


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall and per-category statistics of one run's trajectories."""
    by_category: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        by_category[row["category"]].append(row)
    return {"overall": group_stats(rows), "per_category": {c: group_stats(g) for c, g in sorted(by_category.items())}}


# The control family of the learnable world: items whose answer is in the question (no tool needed).
NO_TOOL_CATEGORIES = ("direct",)


def pooled(per_category: dict[str, dict[str, Any]], categories: list[str] | tuple[str, ...]) -> dict[str, Any] | None:
    """`group_stats`-like figures over several categories of a `summarize` result: n, accuracy with its
    Wilson interval, share of items using a tool, tool calls per item; None when none is present."""
    groups = [per_category[c] for c in categories if c in per_category]
    n = sum(g["n"] for g in groups)
    if not n:
        return None
    correct = sum(g["correct"] for g in groups)
    low, high = wilson_interval(correct, n)
    return {
        "n": n,
        "accuracy": correct / n,
        "ci95": [round(low, 4), round(high, 4)],
        "share_using_tools": sum(g["share_using_tools"] * g["n"] for g in groups) / n,
        "tool_calls_per_sample": sum(g["tool_calls_per_sample"] * g["n"] for g in groups) / n,
    }


def fifths(values: list[float]) -> tuple[list[float], list[float]]:
    """The first and the last fifth of a series (at least one value each; [] and [] when empty)."""
    if not values:
        return [], []
    k = max(1, len(values) // 5)
    return values[:k], values[-k:]


def bootstrap_mean_difference(first: list[float], last: list[float], resamples: int = 10000, seed: int = 0) -> tuple[float, float, float]:
    """mean(last) - mean(first) with a 95% percentile-bootstrap interval (each side resampled apart).

    Raises ValueError when a side is empty."""
    import random

    if not first or not last:
        raise ValueError("both sides need at least one value")
    rng = random.Random(seed)
    diffs = sorted(
        sum(rng.choices(last, k=len(last))) / len(last) - sum(rng.choices(first, k=len(first))) / len(first) for _ in range(resamples)
    )
    point = sum(last) / len(last) - sum(first) / len(first)
    return point, diffs[int(0.025 * resamples)], diffs[int(0.975 * resamples) - 1]


def paired_difference(before: dict[str, tuple[bool, float]], after: dict[str, tuple[bool, float]],
                      resamples: int = 10000, seed: int = 0) -> dict[str, Any]:
    """Two checkpoints on the same items (e.g. SFT and SFT+RL on the held-out pool), item by item.

    `before` and `after` map an item's id to (correct, reward); only ids in both count (`unpaired`
    says how many were not). Returns `n`, `better` and `worse` (items that turned right / wrong),
    the two accuracies, `sign_test_p` (the exact two-sided binomial test on the items that changed,
    i.e. McNemar's exact test; 1.0 when none changed), and the mean per-item reward difference
    (after - before) with a 95% percentile-bootstrap interval that resamples items, keeping each
    item's pair together: a paired comparison, so the items' own difficulty cancels out, which two
    independent samples (`bootstrap_mean_difference`) cannot do.

    Raises ValueError when no item is in both."""
    import random

    from scipy.stats import binomtest

    ids = sorted(set(before) & set(after))
    if not ids:
        raise ValueError("no item is in both runs")
    better = sum(1 for i in ids if after[i][0] and not before[i][0])
    worse = sum(1 for i in ids if before[i][0] and not after[i][0])
    diffs = [after[i][1] - before[i][1] for i in ids]
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=len(diffs))) / len(diffs) for _ in range(resamples))
    n = len(ids)
    return {
        "n": n,
        "unpaired": len(set(before) ^ set(after)),
        "accuracy_before": round(sum(before[i][0] for i in ids) / n, 4),
        "accuracy_after": round(sum(after[i][0] for i in ids) / n, 4),
        "better": better,
        "worse": worse,
        "sign_test_p": round(float(binomtest(better, better + worse).pvalue), 4) if better + worse else 1.0,
        "reward_difference": round(sum(diffs) / n, 4),
        "reward_difference_ci95": [round(means[int(0.025 * resamples)], 4), round(means[int(0.975 * resamples) - 1], 4)],
    }


# The run's own held-out pool, evaluated when no benchmark is named (`eval.stage` scores it).
HELDOUT = "heldout"


def summary_line(bench: str, run_name: str, overall: dict[str, Any], unreadable: int = 0, failed: int = 0) -> str:
    """One console line for a benchmark's run (`deepeyes evaluate`, `deepeyes run`): accuracy with
    its 95% interval, samples, tool calls; then, only when non-zero, how many verdicts nobody could
    give (`judge_failed`: counted as not correct), unreadable samples and episodes the endpoint failed.
    With nothing scored (n = 0) the line says so and why, never an accuracy."""
    if not overall["n"]:
        if failed:
            why = f"{failed} failed at the endpoint (the next run asks again)"
        elif unreadable:
            why = f"all {unreadable} unreadable"
        elif bench == HELDOUT:
            why = "the run's eval pool is empty: curate more samples or raise curate.split.eval"
        else:
            why = "the benchmark has none"
        return f"eval {bench} ({run_name}): no samples scored ({why})"
    low, high = overall["ci95"]
    line = (f"eval {bench} ({run_name}): accuracy {overall['accuracy']:.3f} [{low:.2f}, {high:.2f}] on {overall['n']} samples, "
            f"{overall['tool_calls_per_sample']:.2f} tool calls per sample")
    if overall.get("judge_failed"):
        line += f" ({overall['judge_failed']} judge_failed)"
    if unreadable:
        line += f", {unreadable} unreadable"
    if failed:
        line += f"; {failed} failed at the endpoint (left out; the next run asks again)"
    return line
