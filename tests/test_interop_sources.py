"""Reading the DeepEyesV2 world's data as it is: VLMEvalKit TSVs (shared images by index, Python-list
image fields, fine-grained categories), verl RL parquet files (nested fields, `reason` data source,
`<image>` markers), and dotted field paths for any source."""

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curation.chat import split_question
from curation.mapping import FieldMapping, RowRejected, lookup
from curation.shards import read_table
from curation.sources import SourceSpec, read_source, row_to_sample
from curation.stage import CurateConfig, run_curate
from eval.benchmarks import BenchmarkSpec, load_benchmark
from tests.conftest import in_threads
from tests.test_curation_sources import b64, encode, noise, quarantined


def write_tsv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def samples_of(spec):
    """(samples by id, quarantine reasons by origin) of one source, read without curation."""
    samples, rejected = {}, {}
    for row, origin in read_source(spec):
        try:
            if "__parse_error__" in row:
                raise RowRejected(row["__parse_error__"])
            sample = row_to_sample(row, spec, spec.base_dir)
            samples[sample.id] = sample
        except RowRejected as exc:
            rejected[origin] = str(exc)
    return samples, rejected


# --- dotted field paths ----------------------------------------------------------------------


def test_lookup_walks_objects_lists_and_json_strings_and_prefers_an_exact_column():
    row = {"reward_model": {"ground_truth": "7", "style": "rule"}, "extra_info": json.dumps({"question": "Q?", "index": 3}),
           "images": [{"path": "a.png"}, {"path": "b.png"}], "a.b": "flat"}
    assert lookup(row, "reward_model.ground_truth") == "7"
    assert lookup(row, "extra_info.question") == "Q?"  # an object stored as a JSON string
    assert lookup(row, "images.1.path") == "b.png" and lookup(row, "images.-1.path") == "b.png"
    assert lookup(row, "images.5.path") is None and lookup(row, "reward_model.missing") is None
    assert lookup(row, "a.b") == "flat"  # a column whose name has a dot is that column
    assert lookup(row, "reward_model.ground_truth.deeper") is None


def test_field_mapping_reads_nested_answers_and_maps_labels():
    mapping = FieldMapping(fields={"answer": "reward_model.ground_truth", "question": "extra_info.question", "category": "data_source"},
                           category_map={"reason": "reasoning"})
    row = {"reward_model": {"ground_truth": "12"}, "extra_info": {"question": "How many?"}, "data_source": "reason"}
    assert mapping.value(row, "answer") == "12" and mapping.value(row, "question") == "How many?"
    assert mapping.category_of(row) == "reasoning"


def test_include_filters_on_a_nested_value(tmp_path):
    path = tmp_path / "rows.jsonl"
    image = tmp_path / "x.png"
    image.write_bytes(encode(noise(seed=1)))
    rows = [{"q": f"Question {i}?", "a": str(i), "images": ["x.png"], "info": {"split": "test" if i % 2 else "train"}} for i in range(4)]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    spec = SourceSpec(path=str(path), category="perception", fields={"question": "q", "answer": "a"}, include={"info.split": ["test"]})
    samples, _ = samples_of(spec)
    assert sorted(s.answer for s in samples.values()) == ["1", "3"]


def test_the_cli_takes_dotted_fields():
    spec = SourceSpec.parse_cli("verl:rl.parquet,fields.answer=reward_model.ground_truth,category_map.reason=reasoning")
    assert spec.kind == "verl" and spec.fields == {"answer": "reward_model.ground_truth"} and spec.category_map["reason"] == "reasoning"


# --- VLMEvalKit TSVs -------------------------------------------------------------------------

HEADER = ["index", "image", "question", "A", "B", "answer", "category"]


def test_an_image_field_holding_another_rows_index_is_that_rows_image(tmp_path):
    first, second = encode(noise(seed=10)), encode(noise(seed=11))
    path = write_tsv(tmp_path / "MMBench.tsv", HEADER, [
        [100, "102", "Is it red (shares the image of row 102, which comes later)?", "yes", "no", "A", "attribute_recognition"],
        [101, b64(first), "What is it?", "cat", "dog", "B", "object_localization"],
        [102, b64(second), "How many?", "1", "2", "A", "object_localization"],
        [103, "101", "Where is it (shares row 101's image)?", "left", "right", "B", "spatial_relationship"],
        [104, "999", "A reference to no row?", "x", "y", "A", "spatial_relationship"],
        [105, "103", "A reference to a reference?", "x", "y", "A", "spatial_relationship"],
    ])
    spec = SourceSpec(kind="tsv", path=str(path), category="perception")
    samples, rejected = samples_of(spec)
    assert samples["103"].images[0].bytes == first and samples["101"].images[0].bytes == first
    assert samples["100"].images[0].bytes == second  # a forward reference resolves too
    assert set(samples) == {"100", "101", "102", "103"}
    reasons = sorted(rejected.values())
    assert len(reasons) == 2 and all(r.startswith("image_ref_invalid") for r in reasons)
    assert any("'999'" in r for r in reasons) and any("'103'" in r for r in reasons)  # VLMEvalKit: one level, to a row with an image


