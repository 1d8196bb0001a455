"""Lineage: what made each stage's output. The flow adds it to the stage's manifest when the
stage ends: the stage's config hash, fingerprints of its inputs, the code's git commit, package
versions, and the stage's counts and time. `deepeyes status RUN` reads it back."""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import subprocess
import time
from pathlib import Path
from typing import Any

from curation.shards import MANIFEST_NAME, atomic_write_json, read_manifest

PACKAGES = ("open-deepeyes", "torch", "transformers", "trl", "datasets", "prefect", "pyarrow", "datasketch", "openai")


def config_hash(config: Any) -> str:
    return hashlib.blake2b(json.dumps(config, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()


def fingerprint(path: str | Path) -> str | None:
    """A shard directory by its manifest (written last, so it names exactly the complete shards);
    a file by its size, modification time and first megabyte."""
    path = Path(path)
    if path.is_dir():
        manifest = path / MANIFEST_NAME
        if manifest.exists():
            return hashlib.blake2b(manifest.read_bytes(), digest_size=12).hexdigest()
        listing = sorted(f"{f.relative_to(path)}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in path.rglob("*") if f.is_file())
        return hashlib.blake2b("\n".join(listing).encode(), digest_size=12).hexdigest()  # e.g. a model checkpoint
    if path.is_file():
        stat = path.stat()
        with open(path, "rb") as handle:
            head = handle.read(1 << 20)
        return hashlib.blake2b(f"{stat.st_size}:{stat.st_mtime_ns}".encode() + head, digest_size=12).hexdigest()
    return None


def git_commit() -> str | None:
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None if done.returncode == 0 else None


def versions() -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    return found


def record(stage_dir: str | Path, stage: str, config: Any, inputs: list[str | Path], seconds: float) -> dict[str, Any]:
    """Add the stage's lineage to its manifest (or write one for a stage without shards)."""
    stage_dir = Path(stage_dir)
    lineage = {
        "stage": stage,
        "config_hash": config_hash(config),
        "inputs": {str(p): fingerprint(p) for p in inputs},
        "git_commit": git_commit(),
        "versions": versions(),
        "seconds": round(seconds, 3),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest = read_manifest(stage_dir) or {"stage": stage, "rows": None}
    manifest["lineage"] = lineage
    stage_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(stage_dir / MANIFEST_NAME, manifest)
    return lineage


STAGE_DIRS = ("world", "curate", "probe", "select", "synthesize", "sft", "grpo", "eval")


def status(run_dir: str | Path) -> list[dict[str, Any]]:
    """Each stage of a run: complete or not, rows, time, config hash, commit, and whether its inputs
    changed since it ran (stale)."""
    run = Path(run_dir)
    rows = []
    for name in STAGE_DIRS:
        manifest = read_manifest(run / name)
        if manifest is None:
            rows.append({"stage": name, "state": "missing" if not (run / name).exists() else "incomplete"})
            continue
        lineage = manifest.get("lineage") or {}
        changed = [p for p, fp in (lineage.get("inputs") or {}).items() if fingerprint(p) != fp]
        rows.append({
            "stage": name,
            "state": "stale" if changed else "complete",
            "rows": manifest.get("rows"),
            "counts": manifest.get("counts"),
            "seconds": lineage.get("seconds"),
            "config_hash": lineage.get("config_hash"),
            "git_commit": (lineage.get("git_commit") or "")[:12] or None,
            "changed_inputs": changed,
        })
    return rows
