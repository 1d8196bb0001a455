"""Parquet shard I/O: atomic `part-*.parquet` files, a `_manifest.json`, a reader, a quarantine.

A shard is written under a hidden temporary name and renamed into place, so a killed run never
leaves a half-written `part-*.parquet` that a reader would pick up.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from curation.validation_errors import json_read_problem, json_type_name

MANIFEST_NAME = "_manifest.json"
QUARANTINE_DIR = "quarantine"

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("stage", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("origin", pa.string()),  # file, source or sample id the row came from
        pa.field("row", pa.string()),  # the rejected row as JSON (bytes summarized)
    ]
)


class ShardError(Exception):
    """A shard directory or file that cannot be read as asked."""


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


class ShardWriter:
    """Buffers rows and writes them as `part-NNNNN.parquet` shards of at most `rows_per_shard` rows.

    Use as a context manager; on a clean exit the manifest is written last, so a directory with a
    manifest is complete. `manifest_extra` lands in the manifest (config hash, inputs, timings).
    """

    def __init__(
        self,
        out_dir: str | Path,
        schema: pa.Schema,
        *,
        rows_per_shard: int = 1000,
        prefix: str = "part",
    ) -> None:
        self.out_dir = Path(out_dir)
        self.schema = schema
        self.rows_per_shard = rows_per_shard
        self.prefix = prefix
        self.manifest_extra: dict[str, Any] = {}
        self._buffer: list[dict[str, Any]] = []
        self._shards: list[dict[str, Any]] = []
        self._started = time.time()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # A re-run replaces the stage's output: stale shards of an earlier run must not mix in.
        for stale in [*self.out_dir.glob(f"{prefix}-*.parquet"), self.out_dir / MANIFEST_NAME]:
            stale.unlink(missing_ok=True)

    @property
    def rows_written(self) -> int:
        return sum(s["rows"] for s in self._shards) + len(self._buffer)

    def write(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        if len(self._buffer) >= self.rows_per_shard:
            self.flush()

    def write_many(self, rows: Iterable[dict[str, Any]]) -> None:
        for row in rows:
            self.write(row)

    def flush(self) -> None:
        if not self._buffer:
            return
        table = pa.Table.from_pylist(self._buffer, schema=self.schema)
        name = f"{self.prefix}-{len(self._shards):05d}.parquet"
        final = self.out_dir / name
        tmp = self.out_dir / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        pq.write_table(table, tmp)
        os.replace(tmp, final)
        self._shards.append({"file": name, "rows": table.num_rows})
        self._buffer = []

    def adopt(self, shard_dir: str | Path) -> int:
        """Take over the complete shards of another directory as this writer's next shards: hard
        links (a copy across file systems), so the source stays intact (it may be a cached task's
        output). Returns the rows taken over."""
        self.flush()
        manifest = read_manifest(shard_dir)
        if manifest is None:
            raise ShardError(f"{shard_dir}: incomplete shard directory (no {MANIFEST_NAME})")
        for entry in manifest["shards"]:
            name = f"{self.prefix}-{len(self._shards):05d}.parquet"
            source, target = Path(shard_dir) / entry["file"], self.out_dir / name
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
            self._shards.append({"file": name, "rows": entry["rows"]})
        return sum(entry["rows"] for entry in manifest["shards"])

    def close(self) -> dict[str, Any]:
        self.flush()
        manifest = {
            "schema_version": (self.schema.metadata or {}).get(b"deepeyes_schema_version", b"").decode(),
            "rows": sum(s["rows"] for s in self._shards),
            "shards": self._shards,
            "seconds": round(time.time() - self._started, 3),
            **self.manifest_extra,
        }
        atomic_write_json(self.out_dir / MANIFEST_NAME, manifest)
        return manifest

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # On an error, keep what was flushed but write no manifest: the directory is incomplete.
        if exc_type is None:
            self.close()


def shard_files(path: str | Path) -> list[Path]:
    """The complete `part-*.parquet` files of a shard directory (or the file itself), sorted."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise ShardError(f"shard directory not found: {path}")
    return sorted(p for p in path.glob("*.parquet") if not p.name.startswith("."))