def test_an_image_list_in_python_notation_is_read(tmp_path):
    one, two = encode(noise(seed=12)), encode(noise(seed=13))
    path = write_tsv(tmp_path / "multi.tsv", HEADER, [[0, repr([b64(one), b64(two)]), "Which is larger?", "left", "right", "A", "reasoning"]])
    samples, rejected = samples_of(SourceSpec(kind="tsv", path=str(path)))
    assert not rejected and [i.bytes for i in samples["0"].images] == [one, two]


def test_python_list_image_fields_in_parallel_scans_are_parsed_one_thread_at_a_time(tmp_path, ast_overlap):
    # Scan tasks run side by side on the thread runner; on CPython before 3.11.8 two threads in
    # ast.literal_eval at once can raise SystemError (cpython gh-106905; see curation/ast_lock.py).
    one, two = encode(noise(seed=12)), encode(noise(seed=13))
    path = write_tsv(tmp_path / "multi.tsv", HEADER, [[i, repr([b64(one), b64(two)]), "Which is larger?", "left", "right", "A", "reasoning"]
                                                      for i in range(3)])
    read: list[int] = []
    assert in_threads(lambda: read.append(len(samples_of(SourceSpec(kind="tsv", path=str(path)))[0]))) == []
    assert read == [3, 3, 3, 3]
    assert ast_overlap.most_at_once == 1


def test_image_path_names_files_in_vlmevalkits_images_folder(tmp_path):
    folder = tmp_path / "images" / "MyBench"
    folder.mkdir(parents=True)
    (folder / "0.png").write_bytes(encode(noise(seed=14)))
    path = write_tsv(tmp_path / "MyBench.tsv", ["index", "image_path", "question", "answer"], [[0, "0.png", "What?", "cat"]])
    samples, rejected = samples_of(SourceSpec(kind="tsv", path=str(path), category="perception"))
    assert not rejected and samples["0"].images[0].bytes == (folder / "0.png").read_bytes()
    # In neither place: the reason names both (beside the TSV, and images/<the TSV's file stem>/).
    write_tsv(path, ["index", "image_path", "question", "answer"], [[1, "1.png", "What?", "cat"]])
    files: set[str] = set()
    [(row, _)] = list(read_source(SourceSpec(kind="tsv", path=str(path), category="perception")))
    with pytest.raises(RowRejected) as missing:
        row_to_sample(row, SourceSpec(kind="tsv", path=str(path), category="perception"), tmp_path, files)
    assert str(missing.value) == f"image_missing: {tmp_path / '1.png'} (nor {folder / '1.png'})"
    assert files == {str(tmp_path / "1.png"), str(folder / "1.png")}  # either appearing makes the stage stale


def test_a_benchmarks_own_categories_map_to_ours_or_to_its_default(tmp_path):
    image = b64(encode(noise(seed=15)))
    path = write_tsv(tmp_path / "MMBench_DEV_EN.tsv", HEADER, [
        [0, image, "Color?", "red", "blue", "A", "attribute_recognition"],
        [1, "0", "Count?", "1", "2", "B", "object_counting"],
        [2, "0", "Why?", "a", "b", "A", "physical_property_reasoning"],
        [3, "0", "Is it a search question?", "a", "b", "A", "search"],
    ])
    mapped = SourceSpec(kind="tsv", path=str(path), category="perception", category_map={"physical_property_reasoning": "reasoning"})
    samples, rejected = samples_of(mapped)
    assert not rejected
    assert {k: s.category for k, s in samples.items()} == {"0": "perception", "1": "perception", "2": "reasoning", "3": "search"}
    assert samples["1"].meta["source_category"] == "object_counting"  # the benchmark's own label stays with the row
    # Without a default, the labels that are neither ours nor mapped are quarantined with the fix in the reason.
    _, rejected = samples_of(SourceSpec(kind="tsv", path=str(path)))
    assert len(rejected) == 3 and all(r.startswith("unknown_category") for r in rejected.values())


def test_a_benchmark_tsv_with_shared_images_and_its_own_categories_loads_whole(tmp_path):
    image = b64(encode(noise(seed=16)))
    path = write_tsv(tmp_path / "bench.tsv", HEADER, [[0, image, "Color?", "red", "blue", "A", "attribute_recognition"],
                                                      [1, "0", "Shape?", "round", "square", "B", "attribute_recognition"]])
    loaded = load_benchmark(BenchmarkSpec(name="mmb", source={"kind": "tsv", "path": str(path), "category": "perception"}))
    assert loaded.unreadable == 0 and len(loaded.samples) == 2
    assert loaded.samples[1].images[0].bytes == loaded.samples[0].images[0].bytes


