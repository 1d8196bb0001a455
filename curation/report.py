"""The curation report: rows in, out and dropped per step and reason, per source and category.

Written next to each stage's shards as `report.json` and `report.md`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from curation.shards import atomic_write_json

WARNINGS = "warnings"  # the extra holding one line per thing a user must know (a benchmark read in part)


class StepReport:
    """Counts for one run of the steps, keyed by what the rows were (source, category)."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.steps: dict[str, dict[str, Any]] = {}
        self.by_source: dict[str, dict[str, Any]] = {}
        self.by_category: dict[str, dict[str, Any]] = {}
        self.extra: dict[str, Any] = {}

    def _step(self, step: str) -> dict[str, Any]:
        return self.steps.setdefault(step, {"in": 0, "out": 0, "dropped": {}})

    @staticmethod
    def _bump(table: dict[str, dict[str, Any]], key: str | None, field: str, reason: str | None = None) -> None:
        if key is None:
            return
        entry = table.setdefault(key, {"in": 0, "out": 0, "dropped": {}})
        if reason is None:
            entry[field] += 1
        else:
            entry["dropped"][reason] = entry["dropped"].get(reason, 0) + 1

    def entered(self, source: str, category: str | None) -> None:
        """A row read from a source (its category, when the row has a readable one)."""
        self._bump(self.by_source, source, "in")
        self._bump(self.by_category, category or "unknown", "in")

    def seen(self, step: str) -> None:
        self._step(step)["in"] += 1

    def kept(self, step: str) -> None:
        self._step(step)["out"] += 1

    def dropped(self, step: str, reason: str, source: str | None = None, category: str | None = None) -> None:
        key = reason.split(":", 1)[0]
        dropped = self._step(step)["dropped"]
        dropped[key] = dropped.get(key, 0) + 1
        self._bump(self.by_source, source, "dropped", key)
        self._bump(self.by_category, category or ("unknown" if source else None), "dropped", key)

    def out(self, source: str, category: str) -> None:
        """A row that made it through every step."""
        self._bump(self.by_source, source, "out")
        self._bump(self.by_category, category, "out")

    def state(self) -> dict[str, Any]:
        """The raw counts, for `merge` (a stage run as parallel parts reports as one)."""
        return {"steps": self.steps, "by_source": self.by_source, "by_category": self.by_category, "extra": self.extra}

    def merge(self, state: dict[str, Any]) -> None:
        """Add the counts of another part's `state()`."""
        for name, counts in state["steps"].items():
            self._add(self._step(name), counts)
        for mine, theirs in ((self.by_source, state["by_source"]), (self.by_category, state["by_category"])):
            for key, counts in theirs.items():
                self._add(mine.setdefault(key, {"in": 0, "out": 0, "dropped": {}}), counts)
        for key, value in state["extra"].items():  # per-source breakdowns: dicts of counts
            if isinstance(value, dict) and isinstance(self.extra.get(key), dict):
                self.extra[key] = {**self.extra[key], **value}
            else:
                self.extra[key] = value

    @staticmethod
    def _add(into: dict[str, Any], counts: dict[str, Any]) -> None:
        into["in"] += counts["in"]
        into["out"] += counts["out"]
        for reason, n in counts["dropped"].items():
            into["dropped"][reason] = into["dropped"].get(reason, 0) + n

    def to_dict(self) -> dict[str, Any]:
        steps = [{"step": name, **counts} for name, counts in self.steps.items()]
        return {"stage": self.stage, "steps": steps, "by_source": self.by_source, "by_category": self.by_category, **self.extra}

    def write(self, out_dir: str | Path) -> dict[str, Any]:
        report = self.to_dict()
        atomic_write_json(Path(out_dir) / "report.json", report)
        (Path(out_dir) / "report.md").write_text(render_markdown(report))
        return report


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return lines


def _reasons(dropped: dict[str, int]) -> str:
    return ", ".join(f"{reason} {count}" for reason, count in sorted(dropped.items(), key=lambda kv: -kv[1])) or "—"


def render_markdown(report: dict[str, Any]) -> str:
    lines = [f"# {report['stage'].capitalize()} report", ""]
    if report.get(WARNINGS):
        lines += ["## Warnings", "", *(f"- {warning}" for warning in report[WARNINGS]), ""]
    lines += ["## Steps", ""]
    lines += _table(["step", "in", "out", "dropped", "why"],
                    [[s["step"], s["in"], s["out"], sum(s["dropped"].values()), _reasons(s["dropped"])] for s in report["steps"]])
    for title, key in (("By source", "by_source"), ("By category", "by_category")):
        lines += ["", f"## {title}", ""]
        lines += _table([key.removeprefix("by_"), "in", "out", "dropped", "why"],
                        [[name, e["in"], e["out"], sum(e["dropped"].values()), _reasons(e["dropped"])] for name, e in sorted(report[key].items())])
    for key, value in report.items():
        if key in ("stage", "steps", "by_source", "by_category", WARNINGS):
            continue
        lines += ["", f"## {key.replace('_', ' ').capitalize()}", ""]
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            header = list(value[0])
            lines += _table(header, [[v.get(h, "") for h in header] for v in value[:500]])
            if len(value) > 500:
                lines.append(f"\n… and {len(value) - 500} more (report.json has them all)")
        elif isinstance(value, dict) and value and all(not isinstance(v, (dict, list)) for v in value.values()):
            lines += _table(["", "value"], [[k, v] for k, v in value.items()])
        elif value in ({}, []):
            lines.append("none")
        else:
            lines += ["```json", json.dumps(value, indent=2, default=str), "```"]
    return "\n".join(lines) + "\n"