def read_table(path: str | Path, schema: pa.Schema | None = None) -> pa.Table:
    """All shards of a directory as one Arrow table (empty table of `schema` when there are none)."""
    files = shard_files(path)
    if not files:
        if schema is None:
            raise ShardError(f"no parquet shards in {path}")
        return schema.empty_table()
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file, schema=schema))
        except (pa.ArrowInvalid, OSError) as exc:
            raise ShardError(f"cannot read shard {file}: {exc}") from exc
    return pa.concat_tables(tables)


def check_input_shards(path: str | Path, schema: pa.Schema, option: str, what: str, made_by: str) -> list[Path]:
    """The shards a command's input option points at, checked before any work: a folder that holds
    `part-*.parquet` files (or one such file), each readable Parquet with the schema's required
    (non-nullable) columns. Returns the files; raises `ShardError` in one line naming the option and
    the file: no shards in the folder, a file that is not Parquet (a JSONL file: run `made_by` on it
    first), or shards of another kind (the missing columns and the schema version they carry).
    `what`: the rows expected, e.g. "curated samples"; `made_by`: the command that writes them."""
    path = Path(path)
    files = shard_files(path)
    if not files:
        raise ShardError(f"{option} {path}: no parquet shards in this folder (it should hold the part-*.parquet "
                         f"{what} that `{made_by}` writes)")
    required = [field.name for field in schema if not field.nullable]
    for file in files:
        try:
            have = pq.read_schema(file)
        except (pa.ArrowInvalid, OSError) as exc:
            why = str(exc).split(". ")[0].strip().rstrip(".")
            raise ShardError(f"{option}: cannot read shard {file}: {why} (it takes the parquet {what} that `{made_by}` writes; "
                             f"run `{made_by}` on a JSONL or other source file first)") from None
        missing = [name for name in required if name not in have.names]
        if missing:
            version = (have.metadata or {}).get(b"deepeyes_schema_version", b"").decode() or "no deepeyes schema version"
            expected = (schema.metadata or {}).get(b"deepeyes_schema_version", b"").decode()
            raise ShardError(f"{option}: {file} holds no {what} ({version}, not {expected}): missing column(s) "
                             f"{', '.join(missing)} (it takes the parquet shards that `{made_by}` writes)")
    return files


def iter_rows(path: str | Path, schema: pa.Schema | None = None) -> Iterator[dict[str, Any]]:
    for file in shard_files(path):
        yield from pq.read_table(file, schema=schema).to_pylist()


class CorruptManifest(ShardError):
    """A `_manifest.json` that is not a JSON object (a crash mid-write by another tool, a hand
    edit); the message names the file and the fix. `path`: the file; `why`: what is wrong."""

    def __init__(self, path: Path, why: str) -> None:
        super().__init__(f"{path}: corrupt manifest ({why}); delete it and run the stage that wrote it again")
        self.path, self.why = path, why