def test_curate_keeps_rows_that_share_an_image(tmp_path):
    image = b64(encode(noise(seed=17)))
    path = write_tsv(tmp_path / "bench.tsv", HEADER, [[0, image, "Color of the car?", "red", "blue", "A", "perception"],
                                                      [1, "0", "Color of the sky?", "red", "blue", "B", "perception"]])
    run_curate(CurateConfig(sources=[SourceSpec(kind="tsv", path=str(path))], split={"coldstart": 1.0}), tmp_path / "out")
    rows = read_table(tmp_path / "out").to_pylist()
    assert sorted(r["id"] for r in rows) == ["0", "1"] and rows[0]["images"][0]["bytes"] == rows[1]["images"][0]["bytes"]


# --- verl RL parquet -------------------------------------------------------------------------

SYSTEM = "You are an agent that thinks and uses tools."
SUFFIX = "You must put your answer inside <answer> </answer> tags. Format strictly as <think> </think> <answer> </answer>."


def verl_row(question, answer, source, images, markers=None, index=0, bare_question=True):
    user = "<image>" * (len(images) if markers is None else markers) + f"\n{question}\n\n{SUFFIX}"
    extra = {"index": f"{source}_{index}", "split": "train"}
    if bare_question:
        extra["question"] = question
    return {
        "data_source": source,
        "prompt": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}],
        "images": [{"bytes": data, "path": None} for data in images],
        "ability": "vqa",
        "env_name": "deepeyes_v2",
        "reward_model": {"ground_truth": answer, "style": "model"},
        "extra_info": extra,
    }


@pytest.fixture
def verl_file(tmp_path):
    one, two, three = encode(noise(seed=20)), encode(noise(seed=21)), encode(noise(seed=22))
    rows = [
        verl_row("What is written on the sign?", "OPEN", "perception", [one], index=0),
        verl_row("What is the area of the triangle?", "12", "reason", [two], index=1, bare_question=False),
        verl_row("Who designed this building?", "Gaudi", "search", [three], index=2),
        verl_row("Two markers, one image?", "x", "perception", [one], markers=2, index=3),
        verl_row("Which two differ?", "B", "perception", [one, two], index=4),
    ]
    path = tmp_path / "rl" / "perception_all_1.parquet"
    path.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path, (one, two, three)


def test_verl_rl_parquet_becomes_samples_with_question_answer_category_and_images(verl_file):
    path, (one, two, three) = verl_file
    samples, rejected = samples_of(SourceSpec(kind="verl", path=str(path)))
    by_answer = {s.answer: s for s in samples.values()}
    assert set(by_answer) == {"OPEN", "12", "Gaudi", "B"}
    sign, area, architect, pair = by_answer["OPEN"], by_answer["12"], by_answer["Gaudi"], by_answer["B"]
    assert (sign.question, sign.category, [i.bytes for i in sign.images]) == ("What is written on the sign?", "perception", [one])
    # no extra_info.question: the prompt's user text without its <image> markers and format instruction
    assert (area.question, area.category, [i.bytes for i in area.images]) == ("What is the area of the triangle?", "reasoning", [two])
    assert area.answer_type == "number"
    assert (architect.question, architect.category, [i.bytes for i in architect.images]) == ("Who designed this building?", "search", [three])
    assert [i.bytes for i in pair.images] == [one, two]
    assert sign.meta == {"data_source": "perception", "env_name": "deepeyes_v2", "ability": "vqa", "index": "perception_0", "split": "train"}
    [reason] = rejected.values()
    assert reason.startswith("image_count_mismatch: the prompt has 2 <image> marker(s) and the row 1 image(s)")


def test_verl_answers_that_are_not_scalars_are_quarantined(tmp_path):
    row = verl_row("Q?", "x", "perception", [encode(noise(seed=23))])
    row["reward_model"] = {"ground_truth": {"answer": "x", "aliases": ["y"]}, "style": "model"}
    pq.write_table(pa.Table.from_pylist([row]), tmp_path / "bad.parquet")
    _, rejected = samples_of(SourceSpec(kind="verl", path=str(tmp_path / "bad.parquet")))
    assert list(rejected.values())[0].startswith("invalid_answer: not a scalar")


