"""Review M4: a source column that looks like images (`image`, `img`, `image_path`, `picture`,
`image_1`, ... in any case) but that the source does not read its images from is never dropped in
silence: the curate report (and the command's summary) warns, naming the source, the column and the
`fields.images` mapping that reads it, and a perception row's `missing_image` names the column. For
every source kind that carries columns of its own: jsonl/json, tsv, hf (parquet) and verl."""

from __future__ import annotations

import base64
import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.sources import SourceSpec, looks_like_image_column
from curation.stage import CurateConfig, run_curate
from tests.curate_cli import accounting, curate
from tests.test_curation_sources import encode, noise


def fix(column: str) -> str:
    return f"map it with `fields: {{images: {column}}}` (on the command line `fields.images={column}`)"


def warning(source: str, named: str, read_from: str = "`images`", column: str = "image", many: bool = False) -> str:
    verb = "look like images but are" if many else "looks like images but is"
    return (f"source {source!r}: column{'s' if many else ''} {named} {verb} not read (its images are read from {read_from}), "
            f"so those rows were read without them (as text-only; a perception row is quarantined as missing_image); {fix(column)}")


def missing_image(column: str = "image", read_from: str = "`images`") -> str:
    return (f"missing_image: a perception sample needs an image, and {read_from} holds none; the row's column `{column}` looks like "
            f"images but is not read: {fix(column)}")


@pytest.mark.parametrize("name", ["image", "Image", "IMG", "image_path", "image_url", "picture", "decoded_image", "image_1", "img2",
                                  "images"])
def test_names_that_say_images(name):
    assert looks_like_image_column(name)


@pytest.mark.parametrize("name", ["question", "image_caption", "imagery", "has_image", "answer", "index", 3])
def test_names_that_do_not(name):
    assert not looks_like_image_column(name)


def test_a_jsonl_image_key_is_warned_of_in_the_summary_and_both_reports(tmp_path):
    """The review's case: `image` instead of `images`; the row goes on text-only, and says so."""
    path = tmp_path / "imgkey.jsonl"
    path.write_text(json.dumps({"question": "How many bars in this chart?", "answer": "3", "image": "img/0.png",
                                "category": "reasoning"}) + "\n")
    out = tmp_path / "o"
    done = curate("--source", f"jsonl:{path}", "--out", str(out))
    assert done.code == 0, done.error
    expected = warning("imgkey", "`image` (1 row)")
    assert done.summary["warnings"] == [expected]
    assert json.loads((out / "report.json").read_text())["warnings"] == [expected]
    assert f"- {expected}" in (out / "report.md").read_text()
    assert "unread_image_columns" not in json.loads((out / "report.json").read_text())  # said once, as the warning


def test_a_mapped_image_column_or_an_empty_one_is_not_warned_of(tmp_path):
    (tmp_path / "a.png").write_bytes(encode(noise(seed=1)))
    rows = [{"q": "What is shown here?", "answer": "dots", "picture": "a.png", "image": None, "img": "", "image_2": [],
             "category": "perception"}]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    done = curate("--source", f"jsonl:{path},fields.images=picture,fields.question=q", "--out", str(tmp_path / "o"))
    assert done.code == 0, done.error
    assert "warnings" not in done.summary and done.summary["counts"]["rows_out"] == 1


def test_several_unread_columns_are_counted_per_column_and_once_over_scan_parts(tmp_path):
    rows = [{"question": f"What is {i} plus {i}?", "answer": str(2 * i), "category": "reasoning", "image_1": f"a{i}.png",
             **({"image_2": "b.png"} if i < 2 else {})} for i in range(5)]
    path = tmp_path / "multi.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = CurateConfig(sources=[SourceSpec(path=str(path))], scan_parts=3)
    summary = run_curate(cfg, tmp_path / "o")
    assert summary["warnings"] == [warning("multi", "`image_1` (5 rows), `image_2` (2 rows)", column="image_1", many=True)]


def flat_parquet(tmp_path: Path) -> Path:
    """A flat table with HF's `image` column of `{bytes, path}`: a reasoning row with a good image, a
    search row whose image is garbage, a perception row with a good image."""
    good = encode(noise(seed=3))
    rows = [
        {"question": "How many bars are in this chart?", "answer": "3", "category": "reasoning", "image": {"bytes": good, "path": None}},
        {"question": "Who painted the picture shown?", "answer": "Monet", "category": "search",
         "image": {"bytes": b"not an image at all", "path": None}},
        {"question": "What colour is the dot?", "answer": "red", "category": "perception",
         "image": {"bytes": encode(noise(seed=4)), "path": None}},
    ]
    path = tmp_path / "flat.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def test_an_hf_parquet_image_column_is_warned_of_and_the_perception_row_names_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flat_parquet(tmp_path)
    done = curate("--source", "hf:parquet,data_files=flat.parquet", "--out", "o")
    assert done.code == 0, done.error
    assert done.summary["warnings"] == [warning("flat", "`image` (3 rows)")]
    seen = accounting(tmp_path / "o")
    assert (seen.rows_in, seen.rows_out) == (3, 2)
    assert [q["reason"] for q in seen.quarantined] == [missing_image()]


