"""Decontamination against what a benchmark really holds: a benchmark nothing can be read from
stops the run, one read in part says so, and the counts say which rows went because of a
benchmark (contamination first, near-duplicate groups included) and which as near copies."""

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from curation.decontam import DecontamConfig
from curation.shards import QUARANTINE_SCHEMA, read_manifest, read_table
from curation.sources import SourceError, SourceSpec
from curation.stage import CurateConfig, run_curate
from tests.curate_cli import assert_every_row_counted, curate


def png(seed: int) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(out, format="PNG")
    return out.getvalue()


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture
def data(tmp_path):
    """The user's repro (review r1, nd2): training rows sharing one image, and a benchmark with
    another."""
    (tmp_path / "ok.png").write_bytes(png(1))
    (tmp_path / "bench.png").write_bytes(png(2))
    questions = {"s0": "What is 48 + 12?", "s1": "What is 48 - 12?", "s2": "Totally unrelated question about birds?"}
    write_jsonl(tmp_path / "src.jsonl", [{"id": k, "question": q, "answer": "1", "images": ["ok.png"], "category": "reasoning"}
                                         for k, q in questions.items()])
    return tmp_path


def test_a_benchmark_whose_rows_are_all_unusable_fails_loudly_with_the_file_the_reason_and_the_fix(data):
    # The user's file: `prompt`, not `question`. It used to give items 0, exit 0, "Decontamination none".
    bench = write_jsonl(data / "bench_wrongcol.jsonl", [{"prompt": "What is 48 + 12?", "answer": "1", "images": ["bench.png"]},
                                                        {"prompt": "How many birds?", "answer": "1", "images": ["bench.png"]}])
    done = curate("--source", f"jsonl:{data / 'src.jsonl'}", "--benchmark", f"jsonl:{bench}", "--out", str(data / "out"))
    assert done.code == 2
    assert done.error == (f"error: benchmark 'bench_wrongcol' ({bench}): none of its 2 rows can be decontaminated against, "
                          f"2 for missing_question (first at {bench}:1): map our `question` to the source's column "
                          "(`fields: {question: COLUMN}`, or `fields.question=COLUMN`)")
    assert read_manifest(data / "out") is None and not list((data / "out").glob("part-*.parquet"))  # nothing curated
    report = json.loads((data / "out" / "report.json").read_text())
    assert report["benchmarks"][0] | {"file": None} == {"benchmark": "bench_wrongcol", "file": None, "rows": 2, "items": 0,
                                                       "unreadable_rows": 2, "why": "missing_question 2", "unreadable_images": 0}
    assert report["warnings"] == [f"stopped: {done.error.removeprefix('error: ')}"]
    assert "## Warnings\n\n- stopped: benchmark 'bench_wrongcol'" in (data / "out" / "report.md").read_text()
    # The fix the line names works, and the verbatim question is then caught.
    done = curate("--source", f"jsonl:{data / 'src.jsonl'}", "--benchmark", f"jsonl:{bench},fields.question=prompt",
                  "--out", str(data / "out"))
    assert done.code == 0 and done.summary["counts"]["contaminated"] == 1 and done.summary["benchmark_items"] == 2
    assert "warnings" not in done.summary


@pytest.mark.parametrize("content,says", [
    ("", "no rows (after `include` and `limit`), so nothing would be decontaminated against it"),
    ('{"question": "What is 48 + 12?", "answer": "60"}\n', None),  # and with `include` leaving nothing out of it:
])
def test_a_benchmark_with_no_rows_fails_too(data, content, says):
    (data / "bench.jsonl").write_text(content)
    specs = [SourceSpec(path=data / "bench.jsonl", include={"split": ["test"]})] if says is None else [SourceSpec(path=data / "bench.jsonl")]
    cfg = CurateConfig(sources=[SourceSpec(path=data / "src.jsonl")], benchmarks=specs)
    with pytest.raises(SourceError) as info:
        run_curate(cfg, data / "out")
    assert str(info.value) == (f"benchmark 'bench' ({data / 'bench.jsonl'}): no rows (after `include` and `limit`), so nothing "
                               "would be decontaminated against it: check the file, or leave the benchmark out")


def test_a_benchmark_needs_only_its_questions_and_images(data):
    """No category, answer or answer type: a test split without answers decontaminates as well
    (category became required of training rows, and made every such benchmark row unreadable)."""
    write_jsonl(data / "bench.jsonl", [{"question": "What is 48 + 12?"}, {"question": "Describe it.", "answer": ["a", "b"],
                                                                          "images": ["ok.png"]}])
    # a text-only row the benchmark does not match: a curate with every row contaminated stops (review r6 #12)
    with open(data / "src.jsonl", "a") as rows:
        rows.write(json.dumps({"id": "s3", "question": "How long is the river?", "answer": "1", "category": "reasoning"}) + "\n")
    summary = run_curate(CurateConfig(sources=[SourceSpec(path=data / "src.jsonl")], benchmarks=[SourceSpec(path=data / "bench.jsonl")],
                                      split={"coldstart": 1.0}), data / "out")
    assert summary["benchmark_items"] == 2 and "warnings" not in summary
    assert summary["counts"]["contaminated"] == 3  # s0 by its text, every row with an image by the benchmark's image
    assert_every_row_counted(data / "out", rows_in=4)