def read_manifest(path: str | Path) -> dict[str, Any] | None:
    """The directory's manifest (None when it has none: the output is incomplete). Raises
    `CorruptManifest` naming the file when it cannot be read as a JSON object."""
    manifest = Path(path) / MANIFEST_NAME
    if not manifest.exists():
        return None
    try:
        value = json.loads(manifest.read_bytes().decode("utf-8"))
    except (ValueError, RecursionError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CorruptManifest(manifest, json_read_problem(exc)) from None
    if not isinstance(value, dict):
        raise CorruptManifest(manifest, f"{json_type_name(value)}, not a JSON object")
    return value


def _summarize(value: Any) -> Any:
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>"
    if isinstance(value, dict):
        return {k: _summarize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_summarize(v) for v in value]
    return value


def _one_line(text: str) -> str:
    """`text` with its line breaks written as escapes (`\\n`), so a reason is one line."""
    return text.replace("\r", "\\r").replace("\n", "\\n")


def _storable(text: str) -> str:
    """Text Parquet can hold: anything that is not valid UTF-8 (a lone surrogate) escaped."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _row_json(row: Any) -> str:
    """A rejected row as JSON (bytes summarized); a row too deep or odd to write is described instead,
    so the quarantine never fails on what it quarantines."""
    for sort_keys in (True, False):  # keys of mixed types cannot be sorted
        try:
            return json.dumps(_summarize(row), default=str, sort_keys=sort_keys)
        except TypeError:
            continue
        except (RecursionError, ValueError) as exc:
            return json.dumps({"unwritable_row": f"{type(exc).__name__}: {str(exc)[:200]}"})
    return json.dumps({"unwritable_row": repr(type(row))})


class InputOrder:
    """A reorder buffer for a stage whose items finish out of order (concurrent requests).

    `finished(i, writes)` holds item i's writes (zero-argument callables: a shard row, a quarantine
    row) until items 0..i-1 have been written, so the stage's shards list rows in input order
    whichever response came back first, and a rerun of the same input writes the same rows in the
    same order (training data order is then a function of the seed, not of request timing). It holds
    only the items that finished ahead of the slowest one in flight. For one thread (an asyncio loop).
    """

    def __init__(self) -> None:
        self._held: dict[int, list[Callable[[], Any]]] = {}
        self._next = 0

    def finished(self, index: int, writes: list[Callable[[], Any]]) -> None:
        if index < self._next or index in self._held:
            raise ValueError(f"item {index} finished twice")
        self._held[index] = writes
        while self._next in self._held:
            for write in self._held.pop(self._next):
                write()
            self._next += 1

    @property
    def held(self) -> int:
        """Items finished but not yet written (waiting for an earlier one)."""
        return len(self._held)


class Quarantine:
    """Rejected rows with their reasons, written as shards under `<stage dir>/quarantine/`."""

    def __init__(self, stage_dir: str | Path, stage: str, rows_per_shard: int = 1000) -> None:
        self.stage = stage
        self._writer = ShardWriter(Path(stage_dir) / QUARANTINE_DIR, QUARANTINE_SCHEMA, rows_per_shard=rows_per_shard)
        self.reasons: dict[str, int] = {}

    def add(self, row: Any, reason: str, origin: str = "") -> None:
        reason = _one_line(reason)  # a path or an answer with a newline in it stays one line
        key = reason.split(":", 1)[0]
        self.reasons[key] = self.reasons.get(key, 0) + 1
        self._writer.write({"stage": self.stage, "reason": _storable(reason), "origin": _storable(origin), "row": _row_json(row)})

    def extend(self, quarantine_dir: str | Path) -> None:
        """Take over the rows of another quarantine (a part of the same stage run as its own task)."""
        for row in iter_rows(quarantine_dir, QUARANTINE_SCHEMA):
            key = row["reason"].split(":", 1)[0]
            self.reasons[key] = self.reasons.get(key, 0) + 1
            self._writer.write(row)

    @property
    def count(self) -> int:
        return self._writer.rows_written

    def close(self) -> dict[str, Any]:
        self._writer.manifest_extra["reasons"] = self.reasons
        return self._writer.close()


def merge_parts(
    part_dirs: Iterable[str | Path], writer: ShardWriter, quarantine: Quarantine | None = None,
) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Take over the shards (and quarantines) of a stage's parts, in order, into one output; return
    the parts' summed `counts` (a stage run as one task per input shard reads as one run) and their
    manifests."""
    counts: dict[str, int] = {}
    manifests = []
    for part in part_dirs:
        manifest = read_manifest(part)
        if manifest is None:
            raise ShardError(f"{part}: a part of the stage did not finish (no {MANIFEST_NAME})")
        for key, value in (manifest.get("counts") or {}).items():
            counts[key] = counts.get(key, 0) + value
        writer.adopt(part)
        if quarantine is not None:
            quarantine.extend(Path(part) / QUARANTINE_DIR)
        manifests.append(manifest)
    return counts, manifests
