"""Lineage: what made each stage's output. The flow adds it to the stage's manifest when the
stage ends: the stage's config hash, fingerprints of its inputs, the code's git commit, package
versions, and the stage's counts and time. `deepeyes status RUN` reads it back.

A stage's inputs are of two kinds. Declared inputs (a source file, an earlier stage's shards) are
known before the stage runs and make its cache key. Files found while it runs (the images a
source's rows point to, a benchmark's images) are recorded beside the manifest
(`_read_files.json`, each file's size and modification time, cheap to check for millions); a
change in any of them makes the output stale and re-runs the stage.

The run directory itself keeps `run.json`, written when a flow starts: the config the run was
started with and the stage directories it plans, so that `status` tells a stage the config does not
have (`not in config`) from one that has not run yet (`missing`).

Each lineage records where its output was written (`out_dir`): `status` of a run directory moved or
copied since reads the paths recorded under the old place under the new one (`moved_from`,
`rerooted`). Cache keys are not touched by this: they hold the input paths as written."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import logging
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from curation.shards import MANIFEST_NAME, CorruptManifest, atomic_write_json
from curation.shards import read_manifest as read_shard_manifest
from curation.validation_errors import json_read_problem

RUN_RECORD_NAME = "run.json"  # in the run directory: the config a flow was started with and the stages it plans
RUN_RECORD_FORMAT = "run/1"
READ_FILES_NAME = "_read_files.json"  # the files a stage found and read while it ran, with their stamps
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


def file_stamp(path: str | Path) -> str | None:
    """A file by its size and modification time (None when missing): what a replaced or edited
    file changes, without reading it."""
    try:
        stat = os.stat(path)
    except (OSError, ValueError):
        return None
    return f"{stat.st_size}:{stat.st_mtime_ns}"


logger = logging.getLogger(__name__)


def read_manifest(stage_dir: str | Path) -> dict[str, Any] | None:
    """A stage output's manifest, or None when it is missing or corrupt, as the flow that writes the
    stage reads its own output (the cache check): a corrupt one (see `curation.shards.CorruptManifest`)
    makes the output incomplete, so the stage runs again and writes a new one; the warning names the
    file. A flow that reads another flow's output reads it with `flows.stage_inputs.input_manifest`,
    which refuses a corrupt one instead (that flow does not run the stage again)."""
    manifest, problem = _manifest_or_problem(stage_dir)
    if problem:
        logger.warning("%s; the stage runs again", problem)
    return manifest


def _manifest_or_problem(stage_dir: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """The manifest (or None), and why it cannot be read when it is corrupt (else None)."""
    try:
        return read_shard_manifest(stage_dir), None
    except CorruptManifest as exc:
        return None, f"{exc.path}: corrupt manifest ({exc.why})"


def changed_read_files(stage_dir: str | Path, limit: int | None = None, moved: tuple[Path, Path] | None = None) -> list[str]:
    """The files the output in `stage_dir` read while it ran that changed (or appeared, or went)
    since; at most `limit` of them. `moved`: `(old, new)` when the run directory was moved or
    copied from `old` to `new` (see `rerooted`): a recorded file under `old` is judged at `new`."""
    stage_dir = Path(stage_dir)
    recorded = ((read_manifest(stage_dir) or {}).get("lineage") or {}).get("read_files")
    if not recorded:
        return []
    try:
        stamps = json.loads((stage_dir / recorded["file"]).read_text())
    except (OSError, ValueError):
        return [str(stage_dir / recorded["file"])]  # the record itself is gone: nothing can be trusted
    if hashlib.blake2b(json.dumps(stamps, sort_keys=True).encode(), digest_size=12).hexdigest() != recorded.get("digest"):
        return [str(stage_dir / recorded["file"])]
    changed = []
    for path, stamp in stamps.items():
        if file_stamp(rerooted(path, moved)) != stamp:
            changed.append(str(rerooted(path, moved)))
            if limit is not None and len(changed) >= limit:
                break
    return changed


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


CODE_PACKAGES = ("curation", "synth", "train", "eval", "flows", "configs")


def code_digest(root: str | Path) -> str:
    """A digest of the pipeline's own code and data files under `root` (the packages' `.py`,
    `.txt` and `.yaml` files: prompts, protocol profiles, benchmark definitions). The example
    configs in `configs/` are not in it, only that package's code: a run's config reaches each
    stage's key through the stage's own config hash, so editing `configs/fidelity.yaml`'s GRPO
    section re-runs GRPO and what follows, not the world and every stage before it."""
    root = Path(root)
    digest = hashlib.blake2b(digest_size=12)
    for package in CODE_PACKAGES:
        for file in sorted((root / package).rglob("*")):
            if file.suffix not in (".py", ".txt", ".yaml") or "__pycache__" in file.parts:
                continue
            if package == "configs" and file.suffix == ".yaml":
                continue
            digest.update(str(file.relative_to(root)).encode() + b"\0" + file.read_bytes())
    return digest.hexdigest()


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """This checkout's `code_digest`: a change in any code or data file is a new version (git
    commits miss uncommitted edits; this does not)."""
    return code_digest(Path(__file__).resolve().parent.parent)


def stage_key(stage: str, config: Any, inputs: list[str | Path]) -> str:
    """What a stage's output depends on: its config, its inputs' fingerprints, the code."""
    parts = {"stage": stage, "config": config_hash(config), "inputs": {str(p): fingerprint(p) for p in inputs}, "code": code_version()}
    return hashlib.blake2b(json.dumps(parts, sort_keys=True).encode(), digest_size=16).hexdigest()


def recorded_key(stage_dir: str | Path) -> str | None:
    """The key the output in `stage_dir` was made under; None when it is missing or incomplete."""
    return ((read_manifest(stage_dir) or {}).get("lineage") or {}).get("key")


def recorded_result(stage_dir: str | Path) -> Any | None:
    """The result the stage's last complete run recorded; None when it has none (a corrupt manifest
    warns, as `read_manifest`). The next flow reads its checkpoint path with `flows.stage_inputs.input_result`."""
    return ((read_manifest(stage_dir) or {}).get("lineage") or {}).get("result")


def record(
    stage_dir: str | Path, stage: str, config: Any, inputs: list[str | Path], seconds: float, key: str | None = None, result: Any = None,
    read_files: list[str] | None = None,
) -> dict[str, Any]:
    """Add the stage's lineage (and, for the cache, its key and result) to its manifest, or write one
    for a stage without shards. `read_files`: the files the stage found and read while it ran,
    stamped into `_read_files.json` beside the manifest. The lineage keeps `stage_dir` as given
    (`out_dir`), so that `status` can tell a moved run. Returns the lineage dict."""
    stage_dir = Path(stage_dir)
    stage_dir.mkdir(parents=True, exist_ok=True)
    read = None
    if read_files:
        stamps = {str(p): file_stamp(p) for p in sorted(set(map(str, read_files)))}
        atomic_write_json(stage_dir / READ_FILES_NAME, stamps)
        digest = hashlib.blake2b(json.dumps(stamps, sort_keys=True).encode(), digest_size=12).hexdigest()
        read = {"file": READ_FILES_NAME, "count": len(stamps), "digest": digest}
    else:
        (stage_dir / READ_FILES_NAME).unlink(missing_ok=True)
    lineage = {
        "stage": stage,
        "out_dir": str(stage_dir),  # where it was written: `status` of a moved run re-roots the paths below onto the new place
        "key": key,
        "result": json.loads(json.dumps(result, default=str)),
        "code_version": code_version(),
        "config_hash": config_hash(config),
        "inputs": {str(p): fingerprint(p) for p in inputs},
        "read_files": read,
        "git_commit": git_commit(),
        "versions": versions(),
        "seconds": round(seconds, 3),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest = _manifest_or_problem(stage_dir)[0] or {"stage": stage, "rows": None}  # a corrupt one is replaced (said by the cache check)
    manifest["lineage"] = lineage
    atomic_write_json(stage_dir / MANIFEST_NAME, manifest)
    return lineage


# In the flow's order (`run.json`'s `stages`): `model-base`, the tiny model the flow builds when `sft.model_path` is not set;
# `base`, the instruct stage (`base:` in the config), trains it into the model SFT starts from.
STAGE_DIRS = ("world", "curate", "probe", "select", "synthesize", "model-base", "base", "sft", "grpo", "eval")
# The flow (`deepeyes run --flow F`; `retrain` runs them all) that writes each stage directory.
FLOW_OF_DIR = {"world": "curate", "curate": "curate", "probe": "curate", "select": "curate", "synthesize": "synthesize",
               "model-base": "train_sft", "base": "train_sft", "sft": "train_sft", "grpo": "train_grpo", "eval": "evaluate"}


def rerooted(path: str | Path, moved: tuple[Path, Path] | None) -> Path:
    """`path` as recorded, or, when `moved` is `(old, new)` and `path` lies under `old` (the run
    directory's recorded place), the same file under `new` (where it is now). A path outside `old`
    (a source, a config, a benchmark's data) is left as it is."""
    path = Path(path)
    if moved is None:
        return path
    try:
        return moved[1] / path.relative_to(moved[0])
    except ValueError:
        return path


def moved_from(run: str | Path) -> tuple[Path, Path] | None:
    """`(old, run)` when the stage outputs in `run` were written at `old` (the run directory was
    moved or copied since); None when they were written where they are, or nothing says. The old
    place is each stage's recorded `out_dir` (`<old>/<stage>`), or, for outputs recorded before it
    was, the prefix of recorded inputs that name a stage directory `run` holds (`<old>/synthesize`
    read by SFT): the most common one wins."""
    run = Path(run)
    votes: dict[Path, int] = {}
    for name in STAGE_DIRS:
        lineage = ((_manifest_or_problem(run / name)[0] or {}).get("lineage")) or {}
        out = lineage.get("out_dir")
        if isinstance(out, str) and Path(out).name == name:
            votes[Path(out).parent] = votes.get(Path(out).parent, 0) + 1000  # what the stage itself recorded outweighs guesses
            continue
        for recorded in lineage.get("inputs") or {}:
            parts = Path(recorded).parts
            for i in range(1, len(parts)):
                if parts[i] in STAGE_DIRS and (run / Path(*parts[i:])).exists():
                    old = Path(*parts[:i])
                    votes[old] = votes.get(old, 0) + 1
                    break
    if not votes:
        return None
    old = max(votes, key=votes.__getitem__)
    try:
        same = old.resolve() == run.resolve()
    except OSError:
        same = False
    return None if same or old == run else (old, run)


def changed_inputs(lineage: dict[str, Any], depth: int = 4, stage_dir: str | Path | None = None,
                   moved: tuple[Path, Path] | None = None) -> list[str]:
    """The inputs that changed since the output was made: its declared inputs, the files it read
    while it ran (when `stage_dir`, the output's directory, is given), and the same for inputs
    that are themselves outputs with lineage (a stage's parts: an image a curate scan read counts).
    An input that is gone is named with ` (missing)`. `moved`: see `rerooted` (a moved run's own
    files are judged where they are now, and named there)."""
    changed = changed_read_files(stage_dir, limit=100, moved=moved) if stage_dir is not None else []
    for recorded_path, recorded in (lineage.get("inputs") or {}).items():
        path = rerooted(recorded_path, moved)
        now = fingerprint(path)
        if now != recorded:
            changed.append(f"{path} (missing)" if now is None and recorded is not None else str(path))
        elif depth and path.is_dir():
            inner = ((_manifest_or_problem(path)[0] or {}).get("lineage")) or {}  # read, not run: no warning
            changed += changed_inputs(inner, depth - 1, path, moved)
    return changed


def failed_in(result: Any) -> int:
    """Samples (synthesis), attempts (probes) or episodes (evaluation) a stage's endpoint failed, from
    its result or its manifest's counts: `failed` or `failed_attempts`, at the top or under `counts`."""
    if not isinstance(result, dict):
        return 0
    found = 0
    inner = result.get("counts") if isinstance(result.get("counts"), dict) else {}
    for source in (result, inner):
        for key in ("failed", "failed_attempts"):
            value = source.get(key)
            if isinstance(value, int) and not isinstance(value, bool):
                found = max(found, value)
    return found


def failed_count(manifest: dict[str, Any]) -> int:
    """What the stage's endpoint failed (`failed_in`), from its manifest's counts or its recorded
    result: an output with any is not a complete one."""
    return max(failed_in(manifest.get("counts")), failed_in((manifest.get("lineage") or {}).get("result")))


def _stage_of(path: Path, run: Path) -> str | None:
    """The run's stage whose directory holds `path` (None for a path outside the run's stages)."""
    try:
        first = path.resolve().relative_to(run.resolve()).parts[:1]
    except (ValueError, OSError):
        return None
    return first[0] if first and first[0] in STAGE_DIRS else None


def upstream_stages(lineage: dict[str, Any], run: Path, own: str, depth: int = 4, moved: tuple[Path, Path] | None = None) -> set[str]:
    """The run's stages whose outputs this output was made from: its inputs inside another stage's
    directory, also through the inputs of its own parts (`probe/_shards/part-00000` read
    `curate/part-00000.parquet`). `moved`: see `rerooted`."""
    found: set[str] = set()
    for recorded_path in lineage.get("inputs") or {}:
        path = rerooted(recorded_path, moved)
        stage = _stage_of(path, run)
        if stage is not None and stage != own:
            found.add(stage)
        elif depth and path.is_dir():
            part, _ = _manifest_or_problem(path)
            found |= upstream_stages((part or {}).get("lineage") or {}, run, own, depth - 1, moved)
    return found


def record_run(run_dir: str | Path, config: dict[str, Any], stages: list[str], command: str | None = None) -> bool:
    """Write `run.json` in the run directory: the config (as a JSON dict) a flow was started with,
    its hash, and `stages`, the directories of the stages the config plans (`world`, `curate`, ...,
    `eval`, in pipeline order). `command`: the one-stage command that wrote the directory instead
    of a flow (`evaluate`: `deepeyes evaluate --out DIR`), recorded as `command`. The last flow
    started in a run directory wins. A record with the same config and stages is left as it is (an
    unchanged re-run changes no file). Returns whether the file was written."""
    run = Path(run_dir)
    record = {"format": RUN_RECORD_FORMAT, "config_hash": config_hash(config), "stages": list(stages),
              "config": json.loads(json.dumps(config, default=str)), **({"command": command} if command else {})}
    old = read_run_record(run)
    if old is not None and {k: v for k, v in old.items() if k != "recorded_at"} == record:
        return False
    run.mkdir(parents=True, exist_ok=True)
    atomic_write_json(run / RUN_RECORD_NAME, {**record, "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return True


def _load_run_record(run_dir: str | Path) -> tuple[dict[str, Any] | None, str | None]:
    """The run directory's `run.json` and why it cannot be used: `(record, None)`, `(None, problem)`,
    or `(None, None)` when there is none."""
    path = Path(run_dir) / RUN_RECORD_NAME
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError) as exc:
        return None, f"{path}: not readable as JSON ({json_read_problem(exc)[:120]})"
    stages = record.get("stages") if isinstance(record, dict) else None
    if not isinstance(stages, list) or not all(isinstance(s, str) for s in stages):
        return None, f"{path}: not a run record (`stages` should be a list of the stage directories the run plans: world, curate, ...)"
    return record, None


def run_record_problem(run_dir: str | Path) -> str | None:
    """Why the run directory's `run.json` cannot be used (not JSON, not an object, `stages` not a
    list of stage directory names), or None when it can or there is none."""
    return _load_run_record(run_dir)[1]


def read_run_record(run_dir: str | Path) -> dict[str, Any] | None:
    """The run directory's `run.json` (see `record_run`), or None when there is none or it cannot be
    used (a run directory written before the record existed; a truncated or foreign file, which
    `run_record_problem` describes): callers then know nothing of what the run was configured to do."""
    return _load_run_record(run_dir)[0]


def record_command_run(run_dir: str | Path, command: str, config: dict[str, Any], stages: list[str]) -> bool:
    """`run.json` for a directory a one-stage command writes (`deepeyes evaluate --out DIR`: its
    `eval/`), so that `status` shows only what the command makes (see `record_run`). A directory a
    flow runs in keeps its own record (the command's stage is one its config plans), as does one
    from before `run.json` holding another stage's output. Returns whether the file was written."""
    run = Path(run_dir)
    old = read_run_record(run)
    if old is not None and old.get("command") != command:
        return False
    if old is None and any((run / name).exists() for name in STAGE_DIRS if name not in stages):
        return False
    return record_run(run, config, stages, command)


def _stage_row(name: str, stage_dir: Path, run: Path, stale: set[str], configured: dict[str, Any],
               moved: tuple[Path, Path] | None = None) -> dict[str, Any]:
    """One stage's status row (see `status`); `stale` gathers the stale stages, in pipeline order;
    `moved`: the run directory's recorded and present places (`moved_from`), or None."""
    manifest, problem = _manifest_or_problem(stage_dir)
    # A stage trained through `training.command` kept its launcher's output there (a failed one too).
    launch_log = stage_dir / f"launch-{name}.log"
    launched = {"launch_log": str(launch_log)} if launch_log.is_file() else {}
    if manifest is None:
        if not stage_dir.exists():
            state = "missing" if not configured else "not in config"
        elif not problem and (row := unrecorded_row(stage_dir, name)) is not None:
            return {**row, **configured, **launched}
        else:
            state = "corrupt" if problem else "incomplete"
        return {"stage": name, "state": state, **configured, **launched, **({"problem": problem} if problem else {})}
    lineage = manifest.get("lineage") or {}
    changed = changed_inputs(lineage, stage_dir=stage_dir, moved=moved)
    changed += [f"{up} (stale)" for up in sorted(upstream_stages(lineage, run, name, moved=moved) & stale, key=STAGE_DIRS.index)]
    failed = failed_count(manifest)
    if changed:
        stale.add(name)
    return {
        "stage": name,
        "state": "stale" if changed else "partial" if failed else "complete",
        **_rows_held(name, manifest, stage_dir),
        "counts": manifest.get("counts"),
        "failed": failed,
        # A stage's own folder (`curate --out`) has no lineage: its `seconds_total`, not the shard writer's `seconds`
        "seconds": lineage.get("seconds", manifest.get("seconds_total", manifest.get("seconds"))),
        "config_hash": lineage.get("config_hash"),
        "git_commit": (lineage.get("git_commit") or "")[:12] or None,
        "changed_inputs": changed,
        **configured,
        **launched,
    }


def unrecorded_row(stage_dir: str | Path, name: str | None = None) -> dict[str, Any] | None:
    """The status row of a finished stage output that has no manifest because no flow or command
    recorded it: a folder written by calling `eval.stage.run_evaluate` or `train.grpo.run_grpo`
    directly (`python -m bench.fidelity`'s arm folders `base/eval`, `rl_only/grpo`). An evaluation
    is finished when its `metrics.json` (written last) scored at least one episode (every episode
    failed: the call raised, the output is `incomplete`); a training output when its `checkpoint/`
    holds `config.json`, weights and tokenizer or processor files (saved at its end). The row is
    `complete` (`partial` when the endpoint failed episodes), with the rows and seconds those files
    tell, and `unrecorded: True`: no lineage, so nothing says whether an input changed since. None
    for any other folder. `name`: the row's stage name (default: `eval`, or the training stage,
    `grpo` when `dynamics.jsonl` is there, else the folder's name)."""
    out = Path(stage_dir)
    try:
        metrics = json.loads((out / "metrics.json").read_text())
    except (OSError, ValueError):
        metrics = None
    if isinstance(metrics, dict) and isinstance(metrics.get("benchmarks"), dict):
        held = _rows_held("eval", {"stage": "evaluate", "lineage": {"result": metrics}}, out)
        if not held["rows"]:
            return None
        failed = failed_in(metrics)
        seconds = metrics.get("seconds") if isinstance(metrics.get("seconds"), (int, float)) else None
        return {"stage": name or "eval", "state": "partial" if failed else "complete", **held, "counts": None, "failed": failed,
                "seconds": seconds, "config_hash": None, "git_commit": None, "changed_inputs": [], "unrecorded": True}
    from eval.stage import check_checkpoint  # the one rule for what a saved checkpoint holds

    try:
        check_checkpoint(out / "checkpoint")
    except FileNotFoundError:
        return None
    stage = name or ("grpo" if (out / "dynamics.jsonl").is_file() else out.name)
    return {"stage": stage, "state": "complete", "rows": None, "counts": None, "failed": 0, "seconds": None, "config_hash": None,
            "git_commit": None, "changed_inputs": [], "unrecorded": True}


def _rows_held(name: str, manifest: dict[str, Any], stage_dir: Path) -> dict[str, Any]:
    """`rows`: what a finished stage holds. A stage that writes shards counts its rows in its manifest;
    for the others, its recorded result: the world's samples, the base (instruct) stage's and SFT's
    training rows (the base's: its instruct trajectories and long-CoT rows), GRPO's prompts,
    eval's samples scored (per benchmark the most any of its runs scored: the tool-free control
    scores the same samples again). `also`: the world's other rows (`["100 long-CoT rows"]`, its
    instruct samples and its over-user's `direct` samples where it has any; a world
    recorded before `long_cot_rows` was, counted in its `long_cot.jsonl`). None where nothing says."""
    if isinstance(manifest.get("rows"), int):
        return {"rows": manifest["rows"]}
    result = (manifest.get("lineage") or {}).get("result")
    if not isinstance(result, dict):
        return {"rows": None}
    stage = manifest.get("stage", name)

    def count(key: str) -> int | None:
        return result[key] if isinstance(result.get(key), int) and not isinstance(result.get(key), bool) else None

    if stage == "world":
        long_cot = count("long_cot_rows")
        if long_cot is None and (path := stage_dir / "long_cot.jsonl").is_file():
            with path.open("rb") as lines:
                long_cot = sum(1 for line in lines if line.strip())
        needless = f"a needless {result['needless_tool']} call" if result.get("needless_tool") in ("code", "search") else "a needless call"
        also = [f"{n} {what}" for n, what in ((long_cot, "long-CoT rows"), (count("instruct_samples"), "instruct samples"),
                                             (count("over_used_direct"), f"direct samples with {needless}"))
                if n is not None and (n or what == "long-CoT rows")]
        return {"rows": count("samples"), **({"also": also} if also else {})}
    if stage == "sft":
        return {"rows": count("rows")}
    if stage == "base":  # its SFT's rows: the instruct model's kept trajectories and the long-CoT rows
        sft = result.get("sft")
        rows = sft.get("rows") if isinstance(sft, dict) else None
        return {"rows": rows if isinstance(rows, int) and not isinstance(rows, bool) else None}
    if stage == "grpo":
        return {"rows": count("prompts")}
    if stage == "evaluate" and isinstance(result.get("benchmarks"), dict):
        scored = []
        for bench in result["benchmarks"].values():
            runs = bench.get("runs") if isinstance(bench, dict) else None
            ns = [r["overall"]["n"] for r in (runs or {}).values()
                  if isinstance(r, dict) and isinstance(r.get("overall"), dict) and isinstance(r["overall"].get("n"), int)]
            scored.append(max(ns, default=0))
        return {"rows": sum(scored) if scored else None}
    return {"rows": None}


def status(run_dir: str | Path) -> list[dict[str, Any]]:
    """Each stage of a run: its state, rows, time, config hash, commit, and the inputs that changed
    since it ran. States: `missing`, `incomplete` (no manifest: it did not finish), `stale` (an
    input changed since, or a stage it was made from is stale: staleness runs down the chain),
    `partial` (finished, but its endpoint failed `failed` samples, attempts or episodes: not a
    complete cache entry; the next run sends those again), `complete`, and `not in config` (no output,
    and the run's config, recorded in `run.json`, has no such stage: it is not part of this run). A
    stage the config does not plan but whose output is there (an earlier config's) keeps its state
    and has `configured: False`. A run directory without a usable `run.json` (written before it
    existed, or a broken one: `run_record_problem`) shows every absent stage as `missing`.

    A run directory moved or copied elsewhere (`mv`, `cp -a`: modification times kept) is judged
    where it is: the paths its manifests recorded under its old place are read under `run_dir`
    (`moved_from`, `rerooted`); an input outside it (a source, a config) that is gone is named in
    `changed_inputs` with ` (missing)`. A stage folder without a manifest that holds a finished
    output written outside a flow (`unrecorded_row`) is `complete` with `unrecorded: True`."""
    run = Path(run_dir)
    record = read_run_record(run)
    planned = set(record["stages"]) if record is not None else None
    stale: set[str] = set()
    moved = moved_from(run)
    # In pipeline order: a stage's inputs come before it.
    return [_stage_row(name, run / name, run, stale, {} if planned is None or name in planned else {"configured": False}, moved)
            for name in STAGE_DIRS]


def stage_output_status(out_dir: str | Path) -> dict[str, Any] | None:
    """The status row (see `status`) of a folder that is one stage's output rather than a run
    directory, as `deepeyes curate --out` (and `probe`, `select`, `synth`) write it: a
    `_manifest.json` naming its `stage` at the top; or a finished output without one, written by
    calling a stage's function directly (`unrecorded_row`: a fidelity bench's `base/eval`). A
    folder moved since it was written is judged where it is (its manifest's `out_dir`). None for
    any other folder."""
    out = Path(out_dir)
    manifest, problem = _manifest_or_problem(out)
    if problem:
        return {"stage": "output", "state": "corrupt", "problem": problem}
    if manifest is None:
        return _stopped_stage_row(out) or unrecorded_row(out)
    if not isinstance(manifest.get("stage"), str):
        return None
    recorded = (manifest.get("lineage") or {}).get("out_dir")
    moved = (Path(recorded), out) if isinstance(recorded, str) and Path(recorded) != out else None
    return _stage_row(manifest["stage"], out, out, set(), {}, moved)


def _stopped_stage_row(out: Path) -> dict[str, Any] | None:
    """The status row of a stage's folder that a command left without a manifest (`deepeyes curate
    --out` that stopped: every row unusable, nothing left): `incomplete`, with the `stopped: ...`
    reason its `report.json` keeps; None where there is no such report."""
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or not isinstance(report.get("stage"), str):
        return None
    warnings = report.get("warnings") if isinstance(report.get("warnings"), list) else []
    stopped = next((w for w in warnings if isinstance(w, str) and w.startswith("stopped: ")), None)
    return {"stage": report["stage"], "state": "incomplete", "stopped": stopped or "it did not finish (no manifest)"}
