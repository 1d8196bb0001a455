"""Shard writer overhead: our atomic `ShardWriter` against a bare `pyarrow.parquet.write_table`
of the same rows into the same number of files, measured in the same run.

    python -m bench.shards --json

`writer_ratio` = our seconds ÷ the bare writes' seconds (target ≤ 1.10: atomic rename, fsync of
the manifest and row buffering should cost little next to Parquet encoding).
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from curation.schema import SAMPLE_SCHEMA, Sample
from curation.shards import ShardWriter


def make_rows(n: int) -> list[dict]:
    buffer = io.BytesIO()
    Image.new("RGB", (256, 256), (120, 30, 200)).save(buffer, format="PNG")
    image = buffer.getvalue()
    return [
        Sample(id=f"s{i}", source="bench", category="reasoning", question=f"What is {i} + {i}?",
               images=[{"bytes": image}], answer=str(2 * i), answer_type="number").to_row()
        for i in range(n)
    ]


def bare(rows: list[dict], out: Path, rows_per_shard: int) -> None:
    out.mkdir(parents=True)
    for k, start in enumerate(range(0, len(rows), rows_per_shard)):
        table = pa.Table.from_pylist(rows[start : start + rows_per_shard], schema=SAMPLE_SCHEMA)
        pq.write_table(table, out / f"part-{k:05d}.parquet")


def ours(rows: list[dict], out: Path, rows_per_shard: int) -> None:
    with ShardWriter(out, SAMPLE_SCHEMA, rows_per_shard=rows_per_shard) as writer:
        writer.write_many(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--rows-per-shard", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rows = make_rows(args.rows)
    times: dict[str, list[float]] = {"bare": [], "ours": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            for name, fn in (("bare", bare), ("ours", ours)):  # interleaved, so drift hits both
                started = time.perf_counter()
                fn(rows, Path(tmp) / f"{name}-{r}", args.rows_per_shard)
                times[name].append(time.perf_counter() - started)
    result = {
        "rows": args.rows,
        "bare_s_median": statistics.median(times["bare"]),
        "ours_s_median": statistics.median(times["ours"]),
        "writer_ratio": statistics.median(times["ours"]) / statistics.median(times["bare"]),
    }
    print(json.dumps(result) if args.json else "\n".join(f"{k}: {v}" for k, v in result.items()))


if __name__ == "__main__":
    main()
