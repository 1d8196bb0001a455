import functools
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given
from hypothesis import strategies as st

from curation import shards
from curation.shards import MANIFEST_NAME, Quarantine, ShardError, ShardWriter, read_manifest, read_table, shard_files

SCHEMA = pa.schema([pa.field("x", pa.int64())])


def test_writer_splits_rows_into_shards_and_writes_manifest(tmp_path):
    with ShardWriter(tmp_path, SCHEMA, rows_per_shard=3) as writer:
        writer.write_many({"x": i} for i in range(7))
    assert [p.name for p in shard_files(tmp_path)] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert read_table(tmp_path).column("x").to_pylist() == list(range(7))
    manifest = read_manifest(tmp_path)
    assert manifest["rows"] == 7 and [s["rows"] for s in manifest["shards"]] == [3, 3, 1]


def test_a_crash_mid_write_leaves_no_visible_half_shard(tmp_path, monkeypatch):
    real_write = pq.write_table

    def crash_after_partial(table, where, **kwargs):
        with open(where, "wb") as handle:  # a torn file under the temporary name
            handle.write(b"PAR1 half")
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        with ShardWriter(tmp_path, SCHEMA, rows_per_shard=2) as writer:
            writer.write_many({"x": i} for i in range(2))  # first shard completes
            monkeypatch.setattr(shards.pq, "write_table", crash_after_partial)
            writer.write_many({"x": i} for i in range(2, 4))
    monkeypatch.setattr(shards.pq, "write_table", real_write)
    assert [p.name for p in shard_files(tmp_path)] == ["part-00000.parquet"]
    assert read_table(tmp_path).column("x").to_pylist() == [0, 1]
    assert not (tmp_path / MANIFEST_NAME).exists()  # incomplete directory: no manifest


def test_rerun_replaces_stale_shards(tmp_path):
    with ShardWriter(tmp_path, SCHEMA, rows_per_shard=1) as writer:
        writer.write_many({"x": i} for i in range(3))
    with ShardWriter(tmp_path, SCHEMA, rows_per_shard=1) as writer:
        writer.write({"x": 9})
    assert read_table(tmp_path).column("x").to_pylist() == [9]


def test_quarantine_keeps_rows_with_reasons(tmp_path):
    quarantine = Quarantine(tmp_path, "curate")
    quarantine.add({"question": "q", "img": b"\x00\x01"}, "image_undecodable: bad header", "file.jsonl:3")
    quarantine.add({"question": "r"}, "exact_duplicate", "file.jsonl:4")
    quarantine.close()
    rows = read_table(tmp_path / "quarantine").to_pylist()
    assert [r["reason"] for r in rows] == ["image_undecodable: bad header", "exact_duplicate"]
    assert json.loads(rows[0]["row"])["img"] == "<2 bytes>"
    assert read_manifest(tmp_path / "quarantine")["reasons"] == {"image_undecodable": 1, "exact_duplicate": 1}


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ShardError, match="not found"):
        read_table(tmp_path / "nope")


@given(st.permutations(range(12)))
def test_input_order_writes_items_in_input_order_whatever_order_they_finish_in(finish_order):
    written: list[tuple[int, str]] = []
    in_order = shards.InputOrder()
    for done, index in enumerate(finish_order):
        in_order.finished(index, [functools.partial(written.append, (index, "row")), functools.partial(written.append, (index, "quarantine"))])
        # everything before the first unfinished item is out, nothing after it
        first_missing = min(set(range(12)) - set(finish_order[: done + 1]), default=12)
        assert [i for i, _ in written] == [i for i in range(first_missing) for _ in range(2)]
        assert in_order.held == done + 1 - first_missing
    assert written == [(i, kind) for i in range(12) for kind in ("row", "quarantine")]


def test_input_order_refuses_an_item_that_finishes_twice():
    in_order = shards.InputOrder()
    in_order.finished(0, [])
    with pytest.raises(ValueError, match="item 0 finished twice"):
        in_order.finished(0, [])
