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


def test_an_input_that_is_not_curated_sample_shards_is_named_in_one_line(tmp_path):
    from curation.schema import SAMPLE_SCHEMA
    from curation.shards import check_input_shards
    from synth.trajectory import TRAJECTORY_SCHEMA

    def refused(path):
        with pytest.raises(ShardError) as caught:
            check_input_shards(path, SAMPLE_SCHEMA, "--input", "curated samples", "deepeyes curate")
        return str(caught.value)

    jsonl = tmp_path / "samples.jsonl"
    jsonl.write_text('{"question": "q", "answer": "a"}\n')
    assert refused(jsonl) == (f"--input: cannot read shard {jsonl}: Parquet magic bytes not found in footer (it takes the parquet "
                              "curated samples that `deepeyes curate` writes; run `deepeyes curate` on a JSONL or other source file first)")
    empty = tmp_path / "world"
    empty.mkdir()
    assert refused(empty) == (f"--input {empty}: no parquet shards in this folder (it should hold the part-*.parquet curated samples "
                              "that `deepeyes curate` writes)")
    trajectories = tmp_path / "synthesize"
    trajectories.mkdir()
    pq.write_table(TRAJECTORY_SCHEMA.empty_table(), trajectories / "part-00000.parquet")
    assert refused(trajectories) == (f"--input: {trajectories / 'part-00000.parquet'} holds no curated samples (trajectory/3, not "
                                     "sample/2): missing column(s) source, question, answer_type (it takes the parquet shards that "
                                     "`deepeyes curate` writes)")
    curated = tmp_path / "curate"
    curated.mkdir()
    pq.write_table(SAMPLE_SCHEMA.empty_table(), curated / "part-00000.parquet")
    assert check_input_shards(curated, SAMPLE_SCHEMA, "--input", "curated samples", "deepeyes curate") == [curated / "part-00000.parquet"]


@pytest.mark.parametrize("command", [
    ["synth", "--teacher-url", "http://127.0.0.1:9/v1", "--teacher-model", "m"],
    ["probe", "--student-url", "http://127.0.0.1:9/v1", "--student-model", "m"],
    ["select", "--probes", "."],
])
def test_synth_probe_and_select_refuse_a_jsonl_input_in_the_same_one_line(command, tmp_path, monkeypatch, capsys):
    from flows.cli import main

    jsonl = tmp_path / "samples.jsonl"
    jsonl.write_text('{"question": "q", "answer": "a"}\n')
    monkeypatch.setattr("sys.argv", ["deepeyes", command[0], "--input", str(jsonl), "--out", str(tmp_path / "out"), *command[1:]])
    with pytest.raises(SystemExit) as exited:
        main()
    made_by = "deepeyes curate" if command[0] == "synth" else "deepeyes curate --probes"
    assert exited.value.code == 2
    assert capsys.readouterr().err == (f"error: --input: cannot read shard {jsonl}: Parquet magic bytes not found in footer (it takes the "
                                       f"parquet curated samples that `{made_by}` writes; run `{made_by}` on a JSONL or other source "
                                       "file first)\n")