def test_verl_folder_and_own_field_paths_and_category_default(verl_file, tmp_path):
    path, _ = verl_file
    spec = SourceSpec(kind="verl", path=str(path.parent), fields={"answer": "extra_info.index"}, category_map={"reason": "perception"})
    samples, _ = samples_of(spec)
    assert sorted(s.answer for s in samples.values()) == ["perception_0", "perception_4", "reason_1", "search_2"]
    assert {s.answer: s.category for s in samples.values()}["reason_1"] == "perception"  # the source's own map wins


def test_verl_through_deepeyes_curate(verl_file, tmp_path):
    import subprocess
    import sys

    path, _ = verl_file
    out = tmp_path / "cur"
    done = subprocess.run([sys.executable, "-m", "flows.cli", "curate", "--source", f"verl:{path}", "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = read_table(out).to_pylist() + read_table(out / "quarantine").to_pylist()
    assert len(rows) == 5
    assert sorted(quarantined(out).values())[0].startswith("image_count_mismatch")


def test_split_question_takes_the_format_instruction_off():
    assert split_question(f"<image>\nWhat is shown?\n\n{SUFFIX}") == ("What is shown?", SUFFIX)
    assert split_question("<image><image>Compare them.\nAnswer with a letter.") == ("Compare them.\nAnswer with a letter.", "")
    assert split_question("What does <answer> mean in this protocol?") == ("What does <answer> mean in this protocol?", "")


def test_a_broken_parquet_file_of_a_verl_folder_is_named_and_the_others_are_read(verl_file, tmp_path):
    """One corrupt file among good ones: quarantined under its own name (`b.parquet`, not the folder),
    the good files' rows go on; a glob source is named by the folder it starts in, not `*`."""
    path, _ = verl_file
    (path.parent / "b.parquet").write_bytes(b"PAR1oops")
    for source in (str(path.parent), str(path.parent / "*.parquet")):
        samples, rejected = samples_of(SourceSpec(kind="verl", path=source))
        assert len(samples) == 4  # perception_all_1.parquet's good rows
        broken = {origin: reason for origin, reason in rejected.items() if "b.parquet" in origin}
        assert list(broken.values()) == [f"invalid_parquet: {path.parent / 'b.parquet'}: cannot be read as parquet (the whole file): "
                                         "ArrowInvalid: Parquet magic bytes not found in footer. Either the file is corrupted or "
                                         "this is not a parquet file."]
    assert SourceSpec(kind="verl", path=str(path.parent / "*.parquet")).source_name == "rl"
    assert SourceSpec(kind="verl", path=str(path.parent)).source_name == "rl"
    assert SourceSpec(kind="verl", path=str(path.parent / "**" / "*.parquet")).source_name == "rl"
    # A folder of broken files only: every row unusable, named with its fix.
    from tests.curate_cli import curate

    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.parquet").write_bytes(b"not parquet")
    done = curate("--source", f"verl:{tmp_path / 'bad'}", "--out", str(tmp_path / "out"))
    assert done.code == 2 and "source 'bad': all 1 rows are unusable, 1 for invalid_parquet: a parquet file is broken" in done.error


def test_a_csv_or_parquet_given_as_tsv_and_a_flat_parquet_given_as_verl_are_named_as_what_they_are(tmp_path):
    """Review r6 #14: both were "all N rows are unusable ... map our `question`", where the JSON reader says what a file looks like."""
    from curation.sources import SourceError

    rows = [{"question": "What is 1 plus 1?", "answer": "2", "category": "reasoning"}]
    with open(tmp_path / "rows.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "rows.parquet")
    said = {}
    for text in ("tsv:rows.csv", "tsv:rows.parquet", "verl:rows.parquet"):
        kind, path = text.split(":")
        with pytest.raises(SourceError) as raised:
            list(read_source(SourceSpec(kind=kind, path=str(tmp_path / path))))
        said[text] = str(raised.value)
    assert said == {
        "tsv:rows.csv": f"source 'rows': {tmp_path / 'rows.csv'} is not TSV: its first line has no tab (it looks like CSV: use "
                        "`kind: hf, path: csv, data_files: [FILE]`)",
        "tsv:rows.parquet": f"source 'rows': {tmp_path / 'rows.parquet'} is not TSV (it looks like Parquet: use "
                            "`kind: hf, path: parquet, data_files: [FILE]`)",
        "verl:rows.parquet": f"source 'rows': {tmp_path / 'rows.parquet'} is not verl's layout (no `prompt` column; its columns: question, "
                             "answer, category): a flat parquet table is read by `kind: hf, path: parquet, data_files: [FILE]` "
                             "(`--source hf:parquet,data_files=FILE`)",
    }
    # a verl source that maps its own question column is read as the user says
    mapped = SourceSpec(kind="verl", path=str(tmp_path / "rows.parquet"), fields={"question": "question", "answer": "answer"})
    assert [row["question"] for row, _ in read_source(mapped)] == ["What is 1 plus 1?"]