def test_a_benchmark_read_in_part_says_so_in_the_summary_line_and_the_report(data):
    bench = write_jsonl(data / "bench.jsonl", [
        {"question": "What is 48 + 12?", "images": ["bench.png"]},
        {"prompt": "What is 48 - 12?"},  # not read: no question
        {"question": "Which bird is on the wire?", "images": ["missing.png"]},  # read without its image
    ])
    with bench.open("a") as handle:
        handle.write("not json\n")
    done = curate("--source", f"jsonl:{data / 'src.jsonl'}", "--benchmark", f"jsonl:{bench}", "--out", str(data / "out"))
    assert done.code == 0
    [warning] = done.summary["warnings"]
    assert warning == (f"benchmark 'bench' ({bench}): 2 of its 4 rows are not decontaminated against, 1 for missing_question, "
                       f"1 for invalid_json (first at {bench}:2): map our `question` to the source's column "
                       "(`fields: {question: COLUMN}`, or `fields.question=COLUMN`); 1 image(s) could not be read "
                       "(their rows' questions are still compared)")
    assert done.summary["benchmark_items"] == 2
    assert done.summary["counts"]["contaminated"] == 1  # s0; s1 ("48 - 12") was in the row that could not be read
    report_md = (data / "out" / "report.md").read_text()
    assert f"## Warnings\n\n- {warning}\n" in report_md
    assert "| bench | " in report_md and "| 4 | 2 | 2 | missing_question 1, invalid_json 1 | 1 |" in report_md


def test_both_checks_off_is_refused_when_the_config_loads():
    with pytest.raises(ValueError, match="nothing would be compared"):
        DecontamConfig(check_text=False, check_images=False)


# 18 tokens each; the copies differ from their original in 2 words so placed that they share no
# 8-gram with it (so no 8-gram with the benchmark either), and are near duplicates (2 edits in 18).
LEAKED = "Read the serial number printed on the small metal plate next to the red door in the picture"
LEAKED_COPY = LEAKED.replace("printed", "written").replace("to the red", "to that red")
LEAKED_LATER = "Count the windows visible on the upper floor of the old brick building near the train station please"
LEAKED_LATER_COPY = LEAKED_LATER.replace("visible", "shown").replace("the old", "the new")
CLEAN = "Name the brand of the bicycle leaning against the wall beside the bakery entrance in the photo"
CLEAN_COPY = CLEAN.replace("brand", "make")


def test_contamination_is_checked_first_and_covers_near_duplicate_groups(tmp_path):
    """`contaminated` counts every row that goes because of a benchmark: the rows that match it,
    and the near copies of those (whichever came first); `near_duplicates` the near copies of rows
    that stay. Before, a near copy of a contaminated row counted as a near duplicate, and a copy
    seen before the benchmark's own question stayed in training."""
    (tmp_path / "ok.png").write_bytes(png(1))
    rows = [("leaked", LEAKED), ("leaked_copy", LEAKED_COPY),  # the benchmark's question first, then a near copy
            ("later_copy", LEAKED_LATER_COPY), ("later", LEAKED_LATER),  # a near copy first, then the benchmark's question
            ("clean", CLEAN), ("clean_copy", CLEAN_COPY)]
    write_jsonl(tmp_path / "train.jsonl", [{"id": k, "question": q, "answer": "1", "images": ["ok.png"], "category": "perception"}
                                           for k, q in rows])
    write_jsonl(tmp_path / "bench.jsonl", [{"id": "b1", "question": LEAKED}, {"id": "b2", "question": LEAKED_LATER}])
    summary = run_curate(CurateConfig(sources=[SourceSpec(path=tmp_path / "train.jsonl")],
                                      benchmarks=[SourceSpec(path=tmp_path / "bench.jsonl", name="bench")], split={"coldstart": 1.0}),
                         tmp_path / "out")
    assert summary["counts"] == {"rows_in": 6, "invalid": 0, "duplicates": 0, "near_duplicates": 1, "contaminated": 4, "rows_out": 1}
    reasons = {json.loads(r["row"])["id"]: r["reason"] for r in read_table(tmp_path / "out" / "quarantine", QUARANTINE_SCHEMA).to_pylist()}
    assert {k: v.split(" (")[0] for k, v in reasons.items()} == {
        "leaked": "contaminated_text: bench/b1", "leaked_copy": "contaminated_near_duplicate: bench/b1",
        "later_copy": "contaminated_near_duplicate: bench/b2", "later": "contaminated_text: bench/b2", "clean_copy": "near_duplicate: of clean"}
    assert reasons["leaked_copy"].endswith("(a near duplicate of leaked, which matched it)")
    assert reasons["later_copy"].endswith("(a near duplicate of later, which matched it)")
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert [s["step"] for s in report["steps"]] == ["validate", "exact_dedup", "decontaminate", "near_dedup", "split"]
    steps = {s["step"]: s for s in report["steps"]}
    assert (steps["decontaminate"]["in"], steps["decontaminate"]["out"]) == (6, 2)
    assert (steps["near_dedup"]["in"], steps["near_dedup"]["out"]) == (2, 1)
    assert [(c["sample_id"], c["kind"]) for c in report["decontamination"]] == [
        ("leaked", "text"), ("leaked_copy", "near_duplicate"), ("later_copy", "near_duplicate"), ("later", "text")]
    # Every near duplicate's kept row is in the output.
    assert [r["id"] for r in read_table(tmp_path / "out").to_pylist()] == ["clean"]
    assert_every_row_counted(tmp_path / "out", rows_in=6)
