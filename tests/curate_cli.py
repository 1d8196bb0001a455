"""`deepeyes curate` in-process, through the CLI's own code: typer parses the arguments and runs the
command, and a user error ends the way `flows.cli.main` ends it (one line, exit 2). Anything else
that escapes is a traceback, and the caller's assertion shows it."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from curation.shards import QUARANTINE_SCHEMA, read_manifest, read_table
from flows.cli import _user_errors, app


@dataclass
class Outcome:
    code: int  # what `deepeyes` would exit with
    stdout: str
    error: str | None  # the one line `main` prints for a user error

    @property
    def summary(self) -> dict[str, Any]:
        return json.loads(self.stdout.strip().splitlines()[-1])


def cli(*args: str) -> Outcome:
    """Any `deepeyes` command in-process, ending as `main` ends a user error (one line, exit 2)."""
    result = CliRunner().invoke(app, list(args))
    exc = result.exception
    if exc is None or isinstance(exc, SystemExit):
        return Outcome(result.exit_code, result.stdout, None)
    if isinstance(exc, _user_errors()):
        return Outcome(2, result.stdout, f"error: {exc}")
    raise AssertionError(f"deepeyes {' '.join(args)} ended with a traceback") from exc


def main_in_process(monkeypatch, capsys, *args: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `deepeyes ARGS` through `flows.cli.main` itself, in-process:
    what a user sees, the one-line error included."""
    import sys

    import pytest

    from flows.cli import main

    monkeypatch.setattr(sys, "argv", ["deepeyes", *args])
    with pytest.raises(SystemExit) as exited:
        main()
    out = capsys.readouterr()
    return exited.value.code, out.out.strip(), out.err.strip()


def curate(*args: str) -> Outcome:
    return cli("curate", *args)


@dataclass
class Accounting:
    rows_in: int
    rows_out: int
    quarantined: list[dict[str, Any]]
    dropped: dict[str, int]  # reason key -> rows, over every step


def accounting(out: Path) -> Accounting:
    """What the run's report, shards and quarantine say about its rows (the curated shards may be
    absent: a run that failed loudly leaves its quarantine and report only)."""
    report = json.loads((out / "report.json").read_text())
    steps = {step["step"]: step for step in report["steps"]}
    dropped: dict[str, int] = {}
    for step in steps.values():
        for reason, n in step["dropped"].items():
            dropped[reason] = dropped.get(reason, 0) + n
    manifest = read_manifest(out)
    rows_out = manifest["rows"] if manifest is not None else 0
    if rows_out:
        assert read_table(out).num_rows == rows_out
    quarantined = read_table(out / "quarantine", QUARANTINE_SCHEMA).to_pylist() if (out / "quarantine").is_dir() else []
    return Accounting(steps.get("validate", {}).get("in", 0), rows_out, quarantined, dropped)


def assert_every_row_counted(out: Path, rows_in: int | None = None) -> Accounting:
    """rows in = rows out + quarantined, each quarantined row with a reason the report counts, and
    no row that only the scan's last-resort handler caught (`row_error`: a case nothing checks)."""
    seen = accounting(out)
    if rows_in is not None:
        assert seen.rows_in == rows_in
    assert seen.rows_in == seen.rows_out + len(seen.quarantined), seen
    reasons: dict[str, int] = {}
    for row in seen.quarantined:
        assert row["reason"].strip(), row
        key = row["reason"].split(":", 1)[0]
        reasons[key] = reasons.get(key, 0) + 1
    assert reasons == seen.dropped
    assert "row_error" not in reasons, [r for r in seen.quarantined if r["reason"].startswith("row_error")][:3]
    return seen