def test_mapping_the_hf_image_column_reads_its_images(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    flat_parquet(tmp_path)
    done = curate("--source", "hf:parquet,data_files=flat.parquet,fields.images=image", "--out", "o")
    assert done.code == 0, done.error
    assert "warnings" not in done.summary
    seen = accounting(tmp_path / "o")
    assert seen.rows_out == 2 and [q["reason"].split(":", 1)[0] for q in seen.quarantined] == ["image_undecodable"]


def test_a_source_of_perception_rows_all_without_images_names_the_column_in_its_one_line(tmp_path):
    rows = [{"question": f"What colour is dot {i}?", "answer": "red", "category": "perception",
             "Image": base64.b64encode(encode(noise(seed=i))).decode()} for i in range(2)]
    path = tmp_path / "percep.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    done = curate("--source", f"jsonl:{path}", "--out", str(tmp_path / "o"))
    assert done.code == 2
    assert done.error == (f"error: source 'percep': all 2 rows are unusable, 2 for missing_image: the source's column `Image` looks "
                          f"like images but is not read (its images are read from `images`): {fix('Image')}; each row's reason "
                          f"is in {tmp_path / 'o' / 'quarantine'}")
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert report["warnings"][0] == warning("percep", "`Image` (2 rows)", column="Image")


def test_a_tsv_picture_column_is_warned_of_but_its_own_image_and_image_path_are_read(tmp_path):
    data = base64.b64encode(encode(noise(seed=5))).decode()
    path = tmp_path / "bench.tsv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["index", "question", "answer", "image", "picture", "category"])
        writer.writerow(["0", "What is shown?", "dots", data, data, "perception"])
        writer.writerow(["1", "What is shown there?", "noise", "", data, "perception"])
    done = curate("--source", f"tsv:{path}", "--out", str(tmp_path / "o"))
    assert done.code == 0, done.error
    assert done.summary["warnings"] == [warning("bench", "`picture` (2 rows)", read_from="`image` (or `image_path`)", column="picture")]
    assert [q["reason"] for q in accounting(tmp_path / "o").quarantined] == [missing_image("picture", "`image` (or `image_path`)")]


def test_a_verl_image_column_is_warned_of(tmp_path):
    from tests.test_interop_sources import verl_row

    row = verl_row("What is the area of the triangle?", "12", "reason", [], index=0)
    row["image"] = {"bytes": encode(noise(seed=6)), "path": None}
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "rl.parquet")
    cfg = CurateConfig(sources=[SourceSpec(kind="verl", path=str(tmp_path / "rl.parquet"))])
    assert run_curate(cfg, tmp_path / "o")["warnings"] == [warning("rl", "`image` (1 row)")]


def test_row_to_sample_names_the_column_for_any_caller(tmp_path):
    from curation.mapping import RowRejected
    from curation.sources import row_to_sample

    spec = SourceSpec(path=str(tmp_path / "x.jsonl"), category="perception")
    with pytest.raises(RowRejected) as raised:
        row_to_sample({"question": "What is this?", "answer": "a", "image_url": "http://x/a.png"}, spec, tmp_path)
    assert str(raised.value) == missing_image("image_url")
    with pytest.raises(RowRejected) as raised:  # nothing in it: the plain reason
        row_to_sample({"question": "What is this?", "answer": "a", "image_url": ""}, spec, tmp_path)
    assert str(raised.value) == "missing_image: a perception sample needs an image, and `images` holds none"


def test_a_benchmark_image_column_not_read_is_warned_of_as_images_not_decontaminated_against(tmp_path):
    (tmp_path / "a.png").write_bytes(encode(noise(seed=7)))
    (tmp_path / "src.jsonl").write_text(json.dumps({"question": "What is 48 + 12?", "answer": "60", "category": "reasoning"}) + "\n")
    bench = tmp_path / "bench.jsonl"
    bench.write_text(json.dumps({"question": "How many birds are there?", "image": "a.png"}) + "\n")
    done = curate("--source", f"jsonl:{tmp_path / 'src.jsonl'}", "--benchmark", f"jsonl:{bench}", "--out", str(tmp_path / "o"))
    assert done.code == 0, done.error
    assert done.summary["warnings"] == [
        f"benchmark 'bench' ({bench}): column `image` (1 row) looks like images but is not read (its images are read from `images`), "
        f"so those images are not decontaminated against; {fix('image')}"]
    done = curate("--source", f"jsonl:{tmp_path / 'src.jsonl'}", "--benchmark", f"jsonl:{bench},fields.images=image",
                  "--out", str(tmp_path / "o2"))
    assert done.code == 0 and "warnings" not in done.summary


def test_a_conversation_row_is_left_to_its_own_reason_not_an_image_mapping(tmp_path):
    row = {"conversations": [{"from": "human", "value": "<image>What is it?"}, {"from": "gpt", "value": "dots"}], "image": "a.png"}
    path = tmp_path / "llava.json"
    path.write_text(json.dumps([row]))
    done = curate("--source", f"json:{path},category=perception", "--out", str(tmp_path / "o"))
    assert done.code == 2 and "for sharegpt_row: this is LLaMA-Factory's sharegpt layout" in done.error
    assert "fields.images" not in done.error
    assert json.loads((tmp_path / "o" / "report.json").read_text())["warnings"] == [f"stopped: {done.error.removeprefix('error: ')}"]
